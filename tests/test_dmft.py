"""DMFT (:mod:`phaseret.dmft`): the exact linear case, simulations, the time step, refusals."""

import numpy as np
import pytest
import xarray as xr

from phaseret import dmft
from phaseret.config import validate
from phaseret.data import n_samples
from phaseret.kernels import derivative
from phaseret.models import Model
from phaseret.runs import run_replicas


def _marchenko_pastur(alpha: float, nodes: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature ``(x, weights)`` over the Marchenko-Pastur spectrum of ``X^T X`` (X n x p, entries
    N(0, 1/p), n = alpha p): support ``(sqrt(alpha) -+ 1)^2`` with density
    ``sqrt((high - x)(x - low)) / (2 pi x)``, and an atom ``1 - alpha`` at 0 when alpha < 1. With
    ``x = c + r cos(theta)`` the integrand is smooth and periodic, so the midpoint rule converges fast."""
    low, high = (np.sqrt(alpha) - 1) ** 2, (np.sqrt(alpha) + 1) ** 2
    centre, radius = (low + high) / 2, (high - low) / 2
    theta = (np.arange(nodes) + 0.5) * np.pi / nodes
    x = centre + radius * np.cos(theta)
    weights = (np.pi / nodes) * (radius * np.sin(theta)) ** 2 / (2 * np.pi * x)
    return np.append(x, 0.0), np.append(weights, max(0.0, 1.0 - alpha))


def _mode_amplitudes(x: np.ndarray, lr: float, gamma: float, steps: int, update: str) -> np.ndarray:
    """``a_t(x)`` (steps + 1, modes): the error ``e = w - w*`` along an eigenvector of ``X^T X`` with
    eigenvalue ``x`` is ``a_t(x) e(0)`` under the update (SPEC 5) with the gradient ``x e``."""
    e, v = np.ones_like(x), np.zeros_like(x)
    amplitudes = [e]
    for _ in range(steps):
        g = x * e
        v = gamma * v + g
        e = e - lr * {"plain": g, "heavy-ball": v, "nesterov": g + gamma * v}[update]
        amplitudes.append(e)
    return np.array(amplitudes)


def _least_squares_errors(alpha: float, update: str, epochs: int, paths: int, nodes: int = 4000) -> tuple:
    """GD with ``update`` on least squares (linear student and teacher, no projection; lr 0.1,
    start overlap 0.2, momentum 0.9): the DMFT's largest error in m and in q against the closed
    form ``m(t) = 1 + (m0 - 1) E a_t``, ``q(t) = 2 m(t) - 1 + 2 (1 - m0) E a_t^2`` over the
    Marchenko-Pastur spectrum; and the closed form's m (epochs + 1,)."""
    lr, m0, gamma = 0.1, 0.2, 0.9
    ds = dmft.solve("linear", alpha=alpha, lr=lr, epochs=epochs, overlap0=m0, projection=False, paths=paths,
                    update=update, momentum=gamma)
    x, weights = _marchenko_pastur(alpha, nodes)
    amplitudes = _mode_amplitudes(x, lr, gamma, epochs, update)
    m = 1 + (m0 - 1) * amplitudes @ weights
    q = 2 * m - 1 + 2 * (1 - m0) * amplitudes**2 @ weights
    return (np.abs(ds.magnetization_trajectory.values - m).max(), np.abs(ds.norm_trajectory.values - q).max(), m)


@pytest.mark.parametrize("update", dmft.UPDATES)
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_least_squares_follows_the_marchenko_pastur_solution(alpha, update):
    """Linear student and teacher, square loss, no projection, GD with each update: ``e = w - w*``
    moves mode by mode, ``e(t) = a_t(X^T X) e(0)``, so ``m(t) = 1 + (m0 - 1) E a_t`` and
    ``q(t) = 2 m(t) - 1 + 2 (1 - m0) E a_t^2`` over the Marchenko-Pastur spectrum. The sampling
    error at 16,384 Sobol paths is below 1e-3 (measured at most 3e-4); a wrong Onsager term or
    memory kernel is off by 0.1 or more, and so was a Cholesky factor of the paths' Gram matrix
    near the fixed point (q off by 21 with heavy-ball at alpha 2)."""
    m_error, q_error, m = _least_squares_errors(alpha, update, epochs=40, paths=16_384)
    assert m_error < 1e-3
    assert q_error < 1e-3
    assert abs(m[-1] - m[0]) > 0.3  # the check is not trivially met: the dynamics moved


@pytest.mark.slow
@pytest.mark.parametrize("update", ["plain", "heavy-ball"])
def test_least_squares_at_the_marginal_alpha_1_stays_exact_over_400_epochs(update):
    """At alpha = 1 the Marchenko-Pastur spectrum reaches 0, so the error relaxes as a power law:
    a marginal dynamics, as on phase retrieval's plateau, where the sampled solution could wander.
    Over 400 epochs (lr 0.1, exact memory, 16,384 paths) it stays within 1e-3 of the closed form
    (measured 6e-5 plain, 4.5e-4 heavy-ball; 5e-4 and 3.5e-3 at 4,096 paths: a bias of the
    sampling that falls with the paths)."""
    m_error, q_error, m = _least_squares_errors(1.0, update, epochs=400, paths=16_384, nodes=20_000)
    assert m_error < 1e-3
    assert q_error < 1e-3
    assert m[-1] - m[200] > 0.005  # still moving at the end: the relaxation is slow


def _simulate(alpha, lr, steps, m0, p, runs, update="plain", algorithm="gd", b=0.5, tau=2.0, gamma=0.9,
              model="pr-quadratic"):
    """Overlaps (runs, steps + 1) of plain NumPy runs on the sphere (SPEC 1-5) from a start at
    overlap ``m0``: ``pr-quadratic`` with the package's analytic gradient, or ``linear`` (the
    DMFT's exact case: ``y = X w*``, gradient ``X^T (X w - y)`` over the batch)."""
    n = int(alpha * p)
    grad = Model(model).grad if model != dmft.LINEAR else lambda w, X, y: X.T @ (X @ w - y)
    overlaps = np.empty((runs, steps + 1))
    for run in range(runs):
        rng = np.random.default_rng(run)
        w_star = rng.standard_normal(p)
        w_star *= np.sqrt(p) / np.linalg.norm(w_star)
        X = rng.standard_normal((n, p)) / np.sqrt(p)
        y = X @ w_star if model == dmft.LINEAR else np.abs(X @ w_star)
        z = rng.standard_normal(p)
        z -= (z @ w_star) / p * w_star
        w = m0 * w_star + np.sqrt(1 - m0**2) * np.sqrt(p) * z / np.linalg.norm(z)
        v = np.zeros(p)
        inside = rng.random(n) < b if algorithm == "p-sgd" else np.ones(n, bool)
        overlaps[run, 0] = m0
        for t in range(steps):
            g = grad(w, X[inside], y[inside]).ravel()
            if update != "plain":
                v = gamma * v + g
            w = w - lr * {"plain": g, "heavy-ball": v, "nesterov": g + gamma * v}[update]
            w *= np.sqrt(p) / np.linalg.norm(w)
            overlaps[run, t + 1] = w @ w_star / p
            if algorithm == "p-sgd":
                draw = rng.random(n)
                inside = np.where(inside, draw >= (1 - b) * lr / (b * tau), draw < lr / tau)
    return overlaps


@pytest.mark.parametrize("algorithm, update", [("gd", "plain"), ("p-sgd", "heavy-ball")])
def test_the_overlap_agrees_with_simulations_of_phase_retrieval(algorithm, update):
    """pr-quadratic at alpha 3, start overlap 0.2, lr 0.02, 12 epochs: the DMFT overlap (65,536
    Sobol paths; its spread seed to seed is below 0.003 there for GD and P-SGD) lies within 3
    standard errors plus 0.015 of the mean of 12 runs at p = 2048 at every second epoch."""
    epochs = 12
    ds = dmft.solve("pr-quadratic", alpha=3.0, lr=0.02, epochs=epochs, overlap0=0.2, paths=65_536,
                    algorithm=algorithm, update=update)
    per_epoch = dmft.steps_per_epoch(algorithm, 0.5)
    runs = _simulate(3.0, 0.02, epochs * per_epoch, 0.2, 2048, 12, update, algorithm)[:, ::per_epoch]
    mean, error = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(len(runs))
    predicted = ds.magnetization_trajectory.values
    assert predicted[-1] - predicted[0] > 0.05  # the overlap rose
    for k in range(0, epochs + 1, 2):
        assert abs(predicted[k] - mean[k]) < 3 * error[k] + 0.015, (k, predicted[k], mean[k], error[k])


@pytest.mark.parametrize("update", ["plain", "heavy-ball"])
def test_p_sgd_on_least_squares_agrees_with_runs_and_resolves_the_persistence_time(update):
    """An independent check of the P-SGD chain (SPEC 4) in the equations, where the sample side is
    linear: least squares on the sphere at the marginal alpha 1 (the spectrum reaches 0, so the
    relaxation is slow), lr 0.1, b 0.5, tau 2, exact memory. The DMFT overlap (16,384 paths) lies
    within 3 standard errors of the mean of 24 NumPy runs at p = 1024 at every epoch up to 50
    (measured 1.4 plain, 0.9 heavy-ball); with tau 3 in the equations and 2 in the runs it does
    not (measured 6.0 and 9.7 standard errors): the check resolves the chain's rate."""
    epochs, per_epoch = 50, dmft.steps_per_epoch("p-sgd", 0.5)
    runs = _simulate(1.0, 0.1, epochs * per_epoch, 0.2, 1024, 24, update, "p-sgd", model=dmft.LINEAR)[:, ::per_epoch]

    def largest_gap(tau):  # in standard errors of the runs' mean (one solution: no error bar of its own)
        return _gaps(dmft.solve(dmft.LINEAR, alpha=1.0, lr=0.1, epochs=epochs, overlap0=0.2, paths=16_384,
                                algorithm="p-sgd", update=update, tau=tau), runs)[0]

    assert runs.mean(0)[-1] - runs.mean(0)[0] > 0.5  # the dynamics moved
    assert largest_gap(2.0) < 3
    assert largest_gap(3.0) > 4


def _engine_runs(algorithm, update, alpha, p, seeds, epochs, lr=0.02, overlap0=0.2):
    """Trajectories (seeds, epochs + 1) of phaseret's replica engine from starts at overlap ``overlap0``,
    by quantity: ``overlap``, ``train_loss`` (per sample) and ``test_error`` (pr-quadratic's population error)."""
    configs = [validate(alpha=alpha, p=p, seed=seed, algorithm=algorithm, update=update, lr=lr, max_epochs=epochs,
                        init="overlap", init_overlap=overlap0, stop={"test_error": 0.0, "grad_ema": 0.0})
               for seed in range(seeds)]
    batches = [configs[first : first + 4] for first in range(0, seeds, 4)]  # 4 seeds' data at a time
    results = [r for batch in batches for r in run_replicas(batch, np.arange(epochs + 1))]
    runs = {name: np.array([r.trajectory[name].values for r in results])
            for name in ("overlap", "train_loss", "test_error")}
    runs["train_loss"] /= n_samples(alpha, p)
    return runs


def _engine_overlaps(algorithm, update, alpha, p, seeds, epochs, lr=0.02, overlap0=0.2):
    """Overlap trajectories (seeds, epochs + 1) of phaseret's replica engine."""
    return _engine_runs(algorithm, update, alpha, p, seeds, epochs, lr, overlap0)["overlap"]


def _gaps(ds, runs, quantity="overlap"):
    """``(largest |DMFT - mean of runs| over the epochs, in standard errors of the difference (the
    runs' mean's and, with replicates, the DMFT's own); the same in the quantity's units; the runs'
    largest standard error)`` for ``quantity`` (``overlap`` or ``test_error``)."""
    error = runs.std(0, ddof=1)[1:] / np.sqrt(len(runs))
    own = np.nan_to_num(ds[f"{quantity}_trajectory_stderr"].values[1:])
    gap = np.abs(ds[f"{quantity}_trajectory"].values - runs.mean(0))[1:]
    return float(np.max(gap / np.hypot(error, own))), float(gap.max()), float(error.max())


@pytest.mark.parametrize("algorithm, update", [("gd", "plain"), ("p-sgd", "heavy-ball")])
def test_the_overlap_agrees_with_the_replica_engine(algorithm, update):
    """The same comparison with phaseret's own engine (``init = "overlap"``; per-seed data, the
    P-SGD chain of SPEC 4): 16 runs at p = 1024, alpha 4, lr 0.02, 10 epochs, within 3
    standard errors plus 0.015 at every epoch."""
    epochs = 10
    ds = dmft.solve("pr-quadratic", alpha=4.0, lr=0.02, epochs=epochs, overlap0=0.2, paths=65_536,
                    algorithm=algorithm, update=update)
    runs = _engine_overlaps(algorithm, update, 4.0, 1024, 16, epochs)
    error = runs.std(0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(ds.overlap_trajectory.values - runs.mean(0)) < 3 * error + 0.015)
    assert runs.mean(0)[-1] - 0.2 > 0.05


#: The slow comparison's step and horizon per optimizer: lr 0.02 over 20 epochs, but GD + heavy-ball
#: at lr 0.01 over 40 (the same time): at lr 0.02 its p -> infinity dynamics is unstable (a path of
#: the tail runs away within 4-8 epochs in one of 4 solver replicates at alpha 2, 4 and 6), and so
#: are finite runs at p = 4096 (alpha 6: 16 of 32 fell below overlap 0.1 within 20 epochs).
_SLOW_CASES = {("gd", "plain"): (0.02, 20), ("gd", "heavy-ball"): (0.01, 40), ("p-sgd", "plain"): (0.02, 20),
               ("p-sgd", "heavy-ball"): (0.02, 20)}


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [2.0, 4.0, 6.0])
@pytest.mark.parametrize("algorithm, update", list(_SLOW_CASES))
def test_the_dmft_agrees_with_32_runs_at_p_4096_and_the_gap_shrinks_from_p_1024(alpha, algorithm, update):
    """Issue 16's check: the DMFT overlap and test error (4 replicates of 65,536 paths) each within 3
    standard errors of their difference from the mean of 32 engine runs at p = 4096 at every epoch
    (start overlap 0.2, lr and horizon from ``_SLOW_CASES``), and each one's largest gap no larger
    than at p = 1024, up to 3 standard errors of the p = 4096 mean. (One solution alone is not
    enough: at P-SGD alpha 4 the overlaps of solver seeds 0, 1, 2 at epoch 12 were 0.373, 0.381,
    0.385.) On the sphere the test error is 2 (1 - m^2), yet the mean of a square and the square
    of a mean part where the runs spread, so the two are checked apart."""
    lr, epochs = _SLOW_CASES[algorithm, update]
    ds = dmft.solve("pr-quadratic", alpha=alpha, lr=lr, epochs=epochs, overlap0=0.2, paths=65_536,
                    algorithm=algorithm, update=update, replicates=4)
    assert ds.attrs["diverged_epoch"] == -1
    large_p, small_p = (_engine_runs(algorithm, update, alpha, p, 32, epochs, lr) for p in (4096, 1024))
    for quantity in ("overlap", "test_error"):
        in_errors, large, error = _gaps(ds, large_p[quantity], quantity)
        _, small, _ = _gaps(ds, small_p[quantity], quantity)
        print(f"{algorithm}+{update} alpha {alpha} {quantity}: gap {large:.4f} ({in_errors:.2f} SE) at p 4096, "
              f"{small:.4f} at p 1024")
        assert in_errors < 3, quantity
        assert large < small + 3 * error, quantity


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, update", [("gd", "plain"), ("gd", "heavy-ball"), ("p-sgd", "plain")])
def test_the_dmft_follows_the_runs_out_of_the_plateau_over_400_epochs(algorithm, update):
    """The long horizon where the runs leave the start's plateau: alpha 4, lr 0.01, start overlap
    0.2, 400 epochs (800 steps for P-SGD), exact memory, 2 replicates of 16,384 paths (P-SGD: 5.5
    min on two cores), against 16 engine runs at p = 2048: within 3 standard errors of the
    difference at every epoch where all runs are still going (runs that reach the teacher stop),
    and the runs' mean rises past 0.6, so the comparison covers the escape, not only the plateau."""
    ds = dmft.solve("pr-quadratic", alpha=4.0, lr=0.01, epochs=400, overlap0=0.2, paths=16_384,
                    algorithm=algorithm, update=update, replicates=2)
    assert ds.attrs["diverged_epoch"] == -1
    runs = _engine_overlaps(algorithm, update, 4.0, 2048, 16, 400, lr=0.01)
    going = np.isfinite(runs).all(0)
    in_errors, large, _ = _gaps(ds.isel(epoch=going), runs[:, going])
    print(f"{algorithm}+{update}: gap {large:.4f} ({in_errors:.2f} SE) over {going.sum()} epochs")
    assert in_errors < 3
    assert runs[:, going].mean(0).max() > 0.6


@pytest.mark.slow
def test_smoothing_brings_gd_heavy_ball_s_plateau_onto_the_runs():
    """GD + heavy-ball at alpha 2.5, lr 0.01, start overlap 0.2 settles on a plateau within about 100
    epochs. Four solutions of 16,384 paths with smoothing 0.05 agree with 16 engine runs at p = 4096
    in overlap and training loss within 3 standard errors of the difference (runs' and solutions')
    at every epoch to 140. Without smoothing the same four solutions read the loss 0.162, 0.339,
    0.177, 0.260 at epoch 140 (runs 0.156 +- 0.004), one of them off the plateau (2026-12-03)."""
    epochs = 140
    engine = _engine_runs("gd", "heavy-ball", 2.5, 4096, 16, epochs, lr=0.01)
    solutions = [dmft.solve("pr-quadratic", alpha=2.5, lr=0.01, epochs=epochs, overlap0=0.2, paths=16_384,
                            update="heavy-ball", seed=seed, smoothing=0.05) for seed in range(4)]
    for quantity in ("overlap", "train_loss"):
        runs, name = engine[quantity], f"{quantity}_trajectory"
        theory = np.array([ds[name].values for ds in solutions])
        error = np.hypot(runs.std(0, ddof=1) / np.sqrt(len(runs)), theory.std(0, ddof=1) / np.sqrt(len(theory)))
        gaps = np.abs(theory.mean(0) - runs.mean(0))[1:] / error[1:]
        print(f"{name}: largest gap {gaps.max():.2f} standard errors, at epoch {gaps.argmax() + 1}")
        assert gaps.max() < 3.0, name


def test_the_teacher_estimates_follow_the_same_drift_and_the_default_rule_picks_one_of_them():
    """``E[f lambda*]`` along Stein's direction, as the plain average and by finite differences along
    Stein's direction estimate one expectation: P-SGD at alpha 3, lr 0.02, start 0.2, smoothing 0.05,
    12 epochs, 16,384 paths: the magnetizations differ (the key reaches the solver) by less than 0.01
    (Stein's and the differences' 0.006 from the average, 0.013 and 0.012 at 4,096 paths, the
    sampling's; the differences 4e-4 from Stein's, the O(h^2) and the spikes). Asking for what the
    default rule picks changes nothing, bit for bit."""
    keys = dict(alpha=3.0, lr=0.02, epochs=12, overlap0=0.2, algorithm="p-sgd", paths=16_384, smoothing=0.05)
    solved = {estimate: dmft.solve(teacher_estimate=estimate, **keys) for estimate in dmft.TEACHER_ESTIMATES}
    average = solved["average"].magnetization_trajectory
    for estimate, solution in solved.items():
        assert solution.attrs["teacher_estimate"] == estimate
        if estimate != "average":
            gap = np.abs(solution.magnetization_trajectory - average).values
            assert 0 < gap.max() < 0.01, estimate
    assert solved["difference"].magnetization_trajectory.values[-1] > 0.28  # the drift itself, 0.2 -> 0.31
    keys = dict(alpha=3.0, lr=0.02, epochs=12, overlap0=0.2, algorithm="p-sgd")
    for update, rule in (("plain", "stein"), ("heavy-ball", "average")):
        default = dmft.solve(paths=1024, update=update, **keys)
        asked = dmft.solve(paths=1024, update=update, teacher_estimate=rule, **keys)
        xr.testing.assert_identical(default, asked)


@pytest.mark.slow
def test_on_plain_p_sgd_s_plateau_the_finite_differences_along_stein_s_direction_agree_with_the_average():
    """dmft_momentum's plain P-SGD (alpha 2.5, lr 0.01, b 0.5, tau 2, start 0.2, memory 200, refresh
    20, growth 0.05, smoothing 0.05), 12 solutions of 1,024 paths over 1,300 epochs with each of the
    two estimates of E[f lambda*] that hold for any target: their mean overlaps agree within 3
    standard errors of the difference at epochs 327, 637, 941 and 1,243 (2026-12-04: 0.336 / 0.432 /
    0.508 / 0.516 against 0.403 / 0.450 / 0.517 / 0.551, within 0.93; Stein's pathwise derivative read
    0.269 / 0.277 / 0.327 / 0.331, README Theory; 877 s)."""
    epochs = [327, 637, 941, 1243]
    keys = dict(alpha=2.5, lr=0.01, epochs=1300, paths=1024, algorithm="p-sgd", memory=200, refresh=20,
                refresh_growth=0.05, smoothing=0.05, overlap0=0.2)
    overlaps = [np.array([dmft.solve(seed=seed, teacher_estimate=estimate, **keys).overlap_trajectory.values[epochs]
                          for seed in range(12)]) for estimate in ("difference", "average")]
    error = np.hypot(*(o.std(0, ddof=1) / np.sqrt(len(o)) for o in overlaps))
    gaps = np.abs(overlaps[0].mean(0) - overlaps[1].mean(0)) / error
    print("means:", [np.round(o.mean(0), 3) for o in overlaps], "gaps in standard errors:", np.round(gaps, 2))
    assert gaps.max() < 3


def test_replicates_average_independent_solutions_and_give_their_standard_error():
    """``replicates = 3``: the mean of the solutions of seeds 0, 1, 2 (m averaged, the overlap from
    the means) and the standard errors over them of the overlap, the training loss and the test
    error (each solution's own, from its m and q), each one's overlap, loss and test error beside
    them; one solution has no error bar."""
    keys = dict(alpha=4.0, lr=0.02, epochs=6, overlap0=0.2, paths=1024, algorithm="p-sgd")
    ds = dmft.solve("pr-quadratic", replicates=3, **keys)
    alone = [dmft.solve("pr-quadratic", seed=seed, **keys) for seed in range(3)]
    m = np.mean([one.magnetization_trajectory.values for one in alone], axis=0)
    np.testing.assert_allclose(ds.magnetization_trajectory.values, m, rtol=1e-12)
    overlaps = np.array([one.overlap_trajectory.values for one in alone])
    np.testing.assert_allclose(ds.overlap_trajectory_stderr.values, overlaps.std(0, ddof=1) / np.sqrt(3), rtol=1e-9)
    assert ds.overlap_trajectory_stderr.values[1:].min() > 0
    for name in ("train_loss_trajectory", "test_error_trajectory"):  # each replicate's own, then their spread
        each = np.array([one[name].values for one in alone])
        np.testing.assert_allclose(ds[f"{name}_stderr"].values, each.std(0, ddof=1) / np.sqrt(3), rtol=1e-9)
        assert ds[f"{name}_stderr"].values[1:].min() > 0
        assert np.isnan(alone[0][f"{name}_stderr"].values).all()
    assert np.isnan(alone[0].overlap_trajectory_stderr.values).all()
    np.testing.assert_array_equal(ds.replicate, [0, 1, 2])  # each replicate's overlap, by solver seed
    np.testing.assert_allclose(ds.overlap_by_replicate.transpose("replicate", "epoch"), overlaps, rtol=1e-12)
    for name in ("train_loss", "test_error"):  # and each one's loss and test error
        each = np.array([one[f"{name}_trajectory"].values for one in alone])
        np.testing.assert_allclose(ds[f"{name}_by_replicate"].transpose("replicate", "epoch"), each, rtol=1e-12)
        np.testing.assert_allclose(alone[0][f"{name}_by_replicate"].sel(replicate=0), each[0], rtol=1e-12)
    with pytest.raises(ValueError, match="^replicates: "):
        dmft.solve("pr-quadratic", replicates=0, **keys)


def test_stored_replicates_are_taken_as_they_are_and_only_the_others_solved():
    """``on_replicate`` hands out each replicate as it is solved; given back as ``stored`` they are
    not solved again, and the mean over stored and new ones is the full solution, bit for bit."""
    keys = dict(alpha=2.5, lr=0.02, epochs=8, overlap0=0.2, paths=512, algorithm="p-sgd", update="heavy-ball",
                replicates=3, seed=4)
    handed = {}
    full = dmft.solve("pr-quadratic", on_replicate=handed.__setitem__, **keys)
    assert sorted(handed) == [4, 5, 6]
    assert handed[5]["m"].shape == (9,) and handed[5]["diverged_epoch"] == -1
    again = {}
    resumed = dmft.solve("pr-quadratic", stored={4: handed[4], 6: handed[6]}, on_replicate=again.__setitem__, **keys)
    assert list(again) == [5]
    np.testing.assert_array_equal(again[5]["m"], handed[5]["m"])
    xr.testing.assert_identical(resumed, full)
    swapped = dmft.solve("pr-quadratic", stored={4: handed[5], 5: handed[5], 6: handed[6]}, **keys)
    assert not np.array_equal(swapped.magnetization_trajectory, full.magnetization_trajectory)  # stored is used as given


def test_halving_the_step_at_fixed_time_converges():
    """GD on pr-quadratic at alpha 4 up to time lr x steps = 0.4, at lr 0.02, 0.01 and 0.005
    (16,384 paths): halving the step from 0.01 moves the overlap by less than 0.02 at equal
    times (the stated tolerance at lr 0.01; 0.0053 measured), and by less than halving from
    0.02 did (0.017): the curves converge as the step shrinks."""
    curves = [dmft.solve("pr-quadratic", alpha=4.0, lr=lr, epochs=round(0.4 / lr), overlap0=0.2, paths=16_384)
              .overlap_trajectory.values[::k] for lr, k in ((0.02, 1), (0.01, 2), (0.005, 4))]
    coarse, middle = np.abs(curves[0] - curves[1]).max(), np.abs(curves[1] - curves[2]).max()
    assert middle < 0.02 and middle < coarse
    assert curves[2][-1] - curves[2][0] > 0.3


def test_a_memory_window_as_long_as_the_run_is_exact_and_shorter_ones_converge_to_it():
    """``memory`` >= the steps keeps all of R_f's memory (the exact solution, bit for bit). GD on
    pr-quadratic at alpha 4 over 30 epochs at 65,536 paths: a 25-step window moves the overlap by
    less than 0.01 (0.0024 measured), a 10-step one by more than 0.05: R_f's memory is long. (At
    4,096 paths the sampling noise alone makes two solutions that differ slightly differ by 0.02.)"""
    keys = dict(alpha=4.0, lr=0.02, epochs=30, overlap0=0.2, paths=65_536)
    exact = dmft.solve("pr-quadratic", **keys).overlap_trajectory.values
    np.testing.assert_array_equal(dmft.solve("pr-quadratic", memory=40, **keys).overlap_trajectory.values, exact)
    assert np.abs(dmft.solve("pr-quadratic", memory=25, **keys).overlap_trajectory.values - exact).max() < 0.01
    assert np.abs(dmft.solve("pr-quadratic", memory=10, **keys).overlap_trajectory.values - exact).max() > 0.05


def test_whole_rows_every_refresh_steps_keep_the_tail_that_a_memory_window_cuts():
    """``refresh = 1`` makes every Jacobian row whole: the exact solution bit for bit (GD +
    heavy-ball on pr-quadratic's plateau, with smoothing, whose pairs then reach back to step 0).
    On least squares at the marginal alpha 1 (plain GD, lr 0.1, 200 epochs; the sampled solution
    is exact to 1e-12 there) a 20-step window alone runs 0.080 ahead of the closed form; with whole
    rows every 4 steps and the tail stretched in between it stays within 5e-3 (3.1e-3 measured;
    holding the last whole row's entries at the same s was 0.022 behind)."""
    keys = dict(alpha=2.5, lr=0.01, epochs=60, overlap0=0.2, paths=1024, update="heavy-ball", smoothing=0.05)
    exact = dmft.solve("pr-quadratic", **keys).overlap_trajectory.values
    np.testing.assert_array_equal(dmft.solve("pr-quadratic", memory=10, refresh=1, **keys).overlap_trajectory.values,
                                  exact)
    lr, m0, epochs = 0.1, 0.2, 200
    x, weights = _marchenko_pastur(1.0, 20_000)
    m = 1 + (m0 - 1) * _mode_amplitudes(x, lr, 0.0, epochs, "plain") @ weights
    linear = dict(alpha=1.0, lr=lr, epochs=epochs, overlap0=m0, projection=False, paths=1024, memory=20)
    cut = dmft.solve("linear", **linear).magnetization_trajectory.values
    kept = dmft.solve("linear", refresh=4, **linear).magnetization_trajectory.values
    assert np.abs(cut - m).max() > 0.05
    assert np.abs(kept - m).max() < 5e-3


def test_whole_rows_that_thin_out_with_time_keep_the_tail_at_a_fraction_of_the_cost():
    """``refresh_growth = g``: whole rows at the window's end W, then ``max(refresh, floor(g t))``
    steps after each one at t (every ``refresh`` steps without it). On least squares at the
    marginal alpha 1 (as above: a 20-step window, whole rows every 4 steps, 46 of them, 3.1e-3
    from the closed form) g = 0.05 solves 36 whole rows and stays within 6e-3 (4.7e-3 measured;
    g = 0.1: 23 rows, 1.0e-2; g = 0.5: 6 rows, 0.057; no whole rows: 0.080)."""
    np.testing.assert_array_equal(np.flatnonzero(dmft._whole_rows(40, 20, 4, None)), [20, 24, 28, 32, 36, 40])
    np.testing.assert_array_equal(np.flatnonzero(dmft._whole_rows(200, 20, 4, 0.1)),
                                  [20, 24, 28, 32, 36, 40, 44, 48, 52, 57, 62, 68, 74, 81, 89, 97, 106, 116, 127,
                                   139, 152, 167, 183])
    lr, m0, epochs = 0.1, 0.2, 200
    x, weights = _marchenko_pastur(1.0, 20_000)
    m = 1 + (m0 - 1) * _mode_amplitudes(x, lr, 0.0, epochs, "plain") @ weights
    linear = dict(alpha=1.0, lr=lr, epochs=epochs, overlap0=m0, projection=False, paths=1024, memory=20, refresh=4)
    thinned = dmft.solve("linear", refresh_growth=0.05, **linear)
    assert dmft._whole_rows(200, 20, 4, 0.05).sum() == 36
    assert np.abs(thinned.magnetization_trajectory.values - m).max() < 6e-3
    assert thinned.attrs["refresh_growth"] == 0.05


def test_each_path_s_jacobian_row_is_the_inverse_of_its_linear_response_within_the_window():
    """``_sample_step``'s Jacobian rows against their NumPy meaning, ``J = (I - K)^-1`` per path
    with ``K(t, u) = R_w(t, u) f'(u)`` for ``u < t``: all of row t with the whole memory, and its
    last W + 1 entries, exactly the same, with a window of W steps (the window drops only the
    older entries); half the paths outside the batch at each step, as in P-SGD; the paths in more
    than one group of the kernel (:data:`phaseret.dmft.GROUP`), the last one short."""
    paths, T, W = 2 * dmft.GROUP + 3, 7, 3
    rng = np.random.default_rng(6)
    A = np.zeros((T, T + 2))
    A[:, 2:] = np.tril(rng.standard_normal((T, T)) * 0.05, -1)  # R_w(t, u) = A[t, 2 + u]
    act, evaluation, loss, eps, k_hat, door = Model("pr-quadratic").kernel_codes
    target, thetas = rng.standard_normal(paths) ** 2, rng.standard_normal((T, paths))
    member = (rng.random((paths, T)) < 0.5).astype(float)
    rows = {}
    for window in (T, W):
        F, Fp, X = np.zeros((paths, T)), np.zeros((paths, T)), np.zeros((paths, window + 1))
        rows[window] = []
        for t in range(T):
            empty = np.zeros((paths, 0))  # no e, no lambda history
            dmft._sample_step(t, thetas[t], 0.0, member, A, F, Fp, empty, X, window, empty, target, target[:0], act,
                              evaluation, loss, eps, k_hat, door)
            rows[window].append(X[:, : min(t, window) + 1].copy())
    assert np.abs(Fp).max() > 1 and (Fp == 0).any()  # responses that matter, and paths out of the batch
    expected = [np.linalg.inv(np.eye(T) - A[:, 2:] * Fp[i][None, :]) for i in range(paths)]
    assert max(np.abs(np.tril(J, -1)).max() for J in expected) > 0.01  # the responses are not trivially small
    for i in range(paths):
        for t in range(T):
            np.testing.assert_allclose(rows[T][t][i], expected[i][t, : t + 1], rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(rows[W][t][i], rows[T][t][i][max(0, t - W) :])


def test_each_pair_s_finite_difference_is_its_own_re_run_whatever_pairs_run_beside_it():
    """``_finite_differences`` against its meaning, a pair's process re-run from s in plain Python:
    ``lambda(u) = Lam(u) + d(u)``, ``d(u) = +-h [u = s] + sum_{s<=v<u} R_w(u, v) (f+-(v) - f(v))``.
    The kernel runs groups of :data:`phaseret.dmft.PAIR_GROUP` pairs side by side, each padded with
    zeros before its start: every pair must come out as when it runs alone, bit for bit, with
    starts spread over the whole history and groups that mix them."""
    paths, T, h = 5, 12, 0.05
    rng = np.random.default_rng(7)
    A = np.zeros((T + 1, T + 2))
    A[:, 2:] = np.tril(rng.standard_normal((T + 1, T)) * 0.3, -1)
    act, _, loss, eps, k_hat, _ = Model("pr-quadratic").kernel_codes
    Lam, F = rng.standard_normal((paths, T + 1)), rng.standard_normal((paths, T + 1))
    member, target = (rng.random((paths, T + 1)) < 0.5).astype(float), rng.standard_normal(paths) ** 2
    pair_paths = rng.integers(0, paths, 2 * dmft.PAIR_GROUP + 5)
    starts = rng.integers(0, T, len(pair_paths))
    together = dmft._finite_differences(T, pair_paths, starts, h, Lam, F, member, A, target, act, loss, eps, k_hat)

    def f(i, u, lam):
        a, a1, _ = derivative.activation(act, lam, eps)
        return member[i, u] * derivative.loss_terms(loss, a - k_hat, target[i])[1] * a1

    for k, (i, s) in enumerate(zip(pair_paths, starts)):
        ends = []
        for sign in (1.0, -1.0):
            change = {}
            for u in range(s, T + 1):
                d = sign * h * (u == s) + sum(A[u, 2 + v] * change[v] for v in range(s, u))
                change[u] = f(i, u, Lam[i, u] + d) - F[i, u]
            ends.append(change[T])
        np.testing.assert_allclose(together[k], (ends[0] - ends[1]) / (2 * h), rtol=1e-12, atol=1e-12)
        alone = dmft._finite_differences(T, pair_paths[k : k + 1], starts[k : k + 1], h, Lam, F, member, A, target, act,
                                         loss, eps, k_hat)
        assert alone[0] == together[k]
    assert np.abs(together).max() > 0.1  # re-runs that respond


def test_a_runaway_path_stops_the_solution_with_nan_and_its_epoch():
    """GD + heavy-ball at lr 0.2 (ten times the step of momentum 0.9 at lr 0.02): the samples of
    large |lambda*| are unstable under the quartic loss and run away; the solution is NaN from
    there and says when, instead of drawing the collapse of the overlap that would follow."""
    ds = dmft.solve("pr-quadratic", alpha=4.0, lr=0.2, epochs=30, overlap0=0.2, paths=4096)
    stop = ds.attrs["diverged_epoch"]
    assert 0 < stop < 30
    assert np.isnan(ds.overlap_trajectory.values[stop:]).all() and np.isfinite(ds.overlap_trajectory.values[:stop]).all()


@pytest.mark.parametrize(
    "model, algorithm, update",
    [("pr-quadratic", "gd", "plain"), ("pr-quadratic", "p-sgd", "heavy-ball"), ("door-logistic", "gd", "nesterov")],
)
def test_finite_differences_on_every_pair_match_the_derivatives_where_the_maps_are_smooth(monkeypatch, model, algorithm,
                                                                                          update):
    """``smoothing`` with the trigger at -1 re-runs every (path, s) pair from s with theta(s) +- h. At a
    setting without barrier crossings (alpha 4, 6 epochs; the door's |lambda| smoothed over
    sqrt(0.01), far wider than h) and h = 1e-4 its differences equal the Jacobians' terms up to
    O(h^2): the solution matches the one whose trigger no pair reaches (the same estimator of
    E[f lambda*]) to 1e-7. A re-run that dropped its own memory term (all three cases) or the batch
    membership (P-SGD) fails it: both were tried."""
    pairs = []
    original = dmft._finite_differences
    monkeypatch.setattr(dmft, "_finite_differences", lambda *a: pairs.append(len(a[1])) or original(*a))
    solutions = {}
    for trigger in (-1.0, np.inf):
        monkeypatch.setattr(dmft, "SMOOTHING_TRIGGER", trigger)
        solutions[trigger] = dmft.solve(model, alpha=4.0, lr=0.02, epochs=6, overlap0=0.2, paths=1024,
                                        algorithm=algorithm, update=update, smoothing=1e-4, loss_eps=0.01)
    steps = 6 * dmft.steps_per_epoch(algorithm, 0.5)
    assert sum(pairs) == 1024 * steps * (steps - 1) // 2  # every pair (path, s < t) at every step t
    for name in ("overlap_trajectory", "train_loss_trajectory", "multiplier_trajectory"):
        a, b = solutions[-1.0][name].values, solutions[np.inf][name].values
        assert np.abs(a - b).max() < 1e-7 * max(1.0, np.abs(b).max()), name


@pytest.mark.parametrize(
    "change, key",
    [
        ({"hidden": 2}, "hidden"),
        ({"update": "adam"}, "update"),
        ({"algorithm": "langevin"}, "algorithm"),
        ({"algorithm": "gamp"}, "algorithm"),
        ({"model": "pr-cubic"}, "model"),
        ({"alpha": -1.0}, "alpha"),
        ({"epochs": 0}, "epochs"),
        ({"overlap0": 1.0}, "overlap0"),
        ({"algorithm": "p-sgd", "lr": 3.0}, "lr, tau, batch_fraction"),
        ({"paths": 10**6, "epochs": 10**4}, "paths, epochs"),
        ({"memory": 0}, "memory"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"smoothing": float("nan")}, "smoothing"),
        ({"memory": 10, "refresh": 0}, "refresh"),
        ({"refresh": 5}, "refresh"),
        ({"memory": 10, "refresh": 5, "refresh_growth": 0.0}, "refresh_growth"),
        ({"memory": 10, "refresh": 5, "refresh_growth": True}, "refresh_growth"),
        ({"memory": 10, "refresh_growth": 0.1}, "refresh_growth"),
        ({"teacher_estimate": "median"}, "teacher_estimate"),
        ({"teacher_estimate": "difference"}, "teacher_estimate"),
        ({"model": "door-square", "teacher_estimate": "stein"}, "teacher_estimate"),
        ({"model": "door-logistic", "teacher_estimate": "stein"}, "teacher_estimate"),
    ],
)
def test_settings_the_equations_do_not_cover_are_refused_before_any_work(change, key):
    settings = dict(alpha=2.0, lr=0.01, epochs=10) | change
    with pytest.raises(ValueError, match=rf"^{key}: "):
        dmft.solve(**settings)


def test_sobol_points_fill_only_the_dimensions_where_their_columns_stay_uncorrelated():
    """2,048 paths, 400 steps (802 input dimensions): no two columns of the normals correlate past
    6 / sqrt(paths) (scrambled Sobol points over all 802 dimensions reached 0.3 and more: the white
    noises of some pairs of steps moved together), while the first paths / 128 columns keep the
    Sobol points' balance (a column mean within 1e-3 of 0; independent draws give about 0.02)."""
    paths = 2048
    normals, uniforms = dmft._random_inputs(paths, 400, 0, "sobol")
    assert uniforms.shape == (paths, 400)
    z = (normals - normals.mean(0)) / normals.std(0)
    correlation = np.abs(z.T @ z / paths - np.eye(normals.shape[1]))
    assert correlation.max() < 6 / np.sqrt(paths)
    assert np.abs(normals[:, : paths // dmft.SOBOL_PATHS_PER_DIMENSION].mean(0)).max() < 1e-3


def test_the_dataset_names_its_variables_and_units():
    ds = dmft.solve("door-logistic", alpha=2.0, lr=0.02, epochs=5, overlap0=0.3, paths=500, algorithm="sgd")
    for name in ("overlap_trajectory", "train_loss_trajectory", "test_error_trajectory", "norm_trajectory",
                 "multiplier_trajectory"):
        assert ds[name].dims == ("epoch",) and ds[name].attrs["long_name"] and "units" in ds[name].attrs
    assert np.allclose(ds.norm_trajectory, 1.0)  # on the sphere
    assert 0 < float(ds.test_error_trajectory[0]) < 0.5
