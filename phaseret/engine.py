"""The replica engine: cells that differ only in their seed advance in lockstep (SPEC 4-7).

One loop serves every optimizer: the batch selectors give each replica's
``M_t``, the backend's step (:mod:`phaseret.backend`) gives the gradients and,
from the same forward pass, the loss and error of the current weights (the
previous epoch's evaluation), the update rule moves every replica at once, the
noise sources kick Langevin replicas, and the projection puts every unit back
on its sphere. After each epoch the SPEC 6 statuses are checked per replica;
finished replicas drop out, so the cost follows the live ones.
"""

from __future__ import annotations

import collections
import json
import time

import numpy as np

from . import batches, kernels, noise, seeding, sphere, updates
from .backend import CpuBackend
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
    """The state of a replica batch between steps."""

    def __init__(self, configs: list[RunConfig], grid, record_gradient_jumps: bool):
        self.started = time.perf_counter()
        self.configs = configs
        c = self.config = configs[0]
        self.model = Model(c.model, c.hidden, c.loss_eps, c.K)
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

        self.train = CpuBackend(self.model, stacked("X"), stacked("y"))
        self.test = CpuBackend(self.model, stacked("X_test"), stacked("y_test"))
        self.n, self.n_test = datasets[0].X.shape[0], datasets[0].X_test.shape[0]
        self.population = c.model == "pr-quadratic"

        R = len(configs)
        self.W = np.stack([
            starting_point(cell, datasets[0 if shared else i], self.model.task) for i, cell in enumerate(configs)
        ]).astype(dtype)
        keys = np.stack([training_key(cell) for cell in configs])
        self.selector = batches.selector(c.algorithm, self.n, c.batch_fraction, c.tau, c.lr, keys)
        self.rule = updates.rule(c.update, c.momentum, c.adam_eps)
        self.state = self.rule.init(self.W)
        self.noises = self._noise_sources(keys)
        self.eta = c.step_size
        self.trajectories = Trajectories(epoch_grid(c.max_epochs) if grid is None else grid, R)
        self.live = np.arange(R)
        self.ema = np.full((R, 2), np.nan)  # (tangent, raw) per replica
        self.jumps = [[] for _ in range(R)] if record_gradient_jumps else None
        self.previous_G = None
        self.results: list[RunResult | None] = [None] * R

    def _noise_sources(self, keys):
        c = self.config
        if c.algorithm != "langevin":
            return None
        if c.noise == "temperature":
            return [noise.temperature(c.T0, c.t_cool, key) for key in keys]
        records = gradient_jumps([reference_config(cell) for cell in self.configs])
        return [noise.matched(record, key) for record, key in zip(records, keys)]

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> list[RunResult]:
        step, epoch = 0, 0
        steps_per_epoch = self.selector.steps_per_epoch
        while True:
            for j in range(steps_per_epoch):
                masks = self.selector.select(step, self.live)
                G, losses, errors = self.train.step(self.W, masks, self.live)
                if j == 0:  # the forward pass measured the weights after `epoch`
                    going_on = self._end_of_epoch(epoch, step, losses, errors)
                    G = G[going_on]
                    if self.live.size == 0:
                        return self.results
                self._advance(G, step, epoch)
                step += 1
                if self.live.size == 0:
                    return self.results
            epoch += 1

    def _advance(self, G: np.ndarray, step: int, epoch: int) -> None:
        """One update of every live replica with its batch gradient ``G`` (R, d, p)."""
        c = self.config
        measured = kernels.gradient_maxima(G, self.W, c.projection)  # (tangent, raw) per replica
        raw = measured[:, 1]
        previous = self.ema[self.live]
        self.ema[self.live] = np.where(np.isnan(previous), measured, 0.9 * previous + 0.1 * measured)
        if self.jumps is not None:
            for i, r in enumerate(self.live):
                jump = 0.0 if self.previous_G is None else float(np.linalg.norm(G[i] - self.previous_G[i]))
                self.jumps[r].append(jump)
            self.previous_G = G.copy()
        delta, self.state = self.rule.step(G, self.state, self.eta)
        self.W = self.W + delta
        if self.noises is not None:
            for i, r in enumerate(self.live):
                self.W[i] = self.noises[r](self.W[i], step, self.eta)
        if c.projection:
            self.W = sphere.project(self.W)
        diverged = ~np.isfinite(raw) | ~np.all(np.isfinite(self.W), axis=(1, 2))
        if diverged.any():
            for i in np.flatnonzero(diverged):
                self._finish(i, "diverged", epoch + 1, step + 1, None)
            self._drop(~diverged)

    def _end_of_epoch(self, epoch: int, step: int, losses, errors) -> np.ndarray:
        """Check the stops after ``epoch`` and record the trajectory; return which live replicas go on."""
        c = self.config
        train_error = errors / self.n
        test_error = population_error(self.W, self.w_star) if self.population else self._sampled_test_error()
        ema = self.ema[self.live, 0 if c.stop.grad_measure == "tangent" else 1]
        status = _stop_statuses(c, train_error, test_error, ema) if epoch > 0 else np.zeros(len(self.live), int)
        if epoch == c.max_epochs:
            status[status == 0] = _STATUSES.index("max-epochs")
        stopping = status > 0
        position = self.trajectories.position(epoch)
        if position is not None or stopping.any():
            metrics = self._metrics(train_error, test_error, losses)
            if position is not None:
                self.trajectories.record(position, self.live, metrics)
            for i in np.flatnonzero(stopping):
                self._finish(i, _STATUSES[status[i]], epoch, step, metrics)
        self._drop(~stopping)
        return ~stopping

    def _sampled_test_error(self) -> np.ndarray:
        nothing = np.zeros((len(self.live), self.n_test), dtype=bool)
        return self.test.step(self.W, nothing, self.live)[2] / self.n_test

    def _metrics(self, train_error, test_error, losses) -> dict:
        overlaps = unit_overlaps(self.W, self.w_star)
        return {
            "train_error": train_error,
            "test_error": test_error,
            # For models without a population error, test_error is already the sampled one.
            "test_error_sampled": self._sampled_test_error() if self.population else test_error,
            "train_loss": losses,
            "overlap": overlaps.max(axis=-1),
            "grad_ema": self.ema[self.live, 0],
            "grad_ema_raw": self.ema[self.live, 1],
            "unit_overlaps": overlaps,
        }

    def _finish(self, i: int, status: str, epochs: int, steps: int, metrics: dict | None) -> None:
        """Store the result of live replica ``i``; ``metrics`` None for a divergence mid-epoch."""
        r = int(self.live[i])
        config = self.configs[r]
        finals = {} if metrics is None else {name: values[i] for name, values in metrics.items()}
        finals |= {"grad_ema": self.ema[r, 0], "grad_ema_raw": self.ema[r, 1]}
        self.results[r] = finished(
            config, status, epochs, steps, finals,
            W=self.W[i].copy(),
            trajectory=self.trajectories.dataset(r, config.optimizer_label),
            wall_seconds=time.perf_counter() - self.started,
            gradient_jumps=None if self.jumps is None else np.asarray(self.jumps[r]),
        )

    def _drop(self, keep: np.ndarray) -> None:
        """Keep only the replicas marked in ``keep`` (over the live ones)."""
        if keep.all():
            return
        self.live = self.live[keep]
        self.W = self.W[keep]
        self.state = tuple(s[keep] if isinstance(s, np.ndarray) else s for s in self.state)
        if self.previous_G is not None:
            self.previous_G = self.previous_G[keep]
