"""Seed-steps per second of phaseret's replica engine, a PyTorch CPU loop and this machine's roofline,
measured side by side in one run (issue 5). pr-quadratic, p = 1024, alpha = 2 (n = 2048),
b = 0.5, tau = 2, Nesterov 0.9, lr 0.005, d = 1 unless a row says otherwise.

    python benchmarks/replicas.py            # needs torch for the PyTorch rows: pip install torch==2.13.0

phaseret and PyTorch are measured in turns, 5 times each per row, so both sides of a ratio
see the same minutes of a shared machine; every rate is the median of its 5, and the ratio is
the median of the 5 turns' ratios, their range printed beside it. A phaseret rate is the steady state of the whole
training loop, the epoch's evaluation included: (steps of a 400-epoch run - steps of a 100-epoch
run) / (difference of their times; 30 and 10 epochs for d = 100), so set-up and compilation
cancel out. The
runs record their trajectory on the grid of a 20,002-epoch study, as a real study does
(recording every epoch would measure the recorder, not the step).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from phaseret.config import validate
from phaseret.training import epoch_grid, run_replicas

P, ALPHA, B, TAU, GAMMA, LR = 1024, 2.0, 0.5, 2.0, 0.9, 0.005
N = int(ALPHA * P)
REPEATS = 5
PAUSE = 0.5  # seconds before each turn (both sides' spinning OpenMP threads)
THESIS_RATE = 80.0  # P-SGD steps/s of the thesis' own PyTorch code at this setting (issue 5)
NO_STOP = {"test_error": 0.0, "train_error": 0.0, "grad_ema": 0.0}
STUDY_GRID = epoch_grid(20_002)


def median_rate(measure) -> float:
    measure()  # warm up: compile, fault in memory
    return statistics.median(measure() for _ in range(REPEATS))


# --- phaseret --------------------------------------------------------------------------------


def phaseret_rate(seeds: int, landscape: str, algorithm: str, dtype: str, hidden: int = 1, *, backend: str = "cpu",
                  p: int = P, epochs: tuple[int, int] | None = None) -> float:
    """Steady-state seed-steps per second of ``run_replicas`` (stops disabled), the median of
    :func:`phaseret_measure`'s repeats."""
    return median_rate(phaseret_measure(seeds, landscape, algorithm, dtype, hidden, backend=backend, p=p, epochs=epochs))


def phaseret_measure(seeds: int, landscape: str, algorithm: str, dtype: str, hidden: int = 1, *, backend: str = "cpu",
                     p: int = P, epochs: tuple[int, int] | None = None):
    """One measurement of the steady-state seed-steps per second of ``run_replicas`` (stops
    disabled): the steps of a ``short + extra``-epoch run minus those of a ``short``-epoch run over
    the difference of their times."""

    def timed(max_epochs):
        configs = [
            validate(p=p, alpha=ALPHA, seed=s, hidden=hidden, algorithm=algorithm, update="nesterov", momentum=GAMMA,
                     lr=LR, batch_fraction=B, tau=TAU, landscape=landscape, dtype=dtype, max_epochs=max_epochs,
                     stop=NO_STOP, backend=backend)
            for s in range(seeds)
        ]
        start = time.perf_counter()
        results = run_replicas(configs, STUDY_GRID)
        return time.perf_counter() - start, sum(r.steps for r in results)

    # Past the first 100 epochs, where the grid records nearly every epoch (fewer for d = 100).
    short, extra = epochs or ((100, 300) if hidden == 1 else (10, 20))

    def measure():
        short_time, short_steps = timed(short)
        long_time, long_steps = timed(short + extra)
        return (long_steps - short_steps) / (long_time - short_time)

    return measure


# --- PyTorch: a competent CPU loop written for this benchmark --------------------------------


def torch_measure(seeds: int, landscape: str, algorithm: str, dtype: str, hidden: int = 1):
    """One measurement of the same P-SGD+Nesterov (or GD) on pr-quadratic in PyTorch: tensor indexing, seeds batched
    with ``torch.bmm`` (per-seed) or one matrix product over the stacked weights (shared), the
    epoch's train error measured after every epoch, projection on the sphere."""
    import torch

    torch.set_num_threads(2)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    generator = torch.Generator().manual_seed(0)
    shape = (N, P) if landscape == "shared" else (seeds, N, P)
    X = torch.randn(shape, generator=generator, dtype=tdtype) / P**0.5
    w_star = torch.randn(P, generator=generator, dtype=tdtype)
    y2 = (X @ w_star) ** 2  # targets (n,) or (R, n)
    W = torch.randn(seeds, hidden, P, generator=generator, dtype=tdtype)
    W *= P**0.5 / W.norm(dim=-1, keepdim=True)
    v = torch.zeros_like(W)
    member = torch.rand(seeds, N, generator=generator) < B
    p_in, p_out = LR / TAU, (1 - B) * LR / (B * TAU)
    steps_per_epoch = 2 if algorithm == "p-sgd" else 1
    steps = 200 if hidden == 1 else 20

    def forward(W):
        if landscape == "shared":
            return torch.einsum("np,rkp->rnk", X, W)  # one product over the stacked weights
        return torch.bmm(X, W.transpose(1, 2))  # (R, n, d)

    def measure():
        nonlocal W, v, member
        start = time.perf_counter()
        for step in range(steps):
            lam = forward(W)
            s = (lam**2).mean(-1)
            residual = s - y2
            if step % steps_per_epoch == 0:
                train_error = 0.5 * (residual**2).mean(-1)  # the previous epoch's evaluation
            if algorithm == "p-sgd":
                u = torch.rand(seeds, N, generator=generator)
                member = torch.where(member, u >= p_out, u < p_in)
                residual = residual * member
            D = residual.unsqueeze(-1) * 2 * lam / hidden  # (R, n, d)
            if landscape == "shared":
                G = torch.einsum("rnk,np->rkp", D, X)
            else:
                G = torch.bmm(D.transpose(1, 2), X)
            v = GAMMA * v + G
            W = W - LR * (G + GAMMA * v)
            W = W * (P**0.5 / W.norm(dim=-1, keepdim=True))
        float(train_error.sum())
        return seeds * steps / (time.perf_counter() - start)

    return measure


# --- roofline --------------------------------------------------------------------------------


def gemv_bandwidth(dtype: str) -> float:
    """GB/s of ``X @ w`` with X (n, p)."""
    X = np.random.default_rng(0).standard_normal((N, P)).astype(dtype)
    w = np.ones(P, dtype=dtype)

    def measure():
        start = time.perf_counter()
        for _ in range(50):
            X @ w
        return 50 * X.nbytes / (time.perf_counter() - start) / 1e9

    return median_rate(measure)


def gemm_rate(columns: int, dtype: str) -> float:
    """GFLOP/s of the step's two products for ``columns`` = replicas x d: X W^T and D^T X."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, P)).astype(dtype)
    W = rng.standard_normal((columns, P)).astype(dtype)
    Dt = rng.standard_normal((columns, N)).astype(dtype)

    def measure():
        start = time.perf_counter()
        for _ in range(10):
            X @ W.T
            Dt @ X
        return 10 * 4 * N * P * columns / (time.perf_counter() - start) / 1e9

    return median_rate(measure)


def useful_gflops(rate: float, columns_per_seed: int, algorithm: str) -> float:
    """GFLOP/s counting the forward pass over all rows and the backward pass over the batch's rows."""
    batch = B if algorithm == "p-sgd" else 1.0
    return rate * 2 * N * P * columns_per_seed * (1 + batch) / 1e9


def useful_gbytes(rate: float, dtype: str, algorithm: str) -> float:
    """GB/s of X a step must read at least: all rows (forward) plus the batch's rows (backward)."""
    batch = B if algorithm == "p-sgd" else 1.0
    return rate * N * P * np.dtype(dtype).itemsize * (1 + batch) / 1e9


ROWS = [
    # (seeds, landscape, algorithm, dtype, hidden)
    (1, "shared", "p-sgd", "float64", 1),
    (1, "shared", "p-sgd", "float32", 1),
    (1, "shared", "gd", "float64", 1),
    (10, "shared", "p-sgd", "float64", 1),
    (10, "shared", "p-sgd", "float32", 1),
    (32, "shared", "p-sgd", "float64", 1),
    (32, "shared", "p-sgd", "float32", 1),
    (32, "shared", "gd", "float64", 1),
    (10, "per-seed", "p-sgd", "float64", 1),
    (1, "shared", "p-sgd", "float64", 100),
]


def side_by_side(ours, peer) -> tuple[float, float, list[float]]:
    """Median rates of two measurements taken in turns, ``REPEATS`` times each after a warm-up,
    and the ratio of each turn's pair: both sides see the same minutes of a noisy machine.
    Both sides' OpenMP threads (Numba's and PyTorch's) spin for a while after each use, so every
    turn starts after a pause."""
    ours(), peer()
    pairs = []
    for _ in range(REPEATS):
        time.sleep(PAUSE)
        a = ours()
        time.sleep(PAUSE)
        pairs.append((a, peer()))
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            sorted(a / b for a, b in pairs))


def roofline(ours: float, seeds: int, landscape: str, algorithm: str, dtype: str, hidden: int,
             bandwidth: dict) -> tuple[str, float]:
    """The row's roof and the fraction of it ``ours`` reaches."""
    columns = seeds * hidden if landscape == "shared" else hidden  # columns of one product with X
    if columns == 1:
        return f"GEMV {bandwidth[dtype]:.0f} GB/s", useful_gbytes(ours, dtype, algorithm) / bandwidth[dtype]
    roof = gemm_rate(columns, dtype)
    return f"GEMM {roof:.0f} GFLOP/s", useful_gflops(ours, hidden, algorithm) / roof


def main() -> None:
    bandwidth = {dt: gemv_bandwidth(dt) for dt in ("float64", "float32")}
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    rows = []
    for row in ROWS:
        ours_measure = phaseret_measure(*row)
        if torch is None:
            ours, peer, ratios = median_rate(ours_measure), float("nan"), [float("nan")]
        else:
            ours, peer, ratios = side_by_side(ours_measure, torch_measure(*row))
        rows.append((row, ours, peer, ratios, *roofline(ours, *row, bandwidth)))
    print(f"roofline: GEMV bandwidth float64 {bandwidth['float64']:.1f} GB/s, float32 {bandwidth['float32']:.1f} GB/s")
    header = (f"{'seeds':>5} {'landscape':>9} {'algo':>5} {'dtype':>7} {'d':>3} | {'phaseret':>9} {'x thesis':>8} | "
              f"{'torch':>9} {'ratio':>6} {'spread':>11} | {'roofline':>22} {'reached':>8}")
    print(header)
    print("-" * len(header))
    for (seeds, landscape, algorithm, dtype, hidden), ours, peer, ratios, roof_text, reached in rows:
        spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
        print(f"{seeds:>5} {landscape:>9} {algorithm:>5} {dtype:>7} {hidden:>3} | {ours:>9.0f} {ours / THESIS_RATE:>7.0f}x | "
              f"{peer:>9.0f} {statistics.median(ratios):>5.2f}x {spread:>11} | {roof_text:>22} {reached:>7.0%}")


if __name__ == "__main__":
    main()
