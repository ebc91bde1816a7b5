"""The replica engine's loop: cells that differ only in their seed and optimizer advance in lockstep,
epoch by epoch (SPEC 4-7).

One loop serves every optimizer and every device: the backend's replica state
(:mod:`phaseret.backends`) draws each replica's ``M_t``, computes the gradients and, from the
same forward pass, the loss and error of the current weights (the previous epoch's
evaluation), then applies each part's update rule, the Langevin noise and the projection to every
replica at once. After each epoch the SPEC 6 statuses are checked per replica; finished
replicas drop out, so the cost follows the live ones. An epoch is as many steps as its longest
batch rule takes (GD one, SGD and P-SGD ``ceil(1/b)``); step ``j`` is taken by the replicas whose
rule has more than ``j`` steps per epoch. The batch comes ready from
:func:`phaseret.replica_batch.build_batch`.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np

from .landscape import EXTREMES
from .metrics import measure, reported_test_error
from .records import RunResult, Trajectories, finished
from .replica_batch import ReplicaBatch
from .status import ORDER, Status, stop_statuses


class Engine:
    """The loop over one replica batch, its trajectories and its results."""

    def __init__(self, batch: ReplicaBatch, grid: np.ndarray, record_gradient_jumps: bool = False,
                 started: float | None = None, interrupt: Callable[[], None] | None = None,
                 progress: Callable[[int], None] | None = None):
        """``started``: the ``time.perf_counter()`` at which the batch began (its set-up included);
        ``interrupt``: called after every epoch, it raises to stop the batch (a stop the user asked for);
        ``progress``: called before every epoch with the number of live replicas that run it (the
        seed-epochs about to be done)."""
        self.started = time.perf_counter() if started is None else started
        self.interrupt = interrupt
        self.progress = progress
        self.batch = batch
        self.replicas = batch.replicas
        self.config = batch.configs[0]
        self.record_jumps = record_gradient_jumps
        extra = EXTREMES if batch.landscape is not None else None
        self.trajectories = Trajectories(grid, len(batch.configs), extra)
        self.results: list[RunResult | None] = [None] * len(batch.configs)

    def run(self) -> list[RunResult]:
        epoch = 0
        steps_per_epoch = int(self.batch.steps_per_epoch.max())
        while True:
            for j in range(steps_per_epoch):
                measured = self.replicas.gradients(epoch, j, measure=j == 0)
                if j == 0:  # the forward pass measured the weights after `epoch`
                    if self.interrupt is not None:
                        self.interrupt()
                    self._end_of_epoch(epoch, *measured)
                    if self.replicas.live.size == 0:
                        return self.results
                    if self.progress is not None:
                        self.progress(int(self.replicas.live.size))
                self.replicas.update(epoch, j)
            epoch += 1

    def _end_of_epoch(self, epoch: int, losses, errors) -> None:
        """Check the stops after ``epoch``, record the trajectory and drop the replicas that stop.

        A replica whose gradient or weights went non-finite during the epoch ends ``diverged`` at
        that step, with NaN finals."""
        c, batch = self.config, self.batch
        W = self.replicas.weights()
        diverged_at = self.replicas.diverged_at()
        steps_per_epoch = self.batch.steps_per_epoch[self.replicas.live]
        for i in np.flatnonzero(diverged_at >= 0):
            s = int(diverged_at[i])
            self._finish(i, Status.DIVERGED, s // steps_per_epoch[i] + 1, s + 1, None, W)
        train_error = errors / batch.n
        sampled = functools.cache(lambda: self.replicas.test_error_sums() / batch.n_test)
        test_error = reported_test_error(c.model, W, batch.w_star, sampled)
        ema = self.replicas.ema()
        status = stop_statuses(c.stop, train_error, test_error, ema[:, 0 if c.stop.grad_measure == "tangent" else 1])
        if epoch == 0:
            status[:] = 0
        if epoch == c.max_epochs:
            status[status == 0] = ORDER.index(Status.MAX_EPOCHS)
        status[diverged_at >= 0] = -1  # already finished
        stopping = status > 0
        position = self.trajectories.position(epoch)
        if position is not None or stopping.any():
            metrics = measure(c.model, W, batch.w_star, train_error=train_error, train_loss=losses, sampled=sampled,
                              ema=ema, test_error=test_error)
            if position is not None:
                going_on = status >= 0
                self.trajectories.record(position, self.replicas.live[going_on], {k: v[going_on] for k, v in metrics.items()})
                if batch.landscape is not None:
                    self._record_landscape(position, np.flatnonzero(going_on), W)
            for i in np.flatnonzero(stopping):
                self._finish(i, ORDER[status[i]], epoch, epoch * int(steps_per_epoch[i]), metrics, W)
        self.replicas.keep(status == 0)

    def _record_landscape(self, position: int, indices: np.ndarray, W) -> None:
        """The Riemannian Hessian's extremes of live replicas ``indices`` at grid ``position``."""
        for i in indices:
            r = int(self.replicas.live[i])
            extremes = self.batch.landscape(r, np.asarray(W[i], dtype=float))
            self.trajectories.record(position, np.array([r]), {k: np.array([v]) for k, v in extremes.items()})

    def _finish(self, i: int, status: Status, epochs: int, steps: int, metrics: dict | None, W) -> None:
        """Store the result of live replica ``i``; ``metrics`` None for a divergence (NaN finals)."""
        r = int(self.replicas.live[i])
        config = self.batch.configs[r]
        ema = self.replicas.ema()
        finals = {} if metrics is None else {name: values[i] for name, values in metrics.items()}
        finals |= {"grad_ema": ema[i, 0], "grad_ema_raw": ema[i, 1]}
        jumps = self.replicas.gradient_jumps(r) if self.record_jumps else None
        self._record_steps(r, config, epochs, steps, jumps, W[i].size)
        self.results[r] = finished(
            config, status, epochs, steps, finals,
            W=np.array(W[i], dtype=W.dtype),
            trajectory=self.trajectories.dataset(r, config.optimizer_label),
            wall_seconds=time.perf_counter() - self.started,
            gradient_jumps=jumps,
        )

    def _record_steps(self, r: int, config, epochs: int, steps: int, jumps, size: int) -> None:
        """Replica ``r``'s per-step trajectories (SPEC 5, 8): the Langevin kick's size (0 without
        noise) and, when recorded, the gradient jumps, as means over each epoch's steps."""
        part, local = self.batch.part_of(r)
        noise, per_epoch = part.optimizer.noise, part.steps_per_epoch
        levels = np.zeros(steps) if noise is None else noise.levels(local, steps, config.step_size, size)
        self.trajectories.record_steps(r, "noise_sigma", levels, per_epoch, epochs)
        if jumps is not None:
            self.trajectories.record_steps(r, "gradient_jump", jumps, per_epoch, epochs)
