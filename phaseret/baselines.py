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
from .data import Dataset, initial_weights, make_dataset
from .gamp import gamp
from .metrics import population_error, unit_overlaps
from .models import Model
from .records import RunResult, Trajectories, epoch_grid, finished
from .spectral import spectral_estimate

#: GAMP's random start is the cell's start scaled down to this size per coordinate (SPEC 11: small).
GAMP_START_SCALE = 1e-3


def measure(model: Model, data: Dataset, W: np.ndarray) -> dict:
    """The final metrics of SPEC 3 at the student ``W`` (d, p), as the engine records them."""
    test_error_sampled = model.error(W, data.X_test, data.y_test)
    overlaps = unit_overlaps(W, data.w_star)
    return {
        "train_error": model.error(W, data.X, data.y),
        "test_error": population_error(W, data.w_star) if model.name == "pr-quadratic" else test_error_sampled,
        "test_error_sampled": test_error_sampled,
        "train_loss": model.loss(W, data.X, data.y),
        "overlap": float(np.max(overlaps)),
        "unit_overlaps": overlaps,
        "grad_ema": np.nan,
        "grad_ema_raw": np.nan,
    }


def run_baseline(config: RunConfig, grid=None) -> RunResult:
    """One GAMP or spectral cell."""
    started = time.perf_counter()
    c = config
    model = Model(c.model, c.hidden, c.loss_eps, c.K)
    data = make_dataset(model.task, c.p, c.alpha, c.seed, study_seed=c.study_seed, landscape=c.landscape,
                        n_test=c.test_size, teacher_kind=c.teacher, K=c.K)
    trajectories = Trajectories(epoch_grid(c.max_epochs) if grid is None else grid, 1)
    replica = np.array([0])

    def record(iteration: int, W: np.ndarray) -> dict:
        metrics = measure(model, data, W)
        position = trajectories.position(iteration)
        if position is not None:
            trajectories.record(position, replica, {k: np.array([v]) for k, v in metrics.items() if k != "unit_overlaps"})
        return metrics

    if c.algorithm == "spectral":
        W = spectral_estimate(data.X, data.y, model.task, c.K)[None, :]
        metrics = record(0, W)
        status, epochs = ("converged-test" if metrics["test_error"] < c.stop.test_error else "stationary"), 0
    else:
        start = starting_point(c, data, model.task)[0] * (GAMP_START_SCALE if c.init == "random" else 1.0)
        record(0, sphere.project(start[None, :]))
        iteration = [0]

        def converged(w_hat):
            iteration[0] += 1
            return record(iteration[0], sphere.project(w_hat[None, :]))["test_error"] < c.stop.test_error

        result = gamp(data.X, data.y, model.task, start, K=c.K, damping=c.damping, max_iterations=c.max_epochs,
                      converged=converged)
        W, status, epochs = sphere.project(result.w_hat[None, :]), result.status, result.iterations
        metrics = measure(model, data, W)
    return finished(c, status, epochs, epochs, metrics, W=W, trajectory=trajectories.dataset(0, c.optimizer_label),
                    wall_seconds=time.perf_counter() - started)


def starting_point(config: RunConfig, data: Dataset, task: str) -> np.ndarray:
    """The start ``W0`` (hidden, p) of a cell: the random start of SPEC 5, or with
    ``init = "spectral"`` the spectral estimate plus a tenth of the random start (so that
    hidden units differ), projected on the sphere. Never depends on the optimizer."""
    c = config
    W0 = initial_weights(c.p, c.hidden, c.alpha, c.seed, study_seed=c.study_seed)
    if c.init == "random":
        return W0
    return sphere.project(spectral_estimate(data.X, data.y, task, c.K)[None, :] + 0.1 * W0)
