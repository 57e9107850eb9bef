"""Shared figure helpers (matplotlib)."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter


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
