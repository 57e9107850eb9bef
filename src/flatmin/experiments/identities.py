"""E1 — the estimator identities of docs/paper_notes.md §4, by Monte Carlo.

At a minimum ``x*`` with a one-dimensional tangent space (unit tangent ``t``), the tangential mean of
the perturbation ``v`` is compared with the prediction

- RS: ``E[t . v] = (rho^2/2) t . grad trbar(x*) + O(rho^4)``;
- SA: ``E[t . v] = d (rho^2/2) t . grad trbar(x*) + O(rho^4)`` (the d-fold gain).

Three parts: ``rho`` sweeps of RS and SA on the hyperbola (``part = "rho"``), the SA/RS ratio across
``d`` on the ERM valley (``part = "dim"``), whose prediction is ``d``, and the negative control
(``part = "control"``): on the fully observed factorization every minimum is equally flat, so the
tangential mean must vanish (no drift along the minima).

Settings: :class:`Settings` (paper values) and ``PRESETS["quick"]``.
"""

from __future__ import annotations

import functools
from typing import Annotated

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field

import flatmin
import flatmin.settings
from flatmin.analysis import Estimate
from flatmin.claims import Claim, point_estimate, select, z_ratio
from flatmin.experiments._sweeps import progress
from flatmin.plotting import check_finite, log_log
from flatmin.flatness import normalized_trace, tangent_projector
from flatmin.method import get_method
from flatmin.settings import Count, ProblemSpec, TheoryAlgorithm
from flatmin.theory import schedule_of

ORDER = 1
CAPTION = (
    "E1, estimator identities: the measured tangential mean of the perturbation v against its "
    "prediction (rho^2/2) dPhi grad trbar for RS and d times that for SA, across the radius rho "
    "(log-log) and across the dimension d, where the SA/RS ratio grows like d."
)


class Settings(flatmin.settings.Settings):
    seed: Count = Field(0, ge=0, description="random seed of the Monte Carlo draws, an integer >= 0")
    methods: list[TheoryAlgorithm] = Field(["rs", "sa"], min_length=1, description=(
        "the gated methods whose identity is measured, a non-empty list of methods with a theorem's schedule"))
    draws: Count = Field(400_000, ge=2, description="Monte Carlo draws per point, an integer >= 2 (the standard error needs two)")
    rho_problem: ProblemSpec = Field({"name": "hyperbola", "params": {"depth": 2}}, description=(
        "problem of the rho sweep, {name, params}; its tangent space at rho_point must be one-dimensional"))
    rho_point: list[float] = Field([2.0, 0.5], min_length=1, description=(
        "a point on the minima of rho_problem, a non-empty list of numbers (its coordinates)"))
    rhos: list[Annotated[float, Field(gt=0)]] = Field([0.05, 0.1, 0.2, 0.3, 0.4], min_length=1, description=(
        "perturbation radii of the rho sweep, a non-empty list of numbers > 0"))
    dim_problem: ProblemSpec = Field({"name": "valley_bowl", "params": {"m": 1}}, description=(
        "problem of the d sweep, {name, params}; its k is set to d - m (m from params, default 1)"))
    dim_point_u: float = Field(1.0, description="the u coordinates of the point (u, 0) on dim_problem's minima, a number")
    dims: list[Annotated[Count, Field(ge=2)]] = Field([2, 4, 8, 16, 32], min_length=1, description=(
        "dimensions d = m + k of the d sweep, a non-empty list of integers >= 2"))
    dim_rho: float = Field(0.05, gt=0, description="perturbation radius of the d sweep, a number > 0")
    control_problem: ProblemSpec = Field({"name": "factorization", "params": {"m": 6, "r": 2}}, description=(
        "negative control, {name, params}: measured at its first flattest point (one-dimensional tangent space)"))
    control_rho: float = Field(0.1, gt=0, description="perturbation radius of the negative control, a number > 0")


PRESETS = {"quick": {"draws": 40_000, "rhos": [0.1, 0.2, 0.4], "dims": [2, 4, 8]}}


def unit_tangent(problem, x_star) -> jax.Array:
    """The unit tangent ``t`` (shape ``(d,)``) of a one-dimensional tangent space at ``x_star``,
    oriented so that ``t . grad trbar(x*) >= 0``.

    Raises ValueError when ``x_star`` is not one point of shape ``(d,)`` or the tangent space there is
    not one-dimensional."""
    return _tangent_and_slope(problem, x_star)[0]


def _tangent_and_slope(problem, x_star) -> tuple[jax.Array, float]:
    """``(t, t . grad trbar(x*))``: :func:`unit_tangent` and the slope of ``trbar`` along it."""
    x_star = jnp.asarray(x_star, dtype=jnp.float64)
    if x_star.shape != (problem.dim,):
        raise ValueError(f"x_star must be one point of shape ({problem.dim},) for {problem.name!r}, "
                         f"got shape {x_star.shape}")
    eigenvalues, t, slope = _tangent_fn(problem)(x_star)
    eigenvalues = np.asarray(eigenvalues)  # checked in numpy: no one-op compilations per dimension
    if not np.allclose(eigenvalues, np.r_[np.zeros(problem.dim - 1), 1.0], atol=1e-8):
        raise ValueError(f"tangent space at {x_star} is not one-dimensional (projector eigenvalues {eigenvalues})")
    return t, float(slope)


@functools.lru_cache(maxsize=32)
def _tangent_fn(problem):
    """One compiled program per problem: run op by op, the Hessian, its eigenvectors and the trace
    gradient would compile several hundred one-op programs in each fresh process (about 10 s of the quick
    profile's E1 job)."""

    @jax.jit
    def tangent(x_star):
        eigenvalues, eigenvectors = jnp.linalg.eigh(tangent_projector(problem, x_star))
        t = eigenvectors[:, -1]
        grad_trace = jax.grad(lambda x: normalized_trace(problem, x))(x_star)
        t = jnp.where(t @ grad_trace >= 0, t, -t)
        return eigenvalues, t, t @ grad_trace

    return tangent


# Up to this many draws are one vmapped batch; more go through lax.map in batches of 8192, whose
# remainder batch is compiled a second time (twice the compile time, bounded memory).
_ONE_BATCH = 65_536


@functools.lru_cache(maxsize=32)
def _sampler(problem, algorithm: str, draws: int):
    options = schedule_of(algorithm).fixed  # the analysed algorithm: SA samples one f_i

    @jax.jit
    def samples(x_star, t, rho, key):
        keys = jax.random.split(key, draws)
        tangential = lambda k: t @ flatmin.perturbation(problem, algorithm, x_star, rho, k, **options)  # noqa: E731
        if draws <= _ONE_BATCH:
            return jax.vmap(tangential)(keys)
        return jax.lax.map(tangential, keys, batch_size=8192)

    return samples


def tangential_mean(problem, algorithm: str, x_star, rho: float, draws: int, key) -> dict:
    """Monte Carlo mean and standard error of ``t . v`` over ``draws`` perturbations, with the
    prediction ``(rho^2/2) t . grad trbar`` (RS) or ``d`` times it (SA)."""
    x_star = jnp.asarray(x_star, dtype=jnp.float64)
    t, slope = _tangent_and_slope(problem, x_star)
    samples = _sampler(problem, algorithm, draws)(x_star, t, rho, key)
    factor = schedule_of(algorithm).identity_factor(problem.dim)
    return {
        "measured": float(samples.mean()),
        "se": float(samples.std(ddof=1) / np.sqrt(draws)),
        "predicted": factor * rho**2 / 2 * slope,
        "trace_slope": slope,
    }


def compute(config: dict) -> pd.DataFrame:
    """Rows: ``part, algorithm, problem, dim, rho, measured, se, predicted, trace_slope``."""
    key = jax.random.PRNGKey(config["seed"])
    rows = []
    spec = config["rho_problem"]
    problem = flatmin.make_problem(spec["name"], **spec.get("params", {}))
    for algorithm in config["methods"]:
        for rho in config["rhos"]:
            key, sub = jax.random.split(key)
            progress("identities", f"{algorithm} rho={rho}")
            stats = tangential_mean(problem, algorithm, config["rho_point"], rho, config["draws"], sub)
            rows.append({"part": "rho", "algorithm": algorithm, "problem": spec["name"],
                         "dim": problem.dim, "rho": rho, **stats})
    spec = config["dim_problem"]
    for dim in config["dims"]:
        params = dict(spec.get("params", {}))
        m = params.get("m", 1)
        problem = flatmin.make_problem(spec["name"], **{**params, "k": dim - m})
        x_star = jnp.r_[jnp.full(m, config["dim_point_u"]), jnp.zeros(dim - m)]
        for algorithm in config["methods"]:
            key, sub = jax.random.split(key)
            progress("identities", f"{algorithm} d={dim}")
            stats = tangential_mean(problem, algorithm, x_star, config["dim_rho"], config["draws"], sub)
            rows.append({"part": "dim", "algorithm": algorithm, "problem": spec["name"],
                         "dim": dim, "rho": config["dim_rho"], **stats})
    spec = config["control_problem"]
    problem = flatmin.make_problem(spec["name"], **spec.get("params", {}))
    x_star = jnp.asarray(problem.flattest_points)[0]
    for algorithm in [a for a in config["methods"]
                      if problem.is_training_loss or "training_loss" not in get_method(a).needs]:
        key, sub = jax.random.split(key)
        progress("identities", f"control {algorithm} on {spec['name']}")
        stats = tangential_mean(problem, algorithm, x_star, config["control_rho"], config["draws"], sub)
        rows.append({"part": "control", "algorithm": algorithm, "problem": spec["name"],
                     "dim": problem.dim, "rho": config["control_rho"], **stats})
    return pd.DataFrame(rows)


def control_z_scores(results: pd.DataFrame) -> pd.Series:
    """``|measured| / se`` of the negative control per algorithm: no drift means O(1) values."""
    rows = results[results["part"] == "control"].set_index("algorithm")
    return (rows["measured"].abs() / rows["se"]).rename("z")


def rho_squared_coefficient(results: pd.DataFrame, algorithm: str) -> dict:
    """Weighted least-squares fit ``measured = a rho^2 + b rho^4`` on the rho sweep.

    Returns ``a`` with its standard error and the prediction ``a_pred`` (the identity says
    ``a = predicted / rho^2``), and ``b``: the remainder that makes the error shrink like ``rho^2``
    relative to the signal.
    """
    rows = results[(results["part"] == "rho") & (results["algorithm"] == algorithm)]
    rho = rows["rho"].to_numpy()
    design = np.c_[rho**2, rho**4] / rows["se"].to_numpy()[:, None]
    target = rows["measured"].to_numpy() / rows["se"].to_numpy()
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    return {"a": coef[0], "a_se": np.sqrt(cov[0, 0]), "b": coef[1],
            "a_pred": float((rows["predicted"] / rho**2).iloc[0])}


def dim_ratio(results: pd.DataFrame) -> pd.DataFrame:
    """SA/RS ratio of tangential means per ``d``, with its delta-method standard error."""
    rows = results[results["part"] == "dim"].pivot(index="dim", columns="algorithm")
    ratio = rows["measured"]["sa"] / rows["measured"]["rs"]
    rel = np.hypot(rows["se"]["sa"] / rows["measured"]["sa"], rows["se"]["rs"] / rows["measured"]["rs"])
    return pd.DataFrame({"dim": rows.index, "ratio": ratio.to_numpy(), "se": (ratio * rel).to_numpy()})


def plot(results: pd.DataFrame, config: dict):
    check_finite(results, ["measured", "se", "predicted"], "identities")
    fig, (ax_rho, ax_dim) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    rho_rows = results[results["part"] == "rho"]
    for i, algorithm in enumerate(dict.fromkeys(rho_rows["algorithm"])):
        color = f"C{i}"
        rows = rho_rows[rho_rows["algorithm"] == algorithm]
        ax_rho.errorbar(rows["rho"], rows["measured"], yerr=2 * rows["se"], fmt="o", color=color,
                        label=f"{algorithm.upper()} measured (±2 SE)")
        ax_rho.plot(rows["rho"], rows["predicted"], "-", color=color,
                    label=f"{algorithm.upper()} predicted {schedule_of(algorithm).identity}")
    log_log(ax_rho)
    ax_rho.set(xlabel="perturbation radius ρ",
               ylabel="tangential mean of v (parameter units)",
               title=f"(a) E[dΦ v] vs ρ on {rho_rows['problem'].iloc[0]} (d={rho_rows['dim'].iloc[0]})")
    ax_rho.legend(fontsize=8)
    ratio = dim_ratio(results)
    ax_dim.errorbar(ratio["dim"], ratio["ratio"], yerr=2 * ratio["se"], fmt="o", label="measured SA/RS (±2 SE)")
    ax_dim.plot(ratio["dim"], ratio["dim"], "k--", label="predicted: d")
    log_log(ax_dim)
    ax_dim.set(xlabel="dimension d",
               ylabel="SA / RS tangential mean (ratio)",
               title=f"(b) SA's d-fold gain on {results[results['part'] == 'dim']['problem'].iloc[0]}, "
                     f"ρ={config['dim_rho']}")
    ax_dim.legend(fontsize=8)
    fig.suptitle(f"E1: estimator identities, Monte Carlo with {config['draws']} draws per point")
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)


def _identity(algorithm: str):
    """The measured rho^2 coefficient of ``algorithm``'s tangential mean over the predicted one."""

    def measure(results):
        fit = rho_squared_coefficient(select(results, part="rho", algorithm=algorithm), algorithm)
        return z_ratio(fit["a"], fit["a_se"], fit["a_pred"])

    return measure


def _sa_gain(results):
    """Exponent in ``d`` of the SA/RS ratio: weighted least squares of log ratio on log d."""
    ratio = dim_ratio(select(results, part="dim"))
    weights = 1 / (ratio["se"] / ratio["ratio"]) ** 2
    log_d, log_r = np.log(ratio["dim"]), np.log(ratio["ratio"])
    mean_d = np.average(log_d, weights=weights)
    slope = np.sum(weights * (log_d - mean_d) * log_r) / np.sum(weights * (log_d - mean_d) ** 2)
    se = np.sqrt(1 / np.sum(weights * (log_d - mean_d) ** 2))
    return Estimate(float(slope), float(slope - 1.96 * se), float(slope + 1.96 * se))


CLAIMS = (
    Claim("rs_identity", "§4 (Lemma 2's mechanism)",
          "RS: E[dPhi v] = (rho^2/2) dPhi grad trbar + O(rho^4); measured rho^2 coefficient / predicted",
          "identities", _identity("rs"), 1.0, 0.0, "equal", "1"),
    Claim("sa_identity", "§4 (Lemma 4's mechanism)",
          "SA: E[dPhi v] = d (rho^2/2) dPhi grad trbar + O(rho^4); measured rho^2 coefficient / predicted",
          "identities", _identity("sa"), 1.0, 0.0, "equal", "1"),
    Claim("sa_gain_d", "§4", "SA's tangential drift is d times RS's: exponent of SA/RS in d",
          "identities", _sa_gain, 1.0, 0.02, "equal", "1"),
    Claim("negative_control", "§7 (negative control)",
          "All minima of the fully observed factorization are equally flat: the tangential mean of v is 0 "
          "(largest |mean|/SE over RS and SA)", "identities",
          point_estimate(lambda results: control_z_scores(select(results, part="control")).max()), 4.5, 0.0,
          "below", "<= 4.5"),
)
