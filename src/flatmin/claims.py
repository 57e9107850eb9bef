"""The audit: the paper's claims as executable checks on the experiments' results.

Each experiment module ends with the claims its results support, a ``CLAIMS`` tuple of :class:`Claim`,
next to the statistics they read. A claim names the paper's statement, the experiment whose results
table it reads, a function measuring a statistic with its confidence interval
(:class:`flatmin.analysis.Estimate`), the value or bound theory gives, and a tolerance. This module
holds what every claim shares: the verdict logic, the helpers the measures are built from,
:func:`collect_claims` (the registry, in the order of :func:`flatmin.experiments.experiment_names`),
:func:`evaluate`, which computes every verdict (nothing in the audit table is written by hand), and
:func:`table1`. Verdicts (:data:`VERDICTS`), by the claim's kind:

- ``equal``: ``consistent: interval contains`` when the 95% interval contains the stated value, else
  ``consistent: within tolerance`` when the value is within the tolerance of it (the note prints the
  distance and the tolerance);
- ``attained`` (an upper bound's exponent, on the instance built to attain it): ``bound attained:
  interval contains`` / ``bound attained: within tolerance`` in the same way;
- ``at_least`` / ``at_most`` (a bound not meant to be attained): ``bound holds`` when the value is on
  the bound's side, ``bound holds: within tolerance`` when it is beyond the bound by at most the
  tolerance (the interval plays no part);
- ``below`` / ``above`` (a statistic against a threshold, no tolerance): ``threshold met``;
- ``measured`` (a statistic no paper states a value for, e.g. a tuned method's exponent on the
  yardstick): ``measured: no stated value``, with the estimate and its interval;
- ``not confirmed``: none of the above, or the measure failed on the data. It is reported, never hidden;
- ``not run``: the config did not produce the claim's data (the experiment was disabled, or its table
  lacks the rows the claim selects); the note says what is missing.

A claim measured by a sweep exponent (:class:`SweepExponent`) also gets its local slopes, the slope
over the half of the levels nearest the theory's limit and whether the slope moves towards the
theory's value there (:func:`flatmin.analysis.slope_profile`, :func:`flatmin.analysis.trend_towards`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from types import ModuleType

import numpy as np
import pandas as pd

from flatmin.analysis import Estimate, exponent, slope_profile, trend_towards

VERDICTS = (
    "consistent: interval contains", "consistent: within tolerance",
    "bound attained: interval contains", "bound attained: within tolerance",
    "bound holds", "bound holds: within tolerance",
    "threshold met", "measured: no stated value", "not confirmed", "not run",
)
(CONTAINS, WITHIN, ATTAINED_CONTAINS, ATTAINED_WITHIN, HOLDS, HOLDS_WITHIN, THRESHOLD_MET, MEASURED, NOT_CONFIRMED,
 NOT_RUN) = VERDICTS
CONFIRMING = VERDICTS[:7]
"""The verdicts that support a claim (every one but ``measured``, ``not confirmed`` and ``not run``)."""
MEASURED_KIND = "measured"
"""The kind of a claim that reports a measured statistic against no stated value (verdict ``measured``)."""


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
      kind: ``"equal"``, ``"attained"`` (an upper bound's exponent on the instance built to attain
        it), ``"at_most"`` / ``"at_least"`` (a bound: the measured value on its side), ``"below"``
        (the measured value at most ``expected``: a test statistic against its threshold),
        ``"above"`` (strictly larger: a margin) or ``"measured"`` (no stated value: ``expected`` is NaN);
        the verdicts are in the module docstring.
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
        if self.kind == MEASURED_KIND:
            return MEASURED
        inside = estimate.low <= self.expected <= estimate.high
        close = self.distance(estimate) <= self.tolerance
        if self.kind in ("equal", "attained"):
            contains, within = (CONTAINS, WITHIN) if self.kind == "equal" else (ATTAINED_CONTAINS, ATTAINED_WITHIN)
            return contains if inside else within if close else NOT_CONFIRMED
        if self.kind in ("at_most", "at_least"):
            return HOLDS if self.distance(estimate) == 0 else HOLDS_WITHIN if close else NOT_CONFIRMED
        if self.kind == "below":
            return THRESHOLD_MET if estimate.value <= self.expected else NOT_CONFIRMED
        if self.kind == "above":
            return THRESHOLD_MET if estimate.value > self.expected else NOT_CONFIRMED
        raise ValueError(f"unknown claim kind {self.kind!r}")

    def distance(self, estimate: Estimate) -> float:
        """How far the measured value is from the stated value (``equal``, ``attained``) or beyond the
        bound or threshold (the other kinds: 0 on its side)."""
        if self.kind == MEASURED_KIND:
            return float("nan")
        gap = estimate.value - self.expected
        beyond = {"at_most": gap, "below": gap, "at_least": -gap, "above": -gap}
        return max(beyond[self.kind], 0.0) if self.kind in beyond else abs(gap)

    def explain(self, estimate: Estimate) -> str:
        """The note of a verdict reached through the tolerance, or refused beyond it: the distance,
        the tolerance and the interval."""
        verdict = self.verdict(estimate)
        if verdict not in (WITHIN, ATTAINED_WITHIN, HOLDS_WITHIN, NOT_CONFIRMED) or self.kind in ("below", "above",
                                                                                                MEASURED_KIND):
            return ""
        relation = "<=" if verdict != NOT_CONFIRMED else ">"
        return (f"distance {self.distance(estimate):.3g} {relation} tolerance {self.tolerance:g}; "
                f"{estimate.confidence:.0%} interval [{estimate.low:.4g}, {estimate.high:.4g}]")


class NotRun(LookupError):
    """The data a claim reads is absent: its experiment did not run, or its table lacks the rows the
    claim selects. :func:`evaluate` reports the claim as ``not run`` with this message, where a failure
    on data that is present reads ``not confirmed``."""


def select(frame: pd.DataFrame, **conditions) -> pd.DataFrame:
    """The rows of ``frame`` whose columns equal ``conditions`` (column -> value).

    Raises :class:`NotRun` naming the selection when no row matches: the config did not run it.
    """
    for column, value in conditions.items():
        frame = frame[frame[column] == value]
    if frame.empty:
        wanted = ", ".join(f"{column}={value!r}" for column, value in conditions.items())
        raise NotRun(f"no results rows with {wanted}")
    return frame


def z_ratio(value: float, se: float, reference: float, z: float = 1.96) -> Estimate:
    """``value / reference`` with the normal interval ``value +- z se``, divided by ``reference``."""
    return Estimate(value / reference, (value - z * se) / reference, (value + z * se) / reference)


TOWARD = {"eps": "small", "dim": "large"}
"""Where the theory's rate is a limit, per sweep level: eps -> 0, d -> infinity."""


@dataclasses.dataclass(frozen=True)
class SweepExponent:
    """A measure: the log-log exponent of ``value`` in ``level`` (:func:`flatmin.analysis.exponent`)
    over the rows ``rows(results)``; :meth:`profile` gives its local slopes
    (:func:`flatmin.analysis.slope_profile`), ``toward`` the sweep's limit (:data:`TOWARD`)."""

    rows: Callable[[pd.DataFrame], pd.DataFrame]
    level: str
    value: str

    def __call__(self, results: pd.DataFrame) -> Estimate:
        return exponent(self.rows(results), self.level, self.value)

    def profile(self, results: pd.DataFrame):
        return slope_profile(self.rows(results), self.level, self.value, TOWARD[self.level])


def sweep_exponent(sweep: str, algorithm: str, level: str, value: str, **where) -> SweepExponent:
    """The :class:`SweepExponent` of ``value`` in ``level`` over the rows of ``sweep`` and
    ``algorithm`` (and the further column values ``where``) that have a ``value``."""

    def rows(results):
        return select(results, sweep=sweep, algorithm=algorithm, **where).dropna(subset=[value])

    return SweepExponent(rows, level, value)


def point_estimate(statistic: Callable[[pd.DataFrame], float]):
    """A measure from a statistic without an interval (a worst case, a margin, an exact value): the
    estimate's interval is the value itself."""

    def measure(results):
        value = float(statistic(results))
        return Estimate(value, value, value)

    return measure


def instance_labels(results: pd.DataFrame) -> list[str]:
    """The ``instance`` labels of a results table, in the order of their first rows."""
    return list(dict.fromkeys(results["instance"]))


def collect_claims(experiments: Iterable[str | ModuleType] | None = None,
                   results: dict[str, pd.DataFrame] | None = None) -> tuple[Claim, ...]:
    """The ``CLAIMS`` of the experiment modules, in order: ``experiments`` (experiment names, see
    :func:`flatmin.experiments.get`, or modules), by default every known experiment
    (:func:`flatmin.experiments.experiment_names`). With ``results`` (experiment name -> results table),
    each named experiment's module that defines ``claims_from_results(table) -> tuple[Claim]`` adds the
    claims its table supports (one per method and problem that ran, say), after its ``CLAIMS``."""
    # Imported here: the experiment modules import this one for Claim and the helpers.
    from flatmin import experiments as known

    if experiments is None:
        experiments = known.experiment_names()
    claims = []
    for experiment in experiments:
        module = known.get(experiment) if isinstance(experiment, str) else experiment
        claims.extend(getattr(module, "CLAIMS", ()))
        from_results = getattr(module, "claims_from_results", None)
        if results is not None and isinstance(experiment, str) and experiment in results and from_results:
            claims.extend(from_results(results[experiment]))
    return tuple(claims)


def claim_ids() -> list[str]:
    return [claim.id for claim in collect_claims()]


COLUMNS = ["id", "reference", "statement", "experiment", "measured", "low", "high", "expected", "tolerance",
           "distance", "verdict", "note", "local_slopes", "asymptotic_half", "asymptotic_half_low",
           "asymptotic_half_high", "trend"]
"""The audit's columns: the claim, its estimate and verdict, then for a sweep exponent its slope profile."""


def _slope_columns(claim: Claim, results: pd.DataFrame) -> dict:
    """The profile columns of a :class:`SweepExponent` claim with >= 3 levels (else none)."""
    if not isinstance(claim.measure, SweepExponent):
        return {}
    try:
        profile = claim.measure.profile(results)
    except ValueError:  # fewer than 3 levels: no halves to compare
        return {}
    half = profile.asymptotic_half
    if claim.kind == MEASURED_KIND:
        trend = "no stated value"
    else:
        trend = {"towards": "towards theory", "away": "away from theory"}.get(trend_towards(profile, claim.expected),
                                                                            "no significant change")
    return {"local_slopes": profile.local_text(), "asymptotic_half": half.value, "asymptotic_half_low": half.low,
            "asymptotic_half_high": half.high, "trend": trend}


def evaluate(results: dict[str, pd.DataFrame], config: dict | None = None,
             claims: Iterable[Claim] | None = None) -> pd.DataFrame:
    """Evaluate ``claims`` (by default :func:`collect_claims` with ``results``: the experiments' claims and
    those their tables generate) on ``results`` (experiment name -> results table).

    A claim whose experiment is absent from ``results``, or whose measure raises :class:`NotRun`,
    gets the verdict ``not run`` with what is missing in ``note``. A measure that fails on the data
    (e.g. a run that never became flat leaves an exponent undefined) gets ``not confirmed`` with the
    reason in ``note``; a verdict reached through the tolerance (or refused beyond it) has the
    distance and the tolerance in ``note`` (:meth:`Claim.explain`). Returns one row per claim with
    the columns :data:`COLUMNS` (``distance``: :meth:`Claim.distance`); for a sweep exponent of >= 3
    levels, ``local_slopes`` (each consecutive pair of levels), the slope over the half of the levels
    nearest the sweep's limit with its interval (``asymptotic_half``, ``_low``, ``_high``) and
    ``trend``: ``towards theory``, ``away from theory`` or ``no significant change``
    (:func:`flatmin.analysis.trend_towards`)."""
    rows = []
    for claim in collect_claims(results=results) if claims is None else claims:
        row = {"id": claim.id, "reference": claim.reference, "statement": claim.statement,
               "experiment": claim.experiment, "expected": claim.expected_text or f"{claim.expected:g}",
               "tolerance": claim.tolerance, "measured": np.nan, "low": np.nan, "high": np.nan,
               "distance": np.nan, "note": ""}
        if claim.experiment not in results:
            row.update(verdict=NOT_RUN, note=f"experiment {claim.experiment!r} did not run")
        else:
            try:
                estimate = claim.measure(results[claim.experiment])
            except NotRun as missing:
                row.update(verdict=NOT_RUN, note=f"{claim.experiment}: {missing}")
            except (ValueError, KeyError, ZeroDivisionError) as err:
                row.update(verdict=NOT_CONFIRMED, note=f"measure failed: {err}")
            else:
                row.update(measured=estimate.value, low=estimate.low, high=estimate.high,
                           distance=claim.distance(estimate), verdict=claim.verdict(estimate),
                           note=claim.explain(estimate),
                           **_slope_columns(claim, results[claim.experiment]))
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def table1(results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Table 1 of the paper with the measured exponents beside the stated rates, for RS and SA in
    iterations (rows 0 and 1, as the theorems count) and in per-sample gradient queries (rows 2 and 3:
    the methods compared at equal oracle cost; a whole-loss gradient counts n, SA's final GD phase
    included; :func:`flatmin.first_flat_queries`). The iteration rows stay beside the query rows: the
    theorems, their budgets and the per-step decreases of Lemmas 2 and 4 are counted in iterations,
    and the two units part in d, where each step's whole-loss gradient costs n = d - 1 per-sample
    gradients on the ramp.

    Each cell is the exponent of an audit claim (:func:`evaluate`) with its interval and verdict (with
    the distance and tolerance where the verdict rests on the tolerance), and, for a sweep of >= 3
    levels, the slope over the half of the levels nearest the limit and its trend. The column
    ``measured from`` names, per row, the results tables and columns its cells are fitted on and their
    audit rows."""
    audit = evaluate(results).set_index("id")
    claims = {claim.id: claim for claim in collect_claims()}

    def cell(claim_id):
        if claim_id not in audit.index or not np.isfinite(audit.loc[claim_id, "measured"]):
            return "n/a"
        row = audit.loc[claim_id]
        text = f"{row['measured']:.2f} [{row['low']:.2f}, {row['high']:.2f}] ({row['verdict']}"
        if row["verdict"] in (WITHIN, ATTAINED_WITHIN, HOLDS_WITHIN):
            text += f", distance {row['distance']:.2f} <= tolerance {row['tolerance']:g}"
        text += ")"
        if isinstance(row["trend"], str):
            text += (f"; asymptotic half {row['asymptotic_half']:.2f} [{row['asymptotic_half_low']:.2f}, "
                     f"{row['asymptotic_half_high']:.2f}], {row['trend']}")
        return text

    def source(claim_ids):
        """``<experiment>.csv, <column> (audit: <claim ids>)``, one entry per results column the claims
        (each a :class:`SweepExponent`) are fitted on."""
        reads: dict[str, list[str]] = {}
        for claim_id in claim_ids:
            claim = claims[claim_id]
            reads.setdefault(f"{claim.experiment}.csv, {claim.measure.value}", []).append(claim_id)
        return "; ".join(f"{column} (audit: {', '.join(ids)})" for column, ids in reads.items())

    columns = ("exponent in eps, ramp", "exponent in eps, bowl", "exponent in eps, diagonal net", "exponent in d",
               "per-step decrease exponent (Lemma 2)", "per-step decrease exponent (Lemma 4)")
    rows = (  # algorithm, unit, paper rate, the claim of each column (None: not a claim of this algorithm)
        ("RS (Algorithm 1, Theorem 1)", "iterations", "O(eps^-3)",
         ("theorem1_exponent_ramp", "theorem1_exponent_bowl", "theorem1_exponent_diagonal_net", None,
          "lemma2_exponent", None)),
        ("SA (Algorithm 2, Theorem 2)", "iterations", "O(d^-1 eps^-2 max{1, 1/(d^3 eps)})",
         ("theorem2_exponent_ramp", None, "theorem2_exponent_diagonal_net", "theorem2_exponent_d", None,
          "lemma4_exponent_eps")),
        ("RS (Algorithm 1, Theorem 1)", "per-sample gradient queries",
         "O(eps^-3) iterations of n to 2n per-sample gradients (n samples)",
         ("theorem1_queries_exponent_ramp", "theorem1_queries_exponent_bowl",
          "theorem1_queries_exponent_diagonal_net", None, None, None)),
        ("SA (Algorithm 2, Theorem 2)", "per-sample gradient queries",
         "O(d^-1 eps^-2 max{1, 1/(d^3 eps)}) iterations of n to n + 2 per-sample gradients (n = d - 1 on the "
         "ramp: d^0 in d)",
         ("theorem2_queries_exponent_ramp", None, "theorem2_queries_exponent_diagonal_net",
          "theorem2_queries_exponent_d", None, None)),
    )
    return pd.DataFrame([
        {"algorithm": algorithm, "unit": unit, "paper rate": rate,
         **{column: "—" if claim_id is None else cell(claim_id) for column, claim_id in zip(columns, ids)},
         "measured from": source([claim_id for claim_id in ids if claim_id is not None])}
        for algorithm, unit, rate, ids in rows])
