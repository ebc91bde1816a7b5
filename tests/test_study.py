"""Study files: validation, cells, the combined dataset, resume, failures, Dask, SLURM, plots."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from phaseret import results, runner, training
from phaseret.cli import main
from phaseret.config import validate
from phaseret.study import StudyError, build_study, load_study, replica_batch_size

STUDY = """
name = "tiny"
description = "a tiny study"
model = "pr-quadratic"
p = 24
alpha = [2.0, 6.0]
seeds = 2
max_epochs = {max_epochs}

[[optimizer]]
algorithm = "gd"

[[optimizer]]
algorithm = "p-sgd"
update = "nesterov"
alpha = [2.0, 4.0]

[scale.quick]
seeds = 1
"""


def write_study(folder: Path, max_epochs: int = 300, text: str = STUDY) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text.format(max_epochs=max_epochs))
    return path


def same_results(a: xr.Dataset, b: xr.Dataset) -> None:
    """Bit-identical but for the wall-clock times and the history line."""
    a, b = a.drop_vars("wall_seconds"), b.drop_vars("wall_seconds")
    a.attrs.pop("history"), b.attrs.pop("history")
    xr.testing.assert_identical(a, b)


def open_result(folder: Path) -> xr.Dataset:
    with xr.open_dataset(folder / "tiny.nc") as ds:
        return ds.load()


# --- validation --------------------------------------------------------------------------

BASE = {"name": "s", "alpha": [1.0, 2.0], "p": 16, "max_epochs": 10, "optimizer": [{"algorithm": "gd"}]}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"colour": "red"}, "colour"),
        ({"name": "my study"}, "name"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": 2.5}, "seeds"),
        ({"optimizer": []}, "optimizer"),
        ({"p": "big"}, "p"),
        ({"alpha": [1.0, -2.0]}, "alpha"),
        ({"alpha": []}, "alpha"),
        ({"lr": [0.1, 0.2], "optimizer": [{"algorithm": "gd"}]}, "lr"),
        ({"max_epochs": [10, 20]}, "max_epochs"),
        ({"optimizer": [{"algorithm": "gd", "lr": -0.1}]}, r"optimizer\[0\]\.lr"),
        ({"optimizer": [{"algorithm": "p-sgd", "tau": 0.001}]}, r"optimizer\[0\]\.lr, tau, batch_fraction"),
        ({"optimizer": [{"algorithm": "gd"}, {"algorithm": "gd"}]}, r"optimizer\[1\]\.label"),
        ({"optimizer": [{"algorithm": "gd", "speed": 3}]}, r"optimizer\[0\]\.speed"),
        ({"optimizer": [{"algorithm": "langevin"}]}, r"optimizer\[0\]\.noise"),
        ({"stop": {"test_error": "low"}}, "stop.test_error"),
        ({"seed": 3}, "seed"),
        ({"scale": {"quick": 3}}, "scale"),
        ({"model": "pr-cubic"}, "model"),
        ({"landscape": "global"}, "landscape"),
    ],
)
def test_invalid_study_tables_name_the_key(change, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        build_study(BASE | change)


def test_unknown_scale_and_bad_toml_name_the_file(tmp_path):
    path = write_study(tmp_path)
    with pytest.raises(StudyError, match=rf"^{path}: scale: no \[scale.huge\]"):
        load_study(path, "huge")
    path.write_text("name = 'x'\nalpha = [1.0,\n")
    with pytest.raises(StudyError, match=rf"^{path}: not valid TOML"):
        load_study(path)


def test_cli_refuses_a_bad_file_before_any_work(tmp_path, capsys):
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace('update = "nesterov"', 'update = "nesterov"\nmomentum = 1.5'))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"{path}: optimizer[1].momentum: must lie in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_backend_replaces_the_study_key(tmp_path, capsys, monkeypatch):
    """``--backend`` overrides the file for every optimizer; cuda without a GPU is refused before any work;
    with ``cuda`` the replica batches grow to 1024 seeds (a function of the file, not the machine)."""
    from phaseret import devices

    path = write_study(tmp_path)
    path.write_text(path.read_text() + '\n[[optimizer]]\nalgorithm = "gd"\nlabel = "gd-cpu"\nbackend = "cpu"\n')
    assert {c.config.backend for c in load_study(path, backend="auto").cells} == {"auto"}
    monkeypatch.setattr(devices, "gpu_visible", lambda: False)
    assert main(["run", str(path), "--backend", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "backend: 'cuda' needs numba-cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(devices, "gpu_visible", lambda: True)
    assert devices.resolve("auto") == "cuda"
    on_gpu = validate(alpha=2.0, p=64, backend="cuda", landscape="shared")
    assert replica_batch_size(on_gpu) == 1024 and replica_batch_size(validate(alpha=2.0, p=64, backend="auto")) == 32


def test_importing_phaseret_does_not_import_the_gpu_stack():
    code = "import sys, phaseret, phaseret.cli; print(sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'phaseret.cuda'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cells_axes_scales_and_optimizer_lists(tmp_path):
    study = load_study(write_study(tmp_path))
    assert study.optimizers == ("gd", "p-sgd+nesterov")
    assert len(study.cells) == 2 * 2 * 2
    assert study.axis("alpha") == [2.0, 4.0, 6.0]
    assert len(load_study(write_study(tmp_path), "quick").cells) == 4
    expanded = build_study(BASE | {"optimizer": [{"algorithm": "p-sgd", "lr": [0.002, 0.005]}]})
    assert expanded.optimizers == ("p-sgd,lr=0.002", "p-sgd,lr=0.005")
    assert [c.config.lr for c in expanded.cells] == [0.002, 0.002, 0.005, 0.005]
    # The grid runs to the largest budget of the study.
    mixed = build_study(BASE | {"optimizer": [{"algorithm": "gd"}, {"algorithm": "sgd", "max_epochs": 50}]})
    assert mixed.grid[-1] == 50


# --- running, the dataset, resume --------------------------------------------------------


def test_combined_dataset_layout(tmp_path):
    path = runner.run_study(load_study(write_study(tmp_path)), tmp_path / "out", progress=False)
    ds = open_result(tmp_path / "out")
    assert path == tmp_path / "out" / "tiny.nc"
    assert dict(ds.sizes) == {"optimizer": 2, "alpha": 3, "seed": 2, "epoch": len(training.epoch_grid(300))}
    assert list(ds.optimizer.values) == ["gd", "p-sgd+nesterov"]
    assert list(ds.algorithm.values) == ["gd", "p-sgd"] and list(ds["update"].values) == ["plain", "nesterov"]
    assert ds.lr.dims == ("optimizer",) and ds.momentum.dtype == np.float64
    assert ds.alpha.dtype == np.float64 and ds.seed.dtype == np.int64 and ds.epoch.dtype == np.int64
    assert int(ds.p) == 24 and int(ds.hidden) == 1  # not varied: scalar coordinates
    for name in ("train_error", "test_error", "train_loss", "overlap", "epochs", "success", "wall_seconds",
                 "test_error_sampled", "grad_ema", "grad_ema_raw"):
        assert ds[name].dims == ("optimizer", "alpha", "seed") and ds[name].dtype == np.float64
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"]
    assert ds.test_error_trajectory.dims == ("optimizer", "alpha", "seed", "epoch")
    # Cells the study does not run are NaN: GD has no alpha 4, P-SGD no alpha 6.
    assert ds.test_error.sel(optimizer="gd", alpha=4.0).isnull().all()
    assert ds.test_error.sel(optimizer="p-sgd+nesterov", alpha=6.0).isnull().all()
    assert (ds.status.sel(optimizer="gd", alpha=4.0) == "").all()
    assert ds.test_error.notnull().sum() == 8
    assert ds.status.sel(optimizer="gd", alpha=6.0, seed=0).item() in ("converged-test", "max-epochs")
    for name, variable in ds.variables.items():
        assert variable.attrs.get("long_name"), name
        if variable.dtype.kind in "fi":
            assert variable.attrs.get("units"), name
    for name in ("title", "source", "history", "study"):
        assert ds.attrs[name]
    assert ds.attrs["source"].startswith("phaseret 0.")
    # Each cell agrees with a direct run of the same keys (alone instead of in a replica batch:
    # equal to rounding, SPEC 7).
    direct = training.train(p=24, alpha=6.0, seed=1, max_epochs=300)
    assert float(ds.test_error.sel(optimizer="gd", alpha=6.0, seed=1)) == pytest.approx(direct.test_error, rel=1e-9)
    assert ds.status.sel(optimizer="gd", alpha=6.0, seed=1).item() == direct.status


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
    assert [len(g) for g in study.groups()] == [2, 2, 2, 2]  # the seeds of a cell run together
    real_run = training.run_replicas

    def flaky(configs, grid=None, **kwargs):
        if any(c.algorithm == "p-sgd" and c.alpha == 4.0 and c.seed == 1 for c in configs):
            raise RuntimeError("planted failure")
        return real_run(configs, grid, **kwargs)

    monkeypatch.setattr(training, "run_replicas", flaky)
    out = tmp_path / "out"
    runner.run_study(study, out, progress=False)
    failed = sorted((out / "cells").glob("*.failed.txt"))
    assert len(failed) == 2 and "planted failure" in failed[1].read_text()
    ds = open_result(out)
    assert ds.test_error.notnull().sum() == 6
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 done, 2 failed, 0 pending" in printed and "failed: p-sgd+nesterov__p24_h1_a4_s1" in printed
    monkeypatch.setattr(training, "run_replicas", real_run)  # fixed: a rerun completes the study
    runner.run_study(study, out, progress=False)
    assert open_result(out).test_error.notnull().sum() == 8 and not list((out / "cells").glob("*.failed.txt"))


def test_a_folder_of_another_study_is_refused(tmp_path):
    out = tmp_path / "out"
    runner.run_study(load_study(write_study(tmp_path)), out, progress=False)
    other = build_study(BASE | {"name": "other"})
    with pytest.raises(ValueError, match="^out: .* holds the study 'tiny'"):
        runner.run_study(other, out, progress=False)


def test_plots_are_drawn_with_labels_from_the_attributes(tmp_path):
    out = tmp_path / "out"
    runner.run_study(load_study(write_study(tmp_path)), out, progress=False)
    assert main(["plot", str(out)]) == 0
    for stem in ("success", "test_error", "trajectories"):
        for fmt in ("png", "pdf"):
            assert (out / f"tiny_{stem}.{fmt}").stat().st_size > 1000
    from phaseret import plots

    ds = open_result(out)
    figure = plots.test_error_figure(ds)
    assert figure.axes[0].get_xlabel() == ds.alpha.attrs["long_name"]
    assert ds.test_error.attrs["long_name"] in figure.axes[0].get_ylabel().replace("\n", " ")


def test_wilson_interval():
    from phaseret.plots import wilson_interval

    low, high = wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(low, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(high, [0.2775, 0.7634, 1.0], atol=1e-4)


# --- Dask --------------------------------------------------------------------------------

distributed = pytest.importorskip("distributed")


def test_one_and_two_workers_give_identical_datasets(tmp_path):
    study = load_study(write_study(tmp_path))
    runner.run_study(study, tmp_path / "one", progress=False)
    runner.run_study(study, tmp_path / "two", workers=2, progress=False)
    same_results(open_result(tmp_path / "one"), open_result(tmp_path / "two"))


def test_a_study_on_an_existing_scheduler(tmp_path):
    study = load_study(write_study(tmp_path))
    runner.run_study(study, tmp_path / "local", progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster:
        runner.run_study(study, tmp_path / "remote", scheduler=cluster.scheduler_address, progress=False)
    same_results(open_result(tmp_path / "local"), open_result(tmp_path / "remote"))


def test_local_workers_are_single_threaded(tmp_path):
    with runner._client(2, None, None) as client:
        assert all(client.run(runner.environment_is_pinned).values())


def test_a_killed_worker_costs_only_its_cell(tmp_path):
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


def test_slurm_job_script_carries_the_requested_resources():
    pytest.importorskip("dask_jobqueue")
    options = runner.SlurmOptions(queue="gpu-long", walltime="02:30:00", cores=4, memory="16GB", jobs=3)
    with runner.slurm_cluster(options) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p gpu-long" in script
    assert "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=15G" in script or "#SBATCH --mem=16G" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
    assert "export NUMBA_NUM_THREADS=1" in script
