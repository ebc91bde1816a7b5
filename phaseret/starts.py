"""The starting point of a cell (SPEC 5, 11): random on the sphere, or the spectral estimate."""

from __future__ import annotations

import numpy as np

from . import sphere
from .config import RunConfig
from .data import Dataset, initial_weights
from .spectral import spectral_estimate


def starting_point(config: RunConfig, data: Dataset, task: str) -> np.ndarray:
    """The start ``W0`` (hidden, p) of a cell: the random start of SPEC 5, or with
    ``init = "spectral"`` the spectral estimate plus a tenth of the random start (so that
    hidden units differ), projected on the sphere. Never depends on the optimizer."""
    c = config
    W0 = initial_weights(c.p, c.hidden, c.alpha, c.seed, study_seed=c.study_seed)
    if c.init == "random":
        return W0
    return sphere.project(spectral_estimate(data.X, data.y, task, c.K)[None, :] + 0.1 * W0)
