"""The escape experiment's tables, pure functions of its results table: the rows of one record, the final
values per run and the best runs (which the claims, the figure and the flatness records read), and the
summary of Definition 3's measurements."""

from __future__ import annotations

import pandas as pd

from flatmin.claims import NotRun
from flatmin.nets import FLATNESS, METRICS

__all__ = ["FLATNESS", "METRICS", "RUN_KEYS", "best_runs", "escape_rows", "final_table", "flatness_table", "minimizer_rows"]


def escape_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The escape rows of a results table (every row of a table without a ``record`` column); a table
    written before run groups had knobs (a ``rho`` column only) gets ``knob = "rho"`` and ``value = rho``."""
    if "record" in results.columns:
        results = results[results["record"] == "escape"]
    if "value" not in results.columns:
        results = results.assign(knob="rho", value=results["rho"])
    return results


def minimizer_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The minimizer rows of a results table: ``minimizer`` (bad, normal, confusion), the :data:`METRICS`,
    ``param_norm``, ``epochs`` and ``seconds``."""
    rows = results[results["record"] == "minimizer"]
    return rows.rename(columns={"method": "minimizer"})[["minimizer", *METRICS, "param_norm", "epochs",
                                                         "seconds"]].reset_index(drop=True)


#: The keys of a run: the method, its batch size and the value of its knob.
RUN_KEYS = ["method", "batch", "value"]


def final_table(escape: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Per run (:data:`RUN_KEYS`, with its ``knob`` and ``rho``): mean and standard deviation over seeds
    of every metric at checkpoint ``step`` (default the last: the final values; ``<metric>_mean``,
    ``<metric>_std``), the number of ``seeds``, the changes ``d_test_acc``, ``d_hessian_trace`` from step 0
    (their mean and standard deviation over seeds) and ``train_acc_min`` (the smallest training accuracy
    over the seeds and the checkpoints up to ``step``); in the config's order of the methods."""
    escape = escape_rows(escape)
    last = escape["step"].max() if step is None else step
    if last not in set(escape["step"]):
        raise ValueError(f"no checkpoint at step {last}; the checkpoints: {sorted(set(escape['step']))}")
    keys = RUN_KEYS
    start = escape[escape["step"] == 0].set_index(keys + ["seed"])
    end = escape[escape["step"] == last].set_index(keys + ["seed"])
    changed = ["test_acc", "hessian_trace"]
    delta = (end[changed] - start[changed]).add_prefix("d_")
    table = pd.concat([end[list(METRICS)], delta], axis=1).reset_index()
    cols = [c for c in table.columns if c not in keys + ["seed"]]
    agg = table.groupby(keys)[cols].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg = agg.reset_index()
    agg.insert(3, "seeds", table.groupby(keys).size().to_numpy())
    agg.insert(3, "step", last)
    named = escape.drop_duplicates(keys).set_index(keys)[["knob", "rho"]]
    agg = agg.join(named, on=keys)
    agg["train_acc_min"] = agg[keys].apply(tuple, axis=1).map(
        escape[escape["step"] <= last].groupby(keys)["train_acc"].min()).to_numpy()
    order = {m: i for i, m in enumerate(dict.fromkeys(escape["method"]))}  # the config's order
    agg = agg.sort_values(keys, key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)
    front = ["method", "batch", "knob", "value", "rho", "step", "seeds"]
    return agg[front + [c for c in agg.columns if c not in front]]


def best_runs(escape: pd.DataFrame, panel_batch: int) -> set[tuple[str, int, float]]:
    """The ``(method, batch, value)`` of each method's best run at ``panel_batch`` and over every batch,
    best by the mean final test accuracy over seeds (ties: the smaller batch, then the smaller value)."""
    fin = final_table(escape).sort_values(RUN_KEYS)
    chosen = set()
    for _, runs in fin.groupby("method"):
        for subset in (runs[runs["batch"] == panel_batch], runs):
            if len(subset):
                best = subset.loc[subset["test_acc_mean"].idxmax()]
                chosen.add((best["method"], int(best["batch"]), float(best["value"])))
    return chosen


def flatness_table(results: pd.DataFrame) -> pd.DataFrame:
    """The flatness records of a results table, one row per point (the two minimizers first), mean over
    the measured seeds: test accuracy, training loss, Hessian trace, top eigenvalue and
    ``||dPhi grad trbar||`` (Definition 3), each with its standard error."""
    rows = results[results["record"] == "flatness"]
    keys = ["method", "batch", "knob", "value"]
    columns = ["test_acc", "loss", "hessian_trace", "hessian_trace_se", "top_eigenvalue", "tangent_grad_norm",
               "tangent_grad_norm_se"]
    table = rows.groupby(keys, sort=False)[columns].mean().reset_index()
    table.insert(3, "seeds", rows.groupby(keys, sort=False).size().to_numpy())
    return table


def claim_finals(results: pd.DataFrame) -> pd.DataFrame:
    """:func:`final_table` of the escape rows of ``results``, for a claim: :class:`flatmin.claims.NotRun`
    where there are none."""
    escape = escape_rows(results)
    if escape.empty:
        raise NotRun("no escape rows")
    return final_table(escape)
