"""In-process study time with the compute pools sized by phaseret against all cores, on an idle
machine and on one whose every core is busy with another process (issue 17), side by side.

    python benchmarks/threads.py            # about 5 minutes on 2 cores

Each row runs the same small study (pr-quadratic, p = 64, GD and P-SGD+Nesterov, 3 alphas x 4
seeds, 1,500 epochs) with ``phaseret run`` in a fresh process, in-process (``--workers 1``), after
one untimed run that fills Numba's cache. Settings:

* ``sized``: phaseret's default, both pools sized to the idle cores (``phaseret/threads.py``);
* ``all cores``: ``PHASERET_THREADS`` = all cores, the sizing phaseret had before;
* ``NUMBA_NUM_THREADS=1``: the workaround a user had.

"Busy" starts one spinning Python process per core for the row. A run is cut at 180 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
name = "threads"
model = "pr-quadratic"
p = 64
alpha = [2.0, 4.0, 6.0]
seeds = 4
max_epochs = 1500
[[optimizer]]
algorithm = "gd"
[[optimizer]]
algorithm = "p-sgd"
update = "nesterov"
"""
CUT = 180
SPIN = "import time\nt = time.time() + 3600\nwhile time.time() < t: pass\n"


def study_seconds(folder: Path, environment: dict, name: str) -> float:
    """Wall time of one in-process run of the study into a fresh folder (inf if cut)."""
    command = [sys.executable, "-m", "phaseret", "run", str(folder / "threads.toml"), "--out", str(folder / name),
               "--no-progress"]
    started = time.perf_counter()
    try:
        subprocess.run(command, env=os.environ | environment, check=True, capture_output=True, timeout=CUT)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - started


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    settings = {"sized": {}, "all cores": {"PHASERET_THREADS": str(cores)}, "NUMBA_NUM_THREADS=1": {"NUMBA_NUM_THREADS": "1"}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "threads.toml").write_text(STUDY)
        study_seconds(folder, {}, "warm-up")
        rows = []
        for load in ("idle", "busy"):
            for label, environment in settings.items():
                spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(cores if load == "busy" else 0)]
                try:
                    seconds = study_seconds(folder, environment, f"{load}-{len(rows)}")
                finally:
                    for spinner in spinners:
                        spinner.kill()
                rows.append((load, label, seconds))
    print(f"{'machine':>8} {'setting':>20} | {'seconds':>8}")
    print("-" * 40)
    for load, label, seconds in rows:
        shown = f"> {CUT}" if seconds == float("inf") else f"{seconds:.1f}"
        print(f"{load:>8} {label:>20} | {shown:>8}")


if __name__ == "__main__":
    main()
