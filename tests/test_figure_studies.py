"""What the figure studies of issue 12 need: budgets and seeds by p in one file, several folders
in one plot, the convergence table, matched Langevin's reference budget and noise-free tail,
the recorded gradient jumps, panels and the door's axis labels."""

import numpy as np
import pytest
import xarray as xr

from phaseret import folders, plots, run_figures, runner, tables
from phaseret.cli import main
from phaseret.study import build_study
from phaseret.training import train

BASE = {"name": "sizes", "model": "pr-quadratic", "alpha": [3.0], "n_test": 16, "optimizer": [{"algorithm": "gd"}]}


def test_budgets_and_seeds_vary_with_p_in_one_file():
    study = build_study(BASE | {"p": [16, 24], "seeds": {"16": 3, "24": 2}, "max_epochs": {"16": 7, "24": 9, "512": 5}})
    assert [(c.p, c.seed, c.config.max_epochs) for c in study.cells] == [
        (16, 0, 7), (16, 1, 7), (16, 2, 7), (24, 0, 9), (24, 1, 9)]
    assert study.seeds == 3 and study.grid[-1] == 9


@pytest.mark.parametrize("change, message", [
    ({"max_epochs": {"16": 7}}, "max_epochs: no value for p = 24"),
    ({"seeds": {"16": 2, "24": 0}}, "seeds: must be an integer >= 1"),
    ({"max_epochs": {"p16": 7, "24": 9}}, "max_epochs: a table by p takes the p values as keys"),
])
def test_a_table_by_p_that_misses_a_p_or_has_bad_keys_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        build_study(BASE | {"p": [16, 24], "max_epochs": 5} | change)


def tiny(name: str, p: int, model: str = "pr-quadratic", **keys) -> dict:
    return {"name": name, "model": model, "p": p, "alpha": [2.0, 4.0], "seeds": 2, "max_epochs": 30, "n_test": 16,
            "landscape": "shared", "optimizer": [{"algorithm": "gd"}, {"algorithm": "p-sgd"}],
            "plot": {"panels": ["optimizer"], "figures": ["success", "test_error"]}} | keys


def run(tmp_path, table: dict):
    out = tmp_path / table["name"]
    runner.run_study(build_study(table), out, progress=False)
    return out


def test_several_folders_are_drawn_together_with_p_as_a_dimension(tmp_path):
    small, large = run(tmp_path, tiny("small", 16)), run(tmp_path, tiny("large", 24))
    assert main(["plot", str(small), str(large), "--out", str(tmp_path / "both")]) == 0
    for name in ("success", "test_error"):
        assert (tmp_path / "both" / f"both_{name}.png").stat().st_size > 1000
    _, a = folders.open_folder(small)
    _, b = folders.open_folder(large)
    ds = folders.combine_datasets([(small, a), (large, b)])
    assert list(ds.p.values) == [16, 24]
    np.testing.assert_array_equal(ds.success.sel(p=16).values, a.success.values)
    np.testing.assert_array_equal(ds.test_error.sel(p=24).values, b.test_error.values)
    figure = plots.success_figure(ds, {"panels": ("optimizer",), "theory": None})
    labels = {text.get_text() for legend in figure.legends for text in legend.get_texts()}
    assert labels == {"p=16", "p=24"}  # a colour per p, a panel per optimizer


def test_folders_of_different_tasks_or_without_out_are_refused(tmp_path, capsys):
    pr, door = run(tmp_path, tiny("pr", 16)), run(tmp_path, tiny("door", 16, model="door-logistic"))
    assert main(["plot", str(pr), str(door), "--out", str(tmp_path / "both")]) == 2
    assert "model:" in capsys.readouterr().err
    assert main(["plot", str(pr), str(pr)]) == 2
    assert "--out:" in capsys.readouterr().err


def test_the_table_counts_successes_and_epochs_to_converge_of_a_hand_made_dataset(tmp_path):
    study = build_study({"name": "t", "p": 16, "alpha": [2.0], "seeds": 4, "max_epochs": 50,
                         "optimizer": [{"algorithm": "p-sgd", "update": "nesterov", "lr": 0.01}]})
    ds = xr.Dataset(
        {"success": (("optimizer", "alpha", "seed"), [[[1.0, 1.0, 0.0, 1.0]]]),
         "epochs": (("optimizer", "alpha", "seed"), [[[30.0, 10.0, 50.0, 20.0]]]),
         "status": (("optimizer", "alpha", "seed"),
                    np.array([[["converged-test", "converged-test", "max-epochs", "converged-train"]]], dtype=object))},
        coords={"optimizer": ["p-sgd+nesterov"], "alpha": [2.0], "seed": [0, 1, 2, 3], "lr": ("optimizer", [0.01])})
    [row] = tables.convergence_rows(study, ds)
    assert row == {"label": "p-sgd+nesterov", "p": 16, "hidden": 1, "lr": 0.01, "alpha": 2.0, "budget": 50,
                   "successes": 3, "runs": 4, "epochs_min": 10, "epochs_median": 20.0, "epochs_max": 30}
    assert "| p-sgd+nesterov | 16 | 1 | 0.01 | 2 | 50 | 3 / 4 | 10 / 20 / 30 |" in tables.markdown([row])
    with pytest.raises(ValueError, match="DIR: the dataset lacks epochs"):
        tables.convergence_rows(study, ds.drop_vars("epochs"))


def test_the_table_command_writes_csv_and_markdown(tmp_path, capsys):
    out = run(tmp_path, tiny("t", 16))
    assert main(["table", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| gd | 16 | 1 | 0.005 | 2 | 30 |" in printed
    lines = (out / "t_table.csv").read_text().splitlines()
    assert lines[0].startswith("label,p,hidden,lr,alpha,budget,successes,runs") and len(lines) == 5


LANGEVIN = {"alpha": 3.0, "p": 16, "n_test": 16, "algorithm": "langevin", "noise": "matched", "max_epochs": 40,
            "stop": {"train_error": 0.0, "test_error": 0.0, "grad_ema": 0.0}}


def test_matched_langevin_goes_on_without_noise_after_its_reference_budget():
    result = train(**LANGEVIN, reference={"algorithm": "p-sgd", "max_epochs": 10})
    sigma = result.trajectory.noise_sigma.to_series()
    # the reference took 2 steps per epoch for 10 epochs: 20 jumps (the first 0), one per Langevin epoch
    assert (sigma.loc[2:20] > 0).all() and (sigma.loc[21:] == 0).all() and np.isnan(sigma.loc[0])
    assert result.epochs == 40 and str(result.status) == "max-epochs"


def test_a_reference_budget_above_the_runs_own_is_refused():
    with pytest.raises(ValueError, match="reference.max_epochs: 50 is above the Langevin run's own budget"):
        train(**LANGEVIN, reference={"algorithm": "p-sgd", "max_epochs": 50})


def test_gradient_jumps_are_recorded_when_the_study_asks(tmp_path):
    table = tiny("jumps", 16, max_epochs=20, plot={"figures": ["gradient_jumps"]})
    with_jumps = run(tmp_path, table | {"record": {"gradient_jumps": True}})
    _, ds = folders.open_folder(with_jumps)
    jumps = ds.gradient_jump_trajectory
    assert float(jumps.sel(epoch=1, optimizer="gd").max()) == 0.0  # GD's first step has no previous gradient
    assert bool((jumps.sel(epoch=2) > 0).all()) and bool(jumps.sel(epoch=0).isnull().all())
    assert float(ds.noise_sigma_trajectory.sel(epoch=5).max()) == 0.0  # no Langevin noise here
    assert folders.plot_folder(with_jumps)
    without = run(tmp_path, table | {"name": "plain"})
    _, ds = folders.open_folder(without)
    assert bool(ds.gradient_jump_trajectory.isnull().all())
    with pytest.raises(ValueError, match="gradient_jumps needs a study run with"):
        folders.plot_folder(without)


def test_panels_follow_the_plot_table_and_skip_what_the_study_does_not_run(tmp_path):
    table = tiny("panels", 16, optimizer=[{"algorithm": "p-sgd", "update": "heavy-ball", "lr": [0.002, 0.005]},
                                          {"algorithm": "p-sgd", "lr": [0.005]}],
                 plot={"panels": ["update"], "figures": ["success", "diverged"]})
    _, ds = folders.open_folder(run(tmp_path, table))
    figure = plots.success_figure(ds, folders.load_folder(tmp_path / "panels").plot)
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["update=heavy-ball", "update=plain"]
    assert [len(ax.lines) > 0 for ax in visible] == [True, True]
    labels = {text.get_text() for legend in figure.legends for text in legend.get_texts()}
    assert labels == {"lr=0.002", "lr=0.005"}  # the update is the panel: a line is named by its lr
    colour = {ax.get_title(): {bars.get_label(): bars.lines[0].get_color() for bars in ax.containers} for ax in visible}
    assert colour["update=heavy-ball"]["lr=0.005"] == colour["update=plain"]["lr=0.005"]


def test_line_styles_stay_distinct_past_ten_lines():
    found = [((), f"line {i}", None) for i in range(14)]
    styles = plots.line_styles(found)
    assert len({tuple(sorted((k, str(v)) for k, v in s.items())) for s in styles.values()}) == 14


def test_door_errors_are_labelled_as_misclassified_fractions(tmp_path):
    _, door = folders.open_folder(run(tmp_path, tiny("door", 16, model="door-logistic")))
    assert "fraction misclassified" in plots.error_label(door, "test_error")
    assert "population error" not in plots.test_error_figure(door).axes[0].get_ylabel()
    _, pr = folders.open_folder(run(tmp_path, tiny("pr", 16)))
    assert "population error" in plots.error_label(pr, "test_error")


def test_the_dynamics_figure_draws_single_runs_that_end_where_they_stopped(tmp_path):
    table = tiny("dyn", 16, hidden=[1, 2], alpha=[4.0], max_epochs=40, seeds=2,
                 optimizer=[{"algorithm": "p-sgd", "lr": 0.01, "lr_scaling": "hidden"}],
                 plot={"figures": ["dynamics"], "seeds": [1]})
    out = run(tmp_path, table)
    _, ds = folders.open_folder(out)
    figure = run_figures.dynamics_figure(ds, folders.load_folder(out).plot)
    [ax] = [ax for ax in figure.axes if ax.get_visible()]
    assert ax.get_title() == "p-sgd, alpha=4"
    for line, d in zip(ax.lines, (1, 2)):
        assert line.get_label() == f"hidden={d}"
        at = {"optimizer": "p-sgd", "alpha": 4.0, "seed": 1, "hidden": d}
        run_ = ds.test_error_trajectory.sel(at).dropna("epoch")
        epochs, final = int(ds.epochs.sel(at)), float(ds.test_error.sel(at))
        assert line.get_xdata()[-1] == epochs and line.get_ydata()[-1] == final  # ends at the run's own stop
        np.testing.assert_array_equal(line.get_ydata()[: run_.size - 1], run_.values[1:])


def test_plot_seeds_beyond_the_runs_are_refused():
    with pytest.raises(ValueError, match=r"plot.seeds: 2 is not a run of this study \(it runs seeds 0 .. 1\)"):
        build_study(tiny("dyn", 16, plot={"figures": ["dynamics"], "seeds": [2]}))


def test_unit_overlaps_always_and_final_weights_when_asked_are_stored(tmp_path):
    table = tiny("units", 16, hidden=[1, 2], alpha=[4.0], max_epochs=20, optimizer=[{"algorithm": "gd"}])
    _, plain = folders.open_folder(run(tmp_path, table))
    _, kept = folders.open_folder(run(tmp_path, table | {"name": "kept", "record": {"weights": True}}))
    assert "weights" not in plain and plain.unit_overlaps.sizes["unit"] == 2
    assert bool(plain.unit_overlaps.sel(hidden=1, unit=1).isnull().all())  # d = 1 has no second unit
    xr.testing.assert_identical(plain.unit_overlaps, kept.unit_overlaps)  # recording does not change training
    W = kept.weights.sel(optimizer="gd", hidden=2, alpha=4.0, seed=0).values
    overlaps = np.abs(W[:, :16] @ _teacher(16)) / (np.linalg.norm(W, axis=1) * np.linalg.norm(_teacher(16)))
    np.testing.assert_allclose(overlaps, kept.unit_overlaps.sel(optimizer="gd", hidden=2, alpha=4.0, seed=0), rtol=1e-12)
    np.testing.assert_allclose(kept.overlap, kept.unit_overlaps.max("unit"), rtol=1e-12)


def _teacher(p: int) -> np.ndarray:
    from phaseret.data import teacher

    return teacher("phase-retrieval", p, study_seed=0, kind="sphere")


def test_an_optimizer_keeps_its_name_across_model_panels(tmp_path):
    optimizers = [{"label": f"{algorithm} ({model})", "model": f"door-{model}", "algorithm": algorithm}
                  for model in ("square", "logistic") for algorithm in ("gd", "p-sgd")]
    table = tiny("models", 16, optimizer=optimizers, plot={"panels": ["model"], "figures": ["errors"]})
    _, ds = folders.open_folder(run(tmp_path, table))
    figure = plots.errors_figure(ds, folders.load_folder(tmp_path / "models").plot)
    labels = {text.get_text() for legend in figure.legends for text in legend.get_texts()}
    assert labels == {"gd", "p-sgd"}
    assert [ax.get_title() for ax in figure.axes[:2]] == ["door-square", "door-logistic"]
