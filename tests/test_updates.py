"""Update rules: hand-computed steps, equivalences, Adam against the paper."""

import numpy as np
import pytest

from phaseret.optim import rules as updates

G1, G2 = np.array([1.0, 2.0]), np.array([3.0, -1.0])
ETA, GAMMA = 0.1, 0.5


def two_steps(rule):
    state = rule.init(np.zeros(2))
    d1, state = rule.step(G1, state, ETA)
    d2, state = rule.step(G2, state, ETA)
    return d1, d2


def test_plain_by_hand():
    d1, d2 = two_steps(updates.plain())
    np.testing.assert_allclose(d1, [-0.1, -0.2])
    np.testing.assert_allclose(d2, [-0.3, 0.1])


def test_heavy_ball_by_hand():
    # v1 = g1 = (1, 2); v2 = 0.5 v1 + g2 = (3.5, 0).
    d1, d2 = two_steps(updates.rule("heavy-ball", GAMMA))
    np.testing.assert_allclose(d1, [-0.1, -0.2])
    np.testing.assert_allclose(d2, [-0.35, 0.0])


def test_nesterov_by_hand():
    # delta = -eta (g + gamma v): -0.1 (1.5, 3), then -0.1 ((3, -1) + 0.5 (3.5, 0)).
    d1, d2 = two_steps(updates.rule("nesterov", GAMMA))
    np.testing.assert_allclose(d1, [-0.15, -0.3])
    np.testing.assert_allclose(d2, [-0.475, 0.1])


def test_adam_by_hand_first_step_is_sign_like():
    d1, _ = two_steps(updates.rule("adam"))
    # Bias correction makes m_hat = g, v_hat = g^2 on step 1: delta = -eta g / (|g| + eps).
    np.testing.assert_allclose(d1, [-0.1, -0.1], rtol=1e-7)


def test_momentum_zero_is_plain():
    rng = np.random.default_rng(0)
    gs = rng.standard_normal((5, 3, 4))
    for update in ("heavy-ball", "nesterov"):
        rule, reference = updates.rule(update, 0.0), updates.plain()
        s, r = rule.init(gs[0]), reference.init(gs[0])
        for g in gs:
            d, s = rule.step(g, s, ETA)
            e, r = reference.step(g, r, ETA)
            np.testing.assert_array_equal(d, e)


def test_nesterov_is_heavy_ball_plus_a_look_ahead():
    """Both keep v <- gamma v + g; heavy ball steps along v, Nesterov along g + gamma v (SPEC 5)."""
    rng = np.random.default_rng(1)
    hb, nag = updates.rule("heavy-ball", 0.9), updates.rule("nesterov", 0.9)
    s_hb, s_nag = hb.init(np.zeros(4)), nag.init(np.zeros(4))
    for g in rng.standard_normal((6, 4)):
        d_hb, s_hb = hb.step(g, s_hb, ETA)
        d_nag, s_nag = nag.step(g, s_nag, ETA)
        v = s_hb.velocity
        np.testing.assert_array_equal(s_nag.velocity, v)
        np.testing.assert_allclose(d_hb, -ETA * v)
        np.testing.assert_allclose(d_nag, -ETA * (g + 0.9 * v))
        assert not np.allclose(d_hb, d_nag)


def adam_from_the_paper(gradients, alpha, beta1=0.9, beta2=0.999, eps=1e-8):
    """Kingma & Ba (2015), Algorithm 1, transcribed line by line."""
    theta = np.zeros_like(gradients[0])
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    t = 0
    for g in gradients:
        t = t + 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - alpha * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("eps", [1e-8, 1e-3])
def test_adam_matches_the_paper(eps):
    rng = np.random.default_rng(2)
    gradients = rng.standard_normal((50, 7)) * np.logspace(-3, 1, 7)
    rule = updates.rule("adam", adam_eps=eps)
    W, state = np.zeros(7), rule.init(np.zeros(7))
    for g in gradients:
        delta, state = rule.step(g, state, 0.01)
        W = W + delta
    np.testing.assert_allclose(W, adam_from_the_paper(gradients, 0.01, eps=eps), rtol=1e-12)


@pytest.mark.parametrize("update", ["plain", "heavy-ball", "nesterov", "adam"])
def test_coordinate_form_equals_the_array_rule(update):
    """``rules.direction``, which the CUDA update kernel runs per element, against the NumPy rule:
    five steps of random gradients, the state carried in ``first``/``second`` as the kernel does."""
    rng = np.random.default_rng(3)
    rule = updates.rule(update, 0.7, adam_eps=1e-6)
    state = rule.init(np.zeros(6))
    first, second = np.zeros(6), np.zeros(6)
    for t, g in enumerate(rng.standard_normal((5, 6)), start=1):
        delta, state = rule.step(g, state, ETA)
        c1, c2 = 1 - rule.beta1**t, 1 - rule.beta2**t
        moves = [updates.direction(rule.kind, g[i], first[i], second[i], rule.gamma, rule.beta1, rule.beta2, c1, c2,
                                   rule.eps) for i in range(6)]
        first, second = np.array([m[1] for m in moves]), np.array([m[2] for m in moves])
        np.testing.assert_allclose(-ETA * np.array([m[0] for m in moves]), delta, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("update", ["plain", "heavy-ball", "nesterov", "adam"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_cpu_descent_kernel_equals_the_array_rule_and_the_gradient_ema(update, dtype):
    """``backends.cpu_kernels.descend``, the CPU backend's update, against its NumPy meaning: the array
    rule's ``W + delta`` and state, and ``ema_step`` of ``gradient_maxima`` at the weights before
    the step; five steps on three replicas of two units, in both of the engine's dtypes."""
    from phaseret.backends import cpu_kernels
    from phaseret.kernels import maxima

    rng = np.random.default_rng(4)
    rule = updates.rule(update, 0.7, adam_eps=1e-6)
    W = rng.standard_normal((3, 2, 5)).astype(dtype)
    first, second, ema = np.zeros_like(W), np.zeros_like(W), np.full((3, 2), np.nan)
    W_ref, state, ema_ref = W.astype(float), rule.init(W.astype(float)), np.full((3, 2), np.nan)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    for t, G in enumerate(rng.standard_normal((5, 3, 2, 5)), start=1):
        ema_ref = maxima.ema_update(ema_ref, maxima.gradient_maxima(G, W_ref, True))
        delta, state = rule.step(G, state, ETA)
        W_ref = W_ref + delta
        cpu_kernels.descend(W, G.astype(dtype), first, second, ema, True, rule.kind, ETA, rule.gamma, rule.beta1,
                        rule.beta2, 1 - rule.beta1**t, 1 - rule.beta2**t, rule.eps)
        np.testing.assert_allclose(W, W_ref, rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(ema, ema_ref, rtol=tolerance)
    if update != "plain":
        np.testing.assert_allclose(first, state.first if update == "adam" else state.velocity, rtol=tolerance)
    if update == "adam":
        np.testing.assert_allclose(second, state.second, rtol=tolerance, atol=1e-12)


def test_the_cpu_settle_kernel_projects_and_marks_the_first_non_finite_step():
    """``backends.cpu_kernels.settle``: ``sphere.project`` unit by unit; a replica with a non-finite
    weight gets ``diverged_at = step`` once, an earlier step kept; as on the GPU, a zero unit
    projects to NaN and is found at the next step, and a unit off the sphere is no divergence."""
    from phaseret import sphere
    from phaseret.backends import cpu_kernels

    rng = np.random.default_rng(5)
    W = rng.standard_normal((4, 2, 6))
    W[1, 1, 3] = np.nan
    W[2, 0] = 0.0
    W[3, 0, 0] = np.inf
    expected = sphere.project(W[:1])
    diverged_at = np.array([-1, -1, -1, 7])
    cpu_kernels.settle(W, True, diverged_at, 9)
    np.testing.assert_allclose(W[:1], expected, rtol=1e-15)
    assert diverged_at.tolist() == [-1, 9, -1, 7]
    cpu_kernels.settle(W, True, diverged_at, 10)
    assert diverged_at.tolist() == [-1, 9, 10, 7]
    unprojected, at = np.zeros((1, 1, 3)), np.array([-1])
    cpu_kernels.settle(unprojected, False, at, 2)
    assert at.tolist() == [-1] and not unprojected.any()
