"""Teachers, data and starts: distributions, independence and reproducibility (SPEC 1, 7)."""

import numpy as np
import pytest

import phaseret
from phaseret import data, seeding


def test_inputs_have_the_spec_moments():
    ds = phaseret.make_dataset("phase-retrieval", 200, 5.0, 0)
    assert ds.X.shape == (1000, 200) and ds.X_test.shape == (200, 200)
    N = ds.X.size
    # Entries N(0, 1/p): mean 0 and p * variance 1, each within 5 standard errors.
    assert abs(ds.X.mean()) < 5 / np.sqrt(200 * N)
    assert abs(200 * ds.X.var() - 1.0) < 5 * np.sqrt(2 / N)


def test_phase_retrieval_labels_are_abs_of_a_unit_gaussian():
    ds = phaseret.make_dataset("phase-retrieval", 100, 1.0, 0, n_test=40_000)
    np.testing.assert_array_equal(ds.y_test, np.abs(ds.X_test @ ds.w_star))
    # |w*| = sqrt(p) makes z ~ N(0, 1): E[y^2] = 1 with Var = 2.
    assert abs(np.mean(ds.y_test**2) - 1.0) < 5 * np.sqrt(2 / 40_000)


def test_door_labels_are_balanced_at_the_default_K():
    ds = phaseret.make_dataset("symmetric-door", 100, 1.0, 0, n_test=40_000)
    z = ds.X_test @ ds.w_star
    np.testing.assert_array_equal(ds.y_test, np.where(np.abs(z) >= 0.67449, 1.0, -1.0))
    assert set(np.unique(ds.y_test)) == {-1.0, 1.0}
    assert abs(np.mean(ds.y_test == 1.0) - 0.5) < 5 * 0.5 / np.sqrt(40_000)
    # A larger K tilts the balance the right way: P(|z| >= 1) = 0.317.
    tilted = phaseret.make_dataset("symmetric-door", 100, 1.0, 0, n_test=40_000, K=1.0)
    assert abs(np.mean(tilted.y_test == 1.0) - 0.3173) < 0.01


def test_teachers():
    w = phaseret.teacher("phase-retrieval", 64)
    assert w @ w == pytest.approx(64)
    g = phaseret.teacher("phase-retrieval", 64, kind="gaussian")
    np.testing.assert_allclose(w, g * np.sqrt(64) / np.linalg.norm(g))  # same draw, not rescaled
    door = phaseret.teacher("symmetric-door", 64)
    assert set(np.unique(door)) == {-1.0, 1.0}


def test_teacher_is_fixed_across_alpha_and_seed_but_not_study_seed():
    a = phaseret.make_dataset("phase-retrieval", 32, 1.0, 0)
    b = phaseret.make_dataset("phase-retrieval", 32, 3.5, 7)
    c = phaseret.make_dataset("phase-retrieval", 32, 1.0, 0, landscape="shared")
    np.testing.assert_array_equal(a.w_star, b.w_star)
    np.testing.assert_array_equal(a.w_star, c.w_star)
    assert not np.array_equal(a.w_star, phaseret.make_dataset("phase-retrieval", 32, 1.0, 0, study_seed=1).w_star)


def test_every_draw_is_reproducible_and_independent_of_call_order():
    first = phaseret.make_dataset("symmetric-door", 16, 2.0, 3, study_seed=5)
    phaseret.make_dataset("symmetric-door", 16, 1.5, 4, study_seed=5)  # other draws in between
    phaseret.initial_weights(16, 2, 2.0, 3, study_seed=5)
    again = phaseret.make_dataset("symmetric-door", 16, 2.0, 3, study_seed=5)
    for name in ("X", "y", "X_test", "y_test", "w_star"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    np.testing.assert_array_equal(
        phaseret.initial_weights(16, 2, 2.0, 3, study_seed=5), phaseret.initial_weights(16, 2, 2.0, 3, study_seed=5)
    )


def test_landscapes():
    per_seed = [phaseret.make_dataset("phase-retrieval", 16, 2.0, s) for s in (0, 1)]
    shared = [phaseret.make_dataset("phase-retrieval", 16, 2.0, s, landscape="shared") for s in (0, 1)]
    assert not np.array_equal(per_seed[0].X, per_seed[1].X)
    assert not np.array_equal(per_seed[0].X_test, per_seed[1].X_test)
    np.testing.assert_array_equal(shared[0].X, shared[1].X)
    np.testing.assert_array_equal(shared[0].X_test, shared[1].X_test)
    assert not np.array_equal(shared[0].X, per_seed[0].X)
    # Train and test sets are different draws; alphas are different instances.
    assert not np.array_equal(shared[0].X[:16], shared[0].X_test)
    other_alpha = phaseret.make_dataset("phase-retrieval", 16, 2.5, 0)
    assert not np.array_equal(other_alpha.X[:32], per_seed[0].X)


def test_sample_count_is_floor_alpha_p_without_rounding_surprises():
    assert data.n_samples(2.3, 100) == 230
    assert data.n_samples(1.7, 256) == 435
    assert phaseret.make_dataset("phase-retrieval", 100, 2.3, 0).X.shape == (230, 100)


def test_starts_lie_on_the_sphere_and_depend_on_the_run():
    W = phaseret.initial_weights(32, 3, 2.0, 0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), np.sqrt(32), rtol=1e-14)
    assert not np.array_equal(W, phaseret.initial_weights(32, 3, 2.0, 1))
    assert not np.array_equal(W, phaseret.initial_weights(32, 3, 2.5, 0))


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(task="phase-retrival"), "task"), (dict(landscape="global"), "landscape"), (dict(teacher_kind="x"), "teacher")],
)
def test_bad_choices_are_named(kwargs, field):
    args = dict(task="phase-retrieval", p=8, alpha=1.0, seed=0) | kwargs
    with pytest.raises(ValueError, match=f"^{field}:"):
        phaseret.make_dataset(**args)


def test_training_draws_are_addressed_by_stream_and_step():
    key = seeding.cell_key(0, 1, 2, 3)
    u = seeding.step_uniforms(key, "p-sgd-membership", 10, 50_000)
    np.testing.assert_array_equal(u, seeding.step_uniforms(key, "p-sgd-membership", 10, 50_000))
    # A prefix of a step's draw is the draw of fewer numbers: sizes do not shift the stream.
    np.testing.assert_array_equal(u[:7], seeding.step_uniforms(key, "p-sgd-membership", 10, 7))
    assert not np.array_equal(u[:100], seeding.step_uniforms(key, "p-sgd-membership", 11, 100))
    assert not np.array_equal(u[:100], seeding.step_uniforms(key, "sgd-permutation", 10, 100))
    assert not np.array_equal(u[:100], seeding.step_uniforms(seeding.cell_key(0, 1, 2, 4), "p-sgd-membership", 10, 100))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    z = seeding.step_normals(key, "langevin-noise", 3, 50_001)
    assert z.shape == (50_001,)
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)
    assert abs(np.mean(z**4) - 3) < 0.15  # Gaussian tails, not just two moments


def test_config_key_is_order_free():
    assert seeding.config_key({"a": 1, "b": 2.5}) == seeding.config_key({"b": 2.5, "a": 1})
    assert seeding.config_key({"a": 1}) != seeding.config_key({"a": 2})
