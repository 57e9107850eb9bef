"""flatmin.analysis: log-log slopes, bootstrap exponents, t-intervals.

Synthetic data only, fixed seeds. Tolerances come from the standard error the data imply (computed
analytically here, independently of the code under test) or from exact arithmetic.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatmin.analysis import CONFIDENCE, Estimate, exponent, loglog_slope, mean_with_ci, summarize

LEVELS = np.array([0.01, 0.02, 0.04, 0.08])


def lognormal_table(rng, exponent_true, levels=LEVELS, n=10, sigma=0.3, scale=5.0):
    """``n`` samples per level with mean exactly ``scale level^exponent_true`` (lognormal noise)."""
    rows = []
    for level in levels:
        noise = np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)  # E = 1
        rows += [{"eps": level, "steps": scale * level**exponent_true * z} for z in noise]
    return pd.DataFrame(rows)


def analytic_slope_se(levels, n, sigma):
    """SE of the LS slope of log(mean_l) on log(level): Var log(mean_l) ~ (e^{sigma^2} - 1) / n."""
    lx = np.log(levels) - np.log(levels).mean()
    return math.sqrt((math.exp(sigma**2) - 1) / n / (lx @ lx))


# ============================================================================ loglog_slope
@pytest.mark.parametrize("power", [-3.0, -2.0, 0.0, 0.5, 3.0])
def test_loglog_slope_exact_on_power_laws(power):
    x = np.array([0.003, 0.01, 0.02, 0.07, 0.5])
    assert loglog_slope(x, 7.3 * x**power) == pytest.approx(power, abs=1e-12)
    assert loglog_slope(x[:2], 0.2 * x[:2] ** power) == pytest.approx(power, abs=1e-12)  # two levels


def test_loglog_slope_is_least_squares_off_a_power_law():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array([1.0, 3.0, 2.0, 9.0])
    lx, ly = np.log(x), np.log(y)
    expected = np.sum((lx - lx.mean()) * (ly - ly.mean())) / np.sum((lx - lx.mean()) ** 2)
    assert loglog_slope(x, y) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "x, y",
    [
        ([0.1, 0.2], [1.0, 0.0]),
        ([0.1, 0.2], [1.0, -2.0]),
        ([0.0, 0.2], [1.0, 2.0]),
        ([-0.1, 0.2], [1.0, 2.0]),
        ([0.1, 0.2], [1.0, np.nan]),
        ([0.1, np.inf], [1.0, 2.0]),
    ],
)
def test_loglog_slope_rejects_non_finite_or_non_positive(x, y):
    with pytest.raises(ValueError, match="finite positive"):
        loglog_slope(x, y)


@pytest.mark.parametrize(
    "x, y",
    [([0.1], [1.0]), ([], []), ([0.1, 0.2], [1.0, 2.0, 3.0]), ([[0.1, 0.2], [0.3, 0.4]], [[1.0, 2.0], [3.0, 4.0]])],
)
def test_loglog_slope_needs_two_matching_levels(x, y):
    with pytest.raises(ValueError, match=">= 2 levels"):
        loglog_slope(x, y)


@pytest.mark.parametrize(
    "x, y, shown", [([2.0, 2.0], [1.0, 3.0], "[2. 2.]"), ([0.1, 0.1, 0.1], [1.0, 2.0, 4.0], "[0.1 0.1 0.1]")]
)
def test_loglog_slope_needs_two_distinct_x(x, y, shown):
    """A vertical cloud has no least-squares slope (polyfit only warns and returns a number)."""
    with pytest.raises(ValueError, match=re.escape(f">= 2 distinct x values, got x={shown}")):
        loglog_slope(x, y)


# ============================================================================ exponent
def test_exponent_recovers_a_known_exponent():
    n, sigma, truth = 10, 0.3, -3.0
    table = lognormal_table(np.random.default_rng(1), truth, n=n, sigma=sigma)
    est = exponent(table, "eps", "steps")
    assert isinstance(est, Estimate) and est.confidence == CONFIDENCE
    se = analytic_slope_se(LEVELS, n, sigma)
    assert abs(est.value - truth) <= 5 * se, (est, se)
    assert est.low <= est.value <= est.high
    # The point estimate is the slope of the per-level means, whatever the bootstrap does.
    means = table.groupby("eps")["steps"].mean()
    assert est.value == pytest.approx(loglog_slope(means.index, means.to_numpy()), abs=1e-12)


def test_exponent_interval_coverage_and_width():
    """Coverage of the 95% BCa interval over 40 synthetic datasets, within 4 binomial SD of 0.95, and
    its width within a factor 2 of the normal-theory width (a huge interval would cover trivially)."""
    datasets, n, sigma, truth = 40, 10, 0.3, -2.0
    rng = np.random.default_rng(2024)
    se = analytic_slope_se(LEVELS, n, sigma)
    covered, widths = 0, []
    for i in range(datasets):
        est = exponent(lognormal_table(rng, truth, n=n, sigma=sigma), "eps", "steps", n_resamples=1000, seed=i)
        covered += est.low <= truth <= est.high
        widths.append(est.high - est.low)
    sd = math.sqrt(datasets * 0.95 * 0.05)
    assert abs(covered - 0.95 * datasets) <= 4 * sd, f"{covered}/{datasets} intervals cover the truth"
    normal_width = 2 * stats.norm.ppf(0.975) * se
    assert 0.5 * normal_width <= np.mean(widths) <= 2 * normal_width, (np.mean(widths), normal_width)


def test_exponent_interval_is_reproducible_from_its_seed():
    table = lognormal_table(np.random.default_rng(3), -2.0, n=6)
    a = exponent(table, "eps", "steps", n_resamples=500, seed=7)
    b = exponent(table, "eps", "steps", n_resamples=500, seed=7)
    assert (a.low, a.high) == (b.low, b.high)


def test_exponent_of_degenerate_samples_is_finite():
    """Every seed equal at each level (e.g. all flat at the same checkpoint): BCa degenerates; the
    interval must still be finite and contain the (exact) estimate."""
    table = pd.DataFrame({"eps": np.repeat(LEVELS, 5), "steps": np.repeat(3.0 * LEVELS**-3.0, 5)})
    est = exponent(table, "eps", "steps", n_resamples=500)
    assert est.value == pytest.approx(-3.0, abs=1e-12)
    assert np.isfinite(est.low) and np.isfinite(est.high)
    # Every resample is the data itself: the interval collapses onto the estimate (up to rounding).
    assert est.low == pytest.approx(est.value, abs=1e-9) and est.high == pytest.approx(est.value, abs=1e-9)


def test_exponent_with_single_samples_is_the_point_estimate():
    table = pd.DataFrame({"dim": [4, 8, 16], "lead": [4.0, 8.0, 16.0]})
    assert exponent(table, "dim", "lead") == Estimate(pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))


def test_exponent_mixes_single_and_multi_sample_levels():
    table = pd.DataFrame({"eps": [0.1, 0.2, 0.4, 0.1, 0.2], "steps": [1.0, 2.0, 3.0, 1.1, 1.9]})
    est = exponent(table, "eps", "steps", n_resamples=500)
    assert est.value == pytest.approx(loglog_slope([0.1, 0.2, 0.4], [1.05, 1.95, 3.0]), abs=1e-12)
    assert est.low < est.value < est.high  # the two resampled levels give a spread


def test_exponent_holds_a_single_sample_level_fixed():
    """A level with one sample gives the same interval as that level with its value repeated (whose
    resamples are all that value). The extra level comes last, so the draws for the others agree."""
    multi = lognormal_table(np.random.default_rng(6), -2.0, levels=LEVELS[:3], n=8)
    single, repeated = (
        pd.concat([multi, pd.DataFrame({"eps": [LEVELS[3]] * k, "steps": [2.0] * k})], ignore_index=True)
        for k in (1, 5)
    )
    a = exponent(single, "eps", "steps", n_resamples=1000, seed=3)
    b = exponent(repeated, "eps", "steps", n_resamples=1000, seed=3)
    assert a.value == pytest.approx(b.value, abs=1e-12)
    assert (a.low, a.high) == (pytest.approx(b.low, abs=1e-9), pytest.approx(b.high, abs=1e-9))
    assert a.low < a.value < a.high


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_exponent_rejects_non_finite_or_non_positive_values_naming_them(bad):
    table = lognormal_table(np.random.default_rng(4), -2.0, n=4)
    table.loc[5, "steps"] = bad  # the level mean stays positive for 0 and -1
    with pytest.raises(ValueError, match=r"'steps'.*\b5\b"):
        exponent(table, "eps", "steps")


@pytest.mark.parametrize("bad", [np.nan, 0.0, -0.02])
def test_exponent_rejects_non_finite_or_non_positive_levels_naming_them(bad):
    table = lognormal_table(np.random.default_rng(5), -2.0, n=4)
    table.loc[table.index[-4:], "eps"] = bad
    with pytest.raises(ValueError, match="'eps'"):
        exponent(table, "eps", "steps")


def test_exponent_needs_two_levels():
    table = pd.DataFrame({"eps": [0.1] * 4, "steps": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=">= 2 distinct 'eps' levels"):
        exponent(table, "eps", "steps")


# ============================================================================ mean_with_ci, summarize
@pytest.mark.parametrize("values, confidence", [([1.0, 2.5, 0.3, 4.0, 2.2], 0.95), ([3.0, 5.0], 0.9),
                                                ([-1.0, 1.0, 2.0], 0.99)])
def test_mean_with_ci_matches_scipy_t_interval(values, confidence):
    est = mean_with_ci(values, confidence)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert est.value == pytest.approx(np.mean(values), rel=1e-14)
    assert (est.low, est.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    assert est.confidence == confidence


@pytest.mark.parametrize("values", [[1.0], [], [1.0, np.nan], [np.inf, 2.0]])
def test_mean_with_ci_rejects_bad_input(values):
    with pytest.raises(ValueError, match=">= 2 finite values"):
        mean_with_ci(values)


def test_summarize_mean_se_count():
    frame = pd.DataFrame({"g": ["a", "a", "a", "b", "b"], "v": [1.0, 2.0, 6.0, 4.0, 4.0]})
    out = summarize(frame, ["g"], "v").set_index("g")
    assert out.loc["a", "mean"] == pytest.approx(3.0)
    assert out.loc["a", "se"] == pytest.approx(stats.sem([1.0, 2.0, 6.0]))
    assert out.loc["b", "se"] == 0.0
    assert out["count"].tolist() == [3, 2]
