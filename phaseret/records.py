"""What a run leaves behind: final values, the trajectory on a log-spaced epoch grid (SPEC 6, 8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from .config import RunConfig
from .status import Status

#: Trajectory and final variables: name -> (long_name, units).
VARIABLES = {
    "train_error": ("training error (evaluation activation, whole training set)", "1"),
    "test_error": ("test error (SPEC 3: population error for pr-quadratic, else on the sampled test set)", "1"),
    "test_error_sampled": ("test error on the sampled test set", "1"),
    "train_loss": ("training loss (sum over samples, training activation)", "1"),
    "overlap": ("largest overlap |m_k| / sqrt(q_kk Q) with the teacher", "1"),
    "grad_ema": ("EMA of max |tangent gradient|", "1"),
    "grad_ema_raw": ("EMA of max |gradient|", "1"),
}
#: Per-step quantities as trajectories only, each the mean over an epoch's steps: the Langevin
#: kick's size (SPEC 5; 0 for the other gradient methods) and, when a study records them, the
#: jumps between consecutive batch gradients (the matched noise's source, thesis 2.4.4).
STEP_MEANS = {
    "noise_sigma": ("Langevin noise |kick|_F (matched: sigma_t; temperature: sqrt(2 eta T_t d p)), "
                    "mean over the epoch's steps", "1"),
    "gradient_jump": ("jump |g_t - g_(t-1)|_F between consecutive batch gradients, mean over the epoch's steps", "1"),
}
#: Every trajectory variable: name -> (long_name, units).
TRAJECTORIES = VARIABLES | STEP_MEANS


def epoch_grid(max_epochs: int, points: int = 150) -> np.ndarray:
    """``{0} U unique(round(geomspace(1, max_epochs, points)))`` (SPEC 6), int64."""
    grid = np.unique(np.round(np.geomspace(1, max_epochs, points)).astype(np.int64))
    return np.concatenate([[0], grid])


def epoch_means(per_step: np.ndarray, steps_per_epoch: int, grid: np.ndarray, epochs: int) -> np.ndarray:
    """A per-step quantity (steps,) on the epoch ``grid``: at epoch ``e`` in ``1 .. epochs`` the mean
    over that epoch's steps ``(e-1) k .. e k - 1`` (``k = steps_per_epoch``); NaN at epoch 0 (no step
    yet), after ``epochs`` (the run had stopped) and where the steps were not recorded."""
    per_step = np.asarray(per_step, dtype=float)
    values = np.full(len(grid), np.nan)
    for i, e in enumerate(grid):
        if 1 <= e <= epochs and e * steps_per_epoch <= len(per_step):
            values[i] = per_step[(e - 1) * steps_per_epoch : e * steps_per_epoch].mean()
    return values


@dataclass
class RunResult:
    """The outcome of one run. ``W`` (d, p) is the final student; ``trajectory`` an
    ``xarray.Dataset`` over ``epoch``; ``unit_overlaps`` (d,) per hidden unit."""

    config: RunConfig
    status: Status
    epochs: int
    steps: int
    train_error: float
    test_error: float
    test_error_sampled: float
    train_loss: float
    overlap: float
    unit_overlaps: np.ndarray
    success: bool
    grad_ema: float
    grad_ema_raw: float
    wall_seconds: float
    W: np.ndarray
    trajectory: xr.Dataset
    gradient_jumps: np.ndarray | None = None  # the matched-noise record, when asked for
    hessian_eigenvalues: dict | None = None  # matrix name -> sorted eigenvalues, when a study asks


#: The measured finals, NaN for a diverged run.
MEASURED = ("train_error", "test_error", "test_error_sampled", "train_loss", "overlap")


def finished(config: RunConfig, status: Status, epochs: int, steps: int, finals: dict, *, W: np.ndarray,
             trajectory: xr.Dataset, wall_seconds: float, gradient_jumps: np.ndarray | None = None) -> RunResult:
    """The result of a run from its final values: ``finals`` holds ``MEASURED``, ``unit_overlaps``,
    ``grad_ema`` and ``grad_ema_raw``. A diverged run reports NaN for the measured ones."""
    if status == Status.DIVERGED:
        finals = finals | {name: np.nan for name in MEASURED} | {"unit_overlaps": np.full(config.hidden, np.nan)}
    return RunResult(
        config=config,
        status=Status(status),
        epochs=epochs,
        steps=steps,
        **{name: float(finals[name]) for name in MEASURED + ("grad_ema", "grad_ema_raw")},
        unit_overlaps=np.asarray(finals["unit_overlaps"]),
        success=bool(finals["test_error"] < config.stop.success),
        wall_seconds=wall_seconds,
        W=W,
        trajectory=trajectory,
        gradient_jumps=gradient_jumps,
    )


class Trajectories:
    """Metrics of R replicas on one epoch grid; points after a replica's stop stay NaN."""

    def __init__(self, grid: np.ndarray, replicas: int, extra: dict | None = None):
        """``extra``: further variables (name -> (long_name, units)) recorded on the grid, e.g. Hessian extremes."""
        self.grid = np.asarray(grid)
        self.names = TRAJECTORIES | (extra or {})
        self.values = {name: np.full((replicas, len(self.grid)), np.nan) for name in self.names}

    def position(self, epoch: int) -> int | None:
        """Index of ``epoch`` on the grid, or None."""
        i = int(np.searchsorted(self.grid, epoch))
        return i if i < len(self.grid) and self.grid[i] == epoch else None

    def record(self, position: int, replicas: np.ndarray, metrics: dict) -> None:
        """Store each variable of ``metrics`` (arrays over ``replicas``) at grid ``position``."""
        for name, values in metrics.items():
            if name in self.values:
                self.values[name][replicas, position] = values

    def record_steps(self, replica: int, name: str, per_step: np.ndarray, steps_per_epoch: int, epochs: int) -> None:
        """Store a per-step quantity of ``STEP_MEANS`` as its epoch means (:func:`epoch_means`)."""
        self.values[name][replica] = epoch_means(per_step, steps_per_epoch, self.grid, epochs)

    def dataset(self, replica: int, label: str) -> xr.Dataset:
        data_vars = {
            name: ("epoch", values[replica], {"long_name": self.names[name][0], "units": self.names[name][1]})
            for name, values in self.values.items()
        }
        coords = {"epoch": ("epoch", self.grid, {"long_name": "epoch", "units": "1"})}
        return xr.Dataset(data_vars, coords=coords, attrs={"optimizer": label})
