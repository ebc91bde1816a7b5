"""The panel pass against OpenBLAS's two products for a few columns on one X (issue 15).

    python benchmarks/panel.py            # about 1 minute on 2 cores

One step of ``k`` replicas with one unit each on one ``X`` (n = 2048, p = 1024: pr-quadratic
at alpha = 2, half of the rows in each batch): ``phaseret.kernels.panel.panel_step`` (each row
read once for both passes, four-by-four register tiles) against ``W X^T``, the per-sample
kernel and ``D^T X`` (BLAS). Milliseconds per step, medians of 30 calls; the two sides
alternate in one run. The CPU backend takes the panel up to ``PANEL_COLUMNS`` columns.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from phaseret.kernels import derivative, panel
from phaseret.models import Model

N, P = 2048, 1024
COLUMNS = (1, 2, 4, 8, 16, 24, 32, 48, 64)


def blas_step(X, W, t, mask, codes):
    Dt, losses, errors = derivative.replica_factors(W @ X.T, t, mask, 1, *codes)
    return Dt @ X, losses, errors


def milliseconds(call, repeats: int = 30) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    model = Model("pr-quadratic", 1, 1e-8)
    codes = model.kernel_codes
    print(f"n = {N}, p = {P}; ms per step (median of 30); panel used up to {panel.PANEL_COLUMNS} columns")
    print(f"{'dtype':>8} {'columns':>8} | {'panel':>7} {'BLAS':>7} {'ratio':>6}")
    print("-" * 44)
    for dtype in ("float32", "float64"):
        for k in COLUMNS:
            X = (rng.standard_normal((N, P)) / np.sqrt(P)).astype(dtype)
            W = rng.standard_normal((k, P)).astype(dtype)
            t = model.targets(rng.standard_normal(N) ** 2).astype(dtype)
            mask = rng.random((k, N)) < 0.5
            work = np.empty((panel.chunks(N), k, P), dtype)
            fused = milliseconds(lambda: panel.panel_step(X, W, t, mask, work, *codes))
            blas = milliseconds(lambda: blas_step(X, W, t, mask, codes))
            print(f"{dtype:>8} {k:>8} | {fused:>7.2f} {blas:>7.2f} {blas / fused:>5.2f}x")


if __name__ == "__main__":
    main()
