"""The gradient measure of SPEC 3's stationarity stop: per replica ``max |g_tan|`` and ``max |g|``, and its EMA
(the CUDA ``maxima`` kernel calls the same ``ema_step``)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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


#: The gradient EMA of SPEC 3: ``ema <- EMA_OLD ema + EMA_NEW new``, the first value as it is.
EMA_OLD, EMA_NEW = 0.9, 0.1


@njit(cache=True, inline="always")
def ema_step(previous, new):
    """One step of the gradient EMA; ``previous`` NaN means no value yet."""
    if previous != previous:
        return new
    return EMA_OLD * previous + EMA_NEW * new


@njit(cache=True)
def ema_update(ema, measured):
    """``ema_step`` over arrays of one shape (the CPU's (R, 2)); returns a new array."""
    out = np.empty_like(ema)
    for i in range(ema.shape[0]):
        for j in range(ema.shape[1]):
            out[i, j] = ema_step(ema[i, j], measured[i, j])
    return out
