"""The spectral estimate with optimal preprocessing at p = 2000 against its asymptotic overlaps."""

import numpy as np
import pytest

import phaseret
from phaseret.spectral import preprocessing, spectral_estimate


def squared_overlaps(task, alpha, seeds=3):
    values = []
    for seed in range(seeds):
        ds = phaseret.make_dataset(task, 2000, alpha, seed)
        w = spectral_estimate(ds.X, ds.y, task)
        assert w @ w == pytest.approx(2000)  # on the sphere
        values.append(phaseret.overlap(w, ds.w_star) ** 2)
    return np.array(values)


@pytest.mark.parametrize(
    "task, alpha, asymptotic",
    [("phase-retrieval", 1.0, 0.23), ("phase-retrieval", 2.0, 0.64), ("symmetric-door", 2.0, 0.40)],
)
def test_spectral_overlap_matches_the_asymptotic_value(task, alpha, asymptotic):
    """SPEC 11's squared overlaps; at p = 2000 a single instance scatters by about 0.05."""
    assert np.mean(squared_overlaps(task, alpha)) == pytest.approx(asymptotic, abs=0.06)


@pytest.mark.parametrize("task, alpha", [("phase-retrieval", 0.3), ("symmetric-door", 1.0)])
def test_no_overlap_below_the_spectral_threshold(task, alpha):
    assert np.all(squared_overlaps(task, alpha) < 0.05)


def test_preprocessing_values():
    T = preprocessing("symmetric-door", np.array([1.0, -1.0]))
    np.testing.assert_allclose(T, [0.462, -6.010], atol=5e-4)
    y = np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(preprocessing("phase-retrieval", y), 1 - np.mean(y**2) / y**2)
    with pytest.raises(ValueError, match="^task:"):
        preprocessing("door", y)
