"""The public facade for runs: ``train(**keys)`` for one cell, ``run``/``run_replicas`` for
validated configurations (:mod:`phaseret.runs`). A gradient method's single cell is a replica
batch of one. Modules inside the package import from the modules themselves, not from here."""

from __future__ import annotations

import numpy as np

from .config import RunConfig, validate
from .records import VARIABLES, RunResult, epoch_grid
from .replica_batch import training_key
from .runs import reference_jumps, run_replicas

__all__ = ["VARIABLES", "RunResult", "epoch_grid", "reference_jumps", "run", "run_replicas", "train", "training_key"]


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
