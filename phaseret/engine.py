"""The replica engine: cells that differ only in their seed advance in lockstep (SPEC 4-7).

One loop serves every optimizer and every device: the backend's replica state
(:mod:`phaseret.backend`, CPU or CUDA) draws each replica's ``M_t``, computes the
gradients and, from the same forward pass, the loss and error of the current
weights (the previous epoch's evaluation), then applies the update rule, the
Langevin noise and the projection to every replica at once. After each epoch the
SPEC 6 statuses are checked per replica; finished replicas drop out, so the cost
follows the live ones.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np

from . import seeding
from .backend import replicas
from .devices import resolve
from .baselines import run_baseline, starting_point
from .config import BASELINES, RunConfig, reference_config
from .data import make_dataset
from .metrics import population_error, unit_overlaps
from .models import Model
from .records import RunResult, Trajectories, epoch_grid, finished

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


def run_replicas(configs: list[RunConfig], grid=None, *, record_gradient_jumps: bool = False) -> list[RunResult]:
    """Train validated cells that differ only in ``seed``, in lockstep; one result per cell, in order.
    Overflow is no warning here: a non-finite value ends that replica with status ``diverged``."""
    check_replicas(configs)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if configs[0].algorithm in BASELINES:
            return [run_baseline(config, grid) for config in configs]
        return _Engine(configs, grid, record_gradient_jumps).run()


_JUMPS: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
_JUMPS_KEPT = 64


def gradient_jumps(references: list[RunConfig]) -> list[np.ndarray]:
    """The matched-noise records (SPEC 5) of reference cells: ``sigma_t = |g_t - g_{t-1}|_F``
    (``sigma_0 = 0``) per step. Runs the ones not yet known in this process as one replica
    batch and keeps the last 64 (read-only arrays)."""
    names = [json.dumps(r.to_dict(), sort_keys=True) for r in references]
    missing = [(name, r) for name, r in zip(names, references) if name not in _JUMPS]
    if missing:
        for (name, _), result in zip(missing, run_replicas([r for _, r in missing], record_gradient_jumps=True)):
            result.gradient_jumps.flags.writeable = False
            _JUMPS[name] = result.gradient_jumps
    for name in names:
        _JUMPS.move_to_end(name)
    records = [_JUMPS[name] for name in names]
    while len(_JUMPS) > _JUMPS_KEPT:
        _JUMPS.popitem(last=False)
    return records


#: Statuses by the index ``_stop_statuses`` returns; 0 goes on.
_STATUSES = ("", "diverged", "converged-train", "converged-test", "stationary", "max-epochs")


def _stop_statuses(config: RunConfig, train_error, test_error, ema) -> np.ndarray:
    """Index into ``_STATUSES`` of the first SPEC 6 status that applies to each replica after an
    epoch (0 to go on)."""
    stop = config.stop
    status = np.zeros(len(train_error), dtype=int)
    # Lowest priority first, so that the first status that applies is the one that stays.
    status[ema < stop.grad_ema] = 4
    status[test_error < stop.test_error] = 3
    status[train_error < stop.train_error] = 2
    status[~(np.isfinite(train_error) & np.isfinite(test_error))] = 1
    return status


class _Engine:
    """A replica batch: its backend state (:mod:`phaseret.backend`), trajectories and results."""

    def __init__(self, configs: list[RunConfig], grid, record_gradient_jumps: bool):
        self.started = time.perf_counter()
        self.configs = configs
        c = self.config = configs[0]
        self.model = Model(c.model, c.hidden, c.loss_eps, c.K)
        backend = resolve(c.backend)
        dtype = np.dtype(c.dtype)
        shared = c.landscape == "shared"
        datasets = [
            make_dataset(self.model.task, c.p, c.alpha, cell.seed, study_seed=c.study_seed, landscape=c.landscape,
                         n_test=c.test_size, teacher_kind=c.teacher, K=c.K)
            for cell in (configs[:1] if shared else configs)
        ]
        self.w_star = datasets[0].w_star

        def stacked(name):
            arrays = [getattr(ds, name) for ds in datasets]
            values = arrays[0] if shared else np.stack(arrays)
            return (self.model.targets(values) if name.startswith("y") else values).astype(dtype)

        instance = {"X": stacked("X"), "t": stacked("y"), "X_test": stacked("X_test"), "t_test": stacked("y_test")}
        self.n, self.n_test = datasets[0].X.shape[0], datasets[0].X_test.shape[0]
        self.population = c.model == "pr-quadratic"
        W0 = np.stack([
            starting_point(cell, datasets[0 if shared else i], self.model.task) for i, cell in enumerate(configs)
        ]).astype(dtype)
        keys = np.stack([training_key(cell) for cell in configs])
        records = None
        if c.algorithm == "langevin" and c.noise == "matched":
            records = gradient_jumps([reference_config(cell) for cell in configs])
        self.replicas = replicas(backend, self.model, c, instance, W0, keys, records, record_gradient_jumps)
        self.record_jumps = record_gradient_jumps
        self.trajectories = Trajectories(epoch_grid(c.max_epochs) if grid is None else grid, len(configs))
        self.results: list[RunResult | None] = [None] * len(configs)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> list[RunResult]:
        step, epoch = 0, 0
        steps_per_epoch = self.replicas.steps_per_epoch
        while True:
            for j in range(steps_per_epoch):
                measured = self.replicas.gradients(step, measure=j == 0)
                if j == 0:  # the forward pass measured the weights after `epoch`
                    self._end_of_epoch(epoch, step, *measured)
                    if self.replicas.live.size == 0:
                        return self.results
                self.replicas.update(step)
                step += 1
            epoch += 1

    def _end_of_epoch(self, epoch: int, step: int, losses, errors) -> None:
        """Check the stops after ``epoch``, record the trajectory and drop the replicas that stop.

        A replica whose gradient or weights went non-finite during the epoch ends ``diverged`` at
        that step, with NaN finals."""
        c = self.config
        W = self.replicas.weights()
        diverged_at = self.replicas.diverged_at()
        for i in np.flatnonzero(diverged_at >= 0):
            s = int(diverged_at[i])
            self._finish(i, "diverged", s // self.replicas.steps_per_epoch + 1, s + 1, None, W)
        train_error = errors / self.n
        test_error = population_error(W, self.w_star) if self.population else self._sampled_test_error()
        ema = self.replicas.ema()
        status = _stop_statuses(c, train_error, test_error, ema[:, 0 if c.stop.grad_measure == "tangent" else 1])
        if epoch == 0:
            status[:] = 0
        if epoch == c.max_epochs:
            status[status == 0] = _STATUSES.index("max-epochs")
        status[diverged_at >= 0] = -1  # already finished
        stopping = status > 0
        position = self.trajectories.position(epoch)
        if position is not None or stopping.any():
            metrics = self._metrics(W, ema, train_error, test_error, losses)
            if position is not None:
                going_on = status >= 0
                self.trajectories.record(position, self.replicas.live[going_on], {k: v[going_on] for k, v in metrics.items()})
            for i in np.flatnonzero(stopping):
                self._finish(i, _STATUSES[status[i]], epoch, step, metrics, W)
        keep = status == 0
        self.replicas.keep(keep)

    def _sampled_test_error(self) -> np.ndarray:
        return self.replicas.test_error_sums() / self.n_test

    def _metrics(self, W, ema, train_error, test_error, losses) -> dict:
        overlaps = unit_overlaps(W, self.w_star)
        return {
            "train_error": train_error,
            "test_error": test_error,
            # For models without a population error, test_error is already the sampled one.
            "test_error_sampled": self._sampled_test_error() if self.population else test_error,
            "train_loss": losses,
            "overlap": overlaps.max(axis=-1),
            "grad_ema": ema[:, 0],
            "grad_ema_raw": ema[:, 1],
            "unit_overlaps": overlaps,
        }

    def _finish(self, i: int, status: str, epochs: int, steps: int, metrics: dict | None, W) -> None:
        """Store the result of live replica ``i``; ``metrics`` None for a divergence (NaN finals)."""
        r = int(self.replicas.live[i])
        config = self.configs[r]
        ema = self.replicas.ema()
        finals = {} if metrics is None else {name: values[i] for name, values in metrics.items()}
        finals |= {"grad_ema": ema[i, 0], "grad_ema_raw": ema[i, 1]}
        self.results[r] = finished(
            config, status, epochs, steps, finals,
            W=np.array(W[i], dtype=W.dtype),
            trajectory=self.trajectories.dataset(r, config.optimizer_label),
            wall_seconds=time.perf_counter() - self.started,
            gradient_jumps=self.replicas.gradient_jumps(r) if self.record_jumps else None,
        )
