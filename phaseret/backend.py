"""The step over a replica batch: the one interface between the training loop and the kernels.

A backend holds one instance's data and answers ``step(W, mask, replicas)``: at the
weights ``W`` (R, d, p) of the live replicas it returns the gradients (R, d, p) of the
summed loss over each replica's batch and the loss and error sums over *all* rows
(R,) each, the epoch's evaluation folded into the next step's forward pass.

CPU strategy: BLAS products ``Lambda^T = W X^T`` and ``G = D^T X`` around the
Numba per-sample kernel (residual, derivative, batch mask, loss and error in one
pass over ``Lambda``). All replicas of a ``shared`` landscape go through one
matrix-matrix product; a ``per-seed`` replica uses its own ``X``. A fused Numba
row kernel (each row read once) was measured slower than OpenBLAS's two
matrix-vector products at p = 1024, n = 2048 (0.37 ms against 0.29 ms in
float64, 0.31 ms against 0.13 ms in float32), so it is not used.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .models import Model

#: The backward product skips the rows outside every batch when they are more than a quarter
#: of all rows and the product is wide enough (replicas x hidden units) to pay for gathering
#: the rest: measured at n = 2048, p = 1024, 100 columns, half the rows: 2.9 ms instead of
#: 4.8 ms; with 1 to 32 columns the gather costs more than it saves.
SUBSET_FRACTION = 0.75
SUBSET_COLUMNS = 64


class CpuBackend:
    """Numba/BLAS step over a replica batch.

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
        Lam_t = (X @ W.reshape(R * d, p).T).T
        Dt, losses, errors = kernels.replica_factors(Lam_t, t, mask, d, *self._codes)
        rows = np.flatnonzero(mask.any(axis=0)) if R * d >= SUBSET_COLUMNS else None
        if rows is not None and len(rows) < SUBSET_FRACTION * self.n:
            G = Dt[:, rows] @ X[rows]
        else:
            G = Dt @ X
        return G.reshape(R, d, p), losses, errors
