"""Philox4x64-10 in Numba, bit for bit the generator behind numpy's ``Philox`` (Salmon et al. 2011).

The 64 x 64 -> 128-bit products use LLVM's native 128-bit multiply (one ``mul`` on x86-64;
a GPU kernel gets ``mul.hi.u64``). numpy increments the counter's first word before each
block of four outputs, so block ``j`` of a step uses the counter ``[j + 1, stream, step, 0]``.

The same functions serve the CPU and CUDA kernels (numba-cuda compiles an ``@njit`` function
called from a kernel for the device):

* ``uniforms_into(out, key, stream, step)`` (CPU): ``out[:] = seeding.step_uniforms(key, stream, step, n)``;
* ``uniform(k0, k1, stream, step, m)``: element ``m`` of the same;
* ``normal(k0, k1, stream, step, e, half)``: element ``e`` of ``seeding.step_normals`` (Box-Muller).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)
_11 = np.uint64(11)
_ROUNDS = 10


@intrinsic
def _mulhi(typingctx, a, b):
    """High 64-bit word of the 128-bit product of two uint64."""

    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))

    return types.uint64(types.uint64, types.uint64), codegen


@njit(cache=True, inline="always")
def _mulhilo(a, b):
    """High and low 64-bit words of the 128-bit product ``a * b``."""
    return _mulhi(a, b), a * b


@njit(cache=True, inline="always")
def block(c0, c1, c2, c3, k0, k1):
    """Philox4x64-10 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)``: four uint64."""
    for round_ in range(_ROUNDS):
        if round_ > 0:
            k0 += _W0
            k1 += _W1
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@njit(cache=True, inline="always")
def _unit(word):
    """A raw output as a uniform in [0, 1): its top 53 bits times 2^-53."""
    return (word >> _11) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def uniforms_into(out, key, stream, step):
    """Fill ``out`` (n,) with the uniforms of ``(stream, step)`` under ``key`` (2 uint64), as
    ``seeding.step_uniforms``."""
    n = out.shape[0]
    s, t = np.uint64(stream), np.uint64(step)
    for j in range((n + 3) // 4):
        words = block(np.uint64(j + 1), s, t, np.uint64(0), key[0], key[1])
        for i in range(4):
            if 4 * j + i < n:
                out[4 * j + i] = _unit(words[i])


@njit(cache=True, inline="always")
def uniform(key0, key1, stream, step, m):
    """Uniform number ``m`` of ``(stream, step)`` under the key ``(key0, key1)``."""
    w0, w1, w2, w3 = block(np.uint64(m // 4 + 1), np.uint64(stream), np.uint64(step), np.uint64(0), key0, key1)
    j = m % 4
    return _unit(w0 if j == 0 else (w1 if j == 1 else (w2 if j == 2 else w3)))


@njit(cache=True, inline="always")
def normal(key0, key1, stream, step, e, half):
    """Normal number ``e`` of ``(stream, step)``: Box-Muller as ``seeding.step_normals`` of
    ``size`` numbers, ``half = ceil(size / 2)``: ``sqrt(-2 log(1 - u_j)) (cos, sin)(2 pi u_{half + j})``."""
    pair = e if e < half else e - half
    radius = math.sqrt(-2.0 * math.log1p(-uniform(key0, key1, stream, step, pair)))
    angle = 2.0 * math.pi * uniform(key0, key1, stream, step, half + pair)
    return radius * (math.cos(angle) if e < half else math.sin(angle))

