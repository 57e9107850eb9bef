"""The escape experiment's tables, pure functions of its results table: the rows of one record, the final
values per run and the best runs (which the claims, the figure and the flatness records read), and the
summary of Definition 3's measurements."""

from __future__ import annotations

import pandas as pd

from flatmin.nets import FLATNESS, METRICS

__all__ = ["FLATNESS", "METRICS", "best_runs", "escape_rows", "final_table", "flatness_table", "minimizer_rows"]


def escape_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The escape rows of a results table (every row of a table without a ``record`` column)."""
    if "record" in results.columns:
        results = results[results["record"] == "escape"]
    return results


def minimizer_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The minimizer rows of a results table: ``minimizer`` (bad, normal, confusion), the :data:`METRICS`,
    ``param_norm``, ``epochs`` and ``seconds``."""
    rows = results[results["record"] == "minimizer"]
    return rows.rename(columns={"method": "minimizer"})[["minimizer", *METRICS, "param_norm", "epochs",
                                                         "seconds"]].reset_index(drop=True)


def final_table(escape: pd.DataFrame) -> pd.DataFrame:
    """Per (method, batch, rho): mean and standard deviation over seeds of every metric at the last
    checkpoint (``<metric>_mean``, ``<metric>_std``), the number of ``seeds``, and the changes
    ``d_test_acc``, ``d_hessian_trace`` from step 0 (their mean and standard deviation over seeds); in the
    config's order of the methods."""
    escape = escape_rows(escape)
    last = escape["step"].max()
    keys = ["method", "batch", "rho"]
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
    order = {m: i for i, m in enumerate(dict.fromkeys(escape["method"]))}  # the config's order
    return agg.sort_values(["method", "batch", "rho"], key=lambda s: s.map(order) if s.name == "method"
                           else s).reset_index(drop=True)


def best_runs(escape: pd.DataFrame, panel_batch: int) -> set[tuple[str, int, float]]:
    """The ``(method, batch, rho)`` of each method's best run at ``panel_batch`` and over every batch,
    best by the mean final test accuracy over seeds (ties: the smaller batch, then the smaller rho)."""
    fin = final_table(escape).sort_values(["method", "batch", "rho"])
    chosen = set()
    for _, runs in fin.groupby("method"):
        for subset in (runs[runs["batch"] == panel_batch], runs):
            if len(subset):
                best = subset.loc[subset["test_acc_mean"].idxmax()]
                chosen.add((best["method"], int(best["batch"]), float(best["rho"])))
    return chosen


def flatness_table(results: pd.DataFrame) -> pd.DataFrame:
    """The flatness records of a results table, one row per point (the two minimizers first), mean over
    the measured seeds: test accuracy, training loss, Hessian trace, top eigenvalue and
    ``||dPhi grad trbar||`` (Definition 3), each with its standard error."""
    rows = results[results["record"] == "flatness"]
    keys = ["method", "batch", "rho"]
    columns = ["test_acc", "loss", "hessian_trace", "hessian_trace_se", "top_eigenvalue", "tangent_grad_norm",
               "tangent_grad_norm_se"]
    table = rows.groupby(keys, sort=False)[columns].mean().reset_index()
    table.insert(3, "seeds", rows.groupby(keys, sort=False).size().to_numpy())
    return table
