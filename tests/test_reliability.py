"""Nothing lost or mislabelled, one writer per folder, clean stops, environment errors as one line
(issue 17). Signals and locks are tested across processes."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import requires_dask
from tiny_study import BASE, open_result, same_results, write_study

import phaseret
from phaseret import results, runner
from phaseret.cli import main
from phaseret.study import build_study, load_study

# --- names, grids, inputs --------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"optimizer": [{"algorithm": "gd", "label": "a/b"}, {"algorithm": "gd", "label": "a_b"}]}, "^label: .* name the same cell files"),
    ({"optimizer": [{"algorithm": "gd", "label": "GD"}, {"algorithm": "gd", "label": "gd"}]}, "^label: .* name the same cell files"),
    ({"alpha": [3.0, 3.0000001]}, r"^alpha: 3.0 and 3.0000001 name the same cell file"),
])
def test_cell_files_that_would_collide_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        build_study(BASE | change)


def test_an_edited_budget_recomputes_instead_of_relabelling(tmp_path):
    out = tmp_path / "out"
    runner.run_study(load_study(write_study(tmp_path, max_epochs=300)), out, progress=False)
    edited = load_study(write_study(tmp_path, max_epochs=400))  # another largest budget: another grid
    assert all(results.read_cell(out, cell, edited.grid) is None for cell in edited.cells)
    runner.run_study(edited, out, progress=False)
    runner.run_study(edited, tmp_path / "calm", progress=False)
    same_results(open_result(out), open_result(tmp_path / "calm"))


def test_model_inputs_are_cast_or_refused():
    model = phaseret.Model("pr-quadratic")
    rng = np.random.default_rng(0)
    X, W, y = rng.integers(-3, 4, size=(20, 5)), rng.standard_normal(5), rng.standard_normal(20)
    assert model.loss(W, X, y) == model.loss(W, X.astype(float), y)  # W is not truncated to integers
    with pytest.raises(ValueError, match="^X: must be finite"):
        model.loss(W, np.where(X == 0, np.nan, X), y)
    with pytest.raises(ValueError, match="^y: must be finite"):
        model.grad(W, X, np.full(20, np.inf))
    with pytest.raises(ValueError, match="^X: must hold real numbers"):
        model.loss(W, X.astype(str), y)


def test_numpy_scalars_are_numbers_and_bad_dataset_arguments_are_named():
    r = phaseret.train(p=np.int64(16), alpha=np.float32(2.0), seed=np.int32(1), max_epochs=np.int64(3))
    assert r.epochs == 3 and type(r.config.p) is int and type(r.config.alpha) is float
    for keys, field in ((dict(p=0), "p"), (dict(alpha=float("nan")), "alpha"), (dict(seed=-1), "seed"), (dict(p=2.5), "p")):
        with pytest.raises(ValueError, match=f"^{field}: "):
            phaseret.make_dataset("phase-retrieval", **({"p": 8, "alpha": 2.0, "seed": 0} | keys))


@pytest.mark.parametrize("stop", [{"test_error": float("inf")}, {"train_error": 0.7}, {"success": 1.0},
                                  {"grad_ema": float("nan")}])
def test_stop_thresholds_must_make_sense(stop):
    key = next(iter(stop))
    with pytest.raises(ValueError, match=f"^stop.{key}: must be a finite number"):
        phaseret.train(p=8, alpha=2.0, stop=stop)


# --- study files refused before any work -----------------------------------------------------------


def test_bad_scale_tables_empty_lists_and_huge_studies_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"^scale.quick.sedes: unknown key"):
        build_study(BASE | {"scale": {"quick": {"sedes": 2}}})  # caught at full scale too
    with pytest.raises(ValueError, match=r"^scale.quick.p: must be >= 2"):
        build_study(BASE | {"scale": {"quick": {"p": 1}}}, "quick")
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"^seeds: 100000000 seeds make 200,000,000 cells"):
        build_study(BASE | {"seeds": 10**8})
    assert time.perf_counter() - started < 5
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace('algorithm = "gd"', 'algorithm = "gd"\nlr = []'))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_slurm_without_sbatch_fails_fast(tmp_path, capsys, monkeypatch):
    # No sbatch on PATH (patched where the runner looks: changing os.environ would make Numba
    # reload its configuration in this process).
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    assert main(["run", str(write_study(tmp_path)), "--out", str(tmp_path / "out"), "--slurm"]) == 2
    assert "slurm: no `sbatch` on PATH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@requires_dask
def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT", "2s")
    assert main(["run", str(write_study(tmp_path)), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("phaseret: error: scheduler: cannot reach") and "Traceback" not in err


# --- environment errors --------------------------------------------------------------------------


def test_plot_and_status_on_broken_folders_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    study = load_study(write_study(tmp_path))
    results.claim_folder(study, out)
    assert main(["plot", str(out)]) == 2
    assert "tiny.nc does not exist; finish the study first" in capsys.readouterr().err
    (out / "tiny.nc").write_bytes(b"CDF\x01 truncated")
    assert main(["plot", str(out)]) == 2
    assert "tiny.nc cannot be read" in capsys.readouterr().err
    (out / "study.json").write_text("{not json")
    assert main(["status", str(out)]) == 2
    assert "study.json is not a study record phaseret can read" in capsys.readouterr().err


def test_a_full_disk_leaves_the_cell_pending(tmp_path, capsys, monkeypatch):
    write_atomically = results.write_atomically

    def full_disk(path, write):
        if path.parent.name == "cells":  # a cell file: the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_atomically(path, write)

    path = write_study(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(results, "write_atomically", full_disk)
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "stay pending" in err and "Traceback" not in err
    monkeypatch.undo()
    assert main(["status", str(out)]) == 0
    assert "0 done, 0 failed, 8 pending" in capsys.readouterr().out


# --- one writer per folder, clean stops (other processes) -------------------------------------------

HOLD = """
import sys, time
from pathlib import Path
from phaseret import results
with results.folder_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(folder, seconds):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def test_a_second_run_on_a_folder_is_refused_naming_the_holder_or_waits(tmp_path):
    path, out = write_study(tmp_path), tmp_path / "out"
    holder = hold_lock(out, 60)
    run = [sys.executable, "-m", "phaseret", "run", str(path), "--out", str(out), "--no-progress"]
    refused = subprocess.run(run, capture_output=True, text=True)
    assert refused.returncode == 2
    assert f"is in use by phaseret run on {os.uname().nodename}, pid {holder.pid}, since" in refused.stderr
    holder.kill()  # SIGKILL: the OS releases the lock with the process
    holder.wait()
    holder = hold_lock(out, 3)
    waited = subprocess.run(run + ["--wait"], capture_output=True, text=True)
    assert waited.returncode == 0 and holder.wait() == 0
    runner.run_study(load_study(path), tmp_path / "calm", progress=False)
    same_results(open_result(out), open_result(tmp_path / "calm"))


def stop_mid_study(tmp_path, signum, extra=()):
    """Start the tiny study (long budget) in a subprocess, signal it once a cell is written, return it."""
    path, out = write_study(tmp_path, max_epochs=4000), tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "phaseret", "run", str(path), "--out", str(out), "--no-progress",
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "cells").glob("*.nc")) and time.time() < deadline:
        time.sleep(0.05)
    sent = time.time()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err, time.time() - sent, path, out


@pytest.mark.parametrize("signum, code, extra", [
    (signal.SIGINT, 130, ()),
    (signal.SIGTERM, 143, ()),
    pytest.param(signal.SIGINT, 130, ("--workers", "2"), marks=requires_dask, id="SIGINT-dask"),
    pytest.param(signal.SIGTERM, 143, ("--workers", "2"), marks=requires_dask, id="SIGTERM-dask"),
])
def test_signals_stop_cleanly_and_a_rerun_resumes(tmp_path, signum, code, extra):
    returncode, err, seconds, path, out = stop_mid_study(tmp_path, signum, extra)
    assert returncode == code, err
    assert f"stopped by {signal.Signals(signum).name}:" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err and seconds < 20
    assert not list((out / "cells").glob("*.failed.txt")) and not list((out / "cells").glob(".*.tmp"))
    assert subprocess.run([sys.executable, "-m", "phaseret", "run", str(path), "--out", str(out), "--no-progress"],
                          capture_output=True).returncode == 0
    runner.run_study(load_study(path), tmp_path / "calm", progress=False)
    same_results(open_result(out), open_result(tmp_path / "calm"))


def test_a_per_seed_group_too_large_for_the_machine_runs_seed_by_seed_with_the_same_bits(tmp_path, monkeypatch):
    """Memory decides how a per-seed group is cut, never what it computes: a seed's replicas share
    nothing with another seed's, so the split run equals the whole-group run bit for bit."""
    from phaseret import sizes

    table = {"name": "tiny", "p": 24, "alpha": [3.0], "seeds": 4, "max_epochs": 150,
             "optimizer": [{"algorithm": "gd"}, {"algorithm": "p-sgd", "update": "nesterov"}]}
    study = build_study(table)
    assert [len(g) for g in study.groups()] == [8]
    whole = sum(sizes.group_bytes(study.cells[0].config, 8, 4).values())
    two_seeds = sum(sizes.group_bytes(study.cells[0].config, 4, 2).values())
    monkeypatch.setattr(sizes, "available_bytes", lambda: two_seeds)
    split = sizes.fit(study.groups(), *sizes.local_share(1))
    assert [sorted({c.seed for c in g}) for g in split] == [[0, 1], [2, 3]] and all(len(g) == 4 for g in split)
    runner.run_study(study, tmp_path / "split", progress=False)
    monkeypatch.setattr(sizes, "available_bytes", lambda: 2**40)
    runner.run_study(study, tmp_path / "whole", progress=False)
    same_results(open_result(tmp_path / "split"), open_result(tmp_path / "whole"))
    shared = build_study(table | {"landscape": "shared"})
    shared_bytes = sum(sizes.group_bytes(shared.cells[0].config, 8, 4).values())
    monkeypatch.setattr(sizes, "available_bytes", lambda: shared_bytes - 1)  # one X: cutting seeds would not help
    with pytest.raises(ValueError, match=r"^p, alpha: the group gd__p24_h1_a3_s0 \(8 runs, 4 seeds\) needs about"):
        sizes.fit(shared.groups(), *sizes.local_share(1))


def test_the_memory_of_slurm_and_scheduler_workers_is_checked_before_any_work():
    from phaseret.runner import SlurmOptions, slurm_worker_bytes, smallest_worker_bytes

    assert slurm_worker_bytes(SlurmOptions(memory="8GB", cores=4)) == 2 * 10**9
    with pytest.raises(ValueError, match="^slurm-memory: 'lots' is not a size"):
        slurm_worker_bytes(SlurmOptions(memory="lots"))

    class Client:  # what Client.scheduler_info() reports: 0 where a worker has no limit
        def scheduler_info(self):
            return {"workers": {"a": {"memory_limit": 3 * 2**30}, "b": {"memory_limit": 2**30}, "c": {"memory_limit": 0}}}

    assert smallest_worker_bytes(Client()) == 2**30


@requires_dask
def test_a_study_too_large_for_the_workers_of_a_scheduler_is_refused(tmp_path, capsys):
    from distributed import LocalCluster

    path = tmp_path / "big.toml"
    path.write_text('name = "big"\np = 1024\nalpha = 8.0\nseeds = 2\nmax_epochs = 10\n[[optimizer]]\nalgorithm = "gd"\n')
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="40MB", dashboard_address=":0") as cluster:
        code = main(["run", str(path), "--scheduler", cluster.scheduler_address, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the group gd__p1024_h1_a8_s0 (1 runs, 1 seeds) needs about" in err
    assert "the smallest memory limit of the workers at tcp://" in err
    assert not list((tmp_path / "out" / "cells").glob("*.nc"))


def test_a_group_too_large_for_the_machine_is_refused_before_any_file(tmp_path, capsys):
    path = tmp_path / "huge.toml"
    path.write_text('name = "huge"\np = 1000000\nalpha = 2.0\nmax_epochs = 10\n[[optimizer]]\nalgorithm = "gd"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "p, alpha: the group gd__p1000000_h1_a2_s0 (1 runs, 1 seeds) needs about 21.8 TiB (data 21.8 TiB" in err
    assert not (tmp_path / "out").exists()
