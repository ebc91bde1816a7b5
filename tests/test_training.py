"""The training loop: statuses, projection, determinism, Langevin, and a small science check."""

import math

import numpy as np
import pytest

import phaseret
from phaseret import seeding, sphere
from phaseret.optim import batches, noise, rules
from phaseret.config import reference_config, validate
from phaseret.training import reference_jumps, run, training_key

SMALL = dict(model="pr-quadratic", p=32, alpha=8.0, seed=0)


def test_projection_keeps_every_unit_on_the_sphere():
    r = phaseret.train(model="pr-absolute", p=40, hidden=3, alpha=2.0, algorithm="p-sgd", update="nesterov", max_epochs=50)
    np.testing.assert_allclose(np.linalg.norm(r.W, axis=1), np.sqrt(40), rtol=1e-12)
    free = phaseret.train(model="pr-absolute", p=40, hidden=3, alpha=2.0, projection=False, max_epochs=50)
    assert not np.allclose(np.linalg.norm(free.W, axis=1), np.sqrt(40), rtol=1e-6)


@pytest.mark.parametrize(
    "keys, status",
    [
        (dict(), "converged-test"),  # GD at alpha 8 finds the teacher
        (dict(stop={"test_error": 0.0}), "converged-train"),
        (dict(stop={"test_error": 0.0, "train_error": 0.0}), "stationary"),
        (dict(max_epochs=5), "max-epochs"),
        (dict(projection=False, lr=10.0), "diverged"),
    ],
)
def test_every_status_is_reached(keys, status):
    r = phaseret.train(**(SMALL | dict(max_epochs=20_000) | keys))
    assert r.status == status
    assert r.success == (status in ("converged-test", "converged-train", "stationary"))
    if status == "max-epochs":
        assert (r.epochs, r.steps) == (5, 5)
    if status == "stationary":
        assert r.grad_ema < 5e-10 <= r.trajectory.grad_ema.dropna("epoch").values[-2]


def test_a_huge_learning_rate_diverges_cleanly(recwarn):
    r = phaseret.train(**SMALL, lr=1e300, max_epochs=100)
    assert r.status == "diverged" and not r.success
    assert r.epochs < 100 and math.isnan(r.test_error)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    # The trajectory stops at the divergence: later points are NaN, epoch 0 is measured.
    assert np.isfinite(r.trajectory.test_error.sel(epoch=0))
    assert np.all(np.isnan(r.trajectory.test_error.sel(epoch=slice(r.epochs, None))))


@pytest.mark.parametrize(
    "keys",
    [
        dict(algorithm="p-sgd", update="nesterov"),
        dict(algorithm="sgd", update="adam", lr=0.001, model="door-logistic"),
        dict(algorithm="langevin", noise="temperature", T0=0.001, t_cool=20),
        dict(algorithm="langevin", noise="matched", reference={"algorithm": "sgd", "batch_fraction": 0.25}),
    ],
)
def test_same_call_is_bit_identical(keys):
    args = dict(p=48, alpha=2.0, seed=3, max_epochs=60) | keys
    a, b = phaseret.train(**args), phaseret.train(**args)
    np.testing.assert_array_equal(a.W, b.W)
    xr_a, xr_b = a.trajectory, b.trajectory
    assert xr_a.identical(xr_b)
    assert (a.status, a.epochs, a.steps) == (b.status, b.epochs, b.steps)


def test_optimizers_of_a_cell_share_data_and_start_but_not_draws():
    cell = dict(p=48, alpha=2.0, seed=1, max_epochs=30)
    runs = [
        phaseret.train(**cell, algorithm="gd"),
        phaseret.train(**cell, algorithm="p-sgd", update="nesterov"),
        phaseret.train(**cell, algorithm="sgd", update="heavy-ball"),
    ]
    start = [r.trajectory.isel(epoch=0) for r in runs]
    for other in start[1:]:
        for name in ("train_error", "test_error", "train_loss", "overlap"):
            assert float(other[name]) == float(start[0][name])
    assert not np.array_equal(runs[0].W, runs[1].W)
    other_seed = phaseret.train(**(cell | dict(seed=2)), algorithm="gd")
    assert float(other_seed.trajectory.overlap[0]) != float(start[0].overlap)


def test_momentum_zero_equals_plain_in_a_whole_run():
    a = phaseret.train(**SMALL, max_epochs=40, update="heavy-ball", momentum=0.0)
    b = phaseret.train(**SMALL, max_epochs=40)
    np.testing.assert_array_equal(a.W, b.W)


def test_steps_per_epoch_follow_the_batch_rule():
    cell = dict(p=40, alpha=2.5, max_epochs=3, stop={"test_error": 0.0})  # n = 100
    assert phaseret.train(**cell).steps == 3
    assert phaseret.train(**cell, algorithm="p-sgd", batch_fraction=0.3).steps == 3 * 4
    assert phaseret.train(**cell, algorithm="sgd", batch_fraction=0.3).steps == 3 * 3


def test_lr_scaling_hidden_multiplies_the_step_size():
    assert validate(alpha=1.0, hidden=5, lr=0.01, lr_scaling="hidden").step_size == pytest.approx(0.05)
    assert validate(alpha=1.0, hidden=5, lr=0.01).step_size == 0.01


def test_trajectory_grid_and_labels():
    grid = phaseret.epoch_grid(20_000)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 20_000
    assert np.all(np.diff(grid) > 0) and 120 <= len(grid) <= 151
    r = phaseret.train(**SMALL, max_epochs=300, algorithm="p-sgd", update="nesterov")
    assert r.trajectory.attrs["optimizer"] == "p-sgd+nesterov"
    for name, var in r.trajectory.data_vars.items():
        assert var.attrs["long_name"] and var.attrs["units"], name
    finals = r.trajectory.sel(epoch=r.epochs)  # a grid point here: the last epoch is recorded
    if r.epochs in phaseret.epoch_grid(300):
        assert float(finals.test_error) == r.test_error
    assert r.test_error == phaseret.population_error(r.W, phaseret.make_dataset("phase-retrieval", 32, 8.0, 0).w_star)


def test_grad_ema_uses_the_tangent_gradient_unless_raw_is_asked():
    tangent = phaseret.train(**SMALL, max_epochs=20)
    raw = phaseret.train(**SMALL, max_epochs=20, stop={"grad_measure": "raw"})
    assert tangent.grad_ema < tangent.grad_ema_raw
    assert (tangent.grad_ema, tangent.grad_ema_raw) == (raw.grad_ema, raw.grad_ema_raw)


# --- Langevin ---------------------------------------------------------------------------


def kick(source, W, step, eta):
    """A noise source's kick of one replica (index 0) at ``W`` (d, p), on a copy."""
    return source.add(W[None].copy(), np.array([0]), step, eta)[0]


def test_matched_noise_kicks_by_sigma_t_and_stops_after_the_record():
    key = seeding.cell_key(0, 1)
    source = noise.MatchedNoise([np.array([0.0, 0.5])], key[None])
    W = np.ones((2, 10))
    np.testing.assert_array_equal(kick(source, W, 0, 0.1), W)  # sigma_0 = 0
    assert np.linalg.norm(kick(source, W, 1, 0.1) - W) == pytest.approx(0.5)  # sigma_1, whatever eta
    assert np.linalg.norm(kick(source, W, 1, 100.0) - W) == pytest.approx(0.5)
    np.testing.assert_array_equal(kick(source, W, 2, 0.1), W)  # record over: noise-free


def test_temperature_noise_has_variance_2_eta_T_until_t_cool():
    key = seeding.cell_key(0, 2)
    source = noise.TemperatureNoise(0.3, 5, key[None])
    W = np.zeros((4, 25_000))
    kicked = kick(source, W, 4, 0.01)
    assert abs(kicked.var() - 2 * 0.01 * 0.3) < 5 * 2 * 0.01 * 0.3 * np.sqrt(2 / kicked.size)
    assert source.scale(4, 0.01) == pytest.approx(np.sqrt(2 * 0.01 * 0.3)) and source.scale(5, 0.01) == 0.0
    np.testing.assert_array_equal(kick(source, W, 5, 0.01), W)


def test_matched_noise_comes_from_the_reference_run_of_the_same_cell():
    cell = dict(p=32, alpha=3.0, seed=0, max_epochs=40, update="heavy-ball")
    config = validate(**cell, algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd"})
    ref = reference_config(config)
    # Same cell and budget, the Langevin run's own update, P-SGD batches, no test stop.
    assert (ref.algorithm, ref.update, ref.max_epochs, ref.stop.test_error) == ("p-sgd", "heavy-ball", 40, 0.0)
    reference = run(ref, record_gradient_jumps=True)
    assert len(reference.gradient_jumps) == reference.steps == 80  # ceil(1/b) = 2 steps an epoch
    assert reference.gradient_jumps[0] == 0.0 and np.all(reference.gradient_jumps[1:] > 0)
    # sigma_t is |g_t - g_(t-1)|: recompute two steps by hand from the same start and batches.
    data = phaseret.make_dataset("phase-retrieval", 32, 3.0, 0)
    model = phaseret.Model("pr-quadratic")
    chain = batches.selector("p-sgd", data.X.shape[0], 0.5, 2.0, 0.005, training_key(ref)[None])
    W = phaseret.initial_weights(32, 1, 3.0, 0)
    rule = rules.rule("heavy-ball", 0.9)
    state = rule.init(W)
    m0 = chain.select(0, np.array([0]))[0]
    g0 = model.grad(W, data.X[m0], data.y[m0])
    delta, state = rule.step(g0, state, 0.005)
    W = sphere.project(W + delta)
    m1 = chain.select(1, np.array([0]))[0]
    g1 = model.grad(W, data.X[m1], data.y[m1])
    assert reference.gradient_jumps[1] == pytest.approx(np.linalg.norm(g1 - g0), rel=1e-12)
    # phaseret.train runs the reference once and reuses it.
    a = phaseret.train(**cell, algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd"})
    jumps = reference_jumps()
    (record,) = jumps.records([ref])
    b = phaseret.train(**cell, algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd"})
    assert jumps.records([ref])[0] is record  # the same array: not run again
    np.testing.assert_array_equal(record, reference.gradient_jumps)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.steps == 40  # one step an epoch
    # The noise changes the run: without it (a zero-temperature Langevin) it ends elsewhere.
    quiet = phaseret.train(**cell, algorithm="langevin", noise="temperature", T0=0.0, t_cool=0)
    assert not np.allclose(a.W, quiet.W)


# --- science ------------------------------------------------------------------------------


def test_nothing_learns_below_the_information_theoretic_threshold():
    for keys in (dict(algorithm="gd"), dict(algorithm="sgd"), dict(algorithm="p-sgd", update="nesterov")):
        for seed in (0, 1):
            r = phaseret.train(p=128, alpha=0.5, seed=seed, max_epochs=1500, **keys)
            assert not r.success and r.test_error > 0.5, (keys, seed)


def test_gradient_descent_recovers_the_teacher_at_alpha_8():
    results = [phaseret.train(p=128, alpha=8.0, seed=seed, lr=0.005, max_epochs=3000) for seed in range(4)]
    assert sum(r.success for r in results) >= 3
    assert all(r.overlap > 0.99 for r in results if r.success)
