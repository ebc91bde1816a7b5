"""Every invalid field is refused before any computation, with the field's name and the reason."""

import pytest

import phaseret
from phaseret import devices, replica_batch
from phaseret.config import validate

GOOD = dict(model="pr-quadratic", p=64, alpha=2.0, seed=0, max_epochs=10)


@pytest.mark.parametrize(
    "keys, field, reason",
    [
        (dict(colour="red"), "colour", "unknown key"),
        (dict(lr=0.0), "lr", "> 0"),
        (dict(lr="fast"), "lr", "must be a number"),
        (dict(p=64.0), "p", "must be an integer"),
        (dict(projection="yes"), "projection", "boolean"),
        (dict(batch_fraction=0.0), "batch_fraction", r"\(0, 1\]"),
        (dict(batch_fraction=1.5), "batch_fraction", r"\(0, 1\]"),
        (dict(algorithm="p-sgd", lr=0.5, tau=0.1), "lr, tau, batch_fraction", "flip probabilities"),
        (dict(algorithm="p-sgd", lr=0.5, tau=1.0, batch_fraction=0.2), "lr, tau, batch_fraction", r"\(1-b\) lr/\(b tau\) = 2"),
        (dict(alpha=0.0), "alpha", "> 0"),
        (dict(alpha=0.001), "alpha", "training samples"),
        (dict(hidden=0), "hidden", ">= 1"),
        (dict(hidden=True), "hidden", "integer"),
        (dict(max_epochs=0), "max_epochs", ">= 1"),
        (dict(momentum=1.0), "momentum", r"\[0, 1\)"),
        (dict(momentum=-0.1), "momentum", r"\[0, 1\)"),
        (dict(algorithm="adam"), "algorithm", "expected one of"),
        (dict(algorithm="gamp", hidden=2), "hidden", "hidden = 1"),
        (dict(update="nag"), "update", "expected one of"),
        (dict(model="pr-cubic"), "model", "expected one of"),
        (dict(algorithm="langevin"), "noise", "noise source"),
        (dict(algorithm="langevin", noise="matched"), "reference", "reference run"),
        (dict(algorithm="langevin", noise="temperature", T0=0.1), "t_cool", "required"),
        (dict(algorithm="langevin", noise="matched", reference={"algorithm": "gd"}), "reference.algorithm", "p-sgd, sgd"),
        (dict(algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd", "lr": 5.0}),
         "reference.lr, tau, batch_fraction", "flip"),
        (dict(algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd", "noise": "x"}), "reference.noise", "unknown key"),
        (dict(noise="temperature"), "noise", "only Langevin"),
        (dict(dtype="float16"), "dtype", "expected one of"),
        (dict(backend="tpu"), "backend", "expected one of"),
        (dict(init="warm"), "init", "expected one of"),
        (dict(stop={"patience": 3}), "stop.patience", "unknown key"),
        (dict(stop={"grad_measure": "l2"}), "stop.grad_measure", "expected one of"),
        (dict(algorithm="sgd", batch_fraction=0.001), "batch_fraction", "floor"),
    ],
)
def test_invalid_fields_are_named(keys, field, reason, monkeypatch):
    def no_computation(*args, **kwargs):
        raise AssertionError("computation started before validation finished")

    monkeypatch.setattr(replica_batch, "make_dataset", no_computation)
    with pytest.raises(ValueError, match=rf"^{field}: .*{reason}"):
        phaseret.train(**(GOOD | keys))


def test_cuda_backend_is_refused_without_a_gpu(monkeypatch):
    monkeypatch.setattr(devices, "gpu_visible", lambda: False)
    monkeypatch.setattr(replica_batch, "make_dataset", lambda *a, **k: pytest.fail("computation started"))
    with pytest.raises(ValueError, match="^backend: 'cuda' needs numba-cuda .* none is visible here"):
        phaseret.train(**(GOOD | {"backend": "cuda"}))
    assert devices.resolve("auto") == "cpu"


def test_alpha_is_required():
    with pytest.raises(ValueError, match="^alpha: required"):
        validate(p=10)


def test_defaults_and_labels():
    c = validate(alpha=1.0)
    assert (c.algorithm, c.update, c.lr, c.batch_fraction, c.tau, c.projection) == ("gd", "plain", 0.005, 0.5, 2.0, True)
    assert c.test_size == c.p == 1024
    assert validate(alpha=1.0, algorithm="p-sgd", update="nesterov").optimizer_label == "p-sgd+nesterov"
    assert validate(alpha=1.0, label="mine").optimizer_label == "mine"
    assert isinstance(validate(alpha=1, lr=1).lr, float)
