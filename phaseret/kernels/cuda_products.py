"""The CUDA matrix kernels: ``Lambda^T = W X^T`` fused with the per-sample part, ``G = D^T X``,
and the row sums of the per-sample loss and error.

Tiled shared-memory products with register tiles: a block of ``T x T`` threads computes a
``B x B`` tile, ``B = T M``, each thread ``M x M`` outputs (:func:`tile`).
The forward kernel calls the per-sample functions of :mod:`phaseret.kernels.derivative`
(``activation``, ``loss_terms``, ``error_term``), as the CPU's ``replica_factors`` does. The
tiles' shared and register arrays take the dtype of ``X`` (numba compiles a kernel per dtype).
At T = 16, M = 2 a float64 forward block uses 41 KiB of the 48 KiB of
static shared memory.
"""

from __future__ import annotations

import os

from numba import cuda, float64

from . import derivative


def _power_of_two(name: str, default: int, least: int) -> int:
    value = int(os.environ.get(name, str(default)))
    if value < least or value & (value - 1):
        raise ValueError(f"{name}: must be a power of two >= {least}, got {value}")
    return value


def tile() -> tuple[int, int]:
    """``(T, M)``: threads per block edge of the matrix kernels and outputs per thread per edge,
    from ``PHASERET_CUDA_TILE`` (default 16) and ``PHASERET_CUDA_MICRO`` (default 2); a block
    computes a ``T M x T M`` tile. A 1-D block (row sums, the optimizer's kernels) has ``T`` threads."""
    return _power_of_two("PHASERET_CUDA_TILE", 16, 2), _power_of_two("PHASERET_CUDA_MICRO", 2, 1)


T, M = tile()
B = T * M
PADDED = T + 1  # a row stride coprime with the 32 shared-memory banks: column reads without conflicts


@cuda.jit(device=True)
def tree_reduce(buffer, i, maximum):
    """Sum (or with ``maximum`` the maximum, NaN winning: a non-finite gradient must show) of
    ``buffer[:T]`` by a block of ``T`` threads, thread ``i``, in a fixed order."""
    cuda.syncthreads()
    width = T // 2
    while width > 0:
        if i < width:
            a, b = buffer[i], buffer[i + width]
            if maximum:
                buffer[i] = a if (a != a or a >= b) else b
            else:
                buffer[i] = a + b
        cuda.syncthreads()
        width //= 2
    total = buffer[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d):
    """``(r, k, valid)``: replica and unit of a forward block's local unit ``u`` in ``chunk``."""
    local = u // units_per_chunk
    r, k = first_replica + local, chunk * units_per_chunk + u % units_per_chunk
    return r, k, local < replicas_per_block and r < R and k < d


@cuda.jit
def row_sums(terms, out):
    """``out[r] = sum_mu terms[r, mu]`` over the first ``len(out)`` rows; one block per row."""
    r, i = cuda.blockIdx.x, cuda.threadIdx.x
    buffer = cuda.shared.array(T, float64)
    total = 0.0
    for mu in range(i, terms.shape[1], T):
        total += terms[r, mu]
    buffer[i] = total
    out[r] = tree_reduce(buffer, i, False)


@cuda.jit
def forward(X, t, W, originals, batch, lo, hi, replicas_per_block, units_per_chunk, chunks,
            act, evaluation, loss, eps, k_hat, door, Lam_t, Dt, loss_terms, error_terms):
    """Pre-activations of a (units x samples) tile of ``B x B`` and the per-sample part, fused.

    ``X`` (1 or R0, n, p), ``t`` (1 or R0, n): shared or per original replica; ``W`` (R, d, p).
    A block holds ``replicas_per_block`` whole replicas of ``units_per_chunk`` units each, or
    one replica in ``chunks`` chunks of ``B`` units; thread (x, y) computes units ``y + T a``
    and samples ``x + T b``, ``a, b < M``. Writes ``Lam_t`` and ``Dt`` (R d, n) (``D`` zero
    outside the batch ``lo <= batch < hi``) and the per-sample loss and error (R, n).
    """
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    R, d, p = W.shape
    n = X.shape[1]
    first_sample = cuda.blockIdx.x * B
    first_replica = cuda.blockIdx.y * replicas_per_block
    # A block shares its rows of X: the landscape's, or its one replica's.
    x_index = 0 if X.shape[0] == 1 else originals[cuda.blockIdx.y]
    Xs = cuda.shared.array((B, PADDED), X.dtype)  # [sample][input], read down a column
    Ws = cuda.shared.array((B, T), X.dtype)  # [unit][input]
    G = cuda.shared.array((B, B), float64)  # g(lambda) [unit][sample]; later l'(s) [replica][sample]
    E = cuda.shared.array((B, B), float64)  # evaluation g [unit][sample]; later the batch flag
    S = cuda.shared.array((B, B), float64)  # scores [replica][sample]
    SE = cuda.shared.array((B, B), float64)  # evaluation scores
    acc = cuda.local.array((M, M), X.dtype)
    w = cuda.local.array(M, X.dtype)
    x = cuda.local.array(M, X.dtype)
    for a in range(M):
        for b in range(M):
            S[ty + T * a, tx + T * b] = 0.0
            SE[ty + T * a, tx + T * b] = 0.0
    for chunk in range(chunks):
        for a in range(M):
            for b in range(M):
                acc[a, b] = 0.0
        for i0 in range(0, p, T):
            for a in range(M):
                row, u = first_sample + ty + T * a, ty + T * a
                Xs[u, tx] = X[x_index, row, i0 + tx] if row < n and i0 + tx < p else 0.0
                r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
                Ws[u, tx] = W[r, k, i0 + tx] if unit_ok and i0 + tx < p else 0.0
            cuda.syncthreads()
            for j in range(T):
                for a in range(M):
                    w[a] = Ws[ty + T * a, j]
                    x[a] = Xs[tx + T * a, j]
                for a in range(M):
                    for b in range(M):
                        acc[a, b] += w[a] * x[b]
            cuda.syncthreads()
        for a in range(M):
            u = ty + T * a
            r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
            for b in range(M):
                mu = first_sample + tx + T * b
                G[u, tx + T * b] = 0.0
                E[u, tx + T * b] = 0.0
                if unit_ok and mu < n:
                    Lam_t[r * d + k, mu] = acc[a, b]
                    G[u, tx + T * b] = derivative.activation(act, acc[a, b], eps)[0]
                    E[u, tx + T * b] = derivative.activation(evaluation, acc[a, b], eps)[0]
        cuda.syncthreads()
        for a in range(M):  # one thread per (replica, sample) adds its units in order
            local = ty + T * a
            if local < replicas_per_block:
                for b in range(M):
                    for u in range(units_per_chunk):
                        S[local, tx + T * b] += G[local * units_per_chunk + u, tx + T * b]
                        SE[local, tx + T * b] += E[local * units_per_chunk + u, tx + T * b]
        cuda.syncthreads()
    for a in range(M):
        local = ty + T * a
        owner = first_replica + local
        for b in range(M):
            mu = first_sample + tx + T * b
            if local < replicas_per_block and owner < R and mu < n:
                target = t[0 if t.shape[0] == 1 else originals[owner], mu]
                score = S[local, tx + T * b] / d - k_hat
                value, l1, _ = derivative.loss_terms(loss, score, target)
                s_eval = score if evaluation == act else SE[local, tx + T * b] / d - k_hat
                loss_terms[owner, mu] = value
                error_terms[owner, mu] = derivative.error_term(door, s_eval, target)
                G[local, tx + T * b] = l1
                E[local, tx + T * b] = 1.0 if lo <= batch[originals[owner], mu] < hi else 0.0
    cuda.syncthreads()
    for chunk in range(chunks):
        for a in range(M):
            u = ty + T * a
            r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
            if unit_ok:
                for b in range(M):
                    mu = first_sample + tx + T * b
                    if mu < n:
                        D = 0.0
                        if E[u // units_per_chunk, tx + T * b] == 1.0:
                            lam = Lam_t[r * d + k, mu]
                            D = G[u // units_per_chunk, tx + T * b] * derivative.activation(act, lam, eps)[1] / d
                        Dt[r * d + k, mu] = D

@cuda.jit
def backward(Dt, X, originals, G):
    """``G[r, k] = sum_mu D[mu, r k] X[mu]``: a ``B x B`` tile (units x inputs) per block, thread
    (x, y) computing units ``y + T a`` and inputs ``x + T b``; the grid's third axis runs over
    the replicas of a per-seed landscape (each its own ``X``)."""
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    R, d, p = G.shape
    n = X.shape[1]
    per_seed = X.shape[0] > 1
    rows = d if per_seed else R * d
    first_row, first_input = cuda.blockIdx.y * B, cuda.blockIdx.x * B
    base = cuda.blockIdx.z * d if per_seed else 0
    x_index = originals[cuda.blockIdx.z] if per_seed else 0
    Ds = cuda.shared.array((B, T), X.dtype)  # [unit][sample]
    Xs = cuda.shared.array((T, B), X.dtype)  # [sample][input]
    acc = cuda.local.array((M, M), X.dtype)
    dv = cuda.local.array(M, X.dtype)
    xv = cuda.local.array(M, X.dtype)
    for a in range(M):
        for b in range(M):
            acc[a, b] = 0.0
    for m0 in range(0, n, T):
        for a in range(M):
            row, i = first_row + ty + T * a, first_input + tx + T * a
            Ds[ty + T * a, tx] = Dt[base + row, m0 + tx] if row < rows and m0 + tx < n else 0.0
            Xs[ty, tx + T * a] = X[x_index, m0 + ty, i] if m0 + ty < n and i < p else 0.0
        cuda.syncthreads()
        for j in range(T):
            for a in range(M):
                dv[a] = Ds[ty + T * a, j]
                xv[a] = Xs[j, tx + T * a]
            for a in range(M):
                for b in range(M):
                    acc[a, b] += dv[a] * xv[b]
        cuda.syncthreads()
    for a in range(M):
        row = first_row + ty + T * a
        for b in range(M):
            i = first_input + tx + T * b
            if row < rows and i < p:
                G[(base + row) // d, (base + row) % d, i] = acc[a, b]


KERNELS = {"forward": forward, "backward": backward, "row_sums": row_sums}
