"""The ``phaseret`` command (:mod:`phaseret.cli`): refusals before any work, ``--backend``, imports."""

import subprocess
import sys

from tiny_study import write_study

from phaseret.cli import main
from phaseret.config import validate
from phaseret.study import group_seeds, load_study


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
    assert group_seeds(on_gpu) == 1024 and group_seeds(validate(alpha=2.0, p=64, backend="auto")) == 32


def test_importing_phaseret_does_not_import_the_gpu_stack():
    gpu = ('numba.cuda', 'phaseret.backends.cuda', 'phaseret.kernels.cuda')
    code = f"import sys, phaseret, phaseret.cli; print(sorted(m for m in sys.modules if m.startswith({gpu})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
