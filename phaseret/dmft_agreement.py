"""How far a study's DMFT lies from its runs (issue 16), in the runs' own units and in standard
errors, so that the comparisons of the README can be rerun: ``phaseret compare DIR``.

For each optimizer with DMFT curves, alpha and quantity (overlap, test error, training loss per
sample: the runs' summed loss over n) and each grid epoch t the DMFT solved: the gap
``g(t) = DMFT(t) - mean of the runs(t)`` and its standard error ``s(t) = hypot(runs' stderr,
DMFT's stderr over its replicates)`` (each run holds its final value after its stop). Reported:
the largest ``|g| / s`` and its epoch, the largest ``|g|``, the epochs where the DMFT lies above
(by 1e-9 or more), and the mean of g over the last half of the compared epochs (on the
log-spaced grid: late times). Where the DMFT kept its replicates the quantities ``overlap_median``,
``test_error_median`` and ``train_loss_median`` compare their median with the runs' median instead
of the means, each with its bootstrap standard error (:func:`~phaseret.paired.median_and_stderr`;
a ``dmft.nc`` that kept each replicate's overlap only has the first): if each solution and each
run is one curve shifted by a random time, the median sits on that curve however wide the
spread, while a mean falls below it where the curve bends toward overlap 1, the further the
wider (README, alpha 3.5). For
each optimizer and its plain twin (``momentum_gain``): the gain overlap(optimizer) -
overlap(twin), paired seed by seed in the runs and replicate by replicate in the DMFT, at the last
compared epoch T, the largest gap between the two gains in standard errors,
and the gain's rise: each seed's (replicate's) mean gain over the grid epochs in [0.7 T, T] minus
its mean over [0.1 T, 0.4 T] (:data:`EARLY`, :data:`LATE`), with the standard error over seeds
(replicates). The rise asks whether an update rule that starts slower overtakes later, with the
offsets a seed or a solution carries throughout subtracted; its windows are stated, not tuned.

The runs may come from another folder of the same study (``--runs``: the full scale's p = 4096
runs against the DMFT of the quick folder); they are interpolated onto the DMFT's grid linearly
in log(1 + epoch) where the grids differ. A gap below 1e-9 counts as 0 standard errors (at the
shared start both standard errors are 0 up to rounding), a larger one with no error as
infinitely many."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import xarray as xr

from .data import n_samples
from .paired import (dmft_gain, dmft_gain_by_replicate, held_runs, mean_and_stderr, median_and_stderr, plain_twins,
                     runs_gain, started)

QUANTITIES = ("overlap", "test_error", "train_loss")
#: The medians' rows and their quantities: the DMFT replicates' median against the runs' median.
MEDIANS = {f"{quantity}_median": quantity for quantity in QUANTITIES}
#: Below this a gap counts as none (the runs' and DMFT's shared start, where both errors are ~0).
EXACT = 1e-9
#: The gain's rise: its mean over the grid epochs in LATE minus over EARLY, as fractions of the
#: last compared epoch.
EARLY, LATE = (0.1, 0.4), (0.7, 1.0)
#: The CF long names of the tables' variables.
LONG_NAMES = {
    "largest_gap_in_stderr": "largest |DMFT - mean of the runs| (the _median quantities: |median of the DMFT "
                             "replicates - median of the runs|) over the grid epochs, in standard errors of the "
                             "difference",
    "epoch_of_largest_gap_in_stderr": "epoch of the largest gap in standard errors",
    "largest_gap": "largest |DMFT - mean of the runs| (the _median quantities: of the medians) over the grid epochs",
    "late_mean_gap": "mean of DMFT - mean of the runs (the _median quantities: of the medians) over the later half "
                     "of the compared grid epochs",
    "epochs_above": "grid epochs where the DMFT lies above the runs' mean by 1e-9 or more",
    "epochs_compared": "grid epochs where both the DMFT and the runs have a value",
    "runs": "runs averaged", "replicates": "DMFT replicates averaged (NaN: not recorded)",
    "last_epoch": "last grid epoch compared",
    "runs_gain": "runs' overlap gain over the plain twin at gain_epoch, paired seed by seed",
    "runs_gain_stderr": "standard error of runs_gain",
    "dmft_gain": "DMFT's overlap gain over the plain twin at gain_epoch, paired replicate by replicate",
    "dmft_gain_stderr": "standard error of dmft_gain",
    "gain_epoch": "last grid epoch the DMFT solved",
    "largest_gain_gap_in_stderr": "largest |DMFT's gain - runs' gain| over the grid epochs, in standard errors",
    "epoch_of_largest_gain_gap_in_stderr": "epoch of the largest gap between the gains",
    "runs_gain_rise": f"runs' mean gain over epochs {LATE[0]:g}-{LATE[1]:g} gain_epoch minus over "
                      f"{EARLY[0]:g}-{EARLY[1]:g} gain_epoch, seed by seed",
    "runs_gain_rise_stderr": "standard error of runs_gain_rise",
    "dmft_gain_rise": f"DMFT's mean gain over epochs {LATE[0]:g}-{LATE[1]:g} gain_epoch minus over "
                      f"{EARLY[0]:g}-{EARLY[1]:g} gain_epoch, replicate by replicate (NaN: fewer than two paired "
                      "replicates)",
    "dmft_gain_rise_stderr": "standard error of dmft_gain_rise",
}


def _in_stderr(gap: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``|gap| / error``: 0 for a gap below :data:`EXACT` (the shared start), inf for a larger gap
    with a zero error."""
    ratio = np.divide(np.abs(gap), error, out=np.full(np.shape(gap), np.inf), where=error > 0)
    return np.where(np.abs(gap) < EXACT, 0.0, ratio)


def _on_grid(rows: np.ndarray, epochs: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Rows (run, epoch over ``epochs``) on ``grid``, linear in log(1 + epoch); NaN past ``epochs``."""
    if len(epochs) == len(grid) and (epochs == grid).all():
        return rows
    x, at = np.log1p(epochs), np.log1p(grid)
    out = np.array([np.interp(at, x, row) for row in rows]).reshape(len(rows), len(grid))
    out[:, grid > epochs[-1]] = np.nan
    return out


def _check(dmft_ds: xr.Dataset, runs_ds: xr.Dataset) -> None:
    """Refuse, naming the reason, datasets that cannot be compared."""
    if "dmft_overlap_trajectory" not in dmft_ds:
        raise ValueError("DIR: the dataset holds no DMFT curves; give the study a [dmft] table and run it")
    if "overlap_trajectory" not in runs_ds:
        raise ValueError("--runs: the runs' dataset holds no trajectories (folders drawn together with different "
                         "epoch grids); compare one folder at a time")
    labels = [str(label) for label in dmft_ds.optimizer.values if _has_dmft(dmft_ds, label)]
    missing = [label for label in labels if label not in runs_ds.optimizer.values]
    if missing:
        raise ValueError(f"--runs: the runs' dataset has no optimizer {', '.join(missing)} (it has "
                         f"{', '.join(map(str, runs_ds.optimizer.values))}); compare runs of the same study")
    settings = [name for name, coord in dmft_ds.optimizer.coords.items()
                if coord.dims == ("optimizer",) and name != "optimizer" and name in runs_ds.coords]
    for label, name in itertools.product(labels, settings):
        theory, runs = (d[name].sel(optimizer=label).item() for d in (dmft_ds, runs_ds))
        if theory != runs and not (theory != theory and runs != runs):  # NaN (no momentum) equals NaN
            raise ValueError(f"--runs: optimizer {label} has {name} = {runs!r} in the runs but {theory!r} in the DMFT's "
                             "study; compare runs of the same study")
    starts = [json.loads(d.attrs.get("study", "{}")).get("init_overlap") for d in (dmft_ds, runs_ds)]
    if starts[0] != starts[1]:
        raise ValueError(f"--runs: the runs start at init_overlap = {starts[1]!r}, the DMFT at {starts[0]!r}; "
                         "compare runs of the same study")


def _has_dmft(ds: xr.Dataset, label) -> bool:
    return bool(np.isfinite(ds.dmft_overlap_trajectory.sel(optimizer=label)).any())


def agreement(dmft_ds: xr.Dataset, runs_ds: xr.Dataset | None = None) -> xr.Dataset:
    """The DMFT of ``dmft_ds`` against the runs of ``runs_ds`` (default the same dataset): the
    curves' table over ``(quantity, optimizer, alpha, p)`` and the gains' table over ``(pair,
    alpha, p)``, a p for each size the runs have (a study over several p: each p's runs against
    the one DMFT), NaN where an optimizer has no DMFT or no runs (module docstring)."""
    runs_ds = dmft_ds if runs_ds is None else runs_ds
    _check(dmft_ds, runs_ds)
    sizes = [int(p) for p in np.atleast_1d(runs_ds.p.values)]
    parts = [_at_size(dmft_ds, runs_ds.sel(p=p) if "p" in runs_ds.dims else runs_ds) for p in sizes]
    return xr.concat(parts, dim=xr.DataArray(sizes, dims="p", name="p", attrs={"long_name": "dimension p of the runs"}))


def _at_size(dmft_ds: xr.Dataset, runs_ds: xr.Dataset) -> xr.Dataset:
    """:func:`agreement` against the runs of one p."""
    labels = [str(label) for label in dmft_ds.optimizer.values if _has_dmft(dmft_ds, label)]
    alphas = [a for a in dmft_ds.alpha.values if a in runs_ds.alpha.values]
    grid = dmft_ds.epoch.values
    quantities = [q for q in QUANTITIES if f"dmft_{q}_trajectory" in dmft_ds and f"{q}_trajectory" in runs_ds]
    quantities += [median for median, q in MEDIANS.items() if f"dmft_{q}_by_replicate" in dmft_ds
                   and f"{q}_trajectory" in runs_ds]
    names = ("largest_gap_in_stderr", "epoch_of_largest_gap_in_stderr", "largest_gap", "late_mean_gap",
             "epochs_above", "epochs_compared", "runs", "replicates", "last_epoch")
    table = {name: np.full((len(quantities), len(labels), len(alphas)), np.nan) for name in names}
    for (q, quantity), (o, label), (a, alpha) in _cells(quantities, labels, alphas):
        median, measured = quantity in MEDIANS, MEDIANS.get(quantity, quantity)
        replicates = _replicates(dmft_ds, label, alpha, measured if median else "overlap")
        runs = started(held_runs(runs_ds, measured, {"optimizer": label, "alpha": alpha}))
        if not len(runs) or (median and not replicates >= 2):
            continue
        theory, theory_error = _theory(dmft_ds, quantity, label, alpha)
        if measured == "train_loss":  # the runs' loss is summed over the n samples, the DMFT's per sample
            runs = runs / n_samples(alpha, int(runs_ds.p))
        mean, error = (median_and_stderr if median else mean_and_stderr)(_on_grid(runs, runs_ds.epoch.values, grid))
        found = _gaps(theory, theory_error, mean, error)
        if found is None:
            continue
        compared, gap, ratio = found
        epochs = grid[compared]
        values = {"largest_gap_in_stderr": ratio.max(), "epoch_of_largest_gap_in_stderr": epochs[ratio.argmax()],
                  "largest_gap": np.abs(gap).max(), "late_mean_gap": gap[len(gap) // 2:].mean(),
                  "epochs_above": (gap >= EXACT).sum(), "epochs_compared": len(gap), "runs": len(runs),
                  "replicates": replicates, "last_epoch": epochs[-1]}
        for name, value in values.items():
            table[name][q, o, a] = value
    data = _variables(table, ("quantity", "optimizer", "alpha")) | _gains(dmft_ds, runs_ds, labels, alphas, grid)
    return xr.Dataset(data, coords={"quantity": quantities, "optimizer": labels, "alpha": alphas},
                      attrs={"title": "DMFT against the runs (phaseret compare)", "Conventions": "CF-1.8"})


def _theory(dmft_ds: xr.Dataset, quantity: str, label: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The DMFT's curve of ``quantity`` over the grid and its standard error (0 where not recorded);
    for one of :data:`MEDIANS` the median of its replicates with the bootstrap error."""
    if quantity in MEDIANS:
        each = dmft_ds[f"dmft_{MEDIANS[quantity]}_by_replicate"].sel(optimizer=label, alpha=alpha).values
        return median_and_stderr(started(each))
    theory = dmft_ds[f"dmft_{quantity}_trajectory"].sel(optimizer=label, alpha=alpha).values
    spread = dmft_ds.get(f"dmft_{quantity}_trajectory_stderr")
    return theory, spread.sel(optimizer=label, alpha=alpha).values if spread is not None else 0 * theory


def _gaps(theory: np.ndarray, theory_error: np.ndarray, mean: np.ndarray, error: np.ndarray):
    """``(compared, gap, ratio)``: the epochs where both the DMFT (``theory`` +- ``theory_error``)
    and the runs' ``mean`` +- ``error`` have a value, the gap ``theory - mean`` there and its size
    in standard errors of the difference (a missing DMFT error counts as 0); None where no epoch is
    compared."""
    gap = theory - mean
    compared = np.isfinite(gap)
    if not compared.any():
        return None
    return compared, gap[compared], _in_stderr(gap, np.hypot(error, np.nan_to_num(theory_error)))[compared]


def _variables(table: dict, dims: tuple) -> dict:
    """The arrays of ``table`` (name -> array over ``dims``) as Dataset variables with CF attributes."""
    return {name: (dims, array, {"long_name": LONG_NAMES[name], "units": "1"}) for name, array in table.items()}


def _cells(*axes):
    """Every combination of the axes' (index, value) pairs."""
    return itertools.product(*(list(enumerate(axis)) for axis in axes))


def _replicates(ds: xr.Dataset, label: str, alpha: float, quantity: str = "overlap") -> float:
    """How many replicates' ``quantity`` the DMFT of ``label`` at ``alpha`` kept (NaN where the
    dataset predates their record, ``dmft_QUANTITY_by_replicate``; 0 for a solution stored before
    it and reused beside newer ones)."""
    if f"dmft_{quantity}_by_replicate" not in ds:
        return np.nan
    return int((~np.isnan(ds[f"dmft_{quantity}_by_replicate"].sel(optimizer=label, alpha=alpha).values[:, 0])).sum())


def _gains(dmft_ds, runs_ds, labels, alphas, grid) -> dict:
    """The gains' table (module docstring) as Dataset variables over ``(pair, alpha)``."""
    pairs = [(label, twin) for label, twin in plain_twins(dmft_ds) if label in labels and twin in labels]
    names = ("runs_gain", "runs_gain_stderr", "dmft_gain", "dmft_gain_stderr", "gain_epoch",
             "largest_gain_gap_in_stderr", "epoch_of_largest_gain_gap_in_stderr", "runs_gain_rise",
             "runs_gain_rise_stderr", "dmft_gain_rise", "dmft_gain_rise_stderr")
    table = {name: np.full((len(pairs), len(alphas)), np.nan) for name in names}
    for (i, (label, twin)), (a, alpha) in _cells(pairs, alphas):
        runs = _on_grid(runs_gain(runs_ds, label, twin, {"alpha": alpha}), runs_ds.epoch.values, grid)
        if not len(runs):
            continue
        runs_mean, runs_error = mean_and_stderr(runs)
        theory, theory_error, _ = dmft_gain(dmft_ds, label, twin, alpha)
        found = _gaps(theory, theory_error, runs_mean, runs_error)
        if found is None:
            continue
        compared, _, ratio = found
        last = np.flatnonzero(compared)[-1]
        runs_rise = _rise(runs, grid, grid[last])
        theory_rise = _rise(dmft_gain_by_replicate(dmft_ds, label, twin, alpha), grid, grid[last])
        values = {"runs_gain": runs_mean[last], "runs_gain_stderr": runs_error[last], "dmft_gain": theory[last],
                  "dmft_gain_stderr": theory_error[last], "gain_epoch": grid[last],
                  "largest_gain_gap_in_stderr": ratio.max(),
                  "epoch_of_largest_gain_gap_in_stderr": grid[compared][ratio.argmax()],
                  "runs_gain_rise": runs_rise[0], "runs_gain_rise_stderr": runs_rise[1],
                  "dmft_gain_rise": theory_rise[0], "dmft_gain_rise_stderr": theory_rise[1]}
        for name, value in values.items():
            table[name][i, a] = value
    pair_names = [f"{label} - {twin}" for label, twin in pairs]
    return _variables(table, ("pair", "alpha")) | {"pair": ("pair", pair_names)}


def _rise(rows: np.ndarray, grid: np.ndarray, last: float) -> tuple[float, float]:
    """The mean over ``rows`` (seed or replicate, epoch over ``grid``) of each row's mean in
    ``LATE`` minus its mean in ``EARLY`` (fractions of ``last``), and its standard error; NaN for
    fewer than two rows."""
    if len(rows) < 2:
        return np.nan, np.nan
    early, late = ((grid >= low * last) & (grid <= high * last) for low, high in (EARLY, LATE))
    mean, error = mean_and_stderr(rows[:, late].mean(axis=1) - rows[:, early].mean(axis=1))
    return float(mean), float(error)


def markdown(result: xr.Dataset) -> str:
    """The two tables of :func:`agreement` in Markdown."""
    rows = ["DMFT against the runs: gap = DMFT - mean of the runs (the _median quantities: median of the DMFT "
            "replicates - median of the runs, bootstrap errors), in standard errors of the difference", "",
            "| optimizer | alpha | p | quantity | largest gap (SE) | at epoch | largest gap | late mean gap | "
            "DMFT above | runs | replicates | last epoch |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in _filled(result, ("optimizer", "alpha", "p", "quantity"), "largest_gap_in_stderr"):
        rows.append(f"| {line.optimizer.item()} | {line.alpha.item():g} | {line.p.item()} | {line.quantity.item()} | "
                    f"{float(line.largest_gap_in_stderr):.2f} | {int(line.epoch_of_largest_gap_in_stderr)} | "
                    f"{float(line.largest_gap):.3f} | "
                    f"{float(line.late_mean_gap):+.3f} | {int(line.epochs_above)} of {int(line.epochs_compared)} | "
                    f"{int(line.runs)} | {_count(line.replicates)} | {int(line.last_epoch)} |")
    if result.sizes.get("pair"):
        rows += ["", "Gain over the plain twin (overlap), paired: runs seed by seed, DMFT replicate by replicate", "",
                 "| pair | alpha | p | epoch | runs' gain | DMFT's gain | largest gap between them (SE) | at epoch | "
                 "runs' rise | DMFT's rise |", "|---|---|---|---|---|---|---|---|---|---|"]
        for line in _filled(result, ("pair", "alpha", "p"), "runs_gain"):
            rows.append(f"| {line.pair.item()} | {line.alpha.item():g} | {line.p.item()} | {int(line.gain_epoch)} | "
                        f"{float(line.runs_gain):+.3f} +- {float(line.runs_gain_stderr):.3f} | "
                        f"{float(line.dmft_gain):+.3f} +- "
                        f"{float(line.dmft_gain_stderr):.3f} | {float(line.largest_gain_gap_in_stderr):.2f} | "
                        f"{int(line.epoch_of_largest_gain_gap_in_stderr)} | "
                        f"{_with_error(line.runs_gain_rise, line.runs_gain_rise_stderr)} | "
                        f"{_with_error(line.dmft_gain_rise, line.dmft_gain_rise_stderr)} |")
        rows += ["", f"rise: each seed's (replicate's) mean gain over epochs {LATE[0]:g}-{LATE[1]:g} of the last "
                 f"minus over {EARLY[0]:g}-{EARLY[1]:g}"]
    return "\n".join(rows)


def _filled(result: xr.Dataset, dims: tuple, name: str):
    """The selections of ``result`` at each combination of ``dims`` where ``name`` has a value."""
    for values in itertools.product(*(result[dim].values for dim in dims)):
        line = result.sel(dict(zip(dims, values)))
        if not np.isnan(float(line[name])):
            yield line


def _with_error(value, error) -> str:
    """``+v +- e``, or "-" where the value is not known (NaN)."""
    return "-" if np.isnan(float(value)) else f"{float(value):+.3f} +- {float(error):.3f}"


def _count(value) -> str:
    """A count, or "-" where it is not known (NaN)."""
    return "-" if np.isnan(float(value)) else str(int(value))


def write(result: xr.Dataset, out_dir: Path) -> list[Path]:
    """``dmft_agreement.nc`` and ``dmft_agreement.md`` in ``out_dir``."""
    from .results import write_dataset

    out_dir = Path(out_dir)
    path = out_dir / "dmft_agreement.nc"
    write_dataset(result, path)
    (out_dir / "dmft_agreement.md").write_text(markdown(result) + "\n")
    return [path, out_dir / "dmft_agreement.md"]
