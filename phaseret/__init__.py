"""phaseret: teacher-student experiments with gradient-descent algorithms.

Phase retrieval and the symmetric door, single-layer and committee students,
explicit gradients and Hessians in NumPy/Numba. The contract is SPEC.md.
"""

__version__ = "0.1.0"

from . import sphere
from .data import Dataset, initial_weights, make_dataset, teacher
from .metrics import overlap, population_error, unit_overlaps
from .models import MODELS, Model
from .state_evolution import amp_threshold
from .training import RunResult, epoch_grid, run_replicas, train

__all__ = [
    "__version__",
    "amp_threshold",
    "Dataset",
    "MODELS",
    "Model",
    "RunResult",
    "epoch_grid",
    "run_replicas",
    "train",
    "initial_weights",
    "make_dataset",
    "overlap",
    "population_error",
    "sphere",
    "teacher",
    "unit_overlaps",
]
