"""State evolution of Bayes-optimal GAMP and its algorithmic thresholds (SPEC 11).

Scalar recursion over the overlap ``q`` (``omega = sqrt(q) xi``, ``z = omega + sqrt(1-q) eta``,
``V = 1 - q``, ``xi, eta ~ N(0, 1)``, ``y = phi(z)``)::

    q_hat = alpha E[g_out(y, omega, V)^2]
    q     = q_hat / (1 + q_hat)                      (Gaussian prior, phase retrieval)
    q     = E_xi tanh(q_hat + sqrt(q_hat) xi)        (Rademacher prior, symmetric door)

started from an uninformed ``q0 = 1e-8``; the MSE is ``1 - q``. Phase retrieval's
expectations are 121 x 121-point Gauss-Hermite quadratures. For the door, the sum over the two
labels is exact and the integral over ``xi`` is a fine uniform grid: the integrand peaks at
``|omega| = K`` with width ``sqrt(V)``, which Gauss-Hermite nodes miss once ``V < 1e-2``.
Recovery counts as perfect at ``q >= 1 - 1e-3``.
"""

from __future__ import annotations

import functools

import numpy as np

from .channels import door_log_partitions, door_output, phase_retrieval_output
from .data import DEFAULT_K, TASKS

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(121)
_WEIGHTS = _WEIGHTS / np.sqrt(2 * np.pi)  # expectations over N(0, 1)
_GRID = np.linspace(-9.0, 9.0, 6001)  # spacing 0.003: resolves sqrt(V) >= 0.03
_GRID_WEIGHTS = np.exp(-0.5 * _GRID**2) / np.sqrt(2 * np.pi) * (_GRID[1] - _GRID[0])
Q0 = 1e-8
PERFECT = 1 - 1e-3


def q_hat(task: str, q: float, alpha: float, K: float = DEFAULT_K) -> float:
    """``alpha E[g_out^2]`` at overlap ``q``."""
    V = 1.0 - q
    omega = np.sqrt(q) * _NODES
    if task == "phase-retrieval":
        z = omega[:, None] + np.sqrt(V) * _NODES[None, :]
        g, _ = phase_retrieval_output(np.abs(z), omega[:, None], V)
        return alpha * float(_WEIGHTS @ (g * g) @ _WEIGHTS)
    omega = np.sqrt(q) * _GRID
    total = 0.0
    for y, log_z in zip((1.0, -1.0), door_log_partitions(omega, V, K)):
        g, _ = door_output(np.full_like(omega, y), omega, V, K)
        total += float(_GRID_WEIGHTS @ (np.exp(log_z) * g * g))
    return alpha * total


def next_overlap(task: str, q: float, alpha: float, K: float = DEFAULT_K) -> float:
    """One step of state evolution: ``q_t -> q_{t+1}``."""
    h = q_hat(task, q, alpha, K)
    if task == "phase-retrieval":
        return h / (1 + h)
    return float(_WEIGHTS @ np.tanh(h + np.sqrt(h) * _NODES))


def fixed_point(task: str, alpha: float, K: float = DEFAULT_K, q0: float = Q0, iterations: int = 20_000) -> float:
    """The overlap state evolution reaches from ``q0`` (the uninformed start by default); exactly
    1 once it passes ``PERFECT`` (recovery is then perfect in the limit)."""
    if task not in TASKS:
        raise ValueError(f"task: unknown value {task!r}; expected one of {', '.join(TASKS)}")
    q = q0
    for _ in range(iterations):
        new = min(max(next_overlap(task, q, alpha, K), 0.0), 1.0)  # quadrature rounding stays in [0, 1]
        if new >= PERFECT:
            return 1.0
        if abs(new - q) < 1e-13:
            return new
        q = new
    return q


def mse(task: str, alpha: float, K: float = DEFAULT_K) -> float:
    """Asymptotic MSE ``1 - q`` of GAMP from an uninformed start."""
    return 1.0 - fixed_point(task, alpha, K)


def door_bayes_test_error(alpha: float, K: float = DEFAULT_K) -> float:
    """Test error (fraction misclassified) of the Bayes-optimal classifier of the door at GAMP's
    overlap: ``E_xi min(Z_+, Z_-)`` at ``omega = sqrt(q) xi``, ``V = 1 - q``."""
    q = fixed_point("symmetric-door", alpha, K)
    log_plus, log_minus = door_log_partitions(np.sqrt(q) * _GRID, 1.0 - q, K)
    return float(_GRID_WEIGHTS @ np.exp(np.minimum(log_plus, log_minus)))


@functools.lru_cache(maxsize=None)
def amp_threshold(task: str, K: float = DEFAULT_K, tolerance: float = 1e-3) -> float:
    """Smallest alpha at which state evolution from an uninformed start reaches perfect recovery
    (1.128 for phase retrieval, 1.566 for the door at K = 0.67449), by bisection. Kept once
    computed in this process: the door's bisection takes about 25 s, and every figure of a GAMP
    study draws it."""
    return _bisect(lambda alpha: fixed_point(task, alpha, K) >= PERFECT, 0.5, 3.0, tolerance)


def weak_recovery_threshold(task: str, K: float = DEFAULT_K, tolerance: float = 1e-3) -> float:
    """Smallest alpha at which the uninformed fixed point ``q = 0`` is unstable (state evolution
    moves away from ``q0``): 0.5 for phase retrieval, 1.36 for the door."""
    return _bisect(lambda alpha: next_overlap(task, Q0, alpha, K) > Q0, 0.1, 3.0, tolerance)


def _bisect(holds, low: float, high: float, tolerance: float) -> float:
    """The boundary of a property that fails at ``low`` and holds at ``high``."""
    if holds(low) or not holds(high):
        raise ValueError(f"alpha: the threshold is not inside [{low}, {high}]")
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if holds(middle):
            high = middle
        else:
            low = middle
    return 0.5 * (low + high)
