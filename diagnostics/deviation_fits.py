"""The pure-analysis half of ``diagnostics/deviations.py``: fits and decompositions of measured tables.

Every function takes arrays or DataFrames (the paper profile's rows, or per-seed rows of the targeted
runs) and returns numbers; none runs an algorithm, so ``tests/test_deviations.py`` checks them on
synthetic data whose answer is known.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from flatmin.analysis import local_slopes, loglog_slope


def slopes(frame: pd.DataFrame, level: str, value: str) -> tuple[float, ...]:
    """Log-log slopes of ``value`` between consecutive ``level``s (one row, or several samples, per level)."""
    return tuple(float(s) for s in local_slopes(frame, level, value)[1])


# ---------------------------------------------------------------------------------------- 1. RS, ramp
def offset_fit(eps, steps) -> dict:
    """Least squares ``steps = T0 + c eps^-3`` (a constant cost on top of the theorem's rate) and the
    exponent left in ``steps - T0``: -3 if an offset were the whole deviation."""
    eps, steps = np.asarray(eps, float), np.asarray(steps, float)
    (offset, c), *_ = np.linalg.lstsq(np.c_[np.ones_like(eps), eps**-3], steps, rcond=None)
    return {"T0": float(offset), "c": float(c), "exponent_after_offset": loglog_slope(eps, steps - offset)}


def width_correction_fit(eps, steps) -> dict:
    """Least squares ``steps = a eps^-3 + b eps^-2.5``: the ramp's finite bottom adds a term one half
    power of eps below the leading one (its flat end sits a fixed distance from the bottom while the
    start moves out like eps^-1/2). ``max_relative_residual`` says how well two terms describe it."""
    eps, steps = np.asarray(eps, float), np.asarray(steps, float)
    (a, b), *_ = np.linalg.lstsq(np.c_[eps**-3, eps**-2.5], steps, rcond=None)
    fitted = a * eps**-3 + b * eps**-2.5
    return {"a": float(a), "b": float(b), "max_relative_residual": float(np.max(np.abs(steps / fitted - 1))),
            "exponent_after_correction": loglog_slope(eps, steps - b * eps**-2.5)}


def ramp_flow_steps(eps: float, slope_factor: float, drop: float, width: float, eta_prime: float,
                    rho: float) -> float:
    """RS's steps from the ramp's sharp start to its first flat point were the eps0 gate open at every step.

    On the minima ``trbar(u, 0) = C + s width q(u / width)``, ``s = slope_factor sqrt(eps)``,
    ``q(z) = sqrt(1 + z^2) - 1``; a perturbed step moves ``u`` by ``eta' rho^2 / 2 d trbar/du`` (the
    sphere average of ``f(x + rho z)`` adds ``rho^2 / 2 trbar``), so the steps are ``2 width /
    (eta' rho^2 s)`` times the integral of ``1 / q'(z) = sqrt(1 + z^2) / z`` from the flat end
    (``s q'(z) = sqrt(eps)``) to the start (``s width q(z) = drop``). With ``q' = 1`` throughout (zero
    width) this is ``2 drop / (eta' rho^2 s^2)``, ``eps^-3 / 2`` under Theorem 1's schedule.
    """
    s = slope_factor * math.sqrt(eps)
    z_start = math.sqrt((1 + drop / (s * width)) ** 2 - 1)
    z_flat = 1 / math.sqrt(slope_factor**2 - 1)

    def antiderivative(z):
        return math.sqrt(1 + z * z) - math.asinh(1 / z)

    return 2 * width / (eta_prime * rho**2 * s) * (antiderivative(z_start) - antiderivative(z_flat))


def gate_open_steps(metrics: pd.DataFrame, first_flat: dict) -> pd.Series:
    """Per seed, the steps before ``first_flat[seed]`` that took the perturbed branch: the checkpoints'
    ``perturbed_fraction`` (fraction since the previous checkpoint) accumulated, linear in between."""
    counts = {}
    for seed, rows in metrics[metrics["phase"] == "main"].groupby("seed"):
        rows = rows.sort_values("step")
        steps = rows["step"].to_numpy(float)
        cumulative = np.r_[0.0, np.cumsum(rows["perturbed_fraction"].to_numpy()[1:] * np.diff(steps))]
        counts[seed] = float(np.interp(first_flat[seed], steps, cumulative))
    return pd.Series(counts, name="gate_open_steps")


def rs_ramp_budget(means: pd.DataFrame) -> dict:
    """The measured exponent as -3 plus measured shares. ``means``: one row per eps with ``steps`` (all
    seeds of the table), ``steps_run`` and ``gate_open`` (the rerun seeds) and ``flow_steps``
    (:func:`ramp_flow_steps`). ``steps_run = gate_open / p``, so the shares add up exactly."""
    means = means.assign(gate_fraction=means["gate_open"] / means["steps_run"])
    fit = {column: loglog_slope(means["eps"], means[column])
           for column in ("steps", "steps_run", "gate_open", "gate_fraction", "flow_steps")}
    return {**{f"exponent_{column}": value for column, value in fit.items()},
            "width": fit["flow_steps"] + 3, "gate": -fit["gate_fraction"],
            "rest": fit["gate_open"] - fit["flow_steps"], "seeds": fit["steps"] - fit["steps_run"]}


# ------------------------------------------------------------------------------- 2, 3, 5. SA's kicks
def kick_motion(u, kicked) -> dict:
    """Motion of ``u`` towards the flat end split by step kind: ``A`` over the kick (gate-open) steps,
    the first-order drift; ``B`` over the plain GD steps between kicks, the return of each kick's
    normal excursion, which moves ``u`` too. ``u``: ``(steps + 1,)``, ``kicked``: ``(steps,)`` bool."""
    du = -np.diff(np.asarray(u, float))
    kicked = np.asarray(kicked, bool)
    return {"steps": kicked.size, "kicks": int(kicked.sum()), "A": float(du[kicked].sum()),
            "B": float(du[~kicked].sum())}


def pooled_kicks(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed-pooled totals per ``dim`` of :func:`kick_motion` rows and the factors of ``steps``:
    ``steps = steps_per_kick * kicks`` and ``kicks = invariant / (dim (1 + B/A))``, where ``invariant``
    is constant if each kick's first-order drift is proportional to d and the path length is fixed."""
    pooled = rows.groupby("dim")[["steps", "kicks", "A", "B"]].sum().reset_index()
    seeds = rows.groupby("dim").size().to_numpy()
    return pooled.assign(
        steps=pooled["steps"] / seeds, kicks=pooled["kicks"] / seeds,
        steps_per_kick=pooled["steps"] / pooled["kicks"], gate_fraction=pooled["kicks"] / pooled["steps"],
        one_plus_B_over_A=1 + pooled["B"] / pooled["A"], A_per_kick=pooled["A"] / pooled["kicks"],
        motion_per_kick=(pooled["A"] + pooled["B"]) / pooled["kicks"],
        invariant=pooled["kicks"] / seeds * pooled["dim"] * (1 + pooled["B"] / pooled["A"]))


def sa_dim_budget(pooled: pd.DataFrame) -> pd.DataFrame:
    """Per pair of consecutive d: the slope of ``steps`` and its exact split ``-1 + steps per kick -
    (1 + B/A) + invariant``."""
    parts = {name: slopes(pooled, "dim", column) for name, column in (
        ("steps", "steps"), ("steps_per_kick", "steps_per_kick"), ("one_plus_B_over_A", "one_plus_B_over_A"),
        ("invariant", "invariant"))}
    dims = pooled["dim"].to_numpy()
    frame = pd.DataFrame({"from": dims[:-1], "to": dims[1:], **parts})
    return frame.assign(total=-1 + frame["steps_per_kick"] - frame["one_plus_B_over_A"] + frame["invariant"])


def fitted_budget(pooled: pd.DataFrame) -> dict:
    """:func:`sa_dim_budget`'s split for the least-squares exponent over all the rows of ``pooled``."""
    fit = {column: loglog_slope(pooled["dim"], pooled[column])
           for column in ("steps", "steps_per_kick", "one_plus_B_over_A", "invariant")}
    return {**fit, "total": -1 + fit["steps_per_kick"] - fit["one_plus_B_over_A"] + fit["invariant"]}


# ----------------------------------------------------------------------------- 4. SA, diagonal net
def steps_to_level(metrics: pd.DataFrame, level: float) -> pd.Series:
    """Per seed, the step at which ``tangent_grad_norm`` first falls to ``level``, log-linear between the
    two checkpoints around the crossing (NaN if it never does)."""
    found = {}
    for seed, rows in metrics[metrics["phase"] == "main"].groupby("seed"):
        rows = rows.sort_values("step")
        steps, norm = rows["step"].to_numpy(float), np.log(rows["tangent_grad_norm"].to_numpy())
        below = np.flatnonzero(norm <= math.log(level))
        if not below.size:
            found[seed] = np.nan
        elif below[0] == 0:
            found[seed] = steps[0]
        else:
            i = below[0]
            weight = (norm[i - 1] - math.log(level)) / (norm[i - 1] - norm[i])
            found[seed] = steps[i - 1] + weight * (steps[i] - steps[i - 1])
    return pd.Series(found, name="steps")


def threshold_budget(fixed: pd.DataFrame, moving: pd.DataFrame, near: tuple[float, ...]) -> dict:
    """The exponent in eps of the steps to ``tangent_grad_norm <= sqrt(eps)`` split as ``d ln T / d ln eps``
    at a fixed level plus ``1/2 d ln T / d ln L`` (the level moving with eps as ``L = sqrt(eps)``).

    ``fixed``: mean ``steps`` per (``eps``, ``level``); ``moving``: mean ``steps`` per ``eps`` to
    ``sqrt(eps)``. Both partial slopes are averaged over the ``near`` levels, those sqrt(eps) spans."""
    fixed = fixed[fixed["level"].isin(near)]
    in_eps = float(np.mean([loglog_slope(g["eps"], g["steps"]) for _, g in fixed.groupby("level")]))
    in_level = float(np.mean([loglog_slope(g["level"], g["steps"]) for _, g in fixed.groupby("eps")]))
    return {"fixed_level": in_eps, "threshold": in_level / 2, "sum": in_eps + in_level / 2,
            "measured": loglog_slope(moving["eps"], moving["steps"])}


def at_first_flat(metrics: pd.DataFrame, eps: float) -> pd.DataFrame:
    """Per seed, the flat test's two ratios, ``loss_gap / eps`` and ``tangent_grad_norm / sqrt(eps)``, at
    the last checkpoint before the first flat one (``_before``) and at it (``_at``): the condition whose
    ratio crosses 1 there is the one that decides when the run is flat."""
    rows = []
    for seed, group in metrics[metrics["phase"] == "main"].groupby("seed"):
        group = group.sort_values("step").reset_index(drop=True)
        first = int(np.flatnonzero(group["flat"].to_numpy())[0])
        gap, tangent = group["loss_gap"] / eps, group["tangent_grad_norm"] / math.sqrt(eps)
        rows.append({"seed": seed, "gap_before": gap[first - 1], "gap_at": gap[first],
                     "tangent_before": tangent[first - 1], "tangent_at": tangent[first]})
    return pd.DataFrame(rows)
