"""One run: data, start, batch rule x update rule (+ noise, projection), stopping (SPEC 4-7).

The loop knows nothing of which optimizer it runs: it asks the batch selector
for ``M_t``, the update rule for the step, the noise source for Langevin's
kick, and projects. After each epoch it measures the train and test errors
and the gradient EMA and stops with a SPEC 6 status.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import batches, noise, seeding, sphere, updates
from .config import RunConfig, reference_config, validate
from .data import Dataset, initial_weights, make_dataset
from .metrics import population_error, unit_overlaps
from .models import Model

#: Trajectory and final variables: name -> (long_name, units).
VARIABLES = {
    "train_error": ("training error (evaluation activation, whole training set)", "1"),
    "test_error": ("test error (population error for pr-quadratic)", "1"),
    "test_error_sampled": ("test error on the sampled test set", "1"),
    "train_loss": ("training loss (sum over samples, training activation)", "1"),
    "overlap": ("largest overlap |m_k| / sqrt(q_kk Q) with the teacher", "1"),
    "grad_ema": ("EMA of max |tangent gradient|", "1"),
    "grad_ema_raw": ("EMA of max |gradient|", "1"),
}

#: Keys that do not change a cell's training draws: the budget, the stopping
#: rule and how it runs, so that a longer budget replays the same batches.
_KEYS_NOT_IN_DRAWS = ("max_epochs", "stop", "label", "dtype", "backend")


def epoch_grid(max_epochs: int, points: int = 150) -> np.ndarray:
    """``{0} U unique(round(geomspace(1, max_epochs, points)))`` (SPEC 6), int64."""
    grid = np.unique(np.round(np.geomspace(1, max_epochs, points)).astype(np.int64))
    return np.concatenate([[0], grid])


@dataclass
class RunResult:
    """The outcome of one run. ``W`` (d, p) is the final student; ``trajectory`` an
    ``xarray.Dataset`` over ``epoch``; ``unit_overlaps`` (d,) per hidden unit."""

    config: RunConfig
    status: str
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


def train(**keys) -> RunResult:
    """Run one cell; the keywords are the study file's run and optimizer keys (SPEC 10).

    Example: ``train(model="pr-quadratic", p=256, alpha=3.0, seed=0, algorithm="p-sgd",
    update="nesterov", lr=0.005, max_epochs=5000)``. Invalid keys raise ``ValueError``
    naming the field before any computation.
    """
    return run(validate(**keys))


def training_key(config: RunConfig) -> np.ndarray:
    """The cell's Philox key: its study seed and every key that shapes its draws (SPEC 7)."""
    keys = {k: v for k, v in config.to_dict().items() if k not in _KEYS_NOT_IN_DRAWS}
    return seeding.cell_key(config.study_seed, seeding.config_key(keys))


class _Evaluator:
    """The metrics of SPEC 3 on one instance."""

    def __init__(self, model: Model, data: Dataset):
        self.model, self.data = model, data
        self.population = model.name == "pr-quadratic"

    def errors(self, W) -> tuple[float, float]:
        """(train error, test error): the stopping rule's two numbers, measured every epoch."""
        d = self.data
        test = population_error(W, d.w_star) if self.population else self.model.error(W, d.X_test, d.y_test)
        return self.model.error(W, d.X, d.y), test

    def all(self, W) -> dict:
        """Every recorded metric at ``W`` (NaN throughout for a non-finite ``W``)."""
        if not np.all(np.isfinite(W)):
            return {name: math.nan for name in VARIABLES if not name.startswith("grad")} | {
                "unit_overlaps": np.full(W.shape[0], np.nan)
            }
        d = self.data
        train_error, test_error = self.errors(W)
        overlaps = unit_overlaps(W, d.w_star)
        return {
            "train_error": train_error,
            "test_error": test_error,
            "test_error_sampled": self.model.error(W, d.X_test, d.y_test),
            "train_loss": self.model.loss(W, d.X, d.y),
            "overlap": float(np.max(overlaps)),
            "unit_overlaps": overlaps,
        }


class _Trajectory:
    """Metrics on the epoch grid; points after the run's stop stay NaN."""

    def __init__(self, grid: np.ndarray):
        self.grid = grid
        self.values = {name: np.full(len(grid), np.nan) for name in VARIABLES}
        self._next = 0

    def wants(self, epoch: int) -> bool:
        return self._next < len(self.grid) and self.grid[self._next] == epoch

    def record(self, metrics: dict) -> None:
        for name in self.values:
            self.values[name][self._next] = metrics.get(name, math.nan)
        self._next += 1

    def dataset(self, label: str) -> xr.Dataset:
        data_vars = {
            name: ("epoch", values, {"long_name": VARIABLES[name][0], "units": VARIABLES[name][1]})
            for name, values in self.values.items()
        }
        coords = {"epoch": ("epoch", self.grid, {"long_name": "epoch", "units": "1"})}
        return xr.Dataset(data_vars, coords=coords, attrs={"optimizer": label})


def _stop_status(config: RunConfig, train_error: float, test_error: float, ema: float) -> str | None:
    """The first SPEC 6 status that applies after an epoch, or None to go on."""
    stop = config.stop
    if not (math.isfinite(train_error) and math.isfinite(test_error)):
        return "diverged"
    if train_error < stop.train_error:
        return "converged-train"
    if test_error < stop.test_error:
        return "converged-test"
    if ema < stop.grad_ema:
        return "stationary"
    return None


def _noise_source(config: RunConfig, key: np.ndarray):
    """Langevin's noise (matched to the reference run's gradient jumps, or a temperature), else None."""
    if config.algorithm != "langevin":
        return None
    if config.noise == "temperature":
        return noise.temperature(config.T0, config.t_cool, key)
    return noise.matched(gradient_jumps(reference_config(config)), key)


@functools.lru_cache(maxsize=16)
def _gradient_jumps_cached(config_json: str) -> np.ndarray:
    jumps = run(validate(**json.loads(config_json)), record_gradient_jumps=True).gradient_jumps
    jumps.flags.writeable = False
    return jumps


def gradient_jumps(reference: RunConfig) -> np.ndarray:
    """``sigma_t = |g_t - g_{t-1}|_F`` (``sigma_0 = 0``) per step of the reference run, run once per
    process and reused: the matched-noise record of SPEC 5 (read-only array)."""
    keys = {k: v for k, v in reference.to_dict().items() if v is not None}
    return _gradient_jumps_cached(json.dumps(keys, sort_keys=True))


def run(config: RunConfig, grid: np.ndarray | None = None, *, record_gradient_jumps: bool = False) -> RunResult:
    """Train one validated cell. ``grid``: the trajectory's epochs (default ``epoch_grid(max_epochs)``).
    With ``record_gradient_jumps`` the result carries ``gradient_jumps``, the matched-noise record.
    Overflow is no warning here: a non-finite value ends the run with status ``diverged``."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _run(config, grid, record_gradient_jumps)


def _run(config: RunConfig, grid: np.ndarray | None, record_gradient_jumps: bool) -> RunResult:
    started = time.perf_counter()
    c = config
    model = Model(c.model, c.hidden, c.loss_eps, c.K)
    data = make_dataset(
        model.task, c.p, c.alpha, c.seed, study_seed=c.study_seed, landscape=c.landscape,
        n_test=c.test_size, teacher_kind=c.teacher, K=c.K,
    )
    W = initial_weights(c.p, c.hidden, c.alpha, c.seed, study_seed=c.study_seed)
    key = training_key(c)
    selector = batches.selector(c.algorithm, data.X.shape[0], c.batch_fraction, c.tau, c.lr, key)
    rule = updates.rule(c.update, c.momentum, c.adam_eps)
    state = rule.init(W)
    add_noise = _noise_source(c, key)
    eta = c.step_size
    evaluator = _Evaluator(model, data)
    trajectory = _Trajectory(epoch_grid(c.max_epochs) if grid is None else np.asarray(grid))
    if trajectory.wants(0):
        trajectory.record(evaluator.all(W))
    jumps, previous_g = ([], None) if record_gradient_jumps else (None, None)
    ema = None  # (tangent, raw)
    step, status, epoch = 0, None, 0
    while status is None and epoch < c.max_epochs:
        epoch += 1
        for _ in range(selector.steps_per_epoch):
            batch = selector.select(step)
            g = model.grad(W, data.X[batch], data.y[batch])
            raw = float(np.max(np.abs(g)))
            tangent = float(np.max(np.abs(sphere.tangent(g, W)))) if c.projection else raw
            if not math.isfinite(raw):
                status = "diverged"
                break
            ema = (tangent, raw) if ema is None else (0.9 * ema[0] + 0.1 * tangent, 0.9 * ema[1] + 0.1 * raw)
            if jumps is not None:
                jumps.append(0.0 if previous_g is None else float(np.linalg.norm(g - previous_g)))
                previous_g = g
            delta, state = rule.step(g, state, eta)
            W = W + delta
            if add_noise is not None:
                W = add_noise(W, step, eta)
            if c.projection:
                W = sphere.project(W)
            step += 1
        if status is None and not np.all(np.isfinite(W)):
            status = "diverged"
        if status == "diverged":
            break
        train_error, test_error = evaluator.errors(W)
        status = _stop_status(c, train_error, test_error, ema[0] if c.stop.grad_measure == "tangent" else ema[1])
        if trajectory.wants(epoch):
            trajectory.record(evaluator.all(W) | {"grad_ema": ema[0], "grad_ema_raw": ema[1]})
    status = status or "max-epochs"
    final = evaluator.all(W)
    if status == "diverged":
        final = {k: (np.full_like(v, np.nan) if isinstance(v, np.ndarray) else math.nan) for k, v in final.items()}
    return RunResult(
        config=c,
        status=status,
        epochs=epoch,
        steps=step,
        train_error=final["train_error"],
        test_error=final["test_error"],
        test_error_sampled=final["test_error_sampled"],
        train_loss=final["train_loss"],
        overlap=final["overlap"],
        unit_overlaps=final["unit_overlaps"],
        success=bool(final["test_error"] < c.stop.success),
        grad_ema=math.nan if ema is None else ema[0],
        grad_ema_raw=math.nan if ema is None else ema[1],
        wall_seconds=time.perf_counter() - started,
        W=W,
        trajectory=trajectory.dataset(c.optimizer_label),
        gradient_jumps=None if jumps is None else np.asarray(jumps),
    )
