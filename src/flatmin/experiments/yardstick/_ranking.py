"""The yardstick's ranking table: each problem's methods at the calibration eps, fewest queries first."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from flatmin.method import get_method

RESAMPLES = 2000


def median_with_interval(values, seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """The median of ``values`` (``inf`` for a seed never flat, so the median is finite only when at
    least half are flat) and its percentile bootstrap interval (``RESAMPLES`` resamples, fixed seed)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(RESAMPLES, values.size)), axis=1)
    low, high = np.quantile(medians, [(1 - confidence) / 2, (1 + confidence) / 2], method="lower")
    return float(np.median(values)), float(low), float(high)


def _queries_text(median: float, low: float, high: float) -> str:
    if not np.isfinite(median):
        return "not flat for half the seeds"
    return f"{median:,.0f} [{low:,.0f}, {'not flat' if not np.isfinite(high) else f'{high:,.0f}'}]"


def ranking(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (problem, method) of the sweep at each problem's calibration eps (its smallest),
    ranked by the median gradient queries to the first flat point (seeds not flat within the budget
    count as infinite), then by the fraction flat. Columns: ``problem``, ``eps``, ``rank`` (empty for a
    method that did not run), ``method``, ``setting`` (the tuned one), ``flat`` (seeds flat / seeds),
    ``gradient queries, median [95% CI]``, ``final trbar(Phi(x)), mean`` beside ``flattest trbar``, and
    ``status``."""
    rows = []
    sweep = results[results["stage"] == "sweep"]
    for problem, on_problem in sweep.groupby("problem", sort=False):
        eps = on_problem["eps"].min()
        cells = []
        for method, group in on_problem[on_problem["eps"] == eps].groupby("method", sort=False):
            status = group["status"].iloc[0]
            cell = {"problem": problem, "eps": eps, "method": get_method(method).label or method,
                    "status": status, "flattest trbar": group["flattest_trace"].iloc[0]}
            if status.startswith("not "):
                cell.update(flat="—", key=(np.inf, np.inf, 2), queries="—", trbar="—", setting="")
            else:
                cell["setting"] = _readable(group["setting"].iloc[0])
                queries = np.where(group["flat"].to_numpy(bool), group["gradient_queries"], np.inf)
                median, low, high = median_with_interval(queries)
                cell.update(flat=f"{int(group['flat'].sum())}/{len(group)}", key=(median, -group["flat"].mean(), 0),
                            queries=_queries_text(median, low, high),
                            trbar=f"{group['trbar_limit_end'].mean():.4g}" if status == "ran" else "—")
            cells.append(cell)
        cells.sort(key=lambda cell: cell["key"])
        for rank, cell in enumerate(cells, start=1):
            ran = cell["status"] == "ran"
            rows.append({"problem": cell["problem"], "eps": cell["eps"], "rank": rank if ran else "",
                         "method": cell["method"], "setting": cell["setting"], "flat": cell["flat"],
                         "gradient queries, median [95% CI]": cell["queries"],
                         "final trbar(Phi(x)), mean": cell["trbar"],
                         "flattest trbar": "unknown" if pd.isna(cell["flattest trbar"]) else f"{cell['flattest trbar']:.4g}",
                         "status": cell["status"]})
    return pd.DataFrame(rows)


def _readable(setting: str) -> str:
    """The tuned setting (JSON) with its numbers to 4 significant digits (a step size of 0.14 rather than
    its float64 expansion)."""
    return ", ".join(f"{key} = {value:.4g}" if isinstance(value, float) else f"{key} = {value}"
                     for key, value in json.loads(setting).items())
