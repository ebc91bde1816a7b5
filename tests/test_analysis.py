"""Thresholds, finite size and time to solution (:mod:`phaseret.inference`, :mod:`phaseret.analysis`)."""

import numpy as np
import pytest
import scipy.special
import xarray as xr

from phaseret import analysis, inference
from phaseret.cli import main

ALPHAS = np.linspace(1.5, 3.5, 8)


def test_the_profile_interval_covers_the_true_threshold_at_its_nominal_rate():
    rng = np.random.default_rng(2026)
    truth, width = 2.5, 0.4
    covered = 0
    for _ in range(400):
        k = rng.binomial(10, scipy.special.expit((ALPHAS - truth) / width))
        fit = inference.fit_threshold(ALPHAS, k, np.full(8, 10))
        covered += fit.low < truth < fit.high
    assert 0.92 <= covered / 400 <= 0.98


def test_a_fit_recovers_a_clean_curve():
    k = np.round(1000 * scipy.special.expit((ALPHAS - 2.3) / 0.25))
    fit = inference.fit_threshold(ALPHAS, k, np.full(8, 1000))
    assert fit.kind == "fit" and abs(fit.alpha_50 - 2.3) < 0.01 and abs(fit.width - 0.25) < 0.01
    assert fit.low < 2.3 < fit.high and fit.width_low < 0.25 < fit.width_high
    probit = inference.fit_threshold(ALPHAS, k, np.full(8, 1000), link="probit")
    # the normal CDF is steeper than the logistic per unit width: a logistic curve reads as a
    # probit about 1.7 times as wide (the classic scaling of the two links)
    assert abs(probit.alpha_50 - 2.3) < 0.02 and 1.5 < probit.width / fit.width < 1.9


@pytest.mark.parametrize("successes, kind, low, high", [
    ([0] * 8, "above", ALPHAS[-1], np.inf),
    ([10] * 8, "below", -np.inf, ALPHAS[0]),
    ([0, 0, 0, 10, 10, 10, 10, 10], "between", ALPHAS[2], ALPHAS[3]),
])
def test_degenerate_sweeps_give_bounds_not_numbers(successes, kind, low, high):
    fit = inference.fit_threshold(ALPHAS, successes, np.full(8, 10))
    assert (fit.kind, fit.low, fit.high) == (kind, low, high)
    assert np.isnan(fit.alpha_50) and np.isnan(fit.width)


def test_kaplan_meier_median_interval_covers_the_true_median_and_matches_the_empirical_one():
    rng = np.random.default_rng(7)
    scale, budget = 1000.0, 1500.0
    true_median = scale * np.log(2)
    covered = 0
    for _ in range(300):
        times = rng.exponential(scale, size=40)
        estimate = inference.survival(times[times < budget], np.full(int((times >= budget).sum()), budget))
        covered += estimate.low <= true_median <= estimate.high
    assert 0.90 <= covered / 300 <= 0.99
    times = rng.exponential(scale, size=21)
    assert inference.survival(times, []).median == np.median(times)  # no censoring: the empirical median


@pytest.mark.parametrize("form", list(inference.FORMS))
def test_the_finite_size_fit_recovers_alpha_inf_under_each_form(form):
    p = np.array([512, 1024, 2048, 4096])
    a = 1.9 + 3.0 * p ** -inference.FORMS[form]
    fits = {fit.form: fit for fit in inference.extrapolate(p, a, a - 0.02, a + 0.02)}
    assert abs(fits[form].alpha_inf - 1.9) < 1e-9 and fits[form].chi2 < 1e-12
    assert fits[form].low < 1.9 < fits[form].high


def test_two_forms_that_both_fit_within_their_intervals_are_not_told_apart():
    p = np.array([512, 1024, 2048])
    fits = inference.extrapolate(p, [2.0, 2.0, 2.0], [1.5, 1.5, 1.5], [2.5, 2.5, 2.5])
    assert not inference.distinguishable(fits)


def sweep_dataset(successes, statuses=None, epochs=None) -> xr.Dataset:
    """A hand-made study dataset: one optimizer, alphas ALPHAS[:A], 4 seeds."""
    successes = np.asarray(successes, float)[None]
    shape = successes.shape
    statuses = np.full(shape, "max-epochs", dtype=object) if statuses is None else np.asarray(statuses, dtype=object)[None]
    statuses = np.where(successes == 1, "converged-test", statuses)
    epochs = np.full(shape, 100.0) if epochs is None else np.asarray(epochs, float)[None]
    dims = ("optimizer", "alpha", "seed")
    return xr.Dataset({"success": (dims, successes), "epochs": (dims, epochs), "status": (dims, statuses)},
                      coords={"optimizer": ["gd"], "alpha": ALPHAS[: shape[1]], "seed": range(shape[2]),
                              "p": 64, "hidden": 1, "model": ("optimizer", ["pr-quadratic"])})


def test_analyze_counts_diverged_runs_as_failures_and_apart():
    successes = [[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 1, 1], [1, 1, 1, 1]]
    statuses = [["diverged", "max-epochs", "max-epochs", "max-epochs"]] + [["max-epochs"] * 4] * 3
    epochs = [[3, 100, 100, 100], [100, 100, 40, 100], [20, 100, 30, 25], [10, 12, 14, 16]]
    result = analysis.analyze(sweep_dataset(successes, statuses, epochs), {("gd", 64, 1, float(a)): 100 for a in ALPHAS})
    line = result.sel(optimizer="gd")
    assert (int(line.runs), int(line.successes), int(line.diverged)) == (16, 8, 1)
    assert str(line.threshold_kind.values) == "fit" and ALPHAS[1] < float(line.alpha_50) < ALPHAS[3]
    first = line.isel(alpha=0)
    assert (int(first.solved), int(first.censored), int(first.excluded_diverged)) == (0, 3, 1)
    assert float(line.isel(alpha=3).median_epochs) == 12.0  # 10, 12, 14, 16: the curve reaches 1/2 at 12
    assert "| gd | 64 | 1 |" in analysis.markdown(result)


@pytest.mark.parametrize("change, message", [
    (lambda ds: ds.drop_vars("success"), "the dataset has no `success`"),
    (lambda ds: ds.isel(alpha=0), "alpha: the dataset has no alpha axis"),
    (lambda ds: ds.isel(alpha=[0]), "alpha: a threshold needs two alphas or more"),
])
def test_datasets_the_analysis_cannot_read_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        analysis.analyze(change(sweep_dataset([[0, 1], [1, 1]])))


def test_an_unknown_link_is_refused():
    with pytest.raises(ValueError, match="link: unknown link 'cauchy'"):
        analysis.analyze(sweep_dataset([[0, 1], [1, 1]]), link="cauchy")


def test_the_analyze_command_writes_the_thresholds_and_figures(tmp_path, capsys):
    from phaseret import runner
    from phaseret.study import build_study

    table = {"name": "sweep", "model": "pr-quadratic", "p": 16, "alpha": [1.5, 3.0, 6.0], "seeds": 3,
             "max_epochs": 60, "n_test": 16, "optimizer": [{"algorithm": "p-sgd", "update": "nesterov"}]}
    runner.run_study(build_study(table), tmp_path / "sweep", progress=False)
    assert main(["analyze", str(tmp_path / "sweep")]) == 0
    assert "| p-sgd+nesterov | 16 | 1 |" in capsys.readouterr().out
    with xr.open_dataset(tmp_path / "sweep" / "thresholds.nc") as result:
        assert result.alpha_50.attrs["long_name"] and result.sizes["alpha"] == 3
    for name in ("thresholds", "survival", "median_epochs"):
        assert (tmp_path / "sweep" / f"sweep_analysis_{name}.png").stat().st_size > 1000
    assert main(["analyze", str(tmp_path / "sweep"), "--link", "cauchy"]) == 2
    assert "link: unknown link" in capsys.readouterr().err


def test_one_alpha_gives_a_bound_or_no_threshold():
    assert inference.fit_threshold([1.4], [0], [10]).kind == "above"
    assert inference.fit_threshold([2.0], [10], [10]).kind == "below"
    mixed = inference.fit_threshold([1.5], [5], [10])
    assert mixed.kind == "single" and np.isnan(mixed.alpha_50) and np.isnan(mixed.low)
