"""Philox4x64-10 in Numba, bit for bit the generator behind numpy's ``Philox`` (Salmon et al. 2011).

The 64 x 64 -> 128-bit products use LLVM's native 128-bit multiply (one ``mul`` on x86-64;
a GPU kernel has ``umul64hi``). ``uniforms_into(out, key, stream, step)`` equals
``seeding.step_uniforms``: numpy
increments the counter's first word before each block of four outputs, so block ``j`` of a
step uses the counter ``[j + 1, stream, step, 0]``.
"""

from __future__ import annotations

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


@njit(cache=True)
def uniforms_into(out, key, stream, step):
    """Fill ``out`` (n,) with the uniforms of ``(stream, step)`` under ``key`` (2 uint64): the top
    53 bits of each output times 2^-53, as ``seeding.step_uniforms``."""
    n = out.shape[0]
    scale = 1.0 / 9007199254740992.0  # 2^-53
    s, t = np.uint64(stream), np.uint64(step)
    for j in range((n + 3) // 4):
        words = block(np.uint64(j + 1), s, t, np.uint64(0), key[0], key[1])
        for i in range(4):
            if 4 * j + i < n:
                out[4 * j + i] = (words[i] >> _11) * scale


@njit(cache=True)
def persistent_step(member, keys, replicas, stream, step, b, probability_in, probability_out):
    """Advance the P-SGD chains of ``replicas`` one step in place (SPEC 4): ``member`` (R, n) bool,
    ``keys`` (R, 2) uint64. Step 0 draws each sample in with probability ``b``; later steps flip
    out -> in with ``probability_in`` and in -> out with ``probability_out``, one uniform each."""
    n = member.shape[1]
    u = np.empty(n)
    for r in replicas:
        uniforms_into(u, keys[r], stream, step)
        for mu in range(n):
            if step == 0:
                member[r, mu] = u[mu] < b
            elif member[r, mu]:
                member[r, mu] = not (u[mu] < probability_out)
            else:
                member[r, mu] = u[mu] < probability_in
