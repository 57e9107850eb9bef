"""The audit: the paper's claims as executable checks on the experiments' results.

Each experiment module ends with the claims its results support, a ``CLAIMS`` tuple of :class:`Claim`,
next to the statistics they read. A claim names the paper's statement, the experiment whose results
table it reads, a function measuring a statistic with its confidence interval
(:class:`flatmin.analysis.Estimate`), the value or bound theory gives, and a tolerance. This module
holds what every claim shares: the verdict logic, the helpers the measures are built from,
:func:`collect_claims` (the registry, in the order of :func:`flatmin.experiments.experiment_names`),
:func:`evaluate`, which computes every verdict (nothing in the audit table is written by hand), and
:func:`table1`. Verdicts:

- ``consistent``: the measured value agrees with the stated value within the tolerance (or its
  interval contains the stated value);
- ``bound attained``: an upper bound's exponent is met on the instance built to attain it;
- ``bound holds``: the measured value respects an upper bound without attaining it;
- ``not confirmed``: none of the above, or the measure failed on the data. It is reported, never hidden;
- ``not run``: the config did not produce the claim's data (the experiment was disabled, or its table
  lacks the rows the claim selects); the note says what is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from types import ModuleType

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


def sweep_exponent(sweep: str, algorithm: str, level: str, value: str, **where):
    """A measure: the log-log exponent of ``value`` in ``level`` (:func:`flatmin.analysis.exponent`)
    over the rows of ``sweep`` and ``algorithm`` (and the further column values ``where``) that
    have a ``value``."""

    def measure(results):
        rows = select(results, sweep=sweep, algorithm=algorithm, **where)
        return exponent(rows.dropna(subset=[value]), level, value)

    return measure


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


def collect_claims(experiments: Iterable[str | ModuleType] | None = None) -> tuple[Claim, ...]:
    """The ``CLAIMS`` of the experiment modules, in order: ``experiments`` (experiment names, see
    :func:`flatmin.experiments.get`, or modules), by default every known experiment
    (:func:`flatmin.experiments.experiment_names`)."""
    # Imported here: the experiment modules import this one for Claim and the helpers.
    from flatmin import experiments as known

    if experiments is None:
        experiments = known.experiment_names()
    modules = [known.get(experiment) if isinstance(experiment, str) else experiment for experiment in experiments]
    return tuple(claim for module in modules for claim in getattr(module, "CLAIMS", ()))


def claim_ids() -> list[str]:
    return [claim.id for claim in collect_claims()]


def evaluate(results: dict[str, pd.DataFrame], config: dict | None = None,
             claims: Iterable[Claim] | None = None) -> pd.DataFrame:
    """Evaluate ``claims`` (by default :func:`collect_claims`) on ``results`` (experiment name ->
    results table).

    A claim whose experiment is absent from ``results``, or whose measure raises :class:`NotRun`,
    gets the verdict ``not run`` with what is missing in ``note``. A measure that fails on the data
    (e.g. a run that never became flat leaves an exponent undefined) gets ``not confirmed`` with the
    reason in ``note``. Returns one row per claim: ``id, reference, statement, experiment, measured,
    low, high, expected, tolerance, verdict, note``.
    """
    rows = []
    for claim in collect_claims() if claims is None else claims:
        row = {"id": claim.id, "reference": claim.reference, "statement": claim.statement,
               "experiment": claim.experiment, "expected": claim.expected_text or f"{claim.expected:g}",
               "tolerance": claim.tolerance, "measured": np.nan, "low": np.nan, "high": np.nan, "note": ""}
        if claim.experiment not in results:
            row.update(verdict="not run", note=f"experiment {claim.experiment!r} did not run")
        else:
            try:
                estimate = claim.measure(results[claim.experiment])
            except NotRun as missing:
                row.update(verdict="not run", note=f"{claim.experiment}: {missing}")
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
