"""E2 — per-step decrease of ``trbar(Phi(x_t))`` under the theory schedules (Lemmas 2 and 4).

On a problem whose trace is not flat along the minima (by default the ramp, where
``||dPhi grad trbar|| ~ slope_factor sqrt(eps)``), each seed runs the Theorem 1 (RS) or Theorem 2 (SA)
schedule for a window of ``window_fraction`` times the theorem's step budget and records
``(trbar(Phi(x_0)) - trbar(Phi(x_N))) / N``, and the same per perturbed step (dividing by the
number of steps the eps0 gate was open: GD steps leave Phi nearly unchanged, and the fraction of
gated steps depends on eps through the constants ``c0``, ``c2``). The lemmas predict ``Omega(eps^3)`` for RS and
``Omega(d min{1, eps d^3} eps^2)`` for SA while the iterate is not flat.

Settings: :class:`Settings` (paper values) and ``PRESETS["quick"]``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from pydantic import Field

import flatmin
import flatmin.settings
from flatmin.experiments._sweeps import make_instance, progress, schedule
from flatmin.plotting import check_finite, log_log, slope_label
from flatmin.settings import ConstantsPerAlgorithm, DimValues, EpsLists, Identifier, Seeds, Spec, SweepProblem
from flatmin.theory import decrease_bound, schedule_of
from flatmin.claims import Claim, sweep_exponent

ORDER = 2
CAPTION = (
    "E2, per-step decrease of trbar(Phi(x_t)) under the theory schedules against the target eps and "
    "against d, with the rates of Lemma 2 (RS, eps^3) and Lemma 4 (SA, d min{1, eps d^3} eps^2) drawn "
    "for comparison."
)


class DimSweepEps(Spec):
    """The eps of each algorithm in the d sweep; an algorithm left out is not run."""

    rs: float | None = Field(None, gt=0, description="RS's eps in the d sweep, a number > 0")
    sa: float | None = Field(None, gt=0, description="SA's eps in the d sweep, a number > 0")


class DimSweep(Spec):
    dim_param: Identifier = Field(description="the problem's keyword argument that sets the dimension (e.g. the valley's k)")
    values: DimValues = Field(min_length=1, description="values of dim_param, a non-empty list of integers >= 1")
    eps: DimSweepEps = Field(description="the eps of each algorithm, {rs: eps, sa: eps} (an algorithm left out is not run)")


class Settings(flatmin.settings.Settings):
    seeds: Seeds = Field(16, description="seeds of every run: an integer n >= 1 (seeds 0..n-1) or a non-empty list "
                         "of distinct integers >= 0")
    problem: SweepProblem = Field({"name": "valley_ramp", "params": {"m": 1, "k": 7}, "eps_param": "eps"},
                                  description="the problem, {name, params, eps_param?}; eps_param is set to each eps")
    eps: EpsLists = Field(
        {"rs": [0.01, 0.014, 0.02, 0.028, 0.04], "sa": [0.002, 0.0028, 0.004, 0.0056, 0.008]},
        description="eps sweep: eps values per algorithm, {rs: [eps...], sa: [eps...]}")
    constants: ConstantsPerAlgorithm = Field({"rs": {}, "sa": {}}, description=(
        "theory constants per algorithm, {rs: {...}, sa: {...}} (one entry per algorithm run)"))
    window_fraction: float = Field(0.05, gt=0, le=1, description=(
        "the measured window (and the burn-in before it) as a fraction of the step budget, in (0, 1]"))
    dim_sweep: DimSweep = Field(
        {"dim_param": "k", "values": [7, 15, 31, 63], "eps": {"rs": 0.02, "sa": 0.002}},
        description="d sweep at a fixed eps per algorithm: {dim_param, values, eps: {rs: eps, sa: eps}}")


PRESETS = {
    "quick": {
        "seeds": 8,
        "eps": {"rs": [0.02, 0.028, 0.04], "sa": [0.004, 0.0056, 0.008]},
        "dim_sweep": {"dim_param": "k", "values": [7, 31], "eps": {"sa": 0.004}},
    },
}


def measure_decrease(problem, algorithm: str, eps: float, seeds: int, constants: dict, fraction: float) -> pd.DataFrame:
    """One row per seed: the mean per-step decrease of ``trbar(Phi)`` over a window of
    ``fraction`` times the step budget, after a burn-in of the same length (the start is off the
    minima with the eps0 gate closed; the lemmas describe the steady phase)."""
    params, budget = schedule(algorithm, problem, eps, constants)
    window = max(1, math.ceil(fraction * budget))
    result = flatmin.run(problem, algorithm, None, params, 2 * window, seeds, record_every=window)
    start = result.metrics[result.metrics["step"] == window].set_index("seed")
    end = result.metrics[result.metrics["step"] == 2 * window].set_index("seed")
    return pd.DataFrame({
        "seed": start.index,
        "algorithm": algorithm,
        "eps": eps,
        "dim": problem.dim,
        "window": window,
        "decrease_per_step": ((start["trbar_limit"] - end["trbar_limit"]) / window).to_numpy(),
        "decrease_per_perturbed_step": (
            (start["trbar_limit"] - end["trbar_limit"]) / (window * end["perturbed_fraction"])
        ).to_numpy(),
        "tangent_grad_norm_start": start["tangent_grad_norm"].to_numpy(),
        "tangent_grad_norm_end": end["tangent_grad_norm"].to_numpy(),
        "perturbed_fraction": end["perturbed_fraction"].to_numpy(),
        "bound": decrease_bound(algorithm, eps, dim=problem.dim),
    })


def compute(config: dict) -> pd.DataFrame:
    """Rows per (sweep, algorithm, eps, dim, seed); columns of :func:`measure_decrease` plus ``sweep``."""
    frames = []
    for algorithm, eps_list in config["eps"].items():
        for eps in eps_list:
            problem = make_instance(config["problem"], eps)
            progress("decrease", f"{algorithm} eps={eps} d={problem.dim}")
            frame = measure_decrease(problem, algorithm, eps, config["seeds"],
                                     config["constants"][algorithm], config["window_fraction"])
            frames.append(frame.assign(sweep="eps"))
    sweep = config["dim_sweep"]
    for algorithm, eps in sweep["eps"].items():
        for value in sweep["values"]:
            problem = make_instance(config["problem"], eps, sweep["dim_param"], value)
            progress("decrease", f"{algorithm} eps={eps} d={problem.dim}")
            frame = measure_decrease(problem, algorithm, eps, config["seeds"],
                                     config["constants"][algorithm], config["window_fraction"])
            frames.append(frame.assign(sweep="dim"))
    return pd.concat(frames, ignore_index=True)


def plot(results: pd.DataFrame, config: dict):
    value = "decrease_per_perturbed_step"
    check_finite(results, [value, "bound"], "decrease")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, sweep, level, xlabel in ((axes[0], "eps", "eps", "target accuracy ε"),
                                     (axes[1], "dim", "dim", "dimension d")):
        rows = results[results["sweep"] == sweep]
        for i, (algorithm, group) in enumerate(rows.groupby("algorithm")):
            stats = group.groupby(level)[value].agg(["mean", "sem"]).reset_index()
            ax.errorbar(stats[level], stats["mean"], yerr=2 * stats["sem"], fmt="o", color=f"C{i}",
                        label=f"{algorithm.upper()} measured (±2 SE){slope_label(group, level, value)}")
            bound = group.groupby(level)["bound"].first()
            scale = stats["mean"].iloc[0] / bound.iloc[0]
            ax.plot(bound.index, scale * bound.to_numpy(), "--", color=f"C{i}",
                    label=f"{algorithm.upper()} lemma rate {schedule_of(algorithm).decrease_rate} (scaled)")
        log_log(ax)
        ax.set(xlabel=xlabel, ylabel="decrease of trbar(Φ(x)) per perturbed step")
        ax.legend(fontsize=7, title=f"95% CI; local slopes by increasing {level}", title_fontsize=7)
    dims = ", ".join(str(int(d)) for d in sorted(results[results["sweep"] == "eps"]["dim"].unique()))
    axes[0].set_title(f"(a) against ε on {config['problem']['name']}, d = {dims}")
    eps_text = ", ".join(f"{a.upper()} ε={e}" for a, e in config["dim_sweep"]["eps"].items())
    axes[1].set_title(f"(b) against d ({eps_text})")
    fig.suptitle(f"E2: per-step flatness gain under the theory schedules (Lemmas 2 and 4), {config['seeds']} seeds")
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)


CLAIMS = (
    Claim("lemma2_exponent", "Lemma 2", "RS per-step decrease of trbar(Phi) ~ eps^3 (exponent in eps, ramp)",
          "decrease", sweep_exponent("eps", "rs", "eps", "decrease_per_perturbed_step"), 3.0, 0.15, "attained", "3"),
    Claim("lemma2_dim", "Lemma 2", "RS per-step decrease does not depend on d (exponent in d)",
          "decrease", sweep_exponent("dim", "rs", "dim", "decrease_per_perturbed_step"), 0.0, 0.1, "equal", "0"),
    Claim("lemma4_exponent_eps", "Lemma 4", "SA per-step decrease ~ d eps^2 when d^3 eps >= 1 (exponent in eps)",
          "decrease", sweep_exponent("eps", "sa", "eps", "decrease_per_perturbed_step"), 2.0, 0.15, "attained", "2"),
    Claim("lemma4_exponent_d", "Lemma 4", "SA per-step decrease ~ d eps^2 when d^3 eps >= 1 (exponent in d)",
          "decrease", sweep_exponent("dim", "sa", "dim", "decrease_per_perturbed_step"), 1.0, 0.15, "attained", "1"),
)
