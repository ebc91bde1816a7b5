"""The CPU backend's update of a part's replicas after their gradients (SPEC 3, 5), compiled as
:mod:`.cuda_kernels` is the GPU's: two calls a step instead of some twenty small NumPy
operations (under cProfile 0.047 ms against 0.009 ms a step at one seed, issue 15).

:func:`descend` is the gradient EMA, then the update rule in its coordinate form
(:func:`phaseret.optim.rules.direction`, the one the CUDA update kernel runs); :func:`settle` is
the projection onto the sphere and the finite check. The Langevin kick, when there is one, goes
between the two. Both work in place on arrays (R, d, p) of the step's dtype, with float64
arithmetic per element.
"""

from __future__ import annotations

import math

from numba import njit

from ..kernels.maxima import ema_step, gradient_maxima
from ..optim.rules import direction


@njit(cache=True, error_model="numpy")
def descend(W, G, first, second, ema, tangent, kind, eta, gamma, beta1, beta2, correction1, correction2, eps):
    """One step of an update rule on replicas (R, d, p), in place.

    NumPy meaning: ``ema <- ema_step(ema, gradient_maxima(G, W, tangent))`` (R, 2), measured at
    the weights before the step; then ``delta, state = rule.step(G, state, eta)`` and
    ``W <- W + delta`` (:mod:`phaseret.optim.rules`), the state carried in ``first`` (the velocity
    or Adam's ``m``) and ``second`` (Adam's ``v``), both shaped like ``W``;
    ``correction1/2 = 1 - beta1/2^t`` at Adam's step ``t``."""
    measured = gradient_maxima(G, W, tangent)
    R, d, p = W.shape
    for r in range(R):
        for j in range(2):
            ema[r, j] = ema_step(ema[r, j], measured[r, j])
        for k in range(d):
            for i in range(p):
                move, first[r, k, i], second[r, k, i] = direction(
                    kind, G[r, k, i], first[r, k, i], second[r, k, i], gamma, beta1, beta2, correction1, correction2, eps)
                W[r, k, i] = W[r, k, i] - eta * move


@njit(cache=True, error_model="numpy")
def settle(W, project, diverged_at, step):
    """With ``project``, ``w_k <- sqrt(p) w_k / |w_k|`` for every unit of ``W`` (R, d, p), in place
    (:func:`phaseret.sphere.project`); ``diverged_at[r] <- step`` where it is still -1 and a unit
    of replica ``r`` has a non-finite weight. The same rule as the GPU's ``project`` kernel
    (:mod:`.cuda_kernels`), so both backends stop a run at the same step: a unit whose norm
    overflows is projected to zero, and a zero unit to NaN, found at the next step. A non-finite
    gradient always shows here: ``W - eta g`` is then not finite."""
    R, d, p = W.shape
    radius = math.sqrt(p)
    for r in range(R):
        for k in range(d):
            norm2 = 0.0
            for i in range(p):
                w = float(W[r, k, i])
                norm2 += w * w if math.isfinite(w) else math.nan
            if norm2 != norm2:
                if diverged_at[r] < 0:
                    diverged_at[r] = step
            elif project:
                scale = radius / math.sqrt(norm2)
                for i in range(p):
                    W[r, k, i] = W[r, k, i] * scale
