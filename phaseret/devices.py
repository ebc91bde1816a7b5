"""Which backend runs a cell: ``cpu``, or ``cuda`` when numba-cuda sees a GPU (SPEC 10 ``backend``)."""

from __future__ import annotations


def gpu_visible() -> bool:
    """Whether numba-cuda is installed and sees a GPU (the simulator counts as one)."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a driver that fails to initialise is no GPU
        return False


def resolve(backend: str) -> str:
    """``cpu`` or ``cuda`` for a ``backend`` key; ``auto`` is ``cuda`` when a GPU is visible.
    ``cuda`` without a GPU is refused here, before any computation."""
    if backend == "auto":
        return "cuda" if gpu_visible() else "cpu"
    if backend == "cuda" and not gpu_visible():
        raise ValueError("backend: 'cuda' needs numba-cuda (pip install 'phaseret[gpu]') and a visible NVIDIA GPU; "
                         "none is visible here (use backend = 'cpu' or 'auto')")
    return backend
