"""Reproducible randomness keyed by integers, never by call order (SPEC 7).

Two kinds of draws:

* set-up draws (teacher, data, start) come from a ``numpy.random.Generator``
  built on ``SeedSequence([study_seed, purpose, *keys])``: the same keys give
  the same draw whatever else was drawn before;
* training draws (P-SGD flips, SGD permutations, Langevin noise) come from the
  counter-based Philox generator (numpy's ``Philox``, 4x64-10), keyed by the
  cell and addressed by ``(stream, step)`` through its counter, so any step's
  draw can be made without replaying the ones before it, on any backend.

Floats such as ``alpha`` enter a key as an integer number of millionths
(``alpha_key``): alphas closer than 1e-6 are the same alpha.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

#: Integer code of each purpose; a new purpose gets a new code, old codes never change.
PURPOSES = {
    "teacher": 0,
    "train-data": 1,
    "test-data": 2,
    "init": 3,
    "training": 4,
}

#: Integer code of each stream of training draws inside one cell.
STREAMS = {
    "p-sgd-membership": 0,
    "sgd-permutation": 1,
    "langevin-noise": 2,
}

_ALPHA_UNITS = 10**6


def alpha_key(alpha: float) -> int:
    """``alpha`` as an integer key: ``round(alpha * 1e6)``."""
    return int(round(float(alpha) * _ALPHA_UNITS))


def seed_sequence(study_seed: int, purpose: str, *keys: int) -> np.random.SeedSequence:
    """``SeedSequence([study_seed, PURPOSES[purpose], *keys])``; keys are non-negative ints."""
    entropy = [int(study_seed), PURPOSES[purpose], *(int(k) for k in keys)]
    if any(k < 0 for k in entropy):
        raise ValueError(f"seed keys must be non-negative integers, got {entropy}")
    return np.random.SeedSequence(entropy)


def generator(study_seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A fresh ``Generator`` for one set-up draw (teacher, data or start)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(study_seed, purpose, *keys)))


def config_key(config: dict) -> int:
    """A stable 32-bit integer naming a configuration (CRC-32 of its sorted JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return zlib.crc32(text.encode("utf-8"))


def cell_key(study_seed: int, *keys: int) -> np.ndarray:
    """The 128-bit Philox key (2 x uint64) of one cell's training draws."""
    return seed_sequence(study_seed, "training", *keys).generate_state(2, np.uint64)


def step_raw(key: np.ndarray, stream: str, step: int, size: int) -> np.ndarray:
    """``size`` raw 64-bit Philox outputs for ``(stream, step)`` of the cell ``key``.

    The Philox counter starts at ``[0, STREAMS[stream], step, 0]``; the first
    word counts the blocks of four outputs, so a step may draw up to 2^66 numbers.
    """
    counter = np.array([0, STREAMS[stream], int(step), 0], dtype=np.uint64)
    return np.random.Philox(key=key, counter=counter).random_raw(size)


def step_uniforms(key: np.ndarray, stream: str, step: int, size: int) -> np.ndarray:
    """``size`` uniforms in [0, 1): the top 53 bits of each raw output times 2^-53."""
    return (step_raw(key, stream, step, size) >> np.uint64(11)) * (1.0 / 2**53)


def step_normals(key: np.ndarray, stream: str, step: int, size: int) -> np.ndarray:
    """``size`` standard normals by Box-Muller from ``2 * ceil(size/2)`` uniforms.

    ``z = sqrt(-2 log(1 - u1)) * (cos, sin)(2 pi u2)``: a transform a GPU kernel can
    repeat exactly from the same raw outputs (no rejection sampling).
    """
    half = (size + 1) // 2
    u = step_uniforms(key, stream, step, 2 * half)
    radius = np.sqrt(-2.0 * np.log1p(-u[:half]))
    angle = 2.0 * np.pi * u[half:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]
