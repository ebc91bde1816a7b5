"""The starting point of a cell (SPEC 5, 11): random on the sphere, or the spectral estimate."""

from __future__ import annotations

import numpy as np

from . import sphere
from .config import RunConfig
from .data import Dataset, initial_weights
from .spectral import spectral_estimate


def starting_point(config: RunConfig, data: Dataset, task: str) -> np.ndarray:
    """The start ``W0`` (hidden, p) of a cell: the random start of SPEC 5; with ``init =
    "spectral"`` the spectral estimate plus a tenth of the random start (so that hidden units
    differ), projected on the sphere; with ``init = "overlap"`` the random start turned to the
    overlap ``init_overlap`` with the teacher (:func:`at_overlap`). Never depends on the optimizer."""
    c = config
    W0 = initial_weights(c.p, c.hidden, c.alpha, c.seed, study_seed=c.study_seed)
    if c.init == "random":
        return W0
    if c.init == "overlap":
        return at_overlap(W0, data.w_star, c.init_overlap)
    return sphere.project(spectral_estimate(data.X, data.y, task, c.K)[None, :] + 0.1 * W0)


def at_overlap(W0: np.ndarray, w_star: np.ndarray, overlap: float) -> np.ndarray:
    """Each unit of ``W0`` (hidden, p) rotated to overlap ``m0`` with the teacher:
    ``sqrt(p) (m0 u* + sqrt(1 - m0^2) v)``, ``u*`` the teacher's direction and ``v`` the unit's own
    direction orthogonal to it (the informed start of DMFT studies: at p -> infinity a random
    start has overlap 0, a finite-p one about 1/sqrt(p))."""
    p = W0.shape[-1]
    u = w_star / np.linalg.norm(w_star)
    V = W0 - np.outer(W0 @ u, u)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return np.sqrt(p) * (overlap * u[None, :] + np.sqrt(1.0 - overlap * overlap) * V)
