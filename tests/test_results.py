"""The results on disk (:mod:`phaseret.results`): the combined dataset's layout and attributes."""

import numpy as np
import pytest
from tiny_study import open_result, write_study

from phaseret import runner, training
from phaseret.study import load_study


def test_combined_dataset_layout(tmp_path):
    path = runner.run_study(load_study(write_study(tmp_path)), tmp_path / "out", progress=False)
    ds = open_result(tmp_path / "out")
    assert path == tmp_path / "out" / "tiny.nc"
    assert dict(ds.sizes) == {"optimizer": 2, "alpha": 3, "seed": 2, "epoch": len(training.epoch_grid(300)), "unit": 1}
    assert list(ds.optimizer.values) == ["gd", "p-sgd+nesterov"]
    assert list(ds.algorithm.values) == ["gd", "p-sgd"] and list(ds["update"].values) == ["plain", "nesterov"]
    assert ds.lr.dims == ("optimizer",) and ds.momentum.dtype == np.float64
    assert ds.alpha.dtype == np.float64 and ds.seed.dtype == np.int64 and ds.epoch.dtype == np.int64
    assert int(ds.p) == 24 and int(ds.hidden) == 1  # not varied: scalar coordinates
    for name in ("train_error", "test_error", "train_loss", "overlap", "epochs", "success", "wall_seconds",
                 "test_error_sampled", "grad_ema", "grad_ema_raw"):
        assert ds[name].dims == ("optimizer", "alpha", "seed") and ds[name].dtype == np.float64
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"]
    assert ds.test_error_trajectory.dims == ("optimizer", "alpha", "seed", "epoch")
    # Cells the study does not run are NaN: GD has no alpha 4, P-SGD no alpha 6.
    assert ds.test_error.sel(optimizer="gd", alpha=4.0).isnull().all()
    assert ds.test_error.sel(optimizer="p-sgd+nesterov", alpha=6.0).isnull().all()
    assert (ds.status.sel(optimizer="gd", alpha=4.0) == "").all()
    assert ds.test_error.notnull().sum() == 8
    assert ds.status.sel(optimizer="gd", alpha=6.0, seed=0).item() in ("converged-test", "max-epochs")
    for name, variable in ds.variables.items():
        assert variable.attrs.get("long_name"), name
        if variable.dtype.kind in "fi":
            assert variable.attrs.get("units"), name
    for name in ("title", "source", "history", "study"):
        assert ds.attrs[name]
    assert ds.attrs["source"].startswith("phaseret 0.")
    # Each cell agrees with a direct run of the same keys (alone instead of in a replica batch:
    # equal to rounding, SPEC 7).
    direct = training.train(p=24, alpha=6.0, seed=1, max_epochs=300)
    assert float(ds.test_error.sel(optimizer="gd", alpha=6.0, seed=1)) == pytest.approx(direct.test_error, rel=1e-9)
    assert ds.status.sel(optimizer="gd", alpha=6.0, seed=1).item() == direct.status
