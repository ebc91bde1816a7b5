"""How many threads a run's compute pools get: Numba's parallel kernels and BLAS (issue 17).

On a machine whose cores are busy with other work, pools sized to every core make each parallel
region wait for a thread the OS has descheduled: a small in-process study took over 300 s
instead of 8 s with two other processes spinning on the two cores (``benchmarks/threads.py``).
So when a run starts, phaseret counts the cores that are idle right now, or busy with its own
threads (``/proc/stat`` over 50 ms, at most every 5 s) and sizes both pools to that many, at least one, at most the cores
this process may use. ``PHASERET_THREADS=N`` fixes the number instead. The two pools never
run at once (a step calls BLAS or a parallel kernel, one after the other), so both get the
same number.
"""

from __future__ import annotations

import contextlib
import os
import time

_MEASURED: dict = {}
_WINDOW, _KEEP = 0.05, 5.0


def _cpu_times() -> tuple[float, float, float] | None:
    """``(idle, total, own)`` jiffies since boot: idle (with iowait) and all time of every core, and
    this process's user and system time (all its threads); None where ``/proc`` is missing."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(x) for x in handle.readline().split()[1:]]
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()  # fields after the command name
    except (OSError, ValueError, IndexError):
        return None
    return fields[3] + fields[4], sum(fields[:8]), float(own[11]) + float(own[12])  # utime, stime


def idle_cores() -> float | None:
    """Cores this process could have over the last 50 ms: the idle ones plus those its own threads
    kept busy (Numba's OpenMP threads spin for a while after a parallel region), a float; None
    where the kernel does not tell."""
    before = _cpu_times()
    time.sleep(_WINDOW)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    free = (after[0] - before[0]) + (after[2] - before[2])
    return min(1.0, free / (after[1] - before[1])) * (os.cpu_count() or 1)


def run_threads() -> int:
    """Threads for each pool of the run that starts now: ``PHASERET_THREADS`` if set, else the idle
    cores (rounded, at least 1), at most the cores this process may use."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    fixed = os.environ.get("PHASERET_THREADS")
    if fixed:
        if not fixed.isdigit() or int(fixed) < 1:
            raise ValueError(f"PHASERET_THREADS: must be an integer >= 1, got {fixed!r}")
        return min(int(fixed), allowed)
    now = time.monotonic()
    if now - _MEASURED.get("at", -_KEEP) >= _KEEP:
        idle = idle_cores()
        _MEASURED.update(at=now, threads=allowed if idle is None else max(1, min(allowed, round(idle))))
    return _MEASURED["threads"]


@contextlib.contextmanager
def sized_pools():
    """Numba's and BLAS's (and OpenMP's) pools limited to :func:`run_threads` while a run computes."""
    import numba
    from threadpoolctl import threadpool_limits

    threads = min(run_threads(), numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield threads
    finally:
        numba.set_num_threads(previous)
