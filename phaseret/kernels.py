"""Numba kernels of the one derivative formula of SPEC 2, shared by every model.

A model is an activation ``g`` (training), an evaluation activation and a
per-sample loss ``l(s)`` of the committee score

    s_mu = (1/d) sum_k g(lambda_mu_k) - K_hat,        Lambda = X W^T  (n, d).

The kernels below run the per-sample part over the rows of ``Lambda``; the
matrix products with ``X`` stay in NumPy (BLAS). In NumPy terms:

    D   = l'(s)[:, None] * g'(Lambda) / d                      (n, d)  -> grad = D^T X
    A   = g'(Lambda),  c = l''(s) / d^2,  B = l'(s)[:, None] * g''(Lambda) / d
          -> Hessian block (k, l) = X^T diag(c A_k A_l + delta_kl B_k) X

Activation and loss are chosen by the integer codes below, so one compiled
loop serves all four models.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Activation codes (training activation g and evaluation activation).
SQUARE = 0  # g = lambda^2
SMOOTH_ABS = 1  # g = sqrt(lambda^2 + eps)
ABS = 2  # g = |lambda| (evaluation only)

# Loss codes.
SQUARED = 0  # l = (s - t)^2 / 2
LOGISTIC = 1  # l = log(1 + exp(-t s))


@njit(cache=True, inline="always")
def activation(kind, lam, eps):
    """``(g, g', g'')`` at ``lam``: ``lambda^2 -> (l^2, 2l, 2)``; smooth abs ``-> (r, l/r, eps/r^3)``, ``r = sqrt(l^2+eps)``."""
    if kind == SQUARE:
        return lam * lam, 2.0 * lam, 2.0
    if kind == SMOOTH_ABS:
        r = math.sqrt(lam * lam + eps)
        return r, lam / r, eps / (r * r * r)
    return abs(lam), 0.0, 0.0


@njit(cache=True, inline="always")
def _softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    if x > 0.0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@njit(cache=True, inline="always")
def _sigmoid(x):
    """``1 / (1 + exp(-x))`` without overflow."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def loss_terms(kind, s, t):
    """``(l, l', l'')`` at score ``s``, target ``t``: squared ``(r^2/2, r, 1)``, ``r = s - t``;
    logistic ``(softplus(-ts), -t sigma(-ts), sigma(ts) sigma(-ts))``."""
    if kind == SQUARED:
        r = s - t
        return 0.5 * r * r, r, 1.0
    m = t * s
    return _softplus(-m), -t * _sigmoid(-m), _sigmoid(m) * _sigmoid(-m)


@njit(cache=True, inline="always")
def _score(row, act, eps, k_hat):
    """Committee score of one sample: ``(1/d) sum_k g(lambda_k) - K_hat`` for ``row`` (d,)."""
    s = 0.0
    for k in range(row.shape[0]):
        g, _, _ = activation(act, row[k], eps)
        s += g
    return s / row.shape[0] - k_hat


@njit(cache=True)
def loss_and_backward(Lam, t, act, loss, eps, k_hat):
    """Summed loss and ``D = dl/dLambda`` (n, d) for pre-activations ``Lam`` (n, d), targets ``t`` (n,)."""
    n, d = Lam.shape
    D = np.empty_like(Lam)
    total = 0.0
    for mu in range(n):
        l, l1, _ = loss_terms(loss, _score(Lam[mu], act, eps, k_hat), t[mu])
        total += l
        for k in range(d):
            _, g1, _ = activation(act, Lam[mu, k], eps)
            D[mu, k] = l1 * g1 / d
    return total, D


@njit(cache=True)
def curvature(Lam, t, act, loss, eps, k_hat):
    """Per-sample Hessian factors ``A = g'`` (n, d), ``c = l''/d^2`` (n,), ``B = l' g''/d`` (n, d)."""
    n, d = Lam.shape
    A = np.empty_like(Lam)
    B = np.empty_like(Lam)
    c = np.empty(n, dtype=Lam.dtype)
    for mu in range(n):
        _, l1, l2 = loss_terms(loss, _score(Lam[mu], act, eps, k_hat), t[mu])
        c[mu] = l2 / (d * d)
        for k in range(d):
            _, g1, g2 = activation(act, Lam[mu, k], eps)
            A[mu, k] = g1
            B[mu, k] = l1 * g2 / d
    return A, c, B


@njit(cache=True)
def scores(Lam, act, eps, k_hat):
    """Scores ``s`` (n,) of pre-activations ``Lam`` (n, d) under activation code ``act``."""
    out = np.empty(Lam.shape[0], dtype=Lam.dtype)
    for mu in range(Lam.shape[0]):
        out[mu] = _score(Lam[mu], act, eps, k_hat)
    return out


# --- the step over a replica batch --------------------------------------------------------
#
# The per-sample part measures every row (loss and error at the current W: the epoch's
# evaluation is folded into the next step's forward pass) and gives the derivative only on
# the rows of each replica's batch.


@njit(cache=True, inline="always")
def error_term(door, s, t):
    """Per-sample error of SPEC 3: ``(s - t)^2 / 2``, or for the door ``[sign(s) != t]`` (sign(0) = +1)."""
    if door:
        return 1.0 if (1.0 if s >= 0 else -1.0) != t else 0.0
    r = s - t
    return 0.5 * r * r


@njit(cache=True, inline="always")
def _column_score(Lam_t, first, d, mu, act, eps, k_hat):
    """Committee score of sample ``mu`` from rows ``first .. first + d - 1`` of ``Lam_t``."""
    s = 0.0
    for k in range(first, first + d):
        g, _, _ = activation(act, Lam_t[k, mu], eps)
        s += g
    return s / d - k_hat


@njit(cache=True)
def replica_factors(Lam_t, t, mask, d, act, evaluation, loss, eps, k_hat, door):
    """Per-sample part of R replicas on shared rows.

    ``Lam_t`` (R d, n) pre-activations, replica r in rows ``r d .. r d + d - 1``; ``t`` (n,);
    ``mask`` (R, n) rows in each replica's batch. Returns ``D^T`` (R d, n), zero outside each
    batch, and the loss and error sums over all rows, (R,) each. Everything runs along the
    samples, the contiguous axis.
    """
    columns, n = Lam_t.shape
    R = columns // d
    Dt = np.zeros((columns, n), dtype=Lam_t.dtype)
    losses = np.zeros(R)
    errors = np.zeros(R)
    for r in range(R):
        first = r * d
        for mu in range(n):
            s = _column_score(Lam_t, first, d, mu, act, eps, k_hat)
            l, l1, _ = loss_terms(loss, s, t[mu])
            losses[r] += l
            s_eval = s if evaluation == act else _column_score(Lam_t, first, d, mu, evaluation, eps, k_hat)
            errors[r] += error_term(door, s_eval, t[mu])
            if mask[r, mu]:
                for k in range(first, first + d):
                    _, g1, _ = activation(act, Lam_t[k, mu], eps)
                    Dt[k, mu] = l1 * g1 / d
    return Dt, losses, errors


#: Rows per chunk of ``column_step``: a fixed cut, so the sums do not depend on the thread count.
COLUMN_CHUNK = 256


@njit(cache=True, inline="always")
def _column_sample(lam, target, inside, act, evaluation, loss, eps, k_hat, door):
    """Per-sample part of one unit (d = 1): ``(loss, error, D)`` at pre-activation ``lam``."""
    g, g1, _ = activation(act, lam, eps)
    value, l1, _ = loss_terms(loss, g - k_hat, target)
    s_eval = g - k_hat if evaluation == act else activation(evaluation, lam, eps)[0] - k_hat
    return value, error_term(door, s_eval, target), l1 * g1 if inside else 0.0


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
def column_step(X, w, t, mask, act, evaluation, loss, eps, k_hat, door):
    """The step of one replica with one unit (R d = 1) in one pass over the rows of ``X`` (n, p):
    ``lambda = X w``, the per-sample part and ``g = D^T X`` four rows at a time, each row read
    once while it is in cache (two BLAS matrix-vector products read ``X`` twice). ``mask`` (n,)
    marks the batch. Returns ``g`` (p,) and the loss and error sums over all rows. Rows are cut
    into fixed chunks of ``COLUMN_CHUNK`` summed in order, so results do not depend on the
    number of threads; NaN and inf propagate (no ``nnan``/``ninf`` fast-math flags)."""
    n, p = X.shape
    chunks = (n + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    G = np.zeros((chunks, p), dtype=X.dtype)
    losses = np.zeros(chunks)
    errors = np.zeros(chunks)
    for c in prange(chunks):
        mu, stop = c * COLUMN_CHUNK, min(n, (c + 1) * COLUMN_CHUNK)
        while mu < stop:
            rows = 4 if stop - mu >= 4 else 1
            a0, a1, a2, a3 = 0.0, 0.0, 0.0, 0.0
            for i in range(p):
                a0 += X[mu, i] * w[i]
                if rows == 4:
                    a1 += X[mu + 1, i] * w[i]
                    a2 += X[mu + 2, i] * w[i]
                    a3 += X[mu + 3, i] * w[i]
            lams = (a0, a1, a2, a3)
            d0, d1, d2, d3 = 0.0, 0.0, 0.0, 0.0
            for j in range(rows):
                value, error, D = _column_sample(lams[j], t[mu + j], mask[mu + j], act, evaluation, loss, eps, k_hat,
                                                 door)
                losses[c] += value
                errors[c] += error
                if j == 0:
                    d0 = D
                elif j == 1:
                    d1 = D
                elif j == 2:
                    d2 = D
                else:
                    d3 = D
            if d0 != 0.0 or d1 != 0.0 or d2 != 0.0 or d3 != 0.0:
                for i in range(p):
                    update = d0 * X[mu, i]
                    if rows == 4:
                        update += d1 * X[mu + 1, i] + d2 * X[mu + 2, i] + d3 * X[mu + 3, i]
                    G[c, i] += update
            mu += rows
    # In chunk order, one by one: inside a parallel function, ``losses.sum()`` would become a
    # parallel reduction whose order depends on the number of threads.
    g = np.zeros(p, dtype=X.dtype)
    loss_sum, error_sum = 0.0, 0.0
    for c in range(chunks):
        g += G[c]
        loss_sum += losses[c]
        error_sum += errors[c]
    return g, loss_sum, error_sum


@njit(cache=True, error_model="numpy")  # a diverged W may have zero rows: NaN, not an exception
def gradient_maxima(G, W, tangent):
    """Per replica ``(max |g_tan|, max |g|)`` for the gradient EMA (SPEC 3), shape (R, 2).

    NumPy meaning: ``max |sphere.tangent(G, W)|`` and ``max |G|`` over each replica's (d, p);
    ``g_tan = g_k - (g_k . w_k / |w_k|^2) w_k``. With ``tangent`` False both columns are the raw
    maximum. A non-finite gradient gives NaN in both columns.
    """
    R, d, p = G.shape
    out = np.zeros((R, 2))
    for r in range(R):
        raw, tan, finite = 0.0, 0.0, True
        for k in range(d):
            radial = 0.0
            if tangent:
                dot, norm2 = 0.0, 0.0
                for i in range(p):
                    dot += G[r, k, i] * W[r, k, i]
                    norm2 += W[r, k, i] * W[r, k, i]
                radial = dot / norm2
            for i in range(p):
                g = abs(G[r, k, i])
                if not math.isfinite(g):
                    finite = False
                raw = max(raw, g)
                tan = max(tan, abs(G[r, k, i] - radial * W[r, k, i]))
        out[r, 0] = tan if finite else np.nan
        out[r, 1] = raw if finite else np.nan
    return out
