"""Runs recorded at checkpoints: the grid of recorded steps and the random keys of the steps between.

A run of ``steps`` steps is recorded at a few of them (the checkpoints) and advanced from one to the
next in segments. Step ``t`` of a run with key ``key`` draws its randomness from
``jax.random.fold_in(key, t)``, never from a key split along the way: the iterates then do not depend
on where the checkpoints fall, so a run can be recorded more or less densely, or re-simulated from any
checkpoint, and still pass through the same points.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np


def checkpoint_steps(stop: int, *, every: int | None = None, intervals: int | None = None) -> np.ndarray:
    """Sorted distinct integer steps from 0 to ``stop``, spaced by ``every`` or in ``intervals`` parts.

    Give exactly one of:
      every: steps ``0, every, 2 every, ...`` below ``stop``, then ``stop``.
      intervals: ``intervals + 1`` evenly spaced points from 0 to ``stop`` rounded to integers (points
        that rounding merges count once); ``intervals = 0`` gives ``[0]``.
    """
    if (every is None) == (intervals is None):
        raise ValueError(f"give exactly one of every and intervals, got every={every!r}, intervals={intervals!r}")
    if every is not None:
        return np.unique(np.r_[np.arange(0, stop, every), stop])
    return np.unique(np.round(np.linspace(0, stop, intervals + 1)).astype(int))


def run_steps(step: Callable, state, start, stop, *, key: jax.Array):
    """``state`` after steps ``start, ..., stop - 1`` of ``state <- step(state, fold_in(key, t), t)``.

    A ``lax.fori_loop``: traceable, and ``start``, ``stop`` may be traced. ``state`` may be any pytree
    (an iterate, or an iterate with counters).
    """
    return jax.lax.fori_loop(start, stop, lambda t, s: step(s, jax.random.fold_in(key, t), t), state)
