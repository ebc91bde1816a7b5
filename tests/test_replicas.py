"""The replica engine: a cell in a replica batch and alone agree (SPEC 7); float32 tracks float64."""

import numpy as np
import pytest

from phaseret.config import validate
from phaseret.study import build_study, group_seeds
from phaseret.training import run, run_replicas

NO_STOP = {"test_error": 0.0, "train_error": 0.0, "grad_ema": 0.0}
METRICS = ("train_error", "test_error", "test_error_sampled", "train_loss", "overlap", "grad_ema", "grad_ema_raw")

ALGORITHMS = [
    dict(algorithm="gd"),
    dict(algorithm="gd", update="heavy-ball"),
    dict(algorithm="sgd", update="adam", lr=0.001, batch_fraction=0.25),
    dict(algorithm="p-sgd", update="nesterov"),
    dict(algorithm="langevin", noise="temperature", T0=0.001, t_cool=100),
    dict(algorithm="langevin", noise="matched", reference={"algorithm": "p-sgd"}),
]


@pytest.mark.parametrize("keys", ALGORITHMS, ids=lambda k: f"{k['algorithm']}-{k.get('update', 'plain')}-{k.get('noise', '')}")
@pytest.mark.parametrize("landscape", ["shared", "per-seed"])
def test_a_cell_in_a_batch_equals_the_cell_alone(keys, landscape):
    cell = dict(model="pr-quadratic", p=40, alpha=3.0, max_epochs=250, landscape=landscape, stop=NO_STOP)
    configs = [validate(**cell, **keys, seed=seed) for seed in range(3)]
    batch = run_replicas(configs)
    for config, in_batch in zip(configs, batch):
        alone = run(config)
        assert (in_batch.status, in_batch.epochs, in_batch.steps) == (alone.status, alone.epochs, alone.steps)
        assert in_batch.epochs >= 200
        for name in METRICS:
            assert getattr(in_batch, name) == pytest.approx(getattr(alone, name), rel=1e-9, abs=1e-12), name
        np.testing.assert_allclose(in_batch.W, alone.W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(in_batch.trajectory.test_error, alone.trajectory.test_error, rtol=1e-9)


def _assert_same_runs(together, alone_results):
    for in_batch, alone in zip(together, alone_results, strict=True):
        assert (in_batch.status, in_batch.epochs, in_batch.steps) == (alone.status, alone.epochs, alone.steps)
        for name in METRICS:
            assert getattr(in_batch, name) == pytest.approx(getattr(alone, name), rel=1e-9, abs=1e-12), name
        np.testing.assert_allclose(in_batch.W, alone.W, rtol=1e-9, atol=1e-12)
        for name in ("test_error", "train_loss", "noise_sigma"):
            np.testing.assert_allclose(in_batch.trajectory[name], alone.trajectory[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("landscape", ["shared", "per-seed"])
def test_optimizers_that_share_their_data_run_as_one_batch_and_equal_each_run_alone(landscape):
    """One batch of every optimizer of ``ALGORITHMS`` (1 and 2 and 4 steps per epoch, momentum, Adam,
    both Langevin noises) x 2 seeds: the replicas of one X share its products (SPEC 7: another
    grouping, so equal to 1e-9 relative over a few hundred epochs), each part keeps its own batch
    rule, update rule, noise and step count."""
    cell = dict(model="pr-quadratic", p=40, alpha=3.0, max_epochs=250, landscape=landscape, stop=NO_STOP)
    configs = [validate(**cell, **keys, seed=seed) for keys in ALGORITHMS for seed in range(2)]
    together = run_replicas(configs)
    assert [r.steps for r in together[:2]] == [250, 250] and [r.steps for r in together[4:6]] == [1000, 1000]
    assert np.nanmax(together[-1].trajectory.noise_sigma) > 0  # the matched Langevin part got its noise
    _assert_same_runs(together, [run(config) for config in configs])


def test_parts_that_stop_at_different_epochs_leave_the_others_running():
    """Seed-major order (each optimizer in two parts), GD (one step per epoch) beside P-SGD (two):
    replicas that converge drop out of their part while the other parts go on."""
    cell = dict(p=32, alpha=6.0, max_epochs=3000)
    configs = [validate(**cell, seed=seed, **keys) for seed in range(3) for keys in (dict(algorithm="gd"), dict(algorithm="p-sgd"))]
    together = run_replicas(configs)
    assert len({r.epochs for r in together}) > 2
    _assert_same_runs(together, [run(config) for config in configs])


def test_replicas_that_stop_early_drop_out_and_the_rest_go_on():
    configs = [validate(p=32, alpha=8.0, seed=seed, max_epochs=3000) for seed in range(4)]
    batch = run_replicas(configs)
    epochs = [r.epochs for r in batch]
    assert len(set(epochs)) > 1  # they stopped at different epochs
    for config, in_batch in zip(configs, batch):
        alone = run(config)
        assert (in_batch.status, in_batch.epochs) == (alone.status, alone.epochs)
        assert in_batch.test_error == pytest.approx(alone.test_error, rel=1e-9)


def test_door_models_with_committees_in_a_batch():
    """30 epochs: this committee's dynamics is chaotic, so the last-bit differences between a
    batch's products and one replica's (OpenBLAS picks its kernels by the column count) grow from
    1e-16 at epoch 20 to 1e-5 by epoch 100; a wrong batch differs at once."""
    cell = dict(model="door-logistic", p=30, hidden=3, alpha=2.0, max_epochs=30, landscape="shared",
                algorithm="p-sgd", update="heavy-ball", stop=NO_STOP)
    configs = [validate(**cell, seed=seed) for seed in range(2)]
    for config, in_batch in zip(configs, run_replicas(configs)):
        alone = run(config)
        assert in_batch.test_error == alone.test_error  # a fraction of a sampled set: exact
        assert in_batch.train_loss == pytest.approx(alone.train_loss, rel=1e-9)


def test_float32_tracks_float64_over_the_first_epochs():
    """float32 rounding (6e-8 relative) grows with the dynamics; over the first 20 epochs of P-SGD
    at p = 256 the test error of a float32 run stays within 1e-4 relative of float64's."""
    keys = dict(p=256, alpha=2.0, seed=0, algorithm="p-sgd", update="nesterov", max_epochs=20, stop=NO_STOP)
    double, single = run(validate(**keys)), run(validate(**keys, dtype="float32"))
    assert single.W.dtype == np.float32 and double.W.dtype == np.float64
    np.testing.assert_allclose(single.trajectory.test_error, double.trajectory.test_error, rtol=1e-4)
    np.testing.assert_allclose(single.trajectory.train_loss, double.trajectory.train_loss, rtol=1e-4)
    assert not np.array_equal(single.trajectory.test_error, double.trajectory.test_error)  # it really ran in float32


def test_batches_must_differ_only_in_seed_and_optimizer():
    with pytest.raises(ValueError, match="^configs: .*only in `seed` and their optimizer keys"):
        run_replicas([validate(alpha=1.0, p=16, seed=0), validate(alpha=1.0, p=16, seed=1, max_epochs=10)])
    with pytest.raises(ValueError, match="^configs: .*each \\(optimizer, seed\\) once"):
        run_replicas([validate(alpha=1.0, p=16), validate(alpha=1.0, p=16, lr=0.01), validate(alpha=1.0, p=16)])
    with pytest.raises(ValueError, match="^configs: the baselines"):
        run_replicas([validate(alpha=1.0, p=16), validate(alpha=1.0, p=16, algorithm="gamp")])


def test_study_groups_are_deterministic_and_memory_bounded():
    """Groups: the cells that share their data and budget, every optimizer together, cut by seeds
    into batches of at most 32 replicas (and 1 GiB of per-seed data)."""
    table = {"name": "s", "alpha": [1.0, 2.0], "p": 64, "seeds": 40, "max_epochs": 10,
             "optimizer": [{"algorithm": "gd"}, {"algorithm": "p-sgd"}, {"algorithm": "sgd", "max_epochs": 20},
                           {"algorithm": "gd", "landscape": "shared", "label": "gd-shared"},
                           {"algorithm": "gamp", "damping": 0.2, "alpha": [1.0]}]}
    groups = build_study(table).groups()
    assert groups == build_study(table).groups()
    assert sorted(len(g) for g in groups) == sorted([32, 32, 16] * 2 + [32, 8] * 4 + [32, 8])
    for group in groups:
        optimizers = [c.optimizer for c in group]
        assert len({(c.alpha, c.config.max_epochs, c.config.landscape) for c in group}) == 1
        assert optimizers == sorted(optimizers, key=optimizers.index)  # each optimizer's cells are consecutive
        assert len({c.seed for c in group}) * len(set(optimizers)) == len(group)
    mixed = [g for g in groups if len({c.optimizer for c in g}) == 2]
    assert len(mixed) == 6 and {c.optimizer for c in mixed[0]} == {"gd", "p-sgd"}
    assert all(len({c.config.algorithm == "gamp" for c in g}) == 1 for g in groups)  # the baseline apart
    # Per-seed replicas hold their seed's X and test set: (n + n_test) p 8 bytes each, at most 1 GiB.
    assert group_seeds(validate(alpha=2.0, p=1024)) == 32  # 25 MB each
    assert group_seeds(validate(alpha=2.0, p=1024), optimizers=6) == 5  # 30 replicas
    assert group_seeds(validate(alpha=4.0, p=2048)) == 6  # 168 MB each
    assert group_seeds(validate(alpha=4.0, p=2048), optimizers=6) == 5
    assert group_seeds(validate(alpha=4.0, p=2048, dtype="float32")) == 12
    assert group_seeds(validate(alpha=4.5, p=4096)) == 1  # 738 MB
    assert group_seeds(validate(alpha=4.5, p=4096, landscape="shared")) == 32
    assert group_seeds(validate(alpha=2.0, p=64), optimizers=40) == 1


#: A panel's pass on fixed data, printed to full precision; run in this process and in one
#: started with NUMBA_NUM_THREADS=1 (as Dask workers are), the outputs must be bit-identical.
_PANEL_SCRIPT = """
import numpy as np
from phaseret.kernels import panel
from phaseret.models import Model
rng = np.random.default_rng(1)
n, p, k = 8 * panel.CHUNK + 3, 33, 6
X, W, t = rng.standard_normal((n, p)) / np.sqrt(p), rng.standard_normal((k, p)), rng.standard_normal(n)
mask = rng.random((k, n)) < 0.5
for model in ("pr-quadratic", "door-logistic"):
    m = Model(model, 1, 1e-3)
    target = m.targets(np.sign(t) if m.task == "symmetric-door" else t)
    for dtype in ("float64", "float32"):
        args = [a.astype(dtype) for a in (X, W, target)]
        g, loss, error = panel.panel_step(*args, mask, np.empty((panel.chunks(n), k, p), dtype), *m.kernel_codes)
        print(model, dtype, g.tobytes().hex(), loss.tobytes().hex(), error.tobytes().hex())
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("columns", [1, 3, 6])
@pytest.mark.parametrize("model", ["pr-quadratic", "pr-absolute", "door-square", "door-logistic"])
def test_a_panel_pass_equals_the_two_products(model, columns, dtype):
    """``panel.panel_step`` (each row of X read once for both passes) against BLAS around
    ``replica_factors``: n = 2 chunks + 3 rows (a ragged last block of four rows), one, three and
    six columns (a ragged block of four columns), each replica's own half of the rows, a stale
    workspace (it must be cleared)."""
    from phaseret.kernels import derivative, panel
    from phaseret.models import Model

    rng = np.random.default_rng(1)
    n, p = 2 * panel.CHUNK + 3, 33
    X, W = rng.standard_normal((n, p)) / np.sqrt(p), rng.standard_normal((columns, p))
    m = Model(model, 1, 1e-3)
    t = m.targets(np.sign(rng.standard_normal(n)) if m.task == "symmetric-door" else rng.standard_normal(n))
    mask = rng.random((columns, n)) < 0.5
    X, W, t = (a.astype(dtype) for a in (X, W, t))
    Dt, loss, error = derivative.replica_factors(W @ X.T, t, mask, 1, *m.kernel_codes)
    stale = np.full((panel.chunks(n), columns, p), 7.0, dtype=dtype)
    g, panel_loss, panel_error = panel.panel_step(X, W, t, mask, stale, *m.kernel_codes)
    assert g.dtype == np.dtype(dtype)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(g, Dt @ X, rtol=rtol, atol=rtol * np.abs(g).max())
    np.testing.assert_allclose(panel_loss, loss, rtol=rtol)
    np.testing.assert_allclose(panel_error, error, rtol=rtol)


def test_a_long_panel_pass_keeps_its_workspace_bounded_and_skips_rows_outside_every_batch():
    """Past ``MAX_CHUNKS * CHUNK`` rows the chunks grow instead of the workspace (a ragged last
    chunk included), and a replica with no batch (a test set's evaluation) gets a zero gradient
    with its loss and error still summed over every row."""
    from phaseret.kernels import derivative, panel
    from phaseret.models import Model

    rng = np.random.default_rng(2)
    n, p, columns = 2 * panel.MAX_CHUNKS * panel.CHUNK + 5, 17, 5
    assert panel.chunks(n) == panel.MAX_CHUNKS and panel.chunk_rows(n) % 4 == 0
    X, W = rng.standard_normal((n, p)) / np.sqrt(p), rng.standard_normal((columns, p))
    m = Model("pr-quadratic", 1, 1e-3)
    t = m.targets(rng.standard_normal(n))
    mask = rng.random((columns, n)) < 0.5
    mask[:4] = False  # a whole block of four columns outside every batch
    Dt, loss, error = derivative.replica_factors(W @ X.T, t, mask, 1, *m.kernel_codes)
    g, panel_loss, panel_error = panel.panel_step(X, W, t, mask, np.empty((panel.chunks(n), columns, p)),
                                                  *m.kernel_codes)
    assert np.all(g[:4] == 0) and np.any(g[4] != 0)
    np.testing.assert_allclose(g, Dt @ X, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    np.testing.assert_allclose(panel_loss, loss, rtol=1e-12)
    np.testing.assert_allclose(panel_error, error, rtol=1e-12)


def test_a_panel_pass_does_not_depend_on_the_thread_count():
    """Dask workers run with NUMBA_NUM_THREADS=1; a study must give the same bits there as in-process."""
    import os
    import subprocess
    import sys

    outputs = [
        subprocess.run([sys.executable, "-c", _PANEL_SCRIPT], capture_output=True, text=True, check=True,
                       env={**os.environ, "NUMBA_NUM_THREADS": threads}).stdout
        for threads in ("1", "2")
    ]
    assert outputs[0] and outputs[0] == outputs[1]
