"""Batch selection: which samples form the batch ``M_t`` of step ``t`` (SPEC 4), for R replicas.

A selector has ``steps_per_epoch`` and ``select(step, replicas)``, called with consecutive
global steps ``0, 1, 2, ...`` and the indices of the live replicas; it returns their
boolean masks (len(replicas), n) of the rows in each batch, or None for all rows. Each
replica's random choices come from its cell's Philox key (``keys`` (R, 2) uint64),
addressed by ``(stream, step)`` (SPEC 7).
"""

from __future__ import annotations

import math

import numpy as np

from . import philox, seeding


class FullBatch:
    """All ``n`` samples, one step per epoch (GD, Langevin)."""

    steps_per_epoch = 1

    def select(self, step: int, replicas: np.ndarray) -> None:
        return None


class ShuffledChunks:
    """SGD: each epoch a fresh permutation cut into ``floor(n / B)`` chunks of ``B = floor(b n)``,
    the remainder dropped. The permutation of epoch ``e`` sorts the uniforms of step ``e`` of the
    ``sgd-permutation`` stream."""

    def __init__(self, n: int, batch_fraction: float, keys: np.ndarray):
        self.n = n
        self.batch_size = int(batch_fraction * n)
        self.steps_per_epoch = n // self.batch_size
        self._keys = keys
        self._epoch = -1
        self._permutations = {}

    def permutation(self, replica: int, epoch: int) -> np.ndarray:
        """The order of the samples of ``replica`` in ``epoch``."""
        uniforms = seeding.step_uniforms(self._keys[replica], "sgd-permutation", epoch, self.n)
        return np.argsort(uniforms, kind="stable")

    def select(self, step: int, replicas: np.ndarray) -> np.ndarray:
        epoch, chunk = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutations = {r: self.permutation(r, epoch) for r in replicas}
        masks = np.zeros((len(replicas), self.n), dtype=bool)
        for i, r in enumerate(replicas):
            masks[i, self._permutations[r][chunk * self.batch_size : (chunk + 1) * self.batch_size]] = True
        return masks


class PersistentPoisson:
    """P-SGD (thesis 2.4.3): a membership chain per sample, ``ceil(1/b)`` steps per epoch.

    Step 0: each sample in with probability ``b``. Every later step, independently
    per sample: out -> in with probability ``eta/tau``, in -> out with probability
    ``(1-b) eta/(b tau)``, so the stationary in-fraction stays ``b``. ``eta`` is the
    unscaled ``lr``. One uniform per sample per step decides both directions; the chains
    of all replicas advance in one Numba call (:mod:`phaseret.philox`).
    """

    def __init__(self, n: int, batch_fraction: float, tau: float, lr: float, keys: np.ndarray):
        self.n = n
        self.steps_per_epoch = math.ceil(1.0 / batch_fraction)
        self.probability_in = lr / tau
        self.probability_out = (1.0 - batch_fraction) * lr / (batch_fraction * tau)
        self._b = batch_fraction
        self._keys = np.ascontiguousarray(keys, dtype=np.uint64)
        self._member = np.zeros((len(keys), n), dtype=bool)
        self._step = -1

    def select(self, step: int, replicas: np.ndarray) -> np.ndarray:
        if step != self._step + 1:
            raise ValueError(f"step: the P-SGD chain runs forward one step at a time; expected {self._step + 1}, got {step}")
        philox.persistent_step(self._member, self._keys, np.asarray(replicas, dtype=np.int64),
                               seeding.STREAMS["p-sgd-membership"], step, self._b,
                               self.probability_in, self.probability_out)
        self._step = step
        return self._member[replicas]


def selector(algorithm: str, n: int, batch_fraction: float, tau: float, lr: float, keys: np.ndarray):
    """The batch selector of ``algorithm`` (``gd``, ``sgd``, ``p-sgd``, ``langevin``) for the
    replicas whose Philox keys are ``keys`` (R, 2)."""
    if algorithm == "sgd":
        return ShuffledChunks(n, batch_fraction, keys)
    if algorithm == "p-sgd":
        return PersistentPoisson(n, batch_fraction, tau, lr, keys)
    return FullBatch()
