"""Figures of a study (PNG and PDF): success probability, final test error, trajectories.

Axis labels come from the dataset's CF attributes. Dimensions other than
``alpha``, ``seed`` and ``epoch`` (``optimizer``, and ``p`` or ``hidden`` when
varied) become one line each.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .results import load_folder

FORMATS = ("png", "pdf")


def wilson_interval(successes: np.ndarray, trials: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval ``(low, high)`` of a binomial proportion (NaN where trials = 0)."""
    successes, trials = np.asarray(successes, float), np.asarray(trials, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = successes / trials
        denominator = 1 + z**2 / trials
        centre = (share + z**2 / (2 * trials)) / denominator
        half = z / denominator * np.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2))
    return centre - half, centre + half


def plot_folder(out_dir: Path) -> list[Path]:
    """Draw the figures of the dataset ``out_dir/<study>.nc`` into ``out_dir``; return the files."""
    study = load_folder(out_dir)
    path = Path(out_dir) / f"{study.name}.nc"
    if not path.exists():
        raise ValueError(f"DIR: {path} does not exist; finish the study first (phaseret run {study.source} --scale {study.scale})")
    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
    except Exception as error:  # truncated or not netCDF: the study's next run writes it anew
        raise ValueError(f"DIR: {path} cannot be read ({type(error).__name__}: {error}); rerun the study to write it anew") from None
    paths = []
    for figure, stem in ((success_figure(ds), "success"), (test_error_figure(ds), "test_error"),
                         (trajectory_figure(ds), "trajectories")):
        for fmt in FORMATS:
            path = Path(out_dir) / f"{study.name}_{stem}.{fmt}"
            figure.savefig(path, dpi=150, bbox_inches="tight")
            paths.append(path)
    return paths


def _lines(da: xr.DataArray):
    """``(label, line)`` for every combination of the dimensions other than alpha/seed/epoch."""
    others = [d for d in da.dims if d not in ("alpha", "seed", "epoch")]
    for values in itertools.product(*(da[d].values for d in others)):
        selection = dict(zip(others, values))
        label = ", ".join(str(v) if d == "optimizer" else f"{d}={v}" for d, v in selection.items())
        yield label, da.sel(selection)


def _label(da: xr.DataArray, template: str = "{}") -> str:
    """An axis label from the CF attributes, wrapped to fit beside a plot."""
    units = da.attrs.get("units", "1")
    name = template.format(da.attrs.get("long_name", da.name))
    return textwrap.fill(name if units == "1" else f"{name} [{units}]", 45)


def _title(ds: xr.Dataset) -> str:
    return textwrap.fill(ds.attrs.get("title", ""), 70)


def _hold_final(runs: np.ndarray, finals: np.ndarray) -> np.ndarray:
    """Trajectories (seed, epoch) with each run's final value over the NaNs after its stop."""
    return np.where(np.isnan(runs), finals[:, None], runs)


def _amp_task(ds: xr.Dataset) -> str | None:
    """The task when the study runs GAMP (its figures then show state evolution), else None."""
    import json

    from .models import MODELS

    if "gamp" not in [str(a) for a in ds["algorithm"].values]:
        return None
    return MODELS[json.loads(ds.attrs["study"]).get("model", "pr-quadratic")].task


def success_figure(ds: xr.Dataset) -> Figure:
    """Success probability vs alpha per optimizer, with 95% Wilson intervals over the seeds run;
    with GAMP in the study, the algorithmic threshold of state evolution as a vertical line."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for label, line in _lines(ds.success):
        trials = line.notnull().sum("seed")
        keep = trials > 0
        successes = line.sum("seed")[keep]
        alpha, trials = line.alpha[keep].values, trials[keep].values
        low, high = wilson_interval(successes.values, trials)
        share = successes.values / trials
        ax.errorbar(alpha, share, yerr=[share - low, high - share], marker="o", capsize=3, label=label)
    task = _amp_task(ds)
    if task is not None:
        from .state_evolution import amp_threshold

        ax.axvline(amp_threshold(task), color="grey", linestyle="--", label="AMP threshold (state evolution)")
    ax.set_xlabel(_label(ds.alpha))
    ax.set_ylabel(f"success probability\n(95% Wilson interval, {ds.sizes['seed']} seeds)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize="small")
    ax.set_title(_title(ds), fontsize="small")
    return figure


def test_error_figure(ds: xr.Dataset) -> Figure:
    """Mean final test error over seeds vs alpha, log scale; with GAMP in the study, the weights'
    MSE ``1 - q`` of state evolution (and for the door its Bayes-optimal test error) as lines."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for label, line in _lines(ds.test_error):
        mean = line.mean("seed")
        keep = mean.notnull()
        ax.plot(line.alpha[keep], mean[keep], marker="o", label=label)
    task = _amp_task(ds)
    if task is not None:
        from .state_evolution import door_bayes_test_error, mse

        alphas = np.linspace(float(ds.alpha.min()), float(ds.alpha.max()), 40)
        ax.plot(alphas, [max(mse(task, a), 1e-6) for a in alphas], color="grey", linestyle="--",
                label="state evolution: weights' MSE 1 - q")
        if task == "symmetric-door":
            ax.plot(alphas, [max(door_bayes_test_error(a), 1e-6) for a in alphas], color="black", linestyle=":",
                    label="state evolution: Bayes-optimal test error")
    ax.set_yscale("log")
    ax.set_xlabel(_label(ds.alpha))
    ax.set_ylabel(_label(ds.test_error, "mean final {} over seeds"))
    ax.legend(fontsize="small")
    ax.set_title(_title(ds), fontsize="small")
    return figure


def trajectory_figure(ds: xr.Dataset) -> Figure:
    """Median test error over seeds vs epoch (after its stop a run holds its final value), one
    panel per optimizer line, one curve per alpha."""
    lines = list(_lines(ds.test_error_trajectory))
    finals = dict(_lines(ds.test_error))
    figure = Figure(figsize=(4 * len(lines), 3.5))
    axes = np.atleast_1d(figure.subplots(1, len(lines), sharey=True))
    colours = dict(zip(ds.alpha.values, _colours(ds.sizes["alpha"])))
    for ax, (label, line) in zip(axes, lines):
        for alpha in ds.alpha.values:
            runs = line.sel(alpha=alpha).transpose("seed", "epoch").values
            if np.isnan(runs[:, 0]).all():
                continue  # this optimizer does not run this alpha
            median = np.median(_hold_final(runs, finals[label].sel(alpha=alpha).values), axis=0)
            epochs = line.epoch.values
            ax.plot(epochs[1:], median[1:], color=colours[alpha], label=f"alpha={alpha:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(_label(ds.epoch))
    axes[0].set_ylabel(_label(ds.test_error_trajectory, "{} (median over seeds)"))
    axes[-1].legend(fontsize="x-small")
    return figure


def _colours(count: int):
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0, 0.9, count))
