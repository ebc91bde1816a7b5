"""The DMFT against a study's runs (:mod:`phaseret.dmft_agreement`, ``phaseret compare``)."""

import json
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr

from phaseret import dmft_agreement, paired
from phaseret.cli import main
from phaseret.runner import run_study
from phaseret.study import build_study

STUDY = {"name": "agree", "model": "pr-quadratic", "p": 256, "alpha": 5.0, "seeds": 3, "max_epochs": 6,
         "init": "overlap", "init_overlap": 0.2,
         "optimizer": [{"algorithm": "gd", "lr": 0.02},
                       {"algorithm": "gd", "update": "heavy-ball", "momentum": 0.5, "lr": 0.02}],
         "dmft": {"paths": 1024, "epochs": 5, "replicates": 3}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("agree")
    run_study(build_study(STUDY), out, progress=False)
    return out


@pytest.fixture
def ds(folder):
    return xr.load_dataset(folder / "agree.nc")


def _runs(ds, label):
    return ds.overlap_trajectory.sel(optimizer=label, alpha=5.0).transpose("seed", "epoch").values


def test_the_largest_gap_is_counted_in_standard_errors_of_the_difference(ds):
    """GD's DMFT moved to 4 standard errors of the difference above the runs at epoch 3: the table
    names 4 at epoch 3, its size in overlap units, and the epochs the DMFT lies above."""
    runs = _runs(ds, "gd")
    error = np.hypot(runs.std(0, ddof=1) / np.sqrt(3), ds.dmft_overlap_trajectory_stderr.sel(optimizer="gd").values[0])
    moved = runs.mean(0)[3] + 4 * error[3]
    ds.dmft_overlap_trajectory.loc[dict(optimizer="gd", epoch=3)] = moved
    line = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, p=256, quantity="overlap")
    assert float(line.largest_gap_in_stderr) == pytest.approx(4.0)
    assert int(line.epoch_of_largest_gap_in_stderr) == 3
    assert float(line.largest_gap) == pytest.approx(4 * error[3])
    theory = ds.dmft_overlap_trajectory.sel(optimizer="gd").values[0]
    assert int(line.epochs_compared) == 6 and int(line.last_epoch) == 5  # epochs 0-5: the DMFT's horizon
    assert int(line.epochs_above) == int((theory - runs.mean(0) >= 1e-9).sum())  # not the shared start
    assert int(line.runs) == 3 and int(line.replicates) == 3
    assert float(line.late_mean_gap) == pytest.approx((theory - runs.mean(0))[3:6].mean())  # last half of 0-5


def test_a_stopped_run_holds_its_final_value(ds):
    """A run that stopped after epoch 2 counts with its final overlap at the epochs after, not
    left out: the gap at epoch 5 follows that final value."""
    ds.overlap_trajectory.loc[dict(optimizer="gd", seed=0, epoch=[3, 4, 5])] = np.nan
    ds.overlap.loc[dict(optimizer="gd", seed=0)] = 0.9
    runs = _runs(ds, "gd")
    runs[0, 3:] = 0.9
    theory = ds.dmft_overlap_trajectory.sel(optimizer="gd").values[0]
    line = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, p=256, quantity="overlap")
    assert float(line.largest_gap) == pytest.approx(np.abs(theory[:6] - runs.mean(0)[:6]).max())


def test_momentum_s_gain_is_paired_seed_by_seed_and_replicate_by_replicate(ds):
    """The runs' gain and its error are those of the seeds' differences (not of two independent
    means), the DMFT's those of the replicates' differences."""
    result = dmft_agreement.agreement(ds).sel(pair="gd+heavy-ball - gd", alpha=5.0, p=256)
    gains = _runs(ds, "gd+heavy-ball")[:, 5] - _runs(ds, "gd")[:, 5]
    assert int(result.gain_epoch) == 5
    assert float(result.runs_gain) == pytest.approx(gains.mean())
    assert float(result.runs_gain_stderr) == pytest.approx(gains.std(ddof=1) / np.sqrt(3))
    each = ds.dmft_overlap_by_replicate.sel(alpha=5.0, epoch=5)
    theory = (each.sel(optimizer="gd+heavy-ball") - each.sel(optimizer="gd")).values
    assert float(result.dmft_gain) == pytest.approx(theory.mean())
    assert float(result.dmft_gain_stderr) == pytest.approx(theory.std(ddof=1) / np.sqrt(3))
    unpaired = np.hypot(*(ds.dmft_overlap_trajectory_stderr.sel(optimizer=o, alpha=5.0, epoch=5).item()
                          for o in ("gd", "gd+heavy-ball")))
    assert abs(float(result.dmft_gain_stderr) - unpaired) > 0.1 * unpaired  # pairing changes the error


def test_the_gain_s_rise_subtracts_each_seed_s_early_gain_from_its_late_gain(ds):
    """The rise over the DMFT's horizon T = 5: each seed's (replicate's) mean gain over epochs 4-5
    ([0.7 T, T]) minus over epochs 1-2 ([0.1 T, 0.4 T]), averaged with its standard error; an
    offset that one seed carries at every epoch drops out of the rise."""
    gains = _runs(ds, "gd+heavy-ball") - _runs(ds, "gd")
    each = ds.dmft_overlap_by_replicate.sel(alpha=5.0)
    theory = (each.sel(optimizer="gd+heavy-ball") - each.sel(optimizer="gd")).values
    result = dmft_agreement.agreement(ds).sel(pair="gd+heavy-ball - gd", alpha=5.0, p=256)
    for name, rows in (("runs", gains), ("dmft", theory)):
        rises = rows[:, [4, 5]].mean(1) - rows[:, [1, 2]].mean(1)
        assert float(result[f"{name}_gain_rise"]) == pytest.approx(rises.mean())
        assert float(result[f"{name}_gain_rise_stderr"]) == pytest.approx(rises.std(ddof=1) / np.sqrt(3))
    ds.overlap_trajectory.loc[dict(optimizer="gd+heavy-ball", seed=0)] += 0.3
    ds.overlap.loc[dict(optimizer="gd+heavy-ball", seed=0)] += 0.3
    shifted = dmft_agreement.agreement(ds).sel(pair="gd+heavy-ball - gd", alpha=5.0, p=256)
    assert float(shifted.runs_gain_rise) == pytest.approx(float(result.runs_gain_rise))
    assert float(shifted.runs_gain) == pytest.approx(float(result.runs_gain) + 0.1)


def test_runs_on_another_grid_are_interpolated_in_log_epoch(ds):
    """Runs of another folder on a coarser grid (epochs 0, 1, 3, 6), each linear in log(1 + epoch),
    against a DMFT equal to their mean: no gap at any DMFT epoch, including those between."""
    slope = np.array([0.01, 0.02, 0.03])
    line = 0.2 + slope[:, None] * np.log1p(ds.epoch.values)[None, :]
    ds.overlap_trajectory.loc[dict(optimizer="gd", alpha=5.0)] = line
    ds.overlap.loc[dict(optimizer="gd", alpha=5.0)] = line[:, -1]
    ds.dmft_overlap_trajectory.loc[dict(optimizer="gd", alpha=5.0)] = line.mean(0)
    ds.dmft_overlap_trajectory_stderr.loc[dict(optimizer="gd", alpha=5.0)] = 0.0
    coarse = ds.sel(epoch=[0, 1, 3, 6])
    result = dmft_agreement.agreement(ds, coarse).sel(optimizer="gd", alpha=5.0, p=256, quantity="overlap")
    assert int(result.epochs_compared) == 7  # the DMFT set here over the whole grid, 0-6
    assert float(result.largest_gap) < 1e-12
    assert float(result.largest_gap_in_stderr) == 0.0


def test_the_runs_summed_training_loss_is_compared_per_sample(ds):
    """A DMFT training loss equal to the runs' mean summed loss over n = alpha p = 1280: no gap."""
    runs = ds.train_loss_trajectory.sel(optimizer="gd", alpha=5.0)
    ds.dmft_train_loss_trajectory.loc[dict(optimizer="gd", alpha=5.0)] = runs.mean("seed") / 1280
    line = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, p=256, quantity="train_loss")
    assert float(line.largest_gap) < 1e-12 and int(line.epochs_compared) == 7


def test_a_study_over_several_p_compares_each_p_s_runs_with_the_one_dmft(tmp_path):
    study = build_study(STUDY | {"p": [128, 256], "seeds": 2, "optimizer": STUDY["optimizer"][:1],
                                 "dmft": {"paths": 1024, "epochs": 5}})
    ds = xr.load_dataset(run_study(study, tmp_path, progress=False))
    result = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, quantity="overlap")
    theory = ds.dmft_overlap_trajectory.sel(optimizer="gd", alpha=5.0).values[:6]
    for p in (128, 256):
        runs = ds.overlap_trajectory.sel(optimizer="gd", alpha=5.0, p=p).values[:, :6]
        assert int(result.sel(p=p).runs) == 2
        assert float(result.sel(p=p).largest_gap) == pytest.approx(np.abs(theory - runs.mean(0)).max())


def test_runs_that_do_not_match_the_dmft_s_study_are_refused_naming_the_reason(ds):
    with pytest.raises(ValueError, match="^DIR: the dataset holds no DMFT"):
        dmft_agreement.agreement(ds.drop_vars([v for v in ds.data_vars if v.startswith("dmft_")]))
    faster = ds.assign_coords(lr=ds.lr * 2)
    with pytest.raises(ValueError, match=r"^--runs: optimizer gd has lr = 0.04 in the runs but 0.02"):
        dmft_agreement.agreement(ds, faster)
    elsewhere = ds.copy()
    elsewhere.attrs["study"] = json.dumps(json.loads(ds.attrs["study"]) | {"init_overlap": 0.3})
    with pytest.raises(ValueError, match=r"^--runs: the runs start at init_overlap = 0.3, the DMFT at 0.2"):
        dmft_agreement.agreement(ds, elsewhere)
    with pytest.raises(ValueError, match=r"^--runs: the runs' dataset has no optimizer gd\+heavy-ball"):
        dmft_agreement.agreement(ds, ds.sel(optimizer=["gd"]))


def test_phaseret_compare_writes_the_tables_beside_the_runs(folder, capsys):
    assert main(["compare", str(folder)]) == 0
    text = (folder / "dmft_agreement.md").read_text()
    assert text == capsys.readouterr().out.split(str(folder / "dmft_agreement.nc"))[0]
    assert "| gd | 5 | 256 | overlap |" in text and "| gd+heavy-ball - gd | 5 | 256 | 5 |" in text
    stored = xr.load_dataset(folder / "dmft_agreement.nc")
    assert set(stored.optimizer.values) == {"gd", "gd+heavy-ball"} and list(stored.p.values) == [256]


def test_phaseret_compare_with_runs_from_another_folder_writes_beside_those_runs(folder, tmp_path, capsys):
    """``--runs OTHER``: the tables go to OTHER, where the runs are, and the DMFT's folder is left alone."""
    for name in ("dmft_agreement.md", "dmft_agreement.nc"):  # an earlier test may have written them
        (folder / name).unlink(missing_ok=True)
    other = tmp_path / "full"
    shutil.copytree(folder, other)
    assert main(["compare", str(folder), "--runs", str(other)]) == 0
    assert (other / "dmft_agreement.md").exists() and (other / "dmft_agreement.nc").exists()
    assert not (folder / "dmft_agreement.md").exists()
    assert str(other / "dmft_agreement.md") in capsys.readouterr().out


def test_the_medians_row_compares_the_replicates_median_with_the_runs_median(ds):
    """``overlap_median``: the median of the DMFT replicates against the runs' median, in standard
    errors of the difference from their bootstrap errors; a replicate pulled far down moves the
    median row by no more than the middle replicate allows."""
    ds.dmft_overlap_by_replicate.loc[dict(optimizer="gd", alpha=5.0, dmft_replicate=0, epoch=[4, 5])] = -5.0
    each = ds.dmft_overlap_by_replicate.sel(optimizer="gd", alpha=5.0).values[:, :6]
    runs = _runs(ds, "gd")[:, :6]
    (theory, theory_error), (middle, error) = (paired.median_and_stderr(rows) for rows in (each, runs))
    gap = theory - middle
    ratio = np.where(np.abs(gap) < 1e-9, 0, np.abs(gap) / np.hypot(theory_error, error))
    line = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, p=256, quantity="overlap_median")
    assert float(line.largest_gap) == pytest.approx(np.abs(gap).max())
    assert float(line.largest_gap) < 1.0  # the -5 replicate does not reach the median
    assert float(line.largest_gap_in_stderr) == pytest.approx(ratio.max())
    assert int(line.replicates) == 3 and int(line.runs) == 3


@pytest.mark.parametrize("quantity", ["test_error", "train_loss"])
def test_the_loss_s_and_test_error_s_median_rows_compare_the_replicates_own_values(ds, quantity):
    """``test_error_median`` and ``train_loss_median``: the median of each replicate's own value
    (not of the overlap) against the runs' median, the runs' loss per sample (summed over n =
    alpha p); a replicate pulled far up does not reach the median."""
    ds[f"dmft_{quantity}_by_replicate"].loc[dict(optimizer="gd", alpha=5.0, dmft_replicate=0, epoch=[4, 5])] = 50.0
    each = ds[f"dmft_{quantity}_by_replicate"].sel(optimizer="gd", alpha=5.0).values[:, :6]
    runs = ds[f"{quantity}_trajectory"].sel(optimizer="gd", alpha=5.0).transpose("seed", "epoch").values[:, :6]
    runs = runs / (5.0 * 256) if quantity == "train_loss" else runs
    (theory, theory_error), (middle, error) = (paired.median_and_stderr(rows) for rows in (each, runs))
    gap = theory - middle
    line = dmft_agreement.agreement(ds).sel(optimizer="gd", alpha=5.0, p=256, quantity=f"{quantity}_median")
    assert float(line.largest_gap) == pytest.approx(np.abs(gap).max())
    assert float(line.largest_gap) < 1.0
    ratio = np.where(np.abs(gap) < 1e-9, 0, np.abs(gap) / np.hypot(theory_error, error))
    assert float(line.largest_gap_in_stderr) == pytest.approx(ratio.max())
    assert float(line.late_mean_gap) == pytest.approx(gap[3:6].mean())


def test_a_dmft_that_kept_the_replicates_overlap_only_has_the_overlap_s_median_row(ds):
    """A ``dmft.nc`` written before each replicate's loss and test error were kept: the overlap's
    median row, no other."""
    old = ds.drop_vars(["dmft_train_loss_by_replicate", "dmft_test_error_by_replicate"])
    assert [q for q in dmft_agreement.agreement(old).quantity.values if q.endswith("_median")] == ["overlap_median"]
    assert {"test_error_median", "train_loss_median"} <= set(dmft_agreement.agreement(ds).quantity.values)


def test_a_solution_reused_without_the_replicates_loss_has_no_loss_median_row(ds):
    """GD's solution stored before each replicate's loss was kept (NaN beside GD + heavy-ball's
    fresh one): its ``train_loss_median`` row is left empty, without a warning, and its other rows
    and GD + heavy-ball's stay."""
    ds.dmft_train_loss_by_replicate.loc[dict(optimizer="gd")] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = dmft_agreement.agreement(ds).sel(alpha=5.0, p=256)
    assert np.isnan(float(table.largest_gap_in_stderr.sel(optimizer="gd", quantity="train_loss_median")))
    assert np.isfinite(table.largest_gap_in_stderr.sel(optimizer="gd", quantity=["overlap_median",
                                                                                  "test_error_median"])).all()
    assert np.isfinite(float(table.largest_gap_in_stderr.sel(optimizer="gd+heavy-ball",
                                                             quantity="train_loss_median")))


def test_the_median_s_bootstrap_error_is_the_spread_of_resampled_medians():
    """For normal rows the median's standard error is sqrt(pi / 2) sigma / sqrt(n); the bootstrap
    finds it at n = 400 within 10% on average over 40 columns (one column's bootstrap error scatters
    by about 20%), gives the same numbers on every call, and 0 for one row."""
    rows = np.random.default_rng(3).normal(0.5, 2.0, (400, 40))
    median, error = paired.median_and_stderr(rows)
    assert median == pytest.approx(np.median(rows, axis=0))
    assert error.mean() == pytest.approx(np.sqrt(np.pi / 2) * 2.0 / 20, rel=0.10)
    assert (paired.median_and_stderr(rows)[1] == error).all()
    assert (paired.median_and_stderr(rows[:1])[1] == 0).all()
