"""Figures of ``phaseret analyze`` (PNG and PDF): success with the fitted curve and the
alpha_50 band, alpha_50 against p with both extrapolations, survival curves, median time to
solution against alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.special
import scipy.stats
import xarray as xr
from matplotlib.figure import Figure

from . import analysis, inference, plots
from .models import MODELS

STYLE = {"capsize": 3, "marker": "o", "linestyle": "none"}


def _task(ds: xr.Dataset) -> str | None:
    tasks = {MODELS[m].task for m in plots.models(ds)}
    return tasks.pop() if len(tasks) == 1 else None


def _label(selection: dict) -> str:
    return ", ".join(str(v) if k == "optimizer" else f"{k}={v}" for k, v in selection.items())


def thresholds_figure(ds: xr.Dataset, result: xr.Dataset) -> Figure:
    """Success vs alpha (95% Wilson intervals) with the fitted curve and alpha_50's interval as a
    band, a panel per line; state evolution's algorithmic threshold where the task has one."""
    found = list(analysis.lines(ds))
    columns = min(3, len(found))
    rows = -(-len(found) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    link = result.attrs["link"]
    first, last = float(ds.alpha.min()), float(ds.alpha.max())
    task = _task(ds)
    for ax, (_, selection) in zip(axes, found):
        fit = result.sel(selection)
        ends = [v for v in (float(fit.alpha_50_low), float(fit.alpha_50_high)) if np.isfinite(v)]
        span = last - first
        grid = np.linspace(max(min([first] + ends), first - span / 2), min(max([last] + ends), last + span / 2), 200)
        plots.share_with_interval(ax, ds.success.sel(selection), color="black", **STYLE)
        kind = str(fit.threshold_kind.values)
        if kind == "fit":
            z = (grid - float(fit.alpha_50)) / float(fit.width)
            curve = scipy.special.expit(z) if link == "logistic" else scipy.stats.norm.cdf(z)
            ax.plot(grid, curve, color="tab:blue", label=f"{link} fit")
            ax.axvline(float(fit.alpha_50), color="tab:blue", linestyle=":")
        band = (max(float(fit.alpha_50_low), grid[0]), min(float(fit.alpha_50_high), grid[-1]))
        ax.axvspan(*band, color="tab:blue", alpha=0.15, label="alpha_50: 95% interval" if kind == "fit" else f"alpha_50: {kind}")
        if task is not None:
            plots.threshold_line(ax, task)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(_label(selection), fontsize="small")
        ax.set_xlabel(ds.alpha.attrs.get("long_name", "alpha"))
        ax.set_ylabel("success probability")
    for ax in axes[len(found):]:
        ax.set_visible(False)
    plots.figure_legend(figure, {(): list(axes)})
    return figure


def finite_size_figure(result: xr.Dataset) -> Figure:
    """alpha_50 (95% intervals) against 1/p, with both extrapolations to p -> infinity."""
    others = [d for d in ("optimizer", "hidden") if d in result.alpha_inf.dims]
    combos = [dict(zip(others, values)) for values in np.ndindex(*(result.sizes[d] for d in others))]
    figure = Figure(figsize=(4.2 * len(combos), 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(combos), squeeze=False)[0])
    for ax, combo in zip(axes, combos):
        line = result.isel(combo)
        p = line.p.values.astype(float)
        fitted = np.isfinite(line.alpha_50.values)
        a = line.alpha_50.values[fitted]
        ax.errorbar(1 / p[fitted], a, yerr=[a - line.alpha_50_low.values[fitted], line.alpha_50_high.values[fitted] - a],
                    color="black", label="alpha_50 (95% interval)", **STYLE)
        x = np.linspace(0, 1 / p.min(), 100)
        for form, colour in zip(result.form.values, ("tab:blue", "tab:orange")):
            fit = line.sel(form=form)
            if np.isnan(float(fit.alpha_inf)):
                continue
            gamma = inference.FORMS[str(form)]
            ax.plot(x, float(fit.alpha_inf) + float(fit.slope) * x**gamma, color=colour,
                    label=f"{form}: alpha_inf {float(fit.alpha_inf):.2f} [{float(fit.alpha_inf_low):.2f}, "
                          f"{float(fit.alpha_inf_high):.2f}], chi2 {float(fit.chi2):.1f}/{int(fit.dof)}")
        ax.set_title(_label({d: str(line[d].values) for d in others}), fontsize="small")
        ax.set_xlabel("1 / p")
        ax.set_ylabel("alpha_50")
        ax.legend(fontsize="x-small")
    return figure


def survival_figure(ds: xr.Dataset, budgets: dict | None) -> Figure:
    """Kaplan-Meier survival (runs not yet solved) against epochs, a panel per line, a curve per alpha."""
    found = list(analysis.lines(ds))
    figure = Figure(figsize=(4.2 * len(found), 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(found), squeeze=False)[0])
    colours = dict(zip(ds.alpha.values, plots.colours(ds.sizes["alpha"])))
    for ax, (_, selection) in zip(axes, found):
        for alpha in ds.alpha.values:
            cell = ds.sel(selection | {"alpha": alpha})
            if not bool(cell.success.notnull().any()):
                continue
            events, censored, _ = analysis.times_to_solution(cell, budgets)
            estimate = inference.survival(events, censored)
            if estimate.events:
                ax.step(np.concatenate([[0], estimate.times]), np.concatenate([[1], estimate.survival]), where="post",
                        color=colours[alpha], label=f"alpha={alpha:g}")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(_label(selection), fontsize="small")
        ax.set_xlabel("epochs")
        ax.set_ylabel("runs not yet solved (Kaplan-Meier)")
    plots.figure_legend(figure, {(): list(axes)})
    return figure


def median_figure(result: xr.Dataset) -> Figure:
    """Median time to solution (95% interval) against alpha, a line per optimizer x [p] x [hidden]."""
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    ax = figure.subplots()
    dims = [d for d in analysis.LINE_DIMS if d in result.median_epochs.dims]
    for values in np.ndindex(*(result.sizes[d] for d in dims)):
        line = result.isel(dict(zip(dims, values)))
        median = line.median_epochs.values
        keep = np.isfinite(median)
        if not keep.any():
            continue
        high = np.where(np.isfinite(line.median_epochs_high.values), line.median_epochs_high.values, median)
        ax.errorbar(line.alpha.values[keep], median[keep],
                    yerr=[median[keep] - line.median_epochs_low.values[keep], high[keep] - median[keep]],
                    capsize=3, marker="o", label=_label({d: str(line[d].values) for d in dims}))
    ax.set_yscale("log")
    ax.set_xlabel("sample ratio alpha = n/p")
    ax.set_ylabel("median epochs to solution\n(Kaplan-Meier, 95% interval)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small")
    else:
        ax.text(0.5, 0.5, "no median reached: fewer than half the runs solved at every alpha",
                transform=ax.transAxes, ha="center", fontsize="small")
    return figure


def draw(ds: xr.Dataset, result: xr.Dataset, budgets: dict | None, out_dir: Path, stem: str) -> list[Path]:
    """Every analysis figure as ``out_dir/<stem>_analysis_<name>.png/.pdf``."""
    figures = {"thresholds": thresholds_figure(ds, result), "survival": survival_figure(ds, budgets),
               "median_epochs": median_figure(result)}
    if "alpha_inf" in result:
        figures["finite_size"] = finite_size_figure(result)
    paths = []
    for name, figure in figures.items():
        for fmt in plots.FORMATS:
            path = Path(out_dir) / f"{stem}_analysis_{name}.{fmt}"
            figure.savefig(path, dpi=150, bbox_inches="tight")
            paths.append(path)
    return paths
