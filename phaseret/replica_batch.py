"""Building a replica batch (SPEC 4-7): cells that differ only in their seed, with their data,
starts, Philox keys, optimizer and backend state, ready for the engine's loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import optim, seeding
from .backends import Instance, ReplicaState, replica_state
from .config import RunConfig
from .data import make_dataset
from .landscape import riemannian_extremes
from .models import Model
from .starts import starting_point

#: Keys that do not change a cell's training draws: the budget, the stopping
#: rule and how it runs, so that a longer budget replays the same batches.
_KEYS_NOT_IN_DRAWS = ("max_epochs", "stop", "label", "dtype", "backend")


def training_key(config: RunConfig) -> np.ndarray:
    """The cell's Philox key: its study seed and every key that shapes its draws (SPEC 7)."""
    keys = {k: v for k, v in config.to_dict().items() if k not in _KEYS_NOT_IN_DRAWS}
    return seeding.cell_key(config.study_seed, seeding.config_key(keys))


def check_replicas(configs: list[RunConfig]) -> None:
    """Replicas of one batch share every key but ``seed``, and no seed twice."""
    if not configs:
        raise ValueError("configs: a replica batch needs at least one cell")
    base = {k: v for k, v in configs[0].to_dict().items() if k != "seed"}
    for config in configs[1:]:
        if {k: v for k, v in config.to_dict().items() if k != "seed"} != base:
            raise ValueError("configs: the cells of a replica batch must differ only in `seed`")
    if len({c.seed for c in configs}) != len(configs):
        raise ValueError("configs: a replica batch holds each seed once")


@dataclass
class ReplicaBatch:
    """What the engine's loop needs: the cells, the model, the teacher ``w_star`` (p,), the number
    of training and test samples, the optimizer and the backend's :class:`~phaseret.backends.ReplicaState`."""

    configs: list[RunConfig]
    model: Model
    w_star: np.ndarray
    n: int
    n_test: int
    optimizer: optim.Optimizer
    replicas: ReplicaState
    landscape: Callable[[int, np.ndarray], dict] | None = None  # (replica, W (d, p)) -> Riemannian extremes


def build_batch(configs: list[RunConfig], device: str, noise_records: list[np.ndarray] | None = None,
                record_gradient_jumps: bool = False, record_landscape: bool = False) -> ReplicaBatch:
    """The replica batch of validated ``configs`` (differing only in seed) on ``device`` (``cpu`` or
    ``cuda``); ``noise_records`` are the matched-noise records of Langevin cells, one per cell.
    With ``record_landscape`` the batch can measure the Riemannian Hessian's extremes of a replica
    on its own training data (:func:`phaseret.landscape.riemannian_extremes`)."""
    c = configs[0]
    model = Model(c.model, c.hidden, c.loss_eps, c.K)
    dtype = np.dtype(c.dtype)
    shared = c.landscape == "shared"
    datasets = [
        make_dataset(model.task, c.p, c.alpha, cell.seed, study_seed=c.study_seed, landscape=c.landscape,
                     n_test=c.test_size, teacher_kind=c.teacher, K=c.K)
        for cell in (configs[:1] if shared else configs)
    ]

    def stacked(name):
        arrays = [getattr(ds, name) for ds in datasets]
        values = arrays[0] if shared else np.stack(arrays)
        return (model.targets(values) if name.startswith("y") else values).astype(dtype)

    instance = Instance(X=stacked("X"), t=stacked("y"), X_test=stacked("X_test"), t_test=stacked("y_test"))
    W0 = np.stack([
        starting_point(cell, datasets[0 if shared else i], model.task) for i, cell in enumerate(configs)
    ]).astype(dtype)
    keys = np.stack([training_key(cell) for cell in configs])
    n, n_test = datasets[0].X.shape[0], datasets[0].X_test.shape[0]
    optimizer = optim.build(c, n, keys, noise_records)
    jump_steps = c.max_epochs * optimizer.selector.steps_per_epoch + 1 if record_gradient_jumps else 0
    state = replica_state(device, model.kernel_codes, optimizer, instance, W0, jump_steps)
    def landscape(replica: int, W: np.ndarray) -> dict:
        data = datasets[0 if shared else replica]
        return riemannian_extremes(model, W, data.X, data.y)

    return ReplicaBatch(configs, model, datasets[0].w_star, n, n_test, optimizer, state,
                        landscape if record_landscape else None)
