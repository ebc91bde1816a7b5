"""Models: loss against its definition, gradient and Hessian against finite differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import phaseret
from phaseret import Model

NAMES = sorted(phaseret.MODELS)


@st.composite
def problems(draw):
    """A model, a point W and data, some pre-activations pushed near 0 (where sqrt(l^2+eps) bends)."""
    name = draw(st.sampled_from(NAMES))
    d = draw(st.sampled_from([1, 2, 3]))
    p = draw(st.integers(2, 6))
    n = draw(st.integers(1, 10))
    # A test eps larger than the default 1e-8 so finite differences resolve the bend (SPEC 2).
    eps = 10.0 ** draw(st.floats(-3, -1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W = rng.standard_normal((d, p))
    X = rng.standard_normal((n, p)) / np.sqrt(p)
    near_zero = draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))
    for mu in near_zero:
        k = draw(st.integers(0, d - 1))
        target = draw(st.floats(-1.0, 1.0)) * np.sqrt(eps)
        w = W[k]
        X[mu] += (target - X[mu] @ w) * w / (w @ w)
    task = Model(name).task
    if task == "phase-retrieval":
        y = np.abs(rng.standard_normal(n))
    else:
        y = rng.choice([-1.0, 1.0], size=n)
    return Model(name, hidden=d, loss_eps=eps), W, X, y


def reference_loss(model, W, X, y):
    """The loss written straight from SPEC 2 in NumPy."""
    lam = X @ W.T
    g = lam**2 if model.name == "pr-quadratic" else np.sqrt(lam**2 + model.loss_eps)
    s = g.mean(axis=1) - (model.K if model.task == "symmetric-door" else 0.0)
    t = y**2 if model.name == "pr-quadratic" else y
    if model.name == "door-logistic":
        return np.sum(np.logaddexp(0.0, -t * s))
    return np.sum(0.5 * (s - t) ** 2)


@given(problems())
def test_loss_matches_definition(problem):
    model, W, X, y = problem
    assert model.loss(W, X, y) == pytest.approx(reference_loss(model, W, X, y), rel=1e-12, abs=1e-12)


@given(problems())
def test_gradient_matches_central_differences(problem):
    model, W, X, y = problem
    grad = model.grad(W, X, y)
    h = 1e-6
    fd = np.empty_like(W)
    for idx in np.ndindex(W.shape):
        step = np.zeros_like(W)
        step[idx] = h
        fd[idx] = (model.loss(W + step, X, y) - model.loss(W - step, X, y)) / (2 * h)
    scale = 1.0 + np.max(np.abs(grad))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * scale)


@given(problems())
def test_hessian_matches_differences_of_gradient(problem):
    model, W, X, y = problem
    d, p = W.shape
    H = model.hessian(W, X, y)
    assert H.shape == (d * p, d * p)
    h = 1e-6
    fd = np.empty_like(H)
    for j in range(d * p):
        step = np.zeros(d * p)
        step[j] = h
        step = step.reshape(d, p)
        fd[:, j] = ((model.grad(W + step, X, y) - model.grad(W - step, X, y)) / (2 * h)).ravel()
    scale = 1.0 + np.max(np.abs(H))
    np.testing.assert_allclose(H, fd, rtol=1e-5, atol=1e-5 * scale)


@given(problems())
def test_hessian_is_symmetric(problem):
    model, W, X, y = problem
    H = model.hessian(W, X, y)
    np.testing.assert_allclose(H, H.T, rtol=1e-12, atol=1e-12 * (1 + np.max(np.abs(H))))


def test_single_unit_accepts_flat_weights():
    rng = np.random.default_rng(0)
    W, X, y = rng.standard_normal(5), rng.standard_normal((7, 5)), np.abs(rng.standard_normal(7))
    m = Model("pr-absolute")
    assert m.loss(W, X, y) == m.loss(W[None, :], X, y)
    np.testing.assert_array_equal(m.grad(W, X, y), m.grad(W[None, :], X, y))
    assert m.grad(W, X, y).shape == (1, 5)


def test_logistic_loss_is_stable_for_large_scores():
    m = Model("door-logistic")
    W = np.array([[1e3, 0.0]])
    X = np.array([[1.0, 0.0], [1.0, 0.0]])
    y = np.array([1.0, -1.0])
    # s ~ 1e3: the correct sample costs ~exp(-1e3), the wrong one ~1e3.
    assert m.loss(W, X, y) == pytest.approx(1e3 - m.K, rel=1e-9)
    assert np.all(np.isfinite(m.hessian(W, X, y)))


def test_scores_use_evaluation_activation():
    X = np.array([[0.0, 1.0]])
    W = np.array([[0.0, -0.5]])
    # lambda = -0.5: |lambda| = 0.5 exactly, not sqrt(0.25 + eps).
    assert Model("pr-absolute", loss_eps=0.01).scores(W, X)[0] == 0.5
    assert Model("door-square", loss_eps=0.01).scores(W, X)[0] == 0.5 - 0.67449
    assert Model("pr-quadratic").scores(W, X)[0] == 0.25


def test_errors_follow_spec_3():
    X = np.eye(3)
    W = np.array([[1.0, 0.5, 0.0]])
    s_abs = np.array([1.0, 0.5, 0.0])
    y = np.array([1.0, 1.0, 0.0])
    assert Model("pr-absolute").error(W, X, y) == pytest.approx(0.5 * np.mean((s_abs - y) ** 2))
    assert Model("pr-quadratic").error(W, X, y) == pytest.approx(0.5 * np.mean((s_abs**2 - y**2) ** 2))
    # Door: scores |lambda| - K = (0.33, -0.17, -0.67) -> signs (+, -, -); sign(0) counts as +1.
    door = Model("door-logistic")
    assert door.error(W, X, np.array([1.0, 1.0, -1.0])) == pytest.approx(1 / 3)
    assert door.error(W, X, np.array([1.0, -1.0, -1.0])) == 0.0
    assert Model("door-square", K=0.5).error(W, X, np.array([1.0, 1.0, -1.0])) == 0.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(name="pr-cubic"), "name"),
        (dict(name="pr-quadratic", hidden=0), "hidden"),
        (dict(name="pr-quadratic", hidden=1.5), "hidden"),
        (dict(name="pr-absolute", loss_eps=0.0), "loss_eps"),
        (dict(name="pr-absolute", loss_eps=-1e-8), "loss_eps"),
        (dict(name="door-square", K=-1.0), "K"),
    ],
)
def test_bad_model_arguments_are_named(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        Model(**kwargs)


@pytest.mark.parametrize(
    "W_shape, X_shape, y_shape, field",
    [
        ((3, 4), (5, 4), (5,), "W"),  # hidden = 2 expected
        ((4,), (5, 4), (5,), "W"),  # flat W only for d = 1
        ((2, 4), (5, 3), (5,), "X"),
        ((2, 4), (5, 4), (4,), "y"),
    ],
)
def test_bad_shapes_are_named(W_shape, X_shape, y_shape, field):
    m = Model("pr-quadratic", hidden=2)
    with pytest.raises(ValueError, match=f"^{field}:"):
        m.grad(np.ones(W_shape), np.ones(X_shape), np.ones(y_shape))


def test_gradient_maxima_kernel_matches_numpy():
    from phaseret import sphere
    from phaseret.kernels import maxima

    rng = np.random.default_rng(5)
    G, W = rng.standard_normal((3, 2, 7)), rng.standard_normal((3, 2, 7))
    out = maxima.gradient_maxima(G, W, True)
    np.testing.assert_allclose(out[:, 0], np.abs(sphere.tangent(G, W)).max(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(out[:, 1], np.abs(G).max(axis=(1, 2)))
    np.testing.assert_array_equal(maxima.gradient_maxima(G, W, False)[:, 0], out[:, 1])
    G[1, 0, 3] = np.inf
    assert np.isnan(maxima.gradient_maxima(G, W, True)[1]).all() and np.isfinite(out[0]).all()
