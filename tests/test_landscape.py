"""Hessian spectra (:mod:`phaseret.landscape`, :mod:`phaseret.final_spectra`): the Riemannian
Hessian against second differences along geodesics, its tangent basis, the spectra at the
teacher, Lanczos against dense, the last step's batch, and recording in studies."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from phaseret import folders, landscape, runner
from phaseret.data import make_dataset
from phaseret.engine import Engine
from phaseret.final_spectra import last_batch
from phaseret.models import MODELS, Model
from phaseret.records import epoch_grid
from phaseret.replica_batch import build_batch
from phaseret.study import build_study
from phaseret.training import validate


def point(model_name: str, d: int, p: int, n: int, seed: int):
    """Random data and a random W on the spheres |w_k| = sqrt(p)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) / np.sqrt(p)
    y = rng.normal(size=n) if MODELS[model_name].task == "phase-retrieval" else np.sign(rng.normal(size=n))
    W = rng.normal(size=(d, p))
    return X, y, W * np.sqrt(p) / np.linalg.norm(W, axis=1, keepdims=True), rng


@settings(max_examples=25, deadline=None)
@given(model_name=st.sampled_from(sorted(MODELS)), d=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_riemannian_hessian_matches_second_differences_along_geodesics(model_name, d, seed):
    model = Model(model_name, d, loss_eps=0.05)  # a smooth |.| so that second differences resolve it
    X, y, W, rng = point(model_name, d, p=6, n=25, seed=seed)
    H, U = landscape.riemannian_hessian(model, W, X, y)
    x = rng.normal(size=H.shape[0])
    x /= np.linalg.norm(x)
    xi = (U @ x).reshape(W.shape)
    np.testing.assert_allclose(np.sum(xi * W, axis=1), 0.0, atol=1e-10)  # tangent to each sphere
    radius, speed = np.linalg.norm(W, axis=1), np.linalg.norm(xi, axis=1)

    def geodesic(t):  # great circles through w_k with velocity xi_k, radius |w_k|
        angle = t * speed / radius
        return np.cos(angle)[:, None] * W + (radius * np.sin(angle) / speed)[:, None] * xi

    h = 1e-3
    second = (model.loss(geodesic(h), X, y) - 2 * model.loss(W, X, y) + model.loss(geodesic(-h), X, y)) / h**2
    assert abs(second - x @ H @ x) <= 1e-4 * (1 + abs(second))


def test_the_tangent_basis_is_orthonormal_and_orthogonal_to_each_unit():
    _, _, W, rng = point("pr-quadratic", 3, p=8, n=1, seed=1)
    U = landscape.Tangent(W, rng.normal(size=W.shape)).basis()
    np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-12)
    for k in range(3):
        np.testing.assert_allclose(W[k] @ U[k * 8 : (k + 1) * 8], 0.0, atol=1e-12)


def test_at_the_teacher_the_riemannian_spectrum_is_nonnegative_and_interlaces_the_euclidean():
    model, p = Model("pr-quadratic"), 40
    data = make_dataset("phase-retrieval", p, 6.0, 0)
    W = data.w_star[None, :]
    assert np.abs(model.grad(W, data.X, data.y)).max() < 1e-9  # a minimum of the loss: Lambda = 0
    spectra = landscape.spectra(model, W, data.X, data.y, None)
    euclidean, riemannian = spectra["full"], spectra["riemannian"]
    assert riemannian.min() >= -1e-9 and riemannian.min() > 1e-3 * riemannian.max()
    # U^T H U compresses H by one dimension (the radial one): Cauchy interlacing
    assert np.all(euclidean[:-1] <= riemannian + 1e-9) and np.all(riemannian <= euclidean[1:] + 1e-9)


def test_away_from_the_teacher_the_constraint_shifts_the_spectrum_by_lambda():
    model = Model("pr-quadratic")
    X, y, W, _ = point("pr-quadratic", 1, p=30, n=90, seed=3)
    lam = float(model.grad(W, X, y)[0] @ W[0]) / 30
    shifted = np.linalg.eigvalsh(model.hessian(W, X, y)) - lam
    riemannian = landscape.spectra(model, W, X, y, None)["riemannian"]
    assert abs(lam) > 1.0  # a real shift
    assert np.all(shifted[:-1] <= riemannian + 1e-9) and np.all(riemannian <= shifted[1:] + 1e-9)


def test_lanczos_extremes_equal_the_dense_spectrum(monkeypatch):
    model = Model("door-logistic", 2)
    X, y, W, rng = point("door-logistic", 2, p=50, n=140, seed=4)
    batch = rng.random(140) < 0.5
    dense = landscape.spectra(model, W, X, y, batch)
    monkeypatch.setattr(landscape, "DENSE_LIMIT", 10)
    extremes = landscape.spectra(model, W, X, y, batch)
    k = landscape.LANCZOS_EXTREMES
    for name in landscape.MATRICES:
        assert len(extremes[name]) == 2 * k
        np.testing.assert_allclose(extremes[name][:k], dense[name][:k], atol=1e-9)
        np.testing.assert_allclose(extremes[name][k:], dense[name][-k:], atol=1e-9)


@pytest.mark.parametrize("algorithm", ["p-sgd", "sgd", "gd"])
def test_the_last_batch_replayed_from_the_keys_is_the_engines(algorithm):
    configs = [validate(alpha=3.0, p=16, n_test=16, seed=s, algorithm=algorithm, max_epochs=7) for s in range(2)]
    batch = build_batch(configs, "cpu")
    results = Engine(batch, epoch_grid(7)).run()
    selector = batch.parts[0].optimizer.selector
    for r, (config, result) in enumerate(zip(configs, results)):
        mask = last_batch(config, batch.n, result.steps)
        if algorithm == "gd":
            assert mask is None
        elif algorithm == "p-sgd":
            np.testing.assert_array_equal(mask, selector._member[r])
        else:
            expected = np.zeros(batch.n, bool)
            chunk = (result.steps - 1) % selector.steps_per_epoch
            order = selector.permutation(r, (result.steps - 1) // selector.steps_per_epoch)
            expected[order[chunk * selector.batch_size : (chunk + 1) * selector.batch_size]] = True
            np.testing.assert_array_equal(mask, expected)


TABLE = {"name": "spectra", "model": "pr-quadratic", "p": 12, "hidden": [1, 2], "alpha": [3.0], "seeds": 2,
         "max_epochs": 30, "n_test": 16, "optimizer": [{"algorithm": "p-sgd", "update": "heavy-ball"}, {"algorithm": "gd"}],
         "plot": {"figures": ["hessian"]}}


def test_a_study_records_the_spectra_without_changing_training(tmp_path):
    runner.run_study(build_study(TABLE | {"record": {"hessian": "end"}}), tmp_path / "with", progress=False)
    runner.run_study(build_study(TABLE), tmp_path / "without", progress=False)
    _, kept = folders.open_folder(tmp_path / "with")
    _, plain = folders.open_folder(tmp_path / "without")
    trajectories = [v for v in plain.data_vars if v.endswith("_trajectory")]
    xr.testing.assert_equal(kept[trajectories], plain[trajectories])  # bit-identical values (attributes aside)
    spectra = kept.hessian_eigenvalues
    assert spectra.sizes["eigenvalue"] == 24 and list(spectra.hessian.values) == list(landscape.MATRICES)
    gd = spectra.sel(optimizer="gd", hidden=1, alpha=3.0, seed=0)
    np.testing.assert_array_equal(gd.sel(hessian="full"), gd.sel(hessian="batch"))  # GD's batch is all the data
    assert int(gd.sel(hessian="riemannian").notnull().sum()) == 11  # d (p - 1)
    assert folders.plot_folder(tmp_path / "with")


@pytest.mark.parametrize("record, message", [
    ({"hessian": "final"}, "record.hessian: must be 'end' or 'grid'"),
    ({"hessian": True}, "record.hessian: must be 'end' or 'grid'"),
    ({"spectrum": True}, "record.spectrum: not recorded by this version"),
])
def test_bad_record_requests_are_refused(record, message):
    with pytest.raises(ValueError, match=message):
        build_study(TABLE | {"record": record})


def test_hessians_of_a_baseline_are_refused():
    table = TABLE | {"hidden": 1, "optimizer": [{"algorithm": "gamp"}], "record": {"hessian": "end"}}
    with pytest.raises(ValueError, match="record.hessian: the gamp baseline"):
        build_study(table)


def test_grid_extremes_are_recorded_and_agree_with_the_spectra_at_the_end(tmp_path):
    table = TABLE | {"hidden": 2, "record": {"hessian": "grid"}, "plot": {"figures": ["hessian"]}}
    runner.run_study(build_study(table), tmp_path / "grid", progress=False)
    runner.run_study(build_study(TABLE | {"hidden": 2}), tmp_path / "plain", progress=False)
    _, grid = folders.open_folder(tmp_path / "grid")
    _, plain = folders.open_folder(tmp_path / "plain")
    xr.testing.assert_equal(grid.test_error_trajectory, plain.test_error_trajectory)  # recording changes nothing
    compared = 0
    for optimizer in ("gd", "p-sgd+heavy-ball"):
        for seed in (0, 1):
            run = grid.sel(optimizer=optimizer, alpha=3.0, seed=seed)
            riemannian = run.hessian_eigenvalues.sel(hessian="riemannian").dropna("eigenvalue").values
            last = run.hessian_min_trajectory.dropna("epoch")
            if int(last.epoch[-1]) == int(run.epochs):  # the run's last grid point is its final epoch
                assert float(last[-1]) == pytest.approx(riemannian[0], rel=1e-9, abs=1e-9)
                assert float(run.hessian_max_trajectory.dropna("epoch")[-1]) == pytest.approx(riemannian[-1], rel=1e-9)
                assert float(run.hessian_negative_trajectory.dropna("epoch")[-1]) == np.sum(riemannian < 0)
                compared += 1
    assert compared >= 2
    assert int(grid.hessian_negative_trajectory.notnull().sum()) > 20


def test_the_size_estimate_counts_dense_hessians_only_below_the_dense_limit():
    from phaseret.sizes import group_bytes

    small = validate(alpha=2.5, p=1024, hidden=5)
    assert group_bytes(small, 4, 4, hessian=True)["Hessians"] == 3 * 5120**2 * 8
    assert "Hessians" not in group_bytes(small, 4, 4)
    assert "Hessians" not in group_bytes(validate(alpha=2.5, p=1024, hidden=10), 4, 4, hessian=True)  # Lanczos


def test_dense_hessians_that_do_not_fit_in_memory_are_refused_before_any_work(monkeypatch):
    from phaseret import sizes

    table = TABLE | {"p": 1024, "hidden": 5, "alpha": [2.5], "seeds": 1, "record": {"hessian": "end"}}
    groups = build_study(table).groups()
    monkeypatch.setattr(sizes, "available_bytes", lambda: 400 * 2**20)
    with pytest.raises(ValueError, match=r"needs about .*Hessians 600 MiB.* but 400 MiB is available"):
        sizes.fit(groups, *sizes.local_share(1))
    sizes.fit(build_study(table | {"record": {}}).groups(), *sizes.local_share(1))  # without the Hessians it fits
