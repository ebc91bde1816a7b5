"""The statistics that the momentum and DMFT figures and :mod:`phaseret.dmft_agreement` share:
each run's trajectory held at its final value after its stop, means with standard errors, an
optimizer's plain twin, and the gain of an update rule over plain steps paired seed by seed (runs)
or replicate by replicate (DMFT)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def hold_final(runs: np.ndarray, finals: np.ndarray) -> np.ndarray:
    """Trajectories (seed, epoch) with each run's final value over the NaNs after its stop."""
    return np.where(np.isnan(runs), finals[:, None], runs)


def mean_and_stderr(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean over ``rows`` (axis 0) and its standard error (zero for one row)."""
    mean = rows.mean(axis=0)
    return mean, rows.std(axis=0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else 0 * mean


def median_and_stderr(rows: np.ndarray, resamples: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The median over ``rows`` (axis 0) and its bootstrap standard error: the spread of the median
    of ``len(rows)`` rows drawn with replacement, over ``resamples`` draws from a fixed ``seed`` (the
    same numbers on every call); zero for one row."""
    median = np.median(rows, axis=0)
    if len(rows) < 2:
        return median, 0 * median
    rng = np.random.default_rng(seed)
    draws = [np.median(rows[rng.integers(0, len(rows), len(rows))], axis=0) for _ in range(resamples)]
    return median, np.std(draws, axis=0, ddof=1)


def held_runs(ds: xr.Dataset, name: str, at: dict) -> np.ndarray:
    """``NAME_trajectory`` at ``at`` as (run, epoch), each run holding its final value after its stop
    and NaN throughout for runs that never started; the same run order for every ``at``."""
    runs = ds[f"{name}_trajectory"].sel(at)
    epochs = ds.epoch.values
    runs = runs.transpose(*[d for d in runs.dims if d != "epoch"], "epoch").values.reshape(-1, len(epochs))
    held = hold_final(runs, ds[name].sel(at).values.reshape(-1))
    held[np.isnan(runs[:, 0])] = np.nan
    return held


def started(rows: np.ndarray) -> np.ndarray:
    """The rows (run or replicate, epoch) that hold a trajectory (not NaN at the first epoch)."""
    return rows[~np.isnan(rows[:, 0])]


def plain_twins(ds: xr.Dataset) -> list[tuple[str, str]]:
    """``(optimizer, twin)`` for each optimizer whose update is not plain and whose twin, with
    update plain and every other coordinate along ``optimizer`` but the momentum equal, is in ``ds``."""
    same = [name for name, coord in ds.optimizer.coords.items()
            if coord.dims == ("optimizer",) and name not in ("optimizer", "update", "momentum")]

    def key(label):
        return [ds[name].sel(optimizer=label).item() for name in same]

    def equal(a, b):
        return all(x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))
                   for x, y in zip(a, b))

    labels = [str(label) for label in ds.optimizer.values]
    plain = [label for label in labels if ds["update"].sel(optimizer=label).item() == "plain"]
    return [(label, twin) for label in labels if label not in plain
            for twin in plain if equal(key(label), key(twin))]


def runs_gain(ds: xr.Dataset, label: str, twin: str, at: dict) -> np.ndarray:
    """overlap(``label``) - overlap(``twin``) seed by seed at ``at`` (alpha, p) as (seed, epoch),
    each run held after its stop, the seeds that either never started left out."""
    own, plain = (held_runs(ds, "overlap", {"optimizer": name} | at) for name in (label, twin))
    return started(own - plain)


def dmft_gain(ds: xr.Dataset, label: str, twin: str, alpha: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The DMFT's overlap gain of ``label`` over ``twin`` at ``alpha``: ``(mean, stderr, n)`` over
    the epochs, paired replicate by replicate over the ``n`` replicates both solutions kept (the
    same solver seeds and paths); with fewer than two, the difference of the two curves with their
    standard errors combined (NaN without them) and ``n = 0``."""
    pairs = dmft_gain_by_replicate(ds, label, twin, alpha)
    if len(pairs) > 1:
        return *mean_and_stderr(pairs), len(pairs)
    curves = ds.dmft_overlap_trajectory.sel(alpha=alpha)
    gain = (curves.sel(optimizer=label) - curves.sel(optimizer=twin)).values
    spread = ds.get("dmft_overlap_trajectory_stderr")
    error = (np.hypot(spread.sel(optimizer=label, alpha=alpha), spread.sel(optimizer=twin, alpha=alpha)).values
             if spread is not None else np.full(len(gain), np.nan))
    return gain, error, 0


def dmft_gain_by_replicate(ds: xr.Dataset, label: str, twin: str, alpha: float) -> np.ndarray:
    """overlap(``label``) - overlap(``twin``) of the DMFT at ``alpha``, replicate by replicate over
    the replicates both solutions kept, as (replicate, epoch); no rows where the dataset does not
    record its replicates (``dmft_overlap_by_replicate``)."""
    if "dmft_overlap_by_replicate" not in ds:
        return np.empty((0, ds.sizes["epoch"]))
    own, other = (ds.dmft_overlap_by_replicate.sel(optimizer=name, alpha=alpha).values for name in (label, twin))
    both = ~np.isnan(own[:, 0]) & ~np.isnan(other[:, 0])
    return own[both] - other[both]
