"""Backends: the state of a replica batch between steps and the step itself.

The engine (:mod:`phaseret.engine`) knows no optimizer and no device. It drives a
*replica state* through four calls per step and a few per epoch:

* ``gradients(step, measure)``: draw each live replica's batch ``M_t`` and compute the
  batch gradients at the current ``W``; with ``measure`` also return the loss and
  error sums (R,) over *all* training rows at that ``W`` (the epoch's evaluation,
  folded into the step's forward pass);
* ``update(step)``: gradient EMA, update rule, Langevin noise, projection, and the
  first non-finite step of each replica (``diverged_at``);
* per epoch: ``weights()`` (R, d, p), ``ema()`` (R, 2), ``test_error_sums()`` (R,),
  ``diverged_at()`` (R,), and ``keep(mask)`` to drop finished replicas; ``live`` holds the
  original indices of the replicas still running.

Everything a backend returns is a host NumPy array: a GPU backend crosses to the host
once per epoch, for the stopping rule only. ``CpuReplicas`` is the NumPy/Numba one;
``phaseret.cuda_backend.CudaReplicas`` (imported lazily by :func:`replicas`) the GPU one.

CPU products: BLAS ``Lambda^T = W X^T`` and ``G = D^T X`` around the Numba per-sample
kernel (residual, derivative, batch mask, loss and error in one pass over ``Lambda``).
All replicas of a ``shared`` landscape go through one matrix-matrix product; a
``per-seed`` replica uses its own ``X``. A single float64 column (one replica with one
unit, or each replica of a per-seed batch with d = 1) instead goes through
``kernels.column_step``, which reads each row of ``X`` once for both passes, four rows at
a time: at p = 1024, n = 2048 it took 0.27 ms against 0.31-0.34 ms for OpenBLAS's two
matrix-vector products. In float32 it lost (0.22-0.25 ms against 0.14-0.17 ms), so float32
keeps BLAS.
"""

from __future__ import annotations

import numpy as np

from . import batches, kernels, noise, sphere, updates
from .config import RunConfig
from .models import Model

#: The backward product skips the rows outside every batch when they are more than a quarter
#: of all rows and the product is wide enough (replicas x hidden units) to pay for gathering
#: the rest: measured at n = 2048, p = 1024, 100 columns, half the rows: 2.9 ms instead of
#: 4.8 ms; with 1 to 32 columns the gather costs more than it saves.
SUBSET_FRACTION = 0.75
SUBSET_COLUMNS = 64


def replicas(backend: str, model: Model, config: RunConfig, instance: dict, W0: np.ndarray, keys: np.ndarray,
             noise_records: list | None, record_jumps: bool):
    """The replica state of ``backend`` (``cpu`` or ``cuda``, see :func:`phaseret.devices.resolve`).

    ``instance`` holds ``X``, ``t``, ``X_test``, ``t_test`` in the step's dtype, shared
    (n, p) or one per replica (R, n, p); ``W0`` (R, d, p) the starts; ``keys`` (R, 2) uint64
    the cells' Philox keys; ``noise_records`` the matched-noise records of Langevin cells.
    """
    if backend == "cuda":
        from .cuda_backend import CudaReplicas  # lazily: numba-cuda is an optional extra

        return CudaReplicas(model, config, instance, W0, keys, noise_records, record_jumps)
    return CpuReplicas(model, config, instance, W0, keys, noise_records, record_jumps)


class CpuProducts:
    """Numba/BLAS gradients and sums of one instance.

    ``X`` is (n, p) for a shared landscape or (R, n, p) with one instance per replica,
    ``t`` the targets (n,) or (R, n); the arrays' dtype is the step's dtype.
    """

    def __init__(self, model: Model, X: np.ndarray, t: np.ndarray):
        self.shared = X.ndim == 2
        self.X, self.t = X, t
        self.n = X.shape[-2]
        self._codes = model.kernel_codes

    def step(self, W: np.ndarray, mask: np.ndarray | None, replicas: np.ndarray) -> tuple:
        """Gradients (R, d, p), loss sums (R,), error sums (R,) of the live ``replicas`` (indices into
        the instance's replicas); ``mask`` (R, n) bool marks each batch, None for all rows."""
        R, d, p = W.shape
        if mask is None:
            mask = np.ones((R, self.n), dtype=bool)
        if self.shared:
            return self._products(self.X, W, self.t, mask)
        G = np.empty_like(W)
        losses, errors = np.empty(R), np.empty(R)
        for i, r in enumerate(replicas):
            G[i : i + 1], losses[i : i + 1], errors[i : i + 1] = self._products(
                self.X[r], W[i : i + 1], self.t[r], mask[i : i + 1])
        return G, losses, errors

    def _products(self, X, W, t, mask):
        R, d, p = W.shape
        if R * d == 1 and X.dtype == np.float64:  # one column: one pass over X beats two BLAS products
            g, loss, error = kernels.column_step(X, W[0, 0], t, mask[0], *self._codes)
            return g.reshape(1, 1, p), np.array([loss]), np.array([error])
        Lam_t = W.reshape(R * d, p) @ X.T
        Dt, losses, errors = kernels.replica_factors(Lam_t, t, mask, d, *self._codes)
        rows = np.flatnonzero(mask.any(axis=0)) if R * d >= SUBSET_COLUMNS else None
        if rows is not None and len(rows) < SUBSET_FRACTION * self.n:
            G = Dt[:, rows] @ X[rows]
        else:
            G = Dt @ X
        return G.reshape(R, d, p), losses, errors


def noise_sources(config: RunConfig, keys: np.ndarray, records: list | None) -> list | None:
    """The Langevin noise source of each replica (:mod:`phaseret.noise`), None for other algorithms."""
    if config.algorithm != "langevin":
        return None
    if config.noise == "temperature":
        return [noise.temperature(config.T0, config.t_cool, key) for key in keys]
    return [noise.matched(record, key) for record, key in zip(records, keys)]


class CpuReplicas:
    """The replica state on the CPU: NumPy arrays, the products of :class:`CpuProducts`."""

    def __init__(self, model, config, instance, W0, keys, noise_records, record_jumps):
        c = self.config = config
        self.train = CpuProducts(model, instance["X"], instance["t"])
        self.test = CpuProducts(model, instance["X_test"], instance["t_test"])
        self.W = W0
        self.live = np.arange(len(W0))
        self.selector = batches.selector(c.algorithm, self.train.n, c.batch_fraction, c.tau, c.lr, keys)
        self.steps_per_epoch = self.selector.steps_per_epoch
        self.rule = updates.rule(c.update, c.momentum, c.adam_eps)
        self.state = self.rule.init(W0)
        self.noises = noise_sources(c, keys, noise_records)
        self._ema = np.full((len(W0), 2), np.nan)  # (tangent, raw) per live replica
        self._diverged_at = np.full(len(W0), -1)
        self.jumps = [[] for _ in range(len(W0))] if record_jumps else None
        self.previous_G = None
        self.G = None

    def gradients(self, step: int, measure: bool):
        masks = self.selector.select(step, self.live)
        self.G, losses, errors = self.train.step(self.W, masks, self.live)
        return (losses, errors) if measure else None

    def update(self, step: int) -> None:
        c, G = self.config, self.G
        measured = kernels.gradient_maxima(G, self.W, c.projection)  # (tangent, raw) per replica
        previous = self._ema
        self._ema = np.where(np.isnan(previous), measured, 0.9 * previous + 0.1 * measured)
        if self.jumps is not None:
            for i, r in enumerate(self.live):
                jump = 0.0 if self.previous_G is None else float(np.linalg.norm(G[i] - self.previous_G[i]))
                self.jumps[r].append(jump)
            self.previous_G = G.copy()
        delta, self.state = self.rule.step(G, self.state, c.step_size)
        self.W = self.W + delta
        if self.noises is not None:
            for i, r in enumerate(self.live):
                self.W[i] = self.noises[r](self.W[i], step, c.step_size)
        if c.projection:
            self.W = sphere.project(self.W)
        diverged = ~np.isfinite(measured[:, 1]) | ~np.all(np.isfinite(self.W), axis=(1, 2))
        self._diverged_at[diverged & (self._diverged_at < 0)] = step

    def weights(self) -> np.ndarray:
        return self.W

    def ema(self) -> np.ndarray:
        return self._ema

    def diverged_at(self) -> np.ndarray:
        return self._diverged_at

    def test_error_sums(self) -> np.ndarray:
        nothing = np.zeros((len(self.live), self.test.n), dtype=bool)
        return self.test.step(self.W, nothing, self.live)[2]

    def gradient_jumps(self, replica: int) -> np.ndarray:
        """The recorded ``|g_t - g_{t-1}|_F`` of ``replica`` (an index into the original batch)."""
        return np.asarray(self.jumps[replica])

    def keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.live = self.live[keep]
        self.W, self.G = self.W[keep], self.G[keep]
        self._ema, self._diverged_at = self._ema[keep], self._diverged_at[keep]
        self.state = tuple(s[keep] if isinstance(s, np.ndarray) else s for s in self.state)
        if self.previous_G is not None:
            self.previous_G = self.previous_G[keep]
