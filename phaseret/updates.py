"""Update rules (SPEC 5), each a state plus a pure step, in the manner of optax.

``rule.init(W) -> state``; ``rule.step(g, state, eta) -> (delta, state)``;
the loop then sets ``W <- W + delta``. Projection and Langevin noise are
separate pieces applied after the update (``phaseret.noise``,
``phaseret.sphere``), so every batch rule composes with every update.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class UpdateRule(NamedTuple):
    init: Callable[[np.ndarray], tuple]
    step: Callable[[np.ndarray, tuple, float], tuple[np.ndarray, tuple]]


def plain() -> UpdateRule:
    """``W <- W - eta g``."""
    return UpdateRule(init=lambda W: (), step=lambda g, state, eta: (-eta * g, state))


def momentum(gamma: float, nesterov: bool = False) -> UpdateRule:
    """PyTorch's momentum: ``v <- gamma v + g`` (``v_0 = 0``, so ``v_1 = g``), then
    ``W <- W - eta v`` (heavy ball) or ``W <- W - eta (g + gamma v)`` (Nesterov)."""

    def step(g, state, eta):
        (v,) = state
        v = gamma * v + g
        direction = g + gamma * v if nesterov else v
        return -eta * direction, (v,)

    return UpdateRule(init=lambda W: (np.zeros_like(W),), step=step)


def adam(beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> UpdateRule:
    """Adam with bias correction (Kingma & Ba 2015, Algorithm 1):
    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``W <- W - eta m_hat / (sqrt(v_hat) + eps)``, ``m_hat = m/(1-b1^t)``, ``v_hat = v/(1-b2^t)``."""

    def step(g, state, eta):
        count, m, v = state
        count += 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**count)
        v_hat = v / (1 - beta2**count)
        return -eta * m_hat / (np.sqrt(v_hat) + eps), (count, m, v)

    return UpdateRule(init=lambda W: (0, np.zeros_like(W), np.zeros_like(W)), step=step)


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
