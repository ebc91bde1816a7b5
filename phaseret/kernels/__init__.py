"""Numba kernels: the implementation layer under the models, the optimizer and the backends.

* :mod:`.derivative`: the per-sample part of SPEC 2's one derivative formula (activation,
  loss, score, error) and its loops for gradients, Hessians and replica batches;
* :mod:`.column`: one replica with one unit, both products in one pass over ``X``;
* :mod:`.maxima`: the gradient measure and EMA of the stationarity stop (SPEC 3, 6);
* :mod:`.philox`: Philox4x64-10, numpy's ``Philox`` bit for bit, for CPU and GPU;
* :mod:`.cuda_products`: the CUDA matrix kernels (imported only by the CUDA backend: they need
  numba-cuda; the optimizer's CUDA kernels are in :mod:`phaseret.backends.cuda_kernels`).

Each kernel's docstring gives its NumPy meaning.
"""
