"""Full-scale science checks (``python -m pytest -m slow``; minutes, not run by default or in CI)."""

import pytest

from phaseret import runner
from phaseret.study import build_study


@pytest.mark.slow
def test_p_sgd_with_momentum_beats_gd_at_p_512(tmp_path):
    """SPEC 9's measured setting: p = 512, 20,000 epochs, 10 seeds, per-seed landscape. There
    P-SGD+Nesterov succeeded in 18 of 20 runs at alpha 2.5 and 3, GD in none."""
    import xarray as xr

    table = {
        "name": "p512", "model": "pr-quadratic", "p": 512, "alpha": [2.5, 3.0], "seeds": 10, "max_epochs": 20000,
        "optimizer": [
            {"algorithm": "gd", "lr": 0.005},
            {"algorithm": "p-sgd", "update": "nesterov", "momentum": 0.9, "lr": 0.005},
        ],
    }
    runner.run_study(build_study(table), tmp_path, workers=2, progress=False)
    with xr.open_dataset(tmp_path / "p512.nc") as ds:
        successes = ds.success.sum(["alpha", "seed"])
        assert int(successes.sel(optimizer="p-sgd+nesterov")) >= 14
        assert int(successes.sel(optimizer="gd")) <= 4
