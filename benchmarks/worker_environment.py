"""Seconds for one P-SGD+Nesterov run (p = 256, alpha = 2, 3000 epochs) in a one-worker Dask
LocalCluster, with Dask's default worker environment and with phaseret's (runner.WORKER_ENVIRONMENT).

    python benchmarks/worker_environment.py

Prints the median of 3 runs per environment, measured side by side in one process.
"""

import statistics

import dask
from distributed import Client, LocalCluster

import phaseret
from phaseret.runner import WORKER_ENVIRONMENT


def one_run() -> float:
    keys = dict(p=256, alpha=2.0, seed=0, algorithm="p-sgd", update="nesterov", max_epochs=3000)
    return phaseret.train(**keys).wall_seconds


def median_seconds(config: dict) -> float:
    with dask.config.set(config), LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            client.submit(one_run, pure=False).result()  # compile
            return statistics.median(client.submit(one_run, pure=False).result() for _ in range(3))


if __name__ == "__main__":
    phaseret_env = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRONMENT.items()}
    default = median_seconds({})
    pinned = median_seconds(phaseret_env)
    print(f"{'worker environment':<24}{'median s':>10}")
    print(f"{'dask default':<24}{default:>10.2f}")
    print(f"{'phaseret':<24}{pinned:>10.2f}")
    print(f"ratio {default / pinned:.2f}x")
