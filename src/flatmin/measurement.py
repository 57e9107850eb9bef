"""Measuring a simulated trajectory: losses, Definition 3's flatness measures, the flat test and the
first flat step, apart from the simulation (:func:`flatmin.simulate`) that produced it.

One trajectory can be measured many ways without running it again: another ``eps``, the other
flat criterion, or after a final GD phase of another length. Only :func:`first_flat_step` at a
resolution finer than the checkpoints goes back to the simulation, through
:meth:`flatmin.algorithms.Trajectory.replay`, and only over the one checkpoint interval per seed
that ends at the first flat checkpoint.

Like the simulation, every function here computes in float64 and raises
:class:`flatmin._precision.Float64RequiredError` when JAX's 64-bit mode is off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from flatmin.flatness import _check_tolerances, flat_test, flatness_fn
from flatmin.problem import Problem
from flatmin._precision import require_x64


def _check_after_gd(after_gd) -> int:
    if not (isinstance(after_gd, (int, np.integer)) and after_gd >= 0):
        raise ValueError(f"after_gd must be an integer >= 0, got {after_gd!r}")
    return int(after_gd)


@functools.lru_cache(maxsize=64)
def _loss_and_grad_norm(problem: Problem):
    return jax.jit(jax.vmap(lambda x: (problem.loss(x), jnp.linalg.norm(jax.grad(problem.loss)(x)))))


# Points per compiled call of the flatness measures: CHUNK, or the power of two just above a smaller
# count. Calls then take a few shapes only, so a problem's measures (the flow to Phi, the Hessian and its
# third derivatives) compile once or twice, however many points the checkpoints and the first-flat-step
# refinements bring; a padded chunk repeats its first point.
CHUNK = 128


@functools.lru_cache(maxsize=64)
def _batched_flatness(problem: Problem):
    return jax.jit(jax.vmap(flatness_fn(problem)))


def flatness_measures(trajectory, points, after_gd: int = 0) -> dict:
    """:func:`flatmin.flatness` of ``points`` ``(n, d)`` on ``trajectory.problem``, each measured
    after ``after_gd`` plain GD steps of size ``eta`` from it: ``{name: (n,) array}``."""
    require_x64("flatmin.measurement.flatness_measures")
    after_gd = _check_after_gd(after_gd)
    points = jnp.asarray(points)
    count = points.shape[0]
    measures = _batched_flatness(trajectory.problem)
    if not count:
        return measures(points)
    size = min(CHUNK, 1 << (count - 1).bit_length())
    padded = jnp.concatenate([points, jnp.broadcast_to(points[:1], (-count % size, points.shape[1]))])
    chunks = [measures(trajectory.descend(padded[start:start + size], after_gd))
              for start in range(0, padded.shape[0], size)]
    return {name: jnp.concatenate([chunk[name] for chunk in chunks])[:count] for name in chunks[0]}


def measure(trajectory, *, flatness: bool = True, after_gd: int = 0, eps: float | None = None,
            criterion: str = "distance") -> pd.DataFrame:
    """One row per (seed, checkpoint) of ``trajectory`` (a :class:`flatmin.algorithms.Trajectory`).

    Columns ``step, seed, phase`` (``"main"`` or ``"final_gd"``), ``loss, grad_norm`` (of the
    iterate), ``perturbed_fraction`` (the simulation's), and with ``flatness`` the measures of
    :func:`flatmin.flatness` (``distance, loss_gap, trbar_limit, tangent_grad_norm``, at the point
    ``after_gd`` GD steps on), and with ``eps`` the boolean ``flat`` of the (eps, sqrt(eps)) test on
    them (``criterion``: ``"distance"`` or ``"loss_gap"``, see :func:`flatmin.is_flat`).
    """
    require_x64("flatmin.measure")
    if eps is not None and not flatness:
        raise ValueError("eps needs flatness=True (the flat test uses Phi)")
    if eps is not None:
        _check_tolerances(eps, None, criterion)
    num_seeds, num_records, dim = trajectory.iterates.shape
    points = trajectory.iterates.reshape(-1, dim)
    steps = np.tile(trajectory.checkpoints, num_seeds)
    loss, grad_norm = _loss_and_grad_norm(trajectory.problem)(points)
    table = {
        "step": steps,
        "seed": np.repeat(trajectory.seeds, num_records),
        "phase": np.where(steps > trajectory.main_steps, "final_gd", "main"),
        "loss": np.asarray(loss),
        "grad_norm": np.asarray(grad_norm),
        "perturbed_fraction": np.asarray(trajectory.perturbed_fraction).reshape(-1),
    }
    if flatness:
        measures = flatness_measures(trajectory, points, after_gd)
        table.update({name: np.asarray(value) for name, value in measures.items()})
    metrics = pd.DataFrame(table)
    if eps is not None:
        metrics["flat"] = np.asarray(flat_test(metrics, eps, criterion=criterion))
    return metrics


def first_flat_step(trajectory, metrics: pd.DataFrame, eps: float, *, criterion: str = "distance",
                    resolution: int | None = None, after_gd: int = 0) -> np.ndarray:
    """Per seed of ``trajectory``, the first step whose iterate is (eps, sqrt(eps))-flat, -1 if none
    (:func:`first_flat`)."""
    return first_flat(trajectory, metrics, eps, criterion=criterion, resolution=resolution, after_gd=after_gd)[0]


def first_flat_queries(trajectory, metrics: pd.DataFrame, eps: float, *, criterion: str = "distance",
                       resolution: int | None = None, after_gd: int = 0) -> dict[str, np.ndarray]:
    """Per seed, the oracle queries spent to reach the first (eps, sqrt(eps))-flat point: the main steps
    before it (perturbed or not, counted exactly) and the ``after_gd`` GD steps that output it, in
    per-sample units (:meth:`flatmin.Trajectory.queries`); -1 where no point is flat."""
    first, perturbed = first_flat(trajectory, metrics, eps, criterion=criterion, resolution=resolution,
                                  after_gd=after_gd)
    return queries_to(trajectory, first, perturbed, after_gd)


def queries_to(trajectory, first, perturbed, after_gd: int = 0) -> dict[str, np.ndarray]:
    """The queries of :func:`first_flat_queries` from :func:`first_flat`'s output; a first flat step in
    the final GD phase counts its GD steps."""
    found = first >= 0
    main = np.where(found, np.minimum(first, trajectory.main_steps), 0)
    final_gd = np.where(found, np.maximum(first - trajectory.main_steps, 0), 0) + after_gd
    queries = trajectory.queries(main, np.where(found, perturbed, 0), final_gd)
    return {name: np.where(found, value, -1) for name, value in queries.items()}


def first_flat(trajectory, metrics: pd.DataFrame, eps: float, *, criterion: str = "distance",
               resolution: int | None = None, after_gd: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per seed of ``trajectory``, the first step whose iterate is (eps, sqrt(eps))-flat (-1 if none), and
    how many main steps before it were perturbed (exactly, from the simulation and the replay).

    ``metrics`` is :func:`measure` of ``trajectory`` with the same ``eps``, ``criterion`` and
    ``after_gd``; its first flat checkpoint is the answer at the checkpoints' resolution. With
    ``resolution`` smaller than the checkpoint spacing, the (main-phase) checkpoint interval that
    ends at the first flat checkpoint is re-simulated from the checkpoint before it and tested every
    ``resolution`` steps; where the re-simulated points are never flat (they can differ from the
    checkpoint by rounding), the checkpoint is kept.
    """
    require_x64("flatmin.first_flat_step")
    if "flat" not in metrics.columns:
        raise ValueError("metrics has no 'flat' column: measure the trajectory with eps first")
    flat_steps = metrics[metrics["flat"]].groupby("seed")["step"].min()
    first = np.array([flat_steps.get(s, -1) for s in trajectory.seeds])
    checkpoints = trajectory.checkpoints
    before = trajectory.perturbed_steps()  # perturbed main steps before each checkpoint
    last_main = np.searchsorted(checkpoints, trajectory.main_steps)
    at = np.searchsorted(checkpoints, np.minimum(np.maximum(first, 0), trajectory.main_steps))
    perturbed = np.where(first >= 0, before[np.arange(len(first)), np.minimum(at, last_main)], 0)
    if resolution is None:
        return first, perturbed
    if not (isinstance(resolution, (int, np.integer)) and resolution >= 1):
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    main = checkpoints[checkpoints <= trajectory.main_steps]
    rows = np.flatnonzero((first > 0) & (first <= trajectory.main_steps))
    if resolution >= np.diff(main).max() or not rows.size:
        return first, perturbed
    index = np.searchsorted(checkpoints, first)
    points, ends, counts = trajectory.replay(rows, index[rows] - 1, first[rows], resolution)
    measures = flatness_measures(trajectory, points.reshape(-1, trajectory.problem.dim), after_gd)
    flat = np.asarray(flat_test(measures, eps, criterion=criterion)).reshape(len(rows), -1)
    refined, refined_perturbed = first.copy(), perturbed.copy()
    for i, row in enumerate(rows):
        hits = np.flatnonzero(flat[i])
        if hits.size:
            refined[row] = int(ends[i, hits[0]])
            refined_perturbed[row] = before[row, index[row] - 1] + int(counts[i, hits[0]])
    return refined, refined_perturbed
