"""Results folders read back: one folder's dataset, several folders drawn together (SPEC 10:
"``phaseret plot`` can draw several results together"), each refused with the reason when it
cannot be read or when folders cannot share a figure."""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from . import figures, plots
from .models import MODELS
from .results import load_folder
from .study import Study


def open_folder(out_dir: Path) -> tuple[Study, xr.Dataset]:
    """The study of a results folder and its combined dataset ``out_dir/<name>.nc``, loaded."""
    study = load_folder(out_dir)
    path = Path(out_dir) / f"{study.name}.nc"
    if not path.exists():
        raise ValueError(f"DIR: {path} does not exist; finish the study first (phaseret run {study.source} --scale {study.scale})")
    try:
        with xr.open_dataset(path) as ds:
            return study, ds.load()
    except Exception as error:  # truncated or not netCDF: the study's next run writes it anew
        raise ValueError(f"DIR: {path} cannot be read ({type(error).__name__}: {error}); rerun the study to write it anew") from None


def plot_folder(out_dir: Path) -> list[Path]:
    """Draw the figures the study's ``[plot]`` table asks for into ``out_dir``; return the files."""
    study, ds = open_folder(out_dir)
    return figures.draw(ds, study.plot or plots.default_settings(ds), Path(out_dir), study.name)


def plot_folders(folders: list[Path], out_dir: Path) -> list[Path]:
    """Draw several results folders together into ``out_dir`` (named after it), with the first
    folder's ``[plot]`` settings: their datasets are merged over optimizer, p, hidden, alpha and
    seed. Folders of different tasks, success thresholds or clashing cells are refused."""
    opened = [open_folder(folder) for folder in folders]
    ds = combine_datasets([(Path(folder), ds) for folder, (_, ds) in zip(folders, opened)])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = opened[0][0]
    return figures.draw(ds, first.plot or plots.default_settings(ds), out_dir, out_dir.name)


def _same_grid(a: xr.Dataset, b: xr.Dataset) -> bool:
    return a.epoch.size == b.epoch.size and bool((a.epoch.values == b.epoch.values).all())


def _settings(ds: xr.Dataset) -> dict:
    return json.loads(ds.attrs.get("study", "{}"))


def combine_datasets(named: list[tuple[Path, xr.Dataset]]) -> xr.Dataset:
    """One dataset from several studies' datasets: ``p`` and ``hidden`` become dimensions, cells a
    study did not run stay NaN; trajectories are kept when every study has the same epoch grid. Refused (``ValueError`` naming the key): different tasks, different
    success thresholds, or one cell (optimizer, p, hidden, alpha, seed) with different values."""
    first_path, first = named[0]
    task = {MODELS[m].task for m in plots.models(first)}
    success = _settings(first).get("stop", {}).get("success")
    expanded = []
    for path, ds in named:
        other = {MODELS[m].task for m in plots.models(ds)}
        if other != task:
            raise ValueError(f"model: {first_path} studies {', '.join(sorted(task))} but {path} studies "
                             f"{', '.join(sorted(other))}; only folders of one task can share a figure")
        if _settings(ds).get("stop", {}).get("success") != success:
            raise ValueError(f"stop.success: {first_path} and {path} count success with different thresholds; "
                             "their success probabilities cannot share a figure")
        for name in ("p", "hidden"):
            if name not in ds.dims:
                ds = ds.expand_dims(name)
        expanded.append(ds.assign(status=ds.status.where(ds.status != "")))  # not run: missing, not a value
    if any(not _same_grid(first, ds) for _, ds in named[1:]):  # trajectories on other epochs: not drawn
        expanded = [ds.drop_vars([v for v in ds.data_vars if "epoch" in ds[v].dims] + ["epoch"]) for ds in expanded]
    try:
        merged = xr.merge(expanded, join="outer", compat="no_conflicts", combine_attrs="drop")
    except (xr.MergeError, ValueError) as error:
        names = ", ".join(str(p) for p, _ in named)
        raise ValueError(f"DIR: {names} disagree on a cell or on an optimizer's settings (same label, other "
                         f"values); give the optimizers distinct labels ({str(error).splitlines()[0]})") from None
    merged["status"] = merged.status.fillna("")
    for name in ("p", "hidden"):
        if merged.sizes[name] == 1:
            merged = merged.squeeze(name)
    merged.attrs = {"title": "; ".join(ds.attrs.get("title", "") for _, ds in named),
                    "study": first.attrs.get("study", "{}")}
    return merged
