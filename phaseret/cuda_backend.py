"""The CUDA backend: a replica batch that lives on the GPU (numba-cuda kernels).

Same contract as :class:`phaseret.backend.CpuReplicas`; every array stays on the device
between steps and the host sees ``(R,)`` sums, the weights and the EMA once per epoch.
One step is five kernel launches (six with Langevin noise):

1. ``persistent_step``: the P-SGD membership chains, Philox4x64-10 in the kernel, the same
   function as the CPU's (:func:`phaseret.philox.block`), so both backends draw the same
   batches bit for bit;
2. ``forward``: ``Lambda^T = W X^T`` as a tiled shared-memory product over (units x samples)
   tiles, fused with the per-sample part of SPEC 2 (score, loss, error, ``D`` on the batch
   rows), the same inline helpers as the CPU kernels (:mod:`phaseret.kernels`);
3. ``backward``: ``G = D^T X``, tiled;
4. ``maxima``: the gradient EMA (tangent and raw maxima) and the divergence flag;
5. ``update``: plain, heavy-ball, Nesterov or Adam, element-wise;
6. ``langevin`` (Langevin cells only): Box-Muller normals from the cell's Philox stream;
7. ``project``: each unit back on its sphere, and the divergence flag for non-finite weights.

SGD's per-epoch permutation is a sort: it is drawn on the host from the same Philox stream
as on the CPU and sent to the device once per epoch, as each sample's position (the batch
of chunk ``j`` is the positions ``[j B, (j + 1) B)``). Sums run in a fixed order (no
atomics), so a rerun on the same GPU is bit-identical.

Kernels are compiled per (dtype, tile): ``PHASERET_CUDA_TILE`` threads per block edge (default
16) and ``PHASERET_CUDA_MICRO`` outputs per thread per edge (default 2, register tiles that read
shared memory half as often per multiply-add as one output per thread). The CUDA-simulator
tests shrink them to 2 x 2 threads of 2 x 2 outputs. At 16 and 2 a float64 forward block uses
41 KiB of the 48 KiB of static shared memory.
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from numba import cuda, float32, float64

from . import batches, kernels, philox, seeding

_STREAM_MEMBERSHIP = seeding.STREAMS["p-sgd-membership"]
_STREAM_NOISE = seeding.STREAMS["langevin-noise"]
_RULES = {"plain": 0, "heavy-ball": 1, "nesterov": 2, "adam": 3}
_BETA1, _BETA2 = 0.9, 0.999  # SPEC 5, as updates.adam


def _power_of_two(name: str, default: int, least: int) -> int:
    value = int(os.environ.get(name, str(default)))
    if value < least or value & (value - 1):
        raise ValueError(f"{name}: must be a power of two >= {least}, got {value}")
    return value


def tile() -> tuple[int, int]:
    """``(T, M)``: threads per block edge of the matrix kernels and outputs per thread per edge,
    from ``PHASERET_CUDA_TILE`` (default 16) and ``PHASERET_CUDA_MICRO`` (default 2); a block
    computes a ``T M x T M`` tile."""
    return _power_of_two("PHASERET_CUDA_TILE", 16, 2), _power_of_two("PHASERET_CUDA_MICRO", 2, 1)


@functools.lru_cache(maxsize=None)
def compiled(dtype: str, T: int, M: int):
    """The kernels for arrays of ``dtype`` (``float32``/``float64``), ``T x T`` threads per block
    in the matrix kernels, each computing ``M x M`` outputs of a ``B x B`` tile, ``B = T M``."""
    real = float64 if dtype == "float64" else float32
    B = T * M
    padded = T + 1  # a row stride coprime with the 32 shared-memory banks: column reads without conflicts

    @cuda.jit(device=True)
    def tree_reduce(buffer, i, maximum):
        """Sum (or with ``maximum`` the maximum, NaN winning: a non-finite gradient must show) of
        ``buffer[:T]`` by a block of ``T`` threads, thread ``i``, in a fixed order."""
        cuda.syncthreads()
        width = T // 2
        while width > 0:
            if i < width:
                a, b = buffer[i], buffer[i + width]
                if maximum:
                    buffer[i] = a if (a != a or a >= b) else b
                else:
                    buffer[i] = a + b
            cuda.syncthreads()
            width //= 2
        total = buffer[0]
        cuda.syncthreads()
        return total

    @cuda.jit(device=True)
    def unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d):
        """``(r, k, valid)``: replica and unit of a forward block's local unit ``u`` in ``chunk``."""
        local = u // units_per_chunk
        r, k = first_replica + local, chunk * units_per_chunk + u % units_per_chunk
        return r, k, local < replicas_per_block and r < R and k < d

    @cuda.jit(device=True)
    def uniform(key0, key1, stream, step, m):
        """Uniform number ``m`` of ``(stream, step)``: as :func:`phaseret.seeding.step_uniforms`."""
        w0, w1, w2, w3 = philox.block(np.uint64(m // 4 + 1), np.uint64(stream), np.uint64(step), np.uint64(0),
                                      key0, key1)
        j = m % 4
        word = w0 if j == 0 else (w1 if j == 1 else (w2 if j == 2 else w3))
        return (word >> np.uint64(11)) * (1.0 / 9007199254740992.0)

    @cuda.jit(device=True)
    def normal(key0, key1, step, e, half):
        """Normal number ``e`` of the Langevin stream at ``step``: Box-Muller as
        :func:`phaseret.seeding.step_normals` (``half`` = ceil(size / 2))."""
        pair = e if e < half else e - half
        radius = math.sqrt(-2.0 * math.log1p(-uniform(key0, key1, _STREAM_NOISE, step, pair)))
        angle = 2.0 * math.pi * uniform(key0, key1, _STREAM_NOISE, step, half + pair)
        return radius * (math.cos(angle) if e < half else math.sin(angle))

    @cuda.jit
    def persistent_step(batch, keys, originals, step, b, probability_in, probability_out):
        """P-SGD chains of SPEC 4, one thread per (sample, live replica); ``batch`` (R0, n) int32
        is 0 for the samples in the batch, 1 for the others."""
        mu, i = cuda.grid(2)
        if i >= originals.shape[0] or mu >= batch.shape[1]:
            return
        r = originals[i]
        u = uniform(keys[r, 0], keys[r, 1], _STREAM_MEMBERSHIP, step, mu)
        if step == 0:
            inside = u < b
        elif batch[r, mu] == 0:
            inside = not (u < probability_out)
        else:
            inside = u < probability_in
        batch[r, mu] = 0 if inside else 1

    @cuda.jit
    def forward(X, t, W, originals, batch, lo, hi, replicas_per_block, units_per_chunk, chunks,
                act, evaluation, loss, eps, k_hat, door, Lam_t, Dt, loss_terms, error_terms):
        """Pre-activations of a (units x samples) tile of ``B x B`` and the per-sample part, fused.

        ``X`` (1 or R0, n, p), ``t`` (1 or R0, n): shared or per original replica; ``W`` (R, d, p).
        A block holds ``replicas_per_block`` whole replicas of ``units_per_chunk`` units each, or
        one replica in ``chunks`` chunks of ``B`` units; thread (x, y) computes units ``y + T a``
        and samples ``x + T b``, ``a, b < M``. Writes ``Lam_t`` and ``Dt`` (R d, n) (``D`` zero
        outside the batch ``lo <= batch < hi``) and the per-sample loss and error (R, n).
        """
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        R, d, p = W.shape
        n = X.shape[1]
        first_sample = cuda.blockIdx.x * B
        first_replica = cuda.blockIdx.y * replicas_per_block
        # A block shares its rows of X: the landscape's, or its one replica's.
        x_index = 0 if X.shape[0] == 1 else originals[cuda.blockIdx.y]
        Xs = cuda.shared.array((B, padded), real)  # [sample][input], read down a column
        Ws = cuda.shared.array((B, T), real)  # [unit][input]
        G = cuda.shared.array((B, B), float64)  # g(lambda) [unit][sample]; later l'(s) [replica][sample]
        E = cuda.shared.array((B, B), float64)  # evaluation g [unit][sample]; later the batch flag
        S = cuda.shared.array((B, B), float64)  # scores [replica][sample]
        SE = cuda.shared.array((B, B), float64)  # evaluation scores
        acc = cuda.local.array((M, M), real)
        w = cuda.local.array(M, real)
        x = cuda.local.array(M, real)
        for a in range(M):
            for b in range(M):
                S[ty + T * a, tx + T * b] = 0.0
                SE[ty + T * a, tx + T * b] = 0.0
        for chunk in range(chunks):
            for a in range(M):
                for b in range(M):
                    acc[a, b] = 0.0
            for i0 in range(0, p, T):
                for a in range(M):
                    row, u = first_sample + ty + T * a, ty + T * a
                    Xs[u, tx] = X[x_index, row, i0 + tx] if row < n and i0 + tx < p else 0.0
                    r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
                    Ws[u, tx] = W[r, k, i0 + tx] if unit_ok and i0 + tx < p else 0.0
                cuda.syncthreads()
                for j in range(T):
                    for a in range(M):
                        w[a] = Ws[ty + T * a, j]
                        x[a] = Xs[tx + T * a, j]
                    for a in range(M):
                        for b in range(M):
                            acc[a, b] += w[a] * x[b]
                cuda.syncthreads()
            for a in range(M):
                u = ty + T * a
                r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
                for b in range(M):
                    mu = first_sample + tx + T * b
                    G[u, tx + T * b] = 0.0
                    E[u, tx + T * b] = 0.0
                    if unit_ok and mu < n:
                        Lam_t[r * d + k, mu] = acc[a, b]
                        G[u, tx + T * b] = kernels.activation(act, acc[a, b], eps)[0]
                        E[u, tx + T * b] = kernels.activation(evaluation, acc[a, b], eps)[0]
            cuda.syncthreads()
            for a in range(M):  # one thread per (replica, sample) adds its units in order
                local = ty + T * a
                if local < replicas_per_block:
                    for b in range(M):
                        for u in range(units_per_chunk):
                            S[local, tx + T * b] += G[local * units_per_chunk + u, tx + T * b]
                            SE[local, tx + T * b] += E[local * units_per_chunk + u, tx + T * b]
            cuda.syncthreads()
        for a in range(M):
            local = ty + T * a
            owner = first_replica + local
            for b in range(M):
                mu = first_sample + tx + T * b
                if local < replicas_per_block and owner < R and mu < n:
                    target = t[0 if t.shape[0] == 1 else originals[owner], mu]
                    score = S[local, tx + T * b] / d - k_hat
                    value, l1, _ = kernels.loss_terms(loss, score, target)
                    s_eval = score if evaluation == act else SE[local, tx + T * b] / d - k_hat
                    loss_terms[owner, mu] = value
                    error_terms[owner, mu] = kernels.error_term(door, s_eval, target)
                    G[local, tx + T * b] = l1
                    E[local, tx + T * b] = 1.0 if lo <= batch[originals[owner], mu] < hi else 0.0
        cuda.syncthreads()
        for chunk in range(chunks):
            for a in range(M):
                u = ty + T * a
                r, k, unit_ok = unit_of(u, chunk, first_replica, replicas_per_block, units_per_chunk, R, d)
                if unit_ok:
                    for b in range(M):
                        mu = first_sample + tx + T * b
                        if mu < n:
                            D = 0.0
                            if E[u // units_per_chunk, tx + T * b] == 1.0:
                                lam = Lam_t[r * d + k, mu]
                                D = G[u // units_per_chunk, tx + T * b] * kernels.activation(act, lam, eps)[1] / d
                            Dt[r * d + k, mu] = D

    @cuda.jit
    def backward(Dt, X, originals, G):
        """``G[r, k] = sum_mu D[mu, r k] X[mu]``: a ``B x B`` tile (units x inputs) per block, thread
        (x, y) computing units ``y + T a`` and inputs ``x + T b``; the grid's third axis runs over
        the replicas of a per-seed landscape (each its own ``X``)."""
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        R, d, p = G.shape
        n = X.shape[1]
        per_seed = X.shape[0] > 1
        rows = d if per_seed else R * d
        first_row, first_input = cuda.blockIdx.y * B, cuda.blockIdx.x * B
        base = cuda.blockIdx.z * d if per_seed else 0
        x_index = originals[cuda.blockIdx.z] if per_seed else 0
        Ds = cuda.shared.array((B, T), real)  # [unit][sample]
        Xs = cuda.shared.array((T, B), real)  # [sample][input]
        acc = cuda.local.array((M, M), real)
        dv = cuda.local.array(M, real)
        xv = cuda.local.array(M, real)
        for a in range(M):
            for b in range(M):
                acc[a, b] = 0.0
        for m0 in range(0, n, T):
            for a in range(M):
                row, i = first_row + ty + T * a, first_input + tx + T * a
                Ds[ty + T * a, tx] = Dt[base + row, m0 + tx] if row < rows and m0 + tx < n else 0.0
                Xs[ty, tx + T * a] = X[x_index, m0 + ty, i] if m0 + ty < n and i < p else 0.0
            cuda.syncthreads()
            for j in range(T):
                for a in range(M):
                    dv[a] = Ds[ty + T * a, j]
                    xv[a] = Xs[j, tx + T * a]
                for a in range(M):
                    for b in range(M):
                        acc[a, b] += dv[a] * xv[b]
            cuda.syncthreads()
        for a in range(M):
            row = first_row + ty + T * a
            for b in range(M):
                i = first_input + tx + T * b
                if row < rows and i < p:
                    G[(base + row) // d, (base + row) % d, i] = acc[a, b]

    @cuda.jit
    def row_sums(terms, out):
        """``out[r] = sum_mu terms[r, mu]`` over the first ``len(out)`` rows; one block per row."""
        r, i = cuda.blockIdx.x, cuda.threadIdx.x
        buffer = cuda.shared.array(T, float64)
        total = 0.0
        for mu in range(i, terms.shape[1], T):
            total += terms[r, mu]
        buffer[i] = total
        out[r] = tree_reduce(buffer, i, False)

    @cuda.jit
    def maxima(G, W, tangent, ema, diverged_at, step):
        """Gradient EMA of SPEC 3 (tangent and raw ``max |g|``, ``ema <- 0.9 ema + 0.1 new``,
        the first value as it is) and ``diverged_at`` for a non-finite gradient; block per replica."""
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
            if ema[r, 0] != ema[r, 0]:
                ema[r, 0], ema[r, 1] = tan, raw
            else:
                ema[r, 0] = 0.9 * ema[r, 0] + 0.1 * tan
                ema[r, 1] = 0.9 * ema[r, 1] + 0.1 * raw

    @cuda.jit
    def update(W, G, first, second, rule, eta, gamma, correction1, correction2, adam_eps):
        """``W <- W + delta`` element-wise (:mod:`phaseret.updates`); ``first``/``second`` are the
        velocity or Adam's moments; ``correction1/2 = 1 - beta^t``."""
        R, d, p = W.shape
        e = cuda.grid(1)
        if e >= R * d * p:
            return
        r, rest = e // (d * p), e % (d * p)
        k, i = rest // p, rest % p
        g = G[r, k, i]
        if rule == 0:
            direction = g
        elif rule == 3:
            first[r, k, i] = _BETA1 * first[r, k, i] + (1 - _BETA1) * g
            second[r, k, i] = _BETA2 * second[r, k, i] + (1 - _BETA2) * g * g
            m_hat = first[r, k, i] / correction1
            v_hat = second[r, k, i] / correction2
            direction = m_hat / (math.sqrt(v_hat) + adam_eps)
        else:
            v = gamma * first[r, k, i] + g
            first[r, k, i] = v
            direction = g + gamma * v if rule == 2 else v
        W[r, k, i] = W[r, k, i] + (-eta * direction)

    @cuda.jit
    def langevin(W, keys, originals, step, matched, sigmas, temperature_scale):
        """Langevin kick of SPEC 5, block per replica: ``u ~ N(0, I)`` over the d x p array by
        Box-Muller as :func:`phaseret.seeding.step_normals`; ``matched`` (``sigmas`` (R0, steps)):
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
                z = normal(key0, key1, step, e, half)
                total += z * z
            buffer[i] = total
            scale = sigma / math.sqrt(tree_reduce(buffer, i, False))
        for e in range(i, size, T):
            z = normal(key0, key1, step, e, half)
            W[r, e // p, e % p] = W[r, e // p, e % p] + scale * z

    @cuda.jit
    def project(W, on, diverged_at, step):
        """``w_k <- sqrt(p) w_k / |w_k|`` (with ``on``), block per unit; non-finite weights set
        ``diverged_at`` of their replica."""
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

    return {"persistent_step": persistent_step, "forward": forward, "backward": backward, "row_sums": row_sums,
            "maxima": maxima, "update": update, "langevin": langevin, "project": project, "jumps": jumps}


def _blocks(count: int, size: int) -> int:
    return (count + size - 1) // size


class _Products:
    """Fused forward and tiled backward of one instance on the device."""

    def __init__(self, k: dict, T: int, M: int, model, X: np.ndarray, t: np.ndarray, R: int, d: int):
        self.k, self.T, self.B = k, T, T * M
        self.X = cuda.to_device(X if X.ndim == 3 else X[None])
        self.t = cuda.to_device(t if t.ndim == 2 else t[None])
        self.per_seed = X.ndim == 3
        self.n = self.X.shape[1]
        self.codes = model.kernel_codes
        self.Lam_t = cuda.device_array((R * d, self.n), dtype=X.dtype)
        self.Dt = cuda.device_array((R * d, self.n), dtype=X.dtype)
        self.loss_terms = cuda.device_array((R, self.n))
        self.error_terms = cuda.device_array((R, self.n))

    def layout(self, R: int, d: int) -> tuple:
        """(replicas per block, units per chunk, chunks, blocks along the units)."""
        B = self.B
        if d > B:
            return 1, B, _blocks(d, B), R
        per_block = 1 if self.per_seed else B // d
        return per_block, d, 1, _blocks(R, per_block)

    def forward(self, W, originals, batch, lo: int, hi: int) -> None:
        R, d, p = W.shape
        per_block, units, chunks, blocks_y = self.layout(R, d)
        self.k["forward"][(_blocks(self.n, self.B), blocks_y), (self.T, self.T)](
            self.X, self.t, W, originals, batch, lo, hi, per_block, units, chunks, *self.codes,
            self.Lam_t, self.Dt, self.loss_terms, self.error_terms)

    def backward(self, originals, G) -> None:
        R, d, p = G.shape
        rows, replicas = (d, R) if self.per_seed else (R * d, 1)
        self.k["backward"][(_blocks(p, self.B), _blocks(rows, self.B), replicas), (self.T, self.T)](
            self.Dt, self.X, originals, G)

    def sums(self, R: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and error sums (R,) of the last forward pass, on the host."""
        out = []
        for terms in (self.loss_terms, self.error_terms):
            sums = cuda.device_array(R)
            self.k["row_sums"][R, self.T](terms, sums)
            out.append(sums.copy_to_host())
        return tuple(out)


class CudaReplicas:
    """The replica state on the GPU; see :mod:`phaseret.backend` for the contract."""

    def __init__(self, model, config, instance, W0, keys, noise_records, record_jumps):
        c = self.config = config
        self.T, M = tile()
        self.k = compiled(str(W0.dtype), self.T, M)
        R, d, p = W0.shape
        self.train = _Products(self.k, self.T, M, model, instance["X"], instance["t"], R, d)
        self.test = _Products(self.k, self.T, M, model, instance["X_test"], instance["t_test"], R, d)
        n = self.train.n
        self.live = np.arange(R)
        self.originals = cuda.to_device(self.live.astype(np.int32))
        self.keys = cuda.to_device(np.ascontiguousarray(keys, dtype=np.uint64))
        self.W = cuda.to_device(W0)
        self.G = cuda.device_array_like(W0)
        self.first = cuda.to_device(np.zeros_like(W0))
        self.second = cuda.to_device(np.zeros_like(W0))
        self.rule = _RULES[c.update]
        self.updates_done = 0
        self._ema = cuda.to_device(np.full((R, 2), np.nan))
        self._diverged_at = cuda.to_device(np.full(R, -1, dtype=np.int64))
        self.batch = cuda.to_device(np.zeros((R, n), dtype=np.int32))  # 0: in the batch
        self.no_batch = cuda.to_device(np.ones((R, self.test.n), dtype=np.int32))
        # The CPU's selector: its probabilities (P-SGD) or permutations (SGD); the draws run here.
        self.selector = batches.selector(c.algorithm, n, c.batch_fraction, c.tau, c.lr, keys)
        self.steps_per_epoch = self.selector.steps_per_epoch
        self.sigmas = cuda.to_device(np.zeros((R, 1)))  # unused but for matched noise
        if c.algorithm == "langevin" and c.noise == "matched":
            longest = max(len(record) for record in noise_records)
            padded = np.zeros((R, longest))
            for r, record in enumerate(noise_records):
                padded[r, : len(record)] = record
            self.sigmas = cuda.to_device(padded)
        self.jumps = None
        if record_jumps:
            self.jumps = cuda.to_device(np.zeros((R, c.max_epochs * self.steps_per_epoch + 1)))
            self.previous_G = cuda.to_device(np.zeros_like(W0))
        self.updates_per_replica = np.zeros(R, dtype=np.int64)

    # --- one step ----------------------------------------------------------------------------

    def _select(self, step: int) -> tuple[int, int]:
        """Update ``self.batch`` for ``step``; return the window ``[lo, hi)`` of batch values."""
        c, R = self.config, len(self.live)
        if c.algorithm == "p-sgd":
            p = self.selector
            grid = (_blocks(self.train.n, self.T), _blocks(R, self.T))
            self.k["persistent_step"][grid, (self.T, self.T)](
                self.batch, self.keys, self.originals, step, p._b, p.probability_in, p.probability_out)
            return 0, 1
        if c.algorithm == "sgd":
            epoch, chunk = divmod(step, self.steps_per_epoch)
            if chunk == 0:  # a fresh permutation per epoch: each sample's position in it
                positions = np.zeros((len(self.keys), self.train.n), dtype=np.int32)
                for r in self.live:
                    positions[r, self.selector.permutation(r, epoch)] = np.arange(self.train.n, dtype=np.int32)
                self.batch = cuda.to_device(positions)
            size = self.selector.batch_size
            return chunk * size, (chunk + 1) * size
        return 0, 1

    def gradients(self, step: int, measure: bool):
        lo, hi = self._select(step)
        self.train.forward(self.W, self.originals, self.batch, lo, hi)
        self.train.backward(self.originals, self.G)
        return self.train.sums(len(self.live)) if measure else None

    def update(self, step: int) -> None:
        c, k, T = self.config, self.k, self.T
        R, d, p = self.W.shape
        if self.jumps is not None:
            k["jumps"][R, T](self.G, self.previous_G, self.originals, self.jumps, step)
            self.updates_per_replica[self.live] += 1
        k["maxima"][R, T](self.G, self.W, c.projection, self._ema, self._diverged_at, step)
        self.updates_done += 1
        correction1 = 1.0 - _BETA1**self.updates_done
        correction2 = 1.0 - _BETA2**self.updates_done
        k["update"][_blocks(R * d * p, T * T), T * T](
            self.W, self.G, self.first, self.second, self.rule, c.step_size, c.momentum or 0.0,
            correction1, correction2, c.adam_eps)
        if c.algorithm == "langevin":
            temperature_scale = 0.0
            if c.noise == "temperature" and step < c.t_cool:
                temperature_scale = math.sqrt(2.0 * c.step_size * c.T0)
            if c.noise == "matched" or temperature_scale > 0.0:
                k["langevin"][R, T](self.W, self.keys, self.originals, step, c.noise == "matched", self.sigmas,
                                    temperature_scale)
        k["project"][R * d, T](self.W, c.projection, self._diverged_at, step)

    # --- once per epoch ----------------------------------------------------------------------

    def weights(self) -> np.ndarray:
        return self.W.copy_to_host()

    def ema(self) -> np.ndarray:
        return self._ema.copy_to_host()

    def diverged_at(self) -> np.ndarray:
        return self._diverged_at.copy_to_host()

    def test_error_sums(self) -> np.ndarray:
        self.test.forward(self.W, self.originals, self.no_batch, 0, 0)
        return self.test.sums(len(self.live))[1]

    def gradient_jumps(self, replica: int) -> np.ndarray:
        return self.jumps[replica].copy_to_host()[: self.updates_per_replica[replica]]

    def keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self.live = self.live[keep]
        if self.live.size == 0:  # the run is over; no zero-size device arrays
            return
        self.originals = cuda.to_device(self.live.astype(np.int32))
        for name in ("W", "G", "first", "second", "_ema", "_diverged_at") + (("previous_G",) if self.jumps is not None else ()):
            setattr(self, name, cuda.to_device(np.ascontiguousarray(getattr(self, name).copy_to_host()[keep])))
