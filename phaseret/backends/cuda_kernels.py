"""CUDA kernels of the optimizer's pieces around the products: the P-SGD chain, the gradient EMA,
the update rule, the Langevin kick, the projection and the matched-noise record.

Each kernel runs the coordinate form of a CPU piece, from the same room as that piece:
``optim.batches.next_membership``, ``optim.rules.direction``, ``kernels.maxima.ema_step``,
``kernels.philox.normal``. Sums run in a fixed order (a block's tree, no atomics), so a rerun
on the same GPU is bit-identical. A 1-D block has ``T`` threads
(:func:`phaseret.kernels.cuda_products.tile`). Imported only by the CUDA backend: it needs
numba-cuda.
"""

from __future__ import annotations

import math

from numba import cuda, float64

from ..kernels import maxima as _maxima
from ..kernels.cuda_products import T, tree_reduce
from ..kernels.philox import normal, uniform
from ..optim import rules
from ..optim.batches import PersistentPoisson, next_membership
from ..optim.noise import STREAM as NOISE_STREAM

MEMBERSHIP_STREAM = PersistentPoisson.stream


@cuda.jit
def persistent_step(batch, keys, originals, step, b, probability_in, probability_out):
    """P-SGD chains of SPEC 4, one thread per (sample, live replica); ``batch`` (R0, n) int32
    is 0 for the samples in the batch, 1 for the others."""
    mu, i = cuda.grid(2)
    if i >= originals.shape[0] or mu >= batch.shape[1]:
        return
    r = originals[i]
    u = uniform(keys[r, 0], keys[r, 1], MEMBERSHIP_STREAM, step, mu)
    inside = next_membership(batch[r, mu] == 0, u, step, b, probability_in, probability_out)
    batch[r, mu] = 0 if inside else 1


@cuda.jit
def maxima(G, W, tangent, ema, diverged_at, step):
    """Gradient EMA of SPEC 3 (:func:`phaseret.kernels.maxima.gradient_maxima`, then ``ema_step``)
    and ``diverged_at`` for a non-finite gradient; block per replica."""
    r, i = cuda.blockIdx.x, cuda.threadIdx.x
    R, d, p = G.shape
    buffer = cuda.shared.array(T, float64)
    tan_max, raw_max = 0.0, 0.0
    for k in range(d):
        radial = 0.0
        if tangent:
            dot, norm2 = 0.0, 0.0
            for j in range(i, p, T):
                dot += G[r, k, j] * W[r, k, j]
                norm2 += W[r, k, j] * W[r, k, j]
            buffer[i] = dot
            dot = tree_reduce(buffer, i, False)
            buffer[i] = norm2
            radial = dot / tree_reduce(buffer, i, False)
        for j in range(i, p, T):
            g = abs(G[r, k, j])
            if not math.isfinite(g):
                raw_max = math.nan
            if raw_max == raw_max:
                raw_max = max(raw_max, g)
            tan_max = max(tan_max, abs(G[r, k, j] - radial * W[r, k, j]))
    buffer[i] = raw_max
    raw = tree_reduce(buffer, i, True)
    buffer[i] = tan_max
    tan = tree_reduce(buffer, i, True)
    if i == 0:
        if not math.isfinite(raw):
            tan, raw = math.nan, math.nan
            if diverged_at[r] < 0:
                diverged_at[r] = step
        ema[r, 0] = _maxima.ema_step(ema[r, 0], tan)
        ema[r, 1] = _maxima.ema_step(ema[r, 1], raw)


@cuda.jit
def update(W, G, first, second, kind, eta, gamma, beta1, beta2, correction1, correction2, eps):
    """``W <- W - eta direction`` element-wise with :func:`phaseret.optim.rules.direction`;
    ``first``/``second`` (R, d, p) are the velocity or Adam's moments."""
    R, d, p = W.shape
    e = cuda.grid(1)
    if e >= R * d * p:
        return
    r, rest = e // (d * p), e % (d * p)
    k, i = rest // p, rest % p
    move, m, v = rules.direction(kind, G[r, k, i], first[r, k, i], second[r, k, i], gamma, beta1, beta2,
                                 correction1, correction2, eps)
    first[r, k, i] = m
    second[r, k, i] = v
    W[r, k, i] = W[r, k, i] + (-eta * move)


@cuda.jit
def langevin(W, keys, originals, step, matched, sigmas, temperature_scale):
    """Langevin kick of SPEC 5, block per replica: ``u ~ N(0, I)`` over the d x p array
    (:func:`phaseret.kernels.philox.normal`); ``matched`` (``sigmas`` (R0, steps)):
    ``W += sigma_t u/|u|``, else ``W += temperature_scale u``."""
    r, i = cuda.blockIdx.x, cuda.threadIdx.x
    R, d, p = W.shape
    size = d * p
    half = (size + 1) // 2
    key0, key1 = keys[originals[r], 0], keys[originals[r], 1]
    scale = temperature_scale
    if matched:
        sigma = sigmas[originals[r], step] if step < sigmas.shape[1] else 0.0
        if sigma == 0.0:
            return
        buffer = cuda.shared.array(T, float64)
        total = 0.0
        for e in range(i, size, T):
            z = normal(key0, key1, NOISE_STREAM, step, e, half)
            total += z * z
        buffer[i] = total
        scale = sigma / math.sqrt(tree_reduce(buffer, i, False))
    for e in range(i, size, T):
        z = normal(key0, key1, NOISE_STREAM, step, e, half)
        W[r, e // p, e % p] = W[r, e // p, e % p] + scale * z


@cuda.jit
def project(W, on, diverged_at, step):
    """``w_k <- sqrt(p) w_k / |w_k|`` (with ``on``; :func:`phaseret.sphere.project`), block per
    unit; non-finite weights set ``diverged_at`` of their replica."""
    unit, i = cuda.blockIdx.x, cuda.threadIdx.x
    R, d, p = W.shape
    r, k = unit // d, unit % d
    buffer = cuda.shared.array(T, float64)
    total = 0.0
    for j in range(i, p, T):
        w = W[r, k, j]
        total += w * w if math.isfinite(w) else math.nan  # NaN: a non-finite weight, inf: overflow
    buffer[i] = total
    norm2 = tree_reduce(buffer, i, False)
    if norm2 != norm2:
        if i == 0 and diverged_at[r] < 0:
            diverged_at[r] = step
    elif on:
        scale = math.sqrt(p) / math.sqrt(norm2)
        for j in range(i, p, T):
            W[r, k, j] = W[r, k, j] * scale


@cuda.jit
def jumps(G, previous, originals, out, step):
    """``out[r0, step] = |G_r - previous_r|_F`` (0 at step 0), then ``previous <- G``; block per replica."""
    r, i = cuda.blockIdx.x, cuda.threadIdx.x
    R, d, p = G.shape
    buffer = cuda.shared.array(T, float64)
    total = 0.0
    for e in range(i, d * p, T):
        difference = G[r, e // p, e % p] - previous[r, e // p, e % p]
        total += difference * difference
    buffer[i] = total
    total = tree_reduce(buffer, i, False)
    if i == 0:
        out[originals[r], step] = 0.0 if step == 0 else math.sqrt(total)
    for e in range(i, d * p, T):
        previous[r, e // p, e % p] = G[r, e // p, e % p]


KERNELS = {"persistent_step": persistent_step, "maxima": maxima, "update": update, "langevin": langevin,
           "project": project, "jumps": jumps}
