"""Batch selectors: which samples form the batch ``M_t`` of step ``t`` (SPEC 4), for R replicas.

A selector has ``steps_per_epoch`` and ``select(step, replicas)``, called with consecutive
global steps ``0, 1, 2, ...`` and the indices of the live replicas; it returns their
boolean masks (len(replicas), n) of the rows in each batch, or None for all rows. Each
replica's random choices come from its cell's Philox key (``keys`` (R, 2) uint64),
addressed by ``(stream, step)`` (SPEC 7). The CUDA backend runs P-SGD's chain on the
device with the same ``next_membership`` and the same Philox uniforms.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numba import njit

from .. import seeding
from ..kernels import philox


class BatchSelector(Protocol):
    """What a selector provides: ``steps_per_epoch`` and ``select(step, replicas)``, the masks
    (len(replicas), n) bool of the live ``replicas`` (original indices) at ``step``, or None for
    all rows."""

    steps_per_epoch: int

    def select(self, step: int, replicas: np.ndarray) -> np.ndarray | None: ...


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
        self.keys = keys
        self._epoch = -1
        self._permutations = {}

    def permutation(self, replica: int, epoch: int) -> np.ndarray:
        """The order of the samples of ``replica`` in ``epoch``."""
        uniforms = seeding.step_uniforms(self.keys[replica], "sgd-permutation", epoch, self.n)
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


def flip_probabilities(lr: float, batch_fraction: float, tau: float) -> tuple[float, float]:
    """P-SGD's per-step flips (SPEC 4, thesis 2.4.3): ``(eta/tau, (1-b) eta/(b tau))``, out -> in
    and in -> out, so that the stationary in-fraction stays ``b``; ``eta`` is the unscaled ``lr``."""
    return lr / tau, (1.0 - batch_fraction) * lr / (batch_fraction * tau)


@njit(cache=True, inline="always")
def next_membership(inside, u, step, b, probability_in, probability_out):
    """One sample's P-SGD chain at ``step`` from its uniform ``u``: at step 0 in with probability
    ``b``; later out -> in with ``probability_in``, in -> out with ``probability_out``."""
    if step == 0:
        return u < b
    if inside:
        return not (u < probability_out)
    return u < probability_in


@njit(cache=True)
def persistent_step(member, keys, replicas, stream, step, b, probability_in, probability_out):
    """Advance the P-SGD chains of ``replicas`` one step in place: ``member`` (R, n) bool,
    ``keys`` (R, 2) uint64; one uniform per sample per step decides both directions."""
    n = member.shape[1]
    u = np.empty(n)
    for r in replicas:
        philox.uniforms_into(u, keys[r], stream, step)
        for mu in range(n):
            member[r, mu] = next_membership(member[r, mu], u[mu], step, b, probability_in, probability_out)


class PersistentPoisson:
    """P-SGD (thesis 2.4.3): a membership chain per sample, ``ceil(1/b)`` steps per epoch; the
    chains of all replicas advance in one Numba call (:func:`persistent_step`)."""

    stream = seeding.STREAMS["p-sgd-membership"]

    def __init__(self, n: int, batch_fraction: float, tau: float, lr: float, keys: np.ndarray):
        self.n = n
        self.steps_per_epoch = math.ceil(1.0 / batch_fraction)
        self.batch_fraction = batch_fraction
        self.probability_in, self.probability_out = flip_probabilities(lr, batch_fraction, tau)
        self.keys = np.ascontiguousarray(keys, dtype=np.uint64)
        self._member = np.zeros((len(keys), n), dtype=bool)
        self._step = -1

    def select(self, step: int, replicas: np.ndarray) -> np.ndarray:
        if step != self._step + 1:
            raise ValueError(f"step: the P-SGD chain runs forward one step at a time; expected {self._step + 1}, got {step}")
        persistent_step(self._member, self.keys, np.asarray(replicas, dtype=np.int64), self.stream, step,
                        self.batch_fraction, self.probability_in, self.probability_out)
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
