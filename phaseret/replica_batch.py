"""Building a replica batch (SPEC 4-7): cells that differ only in their seed and optimizer, with
their data, starts, Philox keys, optimizers and backend state, ready for the engine's loop.

A batch is cut into *parts*: maximal runs of consecutive cells with the same optimizer keys. Each
part has its own :class:`~phaseret.optim.Optimizer` (batch rule, update rule, noise, step size),
while all parts share the data: one ``X`` in the ``shared`` landscape, one per seed in the
``per-seed`` one (SPEC 7: the data do not depend on the optimizer), so the products of the
replicas that see one ``X`` are one matrix product."""

from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import optim, seeding
from .backends import Instance, ReplicaState, replica_state
from .config import BASELINES, OPTIMIZER_KEYS, RunConfig
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


def optimizer_keys(config: RunConfig) -> dict:
    """The keys that make a cell's optimizer (SPEC 10's optimizer keys)."""
    return {k: getattr(config, k) for k in OPTIMIZER_KEYS}


def parts_of(configs: list[RunConfig]) -> list[range]:
    """The parts of a batch: maximal runs of consecutive ``configs`` with the same optimizer keys."""
    starts = [i for i in range(len(configs)) if i == 0 or optimizer_keys(configs[i]) != optimizer_keys(configs[i - 1])]
    return [range(a, b) for a, b in zip(starts, starts[1:] + [len(configs)])]


def check_replicas(configs: list[RunConfig]) -> None:
    """Replicas of one batch share every run key but ``seed`` (the data and the budget), and hold
    each (optimizer, seed) once."""
    if not configs:
        raise ValueError("configs: a replica batch needs at least one cell")
    skipped = set(OPTIMIZER_KEYS) | {"seed"}
    base = {k: v for k, v in configs[0].to_dict().items() if k not in skipped}
    for config in configs[1:]:
        if {k: v for k, v in config.to_dict().items() if k not in skipped} != base:
            raise ValueError("configs: the cells of a replica batch must differ only in `seed` and their optimizer keys")
    if len({c.algorithm in BASELINES for c in configs}) > 1:
        raise ValueError("configs: the baselines (gamp, spectral) run apart from the gradient methods")
    cells = [json.dumps(c.to_dict(), sort_keys=True) for c in configs]
    if len(set(cells)) != len(configs):
        raise ValueError("configs: a replica batch holds each (optimizer, seed) once")


@dataclass(frozen=True)
class Part:
    """Consecutive replicas ``span`` (original indices) with one optimizer."""

    span: range
    optimizer: optim.Optimizer

    @property
    def steps_per_epoch(self) -> int:
        return self.optimizer.selector.steps_per_epoch


@dataclass
class ReplicaBatch:
    """What the engine's loop needs: the cells, the model, the teacher ``w_star`` (p,), the number
    of training and test samples, the parts (one optimizer each) and the backend's
    :class:`~phaseret.backends.ReplicaState`."""

    configs: list[RunConfig]
    model: Model
    w_star: np.ndarray
    n: int
    n_test: int
    parts: tuple[Part, ...]
    replicas: ReplicaState
    landscape: Callable[[int, np.ndarray], dict] | None = None  # (replica, W (d, p)) -> Riemannian extremes
    steps_per_epoch: np.ndarray = field(init=False)  # (R0,) int: each replica's steps per epoch

    def __post_init__(self):
        self.steps_per_epoch = np.concatenate([np.full(len(part.span), part.steps_per_epoch) for part in self.parts])

    def part_of(self, replica: int) -> tuple[Part, int]:
        """The part of original replica ``replica`` and its index inside the part."""
        part = next(part for part in self.parts if replica in part.span)
        return part, replica - part.span.start


def build_batch(configs: list[RunConfig], device: str, noise_records: list[np.ndarray | None] | None = None,
                record_gradient_jumps: bool = False, record_landscape: bool = False) -> ReplicaBatch:
    """The replica batch of validated ``configs`` (differing only in seed and optimizer keys) on
    ``device`` (``cpu`` or ``cuda``); ``noise_records`` are the matched-noise records, one per cell
    (None for the cells without matched noise). With ``record_landscape`` the batch can measure the
    Riemannian Hessian's extremes of a replica on its own training data
    (:func:`phaseret.landscape.riemannian_extremes`)."""
    c = configs[0]
    model = Model(c.model, c.hidden, c.loss_eps, c.K)
    dtype = np.dtype(c.dtype)
    shared = c.landscape == "shared"
    seeds = [0] if shared else sorted({cell.seed for cell in configs})
    datasets = [
        make_dataset(model.task, c.p, c.alpha, seed, study_seed=c.study_seed, landscape=c.landscape,
                     n_test=c.test_size, teacher_kind=c.teacher, K=c.K)
        for seed in seeds
    ]
    instance_of = np.array([0 if shared else seeds.index(cell.seed) for cell in configs])

    def stacked(name):
        arrays = [getattr(ds, name) for ds in datasets]
        values = arrays[0] if shared else np.stack(arrays)
        return (model.targets(values) if name.startswith("y") else values).astype(dtype)

    instance = Instance(X=stacked("X"), t=stacked("y"), X_test=stacked("X_test"), t_test=stacked("y_test"))
    W0 = np.stack([
        starting_point(cell, datasets[instance_of[i]], model.task) for i, cell in enumerate(configs)
    ]).astype(dtype)
    keys = np.stack([training_key(cell) for cell in configs])
    n, n_test = datasets[0].X.shape[0], datasets[0].X_test.shape[0]
    records = noise_records or [None] * len(configs)
    parts = tuple(Part(span, optim.build(configs[span.start], n, keys[span.start : span.stop], records[span.start : span.stop]))
                  for span in parts_of(configs))
    jump_steps = c.max_epochs * max(part.steps_per_epoch for part in parts) + 1 if record_gradient_jumps else 0
    state = replica_state(device, model.kernel_codes, parts, instance, instance_of, W0, jump_steps)

    def landscape(replica: int, W: np.ndarray) -> dict:
        data = datasets[instance_of[replica]]
        return riemannian_extremes(model, W, data.X, data.y)

    return ReplicaBatch(configs, model, datasets[0].w_star, n, n_test, parts, state,
                        landscape if record_landscape else None)
