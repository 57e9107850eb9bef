"""Statistics for the audit: log-log fits with bootstrap confidence intervals, means with errors.

Exponents are fitted on per-level means: for levels ``x_1..x_L`` (e.g. eps values) with independent
samples (seeds) at each level, the statistic is the least-squares slope of ``log(mean_l)`` against
``log(x_l)``. Its confidence interval is scipy's BCa bootstrap resampling the seeds within each level
independently (``scipy.stats.bootstrap`` with one sample per level).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from scipy import stats

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

    A level with a single sample contributes no spread: it keeps its value in every bootstrap
    replicate while the levels with two or more samples are resampled. With every level single the
    interval is the point estimate.
    """
    levels, samples = _samples_by_level(frame, level, value)
    level_means = np.array([s.mean() for s in samples])
    estimate = loglog_slope(levels, level_means)
    resampled_levels = [i for i, s in enumerate(samples) if len(s) >= 2]
    if not resampled_levels:
        return Estimate(estimate, estimate, estimate, confidence)

    def statistic(*resampled, axis=-1):
        resampled_means = np.stack([np.mean(s, axis=axis) for s in resampled], axis=-1)
        means = np.broadcast_to(level_means, resampled_means.shape[:-1] + level_means.shape).copy()
        means[..., resampled_levels] = resampled_means
        logs = np.log(means)
        lx = np.log(levels) - np.log(levels).mean()
        return (logs - logs.mean(axis=-1, keepdims=True)) @ lx / (lx @ lx)

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


def mean_with_ci(values, confidence: float = CONFIDENCE) -> Estimate:
    """Sample mean with a Student-t interval (``values`` finite, at least 2)."""
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
