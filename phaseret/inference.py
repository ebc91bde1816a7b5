"""Thresholds with error bars and time to solution: the statistics of SPEC 13
(:mod:`phaseret.analysis` applies them to a study's dataset).

**Thresholds.** At each alpha ``a`` of a sweep, ``k_a`` of ``n_a`` runs succeed, binomial with
``P(a) = F((a - alpha_50) / w)`` (``F`` logistic, or probit). ``alpha_50`` and ``w > 0`` are
fitted by maximum likelihood; their 95% intervals are the profile-likelihood intervals (the
log-likelihood maximized over the other parameter drops by ``chi2_1(0.95) / 2 = 1.92``); an
interval the data cannot close is open (``inf``). Data that cannot pin the curve down give
bounds, never numbers: ``above`` (no success: ``alpha_50`` above the largest alpha run),
``below`` (success everywhere: below the smallest), ``between`` (perfect separation between
adjacent alphas ``a_i < a_j``: ``a_i < alpha_50 < a_j``, width unidentified), ``single`` (an
optimizer run at one alpha only, where some runs succeed: no curve to fit). Diverged runs are
failures, also counted apart.

**Finite size.** ``alpha_50(p) = alpha_inf + c p^-gamma`` for ``gamma = 1`` and ``1/2``, by
weighted least squares (weights from the intervals, ``sigma = (high - low) / 3.92``), each with
its 95% interval for ``alpha_inf`` and its chi-square.

**Time to solution.** The epochs of a successful run are a time to solution; a run that failed
without diverging is right-censored at its cell's budget; a diverged run is excluded and
counted. The survival curve is the Kaplan-Meier estimate (``scipy.stats.ecdf``); its median is
the first time the curve reaches 1/2, and the median's 95% interval runs from where the
pointwise band's lower curve reaches 1/2 to where its upper curve does (``inf`` if never).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

LINKS = ("logistic", "probit")
DROP = scipy.stats.chi2.ppf(0.95, 1) / 2  # 1.92
FORMS = {"1/p": 1.0, "1/sqrt(p)": 0.5}


def _log_link(link: str):
    if link == "logistic":
        return scipy.special.log_expit
    if link == "probit":
        return scipy.stats.norm.logcdf
    raise ValueError(f"link: unknown link {link!r}; expected one of {', '.join(LINKS)}")


@dataclass
class Threshold:
    """A fitted or bounded threshold: ``kind`` is ``fit``, ``above``, ``below`` or ``between``;
    ``alpha_50`` is NaN unless fitted; ``low, high`` its 95% interval or its bounds."""

    kind: str
    alpha_50: float
    low: float
    high: float
    width: float
    width_low: float
    width_high: float


def log_likelihood(alpha_50, log_width, alpha, successes, trials, link: str = "logistic"):
    """The binomial log-likelihood (constants dropped); ``alpha_50``, ``log_width`` broadcast."""
    log_f = _log_link(link)
    z = (alpha - np.asarray(alpha_50)[..., None]) / np.exp(np.asarray(log_width))[..., None]
    return np.sum(successes * log_f(z) + (trials - successes) * log_f(-z), axis=-1)


def fit_threshold(alpha, successes, trials, link: str = "logistic") -> Threshold:
    """The threshold of one sweep: ``alpha`` (A,) ascending, ``successes`` and ``trials`` (A,)
    counts (alphas with no run are dropped)."""
    _log_link(link)
    alpha, k, n = (np.asarray(v, dtype=float) for v in (alpha, successes, trials))
    keep = n > 0
    alpha, k, n = alpha[keep], k[keep], n[keep]
    nan = np.nan
    if len(alpha) == 0:
        raise ValueError("alpha: no runs to fit a threshold to")
    if k.sum() == 0:
        return Threshold("above", nan, alpha[-1], np.inf, nan, nan, nan)
    if (k == n).all():
        return Threshold("below", nan, -np.inf, alpha[0], nan, nan, nan)
    if len(alpha) == 1:  # some but not all succeed at the one alpha run: no curve to fit
        return Threshold("single", nan, nan, nan, nan, nan, nan)
    failing, passing = np.flatnonzero(k == 0), np.flatnonzero(k == n)
    partial = (k > 0) & (k < n)
    if not partial.any() and failing.size and passing.size and failing.max() < passing.min():
        return Threshold("between", nan, alpha[failing.max()], alpha[passing.min()], nan, nan, nan)

    span = alpha[-1] - alpha[0]
    args = (alpha, k, n, link)

    def negative(theta):
        return -log_likelihood(theta[0], theta[1], *args)

    grid_a = np.linspace(alpha[0] - span, alpha[-1] + span, 121)
    grid_w = np.linspace(np.log(span / 1000), np.log(span * 100), 81)
    table = log_likelihood(grid_a[:, None], grid_w[None, :], *args)
    i, j = np.unravel_index(np.argmax(table), table.shape)
    best = scipy.optimize.minimize(negative, [grid_a[i], grid_w[j]], method="Nelder-Mead",
                                   options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    a_hat, w_hat = best.x
    top = -best.fun

    def profile_alpha(a):
        return -scipy.optimize.minimize_scalar(lambda w: -log_likelihood(a, w, *args), bounds=(grid_w[0], grid_w[-1] + 5),
                                               method="bounded", options={"xatol": 1e-10}).fun

    def profile_width(w):
        inner = scipy.optimize.minimize_scalar(lambda a: -log_likelihood(a, w, *args),
                                               bounds=(alpha[0] - 10 * span, alpha[-1] + 10 * span),
                                               method="bounded", options={"xatol": 1e-10})
        return -inner.fun

    low, high = _interval(profile_alpha, a_hat, top, span, reach=10 * span)
    w_low, w_high = _interval(profile_width, w_hat, top, 1.0, reach=12.0)  # in log w
    return Threshold("fit", float(a_hat), low, high, float(np.exp(w_hat)), float(np.exp(w_low)), float(np.exp(w_high)))


def _interval(profile, centre: float, top: float, step: float, reach: float) -> tuple[float, float]:
    """Where ``profile`` falls ``DROP`` below ``top`` on each side of ``centre`` (``-inf`` / ``inf``
    when it does not within ``reach`` of it), searched outwards from ``step / 8`` in doublings."""
    def gap(x):
        return top - profile(x) - DROP

    ends = []
    for direction in (-1, 1):
        inner, distance = centre, step / 8
        while True:
            outer = centre + direction * distance
            if gap(outer) > 0:
                ends.append(scipy.optimize.brentq(gap, min(inner, outer), max(inner, outer), xtol=1e-10))
                break
            if distance >= reach:
                ends.append(direction * np.inf)
                break
            inner, distance = outer, distance * 2
    return float(ends[0]), float(ends[1])


@dataclass
class Survival:
    """A Kaplan-Meier estimate: ``times`` and ``survival`` (the curve's steps), the median and
    its 95% interval (NaN / inf where the curve does not reach 1/2), events and censored counts."""

    times: np.ndarray
    survival: np.ndarray
    median: float
    low: float
    high: float
    events: int
    censored: int


def survival(event_times, censored_times) -> Survival:
    """The Kaplan-Meier survival of times to solution: ``event_times`` of the runs that succeeded,
    ``censored_times`` (right-censored) of those that did not."""
    events, censored = np.asarray(event_times, float), np.asarray(censored_times, float)
    if events.size == 0:
        return Survival(np.array([]), np.array([]), np.nan, np.nan, np.inf, 0, int(censored.size))
    result = scipy.stats.ecdf(scipy.stats.CensoredData(uncensored=events, right=censored))
    with warnings.catch_warnings():  # the band is undefined (NaN) where the curve is 0 or 1: never "reached"
        warnings.filterwarnings("ignore", message="The confidence interval is undefined")
        band = result.sf.confidence_interval(0.95)
    times = result.sf.quantiles

    def reaches_half(values):
        below = np.flatnonzero(values <= 0.5)
        return float(times[below[0]]) if below.size else np.inf

    median = reaches_half(result.sf.probabilities)
    return Survival(times, result.sf.probabilities, median if np.isfinite(median) else np.nan,
                    reaches_half(band.low.probabilities), reaches_half(band.high.probabilities),
                    int(events.size), int(censored.size))


@dataclass
class Extrapolation:
    """``alpha_50(p) = alpha_inf + c p^-gamma`` fitted by weighted least squares."""

    form: str
    alpha_inf: float
    low: float
    high: float
    c: float
    chi2: float
    dof: int

    @property
    def p_value(self) -> float:
        return float(scipy.stats.chi2.sf(self.chi2, self.dof)) if self.dof > 0 else np.nan


def extrapolate(p, alpha_50, low, high) -> list[Extrapolation]:
    """Both finite-size forms of SPEC 13 for thresholds ``alpha_50`` (P,) with 95% intervals
    ``low, high`` at sizes ``p``; needs two sizes or more with finite intervals."""
    p, a, low, high = (np.asarray(v, float) for v in (p, alpha_50, low, high))
    keep = np.isfinite(a) & np.isfinite(low) & np.isfinite(high)
    if keep.sum() < 2:
        raise ValueError("p: a finite-size extrapolation needs fitted thresholds with closed intervals at two sizes or more")
    p, a, sigma = p[keep], a[keep], (high[keep] - low[keep]) / (2 * scipy.stats.norm.ppf(0.975))
    fits = []
    for form, gamma in FORMS.items():
        design = np.stack([np.ones_like(p), p**-gamma], axis=1) / sigma[:, None]
        coef, *_ = np.linalg.lstsq(design, a / sigma, rcond=None)
        covariance = np.linalg.inv(design.T @ design)
        chi2 = float(np.sum(((design @ coef) - a / sigma) ** 2))
        half = scipy.stats.norm.ppf(0.975) * np.sqrt(covariance[0, 0])
        fits.append(Extrapolation(form, float(coef[0]), float(coef[0] - half), float(coef[0] + half), float(coef[1]),
                                  chi2, len(p) - 2))
    return fits


def distinguishable(fits: list[Extrapolation]) -> bool:
    """Whether the data tell the forms apart: one fits (chi-square p > 0.05) and the other does
    not, or both fit but their ``alpha_inf`` intervals do not overlap."""
    good = [f.p_value > 0.05 if f.dof > 0 else True for f in fits]
    if good.count(True) == 1:
        return True
    a, b = fits
    return all(good) and (a.high < b.low or b.high < a.low)
