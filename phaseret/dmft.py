"""Dynamical mean-field theory (DMFT) of the single-layer student (d = 1) at p -> infinity.

The training of SPEC 4-5 on data ``X`` (n x p, entries N(0, 1/p), n = alpha p) steps with the
batch gradient ``g(t) = X^T f(t)``, ``f_mu(t) = s_mu(t) dl/dlambda(lambda_mu(t), y_mu)``
(``s_mu(t)`` in {0, 1} the batch membership, SPEC 4). As p -> infinity at fixed alpha the p
coordinates and the n samples decouple into two scalar effective processes, tied by two-time
kernels (the dynamical cavity; discrete time as in Gerbelot, Troiani, Mignacco, Krzakala and
Zdeborova 2022, arXiv 2210.06591; the persistent batch as in Mignacco et al., NeurIPS 2020):

weight side, one coordinate, ``w* ~ N(0, 1)``, ``w(0) = m0 w* + sqrt(1 - m0^2) z``::

    g(t) = xi(t) + alpha sum_{s<=t} R_f(t,s) w(s) + alpha mu_f(t) w*,   xi ~ GP(0, alpha C_f)
    plain:      w_hat = w - lr g
    heavy-ball: v = gamma v + g,  w_hat = w - lr v
    nesterov:   v = gamma v + g,  w_hat = w - lr (g + gamma v)
    w(t+1) = w_hat / r(t+1),  r(t+1)^2 = E[w_hat^2]   (the projection: the sphere's multiplier)

sample side, one sample with teacher pre-activation ``lambda*``::

    lambda(t) = theta(t) + sum_{s<t} R_w(t,s) f(s),   f(t) = s(t) l'(lambda(t), y(lambda*))
    (theta, lambda*) Gaussian: E[theta(t) theta(s)] = C_w(t,s), E[theta(t) lambda*] = m(t), E[lambda*^2] = 1

kernels: ``C_w(t,s) = E[w(t) w(s)]``, ``m(t) = E[w(t) w*]``, ``R_w(t,s) = E[dw(t)/dg(s)]``;
``C_f(t,s) = E[f(t) f(s)]``, ``R_f(t,s) = E[df(t)/dtheta(s)]``, ``mu_f(t) = E[df(t)/dlambda*]``
at fixed theta. ``q = C_w(t,t)`` is 1 on the sphere; the overlap is ``|m| / sqrt(q)``.

How it is solved. In discrete time the equations are causal: the kernels at step t need the
processes up to t only, so they are solved forward in time, exactly, with no fixed-point
iteration. The weight side is linear in its Gaussian inputs, so it is carried exactly as
coefficients on ``(w*, z, xi(0), ..., xi(T-1))``: ``C_w``, ``m`` and ``R_w`` follow without
sampling. The sample side is sampled over ``paths`` samples (randomised quasi-Monte Carlo:
scrambled Sobol points for the first paths / 128 of its Gaussian inputs and batch draws,
independent draws beyond); at each step every path solves for the newest row of its exact
Jacobian ``J(t,s) = dlambda(t)/dtheta(s)``, so ``R_f(t,s) = E[f'(t) J(t,s)]``; and
``mu_f`` comes from Stein's lemma on ``lambda*``: ``E[f(t) lambda*] = mu_f(t) + sum_s R_f(t,s) m(s)``
(exact also for the door's discontinuous labels). Where the target is smooth (phase retrieval,
the linear case) and the update plain, ``E[f(t) lambda*]`` is itself averaged along Stein's direction: each path
carries ``e(t)``, the change of ``lambda(t)`` when ``lambda*`` moves by one and every ``theta(s)``
by ``m(s)``, so that the two large terms of ``mu_f`` cancel path by path instead of in the
average (P-SGD at alpha 4: the overlap's spread over solver seeds at epoch 20 fell from 0.011
to 0.004 at 65,536 paths; with momentum the derivative grows on the tail's nearly unstable
paths and the plain average is the better estimate). ``xi``'s covariance is the paths' own Gram
matrix of ``f``, factored row by row by Gram-Schmidt on the paths' f themselves (positive
semi-definite by construction, and without squaring the Gram matrix's condition number).
The only errors are the sampling's and the time step's (``lr``). ``smoothing`` (opt-in) replaces
the terms of the (path, s) pairs whose Jacobian spiked by finite differences (:data:`SMOOTHING_TRIGGER`):
the pathwise mean of those terms is biased at long lags.

Cost: time O(paths T^3 / 6) for the Jacobians' rows (each a backward solve of the path's
triangular response, ``t^2 / 2`` multiply-adds against the shared coefficients, which stay in
cache) plus O(paths T^2) for the memory terms, ``e`` and the Gram matrix of f; memory about 64
paths T bytes (:func:`solution_bytes`, float64 throughout), checked before any work. No path
stores its Jacobian: until revision 5 each kept its lower triangle (2 paths T^2 bytes in float32)
and every step streamed it from memory: 1.8-3.8 times slower (``benchmarks/dmft.py``), and
rounded to float32. The kernels take paths (and smoothed pairs) in groups, whose sums run side by
side and which read each row of A once (:data:`GROUP`): a whole row's A does not stay in cache.
With ``memory = M`` the rows stop M steps back (``R_f(t, s) = 0`` for ``t - s > M``; the
entries kept are exact, and the teacher's component of the gradient, ``alpha E[f lambda*]``,
stays exact): time O(paths T M^2). It is an approximation (R_f's memory is long: see the
README for measured effects); check it by solving again with a longer window. ``refresh = k``
keeps the tail instead: every k-th step solves the rows whole, and the steps in between stretch
that row's tail (:func:`_stretched_tail`), at time O(paths (T M^2 + T^3 / (6 k))).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr
from numba import njit, parallel_chunksize, prange
from scipy import special
from scipy.stats import qmc
from threadpoolctl import threadpool_limits

from . import __version__
from .data import DEFAULT_K
from .kernels import derivative
from .models import MODELS
from .sizes import available_bytes

ALGORITHMS = ("gd", "sgd", "p-sgd")
UPDATES = ("plain", "heavy-ball", "nesterov")
SAMPLERS = ("sobol", "random")
#: Estimates of the teacher's component of the gradient, ``E[f(t) lambda*]`` (``teacher_estimate``).
TEACHER_ESTIMATES = ("stein", "average", "difference")
#: Sobol points only for the first ``paths // SOBOL_PATHS_PER_DIMENSION`` dimensions of the inputs:
#: beyond about paths / 64 dimensions scrambled Sobol columns pair up (4,096 points in 1,602
#: dimensions: 4,414 pairs of columns correlated past 4.5 / sqrt(paths), up to 0.65, against
#: none past 0.074 for independent draws), so the white noises of some pairs of steps were
#: strongly correlated: P-SGD + heavy-ball at alpha 2.5 escaped early, 0.07 above the runs at
#: epoch 100, and depended on the horizon. Up to paths / 128 the largest correlation is 0.02.
SOBOL_PATHS_PER_DIMENSION = 128
#: scipy's Sobol directions stop at this many dimensions.
SOBOL_DIMENSIONS = 21201
#: A new f(t) whose part outside the span of the earlier ones carries less than this share of its
#: square adds no direction to xi's covariance: near a fixed point f(t) barely changes, and such a
#: part is mostly the sampling's and the rounding's.
PIVOT = 1e-8
#: A path whose |lambda| passes this many sqrt(q) has run away (a Gaussian field reaches 20 of its
#: standard deviations with probability 1e-88): in pr-quadratic with a large step (momentum multiplies it by 1 / (1 - gamma)) the
#: quartic loss makes the rare samples of large |lambda*| unstable, their f grows without bound
#: and soon dominates C_f. The solution stops there (NaN after, ``diverged_epoch``).
DIVERGED = 20.0
#: A step that changes the weights' norm by this factor has run away too (the weight side's
#: rescaling r is 1 + O(lr^2 |g|^2) in a stable run): with momentum and a truncated ``memory`` the
#: weight process itself can blow up; the solution stops there as for a runaway path.
RUNAWAY_RESCALING = 1.5
#: With ``smoothing = h`` a path's term f'(t) J(t, s) of R_f gives way to the centred finite difference
#: of half-width h once h max_{u<=t} |J(u, s)| passes this: past it the path's map theta(s) -> f(t)
#: is no longer linear over +-h. A sample that sits near the top of its loss's barrier (pr-quadratic:
#: |lambda| < y / sqrt(3), where f' < 0) and then falls into one of the wells has a Jacobian that
#: grows about 12% a step while it sits there (GD + heavy-ball, alpha 2.5: one path's term reached
#: 3,000 and moved sum_s R_f(t, s) by 0.1-0.3); the exact mean of those terms comes from
#: paths within exp(-0.12 (t - s)) of the top, which no sample of paths holds at long lags, so the
#: pathwise mean is biased there, by an amount that shrinks only logarithmically with the paths
#: (see the README, Theory). Over +-h the difference takes in every path within h of the top.
SMOOTHING_TRIGGER = 0.1
#: Paths that the Jacobian rows' kernel takes together, so that each row of the weight process's
#: coefficients A is read once for all of them: a whole row (``refresh``, exact memory) reads A's
#: lower triangle, 32 MB at 2,000 steps.
GROUP = 16
#: Finite-difference pairs that run side by side: one pair's sums wait on each addition.
PAIR_GROUP = 64
#: The solution's variables over ``epoch``, with their CF attributes (SPEC 8's trajectory names).
TRAJECTORIES = {
    "overlap_trajectory": {"units": "1", "long_name": "overlap |m| / sqrt(q) with the teacher (DMFT, p -> infinity)"},
    "overlap_trajectory_stderr": {"units": "1", "long_name": "standard error of the DMFT overlap over its replicates "
                                                             "(independent solver inputs; NaN for one)"},
    "magnetization_trajectory": {"units": "1", "long_name": "m = w . w* / p (DMFT)"},
    "norm_trajectory": {"units": "1", "long_name": "q = |w|^2 / p (DMFT)"},
    "multiplier_trajectory": {"units": "1", "long_name": "r = |w_hat| / |w| at the step's end: the projection's "
                                                         "rescaling, 1 without it (DMFT)"},
    "train_loss_trajectory": {"units": "1", "long_name": "training loss per sample (a study's summed loss over n, "
                                                         "divided by n; DMFT)"},
    "train_loss_trajectory_stderr": {"units": "1", "long_name": "standard error of the DMFT training loss over its "
                                                                "replicates (NaN for one)"},
    "train_error_trajectory": {"units": "1", "long_name": "training error (SPEC 3), evaluation activation (DMFT)"},
    "test_error_trajectory": {"units": "1", "long_name": "population test error (SPEC 3) at p -> infinity (DMFT)"},
    "test_error_trajectory_stderr": {"units": "1", "long_name": "standard error of the DMFT population test error "
                                                                "over its replicates, each from its own m and q "
                                                                "(NaN for one)"},
}
#: Each replicate's overlap, training loss and test error over ``replicate`` (its solver seed) and
#: ``epoch``: two solutions of the same seeds draw the same inputs, so their replicates pair (a
#: difference between two optimizers is averaged replicate by replicate, its error bar from the
#: pairs' spread), and their medians stand beside the means (``phaseret compare``).
BY_REPLICATE = {
    "overlap_by_replicate": {"units": "1", "long_name": "overlap |m| / sqrt(q) of each DMFT replicate (solver seed)"},
    "train_loss_by_replicate": {"units": "1", "long_name": "training loss per sample of each DMFT replicate "
                                                           "(solver seed)"},
    "test_error_by_replicate": {"units": "1", "long_name": "population test error of each DMFT replicate (solver "
                                                           "seed), from its own m and q"},
}
#: The solver's revision: raise it with any change that moves the solutions; a study's stored
#: solutions of another revision are solved again (2: E[f lambda*] along Stein's direction, replicates;
#: 3: xi's covariance factored by Gram-Schmidt on the paths' f, not by Cholesky of their Gram matrix;
#: 4: Sobol points for the first paths / 128 dimensions only; 5: the Jacobians' rows solved in float64
#: at each step instead of stored in float32).
REVISION = 5
#: The DMFT's own exact case (a linear student and teacher, the square loss), beside the four models.
LINEAR = "linear"


def solve(model: str = "pr-quadratic", *, alpha: float, lr: float, epochs: int, algorithm: str = "gd",
          update: str = "plain", momentum: float = 0.9, batch_fraction: float = 0.5, tau: float = 2.0,
          overlap0: float = 0.0, projection: bool = True, hidden: int = 1, loss_eps: float = 1e-8,
          K: float = DEFAULT_K, paths: int = 4096, seed: int = 0, sampler: str = "sobol",
          memory: int | None = None, memory_bytes: int | None = None, replicates: int = 1,
          smoothing: float | None = None, refresh: int | None = None, refresh_growth: float | None = None,
          teacher_estimate: str | None = None, stored: dict | None = None, on_replicate=None) -> xr.Dataset:
    """The p -> infinity dynamics of one optimizer at fixed ``alpha``, over ``epochs`` epochs.

    The optimizer keys mean what they mean in a study (SPEC 4-5); ``sgd`` draws Bernoulli
    batches (each sample in with probability ``batch_fraction`` at each step, ``round(1 /
    batch_fraction)`` steps per epoch). ``overlap0`` is the start's overlap with the teacher
    (at p -> infinity a random start has 0, which phase retrieval never leaves; a start at
    finite p has ``|m0|`` about ``1/sqrt(p)``). ``model = "linear"`` is the exact case: a linear
    student and teacher with the square loss. ``sampler``: the sample side's Gaussian inputs,
    ``sobol`` (randomised quasi-Monte Carlo; ``paths`` a power of 2) or ``random``. ``memory``:
    solve each path's Jacobian ``J(t, s)`` for the last ``memory`` steps only (``R_f(t, s) = 0``
    beyond; the teacher's component of the gradient stays exact): time O(paths T memory^2)
    instead of O(paths T^3); None keeps them all (exact). Cutting R_f's tail removes part of
    its drag, so a slow relaxation runs ahead (least squares at alpha 1, memory 200: 0.008
    ahead of the closed form after 400 epochs).
    ``refresh`` (with ``memory``): solve the Jacobians' whole rows every ``refresh`` steps (from step
    ``memory`` on), and between two such rows take R_f's entries beyond the window from the last
    whole row t0, its tail stretched over ``s < t - memory`` (:func:`_stretched_tail`): the tail's drag
    is kept, at most ``refresh`` steps old, at time O(paths (T memory^2 + T^3 / (6 refresh))) and 8
    paths T bytes more.
    ``refresh_growth = g`` (with ``refresh``): the whole rows thin out as time goes on, the next one
    ``max(refresh, floor(g t))`` steps after the one at step t, so that the tail is at most a fraction
    g of the elapsed time old: about ``log(T) / g`` whole rows instead of ``T / refresh``, time
    O(paths (T memory^2 + T^2 / (2 g)))  (T^3 / (6 refresh) was most of the time past 2,000 steps).
    ``memory_bytes``: the memory the solution may take (default: what is available).
    ``replicates``: solve this many times with independent inputs (solver seeds ``seed``,
    ``seed + 1``, ...) and report their mean, with the standard error of the overlap over the
    replicates as ``overlap_trajectory_stderr`` (NaN for one), and so for the training loss and the
    test error (``train_loss_trajectory_stderr``, ``test_error_trajectory_stderr``, the latter over
    each replicate's own test error): the solution's own error bar
    (randomised quasi-Monte Carlo's usual estimate), at ``replicates`` times the time. Each
    replicate's overlap, training loss and test error are kept as ``overlap_by_replicate``,
    ``train_loss_by_replicate`` and ``test_error_by_replicate`` (replicate, epoch): solutions of the
    same seeds, paths and sampler share their inputs, so two optimizers' replicates pair.
    ``smoothing``: None (each path's exact derivative ``J(t, s)``) or the half-width ``h`` of the
    centred finite differences ``(f(t; theta(s) + h) - f(t; theta(s) - h)) / 2h`` that replace a
    path's term of ``R_f(t, s)`` once ``h max |J(u, s)|`` passes :data:`SMOOTHING_TRIGGER` (each
    such pair's process is re-run from s, O(W^2) for it per step; about 1,000 pairs of 16,384
    paths on GD + heavy-ball's plateau; a larger h re-runs more pairs, h = 0.2 most of them): it
    removes the pathwise estimate's bias at long lags, where samples cross their loss's barrier,
    at a bias of its own of O(h^2) on smooth terms.
    ``teacher_estimate``: how ``E[f(t) lambda*]``, the teacher's component of the gradient (and so m's
    drift), is averaged over the paths: ``"stein"``, each path's derivative along Stein's direction
    (a smooth target under the square loss only: pr-quadratic, pr-absolute, linear), or
    ``"average"``, the plain average of ``f lambda*``, or ``"difference"``, the centred finite
    difference along Stein's direction of half-width ``smoothing`` (required): each path is run twice
    more with ``lambda*`` moved by ``+-h`` (its other inputs kept), ``E[(f_+ - f_-) / 2h] = E[f lambda*]
    + O(h^2)`` for any target (Gaussian lambda*), at O(paths T^2) more time and 16 paths T bytes; None:
    Stein's for the plain update without ``smoothing``, else the average
    (:func:`default_teacher_estimate`). On P-SGD's long plateau Stein's pathwise derivative reads below
    the other two, which agree (README, Theory).
    ``stored``: replicates solved before, solver seed -> that replicate's per-epoch arrays (as passed
    to ``on_replicate``); they are taken as they are, not solved again (a long solution resumes).
    ``on_replicate(seed, arrays)``: called after each replicate solved here, with its per-epoch
    arrays (``m``, ``q``, ``norm``, ``train_loss``, ``train_error``, each (epochs + 1,), and
    ``diverged_epoch``, -1 for none); it may raise to stop, keeping what it stored.
    Returns a Dataset over ``epoch``.
    """
    settings = _check(model, alpha, lr, epochs, algorithm, update, momentum, batch_fraction, tau, overlap0,
                      projection, hidden, loss_eps, K, paths, seed, sampler, memory, replicates, smoothing, refresh,
                      refresh_growth, teacher_estimate)
    per_epoch = steps_per_epoch(algorithm, batch_fraction)
    steps = epochs * per_epoch
    needed = solution_bytes(paths, steps, memory, smoothing, refresh, teacher_estimate == "difference")
    available = memory_bytes if memory_bytes is not None else available_bytes()
    if available is not None and needed > available:
        raise ValueError(f"paths, epochs: the DMFT needs about {needed / 2**30:.1f} GiB (paths x steps x 64 bytes, "
                         f"{paths} paths, {steps} steps) but {available / 2**30:.1f} GiB is available; "
                         "lower paths or epochs")
    # BLAS on one thread: its products here are small, and OpenBLAS's idle threads spin for a while
    # after each one, taking the cores from the parallel path kernel that follows (measured: 5.9 s
    # against 2.9 s for 200 GD epochs at 4,096 paths on two cores); its sums then do not depend on
    # the machine's core count either.
    solutions = []
    for seed in range(settings["seed"], settings["seed"] + settings["replicates"]):
        if stored is not None and seed in stored:
            solutions.append(stored[seed])
            continue
        with threadpool_limits(1, user_api="blas"):
            solutions.append(_at_epochs(_forward({**settings, "seed": seed}, steps), per_epoch))
        if on_replicate is not None:
            on_replicate(seed, solutions[-1])
    return _dataset(settings, solutions)


def solution_bytes(paths: int, steps: int, memory: int | None = None, smoothing: float | None = None,
                   refresh: int | None = None, difference: bool = False) -> int:
    """Memory of a solution, float64 throughout: per path its inputs (3 steps), its histories of f,
    f', e and batch membership and its column of the Gram-Schmidt basis (5 steps), and one
    Jacobian row over the window (over every step with ``refresh``); with ``smoothing`` also its
    history of lambda and its Jacobian's largest entries (float32), 12 bytes a step; with
    ``teacher_estimate = "difference"`` the histories of f of its two shifted copies, 16 bytes a step."""
    row = steps if refresh else window(memory, steps)
    return (8 * paths * (8 * steps + row + 5) + (12 * paths * (steps + 1) if smoothing else 0)
            + (16 * paths * steps if difference else 0))


def steps_per_epoch(algorithm: str, batch_fraction: float) -> int:
    """Steps of one epoch: 1 for GD, ``ceil(1/b)`` for P-SGD (SPEC 4), ``round(1/b)`` for Bernoulli SGD."""
    if algorithm == "gd":
        return 1
    return math.ceil(1 / batch_fraction) if algorithm == "p-sgd" else max(1, round(1 / batch_fraction))


def check_numerics(field: str, paths, sampler, memory, replicates, smoothing, refresh, refresh_growth,
                   teacher_estimate) -> None:
    """Refuse, naming ``field + key``, a numerical setting of the solver that means nothing: ``paths``
    and ``replicates`` integers >= 2 and >= 1, ``sampler`` one of :data:`SAMPLERS`,
    ``teacher_estimate`` None or one of :data:`TEACHER_ESTIMATES`, ``memory`` and
    ``refresh`` None or integers >= 1 (``refresh`` only with ``memory``), ``smoothing`` and
    ``refresh_growth`` None or finite numbers > 0 (``refresh_growth`` only with ``refresh``).
    ``field``: ``""`` for :func:`solve`'s arguments, ``"dmft."`` for a study's table."""
    def whole(value, low):
        return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low

    if not whole(paths, 2):
        raise ValueError(f"{field}paths: must be an integer >= 2, got {paths!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"{field}sampler: one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if teacher_estimate is not None and teacher_estimate not in TEACHER_ESTIMATES:
        raise ValueError(f"{field}teacher_estimate: one of {', '.join(TEACHER_ESTIMATES)} or absent, "
                         f"got {teacher_estimate!r}")
    if memory is not None and not whole(memory, 1):
        raise ValueError(f"{field}memory: must be an integer >= 1 (steps of R_f kept) or absent, got {memory!r}")
    if not whole(replicates, 1):
        raise ValueError(f"{field}replicates: must be an integer >= 1 (independent solutions averaged), "
                         f"got {replicates!r}")
    def positive(value):
        return (not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)
                and value > 0)

    if smoothing is not None and not positive(smoothing):
        raise ValueError(f"{field}smoothing: must be a finite number > 0 (the finite differences' half-width) "
                         f"or absent, got {smoothing!r}")
    if refresh is not None:
        if not whole(refresh, 1):
            raise ValueError(f"{field}refresh: must be an integer >= 1 (steps between whole Jacobian rows) "
                             f"or absent, got {refresh!r}")
        if memory is None:
            raise ValueError(f"{field}refresh: needs {field}memory (without a window every row is whole already)")
    if refresh_growth is not None:
        if not positive(refresh_growth):
            raise ValueError(f"{field}refresh_growth: must be a finite number > 0 (the whole rows' spacing as a "
                             f"fraction of the step) or absent, got {refresh_growth!r}")
        if refresh is None:
            raise ValueError(f"{field}refresh_growth: needs {field}refresh (the shortest spacing of whole rows)")
    if teacher_estimate == "difference" and smoothing is None:
        raise ValueError(f"{field}teacher_estimate: 'difference' takes its half-width from {field}smoothing, "
                         "which is absent")


def _check(model, alpha, lr, epochs, algorithm, update, momentum, batch_fraction, tau, overlap0, projection,
           hidden, loss_eps, K, paths, seed, sampler, memory, replicates, smoothing, refresh, refresh_growth,
           teacher_estimate) -> dict:
    """The settings, or a ValueError naming the first key the equations do not cover."""
    check_numerics("", paths, sampler, memory, replicates, smoothing, refresh, refresh_growth, teacher_estimate)
    if model != LINEAR and model not in MODELS:
        raise ValueError(f"model: unknown model {model!r}; the DMFT covers {', '.join(MODELS)} and {LINEAR!r}")
    check_teacher_estimate("", teacher_estimate, model)
    if hidden != 1:
        raise ValueError(f"hidden: the DMFT covers the single-layer student (hidden = 1), got {hidden!r}; "
                         "committees need one effective process per unit")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: the DMFT covers {', '.join(ALGORITHMS)}, got {algorithm!r} (Langevin with "
                         "matched noise and the baselines have no closed effective process here)")
    if update not in UPDATES:
        raise ValueError(f"update: the DMFT covers {', '.join(UPDATES)}, got {update!r} (Adam's per-coordinate "
                         "normalisation is not a linear weight process)")
    for key, value, low in (("alpha", alpha, 0.0), ("lr", lr, 0.0), ("loss_eps", loss_eps, 0.0), ("K", K, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) or value <= low:
            raise ValueError(f"{key}: must be a finite number > {low:g}, got {value!r}")
    for key, value, low in (("epochs", epochs, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key}: must be an integer >= {low}, got {value!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum: must lie in [0, 1), got {momentum!r}")
    if algorithm != "gd" and not 0.0 < batch_fraction <= 1.0:
        raise ValueError(f"batch_fraction: must lie in (0, 1], got {batch_fraction!r}")
    if algorithm == "p-sgd":
        if not tau > 0:
            raise ValueError(f"tau: must be > 0, got {tau!r}")
        flips = (lr / tau, (1 - batch_fraction) * lr / (batch_fraction * tau))
        if max(flips) > 1:
            raise ValueError(f"lr, tau, batch_fraction: the P-SGD flip probabilities {flips[0]:.3g} and {flips[1]:.3g} "
                             "must be <= 1 (SPEC 4)")
    if not -1.0 < overlap0 < 1.0:
        raise ValueError(f"overlap0: must lie in (-1, 1), got {overlap0!r}")
    if model == LINEAR:
        act = evaluation = derivative.LINEAR
        loss, k_hat, door, task = derivative.SQUARED, 0.0, False, LINEAR
    else:
        kind = MODELS[model]
        act, evaluation, loss, task = kind.activation, kind.evaluation, kind.loss, kind.task
        door = task == "symmetric-door"
        k_hat = float(K) if door else 0.0
    return dict(model=model, task=task, alpha=float(alpha), lr=float(lr), epochs=int(epochs), algorithm=algorithm,
                update=update, momentum=float(momentum) if update != "plain" else 0.0,
                batch_fraction=float(batch_fraction) if algorithm != "gd" else 1.0, tau=float(tau),
                overlap0=float(overlap0), projection=bool(projection), loss_eps=float(loss_eps), K=float(K),
                paths=int(paths), seed=int(seed), sampler=sampler, memory=None if memory is None else int(memory),
                replicates=int(replicates), smoothing=None if smoothing is None else float(smoothing),
                refresh=None if refresh is None else int(refresh),
                refresh_growth=None if refresh_growth is None else float(refresh_growth),
                teacher_estimate=teacher_estimate or default_teacher_estimate(model, update, smoothing),
                codes=(act, evaluation, loss, float(loss_eps), k_hat, door))


def _stein_exists(model: str) -> bool:
    """Whether ``model``'s target is smooth under the square loss, so that Stein's direction exists."""
    if model == LINEAR:
        return True
    return MODELS[model].task == "phase-retrieval" and MODELS[model].loss == derivative.SQUARED


def check_teacher_estimate(field: str, teacher_estimate: str | None, model: str) -> None:
    """Refuse ``teacher_estimate = "stein"`` for a model without Stein's direction (the door's sign, the
    logistic loss), naming ``field + "teacher_estimate"``."""
    if teacher_estimate == "stein" and not _stein_exists(model):
        raise ValueError(f"{field}teacher_estimate: 'stein' needs a smooth target under the square loss "
                         f"(pr-quadratic, pr-absolute, linear), not {model!r}; use 'average' or leave it out")


def default_teacher_estimate(model: str, update: str, smoothing: float | None) -> str:
    """The estimate of ``E[f lambda*]`` when none is asked for: ``"stein"`` for the plain update
    without smoothing, where Stein's direction exists, else ``"average"``."""
    return "stein" if _stein_exists(model) and update == "plain" and smoothing is None else "average"


@njit(cache=True)
def _force(act, loss, eps, k_hat, lam, target, member):
    """One path's ``f = s l'(g(lambda) - k_hat; target) g'(lambda)`` (SPEC 2) at pre-activation
    ``lambda``, ``s`` its batch membership: what the re-run copies of a path (shifted ``lambda*``,
    finite differences) need; :func:`_sample_step` forms ``f`` with its derivatives in place."""
    g, g1, _ = derivative.activation(act, lam, eps)
    return member * derivative.loss_terms(loss, g - k_hat, target)[1] * g1


@njit(cache=True, parallel=True)
def _shifted_step(t, theta, m_t, h, member, A, Fs, shifted_targets, act, loss, eps, k_hat):
    """Step ``t`` of each path's two copies with ``lambda*`` moved by ``+h`` and ``-h`` (so every
    ``theta(s)`` by ``+-h m(s)``, the rest of the path's inputs kept): ``lambda_+-(t) = theta(t) +-
    h m(t) + sum_{u<t} R_w(t,u) f_+-(u)``, their ``f`` into ``Fs[0 | 1, :, t]`` (2, paths, T),
    against the targets ``shifted_targets`` (2, paths) of ``lambda* +- h``."""
    for i in prange(theta.shape[0]):
        for k in range(2):
            lam = theta[i] + (h if k == 0 else -h) * m_t
            for u in range(t):
                lam += A[t, 2 + u] * Fs[k, i, u]
            Fs[k, i, t] = _force(act, loss, eps, k_hat, lam, shifted_targets[k, i], member[i, t])


def _targets(task: str, lam_star: np.ndarray, K: float, squared: bool) -> np.ndarray:
    """Targets ``t`` of the teacher's pre-activations (SPEC 1-2): ``|l*|`` (or its square), the door's sign, or ``l*``."""
    if task == LINEAR:
        return lam_star.copy()
    if task == "phase-retrieval":
        y = np.abs(lam_star)
        return y * y if squared else y
    return np.where(np.abs(lam_star) - K >= 0, 1.0, -1.0)


def _target_slopes(task: str, lam_star: np.ndarray, squared: bool) -> np.ndarray:
    """``dt/dlambda*`` of a smooth target (``2 l*``, ``sign(l*)`` or 1): only where Stein's direction
    exists (:func:`_stein_exists`; the door's sign has none)."""
    if task == LINEAR:
        return np.ones_like(lam_star)
    return 2 * lam_star if squared else np.sign(lam_star)


def _random_inputs(paths: int, steps: int, seed: int, sampler: str) -> tuple[np.ndarray, np.ndarray]:
    """The sample process's random inputs: standard normals (paths, steps + 2), the Gaussian
    ``(lambda*, z, white)``, and uniforms (paths, steps) for the batch memberships.
    ``sobol``: scrambled Sobol points for the first ``paths // SOBOL_PATHS_PER_DIMENSION``
    dimensions (randomised quasi-Monte Carlo: its error falls faster than paths^-1/2, and it
    matters: pr-quadratic's drift of ``m`` is a small difference of two large averages,
    ``E[f lambda*]`` and ``sum_s R_f m``), independent draws beyond them (padding); ``random``:
    plain Monte Carlo throughout."""
    dims = 2 * steps + 2
    points = np.random.default_rng(np.random.SeedSequence([seed, 0x4E4F524D])).random((paths, dims))
    sobol_dims = min(dims, paths // SOBOL_PATHS_PER_DIMENSION, SOBOL_DIMENSIONS) if sampler == "sobol" else 0
    if sobol_dims:
        with warnings.catch_warnings():  # any count works; a power of 2 keeps the points' balance
            warnings.filterwarnings("ignore", "The balance properties of Sobol' points", UserWarning)
            sobol = qmc.Sobol(d=sobol_dims, scramble=True, seed=np.random.default_rng([seed, 0x534F424C]))
            points[:, :sobol_dims] = sobol.random(paths)
    normals = special.ndtri(np.clip(points[:, : steps + 2], 2**-60, 1 - 2**-53))
    return normals, points[:, steps + 2 :]


def _memberships(settings: dict, uniforms: np.ndarray) -> np.ndarray:
    """``s(t)`` (paths, steps) in {0, 1} from ``uniforms`` (paths, steps): all ones for GD, fresh
    Bernoulli(b) for SGD, the P-SGD chain (SPEC 4: in with probability b at t = 0, then out -> in
    with probability lr/tau, in -> out with (1-b) lr/(b tau))."""
    b = settings["batch_fraction"]
    if settings["algorithm"] == "gd":
        return np.ones_like(uniforms)
    if settings["algorithm"] == "sgd":
        return (uniforms < b).astype(float)
    come, leave = settings["lr"] / settings["tau"], (1 - b) * settings["lr"] / (b * settings["tau"])
    member = np.empty_like(uniforms)
    inside = uniforms[:, 0] < b if uniforms.shape[1] else np.zeros(0, bool)
    for t in range(uniforms.shape[1]):
        if t:
            inside = np.where(inside, uniforms[:, t] >= leave, uniforms[:, t] < come)
        member[:, t] = inside
    return member


@njit(cache=True, parallel=True)
def _sample_step(t, theta, m_t, member, A, F, Fp, Fe, X, W, Lam, target, target_slope, act, evaluation, loss, eps,
                 k_hat, door):
    """Step ``t`` of every path of the sample process: ``lambda(t) = theta(t) + sum_{u<t} R_w(t,u) f(u)``
    with ``R_w(t, u) = A[t, 2 + u]`` (the weight process's coefficient on the noise of step u), then
    ``f(t)``, ``f'(t)`` (zero outside the batch) into ``F``, ``Fp`` (paths, T), and row ``t`` of the
    path's Jacobian ``J = dlambda/dtheta = (I - K)^-1``, ``K(v, u) = R_w(v, u) f'(u)`` for ``u < v``,
    over the ``W`` latest steps: ``X[i, s - low] = J(t, s)`` for ``low = max(0, t - W) <= s <= t``
    (``X`` paths x (W + 1); every intermediate time of ``J(t, s)`` lies in ``[s, t]``, so the window
    drops only the older entries). The row solves ``x^T (I - K) = e_t^T`` backward in time:
    ``x(t) = 1``, ``x(u) = f'(u) sum_{u<v<=t} x(v) R_w(v, u)``, pushing each finished ``x(v)`` along
    row ``v`` of ``A``, which every path shares: the paths go in groups of :data:`GROUP`, which read
    each row once (no per-path history of J is stored or read; a whole row's A does not stay in
    cache). With a smooth target (``target_slope`` = dt/dlambda*, the square loss) also the
    derivative along Stein's direction, ``e(t) = m(t) + sum_{u<t} R_w(t,u) fe(u)``, ``fe(t) =
    f'(t) e(t) - s(t) g'(lambda(t)) target_slope`` into ``Fe``: the change of ``f(t)`` when ``lambda*``
    moves by one and every ``theta(s)`` by ``m(s)``, whose mean is ``E[f(t) lambda*]`` (Stein's
    lemma). ``lambda(t)`` into ``Lam[:, t]`` unless ``Lam`` has no columns. Returns each path's loss
    and error (evaluation activation) at ``lambda(t)``, and the largest ``|lambda(t)|``."""
    paths = theta.shape[0]
    losses = np.empty(paths)
    errors = np.empty(paths)
    sizes = np.empty(paths)
    low = max(0, t - W)
    for b in prange((paths + GROUP - 1) // GROUP):
        first, last = b * GROUP, min(paths, (b + 1) * GROUP)
        lams = theta[first:last].copy()  # the group's sums side by side: one path's sum waits on each addition
        lams_e = np.full(last - first, m_t)
        for u in range(t):
            a = A[t, 2 + u]
            for i in range(first, last):
                lams[i - first] += a * F[i, u]
            if Fe.shape[1]:
                for i in range(first, last):
                    lams_e[i - first] += a * Fe[i, u]
        for i in range(first, last):
            lam = lams[i - first]
            if Lam.shape[1]:
                Lam[i, t] = lam
            g, g1, g2 = derivative.activation(act, lam, eps)
            l, l1, l2 = derivative.loss_terms(loss, g - k_hat, target[i])
            losses[i] = l
            sizes[i] = abs(lam)
            s_eval = g - k_hat if evaluation == act else derivative.activation(evaluation, lam, eps)[0] - k_hat
            errors[i] = derivative.error_term(door, s_eval, target[i])
            if t < F.shape[1]:
                F[i, t] = member[i, t] * l1 * g1
                Fp[i, t] = member[i, t] * (l2 * g1 * g1 + l1 * g2)
                if Fe.shape[1]:
                    Fe[i, t] = Fp[i, t] * lams_e[i - first] - member[i, t] * l2 * g1 * target_slope[i]
                X[i, : t - low] = 0.0
                X[i, t - low] = 1.0
        if t < F.shape[1]:
            for v in range(t, low - 1, -1):  # x(v) is final once every later step has pushed into it
                k = v - low
                row = A[v, 2 + low : 2 + v]  # R_w(v, low..v-1), read once for the group's paths
                for i in range(first, last):
                    x = X[i]
                    xv = x[k] if v == t else Fp[i, v] * x[k]
                    x[k] = xv
                    if xv != 0.0:
                        for j in range(k):
                            x[j] += xv * row[j]
    return losses, errors, sizes.max()


@njit(cache=True, parallel=True)
def _finite_differences(t, paths, starts, h, Lam, F, member, A, target, act, loss, eps, k_hat):
    """``(f(t; theta(s) + h) - f(t; theta(s) - h)) / 2h`` of each pair ``(paths[k], starts[k])``, every
    other ``theta(u)`` held: the path's process re-run from ``s``, ``lambda(u) = Lam[i, u] + d(u)``,
    ``d(u) = +-h [u = s] + sum_{s<=v<u} R_w(u, v) (f+-(v) - f(v))`` (f of the path's own run in ``F``).
    The pairs go in groups of :data:`PAIR_GROUP` consecutive in order of start, whose sums run side by
    side (the sums of one pair alone wait on each addition) and read each row of A once; a pair adds
    exact zeros before its start, so each sum is the pair's own, term by term."""
    out = np.empty(len(paths))
    order = np.argsort(starts)
    for b in prange((len(paths) + PAIR_GROUP - 1) // PAIR_GROUP):
        group = order[b * PAIR_GROUP : (b + 1) * PAIR_GROUP]
        size, first = len(group), starts[group[0]]
        change = np.zeros((t - first + 1, size))  # f+-(v) - f(v) of each pair at v = first..t; 0 before its s
        d = np.empty(size)
        value = np.zeros(size)
        for sign in (1.0, -1.0):
            for u in range(first, t + 1):
                for g in range(size):
                    d[g] = sign * h if u == starts[group[g]] else 0.0
                for v in range(first, u):  # the group's sums side by side (each in its own order, from its s)
                    a = A[u, 2 + v]
                    for g in range(size):
                        d[g] += a * change[v - first, g]
                for g in range(size):
                    i, s = paths[group[g]], starts[group[g]]
                    if u >= s:
                        force = _force(act, loss, eps, k_hat, Lam[i, u] + d[g], target[i], member[i, u])
                        change[u - first, g] = force - F[i, u]
            for g in range(size):
                value[g] += sign * change[t - first, g]
        for g in range(size):
            out[group[g]] = value[g] / (2 * h)
    return out


@njit(cache=True, parallel=True)
def _grown_pairs(grown, X, low, t, h, trigger):
    """``grown[i, s] = max(grown[i, s], |X[i, s - low]|)`` for ``low <= s <= t`` (float32, as stored),
    and the pairs ``(i, s)``, ``s < t``, with ``grown * h > trigger`` (in float32), path by path."""
    h32, trigger32 = np.float32(h), np.float32(trigger)
    counts = np.zeros(grown.shape[0], np.int64)
    for i in prange(grown.shape[0]):
        for s in range(low, t + 1):
            grown[i, s] = max(np.float64(grown[i, s]), abs(X[i, s - low]))
            if s < t and grown[i, s] * h32 > trigger32:
                counts[i] += 1
    ends = np.cumsum(counts)
    paths, starts = np.empty(ends[-1], np.int64), np.empty(ends[-1], np.int64)
    for i in prange(grown.shape[0]):
        k = ends[i] - counts[i]
        for s in range(low, t):
            if grown[i, s] * h32 > trigger32:
                paths[k], starts[k] = i, s
                k += 1
    return paths, starts


def _smooth_row(t, low, h, R_f, X, Fp, F, Lam, grown, member, A, target, codes) -> None:
    """Row ``t`` of ``R_f``: each (path, s) pair whose Jacobian has grown past ``SMOOTHING_TRIGGER / h``
    since s (``grown``: paths x steps, max over u <= t of ``|J(u, s)|``) trades its term
    ``f'(t) J(t, s) / paths`` for its finite difference of half-width ``h``."""
    paths, starts = _grown_pairs(grown, X, low, t, h, SMOOTHING_TRIGGER)
    if not len(paths):
        return
    act, _, loss, eps, k_hat, _ = codes
    with parallel_chunksize(1):  # one group at a time to each thread: the early starts' groups take longest
        smoothed = _finite_differences(t, paths, starts, h, Lam, F, member, A, target, act, loss, eps, k_hat)
    np.add.at(R_f[t], starts, (smoothed - Fp[paths, t] * X[paths, starts - low]) / len(F))


def _forward(settings: dict, steps: int) -> dict:
    """Solve the DMFT forward in time for ``steps`` steps; returns per-step arrays (steps + 1,)."""
    alpha, lr, gamma = settings["alpha"], settings["lr"], settings["momentum"]
    update, N = settings["update"], settings["paths"]
    act, evaluation, loss, eps, k_hat, door = settings["codes"]
    normals, uniforms = _random_inputs(N, steps, settings["seed"], settings["sampler"])
    lam_star = normals[:, 0]  # the teacher's pre-activation, also the basis variable of w*
    start_noise = normals[:, 1]  # the basis variable of the start's z
    white = normals[:, 2:]  # xi = sqrt(alpha) L white: xi's covariance is alpha C_f
    squared = settings["model"] == "pr-quadratic"
    target = _targets(settings["task"], lam_star, settings["K"], squared)
    # Along Stein's direction by default for the plain update without smoothing (default_teacher_estimate):
    # with momentum's larger effective step the derivative grows on the nearly unstable paths of the
    # tail and is the noisier estimate (P-SGD + heavy-ball, alpha 2, epoch 20, 4 solver seeds:
    # 0.155-0.199 against 0.219-0.228 by the product). The pathwise derivative misses what the
    # Jacobians' spikes carry: on P-SGD's long plateau it reads below both the product and the finite
    # differences along Stein's direction, which agree (README, Theory).
    estimate = settings["teacher_estimate"]
    stein = estimate == "stein"
    slopes = _target_slopes(settings["task"], lam_star, squared) if stein else lam_star[:0]  # empty: no Fe
    member = _memberships(settings, uniforms)

    T = steps
    W = window(settings["memory"], T)
    A = np.zeros((T + 1, T + 2))  # w(t) = A[t] . (w*, z, xi(0), ..., xi(T-1))
    m0 = settings["overlap0"]
    A[0, 0], A[0, 1] = m0, math.sqrt(1 - m0 * m0)
    V = np.zeros(T + 2)  # the velocity's coefficients
    L = np.zeros((T, T))  # C_f = L L^T, row by row: F / sqrt(N) = Q^T L^T (paths' f, orthonormal rows Q)
    Q = np.zeros((T, N))
    R_f = np.zeros((T, T))
    mu_f = np.zeros(T)
    F = np.zeros((N, T))
    Fp = np.zeros((N, T))
    Fe = np.zeros((N, T if stein else 0))
    h = settings["smoothing"]
    difference = estimate == "difference"
    Fs = np.zeros((2, N if difference else 0, T))  # f of each path's copies at lambda* +- h
    shifted_targets = np.stack([_targets(settings["task"], lam_star + sign * h, settings["K"], squared)
                                for sign in (1, -1)]) if difference else np.zeros((2, 0))
    refresh = settings["refresh"]
    X = np.zeros((N, (T if refresh else W) + 1))  # each path's row J(t, t - W..t) (or whole) of the step at hand
    wholes = _whole_rows(T, W, refresh, settings["refresh_growth"]) if refresh else np.zeros(T + 1, bool)
    Lam = np.zeros((N, T + 1 if h else 0))  # each path's lambda(t), for the finite differences
    grown = np.zeros((N, T + 1 if h else 0), np.float32)  # max over u <= t of |J(u, s)|
    norms = np.ones(T + 1)
    out = {k: np.empty(T + 1) for k in ("m", "q", "train_loss", "train_error")}
    for t in range(T + 1):
        xi_part = A[t, 2 : 2 + t] @ L[:t, :t] if t else np.zeros(0)  # theta's noise, on the white basis
        theta = A[t, 0] * lam_star + A[t, 1] * start_noise + math.sqrt(alpha) * (white[:, :t] @ xi_part)
        whole = wholes[t]  # this step's Jacobian row reaches step 0
        if whole:
            last_whole = t
        reach = t if whole else W
        losses, errors, largest = _sample_step(t, theta, A[t, 0], member, A, F, Fp, Fe, X, reach, Lam, target,
                                               slopes, act, evaluation, loss, eps, k_hat, door)
        q_t = A[t, :2] @ A[t, :2] + alpha * xi_part @ xi_part
        if not largest < DIVERGED * math.sqrt(max(q_t, 1.0)):  # a path ran away: nothing past here means anything
            _run_away(out, norms, t)
            break
        out["m"][t] = A[t, 0]
        out["q"][t] = q_t
        out["train_loss"][t], out["train_error"][t] = losses.mean(), errors.mean()
        if t == T:
            break
        # Sample-side kernels at step t.
        f = F[:, t]
        _grow_factor(L, Q, t, f / math.sqrt(N))
        low = max(0, t - reach)
        R_f[t, low : t + 1] = Fp[:, t] @ X[:, : t + 1 - low] / N
        if h:
            _smooth_row(t, low, h, R_f, X, Fp, F, Lam, grown, member, A, target, settings["codes"])
        if refresh and low:
            _stretched_tail(R_f, t, last_whole, W)
            low = 0
        # E[f lambda*]: by finite differences along Stein's direction, or along it on each path (the two
        # terms of mu_f then cancel path by path), else the plain average of f lambda*.
        if difference:
            _shifted_step(t, theta, A[t, 0], h, member, A, Fs, shifted_targets, act, loss, eps, k_hat)
            f_lam_star = (Fs[0, :, t].mean() - Fs[1, :, t].mean()) / (2 * h)
        else:
            f_lam_star = Fe[:, t].mean() if stein else f @ lam_star / N
        mu_f[t] = f_lam_star - R_f[t, low : t + 1] @ A[low : t + 1, 0]
        # Weight side: the gradient's coefficients, the update, the projection.
        G = alpha * (R_f[t, low : t + 1] @ A[low : t + 1])
        G[0] += alpha * mu_f[t]
        G[2 + t] += 1.0
        if update == "plain":
            step = G
        else:
            V = gamma * V + G
            step = V if update == "heavy-ball" else G + gamma * V
        w_hat = A[t] - lr * step
        if settings["projection"]:
            noise = w_hat[2 : 3 + t] @ L[: t + 1, : t + 1]
            norms[t + 1] = math.sqrt(w_hat[:2] @ w_hat[:2] + alpha * noise @ noise)
        if not norms[t + 1] < RUNAWAY_RESCALING:
            _run_away(out, norms, t + 1)
            break
        A[t + 1] = w_hat / norms[t + 1]
    out["norm"] = norms
    return out


def _run_away(out: dict, norms: np.ndarray, step: int) -> None:
    """Mark the solution run away at ``step``: NaN from there in every per-step array."""
    for values in out.values():
        values[step:] = np.nan
    norms[step:] = np.nan
    out["diverged_step"] = step


def _whole_rows(steps: int, W: int, refresh: int, growth: float | None) -> np.ndarray:
    """The steps (a mask over 0..steps) whose Jacobian rows are solved whole: W, then each
    ``max(refresh, floor(growth t))`` steps after the last one t (every ``refresh`` without ``growth``)."""
    marks = np.zeros(steps + 1, bool)
    t = W
    while t <= steps:
        marks[t] = True
        t += max(refresh, int(growth * t)) if growth else refresh
    return marks


def _stretched_tail(R_f: np.ndarray, t: int, t0: int, W: int) -> None:
    """``R_f(t, s)`` beyond the window, ``s < t - W``, from the last whole row ``t0 < t``: its tail
    ``R_f(t0, s')``, ``s' < t0 - W``, stretched linearly over ``s < t - W`` (``s' = s (t0 - W) / (t - W)``,
    interpolated): the oldest entries are held, ``R_f(t, 0) = R_f(t0, 0)``, as where R_f depends on
    s (the start's transient: GD + heavy-ball on pr-quadratic), and those at the window's edge keep
    their lag, ``R_f(t, t - W) = R_f(t0, t0 - W)``, as where it depends on t - s (least squares)."""
    low, edge = t - W, t0 - W
    R_f[t, :low] = np.interp(np.arange(low) * (edge / low), np.arange(edge + 1), R_f[t0, : edge + 1])


def window(memory: int | None, steps: int) -> int:
    """R_f's memory in steps: all of them (exact) unless ``memory`` is smaller."""
    return steps if memory is None else min(memory, steps)


def _grow_factor(L: np.ndarray, Q: np.ndarray, t: int, v: np.ndarray) -> None:
    """Row ``t`` of ``L`` and ``Q`` from the paths' ``v = f(t) / sqrt(paths)``: Gram-Schmidt with one
    reorthogonalisation, ``v = sum_{s<=t} L[t, s] Q[s]`` with orthonormal rows ``Q`` (paths,), so
    ``L L^T`` is the paths' Gram matrix of f, ``C_f``, and positive semi-definite by construction.
    (The Cholesky factor of the Gram matrix itself squares its condition number: near a fixed point,
    where f(t) barely changes, its rows lost their consistency, a pivot went negative and the noise
    blew up, in exact heavy-ball least squares as on phase retrieval's plateau.) A part outside the
    span of the earlier rows of less than ``PIVOT`` of the square adds no direction (``L[t, t] = 0``)."""
    coefficients = Q[:t] @ v
    residual = v - coefficients @ Q[:t]
    again = Q[:t] @ residual
    residual -= again @ Q[:t]
    L[t, :t] = coefficients + again
    size = residual @ residual
    if size > PIVOT * (v @ v):
        L[t, t] = math.sqrt(size)
        Q[t] = residual / L[t, t]


def _population_error(settings: dict, m: np.ndarray, q: np.ndarray, seed: int) -> np.ndarray:
    """Test error at p -> infinity from ``(m, q)``: exact for ``pr-quadratic`` (SPEC 3), else over
    200,000 fresh Gaussian samples ``(lambda, lambda*)`` of covariance ``[[q, m], [m, 1]]``."""
    if settings["model"] == "pr-quadratic":
        return np.maximum(0.0, 0.5 * (3 * q * q - 2 * (q + 2 * m * m) + 3))  # NaN stays NaN
    act, evaluation, _, eps, k_hat, door = settings["codes"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x54455354]))
    u, v = rng.standard_normal((2, 200_000))
    target = _targets(settings["task"], u, settings["K"], False)
    errors = np.empty(m.shape)
    for k, (mk, qk) in enumerate(zip(m, q)):
        if not np.isfinite(mk + qk):  # past a runaway
            errors[k] = np.nan
            continue
        lam = mk * u + math.sqrt(max(qk - mk * mk, 0.0)) * v
        errors[k] = _mean_error(lam, target, evaluation, eps, k_hat, door)
    return errors


@njit(cache=True)
def _mean_error(lam, target, evaluation, eps, k_hat, door):
    total = 0.0
    for i in range(lam.shape[0]):
        total += derivative.error_term(door, derivative.activation(evaluation, lam[i], eps)[0] - k_hat, target[i])
    return total / lam.shape[0]


#: The per-epoch arrays of one replicate (:func:`_at_epochs`), besides its ``diverged_epoch``.
REPLICATE_ARRAYS = ("m", "q", "norm", "train_loss", "train_error")


def _at_epochs(out: dict, per_epoch: int) -> dict:
    """A replicate's per-step arrays (:func:`_forward`) at the epochs' ends, (epochs + 1,) each, and
    the epoch it ran away in (``diverged_epoch``, -1 for none)."""
    at = np.arange(0, len(out["m"]), per_epoch)
    arrays = {key: out[key][at] for key in REPLICATE_ARRAYS}
    return arrays | {"diverged_epoch": out["diverged_step"] // per_epoch if "diverged_step" in out else -1}


def _dataset(settings: dict, solutions: list[dict]) -> xr.Dataset:
    """The replicate ``solutions`` (per-epoch arrays, :func:`_at_epochs`) averaged, as a Dataset over
    ``epoch`` with CF attributes; the standard errors over the replicates of the overlap, the
    training loss and the test error beside them, and each replicate's own over ``replicate``."""
    at = np.arange(len(solutions[0]["m"]))
    mean = {key: np.mean([out[key] for out in solutions], axis=0) for key in REPLICATE_ARRAYS}
    m, q = mean["m"], mean["q"]
    test = _population_error(settings, m, q, settings["seed"])

    def stderr(per_replicate) -> np.ndarray:  # over the replicates (axis 0); NaN for one
        if len(solutions) == 1:
            return np.full(len(at), np.nan)
        return np.asarray(per_replicate).std(axis=0, ddof=1) / math.sqrt(len(solutions))

    overlaps = [np.abs(out["m"]) / np.sqrt(out["q"]) for out in solutions]
    tests = [_population_error(settings, out["m"], out["q"], settings["seed"])  # each replicate's own
             for out in solutions] if len(solutions) > 1 else [test]
    values = {"overlap_trajectory": np.abs(m) / np.sqrt(q), "overlap_trajectory_stderr": stderr(overlaps),
              "magnetization_trajectory": m, "norm_trajectory": q,
              "multiplier_trajectory": mean["norm"], "train_loss_trajectory": mean["train_loss"],
              "train_loss_trajectory_stderr": stderr([out["train_loss"] for out in solutions]),
              "train_error_trajectory": mean["train_error"], "test_error_trajectory": test,
              "test_error_trajectory_stderr": stderr(tests)}
    data = {name: ("epoch", values[name], attrs) for name, attrs in TRAJECTORIES.items()}
    each = {"overlap_by_replicate": overlaps, "train_loss_by_replicate": [out["train_loss"] for out in solutions],
            "test_error_by_replicate": tests}
    data |= {name: (("replicate", "epoch"), np.array(each[name]), attrs) for name, attrs in BY_REPLICATE.items()}
    public = {k: v for k, v in settings.items() if k != "codes"}
    diverged = [out["diverged_epoch"] for out in solutions if out["diverged_epoch"] >= 0]
    attrs = {"title": f"DMFT of {settings['model']} at alpha = {settings['alpha']:g} (p -> infinity)",
             "source": f"phaseret {__version__} (phaseret.dmft.solve)",
             "references": "Gerbelot et al. 2022 (arXiv 2210.06591); Mignacco et al. 2020 (NeurIPS); "
                           "Mignacco, Urbani, Zdeborova 2021",
             "solver": "causal forward solution in discrete time (no fixed-point iteration); weight side exact, "
                       "sample side sampled over `paths` samples",
             "diverged_epoch": min(diverged) if diverged else -1, "revision": REVISION,
             **{k: (int(v) if isinstance(v, bool) else v) for k, v in public.items() if v is not None}}
    seeds = np.arange(settings["seed"], settings["seed"] + len(solutions))
    coords = {"epoch": ("epoch", at, {"units": "epochs", "long_name": "epoch"}),
              "replicate": ("replicate", seeds, {"long_name": "solver seed of the replicate"})}
    return xr.Dataset(data, coords=coords, attrs=attrs)
