"""Running validated cells: the baselines (GAMP, spectral) one by one, every gradient method as a
replica batch of the engine. Where a run starts, its ``backend`` is resolved to a device."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .baselines import run_baseline
from .config import BASELINES, RunConfig, reference_config
from .devices import resolve
from .engine import Engine
from .matched_noise import GradientJumps
from .records import RunResult, epoch_grid
from .replica_batch import build_batch, check_replicas, parts_of
from .threads import sized_pools


def run_replicas(configs: list[RunConfig], grid=None, *, record_gradient_jumps: bool = False,
                 record_landscape: bool = False, jumps: GradientJumps | None = None,
                 interrupt: Callable[[], None] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[RunResult]:
    """Train validated cells that differ only in ``seed`` and their optimizer keys, in lockstep (the
    replicas that see one ``X`` share its products); one result per cell, in order. On the ``cuda``
    backend each optimizer's run of consecutive cells is its own batch.

    ``grid``: the trajectory's epochs (default ``epoch_grid(max_epochs)``). With
    ``record_gradient_jumps`` each result carries its matched-noise record; with
    ``record_landscape`` its trajectory carries the Riemannian Hessian's extremes on the grid
    (:data:`phaseret.landscape.EXTREMES`). ``jumps``: the cache of
    matched-noise records for Langevin cells (default: a new one for this call). ``interrupt``:
    called after every epoch of a gradient method; it raises to stop the batch. ``progress``:
    called before every epoch with the number of live replicas (seed-epochs). A ``backend``
    that cannot run here (``cuda`` without a GPU) is refused before any work. Overflow is no
    warning: a non-finite value ends that replica with status ``diverged``."""
    check_replicas(configs)
    started = time.perf_counter()
    c = configs[0]
    device = resolve(c.backend)
    grid = epoch_grid(c.max_epochs) if grid is None else grid
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), sized_pools():
        if c.algorithm in BASELINES:
            return [run_baseline(config, grid) for config in configs]
        matched = [i for i, cell in enumerate(configs) if cell.algorithm == "langevin" and cell.noise == "matched"]
        records = [None] * len(configs)
        if matched:
            jumps = reference_jumps() if jumps is None else jumps
            for i, record in zip(matched, jumps.records([reference_config(configs[i]) for i in matched])):
                records[i] = record
        spans = [range(len(configs))] if device == "cpu" else parts_of(configs)
        outcomes = []
        for span in spans:
            batch = build_batch(configs[span.start : span.stop], device, records[span.start : span.stop],
                                record_gradient_jumps, record_landscape)
            outcomes += Engine(batch, grid, record_gradient_jumps, started, interrupt, progress).run()
        return outcomes


def reference_jumps() -> GradientJumps:
    """A new cache of matched-noise records whose reference runs are replica batches here."""

    def run(references: list[RunConfig]) -> list[np.ndarray]:
        return [r.gradient_jumps for r in run_replicas(references, record_gradient_jumps=True)]

    return GradientJumps(run)
