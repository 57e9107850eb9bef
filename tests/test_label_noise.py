"""The label_noise experiment (flatmin.experiments.label_noise): its settings, a tiny run end to end, its
claims on synthetic tables, the crossing step, and the hyperbola's time scale against the exact law."""

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from flatmin import experiments
from flatmin.claims import CONTAINS, NOT_CONFIRMED, NOT_RUN, THRESHOLD_MET, evaluate
from flatmin.experiments import label_noise

PAPER = experiments.settings("label_noise")
TINY = {
    **PAPER,
    "problems": [{"label": "hyperbola", "problem": {"name": "hyperbola", "params": {"depth": 2}}, "eta": 0.2,
                  "sigma": 1.0, "steps": 300, "records": 3, "eps": 0.01, "final_gd_steps": 10}],
    "seeds": 2,
    "time_scale": {**PAPER["time_scale"], "step_sizes": [0.2, 0.4], "seeds": 2, "slow_time": 0.6, "records": 50},
}
CLAIMS = {claim.id: claim for claim in label_noise.CLAIMS}


@pytest.mark.parametrize("override, value", [
    ({"time_scale": {**PAPER["time_scale"], "level_fraction": 1.5}}, "1.5"),
    ({"time_scale": {**PAPER["time_scale"], "step_sizes": [0.1, 0.1]}}, r"\[0.1, 0.1\]"),
    ({"time_scale": {**PAPER["time_scale"], "step_sizes": [0.1, -0.2]}}, "-0.2"),
    ({"problems": [{**label_noise._HYPERBOLA, "sigma": -1.0}]}, "-1.0"),
    ({"problems": [label_noise._HYPERBOLA, label_noise._HYPERBOLA]}, "labels must be distinct"),
    ({"problems": [{**label_noise._HYPERBOLA, "sigmaa": 1.0}]}, "sigmaa = 1.0"),
    ({"seeds": 0}, "seeds = 0"),
])
def test_bad_settings_are_refused_naming_the_value(override, value):
    with pytest.raises(ValidationError, match=value):
        experiments.settings("label_noise", overrides=override)


@pytest.mark.parametrize("name, missing", [("factorization", "no predictions, targets"),
                                           ("matrix_sensing", "no flattest_trace")])
def test_a_problem_without_targets_or_flattest_trace_is_refused_before_it_runs(name, missing):
    spec = {**TINY["problems"][0], "problem": {"name": name, "params": {}}}
    with pytest.raises(ValueError, match=f"{name}.*{missing}"):
        label_noise.trajectories(spec, TINY)


@pytest.fixture(scope="module")
def tiny():
    return label_noise.compute(TINY)


def test_a_tiny_run_has_the_documented_columns_and_rows(tiny):
    assert list(tiny.columns) == label_noise.COLUMNS
    trajectory, scale = (tiny[tiny["stage"] == stage] for stage in ("trajectory", "time_scale"))
    assert len(trajectory) == 2 * 2 * 4  # methods x seeds x checkpoints (0, 100, 200, 300)
    assert len(scale) == 2 * 2  # step sizes x seeds
    assert set(trajectory["method"]) == {"label_noise_sgd", "gd"} and set(scale["method"]) == {"label_noise_sgd"}
    np.testing.assert_allclose(sorted(scale["eta_beta"].unique()), [0.2, 0.4])
    assert (trajectory["flattest_trace"] == 2.0).all()
    # the sharp start (2, 1/2) + 1e-3 jitter: trbar(Phi) = sqrt(D^2 + 4) = 4.25
    np.testing.assert_allclose(tiny["start_trbar"], 4.25, atol=1e-2)
    last = trajectory[trajectory["step"] == 300].groupby("method")["trbar_limit"].mean()
    assert abs(last["gd"] - 4.25) < 1e-2 and last["label_noise_sgd"] < 4.0  # GD stays, label noise drifts
    # The levels lie between the flattest trace and the start, and every crossing within the budget.
    level = 2.0 + PAPER["time_scale"]["level_fraction"] * (scale["start_trbar"].iloc[0] - 2.0)
    np.testing.assert_allclose(scale["level"], level)
    assert (scale["steps_to_level"] > 0).all() and (scale["steps_to_level"] <= scale["steps"]).all()


def test_the_same_config_gives_the_same_numbers(tiny):
    pd.testing.assert_frame_equal(label_noise.compute(TINY), tiny)


def test_the_figure_draws_a_panel_per_problem_and_the_time_scale(tiny):
    fig = label_noise.plot(tiny, TINY)
    assert len(fig.axes) == 2 and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_the_crossing_step_is_interpolated_between_checkpoints():
    steps, values = np.array([0.0, 10.0, 20.0, 30.0]), np.array([4.0, 3.0, 2.0, 1.5])
    assert label_noise.crossing_step(steps, values, 2.5) == 15.0
    assert label_noise.crossing_step(steps, values, 4.0) == 0.0
    assert math.isnan(label_noise.crossing_step(steps, values, 1.0))


def _time_scale_table(power: float, etas=(0.001, 0.002, 0.004, 0.008), seeds=8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"stage": "time_scale", "problem": "hyperbola", "problem_name": "hyperbola", "eta": eta,
             "eta_beta": eta * 8.5, "seed": seed,
             "steps_to_level": 0.3 * eta ** power * (1 + 0.01 * rng.standard_normal())}
            for eta in etas for seed in range(seeds)]
    return pd.DataFrame(rows)


def test_the_time_scale_claim_reads_the_exponent_in_eta():
    claim = CLAIMS["label_noise_time_scale_eta"]
    right = claim.measure(_time_scale_table(-2.0))
    assert abs(right.value + 2.0) < 0.02 and right.low < -2.0 < right.high and claim.verdict(right) == CONTAINS
    slow = claim.measure(_time_scale_table(-1.7))
    assert abs(slow.value + 1.7) < 0.02 and claim.verdict(slow) == NOT_CONFIRMED
    profile = claim.measure.profile(_time_scale_table(-2.0))
    assert profile.toward == "small" and len(profile.local) == 3


def test_a_seed_below_no_level_leaves_the_exponent_undefined_and_absent_rows_read_not_run():
    table = _time_scale_table(-2.0)
    table.loc[3, "steps_to_level"] = np.nan
    audit = evaluate({"label_noise": table}, claims=[CLAIMS["label_noise_time_scale_eta"]]).iloc[0]
    assert audit["verdict"] == NOT_CONFIRMED and "0.0085" in audit["note"], audit["note"]
    audit = evaluate({"label_noise": _time_scale_table(-2.0)}, claims=[CLAIMS["label_noise_flattest_hyperbola"]])
    assert audit.iloc[0]["verdict"] == NOT_RUN


def test_the_flattest_claims_read_the_mean_excess_at_the_last_checkpoint():
    excess = np.array([0.01, 0.03, 0.02, 0.04])
    rows = []
    for seed, value in enumerate(excess):
        for step, factor in ((0, 50.0), (100, 1.0)):  # only the last checkpoint counts
            rows.append({"stage": "trajectory", "problem": "net", "problem_name": "diagonal_net",
                         "method": "label_noise_sgd", "seed": seed, "step": step, "flattest_trace": 0.5,
                         "trbar_limit": 0.5 * (1 + factor * value)})
    table = pd.DataFrame(rows)
    claim = CLAIMS["label_noise_flattest_diagonal_net"]
    estimate = claim.measure(table)
    half = 3.182 * excess.std(ddof=1) / 2  # t(0.975, 3) times the standard error
    np.testing.assert_allclose([estimate.value, estimate.low, estimate.high],
                               [0.025, 0.025 - half, 0.025 + half], rtol=1e-3)
    assert claim.verdict(estimate) == THRESHOLD_MET
    table.loc[table["step"] == 100, "trbar_limit"] *= 1.1  # ~ +13% excess
    assert claim.verdict(claim.measure(table)) == NOT_CONFIRMED


def test_the_hyperbola_takes_the_exact_laws_number_of_steps_to_the_level():
    """On the depth-2 hyperbola D = u1^2 - u2^2 shrinks by (1 - 4 eta^2 (r - sigma xi)^2) a step and
    trbar(Phi) = sqrt(D^2 + 4): the level is reached after log(D0 / D_level) / (4 eta^2 sigma^2) steps, up to
    the rate's O(eta beta) correction (about 1.5% at eta beta = 0.05, measured -5% at 0.2) and the seeds'
    spread (~2% each, 4 seeds)."""
    spec = {**PAPER["time_scale"], "step_sizes": [0.05], "seeds": 4, "slow_time": 0.6, "records": 200}
    table = label_noise.time_scale(spec)
    eta, level = table["eta"].iloc[0], table["level"].iloc[0]
    start = table["start_trbar"].iloc[0]
    predicted = math.log(math.sqrt(start**2 - 4) / math.sqrt(level**2 - 4)) / (4 * eta**2)
    assert abs(table["steps_to_level"].mean() / predicted - 1) < 0.05, (table["steps_to_level"].mean(), predicted)


def test_a_step_size_where_a_seed_did_not_cross_is_named_in_the_figure_not_dropped(tiny):
    table = tiny.copy()
    table.loc[table.index[-1], "steps_to_level"] = np.nan
    fig = label_noise.plot(table, TINY)
    texts = [t.get_text() for t in fig.axes[-1].texts]
    assert texts == ["1/2 below the level"]
    assert "no slope" in " ".join(t.get_text() for t in fig.axes[-1].get_legend().get_texts())
