"""What recording Hessian spectra costs (issue 13): one call of each piece at p = 1024, alpha 2.5,
d = 1 and d = 5, on a random point of the spheres; median of --repeats runs, in seconds.

``end`` is one :func:`phaseret.landscape.spectra` per run (three matrices); ``grid`` is one
:func:`phaseret.landscape.riemannian_extremes` per grid point and live replica (about 150 grid
points per run). Run: ``python benchmarks/hessian.py [--repeats 3]``.
"""

import argparse
import statistics
import time

import numpy as np

from phaseret import landscape
from phaseret.data import make_dataset
from phaseret.models import Model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--p", type=int, default=1024)
    args = parser.parse_args()
    print("| d | d p | method | grid point (riemannian_extremes) [s] | end of run (spectra, 3 matrices) [s] |")
    print("|---|---|---|---|---|")
    for d in (1, 5):
        data = make_dataset("phase-retrieval", args.p, 2.5, 0)
        model = Model("pr-quadratic", d)
        W = np.random.default_rng(0).normal(size=(d, args.p))
        W *= np.sqrt(args.p) / np.linalg.norm(W, axis=1, keepdims=True)
        batch = np.random.default_rng(1).random(data.X.shape[0]) < 0.5
        timings = {}
        for name, call in (("grid", lambda: landscape.riemannian_extremes(model, W, data.X, data.y)),
                           ("end", lambda: landscape.spectra(model, W, data.X, data.y, batch))):
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                call()
                runs.append(time.perf_counter() - start)
            timings[name] = statistics.median(runs)
        method = "dense" if d * args.p <= landscape.DENSE_LIMIT else "Lanczos"
        print(f"| {d} | {d * args.p} | {method} | {timings['grid']:.2f} | {timings['end']:.2f} |")


if __name__ == "__main__":
    main()
