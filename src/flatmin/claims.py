"""The audit: the paper's claims as executable checks on the experiments' results.

Each :class:`Claim` names the paper's statement, the experiment whose results table it reads, a
function measuring a statistic with its confidence interval (:class:`flatmin.analysis.Estimate`),
the value or bound theory gives, and a tolerance. :func:`evaluate` computes every verdict; nothing
in the audit table is written by hand. Verdicts:

- ``consistent``: the measured value agrees with the stated value within the tolerance (or its
  interval contains the stated value);
- ``bound attained``: an upper bound's exponent is met on the instance built to attain it;
- ``bound holds``: the measured value respects an upper bound without attaining it;
- ``not confirmed``: none of the above. It is reported, never hidden;
- ``not run``: the experiment was disabled in the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

from flatmin.analysis import Estimate, exponent

VERDICTS = ("consistent", "bound attained", "bound holds", "not confirmed", "not run")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable statement.

    Attributes:
      id: short unique key.
      reference: where the paper states it.
      statement: the claim in words.
      experiment: the results table it reads (an experiment name).
      measure: ``results (DataFrame) -> Estimate``.
      expected: the theoretical value, or the bound.
      tolerance: allowed absolute deviation from ``expected``.
      kind: ``"equal"`` (verdict consistent), ``"attained"`` (bound attained), ``"at_most"`` /
        ``"at_least"`` (bound holds when the measured value is on the right side within tolerance)
        ``"below"`` (consistent when the measured value is at most ``expected``: a test statistic
        against its threshold) or ``"above"`` (consistent when it is strictly larger: a margin).
      expected_text: how to print ``expected``.
    """

    id: str
    reference: str
    statement: str
    experiment: str
    measure: Callable[[pd.DataFrame], Estimate]
    expected: float
    tolerance: float
    kind: str = "equal"
    expected_text: str = ""

    def verdict(self, estimate: Estimate) -> str:
        inside = estimate.low <= self.expected <= estimate.high
        close = abs(estimate.value - self.expected) <= self.tolerance
        if self.kind == "equal":
            return "consistent" if inside or close else "not confirmed"
        if self.kind == "attained":
            return "bound attained" if inside or close else "not confirmed"
        if self.kind == "at_most":
            return "bound holds" if estimate.value <= self.expected + self.tolerance else "not confirmed"
        if self.kind == "at_least":
            return "bound holds" if estimate.value >= self.expected - self.tolerance else "not confirmed"
        if self.kind == "below":
            return "consistent" if estimate.value <= self.expected else "not confirmed"
        if self.kind == "above":
            return "consistent" if estimate.value > self.expected else "not confirmed"
        raise ValueError(f"unknown claim kind {self.kind!r}")


def _select(frame: pd.DataFrame, **conditions) -> pd.DataFrame:
    for column, value in conditions.items():
        frame = frame[frame[column] == value]
    if frame.empty:
        raise ValueError(f"no results rows with {conditions}")
    return frame


def _z_ratio(value: float, se: float, reference: float, z: float = 1.96) -> Estimate:
    return Estimate(value / reference, (value - z * se) / reference, (value + z * se) / reference)


# E1 ------------------------------------------------------------------------------------------------
def _identity(algorithm: str):
    def measure(results):
        from flatmin.experiments.identities import rho_squared_coefficient

        fit = rho_squared_coefficient(results, algorithm)
        return _z_ratio(fit["a"], fit["a_se"], fit["a_pred"])

    return measure


def _sa_gain(results):
    from flatmin.experiments.identities import dim_ratio

    ratio = dim_ratio(results)
    ratio = ratio.assign(normalized=ratio["ratio"] / ratio["dim"])
    weights = 1 / (ratio["se"] / ratio["ratio"]) ** 2
    log_d, log_r = np.log(ratio["dim"]), np.log(ratio["ratio"])
    mean_d = np.average(log_d, weights=weights)
    slope = np.sum(weights * (log_d - mean_d) * log_r) / np.sum(weights * (log_d - mean_d) ** 2)
    se = np.sqrt(1 / np.sum(weights * (log_d - mean_d) ** 2))
    return Estimate(float(slope), float(slope - 1.96 * se), float(slope + 1.96 * se))


def _control(results):
    from flatmin.experiments.identities import control_z_scores

    worst = float(control_z_scores(results).max())
    return Estimate(worst, worst, worst)


# E2, E3 --------------------------------------------------------------------------------------------
def _exponent(sweep: str, algorithm: str, level: str, value: str, sign: float = 1.0, **where):
    def measure(results):
        rows = _select(results, sweep=sweep, algorithm=algorithm, **where)
        rows = rows.dropna(subset=[value])
        estimate = exponent(rows, level, value)
        if sign < 0:
            return Estimate(-estimate.value, -estimate.high, -estimate.low)
        return estimate

    return measure


def _success_fraction(algorithm: str):
    def measure(results):
        rows = _select(results, sweep="eps", algorithm=algorithm)
        fractions = rows.groupby(["instance", "eps"])["first_flat_step"].apply(lambda s: s.notna().mean())
        worst = float(fractions.min())
        return Estimate(worst, worst, worst)

    return measure


def _lead_growth(results):
    rows = _select(results, sweep="dim")
    means = rows.groupby(["dim", "algorithm"])["first_flat_step"].mean().unstack()
    if means.isna().any().any():
        raise ValueError("a dim-sweep run never reached a flat point; the lead is undefined")
    ratio = pd.DataFrame({"dim": means.index, "lead": (means["rs"] / means["sa"]).to_numpy()})
    slope = exponent(ratio, "dim", "lead")
    return slope


# E4, E5 -------------------------------------------------------------------------------------------
def _single(compute_value):
    def measure(results):
        value = float(compute_value(results))
        return Estimate(value, value, value)

    return measure


def _instances(results):
    return list(dict.fromkeys(results["instance"]))


def _gd_drift(results):
    """Largest, over instances, of GD's ``max_t |trbar(Phi(x_t)) - trbar(Phi(x_0))|``."""
    from flatmin.experiments.trajectories import trace_drift

    return max(trace_drift(results, "gd", instance) for instance in _instances(results))


def _flatter_than_gd(results):
    """Smallest margin, over instances and RS, SA, of GD's mean final trace over theirs."""
    from flatmin.experiments.trajectories import final_trace_by_method

    margins = []
    for instance in _instances(results):
        final = final_trace_by_method(results, instance)
        margins += [final["gd"] - final[name] for name in ("rs", "sa") if name in final.index]
    if not margins:
        raise ValueError("no RS or SA runs in the trajectories results")
    return min(margins)


def _example1_gap(results):
    from flatmin.experiments.example1 import disjointness_gap

    return disjointness_gap(results)


def _example1_flattest(results):
    from flatmin.experiments.example1 import min_trace_on_minima

    return min_trace_on_minima(results)["trbar"].max()


# E6 ----------------------------------------------------------------------------------------------
PERTURBED = ("rs", "sa")


def _final_point(results, instance: str) -> str:
    """``limit`` (the exact Phi) where the results have it, else ``after_gd`` (the final GD phase)."""
    rows = results[results["instance"] == instance]
    limit = rows[rows["point"] == "limit"]
    return "limit" if not limit.empty and limit["step"].max() == rows["step"].max() else "after_gd"


def _final_perturbed(results):
    """Per (instance, algorithm in RS, SA, seed): the last checkpoint, at the exact Phi where computed,
    else after the final GD phase."""
    from flatmin.experiments.generalization import final_by_method

    frames = []
    for instance in _instances(results):
        final = final_by_method(results, instance, _final_point(results, instance))
        final = final[final.index.get_level_values("algorithm").isin(PERTURBED)]
        frames.append(final.assign(instance=instance))
    rows = pd.concat(frames)
    if rows.empty:
        raise ValueError("no RS or SA runs in the generalization results")
    return rows


def _reference_error(results):
    """Largest recovery error of the flattest interpolator (the LP solution, the ground truth)."""
    from flatmin.experiments.generalization import references

    return references(results)["reference_error"].max()


def _excess_trace(results):
    """Largest relative excess ``(trbar_T - trbar_flat) / trbar_flat`` of RS and SA's final points."""
    rows = _final_perturbed(results)
    return ((rows["trace"] - rows["reference_trace"]) / rows["reference_trace"]).max()


def _error_left(results):
    """Largest fraction of the start's recovery error left at RS and SA's final points."""
    rows = _final_perturbed(results)
    return (rows["recovery_error"] / rows["start_error"]).max()


def _gd_error_change(results):
    """Largest relative change of GD's recovery error between the start and its final point."""
    from flatmin.experiments.generalization import final_by_method

    changes = []
    for instance in _instances(results):
        final = final_by_method(results, instance)
        gd = final[final.index.get_level_values("algorithm") == "gd"]
        changes += list((gd["recovery_error"] - gd["start_error"]).abs() / gd["start_error"])
    if not changes:
        raise ValueError("no GD runs in the generalization results")
    if not np.all(np.isfinite(changes)):
        raise ValueError(f"non-finite GD recovery errors in the generalization results: {changes}")
    return max(changes)


def _error_trace_correlation(results):
    """Smallest, over instances, Spearman correlation between trbar and the recovery error."""
    from flatmin.experiments.generalization import error_trace_rank_correlation

    return min(error_trace_rank_correlation(results, instance) for instance in _instances(results))


# Escape (issue 5, the paper's Figure 3 at CPU scale) ---------------------------------------------
def _escape(prefix: str, reduce: str = "min"):
    """The value of the escape experiment's own claim rows whose name starts with ``prefix``
    (:func:`flatmin.experiments.escape.claims_table`), reduced over batch sizes / rhos."""

    def measure(results):
        from flatmin.experiments.escape import claims_table

        table = claims_table(results)
        rows = table[table["claim"].str.startswith(prefix)]
        if rows.empty:
            raise ValueError(f"the escape results have no claim row starting with {prefix!r}")
        value = float(getattr(rows["value"], reduce)())
        return Estimate(value, value, value)

    return measure


CLAIMS: tuple[Claim, ...] = (
    Claim("rs_identity", "§4 (Lemma 2's mechanism)",
          "RS: E[dPhi v] = (rho^2/2) dPhi grad trbar + O(rho^4); measured rho^2 coefficient / predicted",
          "identities", _identity("rs"), 1.0, 0.0, "equal", "1"),
    Claim("sa_identity", "§4 (Lemma 4's mechanism)",
          "SA: E[dPhi v] = d (rho^2/2) dPhi grad trbar + O(rho^4); measured rho^2 coefficient / predicted",
          "identities", _identity("sa"), 1.0, 0.0, "equal", "1"),
    Claim("sa_gain_d", "§4", "SA's tangential drift is d times RS's: exponent of SA/RS in d",
          "identities", _sa_gain, 1.0, 0.02, "equal", "1"),
    Claim("negative_control", "§7 (negative control)",
          "All minima of the fully observed factorization are equally flat: the tangential mean of v is 0 "
          "(largest |mean|/SE over RS and SA)", "identities", _control, 4.5, 0.0, "below", "<= 4.5"),
    Claim("lemma2_exponent", "Lemma 2", "RS per-step decrease of trbar(Phi) ~ eps^3 (exponent in eps, ramp)",
          "decrease", _exponent("eps", "rs", "eps", "decrease_per_perturbed_step"), 3.0, 0.15, "attained", "3"),
    Claim("lemma2_dim", "Lemma 2", "RS per-step decrease does not depend on d (exponent in d)",
          "decrease", _exponent("dim", "rs", "dim", "decrease_per_perturbed_step"), 0.0, 0.1, "equal", "0"),
    Claim("lemma4_exponent_eps", "Lemma 4", "SA per-step decrease ~ d eps^2 when d^3 eps >= 1 (exponent in eps)",
          "decrease", _exponent("eps", "sa", "eps", "decrease_per_perturbed_step"), 2.0, 0.15, "attained", "2"),
    Claim("lemma4_exponent_d", "Lemma 4", "SA per-step decrease ~ d eps^2 when d^3 eps >= 1 (exponent in d)",
          "decrease", _exponent("dim", "sa", "dim", "decrease_per_perturbed_step"), 1.0, 0.15, "attained", "1"),
    Claim("theorem1_within_budget", "Theorem 1, Table 1",
          "RS reaches an (eps, sqrt(eps))-flat point within cT eps^-3 steps on every instance and seed "
          "(worst success fraction)", "complexity", _success_fraction("rs"), 1.0, 0.0, "at_least", ">= 1"),
    Claim("theorem1_exponent_ramp", "Theorem 1, Table 1", "RS iterations ~ eps^-3 on the ramp (exponent in eps)",
          "complexity", _exponent("eps", "rs", "eps", "first_flat_step", instance="ramp"), -3.0, 0.3,
          "attained", "-3"),
    Claim("theorem1_exponent_bowl", "Theorem 1, Table 1",
          "RS iterations on the bowl (trace strongly convex along X*) grow no faster than eps^-3",
          "complexity", _exponent("eps", "rs", "eps", "first_flat_step", instance="bowl"), -3.0, 0.3,
          "at_least", ">= -3"),
    Claim("theorem1_exponent_diagonal_net", "Theorem 1, Table 1",
          "RS iterations on the diagonal linear net (d = 60, its own cT) grow no faster than eps^-3",
          "complexity", _exponent("eps", "rs", "eps", "first_flat_step", instance="diagonal_net"), -3.0, 0.3,
          "at_least", ">= -3"),
    Claim("theorem2_within_budget", "Theorem 2, Table 1",
          "SA reaches an (eps, sqrt(eps))-flat point within cT d^-1 eps^-2 steps on every instance and seed "
          "(worst success fraction)", "complexity", _success_fraction("sa"), 1.0, 0.0, "at_least", ">= 1"),
    Claim("theorem2_exponent_ramp", "Theorem 2, Table 1", "SA iterations ~ eps^-2 on the ramp (exponent in eps)",
          "complexity", _exponent("eps", "sa", "eps", "first_flat_step", instance="ramp"), -2.0, 0.3,
          "attained", "-2"),
    Claim("theorem2_exponent_d", "Theorem 2, Table 1", "SA iterations ~ d^-1 on the ramp (exponent in d)",
          "complexity", _exponent("dim", "sa", "dim", "first_flat_step"), -1.0, 0.3, "attained", "-1"),
    Claim("sa_lead_grows_with_d", "Table 1", "SA's lead over RS (ratio of iterations) grows like d (exponent)",
          "complexity", _lead_growth, 1.0, 0.3, "equal", "1"),
    Claim("gd_does_not_move", "§1, Figure 3 (control)", "GD from a sharp minimum stays where it is: largest "
          "|change of trbar(Phi(x_t))| over checkpoints and seeds (E4)", "trajectories", _single(_gd_drift),
          1e-6, 0.0, "below", "<= 1e-6"),
    Claim("rs_sa_flatter_than_gd", "Theorems 1 and 2", "RS and SA end at flatter minima than GD (smallest "
          "margin of GD's final trbar over theirs, E4)", "trajectories", _single(_flatter_than_gd), 0.0, 0.0,
          "above", "> 0"),
    Claim("example1_disjoint", "Example 1", "The minimizers of the trace are not minima of f: f at the trace "
          "minimizer (E5; f(0) = 1)", "example1", _single(_example1_gap), 0.0, 0.0, "above", "> 0"),
    Claim("example1_flattest_on_minima", "Example 1", "Restricted to the minima x1 x2 = 1, trbar is smallest at "
          "±(1, 1) with trbar = 2 (E5, larger of the two branch minima)", "example1", _single(_example1_flattest),
          2.0, 1e-8, "equal", "2"),
    Claim("escape_sgd_stays", "Figure 3", "At the small constant step, SGD does not escape the sharp minimizer "
          "(largest |change of test accuracy|)", "escape", _escape("sgd_stays"), 0.01, 0.0, "below", "<= 0.01"),
    Claim("escape_sa_beats_rs_equal_rho", "Figure 3", "SA escapes more than RS at equal rho, batch 128 "
          "(smallest SA - RS final test accuracy beyond 2 SE over seeds)", "escape", _escape("sa_beats_rs_equal_rho"), 0.0, 0.0,
          "above", "> 0"),
    Claim("escape_sa_beats_rs_smaller_rho", "Figure 3", "SA escapes more than RS even with a smaller rho "
          "(best margin beyond 2 SE over the best RS run with rho >= SA's)", "escape", _escape("sa_beats_rs_smaller_rho", "max"),
          0.0, 0.0, "above", "> 0"),
    Claim("escape_small_batch_best", "Figure 3", "SA with batch 1 escapes best (margin of test accuracy over larger batches)",
          "escape", _escape("smallest_batch_best", "min"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_train_acc_100", "Figure 3", "Training accuracy stays at 100% for every method "
          "(minimum over checkpoints, runs, seeds)", "escape", _escape("train_acc_100"), 1.0, 0.0,
          "equal", "1"),
    Claim("escape_trace_falls_as_test_rises", "§1, Figure 3", "The trace falls as test accuracy rises "
          "(Spearman correlation of their changes over runs)", "escape", _escape("trace_falls_as_test_rises"),
          0.0, 0.0, "below", "< 0"),
    Claim("flattest_is_ground_truth", "§7 (test functions: flattest minima)", "The flattest interpolator "
          "recovers the ground truth: its recovery error (diagonal net: the weighted basis-pursuit LP; matrix "
          "sensing: [U*, 0]; largest over instances, E6)", "generalization", _single(_reference_error), 1e-6,
          0.0, "below", "<= 1e-6"),
    Claim("rs_sa_reach_flattest", "Theorems 1 and 2 (E6)", "RS and SA from a sharp interpolator end as flat as "
          "the flattest interpolator: relative excess of trbar at Phi of the last iterate over the reference's "
          "(largest over instances, methods, seeds; threshold 5% [reconstructed])", "generalization", _single(_excess_trace),
          0.05, 0.0, "below", "<= 0.05"),
    Claim("flat_minima_generalize", "§1 (flat minima generalize, E6)", "RS and SA recover the ground truth: "
          "fraction of the start's recovery error left at Phi of the last iterate (largest over instances, "
          "methods, seeds; threshold 10% [reconstructed])", "generalization", _single(_error_left), 0.1, 0.0, "below",
          "<= 0.1"),
    Claim("gd_recovers_nothing", "§1 (control, E6)", "GD from the sharp interpolator stays there: relative "
          "change of its recovery error (largest over instances and seeds)", "generalization",
          _single(_gd_error_change), 1e-3, 0.0, "below", "<= 1e-3"),
    Claim("flatter_recovers_better", "§1 (E6)", "Flatter means better recovery: Spearman correlation of "
          "trbar and the recovery error over every checkpoint of every run (smallest over instances)",
          "generalization", _single(_error_trace_correlation), 0.0, 0.0, "above", "> 0"),
)


def claim_ids() -> list[str]:
    return [claim.id for claim in CLAIMS]


def evaluate(results: dict[str, pd.DataFrame], config: dict | None = None, claims=CLAIMS) -> pd.DataFrame:
    """Evaluate ``claims`` on ``results`` (experiment name -> results table).

    A claim whose experiment is absent from ``results`` gets the verdict ``not run``. A measure that
    fails (e.g. a run that never became flat leaves an exponent undefined) gets ``not confirmed``
    with the reason in ``note``. Returns one row per claim: ``id, reference, statement, experiment,
    measured, low, high, expected, tolerance, verdict, note``.
    """
    rows = []
    for claim in claims:
        row = {"id": claim.id, "reference": claim.reference, "statement": claim.statement,
               "experiment": claim.experiment, "expected": claim.expected_text or f"{claim.expected:g}",
               "tolerance": claim.tolerance, "measured": np.nan, "low": np.nan, "high": np.nan, "note": ""}
        if claim.experiment not in results:
            row["verdict"] = "not run"
        else:
            try:
                estimate = claim.measure(results[claim.experiment])
            except (ValueError, KeyError, ZeroDivisionError) as err:
                row.update(verdict="not confirmed", note=f"measure failed: {err}")
            else:
                row.update(measured=estimate.value, low=estimate.low, high=estimate.high,
                           verdict=claim.verdict(estimate))
        rows.append(row)
    return pd.DataFrame(rows, columns=["id", "reference", "statement", "experiment", "measured", "low", "high",
                                       "expected", "tolerance", "verdict", "note"])


def table1(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 1 of the paper with the measured exponents beside the stated rates."""
    audit = evaluate(results).set_index("id")

    def cell(claim_id):
        if claim_id not in audit.index or not np.isfinite(audit.loc[claim_id, "measured"]):
            return "n/a"
        row = audit.loc[claim_id]
        return f"{row['measured']:.2f} [{row['low']:.2f}, {row['high']:.2f}] ({row['verdict']})"

    return pd.DataFrame([
        {"algorithm": "RS (Algorithm 1, Theorem 1)", "paper rate": "O(eps^-3)",
         "exponent in eps, ramp": cell("theorem1_exponent_ramp"),
         "exponent in eps, bowl": cell("theorem1_exponent_bowl"), "exponent in d": "—",
         "per-step decrease exponent (Lemma 2)": cell("lemma2_exponent"),
         "per-step decrease exponent (Lemma 4)": "—"},
        {"algorithm": "SA (Algorithm 2, Theorem 2)", "paper rate": "O(d^-1 eps^-2 max{1, 1/(d^3 eps)})",
         "exponent in eps, ramp": cell("theorem2_exponent_ramp"), "exponent in eps, bowl": "—",
         "exponent in d": cell("theorem2_exponent_d"), "per-step decrease exponent (Lemma 2)": "—",
         "per-step decrease exponent (Lemma 4)": cell("lemma4_exponent_eps")},
    ])
