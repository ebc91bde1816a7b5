"""Figures of single runs and their records (PNG and PDF through :mod:`phaseret.figures`): the
median trajectories, the dynamics of chosen runs, the Hessian spectra at the end, the gradient
jumps. Layout, labels and styles come from :mod:`phaseret.plots`."""

from __future__ import annotations

import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from . import plots


def _hold_final(runs: np.ndarray, finals: np.ndarray) -> np.ndarray:
    """Trajectories (seed, epoch) with each run's final value over the NaNs after its stop."""
    return np.where(np.isnan(runs), finals[:, None], runs)


def trajectory_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Median test error over seeds vs epoch (after its stop a run holds its final value), one
    panel per line (optimizer, p, hidden), one curve per alpha that line runs."""
    if "test_error_trajectory" not in ds:
        raise ValueError("plot.figures: trajectories need one epoch grid; the folders drawn together have "
                         "different budgets, so draw them one by one")
    found = plots.lines(ds.test_error_trajectory, ())
    finals = {label: line for _, label, line in plots.lines(ds.test_error, ())}
    figure = Figure(figsize=(3.6 * len(found) + 1.5, 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(found), sharey=True, squeeze=False)[0])
    colours = dict(zip(ds.alpha.values, plots.colours(ds.sizes["alpha"])))
    for ax, (_, label, line) in zip(axes, found):
        for alpha in ds.alpha.values:
            runs = line.sel(alpha=alpha).transpose("seed", "epoch").values
            if np.isnan(runs[:, 0]).all():
                continue  # this optimizer does not run this alpha
            median = np.median(_hold_final(runs, finals[label].sel(alpha=alpha).values), axis=0)
            ax.plot(line.epoch.values[1:], median[1:], color=colours[alpha], label=f"alpha={alpha:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(textwrap.fill(label, 30), fontsize="small")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(plots.error_label(ds, "test_error", "{} (median over seeds)"))
    plots.figure_legend(figure, {(): list(axes)})
    plots.figure_title(figure, ds)
    return figure


def dynamics_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Test error vs epoch of single runs (the ``seeds`` of ``[plot]``, default the first): a
    panel per optimizer (rows) and alpha (columns), a line per hidden / p combination and seed;
    each curve ends at its run's last epoch, with its final value (no value is held after it)."""
    settings = settings or plots.default_settings(ds)
    seeds = settings.get("seeds") or (int(ds.seed.values[0]),)
    found = []
    for alpha in ds.alpha.values:
        for seed in seeds:
            run = ds.sel(alpha=alpha, seed=seed)
            for panel, label, line in plots.lines(run.test_error_trajectory, ("optimizer",)):
                end = (float(plots.at_line(run.epochs, line)), float(plots.at_line(run.test_error, line)))
                found.append(((panel[0], float(alpha)), label + (f", seed {seed}" if len(seeds) > 1 else ""), (line, end)))
    figure, by_panel = plots.panel_grid(found, ("optimizer", "alpha"))
    styles = plots.line_styles(found)
    for panel, label, (line, end) in found:
        keep = line.notnull().values
        epochs, values = line.epoch.values[keep][1:], line.values[keep][1:]
        if np.isfinite(end[1]) and (not epochs.size or end[0] > epochs[-1]):  # the run's own last epoch
            epochs, values = np.append(epochs, end[0]), np.append(values, end[1])
        style = {k: v for k, v in styles[label].items() if k != "marker"}
        by_panel[panel][0].plot(epochs, values, label=label, **style)
    for column in by_panel.values():
        ax = column[0]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(plots.error_label(ds, "test_error", "{} of one run"))
    plots.figure_legend(figure, by_panel)
    plots.figure_title(figure, ds)
    return figure


def hessian_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Histograms of the Hessian spectra at the final weights of one run (the first of the
    ``[plot]`` seeds): a panel per optimizer (rows) and d, alpha (columns), the three matrices
    (:mod:`phaseret.landscape`) overlaid, the run's final test error in each title."""
    if "hessian_eigenvalues" not in ds:
        raise ValueError('plot.figures: hessian needs a study run with [record] hessian = "end"')
    settings = settings or plots.default_settings(ds)
    seed = (settings.get("seeds") or (int(ds.seed.values[0]),))[0]
    found = []
    for alpha in ds.alpha.values:
        for (optimizer,), label, line in plots.lines(ds.hessian_eigenvalues.sel(alpha=alpha, seed=seed), ("optimizer",)):
            error = float(plots.at_line(ds.test_error.sel(alpha=alpha, seed=seed), line))
            found.append(((optimizer, f"d={line.hidden.item()}, alpha={alpha:g}"), error, line))
    figure, by_panel = plots.panel_grid([(panel, "", line) for panel, _, line in found], ("optimizer", "run"))
    colours = {"full": "tab:blue", "batch": "tab:orange", "riemannian": "tab:green"}
    for panel, error, line in found:
        ax = by_panel[panel][0]
        for matrix in line.hessian.values:
            values = line.sel(hessian=matrix).values
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=60, histtype="step", color=colours[str(matrix)], label=f"{matrix} Hessian")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("count")
        ax.set_title(f"{panel[0]}, {panel[1]}\nfinal test error {error:.3g}", fontsize="small")
    plots.figure_legend(figure, by_panel, f"seed {seed}")
    plots.figure_title(figure, ds)
    return figure


def gradient_jumps_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Median over seeds of the jump ``|g_t - g_(t-1)|_F`` between consecutive batch gradients (the
    epoch's mean) vs epoch: a panel per alpha, a line per optimizer (SPEC 5; thesis 4.3.2)."""
    if "gradient_jump_trajectory" not in ds or not bool(ds.gradient_jump_trajectory.notnull().any()):
        raise ValueError("plot.figures: gradient_jumps needs a study run with [record] gradient_jumps = true")
    found = []
    for alpha in ds.alpha.values:
        for _, label, line in plots.lines(ds.gradient_jump_trajectory.sel(alpha=alpha), ()):
            found.append(((float(alpha),), label, line))
    figure, by_panel = plots.panel_grid(found, ("alpha",))
    styles = plots.line_styles(found)
    for panel, label, line in found:
        ax = by_panel[panel][0]
        median = line.median("seed")
        keep = (median > 0).values  # GD's first epoch has no previous gradient (jump 0): off a log axis
        style = {k: v for k, v in styles[label].items() if k != "marker"}
        ax.plot(line.epoch.values[keep], median.values[keep], label=label, **style)
    for column in by_panel.values():
        ax = column[0]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("|g_t - g_(t-1)|_F, epoch mean\n(median over seeds)")
    plots.figure_legend(figure, by_panel)
    plots.figure_title(figure, ds)
    return figure


def dmft_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """The DMFT (p -> infinity, dashed; hatched +- its own standard error over replicates, when it has
    one) over the simulations (solid: the mean over seeds, each run holding its final value after
    its stop, shaded +- one standard error): overlap (top row) and
    test error (bottom row) vs epoch, one column per optimizer of the ``[dmft]`` table, one colour
    per alpha (SPEC 14). A study over several p draws the runs of each p in a colour of its own and
    the DMFT in black: the runs' approach to p -> infinity."""
    if "dmft_overlap_trajectory" not in ds:
        raise ValueError("plot.figures: the dmft figure needs the DMFT curves (DIR/dmft.nc), written by "
                         "`phaseret run` for a study with a [dmft] table")
    theory = ds.dmft_overlap_trajectory
    labels = [str(o) for o in ds.optimizer.values if theory.sel(optimizer=o).notnull().any()]
    figure = Figure(figsize=(3.8 * len(labels) + 1.5, 6.0), layout="constrained")
    axes = figure.subplots(2, len(labels), sharex=True, squeeze=False)
    sizes = [int(p) for p in ds.p.values] if "p" in ds.dims else [None]
    keys = [(alpha, p) for alpha in ds.alpha.values for p in sizes]
    colours = dict(zip(keys, plots.colours(len(keys))))
    epochs = ds.epoch.values
    for column, label in enumerate(labels):
        for row, name in enumerate(("overlap", "test_error")):
            ax = axes[row, column]
            for alpha in ds.alpha.values:
                predicted = ds[f"dmft_{name}_trajectory"].sel(optimizer=label, alpha=alpha).values
                if np.isnan(predicted).all():
                    continue
                for p in sizes:
                    _draw_runs(ax, ds, name, {"optimizer": label, "alpha": alpha} | ({"p": p} if p else {}),
                               colours[alpha, p], f"alpha={alpha:g}" + (f", p={p}" if p else ""))
                theory_colour = colours[alpha, sizes[0]] if len(sizes) == 1 else "black"
                ax.plot(epochs, predicted, color=theory_colour, linestyle="--", label=f"alpha={alpha:g}, DMFT")
                spread = ds.get(f"dmft_{name}_trajectory_stderr")
                if spread is not None and spread.sel(optimizer=label, alpha=alpha).notnull().any():
                    own = spread.sel(optimizer=label, alpha=alpha).values
                    ax.fill_between(epochs, predicted - own, predicted + own, facecolor="none", edgecolor=theory_colour,
                                    hatch="//", linewidth=0, label=f"alpha={alpha:g}, DMFT +- its standard error")
            if row == 1:
                ax.set_yscale("log")
                ax.set_xlabel("epoch")
            else:
                ax.set_title(textwrap.fill(label, 30), fontsize="small")
        axes[0, 0].set_ylabel("overlap with the teacher")
        axes[1, 0].set_ylabel(plots.error_label(ds, "test_error"))
    plots.figure_legend(figure, {(): list(axes.ravel())})
    plots.figure_title(figure, ds)
    return figure


def _draw_runs(ax, ds: xr.Dataset, name: str, at: dict, colour, label: str) -> None:
    """The mean over the runs at ``at`` of ``NAME_trajectory`` (each run holding its final value
    after its stop), shaded +- one standard error."""
    runs = ds[f"{name}_trajectory"].sel(at)
    epochs = ds.epoch.values
    runs = runs.transpose(*[d for d in runs.dims if d != "epoch"], "epoch").values.reshape(-1, len(epochs))
    finals = ds[name].sel(at).values.reshape(-1)
    started = ~np.isnan(runs[:, 0])
    if not started.any():
        return
    held = _hold_final(runs[started], finals[started])
    mean = held.mean(axis=0)
    error = held.std(axis=0, ddof=1) / np.sqrt(len(held)) if len(held) > 1 else 0 * mean
    ax.plot(epochs, mean, color=colour, label=f"{label}, runs (mean of {len(held)})")
    ax.fill_between(epochs, mean - error, mean + error, color=colour, alpha=0.25, linewidth=0)
