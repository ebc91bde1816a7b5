"""Epochs to converge (thesis table 4.1): per optimizer, p, hidden and alpha, the learning rate,
the budget, successes over runs, and the epochs of the ``converged-test`` stop over the
successful runs (min, median, max; SPEC 9's "epochs to converge")."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import xarray as xr

from .folders import open_folder
from .study import Study

COLUMNS = ("label", "p", "hidden", "lr", "alpha", "budget", "successes", "runs",
           "epochs_min", "epochs_median", "epochs_max")
NEEDED = ("success", "epochs", "status")


def convergence_rows(study: Study, ds: xr.Dataset) -> list[dict]:
    """One row per (optimizer, p, hidden, alpha) the study runs, in the study's order."""
    missing = [name for name in NEEDED if name not in ds]
    if missing or "lr" not in ds.coords:
        raise ValueError(f"DIR: the dataset lacks {', '.join(missing or ['lr'])}; a table needs a study's "
                         "dataset with success, epochs, status and the optimizer's lr")
    rows = []
    for (label, p, hidden, alpha), budget in study.budgets().items():
        at = {"optimizer": label, "alpha": alpha} | {d: v for d, v in (("p", p), ("hidden", hidden)) if d in ds.dims}
        cell = ds.sel(at)
        ran = cell.success.notnull().values
        converged = ran & (cell.status.values == "converged-test") & (cell.success.values == 1)
        epochs = cell.epochs.values[converged]
        rows.append({
            "label": label, "p": p, "hidden": hidden, "lr": float(cell.lr), "alpha": alpha, "budget": budget,
            "successes": int(np.nansum(cell.success.values[ran])), "runs": int(ran.sum()),
            "epochs_min": int(epochs.min()) if epochs.size else None,
            "epochs_median": float(np.median(epochs)) if epochs.size else None,
            "epochs_max": int(epochs.max()) if epochs.size else None,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table; epochs to converge as ``min / median / max`` (``-``: none)."""
    lines = ["| optimizer | p | d | lr | alpha | budget | successes / runs | epochs to converge (min / median / max) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epochs = "-" if r["epochs_min"] is None else f"{r['epochs_min']:,} / {r['epochs_median']:,.0f} / {r['epochs_max']:,}"
        lines.append(f"| {r['label']} | {r['p']} | {r['hidden']} | {r['lr']:g} | {r['alpha']:g} | {r['budget']:,} "
                     f"| {r['successes']} / {r['runs']} | {epochs} |")
    return "\n".join(lines)


def write_table(out_dir: Path) -> tuple[str, Path]:
    """Write ``<name>_table.csv`` and ``<name>_table.md`` beside the dataset; return the Markdown
    and the CSV's path."""
    study, ds = open_folder(out_dir)
    rows = convergence_rows(study, ds)
    path = Path(out_dir) / f"{study.name}_table.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    text = markdown(rows)
    (Path(out_dir) / f"{study.name}_table.md").write_text(text + "\n")
    return text, path
