"""The four students of SPEC 2 as one class: activation x loss, derivatives from one formula.

=================  ===========================  ==========  =======  ============
name               training activation ``g``    evaluation  target   loss
=================  ===========================  ==========  =======  ============
``pr-quadratic``   ``lambda^2`` (thesis 2.5)    same        ``y^2``  squared
``pr-absolute``    ``sqrt(lambda^2 + eps)``     ``|l|``     ``y``    squared
``door-square``    ``sqrt(lambda^2 + eps)``     ``|l|``     ``y``    squared
``door-logistic``  ``sqrt(lambda^2 + eps)``     ``|l|``     ``y``    logistic
=================  ===========================  ==========  =======  ============

Committee score ``s = (1/d) sum_k g(w_k . x) - K_hat`` with ``K_hat = K`` for the
door, 0 for phase retrieval. The training loss is a sum over samples (eq. 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import derivative
from .data import DEFAULT_K


@dataclass(frozen=True)
class _Kind:
    task: str
    activation: int
    evaluation: int
    loss: int
    squared_target: bool


MODELS = {
    "pr-quadratic": _Kind("phase-retrieval", derivative.SQUARE, derivative.SQUARE, derivative.SQUARED, True),
    "pr-absolute": _Kind("phase-retrieval", derivative.SMOOTH_ABS, derivative.ABS, derivative.SQUARED, False),
    "door-square": _Kind("symmetric-door", derivative.SMOOTH_ABS, derivative.ABS, derivative.SQUARED, False),
    "door-logistic": _Kind("symmetric-door", derivative.SMOOTH_ABS, derivative.ABS, derivative.LOGISTIC, False),
}


class Model:
    """A committee student with ``hidden`` units and a fixed second layer ``1/d``.

    Shapes: ``W`` (d, p) (or (p,) when d = 1), ``X`` (n, p), ``y`` (n,) raw labels.
    """

    def __init__(self, name: str, hidden: int = 1, loss_eps: float = 1e-8, K: float = DEFAULT_K):
        if name not in MODELS:
            raise ValueError(f"name: unknown model {name!r}; expected one of {', '.join(MODELS)}")
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
            raise ValueError(f"hidden: must be an integer >= 1, got {hidden!r}")
        if not np.isfinite(loss_eps) or loss_eps <= 0:
            raise ValueError(f"loss_eps: must be a finite number > 0, got {loss_eps!r}")
        if not np.isfinite(K) or K <= 0:
            raise ValueError(f"K: must be a finite number > 0, got {K!r}")
        self.name = name
        self.hidden = int(hidden)
        self.loss_eps = float(loss_eps)
        self.K = float(K)
        self._kind = MODELS[name]
        self.task = self._kind.task
        self._k_hat = self.K if self.task == "symmetric-door" else 0.0

    @property
    def kernel_codes(self) -> tuple:
        """``(activation, evaluation, loss, eps, K_hat, door)``: what the replica kernels need."""
        k = self._kind
        return k.activation, k.evaluation, k.loss, self.loss_eps, self._k_hat, self.task == "symmetric-door"

    def __repr__(self) -> str:
        return f"Model({self.name!r}, hidden={self.hidden}, loss_eps={self.loss_eps}, K={self.K})"

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Targets ``t`` of raw labels: ``y^2`` for ``pr-quadratic``, ``y`` otherwise."""
        return y * y if self._kind.squared_target else y

    def loss(self, W, X, y) -> float:
        """Training loss ``sum_mu l(s_mu, t_mu)`` with the training activation."""
        W, X, y = self._check(W, X, y)
        total, _ = derivative.loss_and_backward(
            X @ W.T, self.targets(y), self._kind.activation, self._kind.loss, self.loss_eps, self._k_hat
        )
        return float(total)

    def loss_and_grad(self, W, X, y) -> tuple[float, np.ndarray]:
        """Training loss and its gradient ``D^T X`` (d, p), one forward pass for both."""
        W, X, y = self._check(W, X, y)
        total, D = derivative.loss_and_backward(
            X @ W.T, self.targets(y), self._kind.activation, self._kind.loss, self.loss_eps, self._k_hat
        )
        return float(total), D.T @ X

    def grad(self, W, X, y) -> np.ndarray:
        """Gradient of the training loss, shape (d, p): ``D^T X``, ``D_mu_k = l'(s_mu) g'(lambda_mu_k) / d``."""
        return self.loss_and_grad(W, X, y)[1]

    def hessian(self, W, X, y) -> np.ndarray:
        """Hessian of the training loss, shape (d p, d p), ``W`` flattened row-major.

        Block (k, l) = ``X^T diag(l'' g'_k g'_l / d^2 + delta_kl l' g''_k / d) X``.
        """
        W, X, y = self._check(W, X, y)
        d, p = W.shape
        A, c, B = self.curvature(W, X, y)
        H = np.empty((d, p, d, p), dtype=X.dtype)
        for k in range(d):
            for l in range(k, d):
                weight = c * A[:, k] * A[:, l] + (B[:, k] if k == l else 0.0)
                H[k, :, l, :] = (X * weight[:, None]).T @ X
                H[l, :, k, :] = H[k, :, l, :].T
        return H.reshape(d * p, d * p)

    def curvature(self, W, X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Hessian's per-sample factors ``(A, c, B)``, shapes (n, d), (n,), (n, d): block (k, l)
        of the Hessian is ``X^T diag(c A_k A_l + delta_kl B_k) X``."""
        W, X, y = self._check(W, X, y)
        return derivative.curvature(X @ W.T, self.targets(y), self._kind.activation, self._kind.loss,
                                    self.loss_eps, self._k_hat)

    def scores(self, W, X) -> np.ndarray:
        """Scores (n,) with the evaluation activation (SPEC 3): ``(1/d) sum_k g_eval(w_k . x) - K_hat``."""
        W, X, _ = self._check(W, X, None)
        return derivative.scores(X @ W.T, self._kind.evaluation, self.loss_eps, self._k_hat)

    def error(self, W, X, y) -> float:
        """Sampled error on the data given (SPEC 3).

        Phase retrieval: ``0.5 mean (s - t)^2``; door: fraction misclassified,
        ``mean [sign(s) != y]`` with ``sign(0) = +1``.
        """
        W, X, y = self._check(W, X, y)
        s = self.scores(W, X)
        if self.task == "phase-retrieval":
            return float(0.5 * np.mean((s - self.targets(y)) ** 2))
        return float(np.mean(np.where(s >= 0, 1.0, -1.0) != y))

    def _check(self, W, X, y):
        """Validate shapes, dtypes and finiteness; return ``W`` as (d, p), ``X`` as (n, p), ``y`` as
        (n,), all in ``X``'s float dtype (integer or boolean arrays become float64)."""
        W, X = _real_array("W", W), _real_array("X", X)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        if not np.isfinite(X).all():
            raise ValueError("X: must be finite; found NaN or inf")
        if W.ndim == 1 and self.hidden == 1:
            W = W[None, :]
        if W.ndim != 2 or W.shape[0] != self.hidden:
            raise ValueError(f"W: expected shape (hidden={self.hidden}, p), got {W.shape}")
        if X.ndim != 2 or X.shape[1] != W.shape[1]:
            raise ValueError(f"X: expected shape (n, p={W.shape[1]}), got {X.shape}")
        if y is not None:
            y = _real_array("y", y)
            if y.shape != (X.shape[0],):
                raise ValueError(f"y: expected shape (n={X.shape[0]},), got {y.shape}")
            if not np.isfinite(y).all():
                raise ValueError("y: must be finite; found NaN or inf")
            y = y.astype(X.dtype, copy=False)
        return W.astype(X.dtype, copy=False), X, y


def _real_array(name: str, value) -> np.ndarray:
    """``value`` as an array of real numbers (integers and booleans allowed); refuse anything else."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: must hold real numbers, got dtype {array.dtype}")
    return array
