"""The implicit-bias experiment (flatmin.experiments.implicit_bias) and its widening valley
(flatmin.problems.widening_valley): settings errors, the problem's closed forms, a tiny compute (columns,
determinism), the figure, and the claims' measures on synthetic tables with known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pydantic
import pytest

import flatmin
from flatmin import experiments
from flatmin.claims import NOT_CONFIRMED, NOT_RUN, THRESHOLD_MET, evaluate
from flatmin.experiments import implicit_bias as ib
from flatmin.problems.widening_valley import widening_limit

# From u = 0 (a sample's curvature 30 there, eta 0.02) 1-SAM reaches the sweep's target in ~300 steps
TINY = {"seeds": 2, "split_start": 0.0, "eta": 0.02, "split_steps": 400, "split_record_every": 100,
        "phi_gd_steps": 20, "rho": 0.2, "rhos": [0.2, 0.28], "sweep_steps": 800, "sweep_record_every": 20,
        "widening": {"m": 2, "start": 2.0, "eta": 0.1, "sigma": 1.0, "steps": 60, "record_every": 20}}


# ============================================================================ the widening valley
def test_widening_valley_trace_and_limit_map_are_its_closed_forms():
    prob = flatmin.make_problem("widening_valley", m=3, start=2.0, noise=0.0)
    x0 = prob.start(jax.random.PRNGKey(0))
    np.testing.assert_allclose(jnp.linalg.norm(x0[:3]), 2.0, rtol=1e-14)
    assert float(prob.loss(x0)) == 0.0
    hess = np.asarray(jax.hessian(prob.loss)(x0))
    np.testing.assert_allclose(np.trace(hess), 4.0, rtol=1e-12)  # tr Hess = ||u||^2 on {v = 0}
    assert prob.smoothness == pytest.approx(np.abs(np.linalg.eigvalsh(hess)).max(), rel=1e-12)
    # Phi keeps ||u||^2 - v^2 and the direction of u, and lands on the minima
    for x in (jnp.array([1.0, 0.5, -0.2, 0.3]), jnp.array([0.1, 0.2, 0.0, -0.9])):
        phi = widening_limit(x, 3)
        assert float(prob.loss(phi)) < 1e-30
        np.testing.assert_allclose(jnp.sum(phi[:3] ** 2) - phi[3] ** 2, jnp.sum(x[:3] ** 2) - x[3] ** 2, rtol=1e-12)
    phi = widening_limit(jnp.array([1.0, 0.5, -0.2, 0.3]), 3)
    np.testing.assert_allclose(phi[:3] / jnp.linalg.norm(phi[:3]), np.array([1.0, 0.5, -0.2]) / np.sqrt(1.29),
                               rtol=1e-12)
    # against the gradient flow itself: many small GD steps from a point near the minima
    x = jnp.array([1.0, 0.5, -0.2, 0.3])
    step = jax.jit(lambda y: y - 1e-3 * jax.grad(prob.loss)(y))
    for _ in range(20000):
        x = step(x)
    np.testing.assert_allclose(x, widening_limit(jnp.array([1.0, 0.5, -0.2, 0.3]), 3), atol=2e-4)


@pytest.mark.parametrize("params, message", [({"m": 0}, "m must be an integer >= 1, got 0"),
                                             ({"start": -1.0}, "start must be a finite number in \\(0.0"),
                                             ({"noise": -1e-3}, "noise must be a finite number")])
def test_widening_valley_names_a_bad_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        flatmin.make_problem("widening_valley", **params)


# ============================================================================ settings
@pytest.mark.parametrize("override, bad", [
    ({"rhos": [0.1]}, "[0.1]"),
    ({"rhos": [0.1, 0.1]}, "[0.1, 0.1]"),
    ({"tolerance_fraction": 1.5}, "1.5"),
    ({"eta": 0.2}, "0.2"),
    ({"widening": {**TINY["widening"], "eta": 0.0}}, "0.0"),
    ({"widening": {"steps": 10}}, "widening.m"),
    ({"seeds": 0}, "0"),
])
def test_a_bad_setting_is_named_with_its_value(override, bad):
    with pytest.raises(pydantic.ValidationError) as error:
        experiments.settings("implicit_bias", overrides=override)
    text = str(error.value)
    assert bad in text or bad.split(".")[-1] in text, text


def test_the_presets_resolve_and_the_quick_one_is_smaller():
    paper, quick = experiments.settings("implicit_bias"), experiments.settings("implicit_bias", "quick")
    assert len(paper["rhos"]) >= 4 and paper["seeds"] == 16 and len(quick["rhos"]) >= 4
    assert quick["split_steps"] < paper["split_steps"] and quick["sweep_steps"] < paper["sweep_steps"]
    assert quick["widening"]["steps"] < paper["widening"]["steps"] and quick["widening"]["m"] == paper["widening"]["m"]
    assert "implicit_bias" in experiments.experiment_names()[-1:]


# ============================================================================ compute
@pytest.fixture(scope="module")
def tiny():
    config = experiments.settings("implicit_bias", overrides=TINY)
    return config, ib.compute(config)


def test_compute_returns_the_documented_columns_and_parts(tiny):
    config, table = tiny
    assert list(table.columns) == list(ib.COLUMNS)
    assert set(table["part"]) == {"split", "rho_sweep", "widening"}
    split = table[table["part"] == "split"]
    assert set(split["method"]) == {"sam_per_sample", "sam"} and split["step"].max() == 400
    final = split[split["step"] == 400]
    assert final["limit_position"].notna().all() and split[split["step"] < 400]["limit_position"].isna().all()
    assert np.allclose(split["u_trace"], 3 / 7) and np.allclose(split["u_top"], 1.0)
    start = split[split["step"] == 0]["position"]
    assert np.all(np.abs(start) < 3e-3)  # the sharp start u = 0, jittered by 1e-3
    sweep = table[table["part"] == "rho_sweep"]
    assert sorted(sweep["rho"].unique()) == [0.2, 0.28] and len(sweep) == 4
    reached = sweep.groupby("rho")["steps_to_target"].mean()
    assert reached.notna().all() and reached[0.28] < reached[0.2] < 800  # a larger rho is faster
    wide = table[table["part"] == "widening"]
    assert set(wide["method"]) == {"gd", "perturbed_gd", "anti_pgd"}
    np.testing.assert_allclose(wide[wide["step"] == 0]["trace_ratio"], 1.0)
    np.testing.assert_allclose(wide[wide["step"] == 0]["trace"], 4.0, rtol=1e-2)  # ||u_0||^2 = start^2
    assert wide["sigma"].isna().eq(wide["method"] == "gd").all()
    fig = ib.plot(table, config)
    assert [ax.get_title()[:3] for ax in fig.axes] == ["(a)", "(b)", "(c)"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)


def test_compute_is_deterministic(tiny):
    config, table = tiny
    pd.testing.assert_frame_equal(ib.compute(config), table)


def test_the_figure_refuses_a_run_that_never_reached_the_target(tiny):
    config, table = tiny
    broken = table.copy()
    broken.loc[broken["part"] == "rho_sweep", "steps_to_target"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ib.plot(broken, config)


# ============================================================================ claims on synthetic tables
def synthetic(one_sam=3 / 7, sam=1.0, exponent=-2.0, anti=0.1, walk=1.2, gd=1.0, seeds=16, seed=0, never=False):
    """A results table with known answers: final u(Phi) per method, steps_to_target = c rho^exponent
    with lognormal noise (sigma 0.05), final trace ratios."""
    rng = np.random.default_rng(seed)
    rows = []
    base = dict(problem="valley_split", eta=0.005, sigma=np.nan, u_trace=3 / 7, u_top=1.0, steps_to_target=np.nan,
                trace=np.nan, trace_ratio=np.nan)
    for method, u in (("sam_per_sample", one_sam), ("sam", sam)):
        for s in range(seeds):
            rows.append({**base, "part": "split", "method": method, "seed": s, "step": 1000, "rho": 0.1,
                         "position": u, "limit_position": u + 0.01 * rng.standard_normal()})
    for rho in (0.05, 0.07, 0.1, 0.14):
        for s in range(seeds):
            steps = 30.0 * rho**exponent * np.exp(0.05 * rng.standard_normal())
            rows.append({**base, "part": "rho_sweep", "method": "sam_per_sample", "seed": s, "step": 30000,
                         "rho": rho, "position": 0.45, "limit_position": np.nan,
                         "steps_to_target": np.nan if never and rho == 0.05 else steps})
    for method, ratio in (("gd", gd), ("perturbed_gd", walk), ("anti_pgd", anti)):
        for s in range(seeds):
            rows.append({**base, "part": "widening", "problem": "widening_valley", "method": method, "seed": s,
                         "step": 2000, "eta": 0.1, "rho": np.nan, "position": np.nan, "limit_position": np.nan,
                         "trace": 4 * ratio, "trace_ratio": ratio * np.exp(0.1 * rng.standard_normal())})
    return pd.DataFrame(rows)[list(ib.COLUMNS)]


def _audit(table):
    return evaluate({"implicit_bias": table}, claims=ib.CLAIMS).set_index("id")


def test_the_claims_confirm_a_table_that_shows_them():
    audit = _audit(synthetic())
    assert (audit["verdict"].iloc[[0, 1, 3, 4, 5]] == THRESHOLD_MET).all(), audit["verdict"]
    assert audit.loc["one_sam_trace_minimizer", "measured"] < 0.05  # the noise alone: |N(0, 0.01)| / (4/7)
    row = audit.loc["one_sam_time_scale_rho"]
    assert row["verdict"].startswith("consistent")
    # slope SE ~ 0.05 / sqrt(16) / sqrt(sum of centred log(rho)^2) ~ 0.02: 5 SE
    assert abs(row["measured"] + 2.0) < 0.1 and row["low"] < row["measured"] < row["high"]


def test_the_claims_refuse_a_table_that_contradicts_them():
    audit = _audit(synthetic(one_sam=1.0, sam=3 / 7, exponent=-1.0, anti=0.9, walk=0.2, gd=0.3))
    assert (audit["verdict"] == NOT_CONFIRMED).all(), audit[["measured", "verdict"]]
    assert audit.loc["one_sam_trace_minimizer", "measured"] == pytest.approx(1.0, abs=0.02)
    assert audit.loc["one_sam_time_scale_rho", "measured"] == pytest.approx(-1.0, abs=0.1)
    assert audit.loc["anti_pgd_leaves_widening_valley", "measured"] == pytest.approx(0.9, rel=0.1)


def test_a_run_that_never_reached_the_target_is_not_confirmed_and_a_missing_part_is_not_run():
    audit = _audit(synthetic(never=True))
    assert audit.loc["one_sam_time_scale_rho", "verdict"] == NOT_CONFIRMED
    assert "never reached the trace minimizer" in audit.loc["one_sam_time_scale_rho", "note"]
    table = synthetic()
    audit = _audit(table[table["part"] != "widening"])
    assert audit.loc["anti_pgd_leaves_widening_valley", "verdict"] == NOT_RUN
    assert audit.loc["one_sam_trace_minimizer", "verdict"] == THRESHOLD_MET
