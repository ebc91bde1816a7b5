"""The keys of one run (SPEC 10): names, types, defaults, and their validation.

A study cell and a direct ``phaseret.train(...)`` call are the same thing: the
keyword names are the study file's run keys plus its optimizer keys. Every
field is checked before any computation; a bad one raises ``ValueError``
whose message starts with the field's name.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

import numpy as np

from .data import DEFAULT_K, LANDSCAPES, TEACHERS, check_sample_count, n_samples
from .models import MODELS
from .optim.batches import flip_probabilities

ALGORITHMS = ("gd", "sgd", "p-sgd", "langevin", "gamp", "spectral")
BASELINES = ("gamp", "spectral")  # SPEC 11: epochs count GAMP's iterations
UPDATES = ("plain", "heavy-ball", "nesterov", "adam")
NOISES = ("matched", "temperature")
REFERENCE_ALGORITHMS = ("p-sgd", "sgd")


@dataclass(frozen=True, slots=True)
class Stop:
    """Stopping thresholds of SPEC 6 and the success threshold."""

    train_error: float = 1e-8
    test_error: float = 1e-3
    grad_ema: float = 5e-10
    grad_measure: str = "tangent"
    success: float = 5e-3


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One cell: the run keys and optimizer keys of SPEC 10 with their defaults."""

    alpha: float
    model: str = "pr-quadratic"
    p: int = 1024
    hidden: int = 1
    seed: int = 0
    study_seed: int = 0
    landscape: str = "per-seed"
    max_epochs: int = 100_000
    n_test: int | None = None  # None: n_test = p
    teacher: str = "sphere"
    K: float = DEFAULT_K
    loss_eps: float = 1e-8
    init: str = "random"
    init_overlap: float | None = None  # with init = "overlap": the start's overlap with the teacher
    projection: bool = True
    dtype: str = "float64"
    backend: str = "cpu"
    stop: Stop = field(default_factory=Stop)
    algorithm: str = "gd"
    update: str = "plain"
    momentum: float = 0.9
    lr: float = 0.005
    lr_scaling: str = "none"
    batch_fraction: float = 0.5
    tau: float = 2.0
    adam_eps: float = 1e-8
    noise: str | None = None
    reference: dict | None = None
    T0: float | None = None
    t_cool: int | None = None
    damping: float = 0.0
    label: str | None = None

    @property
    def step_size(self) -> float:
        """``eta = lr``, or ``lr * d`` with ``lr_scaling = "hidden"`` (SPEC 5)."""
        return self.lr * self.hidden if self.lr_scaling == "hidden" else self.lr

    @property
    def test_size(self) -> int:
        return self.p if self.n_test is None else self.n_test

    @property
    def optimizer_label(self) -> str:
        """A readable label such as ``p-sgd+nesterov`` unless ``label`` is given."""
        if self.label is not None:
            return self.label
        return self.algorithm if self.update == "plain" else f"{self.algorithm}+{self.update}"

    def to_dict(self) -> dict:
        """Plain-data form (JSON-ready). Keys added after cells were first stored are left out at
        their default (``init_overlap``), so that a stored cell's configuration still matches."""
        keys = asdict(self)
        for key in LATER_KEYS:
            if keys[key] is None:
                del keys[key]
        return keys


#: Run keys added after results folders existed; left out of a configuration's JSON while unset.
LATER_KEYS = ("init_overlap",)

_INT, _FLOAT, _STR, _BOOL, _DICT = "an integer", "a number", "a string", "a boolean", "a table"


def _is(kind: str, value) -> bool:
    """Whether ``value`` has the kind; NumPy's integer and float scalars are numbers too."""
    if kind == _INT:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if kind == _FLOAT:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, dict)


def _plain(kind: str, value):
    """A checked value as plain Python data (``int``, ``float``), as a configuration stores it."""
    return int(value) if kind == _INT else float(value) if kind == _FLOAT else value


def _positive(v):
    return None if math.isfinite(v) and v > 0 else "must be a finite number > 0"


def _at_least(low):
    return lambda v: None if v >= low else f"must be >= {low}"


def _one_of(choices):
    def check(v):
        if v in choices:
            return None
        return f"unknown value; expected one of {', '.join(choices)}"

    return check


def _no_check(_):
    return None


#: key -> (type, check of the value alone); checks that involve two keys live in ``validate``.
_RUN_KEYS = {
    "alpha": (_FLOAT, _positive),
    "model": (_STR, _one_of(tuple(MODELS))),
    "p": (_INT, _at_least(2)),
    "hidden": (_INT, _at_least(1)),
    "seed": (_INT, _at_least(0)),
    "study_seed": (_INT, _at_least(0)),
    "landscape": (_STR, _one_of(LANDSCAPES)),
    "max_epochs": (_INT, _at_least(1)),
    "n_test": (_INT, _at_least(1)),
    "teacher": (_STR, _one_of(TEACHERS)),
    "K": (_FLOAT, _positive),
    "loss_eps": (_FLOAT, _positive),
    "init": (_STR, _one_of(("random", "spectral", "overlap"))),
    "init_overlap": (_FLOAT, lambda v: None if math.isfinite(v) and -1 < v < 1 else "must be a finite number in (-1, 1)"),
    "projection": (_BOOL, _no_check),
    "dtype": (_STR, _one_of(("float64", "float32"))),
    "backend": (_STR, _one_of(("cpu", "cuda", "auto"))),
    "stop": (_DICT, _no_check),
}
_OPTIMIZER_KEYS = {
    "algorithm": (_STR, _one_of(ALGORITHMS)),
    "update": (_STR, _one_of(UPDATES)),
    "momentum": (_FLOAT, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "lr": (_FLOAT, _positive),
    "lr_scaling": (_STR, _one_of(("none", "hidden"))),
    "batch_fraction": (_FLOAT, lambda v: None if 0 < v <= 1 else "must lie in (0, 1]"),
    "tau": (_FLOAT, _positive),
    "adam_eps": (_FLOAT, _positive),
    "noise": (_STR, _one_of(NOISES)),
    "reference": (_DICT, _no_check),
    "T0": (_FLOAT, lambda v: None if math.isfinite(v) and v >= 0 else "must be a finite number >= 0"),
    "t_cool": (_INT, _at_least(0)),
    "damping": (_FLOAT, lambda v: None if 0 <= v < 1 else "must lie in [0, 1)"),
    "label": (_STR, lambda v: None if v.strip() else "must not be empty"),
}
def _error_threshold(v):
    """An error threshold must be finite and below 0.5: a student that learned nothing has error 0.5
    (the door's misclassified fraction) or about 2 (phase retrieval), and must not count as converged."""
    return None if math.isfinite(v) and 0 <= v < 0.5 else "must be a finite number in [0, 0.5)"


_STOP_KEYS = {
    "train_error": (_FLOAT, _error_threshold),
    "test_error": (_FLOAT, _error_threshold),
    "grad_ema": (_FLOAT, lambda v: None if math.isfinite(v) and v >= 0 else "must be a finite number >= 0"),
    "grad_measure": (_STR, _one_of(("tangent", "raw"))),
    "success": (_FLOAT, lambda v: None if math.isfinite(v) and 0 < v < 0.5 else "must be a finite number in (0, 0.5)"),
}
#: Keys a matched-noise reference may set: its batch rule, update and budget.
_REFERENCE_KEYS = ("algorithm", "update", "momentum", "lr", "lr_scaling", "batch_fraction", "tau", "adam_eps", "max_epochs")

RUN_KEYS = tuple(_RUN_KEYS)
OPTIMIZER_KEYS = tuple(_OPTIMIZER_KEYS)


def _check_table(values: dict, table: dict, where: str = "") -> None:
    for key, value in values.items():
        if key not in table:
            raise ValueError(f"{where}{key}: unknown key; expected one of {', '.join(table)}")
        kind, check = table[key]
        if not _is(kind, value):
            raise ValueError(f"{where}{key}: must be {kind}, got {value!r} ({type(value).__name__})")
        reason = check(value)
        if reason:
            raise ValueError(f"{where}{key}: {reason}, got {value!r}")


def validate(**keys) -> RunConfig:
    """Check every key of one run and return its ``RunConfig``; raise ``ValueError`` naming the field."""
    if "alpha" not in keys:
        raise ValueError("alpha: required (the sample ratio n/p)")
    _check_table(keys, {**_RUN_KEYS, **_OPTIMIZER_KEYS})
    _check_table(keys.get("stop", {}), _STOP_KEYS, "stop.")
    table = {**_RUN_KEYS, **_OPTIMIZER_KEYS, **_STOP_KEYS}
    as_typed = {k: _plain(table[k][0], v) for k, v in keys.items() if k != "stop"}
    stop = Stop(**{k: _plain(table[k][0], v) for k, v in keys.get("stop", {}).items()})
    config = RunConfig(**as_typed, stop=stop)
    _check_combinations(config)
    return config


def _check_combinations(c: RunConfig) -> None:
    """Checks that involve more than one key (the machine is asked when a run starts:
    :func:`phaseret.devices.resolve`)."""
    check_sample_count(c.alpha, c.p)
    n = n_samples(c.alpha, c.p)
    if c.algorithm == "sgd" and int(c.batch_fraction * n) < 1:
        raise ValueError(f"batch_fraction: floor(b n) = 0 samples at n = {n}; need b n >= 1")
    if c.algorithm == "p-sgd":
        check_flip_probabilities(c.lr, c.batch_fraction, c.tau)
    if (c.init == "overlap") != (c.init_overlap is not None):
        raise ValueError("init_overlap: required by init = 'overlap', and taken by it only (the start's overlap "
                         f"with the teacher); got init = {c.init!r}, init_overlap = {c.init_overlap!r}")
    if c.algorithm in BASELINES and c.hidden != 1:
        raise ValueError(f"hidden: the {c.algorithm} baseline estimates the teacher vector itself; it needs hidden = 1")
    if c.algorithm == "langevin":
        _check_langevin(c)
    else:
        for key in ("noise", "reference", "T0", "t_cool"):
            if getattr(c, key) is not None:
                raise ValueError(f"{key}: only Langevin runs take it (algorithm = {c.algorithm!r})")


def check_flip_probabilities(lr: float, b: float, tau: float, where: str = "") -> None:
    """P-SGD's per-step flip probabilities (:func:`phaseret.optim.batches.flip_probabilities`) must be <= 1."""
    into, out_of = flip_probabilities(lr, b, tau)
    if into > 1 or out_of > 1:
        raise ValueError(
            f"{where}lr, tau, batch_fraction: P-SGD flip probabilities lr/tau = {into:g} and "
            f"(1-b) lr/(b tau) = {out_of:g} must both be <= 1 (SPEC 4)"
        )


def _check_langevin(c: RunConfig) -> None:
    if c.noise is None:
        raise ValueError("noise: Langevin needs a noise source, 'matched' (with reference) or 'temperature' (with T0, t_cool)")
    if c.noise == "temperature":
        for key in ("T0", "t_cool"):
            if getattr(c, key) is None:
                raise ValueError(f"{key}: required by noise = 'temperature'")
        if c.reference is not None:
            raise ValueError("reference: only noise = 'matched' takes a reference run")
        return
    if c.reference is None:
        raise ValueError("reference: noise = 'matched' needs a reference run, e.g. {algorithm = 'p-sgd'}")
    for key in ("T0", "t_cool"):
        if getattr(c, key) is not None:
            raise ValueError(f"{key}: only noise = 'temperature' takes it")
    ref = c.reference
    _check_table(ref, {k: {**_OPTIMIZER_KEYS, **_RUN_KEYS}[k] for k in _REFERENCE_KEYS}, "reference.")
    if ref.get("max_epochs", c.max_epochs) > c.max_epochs:
        raise ValueError(f"reference.max_epochs: {ref['max_epochs']} is above the Langevin run's own budget "
                         f"max_epochs = {c.max_epochs}; a reference may not run longer than the run it drives")
    if ref.get("algorithm") not in REFERENCE_ALGORITHMS:
        raise ValueError(f"reference.algorithm: must be one of {', '.join(REFERENCE_ALGORITHMS)}, got {ref.get('algorithm')!r}")
    try:
        reference_config(c)  # the reference itself must be a valid run
    except ValueError as error:
        raise ValueError(f"reference.{error}") from None


def reference_config(c: RunConfig) -> RunConfig:
    """The matched-noise reference of a Langevin cell (SPEC 5): same cell, its own batch rule and
    budget ``reference.max_epochs`` (default the cell's); update, momentum and lr default to the
    Langevin run's own (the thesis paired LD+heavy-ball with P-SGD+heavy-ball); no test-error
    stop, so the record lasts the whole reference budget. After it the Langevin run goes on
    without noise."""
    langevin_only = ("noise", "reference", "T0", "t_cool", "label")
    keys = {k: v for k, v in c.to_dict().items() if v is not None and k not in langevin_only}
    keys.update(c.reference)
    keys["stop"] = {**keys["stop"], "test_error": 0.0}
    return validate(**keys)
