"""Fig 4.1's full-scale groups: one group for all optimizers against one group per optimizer (issue 15).

    python benchmarks/groups.py            # about 4 minutes on 2 cores

The cells are those of ``studies/fig4_1.toml --scale full`` at one alpha (p = 1024, 10 seeds,
per-seed landscape: each seed's X is the same for all six optimizers, SPEC 7), run for a fixed
number of epochs with the stopping rule off so both sides do the same work:

* ``per optimizer``: the grouping phaseret had before, each optimizer's 10 seeds as one batch;
* ``all optimizers``: ``Study.groups()`` today, every optimizer of a seed in one batch (at most
  32 replicas: 5 seeds x 6 optimizers), so one product per seed serves six replicas.

The rate is seed-epochs per second (GD takes one step per epoch, SGD and P-SGD two), the median
of the repeats, both sides measured alternately in one run.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

from phaseret.config import Stop
from phaseret.runs import run_replicas
from phaseret.study import load_study

STUDY = Path(__file__).resolve().parent.parent / "studies" / "fig4_1.toml"
NO_STOP = Stop(train_error=0.0, test_error=0.0, grad_ema=0.0)


def cells_at(alpha: float, epochs: int, dtype: str):
    """The full-scale study's groups at ``alpha``, each cell cut to ``epochs`` epochs without stops."""
    study = load_study(STUDY, "full")

    def short(cell):
        return dataclasses.replace(cell.config, max_epochs=epochs, stop=NO_STOP, dtype=dtype)

    mixed = [[short(c) for c in group] for group in study.groups() if group[0].alpha == alpha]
    per_optimizer = {}
    for group in mixed:
        for config in group:
            per_optimizer.setdefault(config.optimizer_label, []).append(config)
    return mixed, list(per_optimizer.values())


def timed(groups) -> tuple[float, int]:
    started = time.perf_counter()
    seed_epochs = sum(r.epochs for group in groups for r in run_replicas(group))
    return time.perf_counter() - started, seed_epochs


def main(alpha: float = 3.0, epochs: int = 60, repeats: int = 3) -> None:
    print(f"fig 4.1 full scale at alpha = {alpha}: p = 1024, 10 seeds, {epochs} epochs per run, median of {repeats}")
    print(f"{'dtype':>8} {'grouping':>15} {'groups':>7} {'replicas':>9} | {'seconds':>8} {'seed-epochs/s':>14} {'ratio':>6}")
    print("-" * 78)
    for dtype in ("float64", "float32"):
        mixed, per_optimizer = cells_at(alpha, epochs, dtype)
        timed(mixed[:1])  # compile and warm the caches
        times = {"per optimizer": [], "all optimizers": []}
        work = {}
        for _ in range(repeats):
            for name, groups in (("per optimizer", per_optimizer), ("all optimizers", mixed)):
                seconds, work[name] = timed(groups)
                times[name].append(seconds)
        base = work["per optimizer"] / statistics.median(times["per optimizer"])
        for name, groups in (("per optimizer", per_optimizer), ("all optimizers", mixed)):
            rate = work[name] / statistics.median(times[name])
            print(f"{dtype:>8} {name:>15} {len(groups):>7} {max(len(g) for g in groups):>9} | "
                  f"{statistics.median(times[name]):>8.2f} {rate:>14.0f} {rate / base:>5.2f}x")


if __name__ == "__main__":
    main(*(float(a) for a in sys.argv[1:2]))
