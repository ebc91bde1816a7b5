"""DMFT curves in a study (:mod:`phaseret.dmft_curves`): the [dmft] table, dmft.nc, the figure."""

import json

import numpy as np
import pytest
import xarray as xr

from phaseret import dmft, run_figures
from phaseret.folders import plot_folder
from phaseret.runner import run_study
from phaseret.study import build_study

STUDY = {"name": "dm", "model": "pr-quadratic", "p": 256, "alpha": [3.0, 5.0], "seeds": 2, "max_epochs": 6,
         "init": "overlap", "init_overlap": 0.2, "stop": {"test_error": 0.0},
         "optimizer": [{"algorithm": "gd", "lr": 0.02}, {"algorithm": "p-sgd", "update": "heavy-ball", "lr": 0.02},
                       {"algorithm": "sgd", "update": "adam", "lr": 0.001}],
         "dmft": {"paths": 1024, "epochs": 5}, "plot": {"figures": ["dmft"]}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"init": "random", "init_overlap": None}, r"^dmft\.optimizers: .*init = 'random'"),
        ({"dmft": {"optimizers": ["sgd+adam"]}}, r"^dmft\.optimizers: the DMFT does not cover 'sgd\+adam': update"),
        ({"dmft": {"optimizers": ["lbfgs"]}}, r"^dmft\.optimizers: 'lbfgs' is not an optimizer"),
        ({"dmft": {"paths": 0}}, r"^dmft\.paths: "),
        ({"dmft": {"colour": 1}}, r"^dmft\.colour: unknown key"),
        ({"dmft": {"epochs": 0}}, r"^dmft\.epochs: "),
        ({"dmft": {"memory": -3}}, r"^dmft\.memory: "),
        ({"dmft": {"replicates": 0}}, r"^dmft\.replicates: "),
        ({"dmft": {"replicates": 1.5}}, r"^dmft\.replicates: "),
        ({"dmft": {"smoothing": 0}}, r"^dmft\.smoothing: "),
        ({"dmft": {"smoothing": "wide"}}, r"^dmft\.smoothing: "),
        ({"dmft": {"memory": 10, "refresh": 0}}, r"^dmft\.refresh: "),
        ({"dmft": {"refresh": 5}}, r"^dmft\.refresh: needs dmft\.memory"),
        ({"dmft": {"memory": 10, "refresh": 2, "refresh_growth": -1}}, r"^dmft\.refresh_growth: must be"),
        ({"dmft": {"memory": 10, "gd": {"refresh_growth": 0.1}}},
         r'^dmft\."gd"\.refresh_growth: needs dmft\."gd"\.refresh'),
        ({"dmft": {"gd": {"replicates": 0}}}, r'^dmft\."gd"\.replicates: '),
        ({"dmft": {"gd": {"optimizers": ["gd"]}}}, r'^dmft\."gd"\.optimizers: unknown key'),
        ({"dmft": {"gd": {"memory": 10}, "refresh": 2}}, r'^dmft\.refresh: needs dmft\.memory'),
        ({"dmft": {"gd": 4}}, r'^dmft\."gd": must be a table'),
        ({"dmft": {"sgd+adam": {"paths": 64}}}, r'^dmft\."sgd\+adam": .* has no DMFT here'),
        ({"dmft": {"lbfgs": {"paths": 64}}}, r"^dmft\.lbfgs: unknown key; .*sub-tables named by optimizer labels"),
        ({"hidden": 2, "dmft": {"optimizers": ["gd"]}}, r"^dmft\.optimizers: .*hidden = 2"),
        ({"dmft": {"teacher_estimate": "best"}}, r"^dmft\.teacher_estimate: one of stein, average"),
        ({"dmft": {"gd": {"teacher_estimate": "difference"}}}, r'^dmft\."gd"\.teacher_estimate: \'difference\' takes'),
        ({"model": "door-square", "dmft": {"teacher_estimate": "stein"}}, r"^dmft\.teacher_estimate: 'stein' needs"),
        ({"model": "door-square", "dmft": {"gd": {"teacher_estimate": "stein"}}},
         r'^dmft\."gd"\.teacher_estimate: \'stein\' needs'),
        ({"dmft": None}, r"^plot\.figures: the dmft figure draws"),
    ],
)
def test_a_dmft_table_the_equations_do_not_cover_is_refused_naming_the_key(change, message):
    table = {k: v for k, v in (STUDY | change).items() if v is not None}
    with pytest.raises(ValueError, match=message):
        build_study(table)


def test_a_study_writes_the_dmft_beside_its_runs_and_draws_them_together(tmp_path):
    study = build_study(STUDY)
    assert study.dmft["optimizers"] == ("gd", "p-sgd+heavy-ball")  # Adam is not covered: left out by default
    path = run_study(study, tmp_path, progress=False)
    ds = xr.load_dataset(path)
    direct = dmft.solve("pr-quadratic", alpha=5.0, lr=0.02, epochs=5, overlap0=0.2, paths=1024)
    theory = ds.dmft_overlap_trajectory.sel(optimizer="gd", alpha=5.0)
    np.testing.assert_allclose(theory.sel(epoch=direct.epoch), direct.overlap_trajectory)
    assert np.isnan(theory.sel(epoch=6))  # past [dmft] epochs, within the budget of 6
    assert ds.dmft_overlap_trajectory.sel(optimizer="sgd+adam").isnull().all()
    assert ds.dmft_test_error_trajectory.attrs["long_name"]
    # The runs start where the DMFT starts, and both rise.
    assert np.allclose(ds.overlap_trajectory.isel(epoch=0), 0.2)
    assert (ds.dmft_overlap_trajectory.sel(optimizer="gd", epoch=5) > 0.3).all()
    files = plot_folder(tmp_path)
    assert {f.name for f in files} == {"dm_dmft.png", "dm_dmft.pdf"}


def test_dmft_replicates_give_the_study_the_theory_s_own_error_bar(tmp_path):
    """``[dmft] replicates = 2``: the merged curves are ``solve(replicates=2)``'s mean, and its
    standard error over the two (zero at the common start, positive after) comes with them."""
    study = build_study(STUDY | {"alpha": 5.0, "dmft": {"paths": 1024, "epochs": 5, "replicates": 2,
                                                          "optimizers": ["gd"]}})
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False))
    direct = dmft.solve("pr-quadratic", alpha=5.0, lr=0.02, epochs=5, overlap0=0.2, paths=1024, replicates=2)
    merged = ds.sel(optimizer="gd", alpha=5.0, epoch=direct.epoch)
    np.testing.assert_allclose(merged.dmft_overlap_trajectory, direct.overlap_trajectory)
    np.testing.assert_allclose(merged.dmft_overlap_trajectory_stderr, direct.overlap_trajectory_stderr)
    assert merged.dmft_overlap_trajectory_stderr.sel(epoch=0) == 0
    assert (merged.dmft_overlap_trajectory_stderr.sel(epoch=[3, 4, 5]) > 0).all()
    assert {f.name for f in plot_folder(tmp_path)} == {"dm_dmft.png", "dm_dmft.pdf"}


def test_an_optimizer_s_own_dmft_table_sets_its_solutions_and_leaves_the_others_alone(tmp_path):
    """``[dmft."p-sgd+heavy-ball"] replicates = 2, epochs = 3``: that optimizer's curve is
    ``solve(replicates=2, epochs=3)``'s, with its error bar; GD keeps the table's one solution
    over 5 epochs."""
    table = {"paths": 1024, "epochs": 5, "p-sgd+heavy-ball": {"replicates": 2, "epochs": 3}}
    study = build_study(STUDY | {"alpha": 5.0, "dmft": table})
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False)).sel(alpha=5.0)
    keys = dict(alpha=5.0, lr=0.02, overlap0=0.2, paths=1024)
    gd = dmft.solve("pr-quadratic", epochs=5, **keys)
    heavy = dmft.solve("pr-quadratic", epochs=3, algorithm="p-sgd", update="heavy-ball", replicates=2, **keys)
    np.testing.assert_allclose(ds.dmft_overlap_trajectory.sel(optimizer="gd", epoch=gd.epoch), gd.overlap_trajectory)
    assert ds.dmft_overlap_trajectory_stderr.sel(optimizer="gd").isnull().all()
    merged = ds.sel(optimizer="p-sgd+heavy-ball")
    np.testing.assert_allclose(merged.dmft_overlap_trajectory.sel(epoch=heavy.epoch), heavy.overlap_trajectory)
    np.testing.assert_allclose(merged.dmft_overlap_trajectory_stderr.sel(epoch=heavy.epoch),
                               heavy.overlap_trajectory_stderr)
    assert merged.dmft_overlap_trajectory.sel(epoch=[4, 5]).isnull().all()  # its own horizon, 3
    np.testing.assert_allclose(merged.dmft_overlap_by_replicate.sel(epoch=heavy.epoch).transpose("dmft_replicate", ...),
                               heavy.overlap_by_replicate)
    alone = ds.dmft_overlap_by_replicate.sel(optimizer="gd", epoch=gd.epoch)  # one replicate, NaN for a second
    np.testing.assert_allclose(alone.sel(dmft_replicate=0), gd.overlap_trajectory)
    assert alone.sel(dmft_replicate=1).isnull().all()
    solved = {entry[0]: entry[2] for entry in json.loads(xr.load_dataset(tmp_path / "dmft.nc").attrs["solutions"])}
    assert (solved["gd"]["replicates"], solved["gd"]["epochs"]) == (1, 5)
    assert (solved["p-sgd+heavy-ball"]["replicates"], solved["p-sgd+heavy-ball"]["epochs"]) == (2, 3)


def test_a_stored_solution_without_a_variable_added_since_is_reused_with_it_missing(tmp_path, monkeypatch):
    """A ``dmft.nc`` written before the loss's and test error's standard errors and the replicates'
    own values existed, its single replicates gone: its solutions are reused, not solved again, with
    those NaN and the rest as stored."""
    study = build_study(STUDY | {"alpha": 5.0, "dmft": {"paths": 1024, "epochs": 4, "replicates": 2,
                                                          "optimizers": ["gd"]}})
    run_study(study, tmp_path, progress=False)
    added = ["train_loss_trajectory_stderr", "test_error_trajectory_stderr", *dmft.BY_REPLICATE]
    written = xr.load_dataset(tmp_path / "dmft.nc")
    assert (written[added].sel(epoch=[2, 3, 4]) > 0).all().to_array().all()
    written.drop_vars(added + ["replicate"]).to_netcdf(tmp_path / "dmft.nc")
    for single in (tmp_path / "cells").glob("dmft__*.nc"):
        single.unlink()
    monkeypatch.setattr(dmft, "solve", lambda **keys: pytest.fail("a stored solution was solved again"))
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False)).sel(optimizer="gd", alpha=5.0)
    assert all(ds[f"dmft_{name}"].isnull().all() for name in added)
    xr.testing.assert_equal(ds.dmft_overlap_trajectory_stderr.drop_vars(ds.dmft_overlap_trajectory_stderr.coords),
                            written.overlap_trajectory_stderr.sel(optimizer="gd", alpha=5.0)
                            .drop_vars(written.overlap_trajectory_stderr.coords).rename(None))


def test_a_stored_solution_without_the_replicates_own_values_is_put_together_from_its_kept_replicates(
        tmp_path, monkeypatch):
    """A ``dmft.nc`` that kept each replicate's overlap but not its training loss or test error,
    its replicates still beside the cells: the solution is put together again from them, nothing
    solved, with every by-replicate variable as a fresh solution has it."""
    study = build_study(STUDY | {"alpha": 5.0, "dmft": {"paths": 1024, "epochs": 4, "replicates": 2,
                                                          "optimizers": ["gd"]}})
    run_study(study, tmp_path, progress=False)
    written = xr.load_dataset(tmp_path / "dmft.nc")
    written.drop_vars(["train_loss_by_replicate", "test_error_by_replicate"]).to_netcdf(tmp_path / "dmft.nc")
    monkeypatch.setattr(dmft, "_forward", lambda *args: pytest.fail("a stored replicate was solved again"))
    run_study(study, tmp_path, progress=False)
    xr.testing.assert_identical(xr.load_dataset(tmp_path / "dmft.nc"), written)
    assert (written.test_error_by_replicate.sel(epoch=[2, 3, 4]) > 0).all()


def test_the_momentum_gain_pairs_runs_by_seed_and_dmft_solutions_by_replicate(tmp_path):
    """GD and GD + heavy-ball (the twin: same algorithm and step size, plain update): the figure's
    runs line is the mean over seeds of heavy-ball's overlap minus GD's, the DMFT's the mean over
    replicates of the replicates' differences, its band +- their standard error."""
    table = STUDY | {"alpha": 5.0, "seeds": 3, "plot": {"figures": ["momentum_gain"]},
                     "optimizer": [{"algorithm": "gd", "lr": 0.02},
                                   {"algorithm": "gd", "update": "heavy-ball", "momentum": 0.5, "lr": 0.02}],
                     "dmft": {"paths": 1024, "epochs": 5, "replicates": 3}}
    ds = xr.load_dataset(run_study(build_study(table), tmp_path, progress=False))
    assert {f.name for f in plot_folder(tmp_path)} == {"dm_momentum_gain.png", "dm_momentum_gain.pdf"}
    ax = run_figures.momentum_gain_figure(ds).axes[0]
    assert ax.get_title() == "gd+heavy-ball - gd"
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    runs = ds.overlap_trajectory.sel(alpha=5.0, optimizer="gd+heavy-ball") - ds.overlap_trajectory.sel(alpha=5.0,
                                                                                                     optimizer="gd")
    np.testing.assert_allclose(lines["alpha=5, runs (paired, 3 seeds)"], runs.mean("seed"))
    each = ds.dmft_overlap_by_replicate.sel(alpha=5.0, epoch=range(6))
    gains = (each.sel(optimizer="gd+heavy-ball") - each.sel(optimizer="gd")).transpose("dmft_replicate", "epoch").values
    np.testing.assert_allclose(lines["alpha=5, DMFT (paired, 3 replicates)"][:6], gains.mean(0))
    assert np.abs(gains[:, 1:]).min() > 0  # heavy-ball's gain is not zero, so the test tells pairs apart
    band = next(c for c in ax.collections if c.get_label() == "alpha=5, DMFT +- its standard error")
    edges = band.get_paths()[0].vertices[:, 1]
    error = gains.std(0, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([edges.max(), edges.min()], [(gains.mean(0) + error).max(), (gains.mean(0) - error).min()])
    with pytest.raises(ValueError, match="^plot.figures: momentum_gain needs"):
        run_figures.momentum_gain_figure(ds.sel(optimizer=["gd"]))


def test_a_study_over_several_p_draws_each_p_s_runs_beside_the_dmft(tmp_path):
    """The dmft figure of a study over p = 128 and 256: a runs line per p, each the mean over that
    p's seeds (not over all of them), and the DMFT once, in black."""
    study = build_study(STUDY | {"p": [128, 256], "alpha": 5.0, "dmft": {"paths": 1024, "epochs": 5,
                                                                          "optimizers": ["gd"]}})
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False))
    figure = run_figures.dmft_figure(ds)
    overlap = figure.axes[0]
    drawn = {line.get_label(): line for line in overlap.get_lines()}
    for p in (128, 256):
        line = drawn[f"alpha=5, p={p}, runs (mean of 2)"]
        np.testing.assert_allclose(line.get_ydata(), ds.overlap_trajectory.sel(optimizer="gd", alpha=5.0, p=p)
                                   .mean("seed").values)
    assert drawn["alpha=5, DMFT"].get_color() == "black"
    assert len(drawn) == 3


def test_a_rerun_reuses_the_stored_solutions_and_solves_only_new_ones(tmp_path, monkeypatch):
    run_study(build_study(STUDY), tmp_path, progress=False)
    first = xr.load_dataset(tmp_path / "dmft.nc")
    solved = []
    original = dmft.solve
    monkeypatch.setattr(dmft, "solve", lambda **keys: solved.append(keys["alpha"]) or original(**keys))
    run_study(build_study(STUDY | {"alpha": [3.0, 5.0, 6.0]}), tmp_path, progress=False)
    assert sorted(solved) == [6.0, 6.0]  # gd and p-sgd+heavy-ball at the new alpha only
    again = xr.load_dataset(tmp_path / "dmft.nc")
    xr.testing.assert_equal(again.sel(alpha=[3.0, 5.0]).overlap_trajectory, first.overlap_trajectory)
    # Solutions of another solver revision are solved again, all of them.
    monkeypatch.setattr(dmft, "REVISION", dmft.REVISION + 1)
    solved.clear()
    run_study(build_study(STUDY | {"alpha": [3.0, 5.0, 6.0]}), tmp_path, progress=False)
    assert len(solved) == 6
    assert xr.load_dataset(tmp_path / "dmft.nc").attrs["revision"] == dmft.REVISION
    # Asking for smoothing changes the settings: solved again, with it; the same table again reuses them.
    widths = []
    monkeypatch.setattr(dmft, "solve", lambda **keys: widths.append(keys["smoothing"]) or original(**keys))
    smoothed = STUDY | {"alpha": [3.0, 5.0, 6.0], "dmft": STUDY["dmft"] | {"smoothing": 0.05}}
    run_study(build_study(smoothed), tmp_path, progress=False)
    assert widths == [0.05] * 6
    run_study(build_study(smoothed), tmp_path, progress=False)
    assert widths == [0.05] * 6
    # So does refresh (with a window), and only a table that sets it passes it to the solver.
    refreshed = smoothed | {"dmft": smoothed["dmft"] | {"memory": 3, "refresh": 2}}
    run_study(build_study(refreshed), tmp_path, progress=False)
    assert widths == [0.05] * 12
    assert all(settings["refresh"] == 2 for _, _, settings in json.loads(xr.load_dataset(tmp_path / "dmft.nc")
                                                                         .attrs["solutions"]))
    # An optimizer's own teacher_estimate solves that optimizer's solutions again, alone, with it.
    estimates = []
    monkeypatch.setattr(dmft, "solve",
                        lambda **keys: estimates.append(keys.get("teacher_estimate")) or original(**keys))
    run_study(build_study(refreshed | {"dmft": refreshed["dmft"] | {"gd": {"teacher_estimate": "stein"}}}), tmp_path,
              progress=False)
    assert estimates == ["stein"] * 3


def test_a_run_stopped_during_the_dmft_keeps_the_solutions_finished_before(tmp_path, monkeypatch):
    """The file is written after each solution: a stop in the third of four keeps the first two,
    and the rerun solves only the other two."""
    original = dmft.solve
    solved = []

    def stopped_in_the_third(**keys):
        if len(solved) == 2:
            raise KeyboardInterrupt
        solved.append((keys["algorithm"], keys["alpha"]))
        return original(**keys)

    monkeypatch.setattr(dmft, "solve", stopped_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_study(build_study(STUDY), tmp_path, progress=False)
    kept = xr.load_dataset(tmp_path / "dmft.nc")
    assert [(entry[2]["algorithm"], entry[1]) for entry in json.loads(kept.attrs["solutions"])] == solved
    assert np.isfinite(kept.overlap_trajectory.sel(optimizer="gd").isel(epoch=slice(0, 5))).all()
    assert np.isnan(kept.overlap_trajectory.sel(optimizer="p-sgd+heavy-ball")).all()
    rerun = []
    monkeypatch.setattr(dmft, "solve", lambda **keys: rerun.append((keys["algorithm"], keys["alpha"])) or original(**keys))
    run_study(build_study(STUDY), tmp_path, progress=False)
    assert rerun == [("p-sgd", 3.0), ("p-sgd", 5.0)]
    final = xr.load_dataset(tmp_path / "dmft.nc")
    xr.testing.assert_equal(final.sel(optimizer="gd").overlap_trajectory, kept.sel(optimizer="gd").overlap_trajectory)
    assert len(json.loads(final.attrs["solutions"])) == 4


def test_an_overlap_start_has_that_overlap_on_every_unit_and_its_key_is_checked():
    from phaseret.config import validate
    from phaseret.data import make_dataset
    from phaseret.starts import starting_point

    config = validate(alpha=2.0, p=300, hidden=3, init="overlap", init_overlap=-0.3)
    data = make_dataset("phase-retrieval", 300, 2.0, 0)
    W0 = starting_point(config, data, "phase-retrieval")
    np.testing.assert_allclose(W0 @ data.w_star / 300, -0.3)
    np.testing.assert_allclose(np.linalg.norm(W0, axis=1), np.sqrt(300))
    assert len({round(float(v), 6) for v in W0[:, 0]}) == 3  # the units keep their own directions
    for keys in ({"init": "overlap"}, {"init_overlap": 0.2}, {"init": "overlap", "init_overlap": 1.0}):
        with pytest.raises(ValueError, match="^init_overlap: "):
            validate(alpha=2.0, **keys)


def test_a_stop_between_replicates_keeps_those_solved_and_more_replicates_add_to_them(tmp_path, monkeypatch):
    """Each replicate is stored beside the cells as it finishes: a stop in GD's second of three
    keeps the first, the rerun solves the other two, and raising ``replicates`` to 4 solves only
    the fourth; the curves are ``solve(replicates=...)``'s throughout. Another solver revision's
    replicates are solved again."""
    table = {"paths": 512, "epochs": 4, "replicates": 3, "optimizers": ["gd"]}
    study = build_study(STUDY | {"alpha": 5.0, "dmft": table})
    original, seeds = dmft._forward, []

    def forward(settings, steps):
        if len(seeds) == 1 and stop:
            raise KeyboardInterrupt
        seeds.append(settings["seed"])
        return original(settings, steps)

    monkeypatch.setattr(dmft, "_forward", forward)
    stop = True
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path, progress=False)
    assert seeds == [0] and (tmp_path / "cells" / "dmft__gd_a5_s0.nc").exists()
    stop = False
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False)).sel(optimizer="gd", alpha=5.0)
    assert seeds == [0, 1, 2]
    keys = dict(alpha=5.0, lr=0.02, epochs=4, overlap0=0.2, paths=512)
    three = dmft.solve("pr-quadratic", replicates=3, **keys)
    np.testing.assert_array_equal(ds.dmft_overlap_trajectory.sel(epoch=three.epoch), three.overlap_trajectory)
    np.testing.assert_array_equal(ds.dmft_overlap_trajectory_stderr.sel(epoch=three.epoch),
                                  three.overlap_trajectory_stderr)
    seeds.clear()
    four = build_study(STUDY | {"alpha": 5.0, "dmft": table | {"replicates": 4}})
    ds = xr.load_dataset(run_study(four, tmp_path, progress=False)).sel(optimizer="gd", alpha=5.0)
    assert seeds == [3]
    expected = dmft.solve("pr-quadratic", replicates=4, **keys)
    np.testing.assert_array_equal(ds.dmft_overlap_trajectory.sel(epoch=expected.epoch), expected.overlap_trajectory)
    monkeypatch.setattr(dmft, "REVISION", dmft.REVISION + 1)
    seeds.clear()
    run_study(four, tmp_path, progress=False)
    assert seeds == [0, 1, 2, 3]
