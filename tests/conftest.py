"""Shared test settings: hypothesis without deadlines (the first Numba call compiles)."""

from hypothesis import settings

settings.register_profile("phaseret", deadline=None, max_examples=60, derandomize=False)
settings.load_profile("phaseret")
