"""Figures of single runs and their records (PNG and PDF through :mod:`phaseret.figures`): the
median trajectories, the dynamics of chosen runs, the Hessian spectra at the end, the gradient
jumps. Layout, labels and styles come from :mod:`phaseret.plots`."""

from __future__ import annotations

import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from . import plots
from .paired import dmft_gain, hold_final, held_runs, mean_and_stderr, plain_twins, runs_gain, started


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
            median = np.median(hold_final(runs, finals[label].sel(alpha=alpha).values), axis=0)
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


def momentum_gain_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """What an update rule gains over plain steps (thesis ch. 5: does momentum help P-SGD and not
    GD?): overlap(optimizer) - overlap(its plain twin) vs epoch, a panel per pair, a colour per
    alpha (and p). The twin is the study's optimizer with ``update = "plain"`` and every other
    optimizer coordinate (model, algorithm, step size, batch) equal. The runs' difference is taken
    seed by seed (same data and start; a run holds its final value after its stop), its mean shaded
    +- one standard error; the DMFT's (dashed) replicate by replicate over the replicates both
    solutions kept (same solver inputs), hatched +- one standard error, or, without them, the
    difference of the two curves with the two standard errors combined."""
    pairs = plain_twins(ds)
    if not pairs:
        raise ValueError("plot.figures: momentum_gain needs an optimizer whose update is not plain and its plain "
                         "twin (same model, algorithm, step size and batch settings) in the study")
    figure = Figure(figsize=(4.6 * len(pairs) + 1.5, 3.6), layout="constrained")
    axes = figure.subplots(1, len(pairs), sharey=True, squeeze=False)[0]
    sizes = [int(p) for p in ds.p.values] if "p" in ds.dims else [None]
    keys = [(alpha, p) for alpha in ds.alpha.values for p in sizes]
    colours = dict(zip(keys, plots.colours(len(keys))))
    epochs = ds.epoch.values
    for ax, (label, twin) in zip(axes, pairs):
        for alpha, p in keys:
            at = {"alpha": alpha} | ({"p": p} if p else {})
            gains = runs_gain(ds, label, twin, at)
            if len(gains) > 1:
                mean, error = mean_and_stderr(gains)
                ax.plot(epochs, mean, color=colours[alpha, p],
                        label=f"alpha={alpha:g}" + (f", p={p}" if p else "") + f", runs (paired, {len(gains)} seeds)")
                ax.fill_between(epochs, mean - error, mean + error, color=colours[alpha, p], alpha=0.25, linewidth=0)
            if p == sizes[0] and "dmft_overlap_trajectory" in ds:
                _draw_dmft_gain(ax, ds, label, twin, alpha, colours[alpha, p] if len(sizes) == 1 else "black")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(textwrap.fill(f"{label} - {twin}", 40), fontsize="small")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("overlap gain over plain steps")
    plots.figure_legend(figure, {(): list(axes)})
    plots.figure_title(figure, ds)
    return figure


def _draw_dmft_gain(ax, ds: xr.Dataset, label: str, twin: str, alpha: float, colour) -> None:
    """The DMFT's overlap gain of ``label`` over ``twin`` at ``alpha`` (:func:`momentum_gain_figure`)."""
    gain, error, paired = dmft_gain(ds, label, twin, alpha)
    if np.isnan(gain).all():
        return
    ax.plot(ds.epoch.values, gain, color=colour, linestyle="--",
            label=f"alpha={alpha:g}, DMFT" + (f" (paired, {paired} replicates)" if paired else ""))
    if np.isfinite(error).any():
        ax.fill_between(ds.epoch.values, gain - error, gain + error, facecolor="none", edgecolor=colour, hatch="//",
                        linewidth=0, label=f"alpha={alpha:g}, DMFT +- its standard error")


def _draw_runs(ax, ds: xr.Dataset, name: str, at: dict, colour, label: str) -> None:
    """The mean over the runs at ``at`` of ``NAME_trajectory`` (each run holding its final value
    after its stop), shaded +- one standard error."""
    held = started(held_runs(ds, name, at))
    if not len(held):
        return
    mean, error = mean_and_stderr(held)
    ax.plot(ds.epoch.values, mean, color=colour, label=f"{label}, runs (mean of {len(held)})")
    ax.fill_between(ds.epoch.values, mean - error, mean + error, color=colour, alpha=0.25, linewidth=0)
