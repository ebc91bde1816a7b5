"""The step of a panel of columns (replicas with one unit each on one ``X``) in a single pass over ``X``.

Two BLAS products read ``X`` twice per step (``Lambda^T = W X^T``, then ``G = D^T X``), and
OpenBLAS is slow for the skinny products of a few columns: at n = 2048, p = 1024 in float32
a six-column product pair took 2.8 ms against 1.0 ms for this pass (``benchmarks/panel.py``).
The pass takes four rows at a time while they are in cache and, four columns at a time, forms
their sixteen pre-activations, the per-sample part and the rank-four update of each column's
gradient. :mod:`phaseret.backends.cpu` uses it up to ``PANEL_COLUMNS`` columns, BLAS beyond.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .derivative import activation, error_term, loss_terms

#: Rows per chunk, at least: a cut fixed by ``n`` alone, so the sums do not depend on the thread count.
CHUNK = 256
#: The most chunks: past ``MAX_CHUNKS * CHUNK`` rows the chunks grow, so the per-chunk gradients
#: (the workspace, chunks x columns x p) stay bounded.
MAX_CHUNKS = 16
#: Columns formed together over a block of four rows.
BLOCK = 4
#: The most columns per pass. On the development machine (AMD EPYC, 2 cores, 2026-12-02) the
#: pass beat BLAS at every width up to 64 (1.14x-1.79x, ``benchmarks/panel.py``); on the
#: Emerald Rapids machine of 2026-11-30 BLAS was as fast past 16 columns.
PANEL_COLUMNS = 64


@njit(cache=True, inline="always")
def _sample(lam, target, inside, act, evaluation, loss, eps, k_hat, door):
    """Per-sample part of one unit (d = 1): ``(loss, error, D)`` at pre-activation ``lam``."""
    g, g1, _ = activation(act, lam, eps)
    value, l1, _ = loss_terms(loss, g - k_hat, target)
    s_eval = g - k_hat if evaluation == act else activation(evaluation, lam, eps)[0] - k_hat
    return value, error_term(door, s_eval, target), l1 * g1 if inside else 0.0


@njit(cache=True)
def chunk_rows(n: int) -> int:
    """Rows per chunk for ``n`` rows: ``CHUNK``, or more (a multiple of four) to make at most
    ``MAX_CHUNKS`` chunks."""
    rows = -(-n // MAX_CHUNKS)
    return max(CHUNK, rows + (-rows) % 4)


@njit(cache=True)
def chunks(n: int) -> int:
    """How many chunks of rows :func:`panel_step` cuts ``n`` rows into."""
    return -(-n // chunk_rows(n))


@njit(cache=True, inline="always")
def _tile_forward(X, W, mu, r, p, zero):
    """Pre-activations of rows ``mu .. mu+3`` under columns ``r .. r+3``: ``lams[q][j] = X[mu+j] . W[r+q]``,
    each of the eight rows loaded once per coordinate for sixteen products."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
    for i in range(p):
        x0, x1, x2, x3 = X[mu, i], X[mu + 1, i], X[mu + 2, i], X[mu + 3, i]
        w0, w1, w2, w3 = W[r, i], W[r + 1, i], W[r + 2, i], W[r + 3, i]
        a00 += x0 * w0
        a01 += x1 * w0
        a02 += x2 * w0
        a03 += x3 * w0
        a10 += x0 * w1
        a11 += x1 * w1
        a12 += x2 * w1
        a13 += x3 * w1
        a20 += x0 * w2
        a21 += x1 * w2
        a22 += x2 * w2
        a23 += x3 * w2
        a30 += x0 * w3
        a31 += x1 * w3
        a32 += x2 * w3
        a33 += x3 * w3
    return (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33)


@njit(cache=True, inline="always")
def _tile_backward(X, D, G, c, mu, r, p):
    """``G[c, r+q] += sum_j D[q, j] X[mu+j]`` for the four columns ``q`` and four rows ``j``."""
    d00, d01, d02, d03 = D[0, 0], D[0, 1], D[0, 2], D[0, 3]
    d10, d11, d12, d13 = D[1, 0], D[1, 1], D[1, 2], D[1, 3]
    d20, d21, d22, d23 = D[2, 0], D[2, 1], D[2, 2], D[2, 3]
    d30, d31, d32, d33 = D[3, 0], D[3, 1], D[3, 2], D[3, 3]
    for i in range(p):
        x0, x1, x2, x3 = X[mu, i], X[mu + 1, i], X[mu + 2, i], X[mu + 3, i]
        G[c, r, i] += d00 * x0 + d01 * x1 + d02 * x2 + d03 * x3
        G[c, r + 1, i] += d10 * x0 + d11 * x1 + d12 * x2 + d13 * x3
        G[c, r + 2, i] += d20 * x0 + d21 * x1 + d22 * x2 + d23 * x3
        G[c, r + 3, i] += d30 * x0 + d31 * x1 + d32 * x2 + d33 * x3


@njit(cache=True, inline="always")
def _column_forward(X, W, mu, rows, r, p, zero):
    """Pre-activations of the ``rows`` (4 or 1) rows from ``mu`` under column ``r``."""
    a0, a1, a2, a3 = zero, zero, zero, zero
    if rows == 4:
        for i in range(p):
            w = W[r, i]
            a0 += X[mu, i] * w
            a1 += X[mu + 1, i] * w
            a2 += X[mu + 2, i] * w
            a3 += X[mu + 3, i] * w
    else:
        for i in range(p):
            a0 += X[mu, i] * W[r, i]
    return a0, a1, a2, a3


@njit(cache=True, inline="always")
def _column_backward(X, d, G, c, mu, rows, r, p):
    """``G[c, r] += sum_j d[j] X[mu+j]`` over the ``rows`` (4 or 1) rows from ``mu``; the factors are
    read into scalars first (read from ``d`` inside the loop, they could alias ``G`` and block
    vectorisation: 0.75 ms instead of 0.5 ms for one float64 column at n = 2048, p = 1024)."""
    d0, d1, d2, d3 = d[0], d[1], d[2], d[3]
    if rows == 4:
        if d0 != 0 or d1 != 0 or d2 != 0 or d3 != 0:
            for i in range(p):
                G[c, r, i] += d0 * X[mu, i] + d1 * X[mu + 1, i] + d2 * X[mu + 2, i] + d3 * X[mu + 3, i]
    elif d0 != 0:
        for i in range(p):
            G[c, r, i] += d0 * X[mu, i]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def panel_step(X, W, t, mask, G, act, evaluation, loss, eps, k_hat, door):
    """The step of ``k`` replicas with one unit each on ``X`` (n, p): ``W`` (k, p), targets ``t``
    (n,), ``mask`` (k, n) each replica's batch, ``G`` (chunks, k, p) a workspace for the per-chunk
    gradients (the caller keeps it: a fresh large array per call cost more than the pass).

    NumPy meaning: ``Lambda^T = W X^T``; per sample the loss, the error and ``D`` (zero outside
    the batch); ``g = D^T X``. Returns ``g`` (k, p) and the loss and error sums (k,) over all
    rows. Full tiles of four rows by four columns go through the register-blocked
    ``_tile_forward`` / ``_tile_backward``, the ragged edges column by column. Rows are cut into
    fixed chunks summed in order, so results do not depend on the number of threads; NaN and
    inf propagate (no ``nnan``/``ninf`` fast-math flags)."""
    n, p = X.shape
    k = W.shape[0]
    size, count = chunk_rows(n), chunks(n)
    zero = np.zeros(1, dtype=X.dtype)[0]  # sums in the step's dtype (vectorised float32)
    losses = np.zeros((count, k))
    errors = np.zeros((count, k))
    for c in prange(count):
        G[c] = 0
        D = np.zeros((BLOCK, 4), dtype=X.dtype)
        for first in range(0, k, BLOCK):
            last = min(k, first + BLOCK)
            mu, stop = c * size, min(n, (c + 1) * size)
            while mu < stop:
                rows = 4 if stop - mu >= 4 else 1
                tile = rows == 4 and last - first == BLOCK
                if tile:
                    lams = _tile_forward(X, W, mu, first, p, zero)
                for r in range(first, last):
                    column = lams[r - first] if tile else _column_forward(X, W, mu, rows, r, p, zero)
                    for j in range(rows):
                        value, error, D[r - first, j] = _sample(column[j], t[mu + j], mask[r, mu + j], act,
                                                                evaluation, loss, eps, k_hat, door)
                        losses[c, r] += value
                        errors[c, r] += error
                if tile:
                    if D.any():  # a tile outside every batch (a test set's) has nothing to add
                        _tile_backward(X, D, G, c, mu, first, p)
                else:
                    for r in range(first, last):
                        _column_backward(X, D[r - first], G, c, mu, rows, r, p)
                mu += rows
    # In chunk order, one by one: inside a parallel function, ``losses.sum()`` would become a
    # parallel reduction whose order depends on the number of threads.
    g = np.zeros((k, p), dtype=X.dtype)
    loss_sum, error_sum = np.zeros(k), np.zeros(k)
    for c in range(count):
        g += G[c]
        loss_sum += losses[c]
        error_sum += errors[c]
    return g, loss_sum, error_sum
