"""GAMP's output channels and state evolution: derivatives, known thresholds (SPEC 11)."""

import numpy as np
import pytest
from scipy.stats import norm

import phaseret
from phaseret import channels, state_evolution

K = 0.67449


def log_likelihood(task, y, omega, V):
    """log p(y | omega, V) written directly: |z| has density N(y; omega, V) + N(-y; omega, V)."""
    if task == "phase-retrieval":
        return np.log(norm.pdf(y, omega, np.sqrt(V)) + norm.pdf(-y, omega, np.sqrt(V)))
    inside = norm.cdf(K, omega, np.sqrt(V)) - norm.cdf(-K, omega, np.sqrt(V))
    return np.log(np.where(y > 0, 1 - inside, inside))


@pytest.mark.parametrize("task", ["phase-retrieval", "symmetric-door"])
@pytest.mark.parametrize("V", [0.05, 0.3, 1.0])
def test_output_functions_are_derivatives_of_the_log_likelihood(task, V):
    """g_out = d log p / d omega and dg = d g_out / d omega (SPEC 11's E[z|y], Var[z|y] forms)."""
    rng = np.random.default_rng(0)
    omega = rng.normal(0, 1, 50)
    y = np.abs(rng.normal(0, 1, 50)) if task == "phase-retrieval" else rng.choice([-1.0, 1.0], 50)
    output = channels.phase_retrieval_output if task == "phase-retrieval" else lambda y, o, v: channels.door_output(y, o, v, K)
    g, dg = output(y, omega, V)
    h = 1e-5
    fd_g = (log_likelihood(task, y, omega + h, V) - log_likelihood(task, y, omega - h, V)) / (2 * h)
    fd_dg = (output(y, omega + h, V)[0] - output(y, omega - h, V)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd_g, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dg, fd_dg, rtol=1e-5, atol=1e-6)


def test_door_channel_is_stable_in_the_noiseless_limit():
    omega = np.array([-3.0, -0.7, 0.0, 0.5, 0.674, 2.0, 40.0])
    for y in (1.0, -1.0):
        g, dg = channels.door_output(np.full(7, y), omega, 1e-12, K)
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
    log_plus, log_minus = channels.door_log_partitions(omega, 1e-12, K)
    assert np.all(np.isfinite(log_plus) | (log_plus == -np.inf)) and np.all(log_minus <= 0)
    # Z_- is computed directly, not as 1 - Z_+: at omega = 10 it is 5e-21, which 1 - Z_+ rounds to 0.
    exact = norm.logcdf(K - 10.0) + np.log1p(-np.exp(norm.logcdf(-K - 10.0) - norm.logcdf(K - 10.0)))
    assert channels.door_log_partitions(np.array([10.0]), 1.0, K)[1][0] == pytest.approx(exact, rel=1e-10)


def test_door_labels_balance_at_K():
    log_plus, log_minus = channels.door_log_partitions(np.array([0.0]), 1.0, K)
    assert np.exp(log_plus[0]) == pytest.approx(0.5, abs=1e-5)
    assert np.exp(log_plus[0]) + np.exp(log_minus[0]) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "task, weak, perfect",
    [("phase-retrieval", 0.5, 1.128), ("symmetric-door", 1.36, 1.566)],
)
def test_state_evolution_reproduces_the_known_thresholds(task, weak, perfect):
    assert state_evolution.weak_recovery_threshold(task) == pytest.approx(weak, abs=0.005)
    assert phaseret.amp_threshold(task) == pytest.approx(perfect, abs=0.005)


def test_state_evolution_below_and_above_the_thresholds():
    assert state_evolution.fixed_point("phase-retrieval", 0.4) < 1e-6  # below weak recovery
    partial = state_evolution.fixed_point("phase-retrieval", 1.0)
    assert 0.05 < partial < 0.95  # weak but not perfect recovery
    assert state_evolution.fixed_point("phase-retrieval", 1.2) >= state_evolution.PERFECT
    assert state_evolution.mse("symmetric-door", 1.7) <= 1e-3
    with pytest.raises(ValueError, match="^task:"):
        state_evolution.fixed_point("phase-retrival", 1.0)


def test_door_bayes_test_error():
    # Uninformed (alpha below weak recovery): the best guess errs on half the samples at K = 0.67449.
    assert state_evolution.door_bayes_test_error(1.0) == pytest.approx(0.5, abs=1e-3)
    assert state_evolution.door_bayes_test_error(1.7) < 1e-3  # perfect recovery above 1.566
    assert 0.0 < state_evolution.door_bayes_test_error(1.5) < 0.5
