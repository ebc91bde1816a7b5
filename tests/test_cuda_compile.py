"""Every CUDA kernel compiles to PTX for an H100 (sm_90) in float64 and float32, without a GPU.

The CUDA simulator runs the kernels as Python and forgives what the real compiler refuses
(types that do not unify, calls it cannot lower); this catches those in the default suite.
Needs numba-cuda with NVVM (``pip install 'phaseret[gpu]'``), not a GPU; skipped otherwise
and under the simulator.
"""

import os
from types import SimpleNamespace

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the simulator does not compile", allow_module_level=True)
# numba-cuda (the gpu extra), not numba's own deprecated CUDA target, which a machine with a CUDA
# toolkit also has: the kernels are written for numba-cuda's typing.
pytest.importorskip("numba_cuda", reason="needs numba-cuda: pip install 'phaseret[gpu]'")
from numba import cuda  # noqa: E402

from numba import typeof  # noqa: E402


def nvvm_available() -> bool:
    try:
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
        return True
    except Exception:
        return False


def example_arguments(dtype):
    """Arguments of each kernel as ``CudaReplicas`` passes them (R = 3 replicas, d = 2, p = 5, n = 7)."""
    R, d, p, n = 3, 2, 5, 7
    X, t, W = np.zeros((R, n, p), dtype), np.zeros((R, n), dtype), np.zeros((R, d, p), dtype)
    ints, batch, keys = np.zeros(R, np.int32), np.zeros((R, n), np.int32), np.zeros((R, 2), np.uint64)
    per_row, scalars = np.zeros((R, n)), np.zeros((R * d, n), dtype)
    ema, diverged_at, sigmas = np.zeros((R, 2)), np.zeros(R, np.int64), np.zeros((R, 4))
    return {
        "persistent_step": (batch, keys, ints, 1, 0.5, 0.1, 0.1),
        "forward": (X, t, W, ints, batch, 0, 1, 1, d, 1, 0, 0, 0, 1e-8, 0.0, False, scalars, scalars, per_row, per_row),
        "backward": (scalars, X, ints, W),
        "row_sums": (per_row, np.zeros(R)),
        "maxima": (W, W, True, ema, diverged_at, 1),
        "update": (W, W, W, W, 3, 0.005, 0.9, 0.9, 0.999, 0.1, 0.001, 1e-8),
        "langevin": (W, keys, ints, 1, True, sigmas, 0.1),
        "project": (W, True, diverged_at, 1),
        "jumps": (W, W, ints, sigmas, 1),
    }


@pytest.mark.skipif(not nvvm_available(), reason="needs NVVM: pip install 'phaseret[gpu]'")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_kernel_compiles_to_ptx(dtype, monkeypatch):
    from numba.cuda import dispatcher

    from phaseret.backends import cuda_kernels
    from phaseret.kernels import cuda_products

    # Device functions ask the current GPU for its compute capability; there is none here.
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: SimpleNamespace(compute_capability=(9, 0)))

    assert (cuda_products.T, cuda_products.M) == (16, 2)
    kernels = cuda_kernels.KERNELS | cuda_products.KERNELS
    arguments = example_arguments(np.dtype(dtype))
    assert set(kernels) == set(arguments)
    for name, kernel in kernels.items():
        signature = tuple(typeof(a) for a in arguments[name])
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        assert ".entry" in ptx and ("mul.hi.u64" in ptx) == (name in ("persistent_step", "langevin")), name
