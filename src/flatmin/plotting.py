"""Shared figure helpers (matplotlib)."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter

from flatmin.analysis import exponent, local_slopes


def log_log(ax) -> None:
    """Log scales on both axes, decade labels only (minor labels collide on short ranges)."""
    ax.set(xscale="log", yscale="log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))


def check_finite(frame, columns, what: str) -> None:
    """Raise ``ValueError`` naming the rows where ``columns`` hold NaN or inf: never plot them silently."""
    values = frame[list(columns)].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(f"non-finite {list(columns)} in {what} rows {frame.index[bad].tolist()[:10]}; refusing to plot")


def slope_label(frame, level: str, value: str) -> str:
    """A legend's slope text: ``", slope a [low, high]"`` (:func:`flatmin.analysis.exponent`) and, from
    3 levels on, the local slope of each pair of consecutive levels (in increasing level) on a second
    line; empty for one level."""
    if frame[level].nunique() < 2:  # a sweep of one level (a valid config) has no slope
        return ""
    fit = exponent(frame, level, value)
    text = f", slope {fit.value:.2f} [{fit.low:.2f}, {fit.high:.2f}]"
    if frame[level].nunique() >= 3:
        text += "\nlocal slopes: " + ", ".join(f"{slope:.2f}" for slope in local_slopes(frame, level, value)[1])
    return text
