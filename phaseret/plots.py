"""Figure layout by a study's ``[plot]`` table (SPEC 10), and the figures over alpha: success,
divergence, mean errors (single runs and records: :mod:`phaseret.run_figures`; drawing and
saving: :mod:`phaseret.figures`).

A figure is a grid of panels: rows by the first ``panels`` key, columns by the second (the
optimizer, one of its coordinates such as ``update`` or ``batch_fraction``, the ``model``, or
the ``p`` / ``hidden`` axes). Within a panel every other combination of optimizer, ``p`` and
``hidden`` is one line; a line keeps its colour and style in every panel, and one legend per
figure names them. Lines and panels with no run are left out. Axis labels come from the
dataset's CF attributes and the model (the door's errors are misclassified fractions).
"""

from __future__ import annotations

import itertools
import json
import textwrap

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .models import MODELS
from .study import DEFAULT_FIGURES

FORMATS = ("png", "pdf")
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")


def wilson_interval(successes: np.ndarray, trials: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval ``(low, high)`` of a binomial proportion (NaN where trials = 0)."""
    successes, trials = np.asarray(successes, float), np.asarray(trials, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = successes / trials
        denominator = 1 + z**2 / trials
        centre = (share + z**2 / (2 * trials)) / denominator
        half = z / denominator * np.sqrt(share * (1 - share) / trials + z**2 / (4 * trials**2))
    return centre - half, centre + half


def default_settings(ds: xr.Dataset) -> dict:
    """The ``[plot]`` settings of a study without that table."""
    return {"figures": DEFAULT_FIGURES, "panels": (), "error_scale": "log", "theory": None, "seeds": ()}


# --- lines and panels ---------------------------------------------------------------------------

def models(ds: xr.Dataset) -> list[str]:
    """The model of each optimizer (the ``model`` coordinate; older datasets: the study's model)."""
    if "model" in ds.coords:
        return [str(m) for m in ds["model"].values]
    return [json.loads(ds.attrs["study"]).get("model", "pr-quadratic")] * ds.sizes["optimizer"]


def _line_keys(ds: xr.Dataset, optimizer_index: int, sizes: dict) -> dict:
    """Every panel key's value for one line: the optimizer, its coordinates, the model, p, hidden."""
    keys = {"optimizer": str(ds.optimizer.values[optimizer_index]), "model": models(ds)[optimizer_index]}
    for name in ("algorithm", "update", "momentum", "lr", "lr_scaling", "batch_fraction", "tau"):
        if name in ds.coords:
            value = ds[name].values[optimizer_index]
            keys[name] = value.item() if hasattr(value, "item") else value
    return keys | sizes


def lines(da: xr.DataArray, panels: tuple[str, ...]) -> list[tuple[tuple, str, xr.DataArray]]:
    """``(panel, label, line)`` for every optimizer x p x hidden of ``da`` that has data: ``panel``
    holds the line's values of the ``panels`` keys, ``label`` names what varies between lines
    besides the panels (:func:`_labels`), ``line`` is over ``alpha, seed`` (and ``epoch``)."""
    ds = da.to_dataset(name="_")
    sized = [d for d in ("p", "hidden") if d in da.dims]
    found = []
    for index in range(da.sizes["optimizer"]):
        for values in itertools.product(*(da[d].values for d in sized)):
            selection = {"optimizer": index} | {d: list(da[d].values).index(v) for d, v in zip(sized, values)}
            line = da.isel(selection)
            if not bool(line.notnull().any()):
                continue  # the study does not run this combination
            sizes = {d: int(v) for d, v in zip(sized, values)}
            for d in ("p", "hidden"):
                if d not in sizes and d in da.coords:
                    sizes[d] = int(da[d].values)
            found.append((_line_keys(ds, index, sizes), line))
    labels = _labels([keys for keys, _ in found], panels)
    return [(tuple(keys[k] for k in panels), label, line) for (keys, line), label in zip(found, labels)]


def at_line(values: xr.DataArray, line: xr.DataArray) -> xr.DataArray:
    """``values`` (a final variable) at the optimizer, p and hidden of a line from :func:`lines`."""
    return values.sel({d: line[d].item() for d in ("optimizer", "p", "hidden") if d in values.dims})


#: Line keys that a ``key=value`` label can name alone (the optimizer's kind does not vary).
_VALUE_KEYS = ("lr", "batch_fraction", "tau", "momentum", "lr_scaling", "p", "hidden")


def _labels(keys: list[dict], panels: tuple[str, ...]) -> list[str]:
    """A label per line naming what tells it apart from the other lines of its panel, so that a
    line keeps its name and colour from panel to panel. The first that tells every panel's lines
    apart: the varied values alone (``lr=0.005``, ``p=512``) when only such values vary besides
    the panel keys; the optimizer's kind (``p-sgd+nesterov``) with the values that vary within
    a kind; the optimizer label without the panels' ``,key=value`` parts (and p / hidden)."""
    if not keys:
        return []
    varied = [k for k in keys[0] if k not in panels + ("optimizer",) and len({str(line[k]) for line in keys}) > 1]
    candidates = []
    if varied and all(k in _VALUE_KEYS for k in varied):
        candidates.append([_values(line, varied) for line in keys])
    if "optimizer" not in panels and "algorithm" in keys[0]:
        kinds = [line["algorithm"] if line["update"] == "plain" else f"{line['algorithm']}+{line['update']}" for line in keys]
        within = [k for k in varied if k in _VALUE_KEYS
                  and any(len({str(line[k]) for line, other in zip(keys, kinds) if other == kind}) > 1 for kind in set(kinds))]
        candidates.append([", ".join(filter(None, (kind, _values(line, within)))) for kind, line in zip(kinds, keys)])
    for labels in candidates:
        placed = {(tuple(line[k] for k in panels), label) for line, label in zip(keys, labels)}
        if len(placed) == len(keys):  # the labels tell every line of a panel apart
            return labels
    labels = []
    for line in keys:
        parts = []
        if "optimizer" not in panels:
            label = line["optimizer"]
            for k in panels:
                label = label.replace(f",{k}={line[k]}", "")
            parts.append(label)
        parts += [f"{d}={line[d]}" for d in ("p", "hidden") if d in varied]
        labels.append(", ".join(parts))
    return labels


def _values(line: dict, names: list[str]) -> str:
    return ", ".join(f"{k}={line[k]:g}" if isinstance(line[k], float) else f"{k}={line[k]}" for k in names)


def _panel_title(panels: tuple[str, ...], panel: tuple) -> str:
    text = [f"{v:g}" if isinstance(v, float) else str(v) for v in panel]
    return ", ".join(v if k in ("optimizer", "model") else f"{k}={v}" for k, v in zip(panels, text))


def panel_grid(found, panels: tuple[str, ...], rows_extra: int = 1, width: float = 4.2, height: float = 3.2):
    """A figure with a panel per distinct ``panel`` of ``found`` (rows by the first key, columns by
    the second, in order of appearance); returns ``(figure, axes by panel)``. Grid places with
    no line are hidden."""
    row_values = list(dict.fromkeys(p[0] for p, _, _ in found)) if panels else [()]
    col_values = list(dict.fromkeys(p[1] for p, _, _ in found)) if len(panels) > 1 else [()]
    if len(panels) == 1:  # a single key: panels in a row
        row_values, col_values = [()], row_values
    figure = Figure(figsize=(width * len(col_values) + 1.5, height * len(row_values) * rows_extra), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(row_values) * rows_extra, len(col_values), squeeze=False))
    by_panel = {}
    for r, row in enumerate(row_values):
        for c, col in enumerate(col_values):
            panel = (row, col) if len(panels) == 2 else (col,) if panels else ()
            by_panel[panel] = [axes[r * rows_extra + k, c] for k in range(rows_extra)]
    used = {p for p, _, _ in found}
    for panel, column in by_panel.items():
        for ax in column:
            ax.set_visible(panel in used)
            if panels:
                ax.set_title(_panel_title(panels, panel), fontsize="small")
    return figure, by_panel


def line_styles(found) -> dict:
    """A colour, line style and marker per label, distinct past ten lines (tab10, then styles)."""
    from matplotlib import colormaps

    labels = list(dict.fromkeys(label for _, label, _ in found))
    colours = colormaps["tab10"].colors
    return {label: {"color": colours[i % 10], "linestyle": LINE_STYLES[(i // 10) % 4], "marker": MARKERS[(i // 10) % 5]}
            for i, label in enumerate(labels)}


def figure_legend(figure: Figure, by_panel: dict, extra_title: str = "") -> None:
    """One legend for the figure, outside the panels, each label once."""
    handles = {}
    for column in by_panel.values():
        for ax in column:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
    handles.pop("", None)
    if handles:
        figure.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small",
                      title=extra_title or None, title_fontsize="small")


def figure_title(figure: Figure, ds: xr.Dataset) -> None:
    figure.suptitle(textwrap.fill(ds.attrs.get("title", ""), 90), fontsize="small")


# --- labels and theory ----------------------------------------------------------------------------

def error_label(ds: xr.Dataset, name: str, template: str = "{}") -> str:
    """The axis label of ``train_error`` or ``test_error`` for the study's models: the door's errors
    are misclassified fractions; pr-quadratic's test error is its population error (SPEC 3)."""
    tasks = {MODELS[m].task for m in models(ds)}
    kind = "training error" if name.startswith("train") else "test error"
    if tasks == {"symmetric-door"}:
        what = f"{kind} (fraction misclassified)"
    elif name.startswith("test") and set(models(ds)) == {"pr-quadratic"}:
        what = "test error (population error)"
    elif name.startswith("test"):
        what = "test error (sampled test set)" if "pr-quadratic" not in models(ds) else "test error"
    else:
        what = kind
    return textwrap.fill(template.format(what), 40)


def theory_task(ds: xr.Dataset, settings: dict) -> str | None:
    """The task whose state-evolution lines are drawn: with ``theory`` (default: the study runs
    GAMP), when every model of the study shares one task."""
    theory = settings.get("theory")
    if theory is None:
        theory = "algorithm" in ds.coords and "gamp" in [str(a) for a in ds["algorithm"].values]
    tasks = {MODELS[m].task for m in models(ds)}
    return tasks.pop() if theory and len(tasks) == 1 else None


def threshold_line(ax, task: str) -> None:
    from .state_evolution import amp_threshold

    ax.axvline(amp_threshold(task), color="grey", linestyle="--", label="AMP threshold (state evolution)")


# --- figures --------------------------------------------------------------------------------------

def share_with_interval(ax, runs: xr.DataArray, **style) -> None:
    """The share of ``runs`` (over ``alpha, seed``: 1, 0, NaN where not run) per alpha on ``ax``,
    with its 95% Wilson interval as error bars; alphas without a run are left out."""
    trials = runs.notnull().sum("seed").values
    keep = trials > 0
    hits = runs.sum("seed").values[keep]
    low, high = wilson_interval(hits, trials[keep])
    share = hits / trials[keep]
    ax.errorbar(runs.alpha.values[keep], share, yerr=np.clip([share - low, high - share], 0, None), **style)


def _fraction_figure(ds: xr.Dataset, settings: dict, counted: xr.DataArray, ylabel: str) -> Figure:
    """A share of runs per alpha (``counted``: 1, 0, NaN where not run), with 95% Wilson intervals."""
    found = lines(counted, settings["panels"])
    figure, by_panel = panel_grid(found, settings["panels"])
    styles = line_styles(found)
    task = theory_task(ds, settings)
    for panel, label, line in found:
        share_with_interval(by_panel[panel][0], line, capsize=3, label=label, **styles[label])
    for column in by_panel.values():
        ax = column[0]
        if task is not None:
            threshold_line(ax, task)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(ds.alpha.attrs.get("long_name", "alpha"))
        ax.set_ylabel(ylabel)
    figure_legend(figure, by_panel)
    figure_title(figure, ds)
    return figure


def success_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Success probability vs alpha, with 95% Wilson intervals over the seeds run; with ``theory``,
    state evolution's algorithmic threshold as a vertical line."""
    settings = settings or default_settings(ds)
    return _fraction_figure(ds, settings, ds.success, "success probability\n(95% Wilson interval over the runs)")


def diverged_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """The fraction of runs that diverged (status ``diverged``; a failure, SPEC 6) vs alpha."""
    settings = settings or default_settings(ds)
    diverged = xr.where(ds.status == "diverged", 1.0, 0.0).where(ds.success.notnull())
    return _fraction_figure(ds, settings, diverged, "diverged fraction\n(95% Wilson interval)")


def _mean_error(ax, ds: xr.Dataset, name: str, found, styles, scale: str, task: str | None) -> None:
    """Mean final error over seeds vs alpha on ``ax``, with state evolution's lines for ``task``."""
    for _, label, line in found:
        mean = line.mean("seed")
        keep = mean.notnull().values
        ax.plot(line.alpha.values[keep], mean.values[keep], label=label, **styles[label])
    if task is not None and name == "test_error":
        from .state_evolution import door_bayes_test_error, mse

        alphas = np.linspace(float(ds.alpha.min()), float(ds.alpha.max()), 40)
        if task == "symmetric-door":
            ax.plot(alphas, [max(door_bayes_test_error(a), 1e-6) for a in alphas], color="black", linestyle=":",
                    label="state evolution: Bayes-optimal test error")
        elif "gamp" in [str(a) for a in ds["algorithm"].values]:
            ax.plot(alphas, [max(mse(task, a), 1e-6) for a in alphas], color="grey", linestyle="--",
                    label="state evolution: weights' MSE 1 - q")
    if task is not None:
        threshold_line(ax, task)
    ax.set_yscale(scale)
    ax.set_xlabel(ds.alpha.attrs.get("long_name", "alpha"))
    ax.set_ylabel(error_label(ds, name, "mean final {} over seeds"))


def _error_figure(ds: xr.Dataset, settings: dict, names: tuple[str, ...]) -> Figure:
    """Mean final errors vs alpha: one row of panels per name in ``names``."""
    found = {name: lines(ds[name], settings["panels"]) for name in names}
    figure, by_panel = panel_grid(found[names[0]], settings["panels"], rows_extra=len(names))
    styles = line_styles(found[names[0]])
    task = theory_task(ds, settings)
    for k, name in enumerate(names):
        for panel, column in by_panel.items():
            mine = [entry for entry in found[name] if entry[0] == panel]
            if mine:
                _mean_error(column[k], ds, name, mine, styles, settings["error_scale"], task)
    figure_legend(figure, by_panel)
    figure_title(figure, ds)
    return figure


def test_error_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Mean final test error over seeds vs alpha (``error_scale`` axis); with ``theory``, state
    evolution's threshold, the door's Bayes-optimal test error and, with GAMP, the weights' MSE."""
    return _error_figure(ds, settings or default_settings(ds), ("test_error",))


def train_error_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Mean final training error over seeds vs alpha."""
    return _error_figure(ds, settings or default_settings(ds), ("train_error",))


def errors_figure(ds: xr.Dataset, settings: dict | None = None) -> Figure:
    """Mean final test error (top row) and training error (bottom row) vs alpha."""
    return _error_figure(ds, settings or default_settings(ds), ("test_error", "train_error"))


def colours(count: int):
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0, 0.9, count))
