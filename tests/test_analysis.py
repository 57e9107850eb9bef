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

from flatmin.analysis import (
    CONFIDENCE, Estimate, exponent, loglog_slope, mean_with_ci, slope_profile, summarize, trend_towards,
)

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


# ============================================================================ slope_profile, trend_towards
KINKED_LEVELS = np.array([1.0, 2.0, 4.0, 8.0, 16.0])


def kinked_table(rng=None, n=1, sigma=0.0):
    """Mean exactly ``level^-2`` up to level 4 and slope -3 beyond (continuous at 4), ``n`` lognormal
    samples per level."""
    means = np.where(KINKED_LEVELS <= 4, KINKED_LEVELS**-2.0, 4.0**-2.0 * (KINKED_LEVELS / 4) ** -3.0)
    noise = np.ones((len(means), n))
    if rng is not None:
        noise = np.exp(sigma * rng.standard_normal((len(means), n)) - sigma**2 / 2)
    return pd.DataFrame({"eps": np.repeat(KINKED_LEVELS, n), "steps": (means[:, None] * noise).ravel()})


def test_slope_profile_of_a_kinked_power_law_is_exact():
    """Five levels: the halves are the 3 smallest and the 3 largest, sharing the kink at 4."""
    small = slope_profile(kinked_table(), "eps", "steps", toward="small")
    assert small.levels == tuple(KINKED_LEVELS)
    np.testing.assert_allclose(small.local, [-2, -2, -3, -3], atol=1e-12)
    assert small.asymptotic_half == Estimate(pytest.approx(-2.0), pytest.approx(-2.0), pytest.approx(-2.0))
    assert small.other_half.value == pytest.approx(-3.0, abs=1e-12)
    large = slope_profile(kinked_table(), "eps", "steps", toward="large")
    assert (large.asymptotic_half.value, large.other_half.value) == (pytest.approx(-3.0), pytest.approx(-2.0))
    assert small.local_text() == "1→2: -2.00; 2→4: -2.00; 4→8: -3.00; 8→16: -3.00"


def test_slope_profile_halves_of_an_even_count_are_the_end_pairs():
    table = lognormal_table(np.random.default_rng(11), -2.0, n=6)
    profile = slope_profile(table, "eps", "steps", toward="large")
    assert profile.asymptotic_half.value == pytest.approx(profile.local[-1], abs=1e-12)
    assert profile.other_half.value == pytest.approx(profile.local[0], abs=1e-12)


def test_slope_profile_halves_are_within_their_standard_errors_of_the_truth():
    n, sigma, truth = 10, 0.3, -3.0
    profile = slope_profile(lognormal_table(np.random.default_rng(12), truth, n=n, sigma=sigma), "eps", "steps",
                            toward="small")
    se = analytic_slope_se(LEVELS[:2], n, sigma)
    for half in (profile.asymptotic_half, profile.other_half):
        assert abs(half.value - truth) <= 5 * se and half.low <= half.value <= half.high, (half, se)


def test_trend_towards_reads_the_side_the_slope_moves_to():
    """The kink (-2 to -3) is 0.5 / SE ~ 10 standard errors of each half: the halves' intervals are disjoint."""
    table = kinked_table(np.random.default_rng(13), n=20, sigma=0.1)
    assert 5 * analytic_slope_se(KINKED_LEVELS[:3], 20, 0.1) < 0.5
    small = slope_profile(table, "eps", "steps", toward="small")
    large = slope_profile(table, "eps", "steps", toward="large")
    assert trend_towards(small, -2.0) == "towards" and trend_towards(small, -3.0) == "away"
    assert trend_towards(large, -3.0) == "towards" and trend_towards(large, -2.0) == "away"


def test_trend_of_a_pure_power_law_is_no_significant_change():
    table = lognormal_table(np.random.default_rng(14), -3.0, n=10, sigma=0.3)
    assert trend_towards(slope_profile(table, "eps", "steps", toward="small"), -3.0) == "no significant change"


def test_slope_profile_needs_three_levels_and_a_direction():
    table = lognormal_table(np.random.default_rng(15), -2.0, levels=LEVELS[:2], n=4)
    with pytest.raises(ValueError, match=">= 3 distinct 'eps' levels"):
        slope_profile(table, "eps", "steps", toward="small")
    with pytest.raises(ValueError, match="toward must be 'small' or 'large', got 'up'"):
        slope_profile(lognormal_table(np.random.default_rng(15), -2.0, n=4), "eps", "steps", toward="up")


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
