"""Results on disk (SPEC 8): one netCDF file per finished cell, combined into one labelled dataset.

Every file is written to a temporary name in the same folder and moved into
place with ``os.replace``: a kill at any moment leaves either the old state or
the complete new file. A cell file that cannot be read back whole, or that
holds another configuration than the study's, counts as not done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__, dmft, dmft_curves
from .data import teacher
from .landscape import EXTREMES, MATRICES, spectrum_length
from .models import MODELS
from .records import TRAJECTORIES, VARIABLES, RunResult
from .study import Cell, Study, build_study, file_safe

#: Final values of a run: name -> (long_name, units); the trajectory variables add VARIABLES.
FINALS = {
    **VARIABLES,
    "epochs": ("epochs run", "1"),
    "success": ("success (final test error below the success threshold)", "1"),
    "wall_seconds": ("wall-clock time of the run", "s"),
}
#: Non-index coordinates of the optimizer dimension (SPEC 8): name -> (long_name, units or None).
OPTIMIZER_COORDS = {
    "model": ("model: task and loss (SPEC 2)", None),
    "algorithm": ("batch rule (SPEC 4)", None),
    "update": ("update rule (SPEC 5)", None),
    "momentum": ("momentum gamma", "1"),
    "lr": ("learning rate", "1"),
    "lr_scaling": ("learning-rate scaling (none, or hidden: step size lr * d)", None),
    "batch_fraction": ("expected batch fraction b", "1"),
    "tau": ("P-SGD persistence time", "1"),
}
CELLS = "cells"
STUDY_FILE = "study.json"
LOCK_FILE = ".phaseret.lock"


@contextlib.contextmanager
def folder_lock(out_dir: Path, wait: bool = False):
    """Hold ``out_dir``'s writer lock (an ``flock`` on ``out_dir/.phaseret.lock``, released by the
    OS when its process dies, SIGKILL included). Another holder: refused at once, naming it (host,
    pid, start), or with ``wait`` waited for."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another phaseret run"
            raise ValueError(f"out: {out_dir} is in use by {holder}; wait for it to finish, or pass --wait") from None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"phaseret run on {socket.gethostname()}, pid {os.getpid()}, since {started}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def claim_folder(study: Study, out_dir: Path) -> None:
    """Record the study in ``out_dir/study.json``; refuse a folder that holds another study."""
    record = {"name": study.name, "scale": study.scale, "source": study.source, "table": study.raw_table}
    path = Path(out_dir) / STUDY_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("name") != study.name:
            raise ValueError(f"out: {out_dir} holds the study {existing.get('name')!r}, not {study.name!r}; choose another folder")
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True)))


def load_folder(out_dir: Path) -> Study:
    """The study recorded in a results folder."""
    path = Path(out_dir) / STUDY_FILE
    if not path.exists():
        raise ValueError(f"DIR: {out_dir} holds no {STUDY_FILE}; is it the --out folder of `phaseret run`?")
    try:
        record = json.loads(path.read_text())
        return build_study(record["table"], record["scale"], source=record["source"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"DIR: {path} is not a study record phaseret can read ({error}); "
                         "rerun the study into a fresh folder") from None


def cell_path(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / CELLS / f"{cell.name}.nc"


def failure_path(out_dir: Path, cell: Cell) -> Path:
    return Path(out_dir) / CELLS / f"{cell.name}.failed.txt"


def write_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of a group
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_cell(out_dir: Path, cell: Cell, result: RunResult) -> None:
    """Store a finished cell: its finals, its trajectory and its configuration."""
    finals = {name: ((), float(getattr(result, name))) for name in FINALS}
    trajectory = {f"{name}_trajectory": ("epoch", result.trajectory[name].values) for name in trajectory_names(cell.record)}
    units = {"unit_overlaps": ("unit", result.unit_overlaps)}
    if "weights" in cell.record:
        units["weights"] = (("unit", "feature"), result.W)
    if "hessian" in cell.record:
        units["hessian_eigenvalues"] = (("hessian", "eigenvalue"), _spectra_array(result.hessian_eigenvalues, cell))
    ds = xr.Dataset(
        {**finals, **trajectory, **units, "status": ((), str(result.status))},
        coords={"epoch": result.trajectory.epoch.values},
        attrs={"cell": cell.name, "config": cell.config_json(), "complete": 1},
    )
    write_atomically(cell_path(out_dir, cell), lambda tmp: ds.to_netcdf(tmp))
    failure_path(out_dir, cell).unlink(missing_ok=True)


def write_failure(out_dir: Path, cell: Cell, trace: str) -> None:
    """Record a cell that raised, with its traceback; the study goes on."""
    path = failure_path(out_dir, cell)
    write_atomically(path, lambda tmp: Path(tmp).write_text(f"{cell.config_json()}\n\n{trace}"))


def load_or_none(path: Path) -> xr.Dataset | None:
    """The netCDF file at ``path``, loaded, or None if it is missing or unreadable (truncated, not
    netCDF): what a writer left half-done is simply not there."""
    if not Path(path).exists():
        return None
    try:
        with xr.open_dataset(path) as ds:
            return ds.load()
    except Exception:
        return None


def read_cell(out_dir: Path, cell: Cell, grid: np.ndarray) -> xr.Dataset | None:
    """The cell's stored result, or None if missing, truncated, corrupt, of another configuration,
    or recorded on another trajectory grid than the study's ``grid`` (the study's largest budget
    changed): a stored trajectory is never relabelled onto other epochs."""
    ds = load_or_none(cell_path(out_dir, cell))  # any unreadable file is simply not done
    if ds is None:
        return None
    if ds.attrs.get("complete") != 1 or ds.attrs.get("config") != cell.config_json():
        return None
    if not np.array_equal(ds.epoch.values, grid):
        return None
    if any(f"{name}_trajectory" not in ds for name in trajectory_names(cell.record)) or "unit_overlaps" not in ds:
        return None  # written by a version that recorded fewer variables
    if "hessian" in cell.record and "hessian_eigenvalues" not in ds:
        return None
    return ds


class DmftReplicates:
    """The DMFT's replicates of a results folder, one file each beside the cells
    (``cells/dmft__LABEL_aALPHA_sSEED.nc``: a replicate's per-epoch arrays, its settings and the
    solver's revision), so that a long solution stopped between replicates resumes from those stored,
    and more replicates add to them (:func:`phaseret.dmft_curves.curves`)."""

    def __init__(self, out_dir: Path):
        self.folder = Path(out_dir) / CELLS

    def path(self, label: str, alpha: float, seed: int) -> Path:
        return self.folder / f"{file_safe(f'dmft__{label}_a{alpha:g}_s{seed}')}.nc"

    def load(self, label: str, alpha: float, settings: dict) -> dict[int, dict]:
        """Solver seed -> per-epoch arrays of each replicate of ``settings`` (solve's keywords) stored
        by this solver revision; a missing, unreadable or other replicate is left out (solved again)."""
        first = settings.get("seed", 0)
        found = {}
        for seed in range(first, first + settings["replicates"]):
            ds = load_or_none(self.path(label, alpha, seed))
            if (ds is None or ds.attrs.get("settings") != _replicate_key(settings)
                    or ds.attrs.get("revision") != dmft.REVISION or ds.attrs.get("seed") != seed):
                continue
            found[seed] = {name: ds[name].values for name in dmft.REPLICATE_ARRAYS}
            found[seed]["diverged_epoch"] = int(ds.attrs["diverged_epoch"])
        return found

    def keep(self, label: str, alpha: float, settings: dict, seed: int, arrays: dict) -> None:
        """Store one replicate's per-epoch ``arrays`` (:func:`phaseret.dmft.solve`'s ``on_replicate``)."""
        ds = xr.Dataset({name: ("epoch", arrays[name]) for name in dmft.REPLICATE_ARRAYS},
                        attrs={"settings": _replicate_key(settings), "revision": dmft.REVISION, "seed": seed,
                               "diverged_epoch": int(arrays["diverged_epoch"])})
        write_atomically(self.path(label, alpha, seed), lambda tmp: ds.to_netcdf(tmp))


def _replicate_key(settings: dict) -> str:
    """What one replicate computes: solve's keywords but the count of replicates."""
    return json.dumps({key: value for key, value in settings.items() if key != "replicates"}, sort_keys=True)


def cell_state(out_dir: Path, cell: Cell, grid: np.ndarray) -> str:
    """``done``, ``failed`` or ``pending`` (on the study's trajectory ``grid``)."""
    if read_cell(out_dir, cell, grid) is not None:
        return "done"
    return "failed" if failure_path(out_dir, cell).exists() else "pending"


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary files a killed writer left behind (only the holder of the folder's lock may)."""
    for tmp in (Path(out_dir) / CELLS).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def combine(study: Study, out_dir: Path, history: str = "") -> xr.Dataset:
    """All stored cells as one dataset over ``optimizer, [p], [hidden], alpha, seed`` (+ ``epoch``).

    Cells the study does not run, or that have not finished, are NaN (status "").
    """
    axes = {"optimizer": list(study.optimizers)}
    for name in ("p", "hidden"):
        if len(study.axis(name)) > 1:
            axes[name] = study.axis(name)
    axes["alpha"] = study.axis("alpha")
    axes["seed"] = list(range(study.seeds))
    grid = study.grid
    shape = tuple(len(v) for v in axes.values())
    finals = {name: np.full(shape, np.nan) for name in FINALS}
    names = trajectory_names(study.record)
    trajectories = {name: np.full(shape + (len(grid),), np.nan) for name in names}
    status = np.full(shape, "", dtype=object)
    units, features = max(study.axis("hidden")), max(study.axis("p"))
    per_unit = {"unit_overlaps": np.full(shape + (units,), np.nan)}
    if "weights" in study.record:
        per_unit["weights"] = np.full(shape + (units, features), np.nan)
    if "hessian" in study.record:
        per_unit["hessian_eigenvalues"] = np.full(shape + (len(MATRICES), max(spectrum_length(c.hidden * c.p) for c in study.cells)), np.nan)
    for cell in study.cells:
        stored = read_cell(out_dir, cell, grid)
        if stored is None:
            continue
        index = tuple(values.index(getattr(cell, dim)) for dim, values in axes.items())
        for name in FINALS:
            finals[name][index] = float(stored[name])
        for name in names:
            trajectories[name][index] = stored[f"{name}_trajectory"].values
        status[index] = str(stored["status"].values)
        per_unit["unit_overlaps"][index][: cell.hidden] = stored["unit_overlaps"].values
        if "weights" in per_unit:
            per_unit["weights"][index][: cell.hidden, : cell.p] = stored["weights"].values
        if "hessian_eigenvalues" in per_unit:
            values = stored["hessian_eigenvalues"].values
            per_unit["hessian_eigenvalues"][index][:, : values.shape[1]] = values

    dims = tuple(axes)
    data_vars = {name: (dims, values, _cf(FINALS[name])) for name, values in finals.items()}
    data_vars |= {
        f"{name}_trajectory": (dims + ("epoch",), values, _cf(names[name]))
        for name, values in trajectories.items()
    }
    data_vars["status"] = (dims, status, {"long_name": "stopping status (SPEC 6); '' where not run"})
    data_vars["unit_overlaps"] = (dims + ("unit",), per_unit["unit_overlaps"],
                                  _cf(("overlap |m_k| / sqrt(q_kk Q) of hidden unit k (NaN past the run's d)", "1")))
    if "weights" in per_unit:
        data_vars["weights"] = (dims + ("unit", "feature"), per_unit["weights"],
                                _cf(("final student weights W (NaN past the run's d and p)", "1")))
    coords = {
        "optimizer": ("optimizer", axes["optimizer"], {"long_name": "optimizer"}),
        "alpha": ("alpha", axes["alpha"], {"long_name": "sample ratio alpha = n/p", "units": "1"}),
        "seed": ("seed", axes["seed"], {"long_name": "run index", "units": "1"}),
        "epoch": ("epoch", grid, {"long_name": "epoch", "units": "1"}),
        "unit": ("unit", np.arange(units), {"long_name": "hidden unit k", "units": "1"}),
    }
    if "weights" in per_unit:
        coords["feature"] = ("feature", np.arange(features), {"long_name": "feature i", "units": "1"})
    if "hessian_eigenvalues" in per_unit:
        data_vars["hessian_eigenvalues"] = (dims + ("hessian", "eigenvalue"), per_unit["hessian_eigenvalues"], _cf((
            "eigenvalues of the Hessian of the summed training loss at the final W, ascending (full: all data; "
            "batch: the last step's samples; riemannian: on the tangent space of the spheres); NaN-padded", "1")))
        coords["hessian"] = ("hessian", list(MATRICES), {"long_name": "which Hessian (phaseret.landscape)"})
        coords["eigenvalue"] = ("eigenvalue", np.arange(per_unit["hessian_eigenvalues"].shape[-1]),
                                {"long_name": "eigenvalue index (ascending)", "units": "1"})
    sizes = {"p": ("number of features p", "1"), "hidden": ("hidden units d", "1")}
    for name, entry in sizes.items():
        values = axes.get(name, study.axis(name))
        coords[name] = (name, values, _cf(entry)) if name in axes else ((), values[0], _cf(entry))
    for key, entry in OPTIMIZER_COORDS.items():
        coords[key] = ("optimizer", [getattr(c, key) for c in study.optimizer_settings], _cf(entry))
    attrs = {
        "title": f"phaseret study {study.name}: {study.description}".rstrip(": "),
        "source": f"phaseret {__version__} (revision {code_revision()})",
        "history": history,
        "references": "D. Dmitriev, Empirical Study of Gradient Descent Algorithms in High-Dimensional Regime, EPFL 2021",
        "Conventions": "CF-1.8",
        "study": json.dumps(study.settings, sort_keys=True),
        "scale": study.scale,
        "door_error": "door test/train errors are the fraction misclassified (the thesis' code reported twice this)",
    }
    Q = _teacher_norms(study)
    if Q:
        attrs["teacher_Q"] = Q
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    dmft_path = Path(out_dir) / dmft_curves.FILE
    if study.dmft and dmft_path.exists():
        ds = dmft_curves.merged(ds, xr.load_dataset(dmft_path))
    return ds


def trajectory_names(record: tuple[str, ...]) -> dict:
    """The trajectory variables a cell with ``record`` stores: name -> (long_name, units)."""
    return TRAJECTORIES | (EXTREMES if "hessian_grid" in record else {})


def _spectra_array(spectra: dict | None, cell: Cell) -> np.ndarray:
    """The three spectra as (3, size) NaN-padded rows (all NaN for a diverged run)."""
    array = np.full((len(MATRICES), spectrum_length(cell.hidden * cell.p)), np.nan)
    for i, name in enumerate(MATRICES):
        if spectra is not None:
            array[i, : len(spectra[name])] = spectra[name]
    return array


def write_dataset(ds: xr.Dataset, path: Path) -> None:
    write_atomically(Path(path), lambda tmp: ds.to_netcdf(tmp))


def code_revision() -> str:
    """The git revision of the package's source tree, or ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _cf(entry: tuple[str, str | None]) -> dict:
    """CF attributes; text variables carry no units."""
    long_name, units = entry
    return {"long_name": long_name} if units is None else {"long_name": long_name, "units": units}


def _teacher_norms(study: Study) -> list[float]:
    """``Q = |w*|^2 / p`` per ``p`` for a gaussian (unnormalized) teacher, SPEC 1; empty otherwise."""
    c = study.cells[0].config
    if c.teacher != "gaussian":
        return []
    task = MODELS[c.model].task
    norms = []
    for p in study.axis("p"):
        w_star = teacher(task, p, study_seed=c.study_seed, kind="gaussian")
        norms.append(float(w_star @ w_star) / p)
    return norms
