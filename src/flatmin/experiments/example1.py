"""E5 — Example 1: the minima of ``f`` and the minima of the trace can be disjoint.

``f(x1, x2) = (x1 x2 - 1)^2`` (the ``hyperbola`` problem with ``depth = 2``). Its minima are the
hyperbola ``X* = {x1 x2 = 1}`` (``f = 0``). Its Hessian trace is ``tr Hess f = 2 (x1^2 + x2^2)``
(so ``trbar = tr / d = x1^2 + x2^2``), whose only minimizer is the origin, where ``f(0) = 1`` and
``Hess f(0) = [[0, -2], [-2, 0]]`` (eigenvalues -2 and 2: a saddle of ``f``). So minimizing the trace
alone leads away from the minima; the flat minima of the paper are the minimizers of the trace
*restricted to* ``X*``: on the parametrization ``(t, 1/t)`` the normalized trace is
``t^2 + 1/t^2 >= 2`` with equality exactly at ``t = ±1``, i.e. the points ``±(1, 1)``.

Everything is computed from the problem's loss by autodiff (nothing from the closed forms above,
which the tests check against): the table lists named points with ``f``, ``||grad f||``,
``tr Hess f``, ``trbar`` and the Hessian's eigenvalues, and the numerical minimizers of

- ``trbar(t, 1/t)`` over each branch ``t > 0`` and ``t < 0`` (bounded scalar minimization in ``log|t|``),
- ``trbar(x)`` over the plane from ``num_starts`` random starts (BFGS),
- ``f(x)`` from the same starts (they land on ``X*``, each with its own trace: ``f`` alone does not
  select the flattest minimum).

Settings (:class:`Settings`, whose defaults are the paper profile's; ``PRESETS["quick"]``):

``seed``
    integer >= 0, the seed of the random starts.
``problem``
    ``{name, params}``, default the ``depth = 2`` hyperbola (any 2-D problem works for the picture;
    the branch search assumes the hyperbola's parametrization ``(t, 1/t)``).
``num_starts``
    integer >= 1, random starts (standard normal times ``start_scale``) of the plane searches.
``start_scale``
    number > 0, scale of the random starts.
``t_range``
    ``[t_min, t_max]``, ``0 < t_min < 1 < t_max``: the search interval of ``|t|`` on each branch.
``grid``
    ``{extent, points}``: the picture's window ``[-extent, extent]^2`` and grid points per axis.

Results table: one row per point, columns :data:`COLUMNS`; ``point`` is one of
``trace_minimizer`` (the origin, closed form), ``flattest_plus`` / ``flattest_minus`` (``±(1,1)``),
``sharp`` (``(2, 1/2)``, a sharp minimum), ``branch_min_plus`` / ``branch_min_minus`` (numerical
minimizers of the trace on ``X*``), ``plane_trace_min_<i>`` and ``plane_loss_min_<i>`` (the
random-start searches). Statistics for the audit (:data:`CLAIMS`): :func:`point_values`,
:func:`min_trace_on_minima`, :func:`disjointness_gap`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

import flatmin
import flatmin.settings
from flatmin.experiments._sweeps import progress
from flatmin.settings import Count, ProblemSpec, Spec
from flatmin.claims import Claim, point_estimate
from flatmin.plotting import check_finite

COLUMNS = ("point", "source", "x1", "x2", "t", "loss", "grad_norm", "hessian_trace", "trbar", "hess_eig_min",
           "hess_eig_max", "on_minima")

#: ``|f| <= MINIMA_TOL`` counts as on the minima ``X*`` (column ``on_minima``).
MINIMA_TOL = 1e-10

ORDER = 5
CAPTION = (
    "E5, Example 1: for f(x1, x2) = (x1 x2 - 1)^2 the minima of f (the hyperbola x1 x2 = 1) and the "
    "minimum of the trace of the Hessian (the origin) are disjoint; along the minima the trace is "
    "smallest at +-(1, 1)."
)


class Grid(Spec):
    extent: float = Field(gt=0, description="half-width of the square window, a number > 0")
    points: Count = Field(ge=11, description="grid points per axis, an integer >= 11")


class Settings(flatmin.settings.Settings):
    seed: Count = Field(0, ge=0, description="seed of the random starts of the plane searches, an integer >= 0")
    problem: ProblemSpec = Field({"name": "hyperbola", "params": {"depth": 2}}, description=(
        "the 2-D problem, {name, params} (default the depth-2 hyperbola, f = (x1 x2 - 1)^2)"))
    num_starts: Count = Field(16, ge=1, description=(
        "random starts of the numerical minimization of trbar and of f over the plane, an integer >= 1"))
    start_scale: float = Field(2.0, gt=0, description="standard deviation of the random starts, a number > 0")
    t_range: list[float] = Field([0.01, 100.0], min_length=2, max_length=2, description=(
        "search interval [t_min, t_max] of |t| on each branch (t, 1/t) of the minima, 0 < t_min < 1 < t_max"))
    grid: Grid = Field({"extent": 2.5, "points": 401}, description=(
        "the picture's grid, {extent, points}: window [-extent, extent]^2, points per axis"))

    @field_validator("t_range")
    @classmethod
    def _brackets_one(cls, t_range):
        if not 0 < t_range[0] < 1 < t_range[1]:
            raise ValueError(f"t_range must satisfy 0 < t_min < 1 < t_max, got {t_range}")
        return t_range


PRESETS = {"quick": {"num_starts": 4, "grid": {"extent": 2.5, "points": 121}}}



def _problem(config: dict):
    spec = config["problem"]
    problem = flatmin.make_problem(spec["name"], **spec.get("params", {}))
    if problem.dim != 2:
        raise ValueError(f"example1 needs a 2-D problem, got {spec['name']!r} of dim {problem.dim}")
    return problem


def _functions(problem):
    loss = problem.loss
    hess = jax.hessian(loss)
    return {
        "loss": jax.jit(loss),
        "grad": jax.jit(jax.grad(loss)),
        "hess": jax.jit(hess),
        "hessian_trace": jax.jit(lambda x: jnp.trace(hess(x))),
        "trace_grad": jax.jit(jax.grad(lambda x: jnp.trace(hess(x)))),
    }


def _row(fns, point: str, source: str, x, t=np.nan) -> dict:
    x = jnp.asarray(x, dtype=jnp.float64)
    eig = np.linalg.eigvalsh(np.asarray(fns["hess"](x)))
    loss = float(fns["loss"](x))
    trace = float(fns["hessian_trace"](x))
    return {"point": point, "source": source, "x1": float(x[0]), "x2": float(x[1]), "t": float(t),
            "loss": loss, "grad_norm": float(jnp.linalg.norm(fns["grad"](x))), "hessian_trace": trace,
            "trbar": trace / 2.0, "hess_eig_min": float(eig[0]), "hess_eig_max": float(eig[-1]),
            "on_minima": bool(abs(loss) <= MINIMA_TOL)}


def branch_minimum(fns, sign: float, t_range) -> tuple[float, float]:
    """``argmin`` and ``min`` of ``tr Hess f(t, 1/t)`` over ``sign * t in t_range`` (bounded Brent in
    ``log |t|``, tolerance 1e-12)."""
    import scipy.optimize  # as in flatmin.analysis: not at module level, for start-up time

    lo, hi = np.log(t_range[0]), np.log(t_range[1])

    def objective(s):
        t = sign * np.exp(s)
        return float(fns["hessian_trace"](jnp.array([t, 1.0 / t])))

    res = scipy.optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                         options={"xatol": 1e-12, "maxiter": 500})
    return sign * float(np.exp(res.x)), float(res.fun)


def _plane_search(fns, key: str, grad_key, start) -> np.ndarray:
    import scipy.optimize

    value = fns[key]
    grad = fns[grad_key]
    res = scipy.optimize.minimize(lambda x: float(value(jnp.asarray(x))), start,
                                  jac=lambda x: np.asarray(grad(jnp.asarray(x))), method="BFGS",
                                  options={"gtol": 1e-12, "maxiter": 2000})
    return np.asarray(res.x)


def compute(config: dict) -> pd.DataFrame:
    """Rows per named point (:data:`COLUMNS`); see the module docstring."""
    lo, hi = config["t_range"]
    if not 0 < lo < 1 < hi:
        raise ValueError(f"t_range must satisfy 0 < t_min < 1 < t_max, got {config['t_range']!r}")
    problem = _problem(config)
    fns = _functions(problem)
    progress("example1", "closed-form points")
    rows = [
        _row(fns, "trace_minimizer", "closed form", [0.0, 0.0]),
        _row(fns, "flattest_plus", "closed form", [1.0, 1.0], 1.0),
        _row(fns, "flattest_minus", "closed form", [-1.0, -1.0], -1.0),
        _row(fns, "sharp", "closed form", [2.0, 0.5], 2.0),
    ]
    progress("example1", f"trace on the minima (t, 1/t), |t| in {config['t_range']}")
    for sign, name in ((1.0, "branch_min_plus"), (-1.0, "branch_min_minus")):
        t, _ = branch_minimum(fns, sign, config["t_range"])
        rows.append(_row(fns, name, "numerical: min of tr Hess f(t, 1/t)", [t, 1.0 / t], t))
    rng = np.random.default_rng(config["seed"])
    starts = config["start_scale"] * rng.standard_normal((config["num_starts"], 2))
    progress("example1", f"{len(starts)} random starts: minimizing trbar and f over the plane")
    fns["loss_grad"] = fns["grad"]
    for i, start in enumerate(starts):
        x = _plane_search(fns, "hessian_trace", "trace_grad", start)
        rows.append(_row(fns, f"plane_trace_min_{i}", "numerical: min of tr Hess f over R^2", x))
        x = _plane_search(fns, "loss", "loss_grad", start)
        t = x[0] if abs(x[0] * x[1] - 1) < 1e-4 else np.nan
        rows.append(_row(fns, f"plane_loss_min_{i}", "numerical: min of f over R^2", x, t))
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------------------------------
# Statistics for the audit


def point_values(results: pd.DataFrame) -> pd.DataFrame:
    """The table indexed by ``point``."""
    return results.set_index("point")


def min_trace_on_minima(results: pd.DataFrame) -> pd.DataFrame:
    """The numerical minimizers of the trace on each branch of ``X*``: per branch ``t``, ``trbar``
    (expected 2 at ``t = ±1``), ``loss`` (expected 0) and ``on_minima``."""
    rows = point_values(results).loc[["branch_min_plus", "branch_min_minus"]]
    return rows[["t", "x1", "x2", "trbar", "hessian_trace", "loss", "on_minima"]]


def disjointness_gap(results: pd.DataFrame) -> float:
    """``min f`` over the points where the trace is minimal over the plane: > 0 means no minimizer
    of the trace is a minimum of ``f`` (Example 1's claim; expected ``f(0) = 1``)."""
    rows = results[results["point"].str.startswith("plane_trace_min_")]
    best = rows["trbar"].min()
    return float(rows.loc[np.isclose(rows["trbar"], best, atol=1e-9), "loss"].min())


# --------------------------------------------------------------------------------------------------
# Figure


def plot(results: pd.DataFrame, config: dict):
    """(a) contours of ``f`` with ``X*``; (b) contours of ``tr Hess f`` with ``X*``, the flattest
    points and the trace minimizer; (c) ``trbar`` along ``X*`` against ``t``, with the numerical
    minimizers."""
    check_finite(results, ["x1", "x2", "loss", "hessian_trace", "trbar"], "example1")
    problem = _problem(config)
    fns = _functions(problem)
    extent, n = config["grid"]["extent"], config["grid"]["points"]
    axis = np.linspace(-extent, extent, n)
    X1, X2 = np.meshgrid(axis, axis)
    pts = jnp.asarray(np.c_[X1.ravel(), X2.ravel()])
    F = np.asarray(jax.vmap(fns["loss"])(pts)).reshape(X1.shape)
    T = np.asarray(jax.vmap(fns["hessian_trace"])(pts)).reshape(X1.shape)
    if not (np.all(np.isfinite(F)) and np.all(np.isfinite(T))):
        raise ValueError("example1: non-finite f or trace on the grid")
    pv = point_values(results)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), layout="constrained")

    def manifold(ax, label=True):
        t = np.geomspace(1.0 / extent, extent, 400)
        for s in (1, -1):
            ax.plot(s * t, s / t, color="crimson", lw=2, label="minima X* = {x₁x₂ = 1}" if (label and s == 1) else None)

    def marks(ax):
        ax.plot([1, -1], [1, -1], "*", color="gold", mec="k", ms=15, zorder=5,
                label=f"flattest minima ±(1, 1): f = 0, trbar = {pv.loc['flattest_plus', 'trbar']:.3g}")
        ax.plot([0], [0], "o", color="white", mec="k", ms=9, zorder=5,
                label=f"trace minimizer 0: trbar = {pv.loc['trace_minimizer', 'trbar']:.3g}, "
                      f"f = {pv.loc['trace_minimizer', 'loss']:.3g}")
        ax.plot([2], [0.5], "s", color="C1", mec="k", ms=7, zorder=5,
                label=f"a sharp minimum (2, 1/2): trbar = {pv.loc['sharp', 'trbar']:.3g}")

    ax = axes[0]
    cs = ax.contourf(X1, X2, np.log10(F + 1e-3), levels=20, cmap="Blues_r")
    fig.colorbar(cs, ax=ax, label="log₁₀(f + 10⁻³)")
    manifold(ax)
    marks(ax)
    ax.set(xlabel="x₁", ylabel="x₂", aspect="equal", title="(a) loss f(x) = (x₁x₂ − 1)² and its minima X*")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[1]
    cs = ax.contourf(X1, X2, T / 2.0, levels=20, cmap="viridis")
    ax.contour(X1, X2, T / 2.0, levels=[2.0], colors="k", linestyles="--", linewidths=1)
    fig.colorbar(cs, ax=ax, label="trbar = tr(∇²f)/d")
    manifold(ax)
    marks(ax)
    ax.set(xlabel="x₁", ylabel="x₂", aspect="equal",
           title="(b) trbar(x) = x₁² + x₂² (dashed: level 2, tangent to X* at ±(1, 1))")
    ax.legend(fontsize=7, loc="lower left")

    ax = axes[2]
    lo, hi = config["t_range"]
    t = np.geomspace(max(lo, 1.0 / extent), min(hi, extent), 400)
    tr_t = np.asarray(jax.vmap(fns["hessian_trace"])(jnp.asarray(np.c_[t, 1 / t]))) / 2.0
    ax.plot(t, tr_t, color="crimson", label="trbar(t, 1/t) on X* (t > 0; t < 0 is the same)")
    for name, marker in (("branch_min_plus", "*"), ("branch_min_minus", "x")):
        ax.plot([abs(pv.loc[name, "t"])], [pv.loc[name, "trbar"]], marker, color="k", ms=12,
                label=f"numerical min on branch {'t > 0' if name.endswith('plus') else 't < 0'}: "
                      f"|t| = {abs(pv.loc[name, 't']):.6f}, trbar = {pv.loc[name, 'trbar']:.6f}")
    ax.axhline(pv.loc["trace_minimizer", "trbar"], color="0.4", ls=":",
               label=f"min of trbar over the plane ({pv.loc['trace_minimizer', 'trbar']:.3g}, at 0 ∉ X*)")
    ax.set(xscale="log", xlabel="|t| (parametrization (t, 1/t) of X*, log scale)",
           ylabel="normalized trace trbar = tr(∇²f)/d", title="(c) the trace restricted to the minima X*")
    ticks = [v for v in (0.25, 0.5, 1.0, 2.0, 4.0) if t[0] <= v <= t[-1]]
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
    fig.suptitle("E5 (Example 1): the minima of f (the hyperbola x₁x₂ = 1) and the minimizer of the trace "
                 "(the origin, where f = 1) are disjoint; the flat minima ±(1, 1) minimize the trace on X*")
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)


CLAIMS = (
    Claim("example1_disjoint", "Example 1", "The minimizers of the trace are not minima of f: f at the trace "
          "minimizer (E5; f(0) = 1)", "example1", point_estimate(disjointness_gap), 0.0, 0.0, "above", "> 0"),
    Claim("example1_flattest_on_minima", "Example 1", "Restricted to the minima x1 x2 = 1, trbar is smallest at "
          "±(1, 1) with trbar = 2 (E5, larger of the two branch minima)", "example1",
          point_estimate(lambda results: min_trace_on_minima(results)["trbar"].max()), 2.0, 1e-8, "equal", "2"),
)
