"""flatmin.claims: the claims collected from the experiments, evaluate(), table1() on synthetic results
tables (the verdict words and the slope profiles: test_verdicts.py).

The synthetic tables follow the documented results schemas of the experiments (complexity, decrease)
with known exponents and small lognormal noise (fixed seeds), so the expected verdicts are known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flatmin.analysis import Estimate
from flatmin import experiments
from flatmin.claims import CONFIRMING, Claim, NotRun, claim_ids, collect_claims, evaluate, select, table1

EVALUATE_COLUMNS = ["id", "reference", "statement", "experiment", "measured", "low", "high", "expected",
                    "tolerance", "distance", "verdict", "note", "local_slopes", "asymptotic_half",
                    "asymptotic_half_low", "asymptotic_half_high", "trend"]
ATTAINED = ("bound attained: interval contains", "bound attained: within tolerance")
CLAIMS = collect_claims()
EXPERIMENTS = {claim.experiment for claim in CLAIMS}


def test_every_registered_claim_has_a_known_kind_and_a_registered_experiment():
    for c in CLAIMS:
        value = c.expected + 1 if c.kind == "above" else c.expected  # "above" is a strict margin
        assert c.verdict(Estimate(value, value, value)) in CONFIRMING
        assert c.experiment in experiments.experiment_names()


# ============================================================================ collect_claims
def test_claims_are_collected_from_the_experiments_in_their_order():
    import importlib

    modules = [importlib.import_module(f"flatmin.experiments.{name}") for name in experiments.experiment_names()]
    assert CLAIMS == tuple(claim for module in modules for claim in getattr(module, "CLAIMS", ()))
    assert len(CLAIMS) == 57 and len(set(claim_ids())) == 57
    for module in modules:  # each module holds the claims on its own results table
        name = module.__name__.rsplit(".", 1)[1]
        if not hasattr(module, "CLAIMS"):  # its claims come from its table (claims_from_results)
            assert hasattr(module, "claims_from_results"), module
            continue
        assert module.CLAIMS and {claim.experiment for claim in module.CLAIMS} == {name}
    assert collect_claims(["complexity", "decrease"]) == modules[2].CLAIMS + modules[1].CLAIMS
    assert collect_claims([modules[0]]) == modules[0].CLAIMS


def test_importing_the_claims_imports_no_experiment():
    import subprocess
    import sys

    code = "import sys, flatmin.claims; print(sorted(m for m in sys.modules if m.startswith('flatmin.experiments')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ============================================================================ synthetic results
SIGMA, SEEDS = 0.05, 8  # lognormal noise of the synthetic samples, samples per level


def _lognormal(rng, n, sigma=SIGMA):
    return np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)


def slope_se(levels, sigma=SIGMA, n=SEEDS):
    """SE of the LS slope of log(level mean) on log(level) when each log-mean has SD ~ sigma / sqrt(n)."""
    lx = np.log(levels) - np.mean(np.log(levels))
    return sigma / np.sqrt(n) / np.sqrt(lx @ lx)


def step_cost(algorithm, eps, dim):
    """Synthetic gradient queries per step: a whole-loss gradient of n = d samples, times 1.5 for RS
    (half its steps perturbed, 2n each) and 1.1 for SA."""
    return (1.5 if algorithm == "rs" else 1.1) * dim


def complexity_table(ramp_rs=-3.0, bowl_rs=-2.0, ramp_sa=-2.0, dim_sa=-1.0, dim_rs=0.0, net_rs=-2.0, net_sa=-1.0,
                     seeds=SEEDS, seed=0, sigma=SIGMA, sa_only_dims=(), cost=step_cost):
    """Schema of flatmin.experiments.complexity: first_flat_step = C level^exponent x lognormal noise
    (``dim_sa`` a number, or a function of d giving SA's local exponent on the dim sweep's pairs) and
    gradient_queries = first_flat_step x ``cost(algorithm, eps, dim)``; the query exponents are those of
    the steps in eps, one more in d."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(sweep, instance, algorithm, eps, dim, steps):
        for s, z in enumerate(_lognormal(rng, seeds, sigma)):
            rows.append({"seed": s, "algorithm": algorithm, "eps": eps, "dim": dim, "budget": 10 * steps,
                         "first_flat_step": steps * z, "gradient_queries": steps * z * cost(algorithm, eps, dim),
                         "flat_fraction": 0.5, "trbar_limit_start": 2.0, "trbar_limit_end": 1.0,
                         "flattest_trace": 1.0, "sweep": sweep, "instance": instance})

    for eps in (0.01, 0.02, 0.04):
        add("eps", "ramp", "rs", eps, 8, 3.0 * eps**ramp_rs)
        add("eps", "bowl", "rs", eps, 8, 5.0 * eps**bowl_rs)
        add("eps", "diagonal_net", "rs", eps, 60, 7.0 * eps**net_rs)
    for eps in (0.002, 0.004, 0.008):
        add("eps", "ramp", "sa", eps, 8, 2.0 * eps**ramp_sa)
    for eps in (0.04, 0.056, 0.08):
        add("eps", "diagonal_net", "sa", eps, 60, 3.0 * eps**net_sa)
    dims = (4, 8, 16, 32, *sa_only_dims)  # each twice the one before
    local = [dim_sa(dim) if callable(dim_sa) else dim_sa for dim in dims[1:]]
    sa_steps = 1e4 * 4.0 ** (-1.0 if callable(dim_sa) else dim_sa) * np.cumprod([1.0] + [2.0**a for a in local])
    for dim, steps in zip(dims, sa_steps):
        add("dim", "ramp", "sa", 0.02, dim, steps)
        if dim not in sa_only_dims:
            add("dim", "ramp", "rs", 0.02, dim, 1e5 * dim**dim_rs)
    return pd.DataFrame(rows)


def decrease_table(rs_eps=3.0, rs_dim=0.0, sa_eps=2.0, sa_dim=1.0, seeds=SEEDS, seed=1):
    """Schema of flatmin.experiments.decrease: decrease_per_perturbed_step = C level^exponent x noise."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(sweep, algorithm, eps, dim, value):
        for s, z in enumerate(_lognormal(rng, seeds)):
            rows.append({"seed": s, "algorithm": algorithm, "eps": eps, "dim": dim, "window": 100,
                         "decrease_per_step": 0.7 * value * z, "decrease_per_perturbed_step": value * z,
                         "tangent_grad_norm_start": 0.3, "tangent_grad_norm_end": 0.3,
                         "perturbed_fraction": 0.7, "bound": 1.0, "sweep": sweep})

    for eps in (0.01, 0.02, 0.04):
        add("eps", "rs", eps, 8, 2.0 * eps**rs_eps)
    for eps in (0.002, 0.004, 0.008):
        add("eps", "sa", eps, 8, 3.0 * eps**sa_eps)
    for dim in (8, 16, 32, 64):
        add("dim", "rs", 0.02, dim, 1e-5 * dim**rs_dim)
        add("dim", "sa", 0.002, dim, 1e-6 * dim**sa_dim)
    return pd.DataFrame(rows)


def verdicts(audit):
    return audit.set_index("id")["verdict"]


# ============================================================================ evaluate
def test_evaluate_nothing_run():
    audit = evaluate({})
    assert list(audit.columns) == EVALUATE_COLUMNS
    assert audit["id"].tolist() == claim_ids() and audit["id"].is_unique
    assert len(audit) == len(CLAIMS)
    assert (audit["verdict"] == "not run").all()
    assert audit["measured"].isna().all()
    assert (audit["note"] == "experiment '" + audit["experiment"] + "' did not run").all()


def test_evaluate_synthetic_complexity_verdicts():
    audit = evaluate({"complexity": complexity_table()})
    assert list(audit.columns) == EVALUATE_COLUMNS and audit["id"].tolist() == claim_ids()
    got = verdicts(audit)
    expected = {  # the synthetic exponents equal the theory's (or respect the bounds)
        "theorem1_within_budget": ("bound holds",),
        "theorem1_exponent_ramp": ATTAINED,
        "theorem1_exponent_bowl": ("bound holds",),
        "theorem1_exponent_diagonal_net": ("bound holds",),
        "theorem2_within_budget": ("bound holds",),
        "theorem2_exponent_ramp": ATTAINED,
        "theorem2_exponent_diagonal_net": ("bound holds",),
        "theorem2_exponent_d": ATTAINED,
        "sa_lead_grows_with_d": ("consistent: interval contains", "consistent: within tolerance"),
        "theorem1_queries_exponent_ramp": ATTAINED,
        "theorem1_queries_exponent_bowl": ("bound holds",),
        "theorem1_queries_exponent_diagonal_net": ("bound holds",),
        "theorem2_queries_exponent_ramp": ATTAINED,
        "theorem2_queries_exponent_diagonal_net": ("bound holds",),
        "theorem2_queries_exponent_d": ATTAINED,
        "sa_lead_in_queries_grows_with_d": ("consistent: interval contains", "consistent: within tolerance"),
    }
    for claim_id, verdict in expected.items():
        assert got[claim_id] in verdict, audit.set_index("id").loc[claim_id].to_dict()
    others = audit[~audit["id"].isin(expected)]
    assert set(others["experiment"]) == EXPERIMENTS - {"complexity"} and (others["verdict"] == "not run").all()
    measured = audit.set_index("id")["measured"]
    se_eps, se_dim = slope_se((0.01, 0.02, 0.04)), slope_se((4, 8, 16, 32))
    assert measured["theorem1_exponent_ramp"] == pytest.approx(-3.0, abs=5 * se_eps)
    assert measured["theorem1_exponent_bowl"] == pytest.approx(-2.0, abs=5 * se_eps)
    assert measured["theorem1_exponent_diagonal_net"] == pytest.approx(-2.0, abs=5 * se_eps)
    assert measured["theorem2_exponent_diagonal_net"] == pytest.approx(-1.0, abs=5 * slope_se((0.04, 0.056, 0.08)))
    assert measured["theorem2_exponent_ramp"] == pytest.approx(-2.0, abs=5 * se_eps)
    assert measured["theorem2_exponent_d"] == pytest.approx(-1.0, abs=5 * se_dim)
    assert measured["sa_lead_grows_with_d"] == pytest.approx(1.0, abs=5 * np.sqrt(2) * se_dim)  # a ratio
    assert measured["theorem1_within_budget"] == 1.0
    # a constant cost per step in eps: the same exponents in gradient queries (the same noise draws, so
    # equal to rounding); n = d samples per step: one more in d, and the lead's cost ratio is constant
    for step_id, query_id in (("theorem1_exponent_ramp", "theorem1_queries_exponent_ramp"),
                              ("theorem1_exponent_bowl", "theorem1_queries_exponent_bowl"),
                              ("theorem2_exponent_diagonal_net", "theorem2_queries_exponent_diagonal_net"),
                              ("sa_lead_grows_with_d", "sa_lead_in_queries_grows_with_d")):
        assert measured[query_id] == pytest.approx(measured[step_id], abs=1e-9), query_id
    assert measured["theorem2_queries_exponent_d"] == pytest.approx(measured["theorem2_exponent_d"] + 1.0, abs=1e-9)
    row = audit.set_index("id").loc["theorem1_exponent_ramp"]
    assert row["low"] <= row["measured"] <= row["high"] and row["high"] - row["low"] < 0.2


@pytest.mark.parametrize(
    "params, claim_id",
    [
        ({"ramp_rs": -4.0}, "theorem1_exponent_ramp"),  # a rate worse than the bound
        ({"ramp_rs": -2.0}, "theorem1_exponent_ramp"),  # the bound not attained on the ramp
        ({"bowl_rs": -4.0}, "theorem1_exponent_bowl"),  # the bound violated on the bowl
        ({"net_rs": -4.0}, "theorem1_exponent_diagonal_net"),
        ({"ramp_sa": -3.0}, "theorem2_exponent_ramp"),
        ({"dim_sa": 0.0}, "theorem2_exponent_d"),
        ({"dim_sa": 0.0}, "sa_lead_grows_with_d"),
        ({"dim_sa": 0.0}, "theorem2_queries_exponent_d"),  # d^1 in queries
        ({"dim_sa": 0.0}, "sa_lead_in_queries_grows_with_d"),
        ({"ramp_rs": -4.0}, "theorem1_queries_exponent_ramp"),
        ({"ramp_sa": -3.0}, "theorem2_queries_exponent_ramp"),
        ({"net_sa": -3.0}, "theorem2_queries_exponent_diagonal_net"),
    ],
)
def test_evaluate_synthetic_complexity_not_confirmed(params, claim_id):
    got = verdicts(evaluate({"complexity": complexity_table(**params)}))
    assert got[claim_id] == "not confirmed"
    untouched = verdicts(evaluate({"complexity": complexity_table()}))
    assert untouched[claim_id] != "not confirmed"


EPS_QUERY_CLAIMS = {  # each exponent in eps in gradient queries, and the one in iterations it restates
    "theorem1_queries_exponent_ramp": "theorem1_exponent_ramp",
    "theorem1_queries_exponent_bowl": "theorem1_exponent_bowl",
    "theorem1_queries_exponent_diagonal_net": "theorem1_exponent_diagonal_net",
    "theorem2_queries_exponent_ramp": "theorem2_exponent_ramp",
    "theorem2_queries_exponent_diagonal_net": "theorem2_exponent_diagonal_net",
}


def test_query_claims_read_the_gradient_queries_alone():
    """A cost per step growing like 1/eps (as a batch growing as eps falls would) leaves the iterations'
    exponents and lowers those in eps in queries by 1: RS's ramp to -4 and SA's to -3, beyond their
    bounds; the d sweep, at one eps, keeps its exponents."""
    base = evaluate({"complexity": complexity_table()}).set_index("id")
    costly = evaluate({"complexity": complexity_table(cost=lambda algorithm, eps, dim: dim / eps)}).set_index("id")
    for query_id, step_id in EPS_QUERY_CLAIMS.items():
        assert costly.loc[step_id, "measured"] == base.loc[step_id, "measured"]
        assert costly.loc[query_id, "measured"] == pytest.approx(base.loc[query_id, "measured"] - 1.0, abs=1e-9)
    for query_id in ("theorem2_queries_exponent_d", "sa_lead_in_queries_grows_with_d"):
        assert costly.loc[query_id, "measured"] == pytest.approx(base.loc[query_id, "measured"], abs=1e-9)
    for query_id in ("theorem1_queries_exponent_ramp", "theorem2_queries_exponent_ramp"):
        assert costly.loc[query_id, "verdict"] == "not confirmed" and base.loc[query_id, "verdict"] in ATTAINED
        assert costly.loc[EPS_QUERY_CLAIMS[query_id], "verdict"] in ATTAINED


def test_evaluate_run_never_flat_in_budget():
    table = complexity_table()
    table.loc[(table["sweep"] == "eps") & (table["algorithm"] == "rs") & (table["seed"] == 3)
              & (table["eps"] == 0.01) & (table["instance"] == "ramp"), "first_flat_step"] = np.nan
    audit = evaluate({"complexity": table}).set_index("id")
    assert audit.loc["theorem1_within_budget", "verdict"] == "not confirmed"
    assert audit.loc["theorem1_within_budget", "measured"] == pytest.approx(7 / 8)
    assert audit.loc["theorem2_within_budget", "verdict"] == "bound holds"


def test_evaluate_failing_measure_is_not_confirmed_with_a_note():
    """A dim-sweep run that never became flat leaves SA's lead undefined: not confirmed, reason noted."""
    table = complexity_table()
    never = (table["sweep"] == "dim") & (table["algorithm"] == "sa") & (table["dim"] == 32)
    table.loc[never, ["first_flat_step", "gradient_queries"]] = np.nan  # both NaN, as E3 writes them
    audit = evaluate({"complexity": table})
    assert len(audit) == len(CLAIMS) and audit["id"].is_unique
    for lead in ("sa_lead_grows_with_d", "sa_lead_in_queries_grows_with_d"):
        row = audit.set_index("id").loc[lead]
        assert row["verdict"] == "not confirmed"
        assert "never reached a flat point" in row["note"]
        assert np.isnan(row["measured"])
    ok = audit.set_index("id").loc["theorem1_exponent_ramp"]
    assert ok["verdict"] in ATTAINED


def test_select_raises_not_run_naming_the_selection():
    table = complexity_table()
    assert len(select(table, sweep="eps", instance="bowl")) == 3 * SEEDS  # RS at three eps
    with pytest.raises(NotRun, match=r"no results rows with sweep='eps', instance='my_bowl'"):
        select(table, sweep="eps", instance="my_bowl")


def test_evaluate_claims_on_rows_the_config_did_not_run_are_not_run():
    """The README's own problem: E3's eps sweep on a user instance only, no ramp, no bowl."""
    table = complexity_table()
    own = table[(table["sweep"] == "dim") | ((table["instance"] == "diagonal_net") & (table["algorithm"] == "rs"))]
    audit = evaluate({"complexity": own}).set_index("id")
    for claim_id, algorithm, instance in (("theorem1_exponent_ramp", "rs", "ramp"),
                                          ("theorem1_exponent_bowl", "rs", "bowl"),
                                          ("theorem2_exponent_ramp", "sa", "ramp")):
        assert audit.loc[claim_id, "verdict"] == "not run"
        assert audit.loc[claim_id, "note"] == \
            f"complexity: no results rows with sweep='eps', algorithm='{algorithm}', instance='{instance}'"
    assert np.isnan(audit.loc["theorem1_exponent_bowl", "measured"])
    assert audit.loc["theorem1_exponent_diagonal_net", "verdict"] == "bound holds"
    assert audit.loc["theorem2_within_budget", "note"] == "complexity: no results rows with sweep='eps', algorithm='sa'"
    assert audit.loc["theorem2_exponent_d", "verdict"] in ATTAINED


@pytest.mark.parametrize("experiment, table, claim_id, missing", [
    ("identities", pd.DataFrame({"part": ["rho"], "algorithm": ["rs"]}), "sa_identity", "part='rho', algorithm='sa'"),
    ("identities", pd.DataFrame({"part": ["rho"], "algorithm": ["rs"]}), "sa_gain_d", "part='dim'"),
    ("identities", pd.DataFrame({"part": ["rho"], "algorithm": ["rs"]}), "negative_control", "part='control'"),
    ("trajectories", pd.DataFrame({"instance": ["a"], "algorithm": ["rs"], "seed": [0], "step": [0], "trbar_limit": [1.0]}),
     "gd_does_not_move", "algorithm='gd'"),
    ("trajectories", pd.DataFrame({"instance": ["a"], "algorithm": ["rs"], "seed": [0], "step": [0], "trbar_limit": [1.0]}),
     "rs_sa_flatter_than_gd", "no instance with GD and RS or SA runs"),
])
def test_evaluate_missing_parts_of_other_experiments_are_not_run(experiment, table, claim_id, missing):
    row = evaluate({experiment: table}).set_index("id").loc[claim_id]
    assert row["verdict"] == "not run" and missing in row["note"] and row["note"].startswith(experiment), row


def test_escape_claims_whose_runs_the_config_left_out_are_not_run():
    sgd_only = pd.DataFrame([{"method": "sgd", "batch": 8, "rho": 0.0, "seed": seed, "step": step, "train_acc": 1.0,
                              "test_acc": 0.5, "loss": 0.0, "hessian_trace": 10.0, "hessian_trace_se": 0.1}
                             for seed in (0, 1) for step in (0, 10)])
    audit = evaluate({"escape": sgd_only}).set_index("id")
    assert audit.loc["escape_sgd_stays", "verdict"] == "threshold met"
    assert audit.loc["escape_train_acc_100", "verdict"] == "consistent: interval contains"
    for claim_id, missing in (
        ("escape_sa_beats_rs_equal_rho", "no batch size at which RS and SA ran the same rho"),
        ("escape_sa_beats_rs_best", "no batch size at which both RS and SA ran"),
        ("escape_small_batch_best", "no SA rho run at two or more batch sizes"),
        ("escape_trace_falls_as_test_rises", "a correlation over the runs needs 3 escape runs, found 1"),
        ("escape_label_noise_beats_sgd", "no label_noise_sgd run"),
        ("escape_sa_vs_one_sam_best", "no sa run"),
        ("escape_sa_vs_field_equal_queries", "no batch size at which sa and a field method"),
    ):
        assert audit.loc[claim_id, "verdict"] == "not run"
        assert audit.loc[claim_id, "note"].startswith(f"escape: {missing}")


def test_evaluate_missing_columns_are_not_confirmed():
    """Without first_flat_step every claim in iterations fails, and only those; without gradient_queries,
    every claim in queries, and only those."""
    table = complexity_table()
    complexity_ids = [c.id for c in CLAIMS if c.experiment == "complexity"]
    in_queries = [claim_id for claim_id in complexity_ids if "queries" in claim_id]
    assert len(in_queries) == 7
    for column, failing in (("first_flat_step", sorted(set(complexity_ids) - set(in_queries))),
                            ("gradient_queries", in_queries)):
        audit = evaluate({"complexity": table.drop(columns=column)}).set_index("id").loc[complexity_ids]
        assert audit.index[audit["verdict"] == "not confirmed"].sort_values().tolist() == sorted(failing), column
        assert (audit.loc[failing, "note"] != "").all()


def test_evaluate_synthetic_decrease_verdicts():
    got = verdicts(evaluate({"decrease": decrease_table()}))
    assert got["lemma2_exponent"] in ATTAINED
    assert got["lemma2_dim"] in ("consistent: interval contains", "consistent: within tolerance")
    assert got["lemma4_exponent_eps"] in ATTAINED
    assert got["lemma4_exponent_d"] in ATTAINED
    bad = verdicts(evaluate({"decrease": decrease_table(rs_eps=2.0, rs_dim=0.5, sa_eps=3.0, sa_dim=0.0)}))
    for claim_id in ("lemma2_exponent", "lemma2_dim", "lemma4_exponent_eps", "lemma4_exponent_d"):
        assert bad[claim_id] == "not confirmed"


def generalization_table(rs_error=0.02, sa_trace=0.2, gd_error=1.0, reference_error=0.0) -> pd.DataFrame:
    """Two instances; RS and SA end at (error, trace) below the start, GD at ``gd_error``; the error
    falls with the trace along the runs."""
    rows = []
    for instance in ("net", "sensing"):
        for algorithm, (error, trace) in {"gd": (gd_error, 4.0), "rs": (rs_error, 0.2), "sa": (0.01, sa_trace)}.items():
            for seed in (0, 1):
                for step, w in ((0, 0.0), (100, 0.5), (200, 1.0)):
                    rows.append({"instance": instance, "algorithm": algorithm, "seed": seed, "step": step,
                                 "point": "after_gd", "recovery_error": 1.0 + w * (error - 1.0),
                                 "trbar": 4.0 + w * (trace - 4.0), "loss": 0.0,
                                 "reference_error": reference_error, "reference_trbar": 0.2,
                                 "start_error": 1.0, "start_trbar": 4.0})
    return pd.DataFrame(rows)


def test_evaluate_synthetic_generalization_verdicts():
    ids = ["flattest_is_ground_truth", "rs_sa_reach_flattest", "flat_minima_generalize", "gd_recovers_nothing",
           "flatter_recovers_better"]
    audit = evaluate({"generalization": generalization_table()}).set_index("id")
    assert (audit.loc[ids, "verdict"] == "threshold met").all(), audit.loc[ids, ["measured", "verdict", "note"]]
    assert audit.loc["rs_sa_reach_flattest", "measured"] == pytest.approx(0.0)
    assert audit.loc["flat_minima_generalize", "measured"] == pytest.approx(0.02)
    bad = evaluate({"generalization": generalization_table(rs_error=0.5, sa_trace=0.3, gd_error=0.9,
                                                           reference_error=0.1)}).set_index("id")
    assert bad.loc["rs_sa_reach_flattest", "measured"] == pytest.approx(0.5)
    assert bad.loc["flat_minima_generalize", "measured"] == pytest.approx(0.5)
    assert bad.loc["gd_recovers_nothing", "measured"] == pytest.approx(0.1)
    for claim_id in ids[:4]:
        assert bad.loc[claim_id, "verdict"] == "not confirmed", claim_id
    # Where the exact Phi of the last iterate is in the table, the claims read it instead.
    table = generalization_table()
    last = table[(table["step"] == 200) & (table["point"] == "after_gd")].assign(point="limit")
    last.loc[last["algorithm"] == "rs", "recovery_error"] = 0.001
    exact = evaluate({"generalization": pd.concat([table, last])}).set_index("id")
    assert exact.loc["flat_minima_generalize", "measured"] == pytest.approx(0.01)  # SA's 0.01 now the largest
    # The error rising as the trace falls is a negative correlation.
    inverted = generalization_table()
    inverted["recovery_error"] = 2.0 - inverted["recovery_error"]
    assert evaluate({"generalization": inverted}).set_index("id").loc["flatter_recovers_better", "verdict"] == \
        "not confirmed"


def test_gd_control_without_gd_runs_is_not_run_and_with_broken_gd_runs_not_confirmed():
    table = generalization_table()
    row = evaluate({"generalization": table[table["algorithm"] != "gd"]}).set_index("id").loc["gd_recovers_nothing"]
    assert row["verdict"] == "not run" and row["note"] == "generalization: no GD runs", row
    broken = table.assign(recovery_error=np.where(table["algorithm"] == "gd", np.nan, table["recovery_error"]))
    row = evaluate({"generalization": broken}).set_index("id").loc["gd_recovers_nothing"]
    assert row["verdict"] == "not confirmed" and "non-finite GD recovery errors" in row["note"], row
    only_gd = evaluate({"generalization": table[table["algorithm"] == "gd"]}).set_index("id")
    assert (only_gd.loc[["rs_sa_reach_flattest", "flat_minima_generalize"], "note"] ==
            "generalization: no RS or SA runs").all()


def test_evaluate_trajectory_claims_take_the_worst_instance():
    rows = []
    for instance, gd_drift in (("a", 0.0), ("b", 0.5)):
        for algorithm, end in {"gd": 4.0 + gd_drift, "rs": 2.0, "sa": 2.0}.items():
            for step, trace in ((0, 4.0), (10, end)):
                rows.append({"instance": instance, "algorithm": algorithm, "seed": 0, "step": step, "trbar_limit": trace})
    audit = evaluate({"trajectories": pd.DataFrame(rows)}).set_index("id")
    assert audit.loc["gd_does_not_move", "measured"] == pytest.approx(0.5)
    assert audit.loc["gd_does_not_move", "verdict"] == "not confirmed"
    assert audit.loc["rs_sa_flatter_than_gd", "measured"] == pytest.approx(2.0)


def test_evaluate_custom_claims_subset():
    measure = lambda results: Estimate(float(results["v"].mean()), 0.0, 0.0)  # noqa: E731
    mine = (Claim("a", "r", "s", "e1", measure, 2.0, 0.5, "equal"),
            Claim("b", "r", "s", "e2", measure, 2.0, 0.5, "equal"))
    audit = evaluate({"e1": pd.DataFrame({"v": [1.8, 2.0]})}, claims=mine)
    assert audit["verdict"].tolist() == ["consistent: within tolerance", "not run"]  # the interval [0, 0] excludes 2
    assert audit["measured"].iloc[0] == pytest.approx(1.9)


# ============================================================================ table1
TABLE1_COLUMNS = ["algorithm", "unit", "paper rate", "exponent in eps, ramp", "exponent in eps, bowl",
                  "exponent in eps, diagonal net", "exponent in d", "per-step decrease exponent (Lemma 2)",
                  "per-step decrease exponent (Lemma 4)", "measured from"]


def exponent_of(cell: str) -> float:
    return float(cell.split()[0])


def test_table1_shape_and_columns():
    empty = table1({})
    assert empty.shape == (4, 10) and list(empty.columns) == TABLE1_COLUMNS
    assert empty["algorithm"].str[:2].tolist() == ["RS", "SA", "RS", "SA"]
    assert empty["unit"].tolist() == ["iterations"] * 2 + ["per-sample gradient queries"] * 2
    assert empty.loc[0, "exponent in eps, ramp"] == "n/a" and empty.loc[2, "exponent in eps, ramp"] == "n/a"
    full = table1({"complexity": complexity_table(), "decrease": decrease_table()})
    assert full.shape == (4, 10) and list(full.columns) == TABLE1_COLUMNS
    assert exponent_of(full.loc[0, "exponent in eps, ramp"]) == pytest.approx(-3.0, abs=0.05)
    assert exponent_of(full.loc[1, "exponent in d"]) == pytest.approx(-1.0, abs=0.05)
    net_se = slope_se((0.04, 0.056, 0.08))
    assert exponent_of(full.loc[1, "exponent in eps, diagonal net"]) == pytest.approx(-1.0, abs=5 * net_se)
    assert "(bound attained: " in full.loc[0, "exponent in eps, ramp"]
    assert "(bound holds)" in full.loc[0, "exponent in eps, bowl"]
    assert "(bound holds)" in full.loc[0, "exponent in eps, diagonal net"]
    assert "(bound attained: " in full.loc[1, "exponent in d"]
    assert "(bound attained: " in full.loc[0, "per-step decrease exponent (Lemma 2)"]
    assert "(bound attained: " in full.loc[1, "per-step decrease exponent (Lemma 4)"]
    for row, column in ((0, "exponent in eps, ramp"), (1, "exponent in d"), (1, "exponent in eps, diagonal net")):
        assert "; asymptotic half " in full.loc[row, column]  # every synthetic sweep has >= 3 levels
    assert full.loc[0, "per-step decrease exponent (Lemma 4)"] == "—"
    assert full.loc[0, "exponent in d"] == "—" and full.loc[1, "exponent in eps, bowl"] == "—"
    assert full.loc[1, "per-step decrease exponent (Lemma 2)"] == "—"
    for frame in (empty, full):  # no missing cells: every cell is a number, "n/a" or "—"
        assert not frame.isna().any().any()


def test_table1_query_rows_restate_the_iteration_rows_in_gradient_queries():
    """Rows 2 and 3 are RS and SA in gradient queries: in eps the exponents of rows 0 and 1 (a cost per
    step constant in eps), in d one more (n = d samples per step here); no per-step decrease (a
    quantity per iteration). ``measured from`` names the column and the audit rows of each row."""
    full = table1({"complexity": complexity_table(), "decrease": decrease_table()})
    for column in ("exponent in eps, ramp", "exponent in eps, bowl", "exponent in eps, diagonal net"):
        for steps, queries in ((0, 2), (1, 3)):
            if full.loc[steps, column] == "—":
                assert full.loc[queries, column] == "—"
            else:
                assert exponent_of(full.loc[queries, column]) == pytest.approx(exponent_of(full.loc[steps, column]),
                                                                               abs=0.006)  # printed to 2 decimals
    assert exponent_of(full.loc[3, "exponent in d"]) == pytest.approx(exponent_of(full.loc[1, "exponent in d"]) + 1,
                                                                      abs=0.006)
    assert "(bound attained: " in full.loc[3, "exponent in d"]
    assert (full.loc[2:, ["per-step decrease exponent (Lemma 2)", "per-step decrease exponent (Lemma 4)"]] == "—").all().all()
    assert full.loc[2, "measured from"] == ("complexity.csv, gradient_queries (audit: theorem1_queries_exponent_ramp, "
                                            "theorem1_queries_exponent_bowl, theorem1_queries_exponent_diagonal_net)")
    assert full.loc[1, "measured from"] == (
        "complexity.csv, first_flat_step (audit: theorem2_exponent_ramp, theorem2_exponent_diagonal_net, "
        "theorem2_exponent_d); decrease.csv, decrease_per_perturbed_step (audit: lemma4_exponent_eps)")
    # the cells are the audit's: a query claim pushed beyond its bound reads so in the table
    costly = table1({"complexity": complexity_table(cost=lambda algorithm, eps, dim: dim / eps)})
    assert "(not confirmed)" in costly.loc[2, "exponent in eps, ramp"]
    assert "(bound attained: " in costly.loc[0, "exponent in eps, ramp"]
