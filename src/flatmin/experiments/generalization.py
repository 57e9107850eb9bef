"""E6 — flat minima generalize: recovery of the ground truth as the trace falls.

Two over-parametrized regression problems whose flattest interpolators are the "simple" ones:

- ``diagonal_net`` (sparse regression, ``beta = u*u - v*v``): the flattest minima solve the weighted
  basis-pursuit LP (:func:`flatmin.problems.diagonal_net.diagonal_net_data`, ``beta_flattest``); on an
  instance where the LP recovers the sparse ``beta*`` (default ``n = 20, p = 30, sparsity = 3,
  seed = 0``) flatness means recovery. Recovery error ``||beta - beta*||_2``.
- ``matrix_sensing`` (``M = U U^T``): the flattest minima minimize a weighted nuclear norm, and the
  low-rank ground truth is (approximately) flattest. Recovery error ``||U U^T - M*||_F``.

From the problem's sharp interpolator (``initial_point`` at key ``start_seed``, shared by every run),
GD, RS and SA run with one shared step size on several seeds. At every checkpoint the table records,
for three points derived from the iterate ``x_t`` (column ``point``):

``iterate``
    ``x_t`` itself: RS and SA iterates sit off the minima by their last kick (SA's per-sample kicks
    are large), so their loss and recovery error carry that noise;
``after_gd``
    ``x_t`` followed by ``final_gd_steps`` plain GD steps of size ``eta``: the output of Algorithm 2
    stopped at ``t`` (its final GD phase), a cheap stand-in for ``Phi(x_t)``;
``limit``
    ``Phi(x_t)`` by the numerical gradient flow (:func:`flatmin.limit_map`), only at
    ``phi_checkpoints`` evenly spaced checkpoints (first and last included): near the sparse /
    low-rank minima the minima are not a manifold and the flow is slow (~1 s a point), so it checks
    the ``after_gd`` stand-in rather than replacing it.

and there: ``loss``, ``recovery_error`` and ``trbar`` (``tr(Hess f)/d`` at that point). The
references are repeated on every row of a problem: ``reference_error`` and ``reference_trbar`` of the
flattest interpolator (diagonal net: the LP solution; matrix sensing: the ground truth
``[U*, 0]``), ``start_error`` and ``start_trbar`` of the sharp start.

Settings (:class:`Settings`, whose defaults are the paper profile's; ``PRESETS["quick"]``):

``seeds``
    integer ``S`` or list of distinct integers: the algorithms' seeds.
``start_seed``
    integer >= 0: PRNG key of the problem's ``initial_point`` (the shared sharp start).
``instances``
    non-empty list of ``{label, problem: {name, params}, steps, record_every, shared, algorithms}``
    as in E4 (:mod:`flatmin.experiments.trajectories`); ``problem.name`` must be one of
    :data:`RECOVERY` (``diagonal_net``, ``matrix_sensing``).
``final_gd_steps``
    integer >= 1: GD steps of the ``after_gd`` point.
``phi_checkpoints``
    integer >= 0: checkpoints per run where ``Phi`` is computed exactly (0: none).

Statistics for the audit (:data:`CLAIMS`): :func:`final_by_method`, :func:`references`,
:func:`error_trace_rank_correlation`; :func:`limit_agreement` measures how well the ``after_gd``
stand-in the claims read where ``Phi`` was not computed matches the exact ``Phi``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field, field_validator

import flatmin
import flatmin.settings
from flatmin.checkpoints import checkpoint_steps
from flatmin.experiments._sweeps import progress
from flatmin.experiments.trajectories import _line, _ordered, algorithm_params
from flatmin.method import get_method
from flatmin.plotting import check_finite
from flatmin.problems.diagonal_net import diagonal_net_data
from flatmin.problems.matrix_sensing import matrix_sensing_data
from flatmin.settings import Count, RunInstance, Seeds
from flatmin.claims import Claim, NotRun, instance_labels, point_estimate

POINTS = ("iterate", "after_gd", "limit")
COLUMNS = ("instance", "problem", "dim", "algorithm", "seed", "step", "point", "eta", "rho", "loss",
           "recovery_error", "trbar", "reference_error", "reference_trbar", "start_error", "start_trbar")

_DIAG = {
    "label": "diagonal_net",
    "problem": {"name": "diagonal_net", "params": {"n": 20, "p": 30, "sparsity": 3, "seed": 0}},
    "steps": 60000,
    "record_every": 600,
    # smoothness at the start ~50: eta = 0.02 gives eta * beta ~ 1 (GD stable, no catapult).
    # SA takes a smaller rho: at rho = 0.3 its per-sample kicks (eta' rho lambda_i, lambda_i ~ n
    # times the full Hessian's share) throw coordinates onto the saddles u_j = v_j = 0, where the
    # loss stays ~0.02; at rho = 0.1 it reaches the LP's trace 4x sooner than RS at rho = 0.3.
    "shared": {"eta": 0.02, "eta_prime": 0.02, "rho": 0.3, "eps0": 1.0, "batch_size": 1},
    "algorithms": {"gd": {}, "rs": {}, "sa": {"rho": 0.1}},
}
_SENSING = {
    "label": "matrix_sensing",
    "problem": {"name": "matrix_sensing", "params": {"m": 10, "r": 5, "r_star": 1, "N": 30, "seed": 0}},
    "steps": 20000,
    "record_every": 200,
    # smoothness at the start ~5: eta * beta ~ 0.5. SA's raw iterates are noisy (loss ~0.1 whatever
    # rho): its sample-gradient term grad f_i(x + rho s u) contains grad f_i(x), an SGD step of size
    # eta' on one sample of large curvature; the final GD phase (point after_gd) removes it.
    "shared": {"eta": 0.1, "eta_prime": 0.1, "rho": 0.05, "eps0": 1.0, "batch_size": 1},
    "algorithms": {"gd": {}, "rs": {}, "sa": {}},
}


ORDER = 7
CAPTION = (
    "E6, flat minima generalize: on a diagonal linear net (sparse regression) and on matrix sensing "
    "(rank-1 ground truth), the recovery error of the ground truth and trbar against iterations for "
    "GD, RS and SA from one sharp interpolator, measured after Algorithm 2's final GD phase (thick, "
    "mean and 1 SD over seeds), on the raw iterates (thin) and at the exact limit Phi (circles); "
    "dashed: the flattest interpolator (the weighted basis-pursuit LP's solution; the ground truth)."
)


class RecoveryInstance(RunInstance):
    @field_validator("problem")
    @classmethod
    def _has_recovery_error(cls, problem):
        if problem.name not in RECOVERY:
            raise ValueError(f"problem.name must be one of {', '.join(RECOVERY)} (a recovery error is defined "
                             f"for these), got {problem.name!r}")
        return problem


class Settings(flatmin.settings.Settings):
    seeds: Seeds = Field(4, description="seeds of the algorithms' randomness (the start is shared), an integer "
                         "n >= 1 or a list of distinct integers >= 0")
    start_seed: Count = Field(0, ge=0, description="PRNG key of the problem's initial_point (the shared sharp start), "
                              "an integer >= 0")
    instances: list[RecoveryInstance] = Field([_DIAG, _SENSING], min_length=1, description=(
        "the problems run, a non-empty list of {label, problem, steps, record_every, shared, algorithms} as in "
        "trajectories; problem.name diagonal_net or matrix_sensing"))
    final_gd_steps: Count = Field(3000, ge=1, description=(
        "plain GD steps (step eta) from each checkpoint iterate to the after_gd point (Algorithm 2's final "
        "phase), an integer >= 1"))
    phi_checkpoints: Count = Field(3, ge=0, description=(
        "evenly spaced checkpoints per run where Phi is computed exactly by the gradient flow (slow near the "
        "sparse minima), an integer >= 0"))


PRESETS = {
    "quick": {
        "seeds": 2,
        "instances": [{**_DIAG, "steps": 12000, "record_every": 600},
                      {**_SENSING, "steps": 4000, "record_every": 200}],
        "final_gd_steps": 1000,
        "phi_checkpoints": 0,
    },
}



# --------------------------------------------------------------------------------------------------
# Recovery errors and references, per problem family


def _diagonal_net(problem):
    data = diagonal_net_data(problem)
    p = problem.params["p"]
    beta_star = jnp.asarray(data.beta_star)

    def error(x):
        return jnp.linalg.norm(x[:p] ** 2 - x[p:] ** 2 - beta_star)

    flat = jnp.asarray(problem.flattest_points)[0]
    return error, flat, "LP flattest interpolator"


def _matrix_sensing(problem):
    data = matrix_sensing_data(problem)
    m, r = problem.params["m"], problem.params["r"]
    target = jnp.asarray(data.U_star @ data.U_star.T)

    def error(x):
        U = x.reshape(m, r)
        return jnp.linalg.norm(U @ U.T - target)

    return error, jnp.asarray(data.x_ground_truth), "ground truth [U*, 0]"


#: ``problem name -> (problem -> (recovery_error(x), reference point, reference label))``.
RECOVERY = {"diagonal_net": _diagonal_net, "matrix_sensing": _matrix_sensing}


def _measures(problem, error):
    trace = lambda x: jnp.trace(jax.hessian(problem.loss)(x)) / problem.dim  # noqa: E731
    return jax.jit(jax.vmap(lambda x: (problem.loss(x), error(x), trace(x))))


def _descend(problem, eta: float, steps: int):
    grad = jax.grad(problem.loss)
    return jax.jit(jax.vmap(lambda x: jax.lax.fori_loop(0, steps, lambda _, y: y - eta * grad(y), x)))


def run_instance(instance: dict, config: dict) -> pd.DataFrame:
    spec = instance["problem"]
    if spec["name"] not in RECOVERY:
        raise ValueError(f"generalization: no recovery error for problem {spec['name']!r}; "
                         f"allowed: {', '.join(RECOVERY)}")
    problem = flatmin.make_problem(spec["name"], **spec.get("params", {}))
    error, reference, _ = RECOVERY[spec["name"]](problem)
    measures = _measures(problem, error)
    x0 = problem.start(jax.random.PRNGKey(int(config["start_seed"])))
    _, ref_error, ref_trace = (float(v[0]) for v in measures(reference[None]))
    _, start_error, start_trace = (float(v[0]) for v in measures(x0[None]))
    frames = []
    for algorithm, overrides in instance["algorithms"].items():
        params = algorithm_params(algorithm, instance["shared"], overrides or {})
        progress("generalization", f"{instance['label']}: {algorithm} {params}, {instance['steps']} steps")
        result = flatmin.run(problem, algorithm, x0, params, int(instance["steps"]), config["seeds"],
                             record_every=int(instance["record_every"]), measure=False)
        m = result.metrics
        iterates = jnp.asarray(result.iterates.reshape(-1, problem.dim))  # metrics' row order
        points = {"iterate": iterates,
                  "after_gd": _descend(problem, params["eta"], int(config["final_gd_steps"]))(iterates)}
        rows_of = {name: np.arange(len(m)) for name in points}
        k = int(config["phi_checkpoints"])
        if k:
            steps = np.sort(m["step"].unique())
            chosen = steps[checkpoint_steps(len(steps) - 1, intervals=k - 1)]
            rows = np.flatnonzero(m["step"].isin(chosen).to_numpy())
            progress("generalization", f"  Phi by the gradient flow at {len(rows)} points")
            points["limit"] = jnp.stack([flatmin.limit_map(problem, iterates[i]) for i in rows])
            rows_of["limit"] = rows
        for name, pts in points.items():
            loss, err, tr = (np.asarray(v) for v in measures(pts))
            sub = m.iloc[rows_of[name]]
            frames.append(pd.DataFrame({
                "instance": instance["label"], "problem": spec["name"], "dim": problem.dim,
                "algorithm": algorithm, "seed": sub["seed"].to_numpy(), "step": sub["step"].to_numpy(),
                "point": name, "eta": params["eta"], "rho": params.get("rho", 0.0),
                "loss": loss, "recovery_error": err, "trbar": tr,
                "reference_error": ref_error, "reference_trbar": ref_trace,
                "start_error": start_error, "start_trbar": start_trace,
            }))
    return pd.concat(frames, ignore_index=True)


def compute(config: dict) -> pd.DataFrame:
    """Rows per (instance, algorithm, seed, checkpoint step, point); columns :data:`COLUMNS`."""
    results = pd.concat([run_instance(inst, config) for inst in config["instances"]], ignore_index=True)
    bad = ~np.isfinite(results[["loss", "recovery_error", "trbar"]].to_numpy(dtype=float)).all(axis=1)
    if bad.any():
        raise FloatingPointError(f"generalization: non-finite values in {int(bad.sum())} rows")
    return results


# --------------------------------------------------------------------------------------------------
# Statistics for the audit


def _select(results: pd.DataFrame, instance: str, point: str) -> pd.DataFrame:
    rows = results[(results["instance"] == instance) & (results["point"] == point)]
    if rows.empty:
        raise ValueError(f"no rows of instance {instance!r} at point {point!r}; instances "
                         f"{list(results['instance'].unique())}, points {list(results['point'].unique())}")
    return rows


def final_by_method(results: pd.DataFrame, instance: str, point: str = "after_gd") -> pd.DataFrame:
    """Per (algorithm, seed): ``recovery_error``, ``trbar`` and ``loss`` at the last checkpoint, at
    ``point`` (``iterate``, ``after_gd`` or ``limit``), plus the references."""
    rows = _select(results, instance, point).sort_values("step")
    last = rows.groupby(["algorithm", "seed"]).tail(1).set_index(["algorithm", "seed"]).sort_index()
    return last[["step", "recovery_error", "trbar", "loss", "reference_error", "reference_trbar",
                 "start_error", "start_trbar"]]


def references(results: pd.DataFrame) -> pd.DataFrame:
    """Per instance: ``reference_error``, ``reference_trbar`` (flattest interpolator), ``start_error``,
    ``start_trbar`` (the sharp start)."""
    cols = ["reference_error", "reference_trbar", "start_error", "start_trbar"]
    return results.groupby("instance")[cols].first()


def error_trace_rank_correlation(results: pd.DataFrame, instance: str, point: str = "after_gd") -> float:
    """Spearman rank correlation between ``trbar`` and the recovery error over every checkpoint of
    every algorithm and seed at ``point``: near 1 when flatter means better recovery."""
    from scipy.stats import spearmanr  # as in flatmin.analysis: not at module level, for start-up time

    rows = _select(results, instance, point)
    return float(spearmanr(rows["trbar"], rows["recovery_error"]).statistic)


def limit_agreement(results: pd.DataFrame, instance: str) -> pd.Series:
    """Largest absolute difference between the ``after_gd`` stand-in and the exact ``Phi`` (``limit``)
    in ``recovery_error`` and ``trbar``, over the checkpoints where ``Phi`` was computed."""
    key = ["algorithm", "seed", "step"]
    limit = _select(results, instance, "limit").set_index(key)
    after = _select(results, instance, "after_gd").set_index(key).loc[limit.index]
    return (after[["recovery_error", "trbar"]] - limit[["recovery_error", "trbar"]]).abs().max()


# --------------------------------------------------------------------------------------------------
# Figure


def plot(results: pd.DataFrame, config: dict):
    """Per instance: (a) recovery error and (b) ``trbar`` against iterations at ``after_gd`` (mean and
    ±1 SD band; thin lines: the raw iterates; markers: the exact ``Phi``), references dashed."""
    check_finite(results, ["step", "loss", "recovery_error", "trbar"], "generalization")
    instances = list(dict.fromkeys(results["instance"]))
    fig, axes = plt.subplots(len(instances), 2, figsize=(13, 4.6 * len(instances)), squeeze=False,
                             layout="constrained")
    seeds = results["seed"].nunique()
    for k, (row, label) in enumerate(zip(axes, instances)):
        letters = "abcdefghijklmnopqrstuvwxyz"[2 * k: 2 * k + 2]
        rows = results[results["instance"] == label]
        ref = rows.iloc[0]
        problem = rows["problem"].iloc[0]
        ref_name = "LP flattest interpolator" if problem == "diagonal_net" else "ground truth"
        err_name = "‖β − β*‖₂" if problem == "diagonal_net" else "‖UUᵀ − M*‖_F"
        for ax, column, ylabel, ref_value in (
            (row[0], "recovery_error", f"recovery error {err_name}", ref["reference_error"]),
            (row[1], "trbar", "normalized trace trbar = tr(∇²f)/d", ref["reference_trbar"]),
        ):
            for algorithm in _ordered(rows["algorithm"].unique()):
                group = rows[rows["algorithm"] == algorithm]
                style = _line(algorithm)
                after = group[group["point"] == "after_gd"].groupby("step")[column].agg(["mean", "std"])
                std = after["std"].fillna(0.0).to_numpy()
                rho = group["rho"].iloc[0]
                name = style.pop("label") + (f" (ρ={rho:g})" if rho else "")
                color = ax.plot(after.index, after["mean"], **style, lw=1.8, label=f"{name}, after final GD")[0].get_color()
                ax.fill_between(after.index, after["mean"] - std, after["mean"] + std, color=color,
                                alpha=0.15, lw=0)
                raw = group[group["point"] == "iterate"].groupby("step")[column].mean()
                if get_method(algorithm).params:  # plain descent: the raw iterate is the after-GD curve
                    ax.plot(raw.index, raw.to_numpy(), color=color, lw=0.7, alpha=0.5,
                            label=f"{name}, raw iterate")
                limit = group[group["point"] == "limit"]
                if not limit.empty:
                    ax.plot(limit["step"], limit[column], "o", mfc="none", color=color, ms=7,
                            label=f"{name}, exact Φ(xₜ)")
            ax.axhline(ref_value, color="gold", ls="--", lw=1.5, label=f"{ref_name}: {ref_value:.3g}")
            ax.set(xlabel="iterations", ylabel=ylabel)
            ax.legend(fontsize=7)
        eta = rows["eta"].iloc[0]
        row[0].set_title(f"({letters[0]}) {label} (d={ref['dim']}): recovery of the ground truth, η={eta:g}")
        row[1].set_title(f"({letters[1]}) {label}: flatness (sharp start {ref['start_trbar']:.3g})")
    fig.suptitle("E6: flat minima generalize — as RS and SA lower the trace, the recovery error falls to that "
                 "of the flattest interpolator;\nGD stays at the sharp start. Thick: after the final GD phase "
                 f"(mean ± 1 SD over {seeds} seeds); thin: raw iterates (mean); circles: exact Φ(xₜ)")
    return fig


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)


def _final_point(results, instance: str) -> str:
    """``limit`` (the exact Phi) where the results have it, else ``after_gd`` (the final GD phase)."""
    rows = results[results["instance"] == instance]
    limit = rows[rows["point"] == "limit"]
    return "limit" if not limit.empty and limit["step"].max() == rows["step"].max() else "after_gd"


def _final_perturbed(results):
    """Per (instance, method with a theorem (RS, SA), seed): the last checkpoint, at the exact Phi where
    computed, else after the final GD phase."""
    frames = []
    for instance in instance_labels(results):
        final = final_by_method(results, instance, _final_point(results, instance))
        final = final[final.index.get_level_values("algorithm").isin(("rs", "sa"))]  # the claims' methods
        frames.append(final.assign(instance=instance))
    rows = pd.concat(frames)
    if rows.empty:
        raise NotRun("no RS or SA runs")
    return rows


def _excess_trace(results):
    """Largest relative excess ``(trbar_T - trbar_flat) / trbar_flat`` of RS and SA's final points."""
    rows = _final_perturbed(results)
    return ((rows["trbar"] - rows["reference_trbar"]) / rows["reference_trbar"]).max()


def _error_left(results):
    """Largest fraction of the start's recovery error left at RS and SA's final points."""
    rows = _final_perturbed(results)
    return (rows["recovery_error"] / rows["start_error"]).max()


def _gd_error_change(results):
    """Largest relative change of GD's recovery error between the start and its final point."""
    changes = []
    for instance in instance_labels(results):
        final = final_by_method(results, instance)
        gd = final[final.index.get_level_values("algorithm") == "gd"]
        changes += list((gd["recovery_error"] - gd["start_error"]).abs() / gd["start_error"])
    if not changes:
        raise NotRun("no GD runs")
    if not np.all(np.isfinite(changes)):
        raise ValueError(f"non-finite GD recovery errors in the generalization results: {changes}")
    return max(changes)


CLAIMS = (
    Claim("flattest_is_ground_truth", "§7 (test functions: flattest minima)", "The flattest interpolator "
          "recovers the ground truth: its recovery error (diagonal net: the weighted basis-pursuit LP; matrix "
          "sensing: [U*, 0]; largest over instances, E6)", "generalization",
          point_estimate(lambda results: references(results)["reference_error"].max()), 1e-6, 0.0, "below",
          "<= 1e-6"),
    Claim("rs_sa_reach_flattest", "Theorems 1 and 2 (E6)", "RS and SA from a sharp interpolator end as flat as "
          "the flattest interpolator: relative excess of trbar at Phi of the last iterate over the reference's "
          "(largest over instances, methods, seeds; threshold 5% [reconstructed])", "generalization",
          point_estimate(_excess_trace), 0.05, 0.0, "below", "<= 0.05"),
    Claim("flat_minima_generalize", "§1 (flat minima generalize, E6)", "RS and SA recover the ground truth: "
          "fraction of the start's recovery error left at Phi of the last iterate (largest over instances, "
          "methods, seeds; threshold 10% [reconstructed])", "generalization", point_estimate(_error_left), 0.1, 0.0,
          "below", "<= 0.1"),
    Claim("gd_recovers_nothing", "§1 (control, E6)", "GD from the sharp interpolator stays there: relative "
          "change of its recovery error (largest over instances and seeds)", "generalization",
          point_estimate(_gd_error_change), 1e-3, 0.0, "below", "<= 1e-3"),
    Claim("flatter_recovers_better", "§1 (E6)", "Flatter means better recovery: Spearman correlation of "
          "trbar and the recovery error over every checkpoint of every run (smallest over instances)",
          "generalization",
          point_estimate(lambda results: min(error_trace_rank_correlation(results, instance)
                                             for instance in instance_labels(results))),
          0.0, 0.0, "above", "> 0"),
)
