"""Figures (:mod:`phaseret.plots`): drawn from a results folder, labelled from the CF attributes."""

import numpy as np
from tiny_study import open_result, write_study

from phaseret import runner
from phaseret.cli import main
from phaseret.study import load_study


def test_plots_are_drawn_with_labels_from_the_attributes(tmp_path):
    out = tmp_path / "out"
    runner.run_study(load_study(write_study(tmp_path)), out, progress=False)
    assert main(["plot", str(out)]) == 0
    for stem in ("success", "test_error", "trajectories"):
        for fmt in ("png", "pdf"):
            assert (out / f"tiny_{stem}.{fmt}").stat().st_size > 1000
    from phaseret import plots

    ds = open_result(out)
    figure = plots.test_error_figure(ds)
    assert figure.axes[0].get_xlabel() == ds.alpha.attrs["long_name"]
    assert "test error (population error)" in figure.axes[0].get_ylabel().replace("\n", " ")


def test_wilson_interval():
    from phaseret.plots import wilson_interval

    low, high = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(low, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(high, [0.2775, 0.7634, 1.0], atol=1e-4)
