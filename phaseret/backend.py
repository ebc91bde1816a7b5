"""The step over a replica batch: the one interface between the training loop and the kernels.

A backend holds one instance's data and answers ``step(W, mask, replicas)``: at the
weights ``W`` (R, d, p) of the live replicas it returns the gradients (R, d, p) of the
summed loss over each replica's batch and the loss and error sums over *all* rows
(R,) each, the epoch's evaluation folded into the next step's forward pass.

CPU strategy: one replica with few hidden units runs the fused row kernel (each
row of X read once, threads over fixed row chunks); several replicas on one
``X`` (the ``shared`` landscape) or many hidden units run as matrix-matrix
products, ``Lambda = X W^T`` and ``G = D^T X``, around the per-sample kernel.
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .models import Model

#: At most this many pre-activation columns (replicas x hidden units) use the fused row kernel.
FUSED_COLUMNS = 4
#: Below this fraction of rows in any batch, the backward product skips the other rows.
SUBSET_FRACTION = 0.75


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
            if R * d <= FUSED_COLUMNS and R == 1:
                return self._fused(self.X, W[0], self.t, mask[0])
            return self._products(self.X, W, self.t, mask)
        results = [
            (self._fused if d <= FUSED_COLUMNS else self._products_one)(self.X[r], W[i], self.t[r], mask[i])
            for i, r in enumerate(replicas)
        ]
        G = np.stack([g.reshape(d, p) for g, _, _ in results])
        return G, np.array([l for _, l, _ in results]).ravel(), np.array([e for _, _, e in results]).ravel()

    def _fused(self, X, W, t, mask):
        G, loss, error = kernels.fused_step(X, W, t, mask, *self._codes)
        return G[None], np.array([loss]), np.array([error])

    def _products_one(self, X, W, t, mask):
        return self._products(X, W[None], t, mask[None])

    def _products(self, X, W, t, mask):
        R, d, p = W.shape
        Lam = X @ W.reshape(R * d, p).T
        D, losses, errors = kernels.replica_factors(Lam, t, mask, d, *self._codes)
        rows = np.flatnonzero(mask.any(axis=0))
        if len(rows) < SUBSET_FRACTION * self.n:
            G = D[rows].T @ X[rows]
        else:
            G = D.T @ X
        return G.reshape(R, d, p), losses, errors
