"""The optimizer as one value (SPEC 4, 5): a batch selector, an update rule, Langevin noise, the
projection and the step size, built once per replica batch from a validated configuration.

=================  ===========================================  =============================
piece              CPU (arrays)                                  coordinate form (CUDA kernels)
=================  ===========================================  =============================
batch selector     :mod:`.batches` ``FullBatch``,                ``batches.next_membership``
                   ``ShuffledChunks``, ``PersistentPoisson``
update rule        :mod:`.rules` ``plain``, ``momentum``,        ``rules.direction``
                   ``adam``
Langevin noise     :mod:`.noise` ``TemperatureNoise``,           ``kernels.philox.normal``
                   ``MatchedNoise``
projection         :func:`phaseret.sphere.project`               ``backends.cuda_kernels.project``
=================  ===========================================  =============================

Backends (:mod:`phaseret.backends`) receive an :class:`Optimizer` and arrays; none of them
reads ``algorithm``, ``update`` or ``noise``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import batches, noise, rules


class Optimizer(NamedTuple):
    """One replica batch's optimizer.

    ``selector``: the batch rule (``steps_per_epoch``, ``select(step, replicas)``);
    ``rule``: the :class:`~phaseret.optim.rules.UpdateRule`; ``noise``: a Langevin noise source
    or None; ``projection``: whether each unit returns to its sphere after the step;
    ``step_size``: ``eta`` (``lr``, times ``d`` with ``lr_scaling = "hidden"``);
    ``keys`` (R, 2) uint64: the replicas' Philox keys, which the selector and the noise draw from.
    """

    selector: batches.BatchSelector
    rule: rules.UpdateRule
    noise: noise.TemperatureNoise | noise.MatchedNoise | None
    projection: bool
    step_size: float
    keys: np.ndarray


def build(config, n: int, keys: np.ndarray, noise_records: list[np.ndarray] | None = None) -> Optimizer:
    """The optimizer of a validated cell (a :class:`phaseret.config.RunConfig`, which sits above
    this package: its validation uses :func:`.batches.flip_probabilities`) for ``n`` training
    samples and replicas keyed by ``keys`` (R, 2); ``noise_records`` are the matched-noise
    records (one per replica) of a Langevin cell with ``noise = "matched"``."""
    c = config
    keys = np.ascontiguousarray(keys, dtype=np.uint64)
    source = None
    if c.algorithm == "langevin":
        source = noise.TemperatureNoise(c.T0, c.t_cool, keys) if c.noise == "temperature" else noise.MatchedNoise(noise_records, keys)
    return Optimizer(
        selector=batches.selector(c.algorithm, n, c.batch_fraction, c.tau, c.lr, keys),
        rule=rules.rule(c.update, c.momentum, c.adam_eps),
        noise=source,
        projection=c.projection,
        step_size=c.step_size,
        keys=keys,
    )
