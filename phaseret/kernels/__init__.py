"""Numba kernels: the implementation layer under the models, the optimizer and the backends.

* :mod:`.derivative`: the per-sample part of SPEC 2's one derivative formula (activation,
  loss, score, error) and its loops for gradients, Hessians and replica batches;
* :mod:`.column`: one replica with one unit, both products in one pass over ``X``;
* :mod:`.maxima`: the gradient measure and EMA of the stationarity stop (SPEC 3, 6);
* :mod:`.philox`: Philox4x64-10, numpy's ``Philox`` bit for bit, for CPU and GPU;
* :mod:`.cuda_products`, :mod:`.cuda_steps`: the CUDA kernels (import them only when a GPU
  backend runs: they need numba-cuda).

Each kernel's docstring gives its NumPy meaning.
"""
