"""Langevin noise added after the update step (SPEC 5, thesis 2.4.4; Mignacco et al. 2021).

A noise source is a function ``(W, step, eta) -> W``; its Gaussian draws
come from the cell's Philox key, stream ``langevin-noise``, addressed by step.
"""

from __future__ import annotations

import numpy as np

from . import seeding


def _direction(key: np.ndarray, step: int, W: np.ndarray) -> np.ndarray:
    """``u ~ N(0, I)`` over the whole ``d x p`` array, in ``W``'s dtype."""
    return seeding.step_normals(key, "langevin-noise", step, W.size).reshape(W.shape).astype(W.dtype)


def matched(sigmas: np.ndarray, key: np.ndarray):
    """``W <- W + sigma_t u / |u|_F``, not scaled by ``eta``; ``sigma_t = 0`` after the record ends."""

    def add(W, step, eta):
        if step >= len(sigmas) or sigmas[step] == 0.0:
            return W
        u = _direction(key, step, W)
        return W + sigmas[step] * u / np.linalg.norm(u)

    return add


def temperature(T0: float, t_cool: int, key: np.ndarray):
    """``W <- W + sqrt(2 eta T_t) u`` with ``T_t = T0`` for the first ``t_cool`` steps, then 0."""

    def add(W, step, eta):
        if step >= t_cool or T0 == 0.0:
            return W
        return W + np.sqrt(2.0 * eta * T0) * _direction(key, step, W)

    return add

