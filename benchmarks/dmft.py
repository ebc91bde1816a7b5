"""Time of one DMFT solution (``phaseret.dmft.solve``), this checkout against another commit, side by side.

    python benchmarks/dmft.py                     # this checkout only
    python benchmarks/dmft.py --against 819f241   # and that commit, in turns (a git worktree)

Each timing is one solution in a fresh process after an untimed solve that fills Numba's cache;
the versions take their repeats in turns and the ratio is the median of the turns' ratios.
``diverged`` is the solution's ``diverged_epoch`` (-1: none): a solution that stops early is
not a fair timing. Settings: pr-quadratic, start overlap 0.2, solver seed 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "GD, alpha 4, lr 0.02, 16,384 paths, 60 epochs, exact": dict(
        alpha=4.0, lr=0.02, epochs=60, paths=16384),
    "P-SGD + heavy-ball, alpha 4, lr 0.01, 16,384 paths, 100 epochs, exact": dict(
        alpha=4.0, lr=0.01, epochs=100, paths=16384, algorithm="p-sgd", update="heavy-ball"),
    "P-SGD + heavy-ball, alpha 2.5, lr 0.01, 16,384 paths, 200 epochs, memory 200": dict(
        alpha=2.5, lr=0.01, epochs=200, paths=16384, algorithm="p-sgd", update="heavy-ball", memory=200),
    "P-SGD + heavy-ball, alpha 2.5, lr 0.01, 4,096 paths, 1,000 epochs, memory 200, refresh 20, smoothing 0.05": dict(
        alpha=2.5, lr=0.01, epochs=1000, paths=4096, algorithm="p-sgd", update="heavy-ball", memory=200, refresh=20,
        smoothing=0.05),
}
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from phaseret import dmft
keys = json.loads(sys.argv[2])
dmft.solve("pr-quadratic", **{**keys, "epochs": 2, "paths": 256})
start = time.perf_counter()
ds = dmft.solve("pr-quadratic", overlap0=0.2, seed=1, **keys)
print(json.dumps([time.perf_counter() - start, int(ds.attrs["diverged_epoch"])]))
"""


def solve_time(tree: Path, keys: dict) -> tuple[float, int]:
    """Seconds of one solution with the phaseret of ``tree``, and its diverged epoch."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), json.dumps(keys)], check=True,
                         capture_output=True, text=True).stdout
    seconds, diverged = json.loads(out.strip().splitlines()[-1])
    return seconds, diverged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a git commit to time beside this checkout")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this checkout": ROOT}
        if args.against:
            other = Path(scratch) / "other"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(other), args.against],
                           check=True)
            trees[args.against] = other
        try:
            width = max(map(len, SETTINGS))
            print(f"{'setting':<{width}} " + " ".join(f"{name + ' s':>16} {'diverged':>8}" for name in trees)
                  + ("   ratio" if args.against else ""))
            for label, keys in SETTINGS.items():
                times = {name: [] for name in trees}
                diverged = {}
                for _ in range(args.repeats):
                    for name, tree in trees.items():
                        seconds, diverged[name] = solve_time(tree, keys)
                        times[name].append(seconds)
                row = f"{label:<{width}} " + " ".join(f"{statistics.median(times[n]):16.1f} {diverged[n]:8d}" for n in trees)
                if args.against:
                    ratios = [b / a for a, b in zip(times["this checkout"], times[args.against])]
                    row += f"   {statistics.median(ratios):5.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                print(row, flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=True)


if __name__ == "__main__":
    main()
