"""The layers the code map promises: backends see an Optimizer and arrays, never a configuration;
the optimizer is assembled once from a configuration; the backend is resolved when a run starts."""

import ast
from pathlib import Path

import numpy as np
import pytest

import phaseret
from phaseret import devices, optim
from phaseret.backends import ReplicaState
from phaseret.config import validate
from phaseret.optim import batches, noise, rules
from phaseret.replica_batch import build_batch
from phaseret.status import Status

PACKAGE = Path(phaseret.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports, relative ones resolved against the package (``..config`` -> ``config``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "backends").glob("*.py")) + sorted((PACKAGE / "optim").glob("*.py"))
                         + sorted((PACKAGE / "kernels").glob("*.py")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_backends_optim_and_kernels_do_not_import_the_configuration(path):
    imports = imported_modules(path)
    assert not any(name.lstrip(".") in ("config", "training", "engine", "runs") for name in imports), imports


def test_no_module_inside_the_package_imports_through_the_training_facade():
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py" or path.parent != PACKAGE:
            assert ".training" not in imported_modules(path) and "phaseret.training" not in imported_modules(path), path


def test_the_optimizer_is_built_from_the_configuration():
    keys = np.zeros((2, 2), dtype=np.uint64)
    o = optim.build(validate(alpha=2.0, p=8, algorithm="p-sgd", update="adam", lr=0.01, batch_fraction=0.25,
                             tau=4.0, hidden=3, lr_scaling="hidden", projection=False), 16, keys)
    assert isinstance(o.selector, batches.PersistentPoisson) and o.selector.steps_per_epoch == 4
    assert (o.selector.probability_in, o.selector.probability_out) == batches.flip_probabilities(0.01, 0.25, 4.0)
    assert (o.rule.kind, o.noise, o.projection, o.step_size) == (rules.ADAM, None, False, pytest.approx(0.03))
    hot = optim.build(validate(alpha=2.0, p=8, algorithm="langevin", noise="temperature", T0=0.5, t_cool=3), 16, keys)
    assert isinstance(hot.selector, batches.FullBatch) and isinstance(hot.noise, noise.TemperatureNoise)
    assert isinstance(optim.build(validate(alpha=2.0, p=8, algorithm="sgd"), 16, keys).selector, batches.ShuffledChunks)


def test_the_cpu_state_satisfies_the_backend_protocol():
    batch = build_batch([validate(alpha=2.0, p=8, seed=s, algorithm="p-sgd") for s in range(2)], "cpu")
    assert isinstance(batch.replicas, ReplicaState)
    assert batch.replicas.weights().shape == (2, 1, 8) and list(batch.replicas.live) == [0, 1]


def test_validation_asks_nothing_of_the_machine(monkeypatch):
    def no_machine():
        raise AssertionError("validation asked whether a GPU is visible")

    monkeypatch.setattr(devices, "gpu_visible", no_machine)
    assert validate(alpha=2.0, backend="cuda").backend == "cuda"
    assert validate(alpha=2.0, backend="auto").backend == "auto"  # stored as written, resolved when a run starts


def test_statuses_are_spec_6_strings():
    assert [str(s) for s in Status] == ["", "diverged", "converged-train", "converged-test", "stationary", "max-epochs"]
    assert phaseret.train(alpha=2.0, p=8, max_epochs=3).status == "max-epochs"
