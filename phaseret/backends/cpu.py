"""The CPU backend: a replica batch as NumPy arrays, stepped by BLAS products around Numba kernels.

Products: BLAS ``Lambda^T = W X^T`` and ``G = D^T X`` around the Numba per-sample kernel
(residual, derivative, batch mask, loss and error in one pass over ``Lambda``;
:func:`phaseret.kernels.derivative.replica_factors`). All replicas of a ``shared`` landscape
go through one matrix-matrix product; in the ``per-seed`` landscape the replicas of one seed
(its optimizers) share that seed's ``X`` and its product. Up to
:data:`~phaseret.kernels.panel.PANEL_COLUMNS` replicas with one unit each instead go through
:func:`phaseret.kernels.panel.panel_step`, which reads each row of ``X`` once for both passes
(OpenBLAS is slow for skinny products).
"""

from __future__ import annotations

import numpy as np

from ..kernels import derivative, panel
from . import cpu_kernels
from . import Instance

#: The backward product skips the rows outside every batch when they are more than a quarter
#: of all rows and the product is wide enough (replicas x hidden units) to pay for gathering
#: the rest: measured at n = 2048, p = 1024, 100 columns, half the rows: 2.9 ms instead of
#: 4.8 ms; with 1 to 32 columns the gather costs more than it saves.
SUBSET_FRACTION = 0.75
SUBSET_COLUMNS = 64


class CpuProducts:
    """Numba/BLAS gradients and sums of one instance.

    ``X`` is (n, p) for a shared landscape or (S, n, p) with one instance per seed, ``t`` the
    targets (n,) or (S, n); the arrays' dtype is the step's dtype. ``instance_of`` (R0,) gives each
    original replica's instance; the replicas that see one instance go through one product.
    """

    def __init__(self, codes: tuple, X: np.ndarray, t: np.ndarray, instance_of: np.ndarray):
        self.shared = X.ndim == 2
        self.X, self.t = X, t
        self.n = X.shape[-2]
        self.instance_of = instance_of
        self._codes = codes
        self._workspace = np.empty(0, dtype=X.dtype)  # panel_step's per-chunk gradients, reused

    def step(self, W: np.ndarray, mask: np.ndarray | None, replicas: np.ndarray) -> tuple:
        """Gradients (R, d, p), loss sums (R,), error sums (R,) of the original ``replicas`` (R,) at
        ``W`` (R, d, p); ``mask`` (R, n) bool marks each batch, None for all rows."""
        R, d, p = W.shape
        if mask is None:
            mask = np.ones((R, self.n), dtype=bool)
        if self.shared:
            return self._products(self.X, W, self.t, mask)
        G = np.empty_like(W)
        losses, errors = np.empty(R), np.empty(R)
        instances = self.instance_of[replicas]
        for instance in np.unique(instances):
            rows = np.flatnonzero(instances == instance)
            G[rows], losses[rows], errors[rows] = self._products(self.X[instance], W[rows], self.t[instance], mask[rows])
        return G, losses, errors

    def _products(self, X, W, t, mask):
        R, d, p = W.shape
        if d == 1 and R <= panel.PANEL_COLUMNS:  # a few columns: one pass over X beats two BLAS products
            size = panel.chunks(self.n) * R * p
            if self._workspace.size < size:  # a fresh large array per call cost more than the pass
                self._workspace = np.empty(size, dtype=X.dtype)
            work = self._workspace[:size].reshape(-1, R, p)
            g, losses, errors = panel.panel_step(X, W.reshape(R, p), t, mask, work, *self._codes)
            return g.reshape(R, 1, p), losses, errors
        Lam_t = W.reshape(R * d, p) @ X.T
        Dt, losses, errors = derivative.replica_factors(Lam_t, t, mask, d, *self._codes)
        rows = np.flatnonzero(mask.any(axis=0)) if R * d >= SUBSET_COLUMNS else None
        if rows is not None and len(rows) < SUBSET_FRACTION * self.n:
            G = Dt[:, rows] @ X[rows]
        else:
            G = Dt @ X
        return G.reshape(R, d, p), losses, errors


class CpuReplicas:
    """The replica state on the CPU (:class:`phaseret.backends.ReplicaState`): NumPy arrays over the
    live replicas in their original order, so each part's live replicas are consecutive rows; one
    call of :class:`CpuProducts` serves every part that takes a step."""

    def __init__(self, codes: tuple, parts: tuple, instance: Instance, instance_of: np.ndarray, W0: np.ndarray,
                 record_jumps: int):
        self.parts = parts
        self.train = CpuProducts(codes, instance.X, instance.t, instance_of)
        self.test = CpuProducts(codes, instance.X_test, instance.t_test, instance_of)
        self.W = W0.copy()
        self.G = np.zeros_like(W0)
        self.live = np.arange(len(W0))
        self.first = np.zeros_like(W0)  # each rule's velocity or Adam's m (rules.direction)
        self.second = np.zeros_like(W0)  # Adam's v
        self._ema = np.full((len(W0), 2), np.nan)  # (tangent, raw) per live replica
        self._diverged_at = np.full(len(W0), -1)
        self.jumps = [[] for _ in range(len(W0))] if record_jumps else None
        self.previous_G = np.zeros_like(W0) if record_jumps else None
        self.taking: list[int] = []  # the parts that take the current step
        self.spans = [slice(part.span.start, part.span.stop) for part in parts]  # each part's live rows

    def gradients(self, epoch: int, j: int, measure: bool):
        self.taking = [k for k, part in enumerate(self.parts)
                       if j < part.steps_per_epoch and self.spans[k].stop > self.spans[k].start]
        if not self.taking:
            return None
        masks = []
        for k in self.taking:
            part, span = self.parts[k], self.spans[k]
            masks.append(part.optimizer.selector.select(epoch * part.steps_per_epoch + j, self.live[span] - part.span.start))
        if len(self.taking) == 1:
            rows, mask = self.spans[self.taking[0]], masks[0]
        else:
            spans = [self.spans[k] for k in self.taking]
            rows = np.concatenate([np.arange(span.start, span.stop) for span in spans])
            mask = np.concatenate([np.ones((span.stop - span.start, self.train.n), dtype=bool) if m is None else m
                                   for span, m in zip(spans, masks)])
        G, losses, errors = self.train.step(self.W[rows], mask, self.live[rows])
        self.G[rows] = G
        return (losses, errors) if measure else None

    def update(self, epoch: int, j: int) -> None:
        for k in self.taking:
            part, rows = self.parts[k], self.spans[k]
            o, rule, W = part.optimizer, part.optimizer.rule, self.W[rows]
            step = epoch * part.steps_per_epoch + j
            if self.jumps is not None:
                self._record_jumps(rows, self.G[rows])
            cpu_kernels.descend(W, self.G[rows], self.first[rows], self.second[rows], self._ema[rows], o.projection,
                                rule.kind, o.step_size, rule.gamma, rule.beta1, rule.beta2,
                                1.0 - rule.beta1 ** (step + 1), 1.0 - rule.beta2 ** (step + 1), rule.eps)
            if o.noise is not None:
                W[:] = o.noise.add(W, self.live[rows] - part.span.start, step, o.step_size)
            cpu_kernels.settle(W, o.projection, self._diverged_at[rows], step)

    def _record_jumps(self, rows: slice, G: np.ndarray) -> None:
        """Append ``|g_t - g_{t-1}|_F`` (0 at a replica's first step) to the records of ``rows``."""
        for i, r in enumerate(self.live[rows]):
            previous = self.previous_G[rows][i]
            self.jumps[r].append(float(np.linalg.norm(G[i] - previous)) if self.jumps[r] else 0.0)
        self.previous_G[rows] = G

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
        bounds = np.searchsorted(self.live, [[part.span.start, part.span.stop] for part in self.parts])
        self.spans = [slice(int(a), int(b)) for a, b in bounds]
        self.W, self.G = self.W[keep], self.G[keep]
        self.first, self.second = self.first[keep], self.second[keep]
        self._ema, self._diverged_at = self._ema[keep], self._diverged_at[keep]
        if self.previous_G is not None:
            self.previous_G = self.previous_G[keep]
