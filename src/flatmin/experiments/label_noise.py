"""Label-noise SGD: from a sharp minimum to the flattest one, on a time scale of eta^-2 steps.

Label-noise SGD (:mod:`flatmin.methods.label_noise_sgd`) perturbs every sampled target by ``sigma xi``.
Near the minima its noise has a covariance proportional to ``sigma^2 H`` (square loss: the Gauss-Newton
Hessian), and the drift it leaves along the minima is the Riemannian gradient flow of ``tr(Hess f)`` run at speed
``eta^2 sigma^2`` per step (Blanc, Gupta, Valiant, Valiant, COLT 2020; Damian, Ma, Lee, NeurIPS 2021;
Li, Wang, Arora, ICLR 2022): it reaches the flattest minimum, in order ``(eta sigma)^-2`` steps, while GD
stays where it converged. Two stages::

    trajectory   for each problem of ``problems`` (a known flattest trace), label-noise SGD and GD from
                 the sharp start (initial_point at each seed's key), flatmin.run with eps (when given) and
                 measure_after_gd = final_gd_steps, as the yardstick: trbar(Phi(x_t)) at every checkpoint
                 (of the point after final_gd_steps GD steps) and the first (eps, sqrt(eps))-flat step
                 (Definition 3, after the final GD steps)
    time_scale   on ``time_scale.problem``, label-noise SGD at fixed sigma for each step size eta of
                 ``time_scale.step_sizes``, steps = ceil(slow_time / (eta sigma)^2) rounded up to a whole
                 number of the ``records`` checkpoint intervals: the first step where trbar(Phi(x_t)) <=
                 level = flattest + level_fraction (start - flattest) (linear interpolation between the
                 two checkpoints around the crossing; NaN: not reached)

On the depth-2 hyperbola the drift is explicit: ``D = u1^2 - u2^2`` obeys exactly ``D_{t+1} = D_t (1 - 4
eta^2 (r_t - sigma xi_t)^2)`` with ``r = u1 u2 - 1``, and ``trbar(Phi(u)) = sqrt(D^2 + 4)``, so the steps to a
level are ``log(D_0 / D_level) / (4 eta^2 sigma^2 (1 + O(eta beta)))``: the residual's stationary variance
``eta sigma^2 |grad p|^2`` adds to ``sigma^2``. The budget ``slow_time`` is in the law's own unit, ``(eta sigma)^-2``
steps; a seed that has not crossed within it leaves the exponent undefined (the claim then reads ``not
confirmed`` with the reason), so the budget cannot bend the fit.

Results table (:func:`compute`), columns :data:`COLUMNS`: ``stage``; ``problem`` (label), ``problem_name``,
``dim``, ``method``, ``eta`` (absolute), ``eta_beta`` (``eta`` times the problem's smoothness), ``sigma``,
``batch_size`` (NaN: the whole loss), ``seed``; trajectory rows, one per (problem, method, seed,
checkpoint): ``step``, ``trbar_limit``, ``loss``, ``distance``, ``eps`` and ``first_flat_step`` (NaN where
not flat, or without eps); time-scale rows, one per (eta, seed): ``steps`` (the budget), ``level`` and
``steps_to_level``; every row ``flattest_trace`` and ``start_trbar`` (trbar(Phi) at the starts, mean over seeds).
Statistics for the audit (:data:`CLAIMS`): :func:`final_excess`, :func:`time_scale_rows`.
"""

from __future__ import annotations

import math
import warnings

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

import flatmin
import flatmin.settings
from flatmin._validation import seed_list
from flatmin.analysis import exponent, mean_with_ci, slope_profile
from flatmin.claims import Claim, NotRun, SweepExponent, select
from flatmin.experiments._sweeps import make_instance, progress
from flatmin.method import get_method
from flatmin.plotting import check_finite, log_log
from flatmin.settings import Count, ProblemSpec, Seeds, Spec

ORDER = 8
METHOD, CONTROL = "label_noise_sgd", "gd"
COLUMNS = ["stage", "problem", "problem_name", "dim", "method", "eta", "eta_beta", "sigma", "batch_size", "seed",
           "step", "trbar_limit", "loss", "distance", "eps", "first_flat_step", "steps", "level", "steps_to_level",
           "flattest_trace", "start_trbar"]
CAPTION = (
    "Label-noise SGD from a sharp minimum: trbar(Phi(x_t)) against iterations for label-noise SGD and GD "
    "(mean and 1 SD over seeds; dashed: the flattest minimum's trbar), and the steps until trbar(Phi(x_t)) "
    "falls below a fixed level against the step size eta at fixed sigma (log-log; dots: seeds, circles: means, "
    "with the fitted slope and its 95% interval beside the eta^-2 time scale of Li, Wang and Arora)."
)

_HYPERBOLA = {
    # eta beta = 0.2 (beta = 8.5 at the sharp point (2, 1/2)): D shrinks by ~4 eta^2 sigma^2 = 2.2e-3 a
    # step, the 5% excess in ~800 steps and flat (tangent gradient <= 0.1) in ~2000.
    "label": "hyperbola", "problem": {"name": "hyperbola", "params": {"depth": 2}},
    "eta": 0.2, "sigma": 1.0, "batch_size": None, "steps": 4000, "records": 40, "eps": 0.01, "final_gd_steps": 50,
}
_DIAGONAL_NET = {
    # Mini-batch 1: the noise covariance is sigma^2 H rather than sigma^2 H / n for the whole batch, n = 10 times
    # the drift; eta beta = 0.3 keeps a single sample's curvature (~n beta) stable. At sigma = 3 the excess
    # trace is ~5% at 12000 steps, ~1% at 20000. No eps: 50 GD steps do not bring the noisy iterates within any
    # small eps of the minima, whose sparse coordinates are flat directions of f (quartic); Phi is then taken at
    # the iterate itself (final_gd_steps 0: Phi after 50 GD steps would add a numerical flow per checkpoint).
    "label": "diagonal_net",
    "problem": {"name": "diagonal_net", "params": {"n": 10, "p": 30, "sparsity": 3, "seed": 0}},
    "eta": 0.3, "sigma": 3.0, "batch_size": 1, "steps": 20000, "records": 20, "eps": None, "final_gd_steps": 0,
}


class TrajectoryProblem(Spec):
    label: str = Field(min_length=1, description="the problem's name in the table and the figure, a non-empty string")
    problem: ProblemSpec = Field(description="the problem, {name, params}; it needs predictions, targets and a "
                                 "flattest_trace")
    eta: float = Field(gt=0, description="step size in units of 1/beta (beta: the problem's smoothness), a number > 0")
    sigma: float = Field(gt=0, description="label noise scale sigma, a number > 0")
    batch_size: Count | None = Field(None, ge=1, description="label-noise SGD's mini-batch, an integer >= 1 or null "
                                     "(every sample)")
    steps: Count = Field(ge=1, description="main steps of every run, an integer >= 1")
    records: Count = Field(ge=1, description="checkpoints per run, an integer >= 1")
    eps: float | None = Field(None, gt=0, description="eps of the (eps, sqrt(eps))-flat test, a number > 0, or null "
                              "(no flat test)")
    final_gd_steps: Count = Field(0, ge=0, description=(
        "plain GD steps from each checkpoint before the flatness measures and the flat test (the output of "
        "Algorithm 2's last phase, as the yardstick measures it), an integer >= 0"))


class TimeScale(Spec):
    problem: ProblemSpec = Field(description="the problem, {name, params}, with predictions, targets and a "
                                 "flattest_trace")
    sigma: float = Field(gt=0, description="the fixed label noise scale sigma, a number > 0")
    step_sizes: list[float] = Field(min_length=2, description=(
        "step sizes eta in units of 1/beta, >= 2 distinct numbers > 0 (the claim's fit wants >= 4)"))
    seeds: Seeds = Field(description="seeds per step size, an integer n >= 1 or a list of distinct integers >= 0")
    level_fraction: float = Field(gt=0, lt=1, description=(
        "the level trbar falls below: flattest + level_fraction (start - flattest), a number in (0, 1)"))
    slow_time: float = Field(gt=0, description=(
        "the budget in units of (eta sigma)^-2 steps (the law's time scale), a number > 0"))
    records: Count = Field(ge=2, description="checkpoints per run locating the crossing, an integer >= 2")

    @model_validator(mode="after")
    def _distinct_positive(self):
        bad = [eta for eta in self.step_sizes if not (math.isfinite(eta) and eta > 0)]
        if bad or len(set(self.step_sizes)) != len(self.step_sizes):
            raise ValueError(f"step_sizes = {self.step_sizes!r}: need distinct finite numbers > 0")
        return self


class Settings(flatmin.settings.Settings):
    problems: list[TrajectoryProblem] = Field([_HYPERBOLA, _DIAGONAL_NET], description=(
        "the trajectory stage's problems, a list of {label, problem, eta, sigma, batch_size, steps, records, eps} "
        "(empty: no trajectory stage)"))
    seeds: Seeds = Field(8, description="seeds of the trajectory stage, an integer n >= 1 or a list of distinct "
                         "integers >= 0")
    flat_refine: Count = Field(20, ge=1, description=(
        "flat tests per checkpoint interval locating the first flat step, an integer >= 1"))
    # eta beta from 0.0125 to 0.2: the O(eta beta) correction to the rate is below ~5% at the smallest four.
    time_scale: TimeScale | None = Field(
        {"problem": {"name": "hyperbola", "params": {"depth": 2}}, "sigma": 1.0,
         "step_sizes": [0.0125, 0.025, 0.05, 0.1, 0.2], "seeds": 16, "level_fraction": 0.1, "slow_time": 1.0,
         "records": 400},
        description="the time-scale stage, {problem, sigma, step_sizes, seeds, level_fraction, slow_time, records}, "
        "or null (not run)")

    @model_validator(mode="after")
    def _distinct_labels(self):
        labels = [p.label for p in self.problems]
        if len(set(labels)) != len(labels):
            raise ValueError(f"problems: labels must be distinct, got {labels}")
        return self


PRESETS = {
    # The crossing comes at slow time ~0.34 (log(D_0 / D_level) / 4), the seeds within ~2% of it: a budget of 0.6.
    # The diagonal net is left out (its claim reads "not run"): its compiled loop and numerical flow alone
    # would cost as much as the quick profile gives this experiment.
    "quick": {
        "problems": [_HYPERBOLA],
        "seeds": 4,
        "time_scale": {"problem": {"name": "hyperbola", "params": {"depth": 2}}, "sigma": 1.0,
                       "step_sizes": [0.025, 0.05, 0.1, 0.2], "seeds": 8, "level_fraction": 0.1, "slow_time": 0.6,
                       "records": 200},
    },
}


def _problem(spec: dict):
    problem = make_instance(spec)
    missing = [name for name in ("predictions", "targets", "flattest_trace") if getattr(problem, name) is None]
    if missing:
        raise ValueError(f"label_noise: problem {spec['name']!r} has no {', '.join(missing)} (label-noise SGD needs "
                         "predictions and targets, the claims a flattest_trace)")
    return problem


def _base(problem, label: str, method: str, eta: float, sigma: float, batch_size) -> dict:
    return {"problem": label, "problem_name": problem.name, "dim": problem.dim, "method": method, "eta": eta,
            "eta_beta": eta * (problem.smoothness or 1.0), "sigma": sigma if method == METHOD else np.nan,
            "batch_size": np.nan if batch_size is None or method != METHOD else float(batch_size),
            "flattest_trace": problem.flattest_trace}


def trajectories(spec: dict, config: dict) -> pd.DataFrame:
    """The trajectory stage on one problem: label-noise SGD and GD, trbar(Phi) per checkpoint and the first
    flat step (:func:`flatmin.run` as the yardstick calls it)."""
    problem = _problem(spec["problem"])
    eta = spec["eta"] / (problem.smoothness or 1.0)
    seeds = seed_list(config["seeds"])
    record_every = max(1, spec["steps"] // spec["records"])
    frames = []
    for method in (METHOD, CONTROL):
        params = {"eta": eta, **({"sigma": spec["sigma"], "batch_size": spec.get("batch_size")}
                                 if method == METHOD else {})}
        progress("label_noise", f"{spec['label']}: {method} {params}, {spec['steps']} steps")
        flat = {} if spec.get("eps") is None else {
            "eps": spec["eps"], "flat_resolution": max(1, record_every // config["flat_refine"])}
        with warnings.catch_warnings():
            warnings.simplefilter("error", flatmin.AlreadyFlatWarning)  # a flat start would make the test moot
            result = flatmin.run(problem, method, None, params, spec["steps"], seeds, record_every=record_every,
                                 measure_after_gd=spec["final_gd_steps"], **flat)
        rows = result.metrics[result.metrics["phase"] == "main"]
        first = (pd.Series(np.where(result.first_flat_step >= 0, result.first_flat_step, np.nan), index=seeds)
                 if spec.get("eps") is not None else pd.Series(np.nan, index=seeds))
        frames.append(pd.DataFrame({
            **_base(problem, spec["label"], method, eta, spec["sigma"], spec.get("batch_size")),
            "stage": "trajectory", "seed": rows["seed"].to_numpy(), "step": rows["step"].to_numpy(),
            "trbar_limit": rows["trbar_limit"].to_numpy(), "loss": rows["loss"].to_numpy(),
            "distance": rows["distance"].to_numpy(), "eps": np.nan if spec.get("eps") is None else spec["eps"],
            "first_flat_step": first.loc[rows["seed"]].to_numpy()}))
    table = pd.concat(frames, ignore_index=True)
    start = table[table["step"] == 0].groupby("method")["trbar_limit"].mean()
    return table.assign(start_trbar=float(start.mean()))


def crossing_step(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first step where ``values`` (at increasing ``steps``) is ``<= level``, interpolated linearly
    between the checkpoint before and the first one at or below; NaN if none is; 0 if the first is."""
    below = np.flatnonzero(values <= level)
    if below.size == 0:
        return float("nan")
    k = below[0]
    if k == 0:
        return float(steps[0])
    s0, s1, v0, v1 = steps[k - 1], steps[k], values[k - 1], values[k]
    return float(s0 + (s1 - s0) * (v0 - level) / (v0 - v1))


def time_scale(spec: dict) -> pd.DataFrame:
    """The time-scale stage: per step size and seed, the steps until trbar(Phi(x_t)) <= level."""
    problem = _problem(spec["problem"])
    beta = problem.smoothness or 1.0
    seeds = seed_list(spec["seeds"])
    # The starts depend on the seeds only, so the level is the same at every eta.
    starts = jax.vmap(problem.start)(jax.numpy.stack([jax.random.PRNGKey(s) for s in seeds]))
    start = float(np.mean([flatmin.flatness(problem, x)["trbar_limit"] for x in starts]))
    flattest = problem.flattest_trace
    level = flattest + spec["level_fraction"] * (start - flattest)
    frames = []
    for size in spec["step_sizes"]:
        eta, sigma = size / beta, spec["sigma"]
        # A whole number of checkpoint intervals: the same checkpoint count at every eta, one compiled loop.
        every = int(math.ceil(spec["slow_time"] / (eta * sigma) ** 2 / spec["records"]))
        steps = every * spec["records"]
        progress("label_noise", f"time scale: eta beta = {size:g}, {steps} steps")
        result = flatmin.run(problem, METHOD, None, {"eta": eta, "sigma": sigma}, steps, seeds, record_every=every)
        metrics = result.metrics[result.metrics["phase"] == "main"]
        hits = [crossing_step(at["step"].to_numpy(float), at["trbar_limit"].to_numpy(float), level)
                for _, at in metrics.groupby("seed", sort=False)]
        frames.append(pd.DataFrame({**_base(problem, problem.name, METHOD, eta, sigma, None), "stage": "time_scale",
                                    "seed": metrics.groupby("seed", sort=False).size().index.to_numpy(),
                                    "steps": steps, "level": level, "steps_to_level": hits, "start_trbar": start}))
    return pd.concat(frames, ignore_index=True)


def compute(config: dict) -> pd.DataFrame:
    """The trajectory stage on every problem, then the time-scale stage (module docstring)."""
    frames = [trajectories(spec, config) for spec in config["problems"]]
    if config.get("time_scale") is not None:
        frames.append(time_scale(config["time_scale"]))
    if not frames:
        raise ValueError("label_noise: nothing to run (no problems and no time_scale)")
    return pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS)


# --------------------------------------------------------------------------------------------------
# Statistics for the audit


def final_excess(results: pd.DataFrame, problem_name: str, method: str = METHOD) -> pd.Series:
    """Per seed, the relative excess ``(trbar_T - flattest) / flattest`` of trbar(Phi) at the last checkpoint
    of ``method`` on the (first) trajectory problem named ``problem_name``."""
    rows = select(results, stage="trajectory", problem_name=problem_name)
    rows = select(rows, problem=rows["problem"].iloc[0], method=method)
    last = rows[rows["step"] == rows["step"].max()].set_index("seed").sort_index()
    return (last["trbar_limit"] - last["flattest_trace"]) / last["flattest_trace"]


def _excess_measure(problem_name: str):
    def measure(results):
        return mean_with_ci(final_excess(results, problem_name).to_numpy())

    return measure


def time_scale_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The time-scale rows, every seed having crossed the level; a ValueError names the step sizes where
    some seed has not (the exponent is then undefined, not fitted on the seeds that crossed)."""
    rows = select(results, stage="time_scale")
    missing = rows[~np.isfinite(rows["steps_to_level"].to_numpy(float))]
    if len(missing):
        counts = missing.groupby("eta_beta").size().to_dict()
        raise ValueError(f"seeds not below the level within the budget, per eta beta: {counts}")
    return rows


class EtaExponent(SweepExponent):
    """A :class:`flatmin.claims.SweepExponent` in the step size, whose limit is eta -> 0."""

    def profile(self, results):
        return slope_profile(self.rows(results), self.level, self.value, "small")


# --------------------------------------------------------------------------------------------------
# Figure


def label_of(fit) -> str:
    return f"{fit.value:.2f} [{fit.low:.2f}, {fit.high:.2f}]"


def plot(results: pd.DataFrame, config: dict):
    """One panel per trajectory problem (trbar(Phi) against iterations, label-noise SGD and GD) and one of
    the steps to the level against eta (log-log)."""
    trajectory = results[results["stage"] == "trajectory"]
    scale = results[results["stage"] == "time_scale"]
    check_finite(trajectory, ["step", "trbar_limit"], "label_noise trajectory")
    labels = list(dict.fromkeys(trajectory["problem"]))
    panels = len(labels) + (not scale.empty)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False, layout="constrained")
    axes = list(axes[0])
    letters = iter("abcdefghij")
    for ax, label in zip(axes, labels):
        rows = trajectory[trajectory["problem"] == label]
        for method, group in rows.groupby("method", sort=False):
            known = get_method(method)
            stats = group.groupby("step")["trbar_limit"].agg(["mean", "std"])
            std = stats["std"].fillna(0.0).to_numpy()
            first = group.iloc[0]
            name = known.label + (f" (σ={first['sigma']:g})" if method == METHOD else "")
            flat = group.groupby("seed")["first_flat_step"].first()
            if np.isfinite(group["eps"].iloc[0]):
                name += f", flat at ε={group['eps'].iloc[0]:g}: {int(flat.notna().sum())}/{len(flat)} seeds"
            excess = (stats["mean"].iloc[-1] - group["flattest_trace"].iloc[0]) / group["flattest_trace"].iloc[0]
            name += f"; last: {excess:+.1%} over the flattest"
            line = ax.plot(stats.index, stats["mean"], label=name, **known.style)[0]
            ax.fill_between(stats.index, stats["mean"] - std, stats["mean"] + std, color=line.get_color(), alpha=0.2,
                            lw=0)
        flattest = rows["flattest_trace"].iloc[0]
        ax.axhline(flattest, color="gold", ls="--", lw=1.5, label=f"flattest minimum: {flattest:.3g}")
        ax.set(xlabel="iterations", ylabel="trbar(Φ(xₜ)) = tr(∇²f)/d at the limit",
               title=f"({next(letters)}) {label} (d={rows['dim'].iloc[0]}), η={rows['eta_beta'].iloc[0]:g}/β")
        ax.legend(fontsize=7)
    if not scale.empty:
        ax = axes[-1]
        check_finite(scale, ["eta"], "label_noise time-scale")
        crossed = np.isfinite(scale["steps_to_level"].to_numpy(float))
        ax.plot(scale["eta"][crossed], scale["steps_to_level"][crossed], ".", color="C1", alpha=0.4, label="seeds")
        # A step size where some seed has not crossed within the budget has no mean (and the fit none): the
        # count is written there instead, at the budget.
        complete = scale.groupby("eta")["steps_to_level"].apply(lambda v: bool(np.isfinite(v).all()))
        for eta, at in scale[~scale["eta"].map(complete)].groupby("eta"):
            ax.annotate(f"{int(np.isfinite(at['steps_to_level']).sum())}/{len(at)} below the level",
                        (eta, at["steps"].iloc[0]), fontsize=7, color="C3")
        rows = scale[scale["eta"].map(complete)]
        if not rows.empty:
            means = rows.groupby("eta")["steps_to_level"].mean()
            fit = (f", slope {label_of(exponent(rows, 'eta', 'steps_to_level'))}"
                   if complete.all() and len(means) >= 2 else ", no slope: some seed not below the level")
            ax.plot(means.index, means, "o", mfc="none", color="C1", ms=8, label=f"mean{fit}")
            ref = means.iloc[0] * (means.index / means.index[0]) ** -2.0
            ax.plot(means.index, ref, "k--", lw=1, label="η⁻² (Li, Wang, Arora)")
        log_log(ax)
        first = scale.iloc[0]
        ax.set(xlabel="step size η", ylabel="iterations until trbar(Φ(xₜ)) ≤ level",
               title=f"({next(letters)}) {first['problem']}: time scale at σ={first['sigma']:g}, "
                     f"level {first['level']:.3g}\n(from {first['start_trbar']:.3g} towards "
                     f"{first['flattest_trace']:.3g})")
        ax.legend(fontsize=7)
    # the title names what is measured; whether it matches the theory is the audit's
    fig.suptitle("Label-noise SGD and GD from a sharp minimum: trbar(Φ(x_t)) against the flattest value, and the "
                 "steps to a fixed level against η")
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)

_REFERENCE = "Blanc et al. COLT 2020; Damian, Ma, Lee NeurIPS 2021; Li, Wang, Arora ICLR 2022"
_THRESHOLD = ("mean over seeds with a Student-t 95% interval; threshold 5% [reconstructed], E6's for RS and SA: "
              "on the default instances the sharp start is at +112% (hyperbola) and +1780% (diagonal net)")

CLAIMS = (
    Claim("label_noise_flattest_hyperbola", _REFERENCE, "Label-noise SGD from the sharp minimum (2, 1/2) of the "
          "hyperbola reaches the flattest minimum: relative excess of trbar(Phi) at the last checkpoint over the "
          f"flattest value 2 ({_THRESHOLD})", "label_noise", _excess_measure("hyperbola"), 0.05, 0.0, "below",
          "<= 0.05"),
    Claim("label_noise_flattest_diagonal_net", _REFERENCE, "Label-noise SGD (mini-batch 1) from the sharp "
          "interpolator of the diagonal net reaches the flattest minimum (the weighted basis-pursuit LP's): "
          f"relative excess of trbar(Phi) at the last checkpoint over the LP's ({_THRESHOLD})", "label_noise",
          _excess_measure("diagonal_net"), 0.05, 0.0, "below", "<= 0.05"),
    Claim("label_noise_time_scale_eta", "Li, Wang, Arora ICLR 2022 (Theorem: time scale eta^-2)", "At fixed sigma, "
          "the steps of label-noise SGD until trbar(Phi(x_t)) on the hyperbola falls below a fixed level (90% of the "
          "way from the sharp start to the flattest minimum) scale as eta^-2: exponent in eta over the step sizes "
          "(BCa bootstrap over seeds; tolerance 0.1 [reconstructed]: the rate's O(eta beta) correction, eta beta "
          "<= 0.2)", "label_noise", EtaExponent(time_scale_rows, "eta", "steps_to_level"), -2.0, 0.1, "equal"),
)
