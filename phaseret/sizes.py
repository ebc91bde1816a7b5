"""Memory a replica batch needs, estimated from its configuration before any work (SPEC 7 groups).

A group of R replicas (S seeds, each with its optimizers) with d units, p inputs, n training and
n_test test samples holds, in the step's dtype (itemsize s) unless said otherwise:

* data: the float64 draws (n + n_test) p 8, once for a ``shared`` landscape, once per seed (S times),
  plus their copy in the step's dtype when it is float32;
* weights and optimizer state: R d p s times 8 (start, W, G, update, two moments, previous G, spare);
* per-sample intermediates: R d (n + n_test) s twice (pre-activations and derivatives) and the
  batch masks R n bytes;
* with ``[record] hessian``, one run's Hessians at a time: three dense (d p)^2 float64 matrices
  (the Hessian, its tangent projection and the eigensolver's copy) up to the dense limit of
  :mod:`phaseret.landscape`, else O(n d) vectors (counted with the intermediates).
"""

from __future__ import annotations

import os

from .config import RunConfig
from .data import n_samples
from .landscape import is_dense


def group_bytes(config: RunConfig, replicas: int, seeds: int, hessian: bool = False) -> dict[str, int]:
    """The estimated bytes of a replica batch of ``replicas`` cells over ``seeds`` seeds like ``config``,
    by part (``hessian``: the study records Hessian spectra)."""
    c = config
    n, n_test, s = n_samples(c.alpha, c.p), c.test_size, 4 if c.dtype == "float32" else 8
    instances = 1 if c.landscape == "shared" else seeds
    data = instances * (n + n_test) * c.p * (8 + (s if s == 4 else 0))
    parts = {
        "data": data,
        "weights and optimizer state": 8 * replicas * c.hidden * c.p * s,
        "per-sample intermediates": 2 * replicas * c.hidden * (n + n_test) * s + replicas * n,
    }
    weights = c.hidden * c.p
    if hessian and is_dense(weights):
        parts["Hessians"] = 3 * weights**2 * 8
    return parts


def available_bytes() -> int | None:
    """Memory this machine can still give (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def local_share(workers: int) -> tuple[int | None, str]:
    """The memory each of ``workers`` local processes can use, and how to name it in a message."""
    available = available_bytes()
    return (None if available is None else available // max(1, workers)), f"available to each of {workers} worker(s)"


def fit(groups: list[tuple], share: int | None, where: str) -> list[tuple]:
    """The groups as they run where each worker has ``share`` bytes (None: unknown, no check);
    ``where`` names that memory in a message (``"available to each of 2 worker(s)"``).

    A ``per-seed`` group that does not fit runs as several groups of consecutive seeds (each
    seed with all its optimizers): its replicas of one seed share nothing with another seed's,
    so the results are bit-identical to the whole group's (SPEC 7's equality holds on any
    machine). A group that still cannot fit (one seed too large, or a ``shared`` landscape) is
    refused before any work; the message names the group, the bytes needed and available, and
    what to change."""
    if share is None:
        return list(groups)
    fitted = []
    for group in groups:
        seeds = sorted({cell.seed for cell in group})
        per_seed = len(group) // len(seeds)
        size = len(seeds)
        if group[0].config.landscape == "per-seed":
            while size > 1 and _needed(group, size * per_seed, size) > share:
                size -= 1
        needed = _needed(group, size * per_seed, size)
        if needed > share:
            parts = group_bytes(group[0].config, size * per_seed, size, "hessian" in group[0].record)
            detail = ", ".join(f"{name} {_size(b)}" for name, b in parts.items())
            raise ValueError(f"p, alpha: the group {group[0].name} ({size * per_seed} runs, {size} seeds) needs about "
                             f"{_size(needed)} ({detail}) but {_size(share)} is {where}; lower p or alpha, or "
                             "run with more memory")
        for first in range(0, len(seeds), size):
            batch = set(seeds[first : first + size])
            fitted.append(tuple(cell for cell in group if cell.seed in batch))
    return fitted


def _needed(group: tuple, replicas: int, seeds: int) -> int:
    return sum(group_bytes(group[0].config, replicas, seeds, "hessian" in group[0].record).values())


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{count} B"
        count /= 1024
