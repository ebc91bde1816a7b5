"""Langevin noise added after the update step (SPEC 5, thesis 2.4.4; Mignacco et al. 2021).

A noise source holds the replicas' Philox keys (R, 2) and adds its kick to the live replicas
with ``add(W, replicas, step, eta) -> W`` (W (R_live, d, p)); its Gaussian draws ``u ~ N(0, I)``
over each replica's ``d x p`` array come from stream ``langevin-noise``, addressed by step
(:func:`phaseret.seeding.step_normals`; the CUDA kernel draws the same numbers with
:func:`phaseret.kernels.philox.normal`).
"""

from __future__ import annotations

import numpy as np

from .. import seeding

STREAM = seeding.STREAMS["langevin-noise"]


def _direction(key: np.ndarray, step: int, W: np.ndarray) -> np.ndarray:
    """``u ~ N(0, I)`` over one replica's (d, p) array, in ``W``'s dtype."""
    return seeding.step_normals(key, "langevin-noise", step, W.size).reshape(W.shape).astype(W.dtype)


class TemperatureNoise:
    """``W <- W + sqrt(2 eta T_t) u`` with ``T_t = T0`` for the first ``t_cool`` steps, then 0."""

    def __init__(self, T0: float, t_cool: int, keys: np.ndarray):
        self.T0, self.t_cool, self.keys = T0, t_cool, keys

    def scale(self, step: int, eta: float) -> np.float64:
        """``sqrt(2 eta T_t)``: the kick's size at ``step``, 0 once cooled (a NumPy float64, so that
        a float32 ``W`` is kicked in float64 arithmetic as before)."""
        if step >= self.t_cool or self.T0 == 0.0:
            return np.float64(0.0)
        return np.sqrt(2.0 * eta * self.T0)

    def levels(self, replica: int, steps: int, eta: float, size: int) -> np.ndarray:
        """The kick's size at steps ``0 .. steps-1`` (steps,): ``sqrt(2 eta T_t)`` times ``sqrt(size)``,
        the root-mean-square of ``|u|`` over a replica's ``size = d p`` coordinates."""
        on = np.arange(steps) < self.t_cool
        return np.where(on, self.scale(0, eta) * np.sqrt(size), 0.0)

    def add(self, W: np.ndarray, replicas: np.ndarray, step: int, eta: float) -> np.ndarray:
        scale = self.scale(step, eta)
        if scale == 0.0:
            return W
        for i, r in enumerate(replicas):
            W[i] = W[i] + scale * _direction(self.keys[r], step, W[i])
        return W


class MatchedNoise:
    """``W <- W + sigma_t u / |u|_F``, not scaled by ``eta``: ``records[r]`` holds replica r's
    ``sigma_t`` (a reference run's gradient jumps, SPEC 5); ``sigma_t = 0`` after a record ends."""

    def __init__(self, records: list[np.ndarray], keys: np.ndarray):
        self.records, self.keys = records, keys

    def sigma(self, replica: int, step: int) -> np.float64:
        """``sigma_t`` of ``replica`` (the record's float64 element), 0 after the record ends."""
        record = self.records[replica]
        return record[step] if step < len(record) else np.float64(0.0)

    def levels(self, replica: int, steps: int, eta: float, size: int) -> np.ndarray:
        """``sigma_t`` at steps ``0 .. steps-1`` (steps,), the kick's exact size: the record, then 0."""
        record = self.records[replica][:steps]
        return np.concatenate([record, np.zeros(steps - len(record))])

    def add(self, W: np.ndarray, replicas: np.ndarray, step: int, eta: float) -> np.ndarray:
        for i, r in enumerate(replicas):
            sigma = self.sigma(r, step)
            if sigma != 0.0:
                u = _direction(self.keys[r], step, W[i])
                W[i] = W[i] + sigma * u / np.linalg.norm(u)
        return W
