"""The records that matched Langevin noise follows (SPEC 5): a reference run's gradient jumps
``sigma_t = |g_t - g_{t-1}|_F`` (``sigma_0 = 0``) per step, each reference run once."""

from __future__ import annotations

import collections
import json
from typing import Callable

import numpy as np

from .config import RunConfig


class GradientJumps:
    """A cache of matched-noise records by reference cell, keeping the last ``kept``.

    ``run(references)`` trains reference cells as one replica batch and returns their records;
    the cache calls it for the references it does not hold. Records are read-only arrays."""

    def __init__(self, run: Callable[[list[RunConfig]], list[np.ndarray]], kept: int = 64):
        self._run = run
        self._kept = kept
        self._records: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def records(self, references: list[RunConfig]) -> list[np.ndarray]:
        """The records of ``references``, in order."""
        names = [json.dumps(r.to_dict(), sort_keys=True) for r in references]
        missing = [(name, r) for name, r in zip(names, references) if name not in self._records]
        if missing:
            for (name, _), record in zip(missing, self._run([r for _, r in missing])):
                record.flags.writeable = False
                self._records[name] = record
        for name in names:
            self._records.move_to_end(name)
        found = [self._records[name] for name in names]
        while len(self._records) > self._kept:
            self._records.popitem(last=False)
        return found
