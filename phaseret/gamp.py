"""Bayes-optimal GAMP on one instance (SPEC 11): phase retrieval with a Gaussian prior, the
symmetric door with a Rademacher prior, X with i.i.d. N(0, 1/p) entries.

    V      = mean(v_hat)
    omega  = X w_hat - V g_old
    g, dg  = g_out(y, omega, V)
    A      = -alpha mean(dg)
    B      = X^T g + A w_hat
    w_hat  = f_a(A, B),  v_hat = f_v(A, B)          (optionally damped)

The estimate for errors and overlaps is the posterior mean ``w_hat`` (rescaled to the sphere
by the caller, as for every student).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .channels import V_FLOOR, door_output, gaussian_prior, phase_retrieval_output, rademacher_prior
from .data import DEFAULT_K, TASKS


#: With the Rademacher prior, below this mean posterior variance every coordinate of the estimate
#: is a saturated sign: GAMP has stopped moving. Going on is not harmless in the noiseless limit:
#: with V at its floor almost no sample lies within sqrt(V) of the door's edges, A collapses to 0,
#: and so would tanh(B). (With the Gaussian prior, V shrinks on the way to recovery, so only the
#: step tolerance stops it.)
POSTERIOR_VARIANCE_STOP = 1e-8


@dataclass
class GampResult:
    """``w_hat`` (p,) the posterior mean, ``status`` one of SPEC 6's (``stationary`` when the
    iterate stops moving, ``max-epochs`` when the budget of iterations is spent, ``diverged``)."""

    w_hat: np.ndarray
    status: str
    iterations: int
    steps: np.ndarray  # |w_hat change| / sqrt(p) per iteration


def gamp(
    X: np.ndarray,
    y: np.ndarray,
    task: str,
    start: np.ndarray,
    *,
    K: float = DEFAULT_K,
    damping: float = 0.0,
    max_iterations: int = 500,
    tolerance: float = 1e-4,
    converged=None,
) -> GampResult:
    """Run GAMP from the estimate ``start`` (p,) (small random, or spectral).

    ``converged(w_hat) -> bool`` ends the run with ``converged-test`` (the caller's test-error
    stop); without it, the run ends ``stationary`` once an iteration moves ``w_hat`` by less
    than ``tolerance`` per coordinate (root mean square; the coordinates are of order 1, and in
    the noiseless limit a recovered estimate, overlap 1 - 1e-9, still jitters by 7e-6 to 3e-5
    once V sits on its floor) or, for the door, once the posterior
    variance is below ``POSTERIOR_VARIANCE_STOP``; else ``max-epochs``.
    """
    if task not in TASKS:
        raise ValueError(f"task: unknown value {task!r}; expected one of {', '.join(TASKS)}")
    if not 0 <= damping < 1:
        raise ValueError(f"damping: must lie in [0, 1), got {damping!r}")
    n, p = X.shape
    alpha = n / p
    if task == "phase-retrieval":
        def output(omega, V):
            return phase_retrieval_output(y, omega, V)
        prior = gaussian_prior
    else:
        def output(omega, V):
            return door_output(y, omega, V, K)
        prior = rademacher_prior
    w_hat = np.asarray(start, dtype=float).copy()
    v_hat = np.ones(p)
    g = np.zeros(n)
    steps = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for iteration in range(1, max_iterations + 1):
            V = max(float(np.mean(v_hat)), V_FLOOR)
            omega = X @ w_hat - V * g
            g_new, dg = output(omega, V)
            g = (1 - damping) * g_new + damping * g
            A = -alpha * float(np.mean(dg))
            if prior is gaussian_prior:
                A = max(A, 0.0)  # guard: the posterior variance 1/(1+A) stays within the prior's 1
            B = X.T @ g + A * w_hat
            mean, variance = prior(A, B)
            new = (1 - damping) * mean + damping * w_hat
            v_hat = (1 - damping) * variance + damping * v_hat
            step = float(np.sqrt(np.mean((new - w_hat) ** 2)))
            w_hat = new
            steps.append(step)
            if not np.isfinite(step):
                return GampResult(w_hat, "diverged", iteration, np.asarray(steps))
            if converged is not None and converged(w_hat):
                return GampResult(w_hat, "converged-test", iteration, np.asarray(steps))
            saturated = prior is rademacher_prior and float(np.mean(v_hat)) < POSTERIOR_VARIANCE_STOP
            if step < tolerance or saturated:
                return GampResult(w_hat, "stationary", iteration, np.asarray(steps))
    return GampResult(w_hat, "max-epochs", max_iterations, np.asarray(steps))
