"""The escape experiment's statistics on the field's methods (issue 22), which its claims read: label-noise
SGD (Damian, Ma, Lee 2021) and 1-SAM (Wen, Ma, Li 2023) against RS and SA, best against best and at equal
gradient queries. A seed draws the same mini-batches for every method at a batch size, so two runs are
compared by the paired differences of their test accuracies over their common seeds: the statistic is the
lower end of the 95% Student-t interval of the mean difference, with that interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flatmin.analysis import Estimate, mean_with_ci
from flatmin.claims import NotRun
from flatmin.experiments.escape._figure import _options, gradients_per_step
from flatmin.experiments.escape._tables import claim_finals, escape_rows


LABEL_NOISE, ONE_SAM = "label_noise_sgd", "sam_per_sample"
#: The field's methods the perturbation methods are compared with at equal gradient queries.
FIELD = (LABEL_NOISE, ONE_SAM)


def _per_seed(escape: pd.DataFrame, method: str, batch, value, step, column: str = "test_acc") -> pd.Series:
    rows = escape[(escape["method"] == method) & (escape["batch"] == batch) & np.isclose(escape["value"], value)
                  & (escape["step"] == step)]
    return rows.set_index("seed")[column]


def _best_run(fin: pd.DataFrame, method: str, batch=None) -> tuple[int, float]:
    """``(batch, value)`` of ``method``'s run with the highest mean test accuracy in ``fin`` (a
    :func:`final_table`), at ``batch`` or over every batch."""
    rows = fin[(fin["method"] == method) & ((fin["batch"] == batch) if batch is not None else True)]
    if rows.empty:
        raise NotRun(f"no {method} run" + (f" at batch {batch}" if batch is not None else ""))
    best = rows.loc[rows["test_acc_mean"].idxmax()]
    return int(best["batch"]), float(best["value"])


def _paired_margin(a: pd.Series, b: pd.Series) -> Estimate:
    """The paired differences ``a - b`` over the common seeds: the lower end of their mean's 95%
    interval, with the interval."""
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        raise NotRun(f"a paired comparison needs 2 common seeds, found {len(seeds)}")
    ci = mean_with_ci((a[seeds] - b[seeds]).to_numpy())
    return Estimate(ci.low, ci.low, ci.high, ci.confidence)


def _best_against_best_of(first: str, second: str, at_first_batch: bool = False):
    """A measure: ``first``'s best run minus ``second``'s best run, each over every batch (with
    ``at_first_batch``, ``second`` at the batch of ``first``'s best), final test accuracy, paired over seeds."""

    def measure(results):
        escape = escape_rows(results)
        fin = claim_finals(results)
        b1, v1 = _best_run(fin, first)
        b2, v2 = _best_run(fin, second, b1 if at_first_batch else None)
        last = escape["step"].max()
        return _paired_margin(_per_seed(escape, first, b1, v1, last), _per_seed(escape, second, b2, v2, last))

    return measure


def _equal_queries(escape: pd.DataFrame, first: str, second: str, batch) -> Estimate:
    """``first`` against ``second`` at ``batch`` and equal gradient queries: at the largest budget of
    mini-batch gradients both reach at a checkpoint (steps x :func:`gradients_per_step`), each method's
    best value there (by mean test accuracy), paired over seeds."""
    steps = sorted(set(escape["step"]))
    picks = []
    for method in (first, second):
        rows = escape[(escape["method"] == method) & (escape["batch"] == batch)]
        options = rows["method_options"].iloc[0] if "method_options" in rows.columns else ""
        picks.append((method, rows, gradients_per_step(method, _options(options))))
    budgets = set.intersection(*({q * t for t in steps} for _, _, q in picks))
    budget = max(budgets)
    if budget == 0:
        raise NotRun(f"no checkpoint where {first} and {second} took equal gradient queries")
    accuracies = []
    for method, rows, q in picks:
        at = rows[rows["step"] == budget // q]
        value = float(at.groupby("value")["test_acc"].mean().idxmax())
        accuracies.append(_per_seed(escape, method, batch, value, budget // q))
    return _paired_margin(*accuracies)


def _against_field_equal_queries(method: str):
    """A measure: the smallest margin (:func:`_equal_queries`) of ``method`` over each of the :data:`FIELD`
    methods at every batch size both ran."""

    def measure(results):
        escape = escape_rows(results)
        margins = []
        for other in FIELD:
            common = set(escape[escape["method"] == method]["batch"]) & set(escape[escape["method"] == other]["batch"])
            margins += [_equal_queries(escape, method, other, batch) for batch in sorted(common)]
        if not margins:
            raise NotRun(f"no batch size at which {method} and a field method ({', '.join(FIELD)}) both ran")
        return min(margins, key=lambda estimate: estimate.value)

    return measure


def _best_runs_train_acc(results) -> float:
    """The smallest final training accuracy, over the seeds, of each method's best run (over every batch,
    by mean final test accuracy); the smallest over the methods."""
    escape, fin = escape_rows(results), claim_finals(results)
    last = escape["step"].max()
    worst = []
    for method in dict.fromkeys(fin["method"]):
        batch, value = _best_run(fin, method)
        worst.append(float(_per_seed(escape, method, batch, value, last, "train_acc").min()))
    return min(worst)
