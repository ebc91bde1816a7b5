"""The CUDA backend: a replica batch that lives on the GPU (numba-cuda kernels).

Same contract as the CPU's (:class:`phaseret.backends.ReplicaState`); every array stays on the
device between steps and the host sees ``(R,)`` sums, the weights and the EMA once per epoch.
One step is five kernel launches (six with Langevin noise):

1. the batch: P-SGD's membership chains (``persistent_step``, the same Philox
   numbers and ``next_membership`` as the CPU, so both backends draw the same batches bit for
   bit); SGD's permutation is a sort, drawn on the host from the same stream and sent to the
   device once per epoch, as each sample's position (chunk ``j`` is positions ``[j B, (j+1) B)``);
2. ``forward``: ``Lambda^T = W X^T`` fused with the per-sample part
   (:mod:`phaseret.kernels.cuda_products`);
3. ``backward``: ``G = D^T X``;
4. ``maxima``: the gradient EMA and the divergence flag (this and the rest:
   :mod:`phaseret.backends.cuda_kernels`);
5. ``update``: the update rule's coordinate form;
6. ``langevin`` (Langevin cells only), then ``project``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..kernels.cuda_products import B, T, backward, forward, row_sums
from ..optim import Optimizer
from ..optim.batches import PersistentPoisson, ShuffledChunks
from ..optim.noise import MatchedNoise
from . import Instance
from . import cuda_kernels as kernels


def _blocks(count: int, size: int) -> int:
    return (count + size - 1) // size


class _Products:
    """Fused forward and tiled backward of one instance on the device; ``X`` (n, p) shared or
    (R, n, p) per replica, ``t`` (n,) or (R, n)."""

    def __init__(self, codes: tuple, X: np.ndarray, t: np.ndarray, R: int, d: int):
        self.X = cuda.to_device(X if X.ndim == 3 else X[None])
        self.t = cuda.to_device(t if t.ndim == 2 else t[None])
        self.per_seed = X.ndim == 3
        self.n = self.X.shape[1]
        self.codes = codes
        self.Lam_t = cuda.device_array((R * d, self.n), dtype=X.dtype)
        self.Dt = cuda.device_array((R * d, self.n), dtype=X.dtype)
        self.loss_terms = cuda.device_array((R, self.n))
        self.error_terms = cuda.device_array((R, self.n))

    def layout(self, R: int, d: int) -> tuple:
        """(replicas per block, units per chunk, chunks, blocks along the units)."""
        if d > B:
            return 1, B, _blocks(d, B), R
        per_block = 1 if self.per_seed else B // d
        return per_block, d, 1, _blocks(R, per_block)

    def forward(self, W, originals, batch, lo: int, hi: int) -> None:
        R, d, p = W.shape
        per_block, units, chunks, blocks_y = self.layout(R, d)
        forward[(_blocks(self.n, B), blocks_y), (T, T)](
            self.X, self.t, W, originals, batch, lo, hi, per_block, units, chunks, *self.codes,
            self.Lam_t, self.Dt, self.loss_terms, self.error_terms)

    def backward(self, originals, G) -> None:
        R, d, p = G.shape
        rows, replicas = (d, R) if self.per_seed else (R * d, 1)
        backward[(_blocks(p, B), _blocks(rows, B), replicas), (T, T)](self.Dt, self.X, originals, G)

    def sums(self, R: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and error sums (R,) of the last forward pass, on the host."""
        out = []
        for terms in (self.loss_terms, self.error_terms):
            sums = cuda.device_array(R)
            row_sums[R, T](terms, sums)
            out.append(sums.copy_to_host())
        return tuple(out)


class _DeviceBatches:
    """The batch of each step on the device: ``batch`` (R0, n) int32 and a window ``[lo, hi)``
    of its values that marks the rows in the batch; the optimizer's selector supplies P-SGD's
    probabilities or SGD's permutations."""

    def __init__(self, selector, keys, n: int, R: int):
        self.selector, self.keys, self.n = selector, keys, n
        self.batch = cuda.to_device(np.zeros((R, n), dtype=np.int32))  # all zero: every row in

    def select(self, step: int, live: np.ndarray, originals) -> tuple[int, int]:
        s = self.selector
        if isinstance(s, PersistentPoisson):
            grid = (_blocks(self.n, T), _blocks(len(live), T))
            kernels.persistent_step[grid, (T, T)](self.batch, self.keys, originals, step, s.batch_fraction,
                                                      s.probability_in, s.probability_out)
            return 0, 1
        if isinstance(s, ShuffledChunks):
            epoch, chunk = divmod(step, s.steps_per_epoch)
            if chunk == 0:  # a fresh permutation per epoch: each sample's position in it
                positions = np.zeros((len(s.keys), self.n), dtype=np.int32)
                for r in live:
                    positions[r, s.permutation(r, epoch)] = np.arange(self.n, dtype=np.int32)
                self.batch = cuda.to_device(positions)
            return chunk * s.batch_size, (chunk + 1) * s.batch_size
        return 0, 1


class CudaReplicas:
    """The replica state on the GPU (:class:`phaseret.backends.ReplicaState`)."""

    def __init__(self, codes: tuple, optimizer: Optimizer, instance: Instance, W0: np.ndarray, record_jumps: int):
        self.optimizer = o = optimizer
        R, d, p = W0.shape
        self.train = _Products(codes, instance.X, instance.t, R, d)
        self.test = _Products(codes, instance.X_test, instance.t_test, R, d)
        self.live = np.arange(R)
        self.originals = cuda.to_device(self.live.astype(np.int32))
        self.keys = cuda.to_device(o.keys)
        self.batches = _DeviceBatches(o.selector, self.keys, self.train.n, R)
        self.steps_per_epoch = o.selector.steps_per_epoch
        self.no_batch = cuda.to_device(np.ones((R, self.test.n), dtype=np.int32))
        self.W = cuda.to_device(W0)
        self.G = cuda.device_array_like(W0)
        self.first = cuda.to_device(np.zeros_like(W0))  # the rule's velocity or Adam's m
        self.second = cuda.to_device(np.zeros_like(W0))  # Adam's v
        self.updates_done = 0
        self._ema = cuda.to_device(np.full((R, 2), np.nan))
        self._diverged_at = cuda.to_device(np.full(R, -1, dtype=np.int64))
        self.sigmas = cuda.to_device(np.zeros((R, 1)))  # unused but for matched noise
        if isinstance(o.noise, MatchedNoise):
            padded = np.zeros((R, max(len(record) for record in o.noise.records)))
            for r, record in enumerate(o.noise.records):
                padded[r, : len(record)] = record
            self.sigmas = cuda.to_device(padded)
        self.jumps = None
        if record_jumps:
            self.jumps = cuda.to_device(np.zeros((R, record_jumps)))
            self.previous_G = cuda.to_device(np.zeros_like(W0))
        self.updates_per_replica = np.zeros(R, dtype=np.int64)

    # --- one step ----------------------------------------------------------------------------

    def gradients(self, epoch: int, j: int, measure: bool):
        step = epoch * self.steps_per_epoch + j
        lo, hi = self.batches.select(step, self.live, self.originals)
        self.train.forward(self.W, self.originals, self.batches.batch, lo, hi)
        self.train.backward(self.originals, self.G)
        return self.train.sums(len(self.live)) if measure else None

    def update(self, epoch: int, j: int) -> None:
        step = epoch * self.steps_per_epoch + j
        o, rule = self.optimizer, self.optimizer.rule
        R, d, p = self.W.shape
        if self.jumps is not None:
            kernels.jumps[R, T](self.G, self.previous_G, self.originals, self.jumps, step)
            self.updates_per_replica[self.live] += 1
        kernels.maxima[R, T](self.G, self.W, o.projection, self._ema, self._diverged_at, step)
        self.updates_done += 1
        correction1 = 1.0 - rule.beta1**self.updates_done
        correction2 = 1.0 - rule.beta2**self.updates_done
        kernels.update[_blocks(R * d * p, T * T), T * T](
            self.W, self.G, self.first, self.second, rule.kind, o.step_size, rule.gamma, rule.beta1, rule.beta2,
            correction1, correction2, rule.eps)
        if o.noise is not None:
            matched = isinstance(o.noise, MatchedNoise)
            scale = 0.0 if matched else o.noise.scale(step, o.step_size)
            if matched or scale > 0.0:
                kernels.langevin[R, T](self.W, self.keys, self.originals, step, matched, self.sigmas, scale)
        kernels.project[R * d, T](self.W, o.projection, self._diverged_at, step)

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
