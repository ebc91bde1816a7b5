"""The CUDA backend on a GPU (issue 7): equivalence with the CPU backend over 200 epochs, then
seed-steps per second against CuPy's cuBLAS for the same product shapes and this machine's CPU.

    pip install -e '.[gpu]' cupy-cuda12x        # cupy only for the roofline column
    python benchmarks/gpu.py                   # p = 1024, alpha = 2, P-SGD+Nesterov (a few minutes)
    NUMBA_ENABLE_CUDASIM=1 PHASERET_CUDA_TILE=2 PHASERET_CUDA_MICRO=2 python benchmarks/gpu.py --smoke   # tiny: the script runs

Rates are medians of 5 repeats of the steady state of the whole training loop (the epoch's
evaluation and the once-per-epoch copy to the host included), as in ``replicas.py``. The
roofline is CuPy's rate for the step's two products ``X W^T`` and ``D^T X`` of the same
shapes and dtype; ``reached`` counts phaseret's flops the same way (4 n p R d per step).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import replicas
from replicas import ALPHA, B, GAMMA, LR, P, TAU, median_rate, phaseret_rate

from phaseret.config import validate
from phaseret.data import n_samples
from phaseret.runs import run_replicas

FULL = dict(p=P, shared=(32, 256, 1024), per_seed=100, cpu_seeds=32, equivalence=(8, 200), epochs=(20, 60),
            dtypes=("float64", "float32"), repeats=replicas.REPEATS)
SMOKE = dict(p=8, shared=(2,), per_seed=2, cpu_seeds=2, equivalence=(2, 3), epochs=(1, 1), dtypes=("float32",), repeats=1)


def equivalence(p: int, seeds: int, epochs: int) -> dict:
    """The same P-SGD+Nesterov cells on both backends: statuses, epochs and the largest
    relative differences of the weights and of the test-error trajectories."""
    runs = {}
    for backend in ("cpu", "cuda"):
        configs = [validate(p=p, alpha=ALPHA, seed=s, algorithm="p-sgd", update="nesterov", momentum=GAMMA, lr=LR,
                            batch_fraction=B, tau=TAU, landscape="shared", max_epochs=epochs, backend=backend)
                   for s in range(seeds)]
        runs[backend] = run_replicas(configs)
    same = all((a.status, a.epochs) == (b.status, b.epochs) for a, b in zip(runs["cpu"], runs["cuda"]))
    weights = max(np.abs(b.W - a.W).max() / np.abs(a.W).max() for a, b in zip(runs["cpu"], runs["cuda"]))
    errors = max(np.nanmax(np.abs(b.trajectory.test_error.values - a.trajectory.test_error.values)
                           / np.abs(a.trajectory.test_error.values)) for a, b in zip(runs["cpu"], runs["cuda"]))
    return {"same status and epochs": same, "max rel. W": weights, "max rel. test error": errors,
            "statuses": sorted({r.status for r in runs["cuda"]})}


def cupy_rate(seeds: int, landscape: str, p: int, dtype: str) -> float | None:
    """GFLOP/s of cuBLAS (through CuPy) for ``X W^T`` and ``D^T X`` of ``seeds`` replicas (d = 1):
    one product over the stacked weights (shared) or a batched product (per-seed); None without CuPy."""
    try:
        import cupy as cp
    except ImportError:
        return None
    n = n_samples(ALPHA, p)
    rng = cp.random.default_rng(0)
    if landscape == "shared":
        X = rng.standard_normal((n, p), dtype=dtype)
        W = rng.standard_normal((seeds, p), dtype=dtype)
        Dt = rng.standard_normal((seeds, n), dtype=dtype)
    else:
        X = rng.standard_normal((seeds, n, p), dtype=dtype)
        W = rng.standard_normal((seeds, 1, p), dtype=dtype)
        Dt = rng.standard_normal((seeds, 1, n), dtype=dtype)

    def measure():
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(20):
            X @ W.swapaxes(-1, -2)
            Dt @ X
        end.record()
        end.synchronize()
        return 20 * 4 * n * p * seeds / (cp.cuda.get_elapsed_time(start, end) / 1e3) / 1e9

    return median_rate(measure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the script runs")
    size = SMOKE if parser.parse_args().smoke else FULL
    p, n = size["p"], n_samples(ALPHA, size["p"])
    replicas.REPEATS = size["repeats"]

    started = time.perf_counter()
    check = equivalence(p, *size["equivalence"])
    print(f"equivalence, {size['equivalence'][0]} seeds x {size['equivalence'][1]} epochs, p = {p}, float64:",
          ", ".join(f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items()))

    rows = [(seeds, "shared") for seeds in size["shared"]] + [(size["per_seed"], "per-seed")]
    print(f"{'seeds':>5} {'landscape':>9} {'dtype':>7} | {'cuda':>9} {'GFLOP/s':>8} | {'cuBLAS':>8} {'reached':>7} | {'cpu':>7} {'ratio':>6}")
    print("-" * 86)
    cpu = {dtype: phaseret_rate(size["cpu_seeds"], "shared", "p-sgd", dtype, p=p) for dtype in size["dtypes"]}
    for dtype in size["dtypes"]:
        for seeds, landscape in rows:
            rate = phaseret_rate(seeds, landscape, "p-sgd", dtype, backend="cuda", p=p, epochs=size["epochs"])
            gflops = rate * 4 * n * p / 1e9
            roof = cupy_rate(seeds, landscape, p, dtype)
            roof_text = f"{roof:8.0f} {gflops / roof:7.0%}" if roof else f"{'(no cupy)':>16}"
            print(f"{seeds:>5} {landscape:>9} {dtype:>7} | {rate:>9.0f} {gflops:>8.0f} | {roof_text} | "
                  f"{cpu[dtype]:>7.0f} {rate / cpu[dtype]:>5.1f}x")
    print(f"cpu: phaseret's CPU backend, {size['cpu_seeds']} seeds, shared; medians of {replicas.REPEATS} repeats; "
          f"the script ran {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
