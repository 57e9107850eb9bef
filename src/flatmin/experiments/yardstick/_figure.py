"""The yardstick's figure: gradient queries to flat against eps, one panel per problem."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator

from flatmin.experiments.yardstick._ranking import median_with_interval
from flatmin.method import get_method
from flatmin.plotting import log_log


def _style(method: str) -> dict:
    known = get_method(method)
    return {"label": known.label or method, **known.style}


def _panel(ax, rows: pd.DataFrame, problem: str) -> None:
    """Each method's median queries (95% interval) per eps where at least half its seeds are flat, with the
    fraction flat where some are not; the methods flat at no eps are named in the panel, those that do not
    apply too."""
    absent, never = [], []
    for method, group in rows.groupby("method", sort=False):
        status = group["status"].iloc[0]
        if status.startswith("not "):
            absent.append(_style(method)["label"])
            continue
        points = []
        for eps, at in group.groupby("eps"):
            queries = np.where(at["flat"].to_numpy(bool), at["gradient_queries"], np.inf)
            median, low, high = median_with_interval(queries)
            if np.isfinite(median):
                points.append((eps, median, low, high))
                if not at["flat"].all():  # the fraction flat, where some seeds are not
                    ax.annotate(f"{int(at['flat'].sum())}/{len(at)}", (eps, median), fontsize=6,
                                color=_style(method).get("color"), xytext=(3, 3), textcoords="offset points")
        if not points:
            never.append(_style(method)["label"])
            continue
        eps, median, low, high = map(np.asarray, zip(*points))
        high = np.where(np.isfinite(high), high, median)  # an open interval is drawn to the median
        style = _style(method)
        ax.errorbar(eps, median, yerr=[median - low, high - median], fmt="o", capsize=2, ms=3, **style)
    log_log(ax)
    levels = sorted(rows["eps"].unique())
    ax.set_xticks(levels, [f"{level:g}" for level in levels], fontsize=7)  # the eps run, not decades
    ax.xaxis.set_minor_locator(NullLocator())
    notes = ([f"not flat within the budget: {', '.join(never)}"] if never else []) + (
        [f"not applicable or not run: {', '.join(absent)}"] if absent else [])
    if notes:
        ax.text(0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=6, va="bottom", wrap=True)
    ax.set(xlabel="target accuracy ε", ylabel="gradient queries to an (ε, √ε)-flat point",
           title=f"{problem} (d = {int(rows['dim'].iloc[0])})")
    ax.legend(fontsize=6, loc="upper right")


def plot(results: pd.DataFrame, config: dict):
    sweep = results[results["stage"] == "sweep"]
    if sweep.empty:
        raise ValueError("the yardstick's table has no sweep rows: nothing to plot")
    problems = list(dict.fromkeys(sweep["problem"]))
    columns = min(3, len(problems))
    fig, axes = plt.subplots(math.ceil(len(problems) / columns), columns, figsize=(5 * columns, 4.2 * math.ceil(
        len(problems) / columns)), layout="constrained", squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        _panel(ax, sweep[sweep["problem"] == problem], problem)
    for ax in list(axes.flat)[len(problems):]:
        ax.set_axis_off()
    fig.suptitle("Yardstick: per-sample gradient queries to the first flat point, each method at its best setting "
                 f"of an equal tuning grid; median and 95% interval over {sweep['seed'].nunique()} seeds")
    return fig
