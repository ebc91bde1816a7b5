"""Update rules (SPEC 5), each a state plus a pure step, in the manner of optax.

``rule.init(W) -> state``; ``rule.step(g, state, eta) -> (delta, state)``; the loop then
sets ``W <- W + delta``. Projection and Langevin noise are separate pieces applied after
the update (:mod:`phaseret.optim.noise`, :mod:`phaseret.sphere`), so every batch rule
composes with every update. States are named tuples of arrays shaped like ``W`` (R, d, p).

Beside each CPU rule sits its coordinate form ``direction``, which the CUDA update kernel
calls per element (:mod:`phaseret.backends.cuda_kernels`): ``W <- W - eta direction``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from numba import njit

#: Rule kinds, for the coordinate form ``direction``.
PLAIN, HEAVY_BALL, NESTEROV, ADAM = 0, 1, 2, 3
#: Adam's moment decays (Kingma & Ba 2015; SPEC 5).
ADAM_BETA1, ADAM_BETA2 = 0.9, 0.999


class PlainState(NamedTuple):
    """No state."""


class MomentumState(NamedTuple):
    """``velocity`` (R, d, p): ``v``, zero before the first step."""

    velocity: np.ndarray


class AdamState(NamedTuple):
    """``count``: steps taken; ``first``, ``second`` (R, d, p): the moment estimates ``m``, ``v``."""

    count: int
    first: np.ndarray
    second: np.ndarray


class UpdateRule(NamedTuple):
    """An update rule: ``init``/``step`` over arrays, and for the coordinate form its ``kind`` and
    hyper-parameters (``gamma`` the momentum, Adam's ``beta1``, ``beta2``, ``eps``)."""

    init: Callable[[np.ndarray], tuple]
    step: Callable[[np.ndarray, tuple, float], tuple[np.ndarray, tuple]]
    kind: int
    gamma: float = 0.0
    beta1: float = ADAM_BETA1
    beta2: float = ADAM_BETA2
    eps: float = 1e-8


def plain() -> UpdateRule:
    """``W <- W - eta g``."""
    return UpdateRule(init=lambda W: PlainState(), step=lambda g, state, eta: (-eta * g, state), kind=PLAIN)


def momentum(gamma: float, nesterov: bool = False) -> UpdateRule:
    """PyTorch's momentum: ``v <- gamma v + g`` (``v_0 = 0``, so ``v_1 = g``), then
    ``W <- W - eta v`` (heavy ball) or ``W <- W - eta (g + gamma v)`` (Nesterov)."""

    def step(g, state, eta):
        v = gamma * state.velocity + g
        direction = g + gamma * v if nesterov else v
        return -eta * direction, MomentumState(v)

    return UpdateRule(init=lambda W: MomentumState(np.zeros_like(W)), step=step,
                      kind=NESTEROV if nesterov else HEAVY_BALL, gamma=gamma)


def adam(beta1: float = ADAM_BETA1, beta2: float = ADAM_BETA2, eps: float = 1e-8) -> UpdateRule:
    """Adam with bias correction (Kingma & Ba 2015, Algorithm 1):
    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``W <- W - eta m_hat / (sqrt(v_hat) + eps)``, ``m_hat = m/(1-b1^t)``, ``v_hat = v/(1-b2^t)``."""

    def step(g, state, eta):
        count = state.count + 1
        m = beta1 * state.first + (1 - beta1) * g
        v = beta2 * state.second + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**count)
        v_hat = v / (1 - beta2**count)
        return -eta * m_hat / (np.sqrt(v_hat) + eps), AdamState(count, m, v)

    return UpdateRule(init=lambda W: AdamState(0, np.zeros_like(W), np.zeros_like(W)), step=step, kind=ADAM,
                      beta1=beta1, beta2=beta2, eps=eps)


@njit(cache=True, inline="always")
def direction(kind, g, first, second, gamma, beta1, beta2, correction1, correction2, eps):
    """One coordinate of the rules above: ``(direction, first, second)`` from the gradient ``g``
    and the coordinate's state (``first`` the velocity or Adam's ``m``, ``second`` Adam's ``v``);
    ``correction1/2 = 1 - beta1/2^t`` at Adam's step ``t``."""
    if kind == PLAIN:
        return g, first, second
    if kind == ADAM:
        m = beta1 * first + (1 - beta1) * g
        v = beta2 * second + (1 - beta2) * g * g
        return (m / correction1) / (math.sqrt(v / correction2) + eps), m, v
    velocity = gamma * first + g
    return (g + gamma * velocity if kind == NESTEROV else velocity), velocity, second


def rule(update: str, gamma: float = 0.9, adam_eps: float = 1e-8) -> UpdateRule:
    """The update rule named ``update`` (``plain``, ``heavy-ball``, ``nesterov``, ``adam``)."""
    if update == "plain":
        return plain()
    if update == "heavy-ball":
        return momentum(gamma)
    if update == "nesterov":
        return momentum(gamma, nesterov=True)
    if update == "adam":
        return adam(eps=adam_eps)
    raise ValueError(f"update: unknown value {update!r}")
