"""``phaseret analyze``: thresholds with error bars, finite size and time to solution for a
study's dataset (SPEC 13; the statistics are :mod:`phaseret.inference`).

:func:`analyze` takes a study's dataset (``success``, ``epochs``, ``status`` over ``optimizer,
[p], [hidden], alpha, seed``) and returns the analysis as an ``xarray.Dataset`` with CF
attributes: per (optimizer, p, hidden) the threshold, per alpha the time to solution, and, when
p varies, the extrapolation to p -> infinity under both forms.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import xarray as xr

from . import inference

LINE_DIMS = ("optimizer", "p", "hidden")
KIND_TEXT = {"above": "no success: alpha_50 > {low:g}", "below": "success everywhere: alpha_50 < {high:g}",
             "between": "perfect separation: {low:g} < alpha_50 < {high:g}, width unidentified",
             "single": "one alpha run, some runs succeed: no threshold"}


def check(ds: xr.Dataset) -> None:
    """Refuse a dataset the analysis cannot read, naming what is missing."""
    for name in ("success", "epochs", "status"):
        if name not in ds:
            raise ValueError(f"DIR: the dataset has no `{name}`; analyze reads a study's dataset (success, epochs, status)")
    if "alpha" not in ds.success.dims:
        raise ValueError("alpha: the dataset has no alpha axis; a threshold needs a sweep over alpha")
    if ds.sizes["alpha"] < 2:
        raise ValueError(f"alpha: a threshold needs two alphas or more, the dataset has {ds.sizes['alpha']}")


def lines(ds: xr.Dataset):
    """``(index, selection)`` for every optimizer x [p] x [hidden] with runs."""
    dims = [d for d in LINE_DIMS if d in ds.success.dims]
    for values in itertools.product(*(ds[d].values for d in dims)):
        selection = dict(zip(dims, values))
        if bool(ds.success.sel(selection).notnull().any()):
            yield tuple(list(ds[d].values).index(v) for d, v in zip(dims, values)), selection


def times_to_solution(cell: xr.Dataset, budgets: dict | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(events, censored, diverged)`` of the runs of one (optimizer, p, hidden, alpha) ``cell``:
    epochs of the successes; the cell's budget (from ``budgets``, :meth:`phaseret.study.Study.budgets`;
    default the largest epochs run there) for the other runs that did not diverge (right-censored);
    the count of diverged runs (excluded)."""
    key = (str(cell.optimizer.values), int(cell.p), int(cell.hidden), float(cell.alpha))
    budget = None if budgets is None else budgets.get(key)
    ran = cell.success.notnull().values
    success = ran & (cell.success.values == 1)
    diverged = ran & (cell.status.values == "diverged")
    failed = ran & ~success & ~diverged
    budget = float(np.nanmax(cell.epochs.values)) if budget is None else budget
    return cell.epochs.values[success], np.full(int(failed.sum()), budget), int(diverged.sum())


def analyze(ds: xr.Dataset, budgets: dict | None = None, link: str = "logistic") -> xr.Dataset:
    """The analysis of a study's dataset; ``budgets`` maps ``(optimizer, p, hidden, alpha)`` to the
    cell's ``max_epochs`` (where runs that failed are censored)."""
    check(ds)
    inference._log_link(link)
    dims = tuple(d for d in LINE_DIMS if d in ds.success.dims)
    shape = tuple(ds.sizes[d] for d in dims)
    alphas = ds.alpha.values
    threshold_names = ("alpha_50", "alpha_50_low", "alpha_50_high", "width", "width_low", "width_high")
    out = {name: np.full(shape, np.nan) for name in threshold_names}
    counts = {name: np.zeros(shape, dtype=int) for name in ("runs", "successes", "diverged")}
    kinds = np.full(shape, "", dtype=object)
    survival = {name: np.full(shape + (len(alphas),), np.nan) for name in ("median_epochs", "median_epochs_low", "median_epochs_high")}
    survival_counts = {name: np.zeros(shape + (len(alphas),), dtype=int) for name in ("solved", "censored", "excluded_diverged")}
    for index, selection in lines(ds):
        runs = ds.success.sel(selection)
        trials = runs.notnull().sum("seed").values
        fit = inference.fit_threshold(alphas, np.nan_to_num(runs.sum("seed").values), trials, link)
        for name, value in zip(threshold_names, (fit.alpha_50, fit.low, fit.high, fit.width, fit.width_low, fit.width_high)):
            out[name][index] = value
        kinds[index] = fit.kind
        counts["runs"][index] = int(trials.sum())
        counts["successes"][index] = int(np.nansum(runs.values))
        counts["diverged"][index] = int((ds.status.sel(selection).values == "diverged").sum())
        for a, alpha in enumerate(alphas):
            cell = ds.sel(selection | {"alpha": alpha})
            if not bool(cell.success.notnull().any()):
                continue
            events, censored, diverged = times_to_solution(cell, budgets)
            estimate = inference.survival(events, censored)
            for name, value in zip(survival, (estimate.median, estimate.low, estimate.high)):
                survival[name][index + (a,)] = value
            for name, value in zip(survival_counts, (estimate.events, estimate.censored, diverged)):
                survival_counts[name][index + (a,)] = value
    cf = {
        "alpha_50": "sample ratio where the fitted success probability is 1/2 (NaN where the data give only bounds)",
        "alpha_50_low": "lower end of alpha_50's 95% profile-likelihood interval, or its lower bound",
        "alpha_50_high": "upper end of alpha_50's 95% profile-likelihood interval, or its upper bound",
        "width": "fitted width w of P(success) = F((alpha - alpha_50) / w)",
        "width_low": "lower end of the width's 95% profile-likelihood interval",
        "width_high": "upper end of the width's 95% profile-likelihood interval",
        "median_epochs": "Kaplan-Meier median time to solution (epochs; NaN where the survival stays above 1/2)",
        "median_epochs_low": "lower end of the median's 95% interval (epochs)",
        "median_epochs_high": "upper end of the median's 95% interval (epochs; inf where open)",
    }
    data = {name: (dims, values, {"long_name": cf[name], "units": "1"}) for name, values in out.items()}
    data["threshold_kind"] = (dims, kinds, {"long_name": "fit, above (no success), below (all succeed), between "
                                                         "(separation), single (one alpha, mixed outcomes)"})
    data |= {name: (dims, values, {"long_name": f"{name} runs over all alphas", "units": "1"}) for name, values in counts.items()}
    sweep = dims + ("alpha",)
    data |= {name: (sweep, values, {"long_name": cf[name], "units": "1"}) for name, values in survival.items()}
    data |= {name: (sweep, values, {"long_name": f"{name.replace('_', ' ')} runs (time to solution)", "units": "1"})
             for name, values in survival_counts.items()}
    coords = {d: ds[d].values for d in dims} | {"alpha": alphas}
    for name in ("p", "hidden"):
        if name not in dims and name in ds.coords:
            coords[name] = ds[name].values
    result = xr.Dataset(data, coords=coords, attrs={
        "title": f"thresholds and time to solution: {ds.attrs.get('title', '')}",
        "link": link, "Conventions": "CF-1.8", "references": "phaseret SPEC 13",
    })
    if "p" in dims and ds.sizes["p"] >= 2:
        result = result.merge(_finite_size(result))
    return result


def _finite_size(result: xr.Dataset) -> xr.Dataset:
    """The extrapolations of alpha_50(p) per optimizer x [hidden]: over a ``form`` dimension."""
    others = [d for d in ("optimizer", "hidden") if d in result.alpha_50.dims]
    names = ("alpha_inf", "alpha_inf_low", "alpha_inf_high", "slope", "chi2", "dof")
    shape = tuple(result.sizes[d] for d in others) + (len(inference.FORMS),)
    values = {name: np.full(shape, np.nan) for name in names}
    distinct = np.zeros(shape[:-1], dtype=int)
    for combo in itertools.product(*(range(result.sizes[d]) for d in others)):
        line = result.isel(dict(zip(others, combo)))
        try:
            fits = inference.extrapolate(line.p.values, line.alpha_50.values, line.alpha_50_low.values, line.alpha_50_high.values)
        except ValueError:
            continue  # fewer than two sizes with a fitted threshold: nothing to extrapolate
        for f, fit in enumerate(fits):
            for name, value in zip(names, (fit.alpha_inf, fit.low, fit.high, fit.c, fit.chi2, fit.dof)):
                values[name][combo + (f,)] = value
        distinct[combo] = int(inference.distinguishable(fits))
    dims = tuple(others) + ("form",)
    data = {name: (dims, array, {"long_name": f"{name} of alpha_50(p) = alpha_inf + slope p^-gamma (weighted least squares)",
                                 "units": "1"}) for name, array in values.items()}
    data["forms_distinguishable"] = (dims[:-1], distinct, {"long_name": "1 where the data tell the two forms apart"})
    return xr.Dataset(data, coords={"form": list(inference.FORMS)} | {d: result[d].values for d in others})


def markdown(result: xr.Dataset) -> str:
    """The thresholds as a Markdown table (bounds in words where the data give no number), and the
    extrapolations when p varies."""
    rows = ["| optimizer | p | d | alpha_50 (95% interval) | width (95% interval) | successes / runs | diverged |",
            "|---|---|---|---|---|---|---|"]
    dims = [d for d in LINE_DIMS if d in result.alpha_50.dims]
    for values in itertools.product(*(result[d].values for d in dims)):
        line = result.sel(dict(zip(dims, values)))
        if int(line.runs) == 0:
            continue
        p = int(line.p) if "p" in line.coords else "-"
        hidden = int(line.hidden) if "hidden" in line.coords else 1
        kind = str(line.threshold_kind.values)
        if kind == "fit":
            threshold = f"{float(line.alpha_50):.3f} [{float(line.alpha_50_low):.3f}, {float(line.alpha_50_high):.3f}]"
            width = f"{float(line.width):.3f} [{float(line.width_low):.3f}, {float(line.width_high):.3f}]"
        else:
            threshold = KIND_TEXT[kind].format(low=float(line.alpha_50_low), high=float(line.alpha_50_high))
            width = "-"
        rows.append(f"| {line.optimizer.values} | {p} | {hidden} | {threshold} | {width} | "
                    f"{int(line.successes)} / {int(line.runs)} | {int(line.diverged)} |")
    text = "\n".join(rows)
    if "alpha_inf" in result:
        text += "\n\n| optimizer | form | alpha_inf (95% interval) | chi2 / dof | forms told apart |\n|---|---|---|---|---|"
        others = [d for d in ("optimizer", "hidden") if d in result.alpha_inf.dims]
        for combo in itertools.product(*(result[d].values for d in others)):
            line = result.sel(dict(zip(others, combo)))
            for form in result.form.values:
                fit = line.sel(form=form)
                if np.isnan(float(fit.alpha_inf)):
                    continue
                text += (f"\n| {', '.join(map(str, combo))} | {form} | {float(fit.alpha_inf):.3f} "
                         f"[{float(fit.alpha_inf_low):.3f}, {float(fit.alpha_inf_high):.3f}] | "
                         f"{float(fit.chi2):.2f} / {int(fit.dof)} | {'yes' if int(line.forms_distinguishable) else 'no'} |")
    return text


def write(result: xr.Dataset, out_dir: Path) -> list[Path]:
    """``thresholds.nc`` and ``thresholds.md`` in ``out_dir``."""
    from .results import write_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "thresholds.nc"
    write_dataset(result.assign(threshold_kind=result.threshold_kind.astype(str)), path)
    (out_dir / "thresholds.md").write_text(markdown(result) + "\n")
    return [path, out_dir / "thresholds.md"]

