"""GAMP and the spectral estimate as cells of a study, and the spectral start (SPEC 11)."""

import numpy as np
import pytest

import phaseret
from phaseret import runner
from phaseret.study import build_study

CELL = dict(model="pr-quadratic", p=600, seed=0, max_epochs=300)


def test_gamp_cells_stop_at_the_test_error_and_count_iterations():
    above = phaseret.train(**CELL, alpha=1.6, algorithm="gamp")
    assert above.status == "converged-test" and above.success and above.test_error < 1e-3
    assert 5 < above.epochs < 300 and above.overlap > 0.999
    assert np.linalg.norm(above.W) == pytest.approx(np.sqrt(600))  # rescaled to the sphere
    traj = above.trajectory.test_error.dropna("epoch")
    assert traj.epoch[0] == 0 and traj[-1] < traj[0]
    below = phaseret.train(**CELL, alpha=0.8, algorithm="gamp")
    assert not below.success and below.status in ("stationary", "max-epochs")


def test_door_gamp_cell_uses_the_sampled_test_error():
    r = phaseret.train(model="door-logistic", p=600, seed=1, max_epochs=300, alpha=2.0, algorithm="gamp", n_test=600)
    assert r.success and r.test_error == r.test_error_sampled == 0.0


def test_spectral_cells():
    r = phaseret.train(**CELL, alpha=2.0, algorithm="spectral")
    assert r.epochs == 0 and r.status == "stationary" and not r.success
    assert 0.6 < r.overlap < 0.95  # squared overlap about 0.64 at alpha = 2


def test_spectral_start_for_gradient_methods():
    cell = CELL | dict(alpha=2.0, max_epochs=1)
    random = phaseret.train(**cell)
    spectral = phaseret.train(**cell, init="spectral")
    assert float(spectral.trajectory.overlap[0]) > 0.6 > float(random.trajectory.overlap[0])
    committee = phaseret.train(**cell, init="spectral", hidden=2)
    start = committee.trajectory.overlap[0]
    assert float(start) > 0.6 and not np.allclose(committee.W[0], committee.W[1])


def test_baselines_sit_beside_gradient_methods_in_a_study(tmp_path):
    table = {"name": "b", "model": "pr-quadratic", "p": 300, "alpha": [0.8, 1.6], "seeds": 2, "max_epochs": 200,
             "optimizer": [{"algorithm": "gd"}, {"algorithm": "gamp"}, {"algorithm": "spectral"}]}
    runner.run_study(build_study(table), tmp_path, progress=False)
    import xarray as xr

    with xr.open_dataset(tmp_path / "b.nc") as ds:
        assert list(ds.optimizer.values) == ["gd", "gamp", "spectral"]
        assert ds.success.sel(optimizer="gamp", alpha=1.6).sum() == 2
        assert ds.success.sel(optimizer="gamp", alpha=0.8).sum() == 0
        assert (ds.epochs.sel(optimizer="spectral") == 0).all()
