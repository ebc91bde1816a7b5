"""Batch selection: which samples form the batch ``M_t`` of step ``t`` (SPEC 4).

A selector has ``steps_per_epoch`` and ``select(step)``, called with
consecutive global steps ``0, 1, 2, ...``; it returns a boolean mask (n,) of the
rows in the batch, or None for all rows. Random choices come from
the cell's Philox key addressed by ``(stream, step)`` (SPEC 7).
"""

from __future__ import annotations

import math

import numpy as np

from . import seeding


class FullBatch:
    """All ``n`` samples, one step per epoch (GD, Langevin)."""

    steps_per_epoch = 1

    def select(self, step: int) -> None:
        return None


class ShuffledChunks:
    """SGD: each epoch a fresh permutation cut into ``floor(n / B)`` chunks of ``B = floor(b n)``,
    the remainder dropped. The permutation of epoch ``e`` sorts the uniforms of step ``e`` of the
    ``sgd-permutation`` stream."""

    def __init__(self, n: int, batch_fraction: float, key: np.ndarray):
        self.n = n
        self.batch_size = int(batch_fraction * n)
        self.steps_per_epoch = n // self.batch_size
        self._key = key
        self._epoch = -1
        self._permutation = None

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the samples in ``epoch``."""
        return np.argsort(seeding.step_uniforms(self._key, "sgd-permutation", epoch, self.n), kind="stable")

    def select(self, step: int) -> np.ndarray:
        epoch, chunk = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, self.permutation(epoch)
        mask = np.zeros(self.n, dtype=bool)
        mask[self._permutation[chunk * self.batch_size : (chunk + 1) * self.batch_size]] = True
        return mask


class PersistentPoisson:
    """P-SGD (thesis 2.4.3): a membership chain per sample, ``ceil(1/b)`` steps per epoch.

    Step 0: each sample in with probability ``b``. Every later step, independently
    per sample: out -> in with probability ``eta/tau``, in -> out with probability
    ``(1-b) eta/(b tau)``, so the stationary in-fraction stays ``b``. ``eta`` is the
    unscaled ``lr``. One uniform per sample per step decides both directions.
    """

    def __init__(self, n: int, batch_fraction: float, tau: float, lr: float, key: np.ndarray):
        self.n = n
        self.steps_per_epoch = math.ceil(1.0 / batch_fraction)
        self.probability_in = lr / tau
        self.probability_out = (1.0 - batch_fraction) * lr / (batch_fraction * tau)
        self._b = batch_fraction
        self._key = key
        self._step = -1
        self._member = None

    def select(self, step: int) -> np.ndarray:
        if step != self._step + 1:
            raise ValueError(f"step: the P-SGD chain runs forward one step at a time; expected {self._step + 1}, got {step}")
        u = seeding.step_uniforms(self._key, "p-sgd-membership", step, self.n)
        if step == 0:
            self._member = u < self._b
        else:
            flip = np.where(self._member, u < self.probability_out, u < self.probability_in)
            self._member = self._member ^ flip
        self._step = step
        return self._member


def selector(algorithm: str, n: int, batch_fraction: float, tau: float, lr: float, key: np.ndarray):
    """The batch selector of ``algorithm`` (``gd``, ``sgd``, ``p-sgd``, ``langevin``)."""
    if algorithm == "sgd":
        return ShuffledChunks(n, batch_fraction, key)
    if algorithm == "p-sgd":
        return PersistentPoisson(n, batch_fraction, tau, lr, key)
    return FullBatch()
