"""Running a study (:mod:`phaseret.runner`): resume after a kill, corrupt cells, failed groups,
folders of other studies, and on Dask (local workers, a scheduler, a killed worker, SLURM)."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import requires_dask, requires_jobqueue
from tiny_study import BASE, open_result, same_results, write_study

from phaseret import results, runner
from phaseret.cli import main
from phaseret.study import build_study, load_study


def test_sigkill_then_rerun_resumes_without_recomputing(tmp_path):
    study_file = write_study(tmp_path, max_epochs=4000)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "phaseret", "run", str(study_file), "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = out / "cells"
    deadline = time.time() + 120
    while len(list(cells.glob("*.nc"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.nc")}
    assert 3 <= len(before) < 8, "the kill must land in the middle of the study"
    assert not (out / "tiny.nc").exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.nc")}
    assert len(after) == 8 and not list(cells.glob(".*.tmp"))
    assert all(after[name] == mtime for name, mtime in before.items())  # no finished cell ran twice
    runner.run_study(load_study(study_file), tmp_path / "whole", progress=False)
    same_results(open_result(out), open_result(tmp_path / "whole"))


def test_corrupt_cell_is_recomputed_and_status_lists_cells(tmp_path, capsys):
    study = load_study(write_study(tmp_path))
    out = tmp_path / "out"
    runner.run_study(study, out, progress=False)
    reference = open_result(out)
    victim = results.cell_path(out, study.cells[0])
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    assert main(["status", str(out)]) == 0
    assert "7 done, 0 failed, 1 pending of 8 cells" in capsys.readouterr().out
    runner.run_study(study, out, progress=False)
    same_results(open_result(out), reference)


def test_a_group_that_raises_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    study = load_study(write_study(tmp_path))
    assert [len(g) for g in study.groups()] == [4, 2, 2]  # the seeds of an alpha run together, every optimizer
    real_run = runner.run_replicas

    def flaky(configs, grid=None, **kwargs):
        if any(c.algorithm == "p-sgd" and c.alpha == 4.0 and c.seed == 1 for c in configs):
            raise RuntimeError("planted failure")
        return real_run(configs, grid, **kwargs)

    monkeypatch.setattr(runner, "run_replicas", flaky)
    out = tmp_path / "out"
    runner.run_study(study, out, progress=False)
    failed = sorted((out / "cells").glob("*.failed.txt"))
    assert len(failed) == 2 and "planted failure" in failed[1].read_text()
    ds = open_result(out)
    assert ds.test_error.notnull().sum() == 6
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 done, 2 failed, 0 pending" in printed and "failed: p-sgd+nesterov__p24_h1_a4_s1" in printed
    monkeypatch.setattr(runner, "run_replicas", real_run)  # fixed: a rerun completes the study
    runner.run_study(study, out, progress=False)
    assert open_result(out).test_error.notnull().sum() == 8 and not list((out / "cells").glob("*.failed.txt"))


def test_a_folder_of_another_study_is_refused(tmp_path):
    out = tmp_path / "out"
    runner.run_study(load_study(write_study(tmp_path)), out, progress=False)
    other = build_study(BASE | {"name": "other"})
    with pytest.raises(ValueError, match="^out: .* holds the study 'tiny'"):
        runner.run_study(other, out, progress=False)


@requires_dask
def test_one_and_two_workers_give_identical_datasets(tmp_path):
    study = load_study(write_study(tmp_path))
    runner.run_study(study, tmp_path / "one", progress=False)
    runner.run_study(study, tmp_path / "two", workers=2, progress=False)
    same_results(open_result(tmp_path / "one"), open_result(tmp_path / "two"))


@requires_dask
def test_a_study_on_an_existing_scheduler(tmp_path):
    import distributed

    study = load_study(write_study(tmp_path))
    runner.run_study(study, tmp_path / "local", progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster:
        runner.run_study(study, tmp_path / "remote", scheduler=cluster.scheduler_address, progress=False)
    same_results(open_result(tmp_path / "local"), open_result(tmp_path / "remote"))


@requires_dask
def test_local_workers_are_single_threaded(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # a user's shell setting: Dask's nanny would prefer it
    with runner._client(2, None, None) as client:
        assert all(client.run(runner.environment_is_pinned).values())
    assert os.environ["OMP_NUM_THREADS"] == "4"


@requires_dask
def test_a_killed_worker_costs_only_its_cell(tmp_path):
    import distributed

    study = load_study(write_study(tmp_path, max_epochs=3000))
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            pids = list(client.run(os.getpid).values())

            def kill_one_worker_mid_study():
                deadline = time.time() + 120
                while len(list((out / "cells").glob("*.nc"))) < 2 and time.time() < deadline:
                    time.sleep(0.02)
                os.kill(pids[0], signal.SIGKILL)

            killer = threading.Thread(target=kill_one_worker_mid_study)
            killer.start()
            runner.run_study(study, out, scheduler=cluster.scheduler_address, progress=False)
            killer.join()
            assert pids[0] not in client.run(os.getpid).values()  # that worker really died
    files = sorted(p.name for p in (out / "cells").iterdir())
    assert files == sorted(f"{c.name}.nc" for c in study.cells)  # every cell exactly once, no leftovers
    runner.run_study(study, tmp_path / "calm", progress=False)
    same_results(open_result(out), open_result(tmp_path / "calm"))


@requires_jobqueue
def test_slurm_job_script_carries_the_requested_resources():
    options = runner.SlurmOptions(queue="gpu-long", walltime="02:30:00", cores=4, memory="16GB", jobs=3)
    with runner.slurm_cluster(options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p gpu-long" in script
    assert "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=15G" in script or "#SBATCH --mem=16G" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
    assert "export NUMBA_NUM_THREADS=1" in script


@requires_dask
def test_local_workers_leave_this_process_environment_as_it_was(tmp_path):
    """Dask's nanny writes NUMBA_NUM_THREADS=1 and friends into the parent's os.environ; Numba in the
    parent would then reload its configuration at its next compilation and refuse to run."""
    before = {name: os.environ.get(name) for name in runner.WORKER_ENVIRONMENT}
    runner.run_study(load_study(write_study(tmp_path)), tmp_path / "out", workers=2, progress=False)
    assert {name: os.environ.get(name) for name in runner.WORKER_ENVIRONMENT} == before


def test_the_engine_reports_the_seed_epochs_it_runs():
    from phaseret.training import run_replicas, validate

    configs = [validate(alpha=a, p=24, n_test=24, seed=s, algorithm="p-sgd", update="nesterov", max_epochs=400)
               for a in (4.0,) for s in range(3)]
    counted = []
    results = run_replicas(configs, progress=counted.append)
    assert sum(counted) == sum(r.epochs for r in results)  # every live replica's epoch, once
    assert counted[0] == 3 and counted[-1] >= 1 and len(counted) == max(r.epochs for r in results)


def test_group_progress_tops_a_group_up_to_its_budget_and_ignores_late_reports():
    updates = []
    tracker = runner.GroupProgress(updates.append)
    tracker.advance("a", 30)
    tracker.advance("a", 20)
    tracker.finish("a", 120)  # replicas that stopped early: the rest of the budget at once
    tracker.advance("a", 5)  # a report that arrived after the group finished
    assert updates == [30, 20, 70] and sum(updates) == 120


@requires_dask
def test_dask_workers_report_progress_while_a_group_runs(tmp_path, monkeypatch):
    reports = []
    original = runner.GroupProgress.advance

    def advance(self, key, seed_epochs):
        reports.append((key, seed_epochs, key in self.finished))
        original(self, key, seed_epochs)

    monkeypatch.setattr(runner.GroupProgress, "advance", advance)
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.0)  # every epoch: a tiny group is quick
    runner.run_study(load_study(write_study(tmp_path)), tmp_path / "out", workers=2, progress=False)
    during = [r for r in reports if not r[2]]
    assert during and all(n > 0 for _, n, _ in during)  # events from the workers before their groups ended
