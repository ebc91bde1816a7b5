"""Teachers, inputs, labels and starts of the teacher-student problem (SPEC 1, 5, 7).

Every draw is keyed by integers through :mod:`phaseret.seeding`:

=============  =========================================================
draw           depends on
=============  =========================================================
teacher        (study seed, p)
train / test   (study seed, p, alpha, seed) in the ``per-seed`` landscape,
               (study seed, p, alpha) in the ``shared`` landscape
start ``W0``   (study seed, p, hidden, alpha, seed), never the optimizer
=============  =========================================================
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import seeding, sphere

TASKS = ("phase-retrieval", "symmetric-door")
TEACHERS = ("sphere", "gaussian")
LANDSCAPES = ("per-seed", "shared")
DEFAULT_K = 0.67449


def n_samples(alpha: float, p: int) -> int:
    """``n = floor(alpha p)`` (the thesis' ``int(alpha * p)``), robust to rounding: 2.3 * 100 -> 230."""
    return int(np.floor(alpha * p + 1e-9))


def teacher(task: str, p: int, *, study_seed: int = 0, kind: str = "sphere") -> np.ndarray:
    """The teacher ``w*`` of shape (p,).

    Phase retrieval: ``w*_i ~ N(0, 1)``, rescaled to ``|w*| = sqrt(p)`` when
    ``kind = "sphere"`` (default), left as drawn when ``kind = "gaussian"`` (the
    thesis' code). Symmetric door: Rademacher ``+-1`` (already on the sphere).
    """
    _check_choice("task", task, TASKS)
    _check_choice("teacher", kind, TEACHERS)
    rng = seeding.generator(study_seed, "teacher", p)
    if task == "symmetric-door":
        return rng.choice(np.array([-1.0, 1.0]), size=p)
    w_star = rng.standard_normal(p)
    return sphere.project(w_star) if kind == "sphere" else w_star


def labels(task: str, z: np.ndarray, K: float = DEFAULT_K) -> np.ndarray:
    """Labels of the teacher's pre-activations ``z``: ``|z|`` or ``sign(|z| - K)`` (sign(0) = +1)."""
    _check_choice("task", task, TASKS)
    if task == "phase-retrieval":
        return np.abs(z)
    return np.where(np.abs(z) >= K, 1.0, -1.0)


def inputs(n: int, p: int, rng: np.random.Generator) -> np.ndarray:
    """``X`` of shape (n, p) with i.i.d. entries ``N(0, 1/p)``."""
    return rng.standard_normal((n, p)) / np.sqrt(p)


@dataclass(frozen=True)
class Dataset:
    """One instance: training set ``X`` (n, p), ``y`` (n,), test set (n_test, p), (n_test,), teacher (p,)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    w_star: np.ndarray


def make_dataset(
    task: str,
    p: int,
    alpha: float,
    seed: int,
    *,
    study_seed: int = 0,
    landscape: str = "per-seed",
    n_test: int | None = None,
    teacher_kind: str = "sphere",
    K: float = DEFAULT_K,
) -> Dataset:
    """Draw the training set (``n = floor(alpha p)`` samples) and a fresh test set (default ``n_test = p``)."""
    _check_choice("landscape", landscape, LANDSCAPES)
    _check_count("p", p, 1)
    _check_count("seed", seed, 0)
    _check_count("study_seed", study_seed, 0)
    if n_test is not None:
        _check_count("n_test", n_test, 1)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: must be a finite number > 0, got {alpha!r}")
    check_sample_count(alpha, p)
    w_star = teacher(task, p, study_seed=study_seed, kind=teacher_kind)
    n_test = p if n_test is None else n_test
    # Fixed-length keys: (p, alpha, landscape code, seed), seed 0 in the shared landscape.
    keys = (p, seeding.alpha_key(alpha), LANDSCAPES.index(landscape), seed if landscape == "per-seed" else 0)
    X = inputs(n_samples(alpha, p), p, seeding.generator(study_seed, "train-data", *keys))
    X_test = inputs(n_test, p, seeding.generator(study_seed, "test-data", *keys))
    return Dataset(X, labels(task, X @ w_star, K), X_test, labels(task, X_test @ w_star, K), w_star)


def initial_weights(p: int, hidden: int, alpha: float, seed: int, *, study_seed: int = 0) -> np.ndarray:
    """The start ``W0`` (hidden, p): ``w_k ~ N(0, I_p)`` projected onto ``|w_k| = sqrt(p)`` (SPEC 5)."""
    rng = seeding.generator(study_seed, "init", p, hidden, seeding.alpha_key(alpha), seed)
    return sphere.project(rng.standard_normal((hidden, p)))


def check_sample_count(alpha: float, p: int) -> None:
    """Refuse an ``alpha`` that leaves no training sample: ``floor(alpha p) < 1``."""
    n = n_samples(alpha, p)
    if n < 1:
        raise ValueError(f"alpha: floor(alpha p) = {n} training samples; need at least 1")


def _check_count(name: str, value, least: int) -> None:
    """An integer (Python's or NumPy's) of at least ``least``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name}: must be an integer >= {least}, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {', '.join(choices)}")
