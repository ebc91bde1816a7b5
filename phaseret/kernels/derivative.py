"""Numba kernels of the one derivative formula of SPEC 2, shared by every model.

A model is an activation ``g`` (training), an evaluation activation and a
per-sample loss ``l(s)`` of the committee score

    s_mu = (1/d) sum_k g(lambda_mu_k) - K_hat,        Lambda = X W^T  (n, d).

The kernels below run the per-sample part over the samples of ``Lambda``; the
matrix products with ``X`` stay in NumPy (BLAS). In NumPy terms:

    D   = l'(s)[:, None] * g'(Lambda) / d                      (n, d)  -> grad = D^T X
    A   = g'(Lambda),  c = l''(s) / d^2,  B = l'(s)[:, None] * g''(Lambda) / d
          -> Hessian block (k, l) = X^T diag(c A_k A_l + delta_kl B_k) X

Activation and loss are chosen by the integer codes below, so one compiled
loop serves all four models; the CUDA forward kernel calls the same ``activation``,
``loss_terms`` and ``error_term`` (:mod:`phaseret.kernels.cuda_products`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Activation codes (training activation g and evaluation activation).
SQUARE = 0  # g = lambda^2
SMOOTH_ABS = 1  # g = sqrt(lambda^2 + eps)
ABS = 2  # g = |lambda| (evaluation only)
LINEAR = 3  # g = lambda (the linear student of the DMFT's exact case, phaseret.dmft)

# Loss codes.
SQUARED = 0  # l = (s - t)^2 / 2
LOGISTIC = 1  # l = log(1 + exp(-t s))


@njit(cache=True, inline="always")
def activation(kind, lam, eps):
    """``(g, g', g'')`` at ``lam``: ``lambda^2 -> (l^2, 2l, 2)``; smooth abs ``-> (r, l/r, eps/r^3)``, ``r = sqrt(l^2+eps)``;
    linear ``-> (l, 1, 0)``; abs ``-> (|l|, 0, 0)`` (evaluation only)."""
    if kind == SQUARE:
        return lam * lam, 2.0 * lam, 2.0
    if kind == SMOOTH_ABS:
        r = math.sqrt(lam * lam + eps)
        return r, lam / r, eps / (r * r * r)
    if kind == LINEAR:
        return lam, 1.0, 0.0
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
def score(Lam_t, first, d, mu, act, eps, k_hat):
    """Committee score of sample ``mu``: ``(1/d) sum_k g(Lam_t[first + k, mu]) - K_hat``, ``k < d``.

    ``Lam_t`` holds pre-activations with the units along its rows: ``Lambda^T`` (d, n) of one
    student, or (R d, n) of R replicas with replica r's units from ``first = r d``."""
    s = 0.0
    for k in range(first, first + d):
        g, _, _ = activation(act, Lam_t[k, mu], eps)
        s += g
    return s / d - k_hat


@njit(cache=True)
def loss_and_backward(Lam, t, act, loss, eps, k_hat):
    """Summed loss and ``D = dl/dLambda`` (n, d) for pre-activations ``Lam`` (n, d), targets ``t`` (n,)."""
    n, d = Lam.shape
    Lam_t = Lam.T
    D = np.empty_like(Lam)
    total = 0.0
    for mu in range(n):
        l, l1, _ = loss_terms(loss, score(Lam_t, 0, d, mu, act, eps, k_hat), t[mu])
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
    Lam_t = Lam.T
    for mu in range(n):
        _, l1, l2 = loss_terms(loss, score(Lam_t, 0, d, mu, act, eps, k_hat), t[mu])
        c[mu] = l2 / (d * d)
        for k in range(d):
            _, g1, g2 = activation(act, Lam[mu, k], eps)
            A[mu, k] = g1
            B[mu, k] = l1 * g2 / d
    return A, c, B


@njit(cache=True)
def scores(Lam, act, eps, k_hat):
    """Scores ``s`` (n,) of pre-activations ``Lam`` (n, d) under activation code ``act``."""
    n, d = Lam.shape
    Lam_t = Lam.T
    out = np.empty(n, dtype=Lam.dtype)
    for mu in range(n):
        out[mu] = score(Lam_t, 0, d, mu, act, eps, k_hat)
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
            s = score(Lam_t, first, d, mu, act, eps, k_hat)
            l, l1, _ = loss_terms(loss, s, t[mu])
            losses[r] += l
            s_eval = s if evaluation == act else score(Lam_t, first, d, mu, evaluation, eps, k_hat)
            errors[r] += error_term(door, s_eval, t[mu])
            if mask[r, mu]:
                for k in range(first, first + d):
                    _, g1, _ = activation(act, Lam_t[k, mu], eps)
                    Dt[k, mu] = l1 * g1 / d
    return Dt, losses, errors
