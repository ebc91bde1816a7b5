"""The baselines of SPEC 11 as cells of a study: GAMP and the spectral estimate on the cell's own
data, measured with the cell's model like every optimizer (estimate rescaled to the sphere).

GAMP's ``epochs`` count its iterations, its trajectory is recorded on the study's grid of
iterations, and it stops with ``converged-test`` (the cell's test-error stop), ``stationary``,
``max-epochs`` or ``diverged``. The spectral estimate is one computation: ``epochs = 0``,
status ``converged-test`` if its test error is below the stop, else ``stationary``.
"""

from __future__ import annotations

import time

import numpy as np

from . import sphere
from .config import RunConfig
from .data import Dataset, make_dataset
from .gamp import gamp
from .metrics import measure
from .models import Model
from .records import RunResult, Trajectories, finished
from .spectral import spectral_estimate
from .starts import starting_point
from .status import Status

#: GAMP's random start is the cell's start scaled down to this size per coordinate (SPEC 11: small).
GAMP_START_SCALE = 1e-3


def measure_student(model: Model, data: Dataset, W: np.ndarray) -> dict:
    """The metrics of SPEC 3 at the student ``W`` (d, p) on the cell's data (no gradient EMA)."""
    return measure(model.name, W, data.w_star, train_error=model.error(W, data.X, data.y),
                   train_loss=model.loss(W, data.X, data.y), sampled=lambda: model.error(W, data.X_test, data.y_test),
                   ema=np.array([np.nan, np.nan]))


def run_baseline(config: RunConfig, grid: np.ndarray) -> RunResult:
    """One GAMP or spectral cell, its trajectory on ``grid`` (iterations)."""
    started = time.perf_counter()
    c = config
    model = Model(c.model, c.hidden, c.loss_eps, c.K)
    data = make_dataset(model.task, c.p, c.alpha, c.seed, study_seed=c.study_seed, landscape=c.landscape,
                        n_test=c.test_size, teacher_kind=c.teacher, K=c.K)
    trajectories = Trajectories(grid, 1)
    replica = np.array([0])

    def record(iteration: int, W: np.ndarray) -> dict:
        metrics = measure_student(model, data, W)
        position = trajectories.position(iteration)
        if position is not None:
            trajectories.record(position, replica, {k: np.array([v]) for k, v in metrics.items() if k != "unit_overlaps"})
        return metrics

    if c.algorithm == "spectral":
        W = spectral_estimate(data.X, data.y, model.task, c.K)[None, :]
        metrics = record(0, W)
        status = Status.CONVERGED_TEST if metrics["test_error"] < c.stop.test_error else Status.STATIONARY
        epochs = 0
    else:
        start = starting_point(c, data, model.task)[0] * (GAMP_START_SCALE if c.init == "random" else 1.0)
        record(0, sphere.project(start[None, :]))
        iteration = [0]

        def converged(w_hat):
            iteration[0] += 1
            return record(iteration[0], sphere.project(w_hat[None, :]))["test_error"] < c.stop.test_error

        result = gamp(data.X, data.y, model.task, start, K=c.K, damping=c.damping, max_iterations=c.max_epochs,
                      converged=converged)
        W, status, epochs = sphere.project(result.w_hat[None, :]), Status(result.status), result.iterations
        metrics = measure_student(model, data, W)
    return finished(c, status, epochs, epochs, metrics, W=W, trajectory=trajectories.dataset(0, c.optimizer_label),
                    wall_seconds=time.perf_counter() - started)
