"""The CUDA backend against the CPU backend: same batches, same trajectory up to rounding.

Runs on a GPU, or on numba's CUDA simulator on tiny sizes and small tiles (the simulator
runs each GPU thread as a Python thread; `.ci/run` does this):

    NUMBA_ENABLE_CUDASIM=1 PHASERET_CUDA_TILE=2 PHASERET_CUDA_MICRO=2 python -m pytest -m cuda

Configurations cover every algorithm, update rule, model, landscape and dtype at least
once (pairwise, not the full product), with widths d below, at and above the tile.
"""

import os
import sys
import threading

import numpy as np
import pytest
from numba import types

from phaseret import seeding
from phaseret.optim import batches
from phaseret.config import validate
from phaseret.devices import gpu_visible
from phaseret.runs import run_replicas

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not gpu_visible(), reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1 (set before numba is imported)"),
]
NO_STOP = {"test_error": 0.0, "train_error": 0.0, "grad_ema": 0.0}
# loss_eps large enough that the smoothed training activation and the evaluation |lambda| differ visibly.
SMALL = dict(p=8, alpha=2.0, n_test=8, max_epochs=3, stop=NO_STOP, loss_eps=0.05)


@pytest.fixture(autouse=True, scope="module")
def simulator_settings():
    """Two fixes for numba's CUDA simulator, which runs each GPU thread as a Python thread:

    * its scheduler polls the threads, so a short switch interval makes it ~8x faster;
    * its ``cuda.shared.array`` looks up a block's array by the calling line and creates it when
      missing, without a lock: two threads can create two "shared" arrays for one line, which
      breaks the kernels now and then (seen with the short switch interval). The replacement
      does the same lookup under a lock.
    """
    if not SIMULATED:
        yield
        return
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        assert shape != 0 and alignment is None, "phaseret's kernels use static shared arrays only"
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            allocated = self._allocations.get(caller)
            if allocated is None:
                dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                allocated = self._allocations[caller] = np.empty(shape, dtype)
        return allocated

    original, previous = kernelapi.FakeCUDAShared.array, sys.getswitchinterval()
    kernelapi.FakeCUDAShared.array = array
    sys.setswitchinterval(1e-5)
    yield
    kernelapi.FakeCUDAShared.array = original
    sys.setswitchinterval(previous)


def both_backends(seeds=3, **keys):
    """The same replica batch run on the CPU and on CUDA."""
    return [run_replicas([validate(seed=s, backend=backend, **keys) for s in range(seeds)]) for backend in ("cpu", "cuda")]


def assert_same_runs(cpu, gpu, rtol):
    for a, b in zip(cpu, gpu):
        assert (a.status, a.epochs, a.steps) == (b.status, b.epochs, b.steps)
        np.testing.assert_allclose(b.W, a.W, rtol=rtol, atol=rtol * np.sqrt(a.W.shape[-1]))
        for name in ("train_error", "test_error", "test_error_sampled", "train_loss", "grad_ema", "grad_ema_raw"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=rtol, atol=1e-30, err_msg=name)
        trajectory_a, trajectory_b = a.trajectory.test_error.values, b.trajectory.test_error.values
        np.testing.assert_allclose(trajectory_b, trajectory_a, rtol=rtol, equal_nan=True)


PAIRWISE = [
    dict(algorithm="p-sgd", update="nesterov", model="pr-quadratic", landscape="shared", hidden=1, dtype="float64"),
    dict(algorithm="p-sgd", update="plain", model="door-logistic", landscape="per-seed", hidden=2, dtype="float32"),
    dict(algorithm="gd", update="adam", model="door-square", landscape="per-seed", hidden=3, dtype="float64"),
    dict(algorithm="gd", update="heavy-ball", model="pr-absolute", landscape="shared", hidden=4, dtype="float32"),
    dict(algorithm="sgd", update="heavy-ball", model="pr-quadratic", landscape="shared", hidden=5, dtype="float64"),
    dict(algorithm="sgd", update="adam", model="pr-absolute", landscape="per-seed", hidden=1, dtype="float32"),
    dict(algorithm="langevin", update="plain", model="door-logistic", landscape="shared", hidden=1, dtype="float64",
         noise="temperature", T0=0.01, t_cool=4),
    dict(algorithm="langevin", update="nesterov", model="pr-quadratic", landscape="per-seed", hidden=2, dtype="float64",
         noise="matched", reference={"algorithm": "p-sgd"}),
]


@pytest.mark.parametrize("keys", PAIRWISE, ids=lambda k: "-".join(str(v) for v in list(k.values())[:6]))
def test_cuda_follows_the_cpu_trajectory(keys):
    """Status, epochs and steps equal; weights and metrics to rounding: 1e-9 relative in float64
    (SPEC 7), 1e-5 in float32 (measured: at most 2.5e-7 after 3 epochs, a few float32 roundings)."""
    cpu, gpu = both_backends(**SMALL, **keys)
    assert_same_runs(cpu, gpu, rtol=1e-9 if keys["dtype"] == "float64" else 1e-5)


def test_p_sgd_batches_are_the_cpu_batches_bit_for_bit():
    from numba import cuda

    from phaseret.backends.cuda_kernels import persistent_step as kernel
    from phaseret.kernels.cuda_products import T

    n, R = 37, 3
    keys = np.stack([seeding.cell_key(5, r) for r in range(R)])
    chains = batches.PersistentPoisson(n, 0.5, 2.0, 0.3, keys)
    batch = cuda.to_device(np.zeros((R, n), dtype=np.int32))
    originals = cuda.to_device(np.arange(R, dtype=np.int32))
    for step in range(4):
        kernel[((n + T - 1) // T, (R + T - 1) // T), (T, T)](batch, cuda.to_device(keys), originals, step, 0.5,
                                             chains.probability_in, chains.probability_out)
        expected = chains.select(step, np.arange(R))
        np.testing.assert_array_equal(batch.copy_to_host() == 0, expected)
    assert 0 < expected.sum() < expected.size


def test_langevin_normals_are_the_cpu_normals():
    from numba import cuda

    from phaseret.backends.cuda_kernels import langevin
    from phaseret.kernels.cuda_products import T

    d, p = 3, 5
    key = seeding.cell_key(2, 9)
    W = cuda.to_device(np.zeros((1, d, p)))
    langevin[1, T](W, cuda.to_device(key[None]), cuda.to_device(np.zeros(1, np.int32)),
                                                7, False, cuda.to_device(np.zeros((1, 1))), 1.0)
    expected = seeding.step_normals(key, "langevin-noise", 7, d * p).reshape(d, p)
    np.testing.assert_allclose(W.copy_to_host()[0], expected, rtol=1e-14, atol=1e-15)


def test_stops_and_drop_outs_match():
    """GD reaches the (raised) test-error stop seed by seed at different epochs, so finished
    replicas leave the device batch while the others go on."""
    cpu, gpu = both_backends(seeds=4, p=8, alpha=5.0, n_test=8, max_epochs=40, algorithm="gd", lr=0.03,
                             stop={"test_error": 0.02})
    assert {r.status for r in cpu} == {"converged-test"} and len({r.epochs for r in cpu}) > 1
    assert_same_runs(cpu, gpu, rtol=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on purpose; the simulator's numpy scalars warn
def test_divergence_is_found_at_the_same_step():
    cpu, gpu = both_backends(seeds=2, p=8, alpha=2.0, n_test=8, max_epochs=20, algorithm="p-sgd", lr=20.0, tau=40.0,
                             projection=False)
    assert [r.status for r in cpu] == ["diverged"] * 2
    for a, b in zip(cpu, gpu):
        assert (a.status, a.epochs, a.steps) == (b.status, b.epochs, b.steps)
        assert np.isnan(b.test_error)


def test_a_batch_of_several_optimizers_runs_on_the_cuda_backend_one_optimizer_at_a_time():
    """Study groups hold every optimizer of a landscape (SPEC 7); on the GPU each optimizer's run of
    cells is its own device batch, and the results follow the CPU's shared-product batch."""
    parts = [dict(algorithm="gd"), dict(algorithm="p-sgd", update="nesterov"), dict(algorithm="sgd")]
    configs = {backend: [validate(seed=s, backend=backend, **SMALL, **keys) for keys in parts for s in range(2)]
               for backend in ("cpu", "cuda")}
    cpu, gpu = run_replicas(configs["cpu"]), run_replicas(configs["cuda"])
    assert [r.steps for r in gpu] == [3, 3, 6, 6, 6, 6]
    assert_same_runs(cpu, gpu, rtol=1e-9)


def test_a_study_runs_on_the_cuda_backend(tmp_path):
    from phaseret.runner import run_study
    from phaseret.study import build_study

    table = {"name": "tiny", "p": 8, "alpha": [2.0, 3.0], "seeds": 2, "n_test": 8, "max_epochs": 3,
             "optimizer": [{"algorithm": "p-sgd", "update": "nesterov"}]}
    import xarray as xr

    datasets = {}
    for backend in ("cpu", "cuda"):
        path = run_study(build_study(table, backend=backend), tmp_path / backend, progress=False)
        datasets[backend] = xr.load_dataset(path)
    assert '"backend": "cuda"' in datasets["cuda"].attrs["study"]
    np.testing.assert_allclose(datasets["cuda"].test_error, datasets["cpu"].test_error, rtol=1e-9)
    np.testing.assert_array_equal(datasets["cuda"].epochs, datasets["cpu"].epochs)


def test_the_cuda_state_satisfies_the_backend_protocol():
    from phaseret.backends import ReplicaState
    from phaseret.replica_batch import build_batch

    batch = build_batch([validate(seed=s, backend="cuda", algorithm="p-sgd", **SMALL) for s in range(2)], "cuda")
    assert isinstance(batch.replicas, ReplicaState)
    assert batch.replicas.weights().shape == (2, 1, 8)
