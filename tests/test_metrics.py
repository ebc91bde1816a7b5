"""Population error against Monte Carlo; overlaps."""

import numpy as np
import pytest

import phaseret


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_population_error_matches_monte_carlo(d, seed):
    rng = np.random.default_rng(seed)
    p = 6
    W = rng.standard_normal((d, p))
    w_star = rng.standard_normal(p)  # off the sphere: Q != 1 is part of the formula
    exact = phaseret.population_error(W, w_star)
    samples = []
    for _ in range(10):  # 10 x 10^5 fresh samples
        X = rng.standard_normal((100_000, p)) / np.sqrt(p)
        s = np.mean((X @ W.T) ** 2, axis=1)
        samples.append(0.5 * (s - (X @ w_star) ** 2) ** 2)
    samples = np.concatenate(samples)
    standard_error = samples.std() / np.sqrt(samples.size)
    assert abs(samples.mean() - exact) < 5 * standard_error
    # The Model's sampled error on the same kind of data is the same quantity.
    model = phaseret.Model("pr-quadratic", hidden=d)
    X = rng.standard_normal((200_000, p)) / np.sqrt(p)
    sampled = model.error(W, X, np.abs(X @ w_star))
    assert abs(sampled - exact) < 5 * samples.std() / np.sqrt(X.shape[0])


def test_population_error_vanishes_at_the_teacher_and_its_mirror():
    rng = np.random.default_rng(3)
    w_star = rng.standard_normal(50)
    assert phaseret.population_error(w_star, w_star) == pytest.approx(0.0, abs=1e-12)
    # Every unit of a committee at +-w* fits too.
    W = np.stack([w_star, -w_star, w_star])
    assert phaseret.population_error(W, w_star) == pytest.approx(0.0, abs=1e-12)
    assert phaseret.population_error(rng.standard_normal(50), w_star) > 0.1


def test_overlaps_are_per_unit_and_scale_free():
    w_star = np.array([1.0, 0.0, 0.0, 0.0])
    W = np.array([[-2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    np.testing.assert_allclose(phaseret.unit_overlaps(W, 5 * w_star), [1.0, np.sqrt(0.5), 0.0])
    assert phaseret.overlap(W, w_star) == 1.0
    assert phaseret.overlap(W[1], w_star) == pytest.approx(np.sqrt(0.5))


def test_population_error_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="^W:"):
        phaseret.population_error(np.ones((2, 3)), np.ones(4))
