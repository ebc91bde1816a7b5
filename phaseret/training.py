"""Public entry points for runs: ``train(**keys)`` for one cell, ``run``/``run_replicas`` for
validated configurations. Every run goes through the replica engine (:mod:`phaseret.engine`);
a single cell is a batch of one."""

from __future__ import annotations

import numpy as np

from .config import RunConfig, validate
from .engine import gradient_jumps, run_replicas, training_key
from .records import VARIABLES, RunResult, epoch_grid

__all__ = ["VARIABLES", "RunResult", "epoch_grid", "gradient_jumps", "run", "run_replicas", "train", "training_key"]


def train(**keys) -> RunResult:
    """Run one cell; the keywords are the study file's run and optimizer keys (SPEC 10).

    Example: ``train(model="pr-quadratic", p=256, alpha=3.0, seed=0, algorithm="p-sgd",
    update="nesterov", lr=0.005, max_epochs=5000)``. Invalid keys raise ``ValueError``
    naming the field before any computation.
    """
    return run(validate(**keys))


def run(config: RunConfig, grid: np.ndarray | None = None, *, record_gradient_jumps: bool = False) -> RunResult:
    """Train one validated cell. ``grid``: the trajectory's epochs (default ``epoch_grid(max_epochs)``).
    With ``record_gradient_jumps`` the result carries ``gradient_jumps``, the matched-noise record."""
    return run_replicas([config], grid, record_gradient_jumps=record_gradient_jumps)[0]
