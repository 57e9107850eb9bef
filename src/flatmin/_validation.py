"""Checks of the library's own arguments (numbers > 0, seeds), shared with the workflow's settings schema,
which builds on the library and not the reverse."""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def check_positive(name: str, value, *, allow_inf: bool = False, note: str = "") -> None:
    """Raise ValueError naming ``name`` and ``value`` unless ``value`` is a real number > 0 (a Python,
    NumPy or 0-d JAX number, not a bool), finite unless ``allow_inf``; ``note`` adds what else is
    allowed."""
    real = not isinstance(value, (bool, np.bool_)) and isinstance(value, (numbers.Real, np.number, jax.Array))
    if real and np.ndim(value) == 0 and np.isrealobj(value):
        number = float(value)
        if number > 0 and (allow_inf or math.isfinite(number)):
            return
    kind = "a number > 0" if allow_inf else "a finite number > 0"
    raise ValueError(f"{name} must be {kind}{f' ({note})' if note else ''}, got {value!r}")


SEEDS_RULE = "an integer n >= 1 (seeds 0..n-1) or a non-empty list of distinct integers >= 0"


def seed_list(seeds) -> list[int]:
    """The seeds ``seeds`` stands for: a count ``n`` is ``0..n-1``, a sequence is itself. Raises
    ValueError naming the value unless it is :data:`SEEDS_RULE`."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds >= 1:
            return list(range(int(seeds)))
    elif isinstance(seeds, (list, tuple, np.ndarray)) and len(seeds):
        values = [int(s) for s in seeds if isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0]
        if len(values) == len(seeds) and len(set(values)) == len(values):
            return values
    raise ValueError(f"seeds = {seeds!r}: seeds are {SEEDS_RULE}")
