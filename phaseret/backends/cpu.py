"""The CPU backend: a replica batch as NumPy arrays, stepped by BLAS products around Numba kernels.

Products: BLAS ``Lambda^T = W X^T`` and ``G = D^T X`` around the Numba per-sample kernel
(residual, derivative, batch mask, loss and error in one pass over ``Lambda``;
:func:`phaseret.kernels.derivative.replica_factors`). All replicas of a ``shared`` landscape
go through one matrix-matrix product; a ``per-seed`` replica uses its own ``X``. A single
float64 column (one replica with one unit, or each replica of a per-seed batch with d = 1)
instead goes through :func:`phaseret.kernels.column.column_step`, which reads each row of
``X`` once for both passes; in float32 it lost to BLAS, so float32 keeps BLAS.
"""

from __future__ import annotations

import numpy as np

from .. import sphere
from ..kernels import column, derivative, maxima
from ..optim import Optimizer
from . import Instance

#: The backward product skips the rows outside every batch when they are more than a quarter
#: of all rows and the product is wide enough (replicas x hidden units) to pay for gathering
#: the rest: measured at n = 2048, p = 1024, 100 columns, half the rows: 2.9 ms instead of
#: 4.8 ms; with 1 to 32 columns the gather costs more than it saves.
SUBSET_FRACTION = 0.75
SUBSET_COLUMNS = 64


class CpuProducts:
    """Numba/BLAS gradients and sums of one instance.

    ``X`` is (n, p) for a shared landscape or (R, n, p) with one instance per replica,
    ``t`` the targets (n,) or (R, n); the arrays' dtype is the step's dtype.
    """

    def __init__(self, codes: tuple, X: np.ndarray, t: np.ndarray):
        self.shared = X.ndim == 2
        self.X, self.t = X, t
        self.n = X.shape[-2]
        self._codes = codes

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
            g, loss, error = column.column_step(X, W[0, 0], t, mask[0], *self._codes)
            return g.reshape(1, 1, p), np.array([loss]), np.array([error])
        Lam_t = W.reshape(R * d, p) @ X.T
        Dt, losses, errors = derivative.replica_factors(Lam_t, t, mask, d, *self._codes)
        rows = np.flatnonzero(mask.any(axis=0)) if R * d >= SUBSET_COLUMNS else None
        if rows is not None and len(rows) < SUBSET_FRACTION * self.n:
            G = Dt[:, rows] @ X[rows]
        else:
            G = Dt @ X
        return G.reshape(R, d, p), losses, errors


class CpuReplicas:
    """The replica state on the CPU (:class:`phaseret.backends.ReplicaState`): NumPy arrays, the
    products of :class:`CpuProducts`."""

    def __init__(self, codes: tuple, optimizer: Optimizer, instance: Instance, W0: np.ndarray, record_jumps: int):
        self.optimizer = optimizer
        self.train = CpuProducts(codes, instance.X, instance.t)
        self.test = CpuProducts(codes, instance.X_test, instance.t_test)
        self.W = W0
        self.live = np.arange(len(W0))
        self.steps_per_epoch = optimizer.selector.steps_per_epoch
        self.state = optimizer.rule.init(W0)
        self._ema = np.full((len(W0), 2), np.nan)  # (tangent, raw) per live replica
        self._diverged_at = np.full(len(W0), -1)
        self.jumps = [[] for _ in range(len(W0))] if record_jumps else None
        self.previous_G = None
        self.G = None

    def gradients(self, step: int, measure: bool):
        masks = self.optimizer.selector.select(step, self.live)
        self.G, losses, errors = self.train.step(self.W, masks, self.live)
        return (losses, errors) if measure else None

    def update(self, step: int) -> None:
        o, G = self.optimizer, self.G
        measured = maxima.gradient_maxima(G, self.W, o.projection)  # (tangent, raw) per replica
        self._ema = maxima.ema_update(self._ema, measured)
        if self.jumps is not None:
            for i, r in enumerate(self.live):
                jump = 0.0 if self.previous_G is None else float(np.linalg.norm(G[i] - self.previous_G[i]))
                self.jumps[r].append(jump)
            self.previous_G = G.copy()
        delta, self.state = o.rule.step(G, self.state, o.step_size)
        self.W = self.W + delta
        if o.noise is not None:
            self.W = o.noise.add(self.W, self.live, step, o.step_size)
        if o.projection:
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
        return np.asarray(self.jumps[replica])

    def keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.live = self.live[keep]
        self.W, self.G = self.W[keep], self.G[keep]
        self._ema, self._diverged_at = self._ema[keep], self._diverged_at[keep]
        self.state = type(self.state)(*(s[keep] if isinstance(s, np.ndarray) else s for s in self.state))
        if self.previous_G is not None:
            self.previous_G = self.previous_G[keep]
