"""Population error and overlaps (SPEC 3); sampled errors are ``Model.error``.

With ``Q = |w*|^2/p``, ``q_kl = w_k . w_l / p`` and ``m_k = w_k . w* / p``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit


def _as_units(W: np.ndarray, w_star: np.ndarray) -> np.ndarray:
    """``W`` as (d, p) or a stack (R, d, p), float32 kept, anything else as float64, checked
    against the teacher's length."""
    W = np.atleast_2d(np.asarray(W))
    if W.dtype not in (np.float32, np.float64):
        W = W.astype(float)
    w_star = np.asarray(w_star)
    if W.ndim > 3 or w_star.ndim != 1 or W.shape[-1] != w_star.shape[0]:
        raise ValueError(f"W: expected shape (d, p={w_star.shape[-1]}), (p,) or (R, d, p), got {np.shape(W)}")
    return W


@njit(cache=True, fastmath={"reassoc", "contract"})
def _overlaps(W, w_star):
    """``q`` (R, d, d) with ``q_kl = w_k . w_l / p`` and ``m`` (R, d) with ``m_k = w_k . w* / p`` of a
    stack ``W`` (R, d, p), summed in float64 whatever ``W``'s dtype (one pass per pair of units
    along their contiguous rows, no float64 copy; the sums may be reordered to vectorise)."""
    R, d, p = W.shape
    q, m = np.empty((R, d, d)), np.empty((R, d))
    for r in range(R):
        for k in range(d):
            total = 0.0
            for i in range(p):
                total += float(W[r, k, i]) * w_star[i]
            m[r, k] = total / p
            for l in range(k + 1):
                total = 0.0
                for i in range(p):
                    total += float(W[r, k, i]) * float(W[r, l, i])
                q[r, k, l] = q[r, l, k] = total / p
    return q, m


def _stacked_overlaps(W: np.ndarray, w_star: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``q`` (..., d, d) and ``m`` (..., d) of ``W`` (d, p) or (R, d, p) (:func:`_overlaps`)."""
    q, m = _overlaps(W.reshape(-1, *W.shape[-2:]), np.asarray(w_star, dtype=float))
    return q.reshape(*W.shape[:-2], *q.shape[-2:]), m.reshape(*W.shape[:-1])


def population_error(W: np.ndarray, w_star: np.ndarray):
    """Exact population error of ``pr-quadratic``: ``0.5 (E[s^2] - 2 E[s z^2] + E[z^4])``, x ~ N(0, I/p).

    ``E[z^4] = 3 Q^2``, ``E[s z^2] = (1/d) sum_k (Q q_kk + 2 m_k^2)``,
    ``E[s^2] = (1/d^2) sum_kl (q_kk q_ll + 2 q_kl^2)``. A float for ``W`` (d, p) or (p,);
    an array (R,) for a stack of replicas (R, d, p).
    """
    W = _as_units(W, w_star)
    d, p = W.shape[-2:]
    Q = float(w_star @ w_star) / p
    q, m = _stacked_overlaps(W, w_star)
    q_diag = np.diagonal(q, axis1=-2, axis2=-1)
    e_s2 = (np.sum(q_diag, axis=-1) ** 2 + 2.0 * np.sum(q * q, axis=(-2, -1))) / d**2
    e_sz2 = np.sum(Q * q_diag + 2.0 * m * m, axis=-1) / d
    # Non-negative by construction; clip the rounding of the cancellation near the teacher.
    error = np.maximum(0.0, 0.5 * (e_s2 - 2.0 * e_sz2 + 3.0 * Q * Q))
    return float(error) if W.ndim == 2 else error


def unit_overlaps(W: np.ndarray, w_star: np.ndarray) -> np.ndarray:
    """Per-unit overlaps ``|m_k| / sqrt(q_kk Q)`` in [0, 1], shape (d,) (or (R, d) for a stack)."""
    W = _as_units(W, w_star)
    q, m = _stacked_overlaps(W, w_star)
    Q = float(w_star @ w_star) / W.shape[-1]
    return np.abs(m) / np.sqrt(np.diagonal(q, axis1=-2, axis2=-1) * Q)


def overlap(W: np.ndarray, w_star: np.ndarray) -> float:
    """Scalar overlap of a student: the largest per-unit overlap (the magnetization for d = 1)."""
    return float(np.max(unit_overlaps(W, w_star)))


#: The model whose test error is its exact population error (SPEC 3); the others report the
#: error on the sampled test set.
POPULATION_MODEL = "pr-quadratic"


def reported_test_error(model_name: str, W: np.ndarray, w_star: np.ndarray, sampled: Callable[[], object]):
    """SPEC 3's test error at ``W``: the population error for ``pr-quadratic``, else ``sampled()``,
    the error on the sampled test set (a function, so that it is computed only when needed)."""
    return population_error(W, w_star) if model_name == POPULATION_MODEL else sampled()


def measure(model_name: str, W: np.ndarray, w_star: np.ndarray, *, train_error, train_loss,
            sampled: Callable[[], object], ema: np.ndarray, test_error=None) -> dict:
    """All metrics of SPEC 3 at the students ``W``, (R, d, p) for replicas (values (R,)) or (d, p)
    (values scalar), as the engine and the baselines record them.

    ``train_error``, ``train_loss``: measured on the training set; ``sampled()``: the test error
    on the sampled test set; ``ema`` (..., 2): the gradient EMA, tangent and raw; ``test_error``:
    the reported test error when already known (:func:`reported_test_error`)."""
    if test_error is None:
        test_error = reported_test_error(model_name, W, w_star, sampled)
    overlaps = unit_overlaps(W, w_star)
    return {
        "train_error": train_error,
        "test_error": test_error,
        "test_error_sampled": sampled(),
        "train_loss": train_loss,
        "overlap": overlaps.max(axis=-1),
        "grad_ema": ema[..., 0],
        "grad_ema_raw": ema[..., 1],
        "unit_overlaps": overlaps,
    }
