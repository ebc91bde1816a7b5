"""Hessian spectra at a student's weights (SPEC 8, 9; thesis fig. 4.6).

Three matrices of the summed training loss ``L(W)`` at ``W`` (d, p):

- ``full``: the Euclidean Hessian on all the training data, (d p, d p);
- ``batch``: the same on the samples of the run's last step (the thesis' choice for P-SGD;
  equal to ``full`` for GD and Langevin);
- ``riemannian``: the Hessian on the product of spheres ``|w_k| = R_k`` that projection
  keeps the units on, ``U^T (H - Lambda) U`` on the tangent space (d (p - 1) dimensions), with
  ``Lambda = diag(lambda_k I_p)``, ``lambda_k = g_k . w_k / R_k^2`` (``g = grad L``; SPEC 9's
  ``g_k . w_k / p`` at ``R_k^2 = p``). Along a geodesic ``W(t)`` with ``W'(0) = xi`` tangent,
  ``d^2/dt^2 L(W(t)) = xi^T (H - Lambda) xi``: this is the matrix that says whether a projected
  run sits in a minimum (the ambient spectrum is shifted by the constraint).

``U`` stacks, per unit, the first ``p - 1`` columns of the Householder reflection that maps
``e_p`` to ``w_k / R_k`` (orthonormal, orthogonal to ``w_k``), applied in O(p) without forming
it. Up to ``DENSE_LIMIT`` weights the whole spectrum comes from ``scipy.linalg.eigvalsh``;
above it the ``LANCZOS_EXTREMES`` smallest and largest eigenvalues from
``scipy.sparse.linalg.eigsh`` on Hessian-vector products, no matrix formed.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from .models import Model

MATRICES = ("full", "batch", "riemannian")
#: The most weights d p whose Hessians are diagonalized densely: a (d p)^2 float64 matrix of
#: 288 MiB at the limit, and a few of them while the spectrum is computed.
DENSE_LIMIT = 6144
#: Above ``DENSE_LIMIT``: this many smallest and this many largest eigenvalues (Lanczos).
LANCZOS_EXTREMES = 20


def is_dense(weights: int) -> bool:
    """Whether the Hessians of ``weights = d p`` weights are diagonalized densely (else Lanczos)."""
    return weights <= DENSE_LIMIT


def spectrum_length(weights: int) -> int:
    """The most eigenvalues a spectrum of ``weights = d p`` weights holds: all of them when dense,
    else the Lanczos extremes."""
    return weights if is_dense(weights) else 2 * LANCZOS_EXTREMES


class Curvature:
    """The Hessian of ``L`` at ``W`` (d, p) on data ``X`` (n, p), labels ``y`` (n,), as products:
    block (k, l) = ``X^T diag(c A_k A_l + delta_kl B_k) X`` (:meth:`phaseret.models.Model.curvature`)."""

    def __init__(self, model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray):
        self.X = np.asarray(X, dtype=float)
        self.A, self.c, self.B = model.curvature(np.asarray(W, dtype=float), self.X, y)

    def product(self, V: np.ndarray) -> np.ndarray:
        """``H v`` for ``V`` (d, p): ``(H v)_k = X^T (c A_k sum_l A_l z_l + B_k z_k)``, ``z = X V^T``."""
        Z = self.X @ V.T
        shared = self.c * np.sum(self.A * Z, axis=1)
        return (self.A * shared[:, None] + self.B * Z).T @ self.X


class Tangent:
    """An orthonormal basis of the tangent space of the spheres through ``W`` (d, p): per unit the
    first ``p - 1`` columns of the Householder reflection ``Q_k = I - 2 u_k u_k^T`` with
    ``Q_k e_p = w_k / |w_k|``; ``Lambda``'s ``lambda_k = g_k . w_k / |w_k|^2``."""

    def __init__(self, W: np.ndarray, gradient: np.ndarray):
        norms = np.linalg.norm(W, axis=1)
        directions = W / norms[:, None]
        u = -directions
        u[:, -1] += 1.0  # e_p - w_k / |w_k|
        size = np.linalg.norm(u, axis=1)
        self.u = np.where(size[:, None] > 1e-12, u / np.where(size > 1e-12, size, 1.0)[:, None], 0.0)
        self.lambdas = np.sum(gradient * W, axis=1) / norms**2
        self.d, self.p = W.shape

    def reflect(self, V: np.ndarray) -> np.ndarray:
        """``Q_k v_k`` per unit for ``V`` (d, p)."""
        return V - 2.0 * self.u * np.sum(self.u * V, axis=1)[:, None]

    def to_ambient(self, x: np.ndarray) -> np.ndarray:
        """Tangent coordinates (d (p - 1),) -> ambient vectors (d, p), orthogonal to each ``w_k``."""
        V = np.zeros((self.d, self.p))
        V[:, :-1] = x.reshape(self.d, self.p - 1)
        return self.reflect(V)

    def to_coordinates(self, V: np.ndarray) -> np.ndarray:
        """Ambient (d, p) -> tangent coordinates (d (p - 1),) (the normal parts dropped)."""
        return self.reflect(V)[:, :-1].reshape(-1)

    def basis(self) -> np.ndarray:
        """``U`` (d p, d (p - 1)), block diagonal."""
        U = np.zeros((self.d * self.p, self.d * (self.p - 1)))
        for k in range(self.d):
            Q = np.eye(self.p) - 2.0 * np.outer(self.u[k], self.u[k])
            U[k * self.p : (k + 1) * self.p, k * (self.p - 1) : (k + 1) * (self.p - 1)] = Q[:, :-1]
        return U


def riemannian_hessian(model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(U^T (H - Lambda) U, U)``: the Riemannian Hessian in tangent coordinates (d (p-1), d (p-1))
    and the tangent basis (d p, d (p-1)), for ``W`` (d, p) on the spheres through it."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    tangent = Tangent(W, model.grad(W, X, y))
    return _on_tangent(model.hessian(W, X, y), tangent)


def _on_tangent(hessian: np.ndarray, tangent: Tangent) -> tuple[np.ndarray, np.ndarray]:
    U = tangent.basis()
    return U.T @ (hessian - np.diag(np.repeat(tangent.lambdas, tangent.p))) @ U, U


def euclidean_spectrum(model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray,
                       hessian: np.ndarray | None = None) -> np.ndarray:
    """The sorted eigenvalues of the Euclidean Hessian at ``W`` (d, p): all of them up to
    ``DENSE_LIMIT`` weights (``hessian``: the matrix, if already built), else the Lanczos extremes."""
    if is_dense(W.size):
        return scipy.linalg.eigvalsh(model.hessian(W, X, y) if hessian is None else hessian)
    curvature = Curvature(model, W, X, y)
    return _extremes(lambda v: curvature.product(v.reshape(W.shape)).reshape(-1), W.size)


def riemannian_spectrum(model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray,
                        hessian: np.ndarray | None = None) -> np.ndarray:
    """The sorted eigenvalues of the Riemannian Hessian ``U^T (H - Lambda) U`` at ``W`` (d, p), dense
    up to ``DENSE_LIMIT`` weights, else the Lanczos extremes on tangent coordinates."""
    tangent = Tangent(W, model.grad(W, X, y))
    if is_dense(W.size):
        return scipy.linalg.eigvalsh(_on_tangent(model.hessian(W, X, y) if hessian is None else hessian, tangent)[0])
    curvature = Curvature(model, W, X, y)

    def product(x):
        V = tangent.to_ambient(x)
        return tangent.to_coordinates(curvature.product(V) - tangent.lambdas[:, None] * V)

    return _extremes(product, W.shape[0] * (W.shape[1] - 1))


def spectra(model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray, batch: np.ndarray | None) -> dict[str, np.ndarray]:
    """The sorted eigenvalues of the three matrices at ``W`` (d, p) for data ``X``, ``y``; ``batch``
    (n,) bool marks the last step's samples (None: all). Dense up to ``DENSE_LIMIT`` weights,
    else the ``LANCZOS_EXTREMES`` smallest and largest of each."""
    W = np.atleast_2d(np.asarray(W, dtype=float))
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    full = model.hessian(W, X, y) if is_dense(W.size) else None
    values = {"full": euclidean_spectrum(model, W, X, y, full)}
    values["batch"] = values["full"] if batch is None else euclidean_spectrum(model, W, X[batch], y[batch])
    values["riemannian"] = riemannian_spectrum(model, W, X, y, full)
    return values


#: What ``[record] hessian = "grid"`` keeps on the epoch grid, from the Riemannian spectrum:
#: name -> (long_name, units), as :data:`phaseret.records.TRAJECTORIES`.
EXTREMES = {
    "hessian_min": ("smallest eigenvalue of the Riemannian Hessian", "1"),
    "hessian_max": ("largest eigenvalue of the Riemannian Hessian", "1"),
    "hessian_negative": ("negative eigenvalues of the Riemannian Hessian (above the dense limit: among the "
                         "20 smallest, a lower bound)", "1"),
}


def riemannian_extremes(model: Model, W: np.ndarray, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``EXTREMES`` at ``W`` (d, p)."""
    values = riemannian_spectrum(model, np.atleast_2d(np.asarray(W, dtype=float)), X, y)
    return {"hessian_min": float(values[0]), "hessian_max": float(values[-1]),
            "hessian_negative": float(np.sum(values < 0))}


def _extremes(product, size: int) -> np.ndarray:
    """The ``LANCZOS_EXTREMES`` smallest and largest eigenvalues (sorted) of the symmetric operator
    ``product`` on vectors (size,), by Lanczos (``eigsh``), with a fixed start vector."""
    operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=product, dtype=float)
    start = np.ones(size) / np.sqrt(size)
    k = min(LANCZOS_EXTREMES, size // 2 - 1)
    low = scipy.sparse.linalg.eigsh(operator, k=k, which="SA", v0=start, return_eigenvectors=False)
    high = scipy.sparse.linalg.eigsh(operator, k=k, which="LA", v0=start, return_eigenvectors=False)
    return np.sort(np.concatenate([low, high]))
