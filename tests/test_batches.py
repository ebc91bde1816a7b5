"""Batch selectors: SGD's permutations, P-SGD's persistent chain (SPEC 4)."""

import math

import numpy as np
import pytest

from phaseret import seeding
from phaseret.kernels import philox
from phaseret.optim import batches

KEY = seeding.cell_key(0, 12345)
KEYS = np.stack([KEY, seeding.cell_key(0, 999)])
ONE = np.array([0])


def test_sgd_visits_every_sample_once_per_epoch_and_drops_the_remainder():
    sgd = batches.ShuffledChunks(103, 0.25, KEYS)
    assert (sgd.batch_size, sgd.steps_per_epoch) == (25, 4)
    epochs = []
    for epoch in range(3):
        chunks = [np.flatnonzero(sgd.select(epoch * 4 + j, ONE)[0]) for j in range(4)]
        assert all(len(c) == 25 for c in chunks)
        seen = np.concatenate(chunks)
        assert len(np.unique(seen)) == 100  # no repeats; 3 samples left out
        epochs.append(seen)
    assert not np.array_equal(epochs[0][:25], epochs[1][:25])  # a fresh permutation each epoch
    assert len({tuple(np.setdiff1d(np.arange(103), e)) for e in epochs}) > 1  # not always the same 3 dropped


@pytest.mark.parametrize("b, lr, tau", [(0.3, 0.2, 1.0), (0.5, 0.005, 2.0)])
def test_p_sgd_chain_has_fraction_b_and_the_spec_flip_rates(b, lr, tau):
    n = 200_000
    chain = batches.PersistentPoisson(n, b, tau, lr, KEY[None])
    assert chain.steps_per_epoch == math.ceil(1 / b)
    p_in, p_out = lr / tau, (1 - b) * lr / (b * tau)
    member = chain.select(0, ONE)[0]
    fractions, into, out_of, n_out, n_in = [member.mean()], 0, 0, 0, 0
    for step in range(1, 40):
        new = chain.select(step, ONE)[0]
        into += np.sum(~member & new)
        out_of += np.sum(member & ~new)
        n_out += np.sum(~member)
        n_in += np.sum(member)
        fractions.append(new.mean())
        member = new
    assert abs(np.mean(fractions) - b) < 5 * np.sqrt(b * (1 - b) / n)  # stationary at b from the start
    assert abs(into / n_out - p_in) < 5 * np.sqrt(p_in * (1 - p_in) / n_out)
    assert abs(out_of / n_in - p_out) < 5 * np.sqrt(p_out * (1 - p_out) / n_in)


def test_p_sgd_chain_is_a_function_of_the_key_and_runs_forward_only():
    together = batches.PersistentPoisson(1000, 0.5, 2.0, 0.1, KEYS)
    alone = batches.PersistentPoisson(1000, 0.5, 2.0, 0.1, KEYS[1:])
    for step in range(5):
        both = together.select(step, np.array([0, 1]))
        np.testing.assert_array_equal(both[1], alone.select(step, ONE)[0])  # a replica's chain is its own
        assert not np.array_equal(both[0], both[1])
    with pytest.raises(ValueError, match="^step:"):
        together.select(7, ONE)


def test_sgd_permutations_are_per_replica():
    sgd = batches.ShuffledChunks(40, 0.5, KEYS)
    both = sgd.select(0, np.array([0, 1]))
    assert both.sum(axis=1).tolist() == [20, 20] and not np.array_equal(both[0], both[1])
    np.testing.assert_array_equal(both[1], batches.ShuffledChunks(40, 0.5, KEYS[1:]).select(0, ONE)[0])


@pytest.mark.parametrize("step", [0, 1, 7, 2**40 + 3])
@pytest.mark.parametrize("size", [1, 4, 5, 1001])
def test_numba_philox_equals_numpys_philox_bit_for_bit(step, size):
    for stream in seeding.STREAMS:
        out = np.empty(size)
        philox.uniforms_into(out, KEY, seeding.STREAMS[stream], step)
        np.testing.assert_array_equal(out, seeding.step_uniforms(KEY, stream, step, size))


def test_full_batch_is_everything_once_per_epoch():
    full = batches.selector("gd", 10, 0.5, 2.0, 0.005, KEYS)
    assert full.steps_per_epoch == 1 and full.select(0, ONE) is None
