"""The Hessian spectra a study records at the end of a run (``[record] hessian = "end"``): the
cell's data and its last step's batch are drawn again from the cell's keys (SPEC 7), so the
record needs nothing from the engine but the final ``W`` and the number of steps."""

from __future__ import annotations

import numpy as np

from . import landscape
from .config import RunConfig
from .data import make_dataset
from .models import Model
from .optim.batches import selector
from .records import RunResult
from .replica_batch import training_key


def last_batch(config: RunConfig, n: int, steps: int) -> np.ndarray | None:
    """The samples (n,) bool of the run's last step ``steps - 1`` (None: all, GD and Langevin),
    replayed from the cell's key: SGD's chunk of that epoch, P-SGD's chain run forward."""
    if steps < 1:
        return None
    chooser = selector(config.algorithm, n, config.batch_fraction, config.tau, config.lr, training_key(config)[None])
    replica = np.array([0])
    if config.algorithm == "p-sgd":
        for step in range(steps - 1):  # the P-SGD chain depends on every earlier step
            chooser.select(step, replica)
    mask = chooser.select(steps - 1, replica)
    return None if mask is None else mask[0].copy()


def hessian_spectra(config: RunConfig, result: RunResult) -> dict[str, np.ndarray] | None:
    """The three spectra of :mod:`phaseret.landscape` at the run's final weights (None when the
    run diverged: its weights are not finite)."""
    if not np.isfinite(result.W).all():
        return None
    model = Model(config.model, config.hidden, config.loss_eps, config.K)
    data = make_dataset(model.task, config.p, config.alpha, config.seed, study_seed=config.study_seed,
                        landscape=config.landscape, n_test=config.test_size, teacher_kind=config.teacher, K=config.K)
    batch = last_batch(config, data.X.shape[0], result.steps)
    return landscape.spectra(model, result.W, data.X, data.y, batch)
