"""Backends: the state of a replica batch between steps, and the step itself, on one device.

The engine (:mod:`phaseret.engine`) knows no optimizer and no device. It drives a
:class:`ReplicaState` through two calls per step and a few per epoch. A backend is built
from the model's kernel codes, the batch's parts (:class:`~phaseret.replica_batch.Part`: a span
of replicas and its :class:`~phaseret.optim.Optimizer`), an :class:`Instance` and the starts; it
never sees a configuration. Step ``j`` of an epoch is taken by the parts with more than ``j``
steps per epoch; a part's own step count is ``epoch * steps_per_epoch + j``. ``CpuReplicas`` (:mod:`.cpu`) is the
NumPy/Numba one; ``CudaReplicas`` (:mod:`.cuda`, imported lazily by :func:`replica_state`:
numba-cuda is an optional extra) the GPU one. Everything a backend returns is a host NumPy
array: a GPU backend crosses to the host once per epoch, for the stopping rule only.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np



class Instance(NamedTuple):
    """The data of a replica batch in the step's dtype: ``X`` (n, p) and targets ``t`` (n,) shared
    by all replicas, or one per seed, (S, n, p) and (S, n); ``X_test``, ``t_test`` likewise."""

    X: np.ndarray
    t: np.ndarray
    X_test: np.ndarray
    t_test: np.ndarray


@runtime_checkable
class ReplicaState(Protocol):
    """What the engine needs of a backend. R0 replicas start; ``live`` (R,) holds the original
    indices of the R still running, and every per-replica array below is over those R."""

    live: np.ndarray

    def gradients(self, epoch: int, j: int, measure: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """Draw the batch ``M_t`` of step ``j`` of ``epoch`` of each live replica that takes it and
        compute its gradient at the current ``W``; with ``measure`` (``j = 0``: every replica takes
        it) return the loss and error sums (R,) over *all* training rows at that ``W`` (the
        epoch's evaluation, folded into the step's forward pass)."""

    def update(self, epoch: int, j: int) -> None:
        """Gradient EMA, update rule, Langevin noise, projection of the replicas that take step ``j``;
        note the first non-finite step."""

    def weights(self) -> np.ndarray:
        """``W`` (R, d, p)."""

    def ema(self) -> np.ndarray:
        """Gradient EMA (R, 2): tangent and raw ``max |g|`` (SPEC 3)."""

    def diverged_at(self) -> np.ndarray:
        """(R,) int: the replica's own step where a gradient or weight went non-finite, -1 if none."""

    def test_error_sums(self) -> np.ndarray:
        """(R,) sums of the per-sample errors on the test set at the current ``W``."""

    def gradient_jumps(self, replica: int) -> np.ndarray:
        """The record ``|g_t - g_{t-1}|_F`` (``sigma_0 = 0``) of original replica ``replica``."""

    def keep(self, keep: np.ndarray) -> None:
        """Drop the live replicas where ``keep`` (R,) bool is False."""


def replica_state(device: str, codes: tuple, parts: tuple, instance: Instance, instance_of: np.ndarray,
                  W0: np.ndarray, record_jumps: int) -> ReplicaState:
    """The replica state on ``device`` (``cpu`` or ``cuda``). ``codes``: the model's kernel codes
    (:attr:`phaseret.models.Model.kernel_codes`); ``parts``: the batch's parts; ``instance_of``
    (R,) the index of each replica's data in ``instance`` (0 for a shared landscape); ``W0``
    (R, d, p) the starts; ``record_jumps``: the most steps whose gradient jumps are recorded
    (0: none). The CUDA backend takes one part whose replicas each have their own data."""
    if device == "cuda":
        from .cuda import CudaReplicas

        if len(parts) != 1 or (instance.X.ndim == 3 and not np.array_equal(instance_of, np.arange(len(W0)))):
            raise ValueError("configs: the cuda backend runs one optimizer per replica batch, one instance per replica")
        return CudaReplicas(codes, parts[0].optimizer, instance, W0, record_jumps)
    from .cpu import CpuReplicas

    return CpuReplicas(codes, parts, instance, instance_of, W0, record_jumps)
