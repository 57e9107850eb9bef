"""Implicit bias of the field's methods: which flatness each one lowers, and how fast.

Three parts, one results table (column ``part``):

``split``
    On the split valley (:func:`flatmin.problems.valley.valley_split`, ``top = 10``, ``side = 4``) the
    trace and the top eigenvalue of the Hessian along the minima have different minimizers, ``u_trace =
    3/7`` and ``u_top = 1``. 1-SAM at batch size 1 (``sam_per_sample``, the training-loss form, ``n = 2``
    samples) and full-batch SAM (``sam``) run from the sharp start ``u = split_start`` with the same
    ``eta`` and ``rho``; the table keeps the iterate's coordinate ``u_t`` along the minima at every
    checkpoint and ``u(Phi(x_T))`` at the end (``Phi`` as the end of ``phi_gd_steps`` plain GD steps).
    Wen, Ma, Li (ICLR 2023): 1-SAM follows the gradient flow of the trace along the minima, full-batch
    SAM that of the top eigenvalue, both on the time scale ``eta^-1 rho^-2`` steps. The default start ``u = -2`` puts both minimizers on one side, with the top
    eigenvalue ``l_1`` simple along the whole path: started at ``u = 2`` instead, the path crosses
    ``l_1 = l_2`` at ``u ~ 1.15``, where the analysis of full-batch SAM needs an eigengap; there SAM at
    ``eta = 0.005``, ``rho = 0.1`` stays locked on the second direction (its ``w_1`` is exactly 0 in float64
    from step 2000 on, so nothing can turn it back) and ends near ``u = -0.95``, the minimizer of ``l_2``
    (at ``eta = 0.02`` it ends at ``u = 1``).
``rho_sweep``
    1-SAM over ``rhos`` on ``seeds`` seeds: ``steps_to_target``, the first checkpoint step with ``|u_t -
    u_trace| <= tolerance_fraction |u_0 - u_trace|`` (NaN where never within ``sweep_steps``). The
    claim fits its exponent in ``rho`` (Wen-Ma-Li: ``-2``). The tolerance is far above the endpoint's
    offset from ``u_trace`` left by a finite ``eta`` (the samples' oscillations ``|w_j| ~ eta l_j rho``
    weigh the two curvatures unequally: at ``eta = 0.02``, ``rho = 0.1`` 1-SAM ends at ``u ~ 0.53`` (from
    ``u = 2``, 16 seeds), at ``eta = 0.005`` at ``u ~ 0.45``), an offset that does not depend on ``rho`` (the
    ratio ``|w_j| / rho`` depends on ``eta l_j`` only).
``widening``
    Orvieto et al.'s widening valley (:mod:`flatmin.problems.widening_valley`), ``L = v^2 ||u||^2 / 2``,
    ``tr Hess L = ||u||^2`` on the minima ``{v = 0}``, from ``||u|| = widening.start``: GD, perturbed GD
    (i.i.d. increments ``-eta sigma z``) and Anti-PGD (anticorrelated ``xi_{t+1} - xi_t``, ``xi = eta
    sigma z``) at the same ``eta`` and ``sigma``. ``trace_ratio`` = ``tr Hess L(Phi(x_t)) / tr Hess
    L(Phi(x_0))`` (``Phi`` closed-form). Anti-PGD's iterates are ``y_t + xi_t`` with ``y`` doing GD on the
    smoothed loss ``E L(y + xi) = L(y) + (eta sigma)^2 tr Hess L(y) / 2``, so it lowers the trace; the
    i.i.d. increments of perturbed GD add up to a random walk in ``u`` that raises ``E ||u||^2`` by about
    ``(m - 1) (eta sigma)^2`` per step.

Results table: columns :data:`COLUMNS`; a column that does not apply to a part is NaN there.
Statistics for the audit (:data:`CLAIMS`): :func:`split_distance`, :func:`rho_rows`, :func:`final_ratio`.
"""

from __future__ import annotations

from typing import Annotated

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

import flatmin
import flatmin.settings
from flatmin.analysis import exponent, mean_with_ci
from flatmin.claims import Claim, select
from flatmin.experiments._sweeps import progress
from flatmin.method import get_method
from flatmin.plotting import check_finite, log_log, slope_label
from flatmin.problems.valley import split_minimizers
from flatmin.settings import Count, Seeds, Spec

COLUMNS = ("part", "problem", "method", "seed", "step", "eta", "rho", "sigma", "position", "limit_position",
           "u_trace", "u_top", "steps_to_target", "trace", "trace_ratio")
SPLIT_TOP, SPLIT_SIDE = 10.0, 4.0  # valley_split's defaults: u_trace = 3/7, u_top = 1
ORDER = 9
CAPTION = (
    "Implicit bias: (a) on the split valley, the position u_t along the minima of 1-SAM (batch size 1) and "
    "full-batch SAM with the minimizers of the trace and of the top eigenvalue marked; (b) 1-SAM's steps to "
    "the trace minimizer against rho, log-log with the fitted slope; (c) on Orvieto et al.'s widening valley, "
    "the trace of the Hessian at Phi(x_t) relative to the start for GD, perturbed GD and Anti-PGD at one eta "
    "and sigma. (a), (b): mean and +-1 SD over seeds (full-batch SAM draws nothing: its seeds coincide); (c): "
    "median and 10-90% band."
)

Positive = Annotated[float, Field(gt=0)]


class Widening(Spec):
    m: Count = Field(ge=1, description="dimension of u in the widening valley, an integer >= 1")
    start: Positive = Field(description="||u|| at the sharp start, a number > 0")
    eta: Positive = Field(le=1.0, description="step size of GD, perturbed GD and Anti-PGD, in (0, 1]")
    sigma: float = Field(ge=0, description="noise scale sigma of perturbed GD and Anti-PGD, a number >= 0")
    steps: Count = Field(ge=1, description="steps of every run, an integer >= 1")
    record_every: Count = Field(ge=1, description="checkpoint spacing in steps, an integer >= 1")


_WIDENING = {"m": 2, "start": 2.0, "eta": 0.1, "sigma": 1.0, "steps": 2000, "record_every": 20}


class Settings(flatmin.settings.Settings):
    seeds: Seeds = Field(16, description="seeds of every run, an integer n >= 1 or a list of distinct integers >= 0")
    start_seed: Count = Field(0, ge=0, description="PRNG key of the problems' initial_point (the shared start)")
    split_start: float = Field(-2.0, ge=-10.0, le=10.0, description=(
        "u of the sharp start on the split valley, a number in [-10, 10] (module docstring: -2 meets no "
        "eigenvalue crossing on its way)"))
    eta: Positive = Field(0.005, le=0.05, description=(
        "step size of SAM and 1-SAM on the split valley, in (0, 0.05]; stable while eta times a sample's curvature "
        "(2 l_1(u) = 110 at u = -2) stays below 2"))
    rho: Positive = Field(0.1, le=0.5, description="SAM's and 1-SAM's radius in the split part, in (0, 0.5]")
    split_steps: Count = Field(40000, ge=1, description="steps of the split part's runs, an integer >= 1")
    split_record_every: Count = Field(200, ge=1, description="checkpoint spacing of the split part, an integer >= 1")
    phi_gd_steps: Count = Field(4000, ge=1, description=(
        "plain GD steps (step eta) from x_T giving Phi(x_T) on the split valley, an integer >= 1"))
    rhos: Annotated[list[Positive], Field(min_length=2)] = Field(
        [0.05, 0.07, 0.1, 0.14, 0.2], description="1-SAM's radii in the rho sweep, >= 2 distinct numbers > 0")
    sweep_steps: Count = Field(30000, ge=1, description="steps of each rho-sweep run, an integer >= 1")
    sweep_record_every: Count = Field(20, ge=1, description="checkpoint spacing of the rho sweep, an integer >= 1")
    tolerance_fraction: float = Field(0.2, gt=0, lt=1, description=(
        "the rho sweep's target: |u_t - u_trace| <= this fraction of |u_0 - u_trace|, in (0, 1)"))
    widening: Widening = Field(_WIDENING, description="the widening-valley part: {m, start, eta, sigma, steps, "
                               "record_every}")

    @field_validator("rhos")
    @classmethod
    def _distinct(cls, rhos):
        if len(set(rhos)) != len(rhos):
            raise ValueError(f"rhos = {rhos} must be distinct")
        return rhos


# quick: the split part and the sweep record as many checkpoints (301), so 1-SAM's loop compiles once
PRESETS = {"quick": {"seeds": 8, "split_steps": 12000, "split_record_every": 40, "rho": 0.2,
                     "rhos": [0.1, 0.14, 0.2, 0.28], "sweep_steps": 6000, "widening": {**_WIDENING, "steps": 1000}}}


# --------------------------------------------------------------------------------------------------
# Compute


def _rows(part, problem, method, seeds, steps, params, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"part": part, "problem": problem, "method": method, "seed": seeds, "step": steps,
                          "eta": params["eta"], "rho": params.get("rho", np.nan),
                          "sigma": params.get("sigma", np.nan)})
    for name in COLUMNS[len(frame.columns):]:
        frame[name] = columns.get(name, np.nan)
    return frame


def _split_part(config, problem, x0, u_trace, u_top) -> pd.DataFrame:
    frames = []
    for method in ("sam_per_sample", "sam"):
        batch = {"batch_size": 1} if method == "sam_per_sample" else {}  # 1-SAM at batch 1, SAM full-batch
        params = {"eta": config["eta"], "rho": config["rho"], **batch}
        progress("implicit_bias", f"split valley: {method} {params}, {config['split_steps']} steps")
        run = flatmin.simulate(problem, method, x0, params, config["split_steps"], config["seeds"],
                               record_every=config["split_record_every"])
        seeds, steps = np.meshgrid(run.seeds, run.checkpoints, indexing="ij")
        final = np.full(steps.shape, np.nan)
        # Phi(x_T) as the end of plain GD from x_T: the split valley's normal curvatures (>= 1) make
        # phi_gd_steps of step eta contract the distance to the minima below 1e-20, and GD's limit
        # differs from the flow's by O(eta |w|^2) (1e-12 here against flatmin.limit_map, whose ODE
        # integrator would be compiled for this one use)
        final[:, -1] = np.asarray(run.descend(run.iterates[:, -1], config["phi_gd_steps"]))[:, 0]
        frames.append(_rows("split", "valley_split", method, seeds.ravel(), steps.ravel(), params,
                            position=run.iterates[:, :, 0].ravel(), limit_position=final.ravel(),
                            u_trace=u_trace, u_top=u_top))
    return pd.concat(frames, ignore_index=True)


def _rho_part(config, problem, x0, u_trace, u_top) -> pd.DataFrame:
    frames = []
    tolerance = config["tolerance_fraction"] * abs(config["split_start"] - u_trace)
    for rho in config["rhos"]:
        params = {"eta": config["eta"], "rho": rho, "batch_size": 1}
        progress("implicit_bias", f"rho sweep: sam_per_sample {params}, {config['sweep_steps']} steps")
        run = flatmin.simulate(problem, "sam_per_sample", x0, params, config["sweep_steps"], config["seeds"],
                               record_every=config["sweep_record_every"])
        near = np.abs(run.iterates[:, :, 0] - u_trace) <= tolerance
        first = np.where(near.any(axis=1), run.checkpoints[near.argmax(axis=1)], np.nan)
        frames.append(_rows("rho_sweep", "valley_split", "sam_per_sample", run.seeds, run.main_steps, params,
                            position=run.iterates[:, -1, 0], u_trace=u_trace, u_top=u_top,
                            steps_to_target=first))
    return pd.concat(frames, ignore_index=True)


def _widening_part(config, start_seed) -> pd.DataFrame:
    spec = config["widening"]
    problem = flatmin.make_problem("widening_valley", m=spec["m"], start=spec["start"])
    x0 = problem.start(jax.random.PRNGKey(start_seed))
    m, frames = spec["m"], []
    for method in ("gd", "perturbed_gd", "anti_pgd"):
        params = {"eta": spec["eta"], **({"sigma": spec["sigma"]} if method != "gd" else {})}
        progress("implicit_bias", f"widening valley: {method} {params}, {spec['steps']} steps")
        run = flatmin.simulate(problem, method, x0, params, spec["steps"], config["seeds"],
                               record_every=spec["record_every"])
        phi = np.asarray(jax.vmap(problem.limit_map)(run.iterates.reshape(-1, problem.dim)))
        trace = np.sum(phi[:, :m] ** 2, axis=1) + m * phi[:, m] ** 2  # tr Hess L at (u, v) with u v = 0
        trace = trace.reshape(run.iterates.shape[:2])
        seeds, steps = np.meshgrid(run.seeds, run.checkpoints, indexing="ij")
        frames.append(_rows("widening", "widening_valley", method, seeds.ravel(), steps.ravel(), params,
                            trace=trace.ravel(), trace_ratio=(trace / trace[:, :1]).ravel()))
    return pd.concat(frames, ignore_index=True)


def compute(config: dict) -> pd.DataFrame:
    """The three parts' rows (module docstring), columns :data:`COLUMNS`."""
    problem = flatmin.make_problem("valley_split", top=SPLIT_TOP, side=SPLIT_SIDE, start=float(config["split_start"]))
    x0 = problem.start(jax.random.PRNGKey(int(config["start_seed"])))
    u_trace, u_top = split_minimizers(SPLIT_TOP, SPLIT_SIDE)
    results = pd.concat([_split_part(config, problem, x0, u_trace, u_top),
                         _rho_part(config, problem, x0, u_trace, u_top),
                         _widening_part(config, int(config["start_seed"]))], ignore_index=True)
    return results[list(COLUMNS)]


# --------------------------------------------------------------------------------------------------
# Statistics for the audit (pure functions of the results table)


def split_distance(results: pd.DataFrame, method: str, target: str) -> np.ndarray:
    """Per seed, ``|u(Phi(x_T)) - u_target| / |u_top - u_trace|`` of ``method``'s final split-part rows
    (``target``: ``"u_trace"`` or ``"u_top"``): 0 on the target, 1 at the other minimizer."""
    rows = select(results, part="split", method=method)
    final = rows[rows["step"] == rows["step"].max()]
    return (np.abs(final["limit_position"] - final[target]) / np.abs(final["u_top"] - final["u_trace"])).to_numpy()


def rho_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rho sweep's rows; a seed that never reached the target (NaN) makes the exponent fail."""
    rows = select(results, part="rho_sweep")
    missing = rows[rows["steps_to_target"].isna()]
    if len(missing):
        raise ValueError(f"{len(missing)} rho-sweep runs never reached the trace minimizer (rho "
                         f"{sorted(missing['rho'].unique())}): no exponent")
    return rows


def final_ratio(results: pd.DataFrame, method: str) -> np.ndarray:
    """Per seed, ``tr Hess L(Phi(x_T)) / tr Hess L(Phi(x_0))`` of ``method`` on the widening valley."""
    rows = select(results, part="widening", method=method)
    return rows[rows["step"] == rows["step"].max()]["trace_ratio"].to_numpy()


# --------------------------------------------------------------------------------------------------
# Figure


def _style(method):
    m = get_method(method)
    return {"label": m.label or m.name, **m.style}


def _band(ax, rows, column, quantiles=False):
    """Per method, the mean and +-1 SD band over seeds, or (``quantiles``) the median and the 10-90% band."""
    for method in dict.fromkeys(rows["method"]):
        by_step = rows[rows["method"] == method].groupby("step")[column]
        if quantiles:
            centre, low, high = (by_step.quantile(q).to_numpy() for q in (0.5, 0.1, 0.9))
        else:
            centre, spread = by_step.mean().to_numpy(), by_step.std().fillna(0.0).to_numpy()
            low, high = centre - spread, centre + spread
        steps = np.asarray(sorted(rows.loc[rows["method"] == method, "step"].unique()))
        line = ax.plot(steps, centre, lw=1.5, **_style(method))[0]
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0)


def plot(results: pd.DataFrame, config: dict):
    """(a) ``u_t`` against steps on the split valley; (b) steps to the target against rho, log-log;
    (c) the widening valley's trace ratio against steps (log scale, median and 10-90% band)."""
    split, sweep, wide = (results[results["part"] == part] for part in ("split", "rho_sweep", "widening"))
    check_finite(split, ["step", "position"], "implicit_bias split")
    check_finite(sweep, ["rho", "steps_to_target"], "implicit_bias rho_sweep")
    check_finite(wide, ["step", "trace_ratio"], "implicit_bias widening")
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.8), layout="constrained")
    _band(a, split, "position")
    u_trace, u_top = split["u_trace"].iloc[0], split["u_top"].iloc[0]
    a.axhline(u_trace, color="gold", ls="--", lw=1, label=f"trace minimizer u = {u_trace:.3g}")
    a.axhline(u_top, color="k", ls=":", lw=1, label=f"top-eigenvalue minimizer u = {u_top:g}")
    a.set(xlabel="iterations", ylabel="u_t, the iterate's coordinate along the minima (no unit)",
          title=f"(a) split valley: η = {split['eta'].iloc[0]:g}, ρ = {split['rho'].iloc[0]:g}")
    a.legend(fontsize=7)
    tol = config.get("tolerance_fraction", np.nan)
    means = sweep.groupby("rho")["steps_to_target"].agg(["mean", "std"])
    style = _style("sam_per_sample")
    style["label"] += " (mean ± 1 SD)" + slope_label(sweep, "rho", "steps_to_target")
    b.errorbar(means.index, means["mean"], yerr=means["std"], marker="o", capsize=3, **style)
    ref = means["mean"].iloc[0] * (means.index / means.index[0]) ** -2.0
    b.plot(means.index, ref, color="gray", ls="--", lw=1, label="slope -2 (Wen, Ma, Li: η⁻¹ρ⁻² steps)")
    log_log(b)
    b.set(xlabel="SAM radius ρ", ylabel="iterations to |u_t − u_trace| ≤ "
          f"{tol:g} |u_0 − u_trace|", title=f"(b) 1-SAM's time to the trace minimizer, η = {sweep['eta'].iloc[0]:g}")
    b.legend(fontsize=7)
    _band(c, wide, "trace_ratio", quantiles=True)
    c.set_yscale("log")
    c.set(xlabel="iterations", ylabel="tr ∇²L(Φ(xₜ)) / tr ∇²L(Φ(x₀)) (median, 10-90% band; log scale)",
          title=f"(c) widening valley v²‖u‖²/2: η = {wide['eta'].iloc[0]:g}, "
                f"σ = {wide['sigma'].dropna().iloc[0]:g}")
    c.legend(fontsize=7)
    seeds = results["seed"].nunique()
    # the title names what is measured; whether 1-SAM, SAM and Anti-PGD do what the papers say is the audit's
    fig.suptitle(f"Implicit bias: where 1-SAM and SAM end along the split valley's minima, and the trace under "
                 f"Anti-PGD, GD and perturbed GD in the widening valley ({seeds} seeds)", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)

WMZ = "Wen, Ma, Li, ICLR 2023"
ORVIETO = "Orvieto et al., ICML 2022, §3 (widening valley)"
NEAR = 0.25  # a quarter of the way between the two minimizers
FACTOR = 0.5  # the trace ratio that counts as lowered


def _mean(values_of):
    return lambda results: mean_with_ci(values_of(results))


CLAIMS = (
    Claim("one_sam_trace_minimizer", f"{WMZ}, stochastic SAM (batch size 1)",
          "1-SAM at batch size 1 ends near the trace's minimizer along the minima of the split valley: mean over "
          "seeds of |u(Phi(x_T)) - u_trace| / |u_top - u_trace|", "implicit_bias",
          _mean(lambda r: split_distance(r, "sam_per_sample", "u_trace")), NEAR, 0.0, "below", f"<= {NEAR:g}"),
    Claim("full_sam_top_eigenvalue_minimizer", f"{WMZ}, full-batch SAM",
          "full-batch SAM ends near the top eigenvalue's minimizer, not the trace's: mean over seeds of "
          "|u(Phi(x_T)) - u_top| / |u_top - u_trace|", "implicit_bias",
          _mean(lambda r: split_distance(r, "sam", "u_top")), NEAR, 0.0, "below", f"<= {NEAR:g}"),
    Claim("one_sam_time_scale_rho", f"{WMZ}, time scale eta^-1 rho^-2 of stochastic SAM",
          "1-SAM's steps to the trace minimizer (within a fixed fraction of the start's distance) scale as rho^-2: "
          "log-log exponent in rho", "implicit_bias", lambda r: exponent(rho_rows(r), "rho", "steps_to_target"),
          -2.0, 0.2, "equal"),
    Claim("anti_pgd_leaves_widening_valley", ORVIETO,
          "Anti-PGD lowers the trace of the Hessian at Phi(x) on the widening valley by a factor 2 at least: mean "
          "over seeds of tr(T) / tr(0)", "implicit_bias", _mean(lambda r: final_ratio(r, "anti_pgd")), FACTOR, 0.0,
          "below", f"<= {FACTOR:g}"),
    Claim("perturbed_gd_stays_in_widening_valley", ORVIETO,
          "perturbed GD with i.i.d. noise at the same eta and sigma does not: mean over seeds of tr(T) / tr(0)",
          "implicit_bias", _mean(lambda r: final_ratio(r, "perturbed_gd")), FACTOR, 0.0, "above", f"> {FACTOR:g}"),
    Claim("gd_stays_in_widening_valley", ORVIETO,
          "GD does not (it converges to the minimum next to its start): mean over seeds of tr(T) / tr(0)",
          "implicit_bias", _mean(lambda r: final_ratio(r, "gd")), FACTOR, 0.0, "above", f"> {FACTOR:g}"),
)
