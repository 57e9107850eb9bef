"""Statistics for the audit: log-log fits with bootstrap confidence intervals, means with errors.

Exponents are fitted on per-level means: for levels ``x_1..x_L`` (e.g. eps values) with independent
samples (seeds) at each level, the statistic is the least-squares slope of ``log(mean_l)`` against
``log(x_l)``. Its confidence interval is scipy's BCa bootstrap resampling the seeds within each level
independently (``scipy.stats.bootstrap`` with one sample per level). A rate is a limit (eps -> 0,
d -> infinity): :func:`slope_profile` gives the slope of each pair of consecutive levels and the
slopes over the two halves of the range, :func:`trend_towards` whether the half nearer the limit is
nearer a target value.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A measured statistic with its confidence interval ``[low, high]`` at ``confidence``."""

    value: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``.

    ``x`` and ``y`` are 1-D, of equal length, finite and positive, with at least 2 distinct ``x``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(f"need 1-D x and y of matching length with >= 2 levels, got shapes {x.shape}, {y.shape}")
    if np.any(~np.isfinite(x) | ~np.isfinite(y) | (x <= 0) | (y <= 0)):
        raise ValueError(f"log-log fit needs finite positive values, got x={x}, y={y}")
    if np.unique(x).size < 2:
        raise ValueError(f"a slope needs >= 2 distinct x values, got x={x}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _samples_by_level(frame: pd.DataFrame, level: str, value: str) -> tuple[np.ndarray, list[np.ndarray]]:
    for column in (level, value):  # a NaN level would be dropped silently by groupby
        data = frame[column].to_numpy(dtype=float)
        bad = frame[~(np.isfinite(data) & (data > 0))]
        if len(bad):
            raise ValueError(f"non-finite or non-positive {column!r} in rows {bad.index.tolist()[:10]} "
                             f"(values {bad[column].tolist()[:10]}): refusing to fit")
    groups = frame.groupby(level)[value]
    levels = np.array(sorted(groups.groups))
    samples = [groups.get_group(lv).to_numpy(dtype=float) for lv in levels]
    if len(levels) < 2:
        raise ValueError(f"need >= 2 distinct {level!r} levels to fit an exponent, got {levels}")
    return levels, samples


def _centred_slope(log_levels: np.ndarray):
    """``log_means (..., L) -> slope (...)``: the least-squares slope against ``log_levels``."""
    lx = log_levels - log_levels.mean()

    def slope(log_means):
        return (log_means - log_means.mean(axis=-1, keepdims=True)) @ lx / (lx @ lx)

    return slope


def _bootstrap(samples: list[np.ndarray], statistic_of_log_means, n_resamples: int, seed: int,
               confidence: float) -> Estimate:
    """``statistic_of_log_means`` (a function of the log per-level means, vectorized over leading axes)
    with a BCa interval resampling the samples within each level independently.

    A level with a single sample contributes no spread: it keeps its value in every replicate while
    the levels with two or more samples are resampled. With every level single the interval is the
    point estimate.
    """
    from scipy import stats  # here rather than at module level: it adds about 0.5 s to every process importing flatmin

    level_means = np.array([s.mean() for s in samples])
    estimate = float(statistic_of_log_means(np.log(level_means)))
    resampled_levels = [i for i, s in enumerate(samples) if len(s) >= 2]
    if not resampled_levels:
        return Estimate(estimate, estimate, estimate, confidence)

    def statistic(*resampled, axis=-1):
        resampled_means = np.stack([np.mean(s, axis=axis) for s in resampled], axis=-1)
        means = np.broadcast_to(level_means, resampled_means.shape[:-1] + level_means.shape).copy()
        means[..., resampled_levels] = resampled_means
        return statistic_of_log_means(np.log(means))

    with warnings.catch_warnings():
        # BCa degenerates on (near-)constant samples, e.g. every seed flat at the same checkpoint;
        # the percentile interval below is then used instead.
        warnings.simplefilter("ignore", (stats.DegenerateDataWarning, RuntimeWarning))
        result = stats.bootstrap(
            tuple(samples[i] for i in resampled_levels),
            statistic,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = np.percentile(result.bootstrap_distribution, [50 * (1 - confidence), 50 * (1 + confidence)])
    return Estimate(estimate, float(low), float(high), confidence)


def exponent(
    frame: pd.DataFrame,
    level: str,
    value: str,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Exponent ``a`` in ``mean(value) ~ level^a``, with a BCa bootstrap interval over samples.

    Args:
      frame: tidy table, one row per sample (e.g. seed), columns ``level`` and ``value``.
      level: column of the abscissa (e.g. ``"eps"``), positive.
      value: column of the measured quantity (e.g. ``"steps"``), positive and finite.

    A level with a single sample keeps its value in every bootstrap replicate (see :func:`_bootstrap`);
    with every level single the interval is the point estimate.
    """
    levels, samples = _samples_by_level(frame, level, value)
    return _bootstrap(samples, _centred_slope(np.log(levels)), n_resamples, seed, confidence)


@dataclasses.dataclass(frozen=True)
class SlopeProfile:
    """How the log-log slope changes across the levels of a sweep.

    Attributes:
      levels: the distinct levels, increasing.
      local: the slope between each pair of consecutive levels (``len(levels) - 1`` values).
      asymptotic_half: the slope fitted over the half of the levels nearest the asymptote (the
        ``ceil(L / 2)`` smallest levels when ``toward == "small"``, the largest when ``"large"``),
        with its bootstrap interval.
      other_half: the same over the other ``ceil(L / 2)`` levels (the middle level is in both halves
        when ``L`` is odd).
      toward: ``"small"`` (the theory's rate is a limit as the level falls, e.g. eps -> 0) or
        ``"large"`` (as it grows, e.g. d -> infinity).
    """

    levels: tuple[float, ...]
    local: tuple[float, ...]
    asymptotic_half: Estimate
    other_half: Estimate
    toward: str

    def local_text(self) -> str:
        return local_slopes_text(self.levels, self.local)


def local_slopes(frame: pd.DataFrame, level: str, value: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct levels (increasing) and the log-log slope of ``mean(value)`` between each pair of
    consecutive levels (the samples as in :func:`exponent`)."""
    levels, samples = _samples_by_level(frame, level, value)
    log_means = np.log([s.mean() for s in samples])
    return levels, np.diff(log_means) / np.diff(np.log(levels))


def local_slopes_text(levels, slopes) -> str:
    """Local slopes as ``"a→b: s; ..."``, one entry per pair of consecutive ``levels``."""
    return "; ".join(f"{a:g}→{b:g}: {s:.2f}" for a, b, s in zip(levels[:-1], levels[1:], slopes))


def slope_profile(
    frame: pd.DataFrame,
    level: str,
    value: str,
    toward: str,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> SlopeProfile:
    """The local slopes and the two half-range slopes of ``mean(value)`` against ``level`` (the
    samples and bootstrap as in :func:`exponent`); needs >= 3 levels, so that the halves differ."""
    if toward not in ("small", "large"):
        raise ValueError(f"toward must be 'small' or 'large', got {toward!r}")
    levels, samples = _samples_by_level(frame, level, value)
    if len(levels) < 3:
        raise ValueError(f"a slope profile needs >= 3 distinct {level!r} levels, got {levels}")
    log_levels = np.log(levels)
    half = -(-len(levels) // 2)
    lower, upper = np.arange(half), np.arange(len(levels) - half, len(levels))
    near, far = (lower, upper) if toward == "small" else (upper, lower)

    def fit(indices):
        slope = _centred_slope(log_levels[indices])
        return _bootstrap([samples[i] for i in indices], slope, n_resamples, seed, confidence)

    return SlopeProfile(tuple(float(x) for x in levels), tuple(local_slopes(frame, level, value)[1]),
                        fit(near), fit(far), toward)


def trend_towards(profile: SlopeProfile, target: float) -> str:
    """Whether the slope approaches ``target`` as the levels approach the asymptote, from the two
    half-range fits: ``"towards"`` when the asymptotic half is nearer ``target`` than the other half
    and their intervals are disjoint, ``"away"`` when it is farther with disjoint intervals, else
    ``"no significant change"``."""
    near, far = profile.asymptotic_half, profile.other_half
    disjoint = near.high < far.low or far.high < near.low
    if not disjoint:
        return "no significant change"
    return "towards" if abs(near.value - target) < abs(far.value - target) else "away"


def mean_with_ci(values, confidence: float = CONFIDENCE) -> Estimate:
    """Sample mean with a Student-t interval (``values`` finite, at least 2)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"need >= 2 finite values, got {values}")
    mean, sem = values.mean(), stats.sem(values)
    half = sem * stats.t.ppf(0.5 + confidence / 2, values.size - 1)
    return Estimate(float(mean), float(mean - half), float(mean + half), confidence)


def summarize(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """Per-group mean, standard error and count of ``value``."""
    grouped = frame.groupby(by)[value]
    return pd.DataFrame({"mean": grouped.mean(), "se": grouped.sem(), "count": grouped.count()}).reset_index()
