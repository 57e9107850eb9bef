"""flatmin.claims: the verdict words (which case holds: interval, tolerance, bound, threshold), the
distance and note of a verdict, and the slope profile of a sweep exponent in the audit and Table 1, on
the synthetic results tables of test_claims.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_claims import SEEDS, SIGMA, complexity_table, slope_se

from flatmin.analysis import Estimate
from flatmin.claims import CONFIRMING, VERDICTS, Claim, evaluate, table1


def claim(kind, expected=1.0, tolerance=0.1):
    return Claim("x", "ref", "statement", "exp", lambda results: Estimate(0, 0, 0), expected, tolerance, kind)


# ============================================================================ Claim.verdict
@pytest.mark.parametrize("kind, contains, within", [
    ("equal", "consistent: interval contains", "consistent: within tolerance"),
    ("attained", "bound attained: interval contains", "bound attained: within tolerance"),
])
def test_verdict_equal_and_attained_say_which_case_holds(kind, contains, within):
    c = claim(kind, expected=1.0, tolerance=0.1)
    assert c.verdict(Estimate(1.5, 0.9, 2.1)) == contains  # far, interval contains 1
    assert c.verdict(Estimate(0.5, 0.0, 1.0)) == contains  # interval edge
    assert c.verdict(Estimate(1.0, 1.0, 1.0)) == contains  # an exact value
    assert c.verdict(Estimate(1.05, 1.04, 1.06)) == within  # close, interval excludes 1
    assert c.verdict(Estimate(0.9, 0.85, 0.95)) == within  # |value - expected| = tolerance
    assert c.verdict(Estimate(1.2, 1.15, 1.25)) == "not confirmed"  # above, interval excludes
    assert c.verdict(Estimate(0.8, 0.75, 0.85)) == "not confirmed"  # below, interval excludes
    assert claim(kind, tolerance=0.0).verdict(Estimate(1.05, 1.04, 1.06)) == "not confirmed"


def test_verdict_notes_print_the_distance_and_the_tolerance():
    c = claim("attained", expected=-1.0, tolerance=0.3)
    assert c.explain(Estimate(-0.83, -0.835, -0.828)) == \
        "distance 0.17 <= tolerance 0.3; 95% interval [-0.835, -0.828]"
    assert c.distance(Estimate(-0.83, -0.835, -0.828)) == pytest.approx(0.17)
    assert c.explain(Estimate(-0.5, -0.6, -0.4)) == "distance 0.5 > tolerance 0.3; 95% interval [-0.6, -0.4]"
    assert c.explain(Estimate(-1.1, -1.2, -0.9)) == ""  # the interval contains: nothing to explain
    assert claim("above", expected=0.0).explain(Estimate(-1.0, -1.0, -1.0)) == ""  # a threshold, no tolerance
    assert claim("above", expected=0.0).distance(Estimate(-1.0, -1.0, -1.0)) == 1.0
    assert claim("below", expected=4.5).distance(Estimate(0.3, 0.3, 0.3)) == 0.0  # on the threshold's side


def test_verdict_at_most():
    c = claim("at_most", expected=-3.0, tolerance=0.3)
    assert c.verdict(Estimate(-4.0, -4.5, -3.5)) == "bound holds"  # well below
    assert c.verdict(Estimate(-2.8, -2.9, -2.7)) == "bound holds: within tolerance"  # above, within tolerance
    assert c.distance(Estimate(-2.8, -2.9, -2.7)) == pytest.approx(0.2) and c.distance(Estimate(-4, -4, -4)) == 0
    assert c.verdict(Estimate(-2.5, -3.5, -1.5)) == "not confirmed"  # the interval does not rescue it
    assert claim("at_most", 1.0, 0.0).verdict(Estimate(1.0, 1.0, 1.0)) == "bound holds"
    assert claim("at_most", 1.0, 0.0).verdict(Estimate(1.01, 1.0, 1.02)) == "not confirmed"


def test_verdict_at_least():
    c = claim("at_least", expected=-3.0, tolerance=0.3)
    assert c.verdict(Estimate(-2.0, -2.5, -1.5)) == "bound holds"  # well above (a faster rate)
    assert c.verdict(Estimate(-3.2, -3.3, -3.1)) == "bound holds: within tolerance"  # below, within tolerance
    assert c.verdict(Estimate(-3.5, -4.0, -2.5)) == "not confirmed"  # the interval does not rescue it
    assert claim("at_least", 1.0, 0.0).verdict(Estimate(1.0, 1.0, 1.0)) == "bound holds"
    assert claim("at_least", 1.0, 0.0).verdict(Estimate(0.99, 0.98, 1.0)) == "not confirmed"


def test_verdict_below():
    c = claim("below", expected=4.5, tolerance=10.0)  # the tolerance plays no part
    assert c.verdict(Estimate(0.3, 0.3, 0.3)) == "threshold met"
    assert c.verdict(Estimate(4.5, 4.5, 4.5)) == "threshold met"
    assert c.verdict(Estimate(4.6, 0.0, 10.0)) == "not confirmed"


def test_verdict_above():
    c = claim("above", expected=0.0)
    assert c.verdict(Estimate(0.1, 0.1, 0.1)) == "threshold met"
    assert c.verdict(Estimate(0.0, 0.0, 0.0)) == "not confirmed"
    assert c.verdict(Estimate(-0.1, -0.1, -0.1)) == "not confirmed"


def test_verdict_above_ignores_the_tolerance():
    c = claim("above", expected=0.0, tolerance=10.0)  # a strict margin; the tolerance plays no part
    assert c.verdict(Estimate(0.01, 0.01, 0.01)) == "threshold met"
    assert c.verdict(Estimate(0.0, -1.0, 1.0)) == "not confirmed"  # zero margin is not a margin
    assert c.verdict(Estimate(-0.5, -1.0, 5.0)) == "not confirmed"


def test_every_verdict_is_in_verdicts_and_confirming_excludes_the_failures():
    others = {"measured: no stated value", "not confirmed", "not run"}
    assert set(CONFIRMING) | others == set(VERDICTS) and len(set(VERDICTS)) == len(VERDICTS)
    assert not others & set(CONFIRMING)


def test_a_measured_claim_states_no_value_and_is_neither_confirmed_nor_refuted():
    c = claim("measured", expected=float("nan"))
    assert c.verdict(Estimate(-2.0, -2.5, -1.5)) == "measured: no stated value"
    assert np.isnan(c.distance(Estimate(-2.0, -2.5, -1.5))) and c.explain(Estimate(-2.0, -2.5, -1.5)) == ""


def test_verdict_unknown_kind_raises():
    with pytest.raises(ValueError, match="unknown claim kind 'roughly'"):
        claim("roughly").verdict(Estimate(1, 1, 1))


# ============================================================================ in the audit
def test_a_verdict_through_the_tolerance_says_so_with_the_distance():
    """A ramp exponent of -2.8 is 0.2 from the bound, ~7 standard errors: the interval excludes -3,
    the tolerance 0.3 admits it."""
    assert 0.2 > 5 * slope_se((0.01, 0.02, 0.04))
    row = evaluate({"complexity": complexity_table(ramp_rs=-2.8)}).set_index("id").loc["theorem1_exponent_ramp"]
    assert row["verdict"] == "bound attained: within tolerance" and not row["low"] <= -3 <= row["high"]
    assert row["distance"] == pytest.approx(abs(row["measured"] + 3))
    assert row["note"] == (f"distance {row['distance']:.3g} <= tolerance 0.3; "
                           f"95% interval [{row['low']:.4g}, {row['high']:.4g}]")


def test_local_slopes_and_the_trend_of_a_kinked_d_sweep():
    """SA's exponent in d is -0.6 on the pairs up to d = 16 and -1 beyond, on d = 4..128 (RS to 32): the
    local slopes read each pair, the asymptotic half (d = 32..128) is -1 and the trend is towards -1;
    the reverse kink moves away. Each local slope's SE is sqrt(2) sigma / sqrt(n) / log 2."""
    kinked = complexity_table(dim_sa=lambda d: -0.6 if d <= 16 else -1.0, sa_only_dims=(64, 128))
    row = evaluate({"complexity": kinked}).set_index("id").loc["theorem2_exponent_d"]
    pairs = [entry.split(": ") for entry in row["local_slopes"].split("; ")]
    assert [pair for pair, _ in pairs] == ["4→8", "8→16", "16→32", "32→64", "64→128"]
    local_se = np.sqrt(2) * SIGMA / np.sqrt(SEEDS) / np.log(2)
    np.testing.assert_allclose([float(s) for _, s in pairs], [-0.6, -0.6, -1.0, -1.0, -1.0], atol=5 * local_se)
    assert row["asymptotic_half"] == pytest.approx(-1.0, abs=5 * slope_se((32, 64, 128)))
    assert row["asymptotic_half_low"] <= row["asymptotic_half"] <= row["asymptotic_half_high"]
    assert row["trend"] == "towards theory"
    reverse = complexity_table(dim_sa=lambda d: -1.0 if d <= 16 else -0.6, sa_only_dims=(64, 128))
    assert evaluate({"complexity": reverse}).set_index("id").loc["theorem2_exponent_d", "trend"] == "away from theory"
    # SA's extra d (no RS there) leave the lead on the d both ran
    audit = evaluate({"complexity": complexity_table(sa_only_dims=(64, 128))}).set_index("id")
    lead = audit.loc["sa_lead_grows_with_d"]
    assert [entry.split(": ")[0] for entry in lead["local_slopes"].split("; ")] == ["4→8", "8→16", "16→32"]
    assert lead["measured"] == pytest.approx(1.0, abs=5 * np.sqrt(2) * slope_se((4, 8, 16, 32)))


def test_trend_of_a_pure_power_law_and_no_profile_for_other_claims():
    audit = evaluate({"complexity": complexity_table(), "identities": pd.DataFrame()}).set_index("id")
    assert audit.loc["theorem2_exponent_d", "trend"] == "no significant change"
    assert audit.loc["theorem1_exponent_ramp", "local_slopes"].count("→") == 2  # three eps levels
    assert audit.loc["theorem1_within_budget", ["local_slopes", "asymptotic_half", "trend"]].isna().all()


def test_table1_prints_the_distance_where_the_tolerance_decides():
    """SA's exponent in d at -0.8: 0.2 from -1, ~7 standard errors, so only the tolerance 0.3 admits it."""
    cell = table1({"complexity": complexity_table(dim_sa=-0.8)}).loc[1, "exponent in d"]
    assert "(bound attained: within tolerance, distance 0.2" in cell and "<= tolerance 0.3)" in cell
    assert cell.endswith("no significant change")  # a pure power law: the halves agree
