"""Drawing a study's figures: the ``[plot]`` table's ``figures`` by name, each saved as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from . import plots, run_figures

FIGURES = {
    "success": plots.success_figure,
    "diverged": plots.diverged_figure,
    "test_error": plots.test_error_figure,
    "train_error": plots.train_error_figure,
    "errors": plots.errors_figure,
    "trajectories": run_figures.trajectory_figure,
    "dynamics": run_figures.dynamics_figure,
    "hessian": run_figures.hessian_figure,
    "gradient_jumps": run_figures.gradient_jumps_figure,
    "dmft": run_figures.dmft_figure,
    "momentum_gain": run_figures.momentum_gain_figure,
}


def draw(ds: xr.Dataset, settings: dict, out_dir: Path, stem: str) -> list[Path]:
    """Draw the figures ``settings["figures"]`` of ``ds`` as ``out_dir/<stem>_<figure>.png/.pdf``."""
    if "model" not in ds.coords:  # datasets written before the model coordinate: the study's model
        ds = ds.assign_coords(model=("optimizer", plots.models(ds)))
    paths = []
    for name in settings["figures"]:
        figure = FIGURES[name](ds, settings)
        for fmt in plots.FORMATS:
            path = Path(out_dir) / f"{stem}_{name}.{fmt}"
            figure.savefig(path, dpi=150, bbox_inches="tight")
            paths.append(path)
    return paths
