"""Shared test settings: hypothesis without deadlines (the first Numba call compiles), and markers
for optional parts, built once (xarray's ``requires_X`` pattern): ``from conftest import requires_dask``."""

import importlib.util

import pytest
from hypothesis import settings

settings.register_profile("phaseret", deadline=None, max_examples=60, derandomize=False)
settings.load_profile("phaseret")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: Tests of runs on Dask: skipped, and said so, without the cluster extra (pip install 'phaseret[cluster]').
requires_dask = pytest.mark.skipif(not _importable("distributed"), reason="needs dask.distributed: pip install 'phaseret[cluster]'")
#: Tests of the SLURM launcher: dask-jobqueue, also in the cluster extra.
requires_jobqueue = pytest.mark.skipif(not _importable("dask_jobqueue"), reason="needs dask-jobqueue: pip install 'phaseret[cluster]'")
