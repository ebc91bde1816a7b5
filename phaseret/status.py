"""How a run ends (SPEC 6): the statuses, and which one applies after an epoch."""

from __future__ import annotations

import enum

import numpy as np

from .config import Stop


class Status(enum.StrEnum):
    """A run's status; the values are SPEC 6's strings (``RUNNING`` is ``""``, a run not finished)."""

    RUNNING = ""
    DIVERGED = "diverged"
    CONVERGED_TRAIN = "converged-train"
    CONVERGED_TEST = "converged-test"
    STATIONARY = "stationary"
    MAX_EPOCHS = "max-epochs"


#: The statuses in order; ``stop_statuses`` returns indices into it.
ORDER = tuple(Status)


def stop_statuses(stop: Stop, train_error: np.ndarray, test_error: np.ndarray, ema: np.ndarray) -> np.ndarray:
    """Index into ``ORDER`` of the first SPEC 6 status that applies to each replica after an epoch
    (0, ``RUNNING``, to go on): diverged, converged-train, converged-test, stationary."""
    status = np.zeros(len(train_error), dtype=int)
    # Lowest priority first, so that the first status that applies is the one that stays.
    status[ema < stop.grad_ema] = ORDER.index(Status.STATIONARY)
    status[test_error < stop.test_error] = ORDER.index(Status.CONVERGED_TEST)
    status[train_error < stop.train_error] = ORDER.index(Status.CONVERGED_TRAIN)
    status[~(np.isfinite(train_error) & np.isfinite(test_error))] = ORDER.index(Status.DIVERGED)
    return status
