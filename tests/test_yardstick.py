"""The yardstick (flatmin.experiments.yardstick): the equal tuning grid, the choice of a setting, the
ranking, the claims it generates, and a small run end to end."""

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import flatmin
from flatmin import experiments
from flatmin.claims import MEASURED, NOT_CONFIRMED, collect_claims, evaluate
from flatmin.experiments import yardstick
from workflow_support import BOWL_MODULE, QUICK, into, needs_snakemake, only, resolved, snakemake, write_config

PAPER = experiments.settings("yardstick")


def test_every_method_tries_the_same_number_of_settings():
    problem = flatmin.make_problem("hyperbola", depth=2)
    beta = problem.smoothness
    builtin = [m for m in flatmin.list_methods() if type(flatmin.get_method(m)).__module__.startswith("flatmin.methods")]
    sizes = {method: len(yardstick.tuning_grid(method, problem, PAPER)) for method in builtin}
    assert set(sizes.values()) == {9}, sizes
    sam = yardstick.tuning_grid("sam", problem, PAPER)
    assert {(s["eta"] * beta, s["rho"]) for s in sam} == {
        (a, b) for a in (0.1, 0.3, 1.0) for b in (0.01, 0.03, 0.1)}
    gd = [s["eta"] * beta for s in yardstick.tuning_grid("gd", problem, PAPER)]  # no knob: 9 step sizes
    np.testing.assert_allclose(gd, np.geomspace(0.1, 1.0, 9))
    rs = yardstick.tuning_grid("rs", problem, PAPER)
    assert all(s["eta_prime"] == s["eta"] for s in rs)


@pytest.mark.parametrize("override, message", [
    ({"knobs": {"sam": {"rho": [0.1, 0.2]}, "rs": {"rho": [0.1]}}}, "same length"),
    ({"knobs": {"sam": {"rho": [0.1], "batch_size": [1]}}}, "one knob per method"),
    ({"knobs": {"sam": {"sigma": [0.1]}}}, "unknown parameter"),
    ({"fixed": {"sgd": {"batch_size": 0}}}, "batch_size"),
    ({"knobs": {"sam": {"rho": [-1.0]}}}, "rho"),
    ({"problems": [yardstick._PROBLEMS[0], yardstick._PROBLEMS[0]]}, "labels must be distinct"),
    ({"knobs": {}, "methods": ["sam"]}, "needs parameter"),  # rho then has no grid
])
def test_bad_settings_are_refused_with_the_key(override, message):
    with pytest.raises(ValidationError, match=message):
        experiments.settings("yardstick", overrides=override)


def test_every_registered_method_joins_by_default_a_users_too():
    @flatmin.register_method
    class Yardstick_Probe(flatmin.Method):
        name = "yardstick_probe"

        def direction(self, oracle, x, state, key, hyper):
            return flatmin.Step(oracle.grad(x), state)

    assert yardstick.methods_of(PAPER) == flatmin.list_methods() and "yardstick_probe" in yardstick.methods_of(PAPER)
    assert len(yardstick.tuning_grid("yardstick_probe", flatmin.make_problem("hyperbola"), PAPER)) == 9


def test_a_registered_method_whose_knob_has_no_grid_reads_not_run_with_the_reason():
    @flatmin.register_method
    class Yardstick_Knobbed(flatmin.Method):
        name = "yardstick_knobbed"
        params = {"sigma": flatmin.Param("a knob without a default", low=0)}

        def direction(self, oracle, x, state, key, hyper):
            return flatmin.Step(oracle.grad(x), state)

    config = {**PAPER, "problems": [{"name": "hyperbola", "params": {"depth": 2}, "label": "h", "eps": [0.02, 0.04],
                                     "steps": 100}], "methods": None}
    reason = yardstick.not_applicable("yardstick_knobbed", flatmin.make_problem("hyperbola"), config)
    assert reason.startswith("not run: method 'yardstick_knobbed' needs parameter(s) ['sigma']")
    assert "experiments.yardstick.knobs.yardstick_knobbed" in reason
    experiments.settings("yardstick")  # every registered method joins by default: no error at validation


def test_a_method_whose_knob_has_no_grid_names_where_to_give_it():
    with pytest.raises(ValueError, match=r"experiments.yardstick.knobs.label_noise_sgd"):
        yardstick.knob_of("label_noise_sgd", {**PAPER, "knobs": {}})


def _tuning(rows):
    return pd.DataFrame(rows, columns=["setting_index", "flat", "gradient_queries", "trbar_limit_end"])


def test_the_winner_has_the_most_seeds_flat_then_the_fewest_queries():
    table = _tuning([(0, True, 100.0, 1.0), (0, False, np.nan, 2.0),      # half flat, fast
                     (1, True, 900.0, 1.0), (1, True, 800.0, 1.0),         # all flat, slow
                     (2, True, 300.0, 1.0), (2, True, 200.0, 1.0)])        # all flat, faster
    assert yardstick.best_setting(table) == 2
    never = _tuning([(0, False, np.nan, 3.0), (1, False, np.nan, 1.5), (2, False, np.nan, np.nan)])
    assert yardstick.best_setting(never) == 1  # the lowest final trace; a diverged one (NaN) last


def _sweep(method, problem, queries_by_eps, status="ran"):
    rows = []
    for eps, queries in queries_by_eps.items():
        for seed, q in enumerate(queries):
            rows.append({"stage": "sweep", "problem": problem, "method": method, "eps": eps, "seed": seed,
                         "status": status, "setting": "{}", "flat": bool(np.isfinite(q)),
                         "gradient_queries": q, "trbar_limit_end": 1.0, "flattest_trace": 1.0, "dim": 2})
    return rows


def test_the_ranking_puts_fewer_queries_first_and_unflat_seeds_last():
    table = pd.DataFrame(
        _sweep("sam", "p", {0.01: [100, 110, 120, 130], 0.02: [50] * 4})
        + _sweep("gd", "p", {0.01: [np.inf] * 4, 0.02: [np.inf] * 4})
        + _sweep("sgd", "p", {0.01: [20, 30, np.inf, np.inf], 0.02: [10] * 4})
        + _sweep("rs", "p", {0.01: [90, 95, 99, np.inf], 0.02: [40] * 4})
        + [{"stage": "sweep", "problem": "p", "method": "label_noise_sgd", "eps": 0.01, "status":
            "not applicable: needs predictions and targets", "flattest_trace": 1.0}])
    ranked = yardstick.ranking(table)
    assert (ranked["eps"] == 0.01).all()
    labels = [flatmin.get_method(m).label for m in ("rs", "sam", "sgd", "gd", "label_noise_sgd")]
    assert ranked["method"].tolist() == labels
    assert ranked["rank"].tolist() == [1, 2, 3, 4, ""]
    assert ranked["flat"].tolist() == ["3/4", "4/4", "2/4", "0/4", "—"]
    assert ranked.iloc[1]["gradient queries, median [95% CI]"].startswith("115 [")
    assert ranked.iloc[3]["gradient queries, median [95% CI]"] == "not flat for half the seeds"


def test_each_method_and_problem_that_ran_gets_a_measured_exponent():
    eps = [0.01, 0.02, 0.04]
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        _sweep("sam", "p", {e: 5.0 * e ** -2 * np.exp(0.01 * rng.standard_normal(8)) for e in eps})
        + _sweep("gd", "p", {e: [np.inf] * 8 for e in eps})
        + [{"stage": "sweep", "problem": "p", "method": "label_noise_sgd", "eps": 0.01,
            "status": "not applicable: needs predictions and targets"}])
    claims = yardstick.claims_from_results(table)
    assert [c.id for c in claims] == ["yardstick_exponent_sam_p", "yardstick_exponent_gd_p"]
    audit = evaluate({"yardstick": table}, claims=claims).set_index("id")
    assert audit.loc["yardstick_exponent_sam_p", "verdict"] == MEASURED
    assert audit.loc["yardstick_exponent_sam_p", "measured"] == pytest.approx(-2.0, abs=0.02)
    assert audit.loc["yardstick_exponent_sam_p", "low"] < -2.0 < audit.loc["yardstick_exponent_sam_p", "high"] + 0.02
    assert audit.loc["yardstick_exponent_gd_p", "verdict"] == NOT_CONFIRMED  # flat at no eps: no exponent


def test_a_small_yardstick_runs_end_to_end_and_counts_queries():
    config = experiments.settings("yardstick", overrides={
        "problems": [{"name": "hyperbola", "params": {"depth": 2}, "label": "hyperbola", "eps": [0.02, 0.04],
                      "steps": 4000}],
        "methods": ["gd", "sam", "label_noise_sgd"], "step_sizes": [0.3], "seeds": 2, "tuning_seeds": [7, 8],
        "knobs": {"sam": {"rho": [0.1]}, "label_noise_sgd": {"sigma": [1.0]}}, "records": 20})
    table = yardstick.compute(config)
    assert list(table.columns) == yardstick.COLUMNS
    sweep = table[table["stage"] == "sweep"]
    assert set(sweep["method"]) == {"gd", "sam", "label_noise_sgd"} and set(sweep["eps"]) == {0.02, 0.04}
    assert not sweep[sweep["method"] == "gd"]["flat"].any()  # GD does not move along the minima
    sam = sweep[sweep["method"] == "sam"]
    assert sam["flat"].all()
    # full-batch SAM on a one-sample loss: 2 gradients a step, then the 50 GD steps of the flat test
    np.testing.assert_array_equal(sam["gradient_queries"], 2 * sam["first_flat_step"] + config["final_gd_steps"])
    tuning = table[table["stage"] == "tuning"]
    assert set(tuning["seed"]) == {7, 8} and tuning.groupby("method")["chosen"].any().all()
    ranked = yardstick.ranking(table)
    assert ranked[ranked["method"] == "GD"]["flat"].item() == "0/2"
    figure = yardstick.plot(table, config)
    assert figure.axes[0].get_xlabel() == "target accuracy ε" and "gradient queries" in figure.axes[0].get_ylabel()


NOISY_GD = '''
import jax
from jax.flatten_util import ravel_pytree

import flatmin


@flatmin.register_method
class NoisyGD(flatmin.Method):
    """direction = grad f(x) + sigma z, z ~ N(0, I) drawn each step: GD with uncorrelated noise."""

    name, label = "noisy_gd", "GD, uncorrelated noise"
    params = {"sigma": flatmin.Param("noise scale sigma, in gradient units", low=0)}

    def direction(self, oracle, x, state, key, hyper):
        flat, unravel = ravel_pytree(x)
        noise = unravel(jax.random.normal(key, flat.shape, flat.dtype))
        return flatmin.Step(jax.tree.map(lambda g, z: g + hyper["sigma"] * z, oracle.grad(x), noise), state)
'''


@needs_snakemake
@pytest.mark.slow
def test_a_users_method_and_problem_join_the_yardstick_and_the_audit(tmp_path):
    """A method file of the user's own (method_modules) and a problem file (problem_modules): both join
    the yardstick's table, the ranking and the audit's exponents, touching no other file."""
    (tmp_path / "noisy_gd.py").write_text(NOISY_GD)
    (tmp_path / "my_problem.py").write_text(BOWL_MODULE)
    config = into(only(resolved(QUICK), "yardstick"), tmp_path / "out")
    config.update(method_modules=["noisy_gd.py"], problem_modules=["my_problem.py"])
    config["experiments"]["yardstick"] = {
        "enabled": True, "methods": ["gd", "noisy_gd"], "seeds": 2, "tuning_seeds": [5, 6], "records": 10, "step_sizes": [0.3],
        "problems": [{"name": "tmp_bowl", "params": {"scale": 2.0}, "label": "user bowl", "eps": [0.04, 0.08],
                      "steps": 2000}],
        "knobs": {"noisy_gd": {"sigma": [0.5]}}}
    done = snakemake(tmp_path, "--cores", "2", str(tmp_path / "out" / "tables" / "audit.csv"),
                     configfile=write_config(tmp_path, config))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "results" / "quick" / "yardstick.csv")
    assert set(table["method"]) == {"gd", "noisy_gd"} and set(table["problem"]) == {"user bowl"}
    audit = pd.read_csv(tmp_path / "out" / "tables" / "audit.csv").set_index("id")
    row = audit.loc["yardstick_exponent_noisy_gd_user_bowl"]
    assert row["verdict"] in (MEASURED, NOT_CONFIRMED) and row["experiment"] == "yardstick"
    assert "GD, uncorrelated noise" in (tmp_path / "out" / "tables" / "ranking.md").read_text()


def test_the_audit_generates_the_yardsticks_claims_from_its_table():
    table = pd.DataFrame(_sweep("sam", "p", {0.01: [100.0, 120.0], 0.02: [50.0, 60.0]}))
    audit = evaluate({"yardstick": table}).set_index("id")
    assert audit.loc["yardstick_exponent_sam_p", "verdict"] == MEASURED
    assert len(audit) == len(collect_claims()) + 1
