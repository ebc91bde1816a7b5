"""Compute pools sized to the cores a run really has (issue 17): Numba's and BLAS's threads."""

import os

import numba
import pytest
from threadpoolctl import threadpool_info

from phaseret import threads


@pytest.fixture
def fresh(monkeypatch):
    """Forget the last measurement, so that each test measures (through its own fake)."""
    monkeypatch.setattr(threads, "_MEASURED", {})
    monkeypatch.delenv("PHASERET_THREADS", raising=False)


def test_busy_cores_shrink_both_pools_and_they_come_back(fresh, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.3)  # another process keeps every core busy
    before = numba.get_num_threads()
    with threads.sized_pools() as count:
        assert count == 1 and numba.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert numba.get_num_threads() == before


def test_idle_cores_are_used_and_measured_at_most_every_few_seconds(fresh, monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "idle_cores", lambda: calls.append(1) or 64.0)
    cores = threads.run_threads()
    assert cores == min(64, len(os.sched_getaffinity(0)))  # never more than this process may use
    threads.run_threads()
    assert len(calls) == 1


def test_phaseret_threads_fixes_the_count(fresh, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: pytest.fail("measured although PHASERET_THREADS is set"))
    monkeypatch.setenv("PHASERET_THREADS", "1")
    assert threads.run_threads() == 1
    monkeypatch.setenv("PHASERET_THREADS", "zero")
    with pytest.raises(ValueError, match="^PHASERET_THREADS: must be an integer >= 1"):
        threads.run_threads()


def test_idle_cores_reads_the_kernel():
    idle = threads.idle_cores()
    assert idle is None or 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9
