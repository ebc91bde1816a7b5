"""Output channels and priors of Bayes-optimal GAMP and its state evolution (SPEC 11).

An output channel gives, for labels ``y`` and the cavity mean ``omega`` and variance ``V`` of
``z ~ N(omega, V)``, the functions ``g_out = (E[z|y] - omega)/V`` and its derivative
``dg = (Var[z|y] - V)/V^2``. A prior gives the posterior mean and variance ``f_a(A, B)``,
``f_v(A, B)`` of a weight under the field ``B`` and precision ``A``. All vectorized NumPy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

#: Floor of the variance ``V`` (purely numerical; SPEC 11's noiseless limit).
V_FLOOR = 1e-10
_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def phase_retrieval_output(y, omega, V):
    """``y = |z|``: ``g = (y tanh(y omega/V) - omega)/V``, ``dg = (y^2 sech^2(y omega/V) - V)/V^2``."""
    V = np.maximum(V, V_FLOOR)
    t = np.tanh(y * omega / V)
    return (y * t - omega) / V, (y * y * (1 - t * t) - V) / V**2


def door_log_partitions(omega, V, K):
    """``log Z_+`` and ``log Z_-`` of ``y = sign(|z| - K)`` at ``z ~ N(omega, V)``, in log space.

    ``Z_+ = H(u) + H(v)``, ``Z_- = Phi(u) - Phi(-v)`` (never ``1 - Z_+``), ``u = (K - |omega|)/sqrt V``,
    ``v = (K + |omega|)/sqrt V``; both are even in omega.
    """
    s = np.sqrt(np.maximum(V, V_FLOOR))
    a = np.abs(omega)
    u, v = (K - a) / s, (K + a) / s
    log_plus = np.logaddexp(log_ndtr(-u), log_ndtr(-v))
    log_u = log_ndtr(u)
    log_minus = log_u + np.log1p(-np.exp(log_ndtr(-v) - log_u))
    return log_plus, log_minus


def door_output(y, omega, V, K):
    """``g = dZ_y/Z_y``, ``dg = d2Z_y/Z_y - g^2`` with ``dZ_+ = (N(u) - N(v))/sqrt V = -dZ_-``,
    ``d2Z_+ = (u N(u) + v N(v))/V = -d2Z_-``, computed as ratios in log space."""
    V = np.maximum(V, V_FLOOR)
    s = np.sqrt(V)
    a = np.abs(omega)
    u, v = (K - a) / s, (K + a) / s
    log_plus, log_minus = door_log_partitions(omega, V, K)
    log_z = np.where(y > 0, log_plus, log_minus)
    sign = np.where(y > 0, 1.0, -1.0)
    n_u = np.exp(-0.5 * u * u - _LOG_SQRT_2PI - log_z)  # N(u) / Z_y
    n_v = np.exp(-0.5 * v * v - _LOG_SQRT_2PI - log_z)
    g = sign * np.sign(omega) * (n_u - n_v) / s  # dZ is odd in omega
    return g, sign * (u * n_u + v * n_v) / V - g * g


def gaussian_prior(A, B):
    """``N(0, 1)`` weights: ``f_a = B/(1+A)``, ``f_v = 1/(1+A)``."""
    return B / (1 + A), np.full_like(np.asarray(B, dtype=float), 1 / (1 + A))


def rademacher_prior(A, B):
    """``+-1`` weights: ``f_a = tanh(B)``, ``f_v = 1 - f_a^2``."""
    mean = np.tanh(B)
    return mean, 1 - mean * mean
