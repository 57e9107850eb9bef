"""E4 — trajectories: how far each method moves along the minima, from one sharp start.

From the same sharp start ``x0`` (the problem's ``initial_point`` at PRNG key ``start_seed``: on the
hyperbola ``f = (xy - 1)^2`` the point ``(2, 1/2)`` plus a 1e-3 jitter, ``trbar = 4.25``), GD, SGD, SAM,
RS (Algorithm 1), RS without the projection (``rs_noproj``) and SA (Algorithm 2) run with one shared
step size, on several seeds (the seeds drive the algorithms' randomness only; the start is shared).
At every checkpoint the table records ``trbar(Phi(x_t))`` (the normalized trace at the limit point of
the gradient flow, :func:`flatmin.flatness`), the distance to the problem's flattest minima
(:meth:`flatmin.Problem.distance_to_flattest`; on the hyperbola ``(1, 1)``, ``trbar = 2``), the loss, and the first ``coords`` coordinates of the iterate (the paths of the
picture).

What to expect (and what the figure shows honestly): GD and SGD (with ``n = 1`` sample, SGD *is* GD)
stay at the sharp minimum they converge to; RS, RS without projection, SA and SAM drift along
``X*`` towards the flattest point. SAM and RS without projection do not land on ``X*``: their
iterates keep a loss of order ``rho^2`` (SAM's fixed point lies off the minima; ``rs_noproj``'s
normal kicks are not projected out), which the loss column shows.

Settings (:class:`Settings`, whose defaults are the paper profile's; ``PRESETS["quick"]``):

``seeds``
    an integer ``S`` (seeds ``0..S-1``) or a list of distinct integers: the algorithms' seeds.
``start_seed``
    integer >= 0: the PRNG key of ``problem.initial_point`` giving the shared start.
``instances``
    a non-empty list; each entry ``{label, problem: {name, params}, steps, record_every, shared,
    algorithms}``: ``steps`` (main steps of every algorithm), ``record_every`` (checkpoint spacing),
    ``shared`` (parameters common to all algorithms, e.g. ``eta``, ``eta_prime``, ``rho``, ``eps0``,
    ``batch_size``; each algorithm takes only those it uses, see
    :func:`flatmin.algorithms.simulation_params`), ``algorithms`` (``{algorithm: {overrides}}``, the
    algorithms to run, each with its own overrides of ``shared``; ``{}`` for none).
``coords``
    integer >= 2: how many leading coordinates of the iterates the table keeps (``x_0 .. x_{k-1}``).
``picture``
    ``{instance, seed, xlim, ylim}``: the instance drawn in the plane (its first two coordinates;
    the hyperbola ``xy = 1`` colored by ``trbar`` on it is drawn when the instance is the
    ``depth = 2`` hyperbola), the seed whose paths are drawn, and the plot window.

Results table: one row per (instance, algorithm, seed, step), columns :data:`COLUMNS`.
Statistics for the audit (:data:`CLAIMS`): :func:`final_rows`, :func:`final_trace_by_method`,
:func:`trace_drift`.
"""

from __future__ import annotations

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import Field
from matplotlib.collections import LineCollection

import flatmin
import flatmin.settings
from flatmin.algorithms import simulation_params
from flatmin.method import get_method
from flatmin.experiments._sweeps import progress
from flatmin.settings import Count, RunInstance, Seeds, Spec
from flatmin.claims import Claim, NotRun, instance_labels, point_estimate, select
from flatmin.plotting import check_finite


#: Columns of the results table (plus ``x_0 .. x_{coords-1}``).
COLUMNS = ("instance", "problem", "dim", "algorithm", "seed", "step", "eta", "rho", "loss", "grad_norm",
           "perturbed_fraction", "distance", "loss_gap", "trbar_limit", "tangent_grad_norm",
           "distance_to_flattest", "flattest_trace")

_HYPERBOLA = {
    "label": "hyperbola",
    "problem": {"name": "hyperbola", "params": {"depth": 2, "sharpness": 2.0, "noise": 0.001}},
    "steps": 4000,
    "record_every": 20,
    # eta * smoothness = 0.05 * 8.5 = 0.43 < 2: GD is stable at the sharp minimum (it cannot
    # catapult out). rho = 0.1 keeps the drift slow enough to be seen along the whole path.
    # eps0 = 1 keeps the gate of RS / SA open along every run (gradients stay below ~0.3, even
    # under rs_noproj's unprojected kicks), so the methods differ by their perturbation only.
    "shared": {"eta": 0.05, "eta_prime": 0.05, "rho": 0.1, "eps0": 1.0, "batch_size": 1},
    "algorithms": {"gd": {}, "sgd": {}, "sam": {}, "rs": {}, "rs_noproj": {}, "sa": {}},
}
_DIAGONAL_NET = {
    "label": "diagonal_net",
    # n = 10, seed 0: the LP's flattest interpolator has n nonzeros, so X* is a manifold there and
    # the numerical flow (no closed-form Phi) converges fast; d = 60.
    "problem": {"name": "diagonal_net", "params": {"n": 10, "p": 30, "sparsity": 3, "seed": 0}},
    "steps": 20000,
    "record_every": 1000,
    # smoothness at the start 73: eta * beta = 1.5 < 2. Mini-batches of 5 for SGD and SAM (batches of
    # 1 or 2 diverge at this eta: a sample's curvature is up to n times the mean's); SA keeps B = 1
    # and, like SAM, a smaller rho (at rho = 0.3 its kicks throw coordinates onto u_j = v_j = 0).
    "shared": {"eta": 0.02, "eta_prime": 0.02, "rho": 0.3, "eps0": 1.0, "batch_size": 5},
    "algorithms": {"gd": {}, "sgd": {}, "sam": {"rho": 0.1}, "rs": {}, "rs_noproj": {},
                   "sa": {"rho": 0.1, "batch_size": 1}},
}
ORDER = 4
CAPTION = (
    "E4, trajectories: trbar(Phi(x_t)) and the distance to the flattest point for GD, SGD, SAM, RS, "
    "RS without projection and SA, with the paths drawn on the hyperbola xy = 1 over the trace along "
    "it, and on a diagonal linear net (d = 60) with its loss along the run."
)


def caption(config: dict) -> str:
    """:data:`CAPTION` for the instances and methods ``config`` runs (the quick preset runs one)."""
    instances = config["instances"]
    methods = list(dict.fromkeys(name for instance in instances for name in instance["algorithms"]))
    labels = [(get_method(name).label or name).split(" (")[0] for name in methods]
    problems = " and ".join(f"{instance['label']} ({instance['problem']['name']}, {instance['steps']} steps)"
                            for instance in instances)
    return (f"E4, trajectories: trbar(Phi(x_t)) and the distance to the flattest point for {'; '.join(labels)}, "
            f"on {problems}, {config['seeds'] if isinstance(config['seeds'], int) else len(config['seeds'])} seeds "
            f"from one shared start; the paths of seed {config['picture']['seed']} drawn in the plane of the first "
            f"two coordinates of {config['picture']['instance']}.")


class Picture(Spec):
    instance: str = Field(min_length=1, description="label of the instance drawn in the plane (its first two coordinates)")
    seed: Count = Field(ge=0, description="the seed whose paths are drawn, one of seeds")
    xlim: list[float] = Field(min_length=2, max_length=2, description="x range of the picture, [low, high]")
    ylim: list[float] = Field(min_length=2, max_length=2, description="y range of the picture, [low, high]")


class Settings(flatmin.settings.Settings):
    seeds: Seeds = Field(8, description="seeds of the algorithms' randomness (the start is shared), an integer "
                         "n >= 1 or a list of distinct integers >= 0")
    start_seed: Count = Field(0, ge=0, description="PRNG key of the problem's initial_point, the start shared by "
                              "every algorithm and seed, an integer >= 0")
    instances: list[RunInstance] = Field([_HYPERBOLA, _DIAGONAL_NET], min_length=1, description=(
        "the problems run, a non-empty list of {label, problem, steps, record_every, shared, algorithms}"))
    coords: Count = Field(2, ge=2, description=(
        "number of leading coordinates of the iterates kept in the table (the paths), an integer >= 2"))
    picture: Picture = Field({"instance": "hyperbola", "seed": 0, "xlim": [0.5, 2.3], "ylim": [0.3, 1.5]},
                             description="the plane picture: {instance (a label of instances), seed (whose "
                             "paths are drawn), xlim, ylim}")


PRESETS = {"quick": {"seeds": 3, "instances": [{**_HYPERBOLA, "steps": 2000, "record_every": 40}]}}




# --------------------------------------------------------------------------------------------------
# Compute


def algorithm_params(algorithm: str, shared: dict, overrides: dict) -> dict:
    """The parameters ``algorithm`` uses: ``shared`` then ``overrides``, restricted to its keys."""
    keys = simulation_params(algorithm)
    return {k: v for k, v in {**shared, **overrides}.items() if k in keys}


def nearest_flattest_distance(problem, points: np.ndarray) -> np.ndarray:
    """Distance from each row of ``points`` ``(..., d)`` to the problem's flattest minima
    (:meth:`flatmin.Problem.distance_to_flattest`); NaN everywhere when the problem gives neither
    ``flattest_distance`` nor ``flattest_points`` (the figure then says so)."""
    if problem.flattest_distance is None and problem.flattest_points is None:
        return np.full(np.shape(points)[:-1], np.nan)
    return np.asarray(problem.distance_to_flattest(points))


def run_instance(instance: dict, seeds, start_seed: int, coords: int) -> pd.DataFrame:
    """All algorithms of one instance from the shared start; rows of :data:`COLUMNS` and coordinates."""
    spec = instance["problem"]
    problem = flatmin.make_problem(spec["name"], **spec.get("params", {}))
    x0 = problem.start(jax.random.PRNGKey(start_seed))
    frames = []
    for algorithm, overrides in instance["algorithms"].items():
        params = algorithm_params(algorithm, instance["shared"], overrides or {})
        progress("trajectories", f"{instance['label']}: {algorithm} {params}, {instance['steps']} steps")
        result = flatmin.run(problem, algorithm, x0, params, int(instance["steps"]), seeds,
                             record_every=int(instance["record_every"]))
        m = result.metrics
        points = result.iterates.reshape(-1, problem.dim)  # (seed, checkpoint) in metrics' row order
        frame = pd.DataFrame({
            "instance": instance["label"],
            "problem": spec["name"],
            "dim": problem.dim,
            "algorithm": algorithm,
            "seed": m["seed"].to_numpy(),
            "step": m["step"].to_numpy(),
            "eta": params["eta"],
            "rho": params.get("rho", 0.0),
            "loss": m["loss"].to_numpy(),
            "grad_norm": m["grad_norm"].to_numpy(),
            "perturbed_fraction": m["perturbed_fraction"].to_numpy(),
            "distance": m["distance"].to_numpy(),
            "loss_gap": m["loss_gap"].to_numpy(),
            "trbar_limit": m["trbar_limit"].to_numpy(),
            "tangent_grad_norm": m["tangent_grad_norm"].to_numpy(),
            "distance_to_flattest": nearest_flattest_distance(problem, points),
            "flattest_trace": np.nan if problem.flattest_trace is None else problem.flattest_trace,
        })
        for i in range(min(coords, problem.dim)):
            frame[f"x_{i}"] = points[:, i]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def compute(config: dict) -> pd.DataFrame:
    """Rows per (instance, algorithm, seed, checkpoint step); columns :data:`COLUMNS` and ``x_i``."""
    frames = [run_instance(inst, config["seeds"], int(config["start_seed"]), int(config["coords"]))
              for inst in config["instances"]]
    results = pd.concat(frames, ignore_index=True)
    if not np.all(np.isfinite(results["trbar_limit"])):
        raise FloatingPointError("trajectories: non-finite trbar(Phi) (the gradient flow did not converge)")
    return results


# --------------------------------------------------------------------------------------------------
# Statistics for the audit (pure functions of the results table)


def _one_instance(results: pd.DataFrame, instance: str | None) -> pd.DataFrame:
    labels = results["instance"].unique()
    if instance is None:
        if len(labels) != 1:
            raise ValueError(f"several instances {list(labels)}: name one")
        instance = labels[0]
    rows = results[results["instance"] == instance]
    if rows.empty:
        raise ValueError(f"no rows of instance {instance!r}; have {list(labels)}")
    return rows


def final_rows(results: pd.DataFrame, instance: str | None = None) -> pd.DataFrame:
    """The last checkpoint of every (algorithm, seed) of ``instance``, indexed by (algorithm, seed),
    with ``trbar_limit_start`` (``trbar(Phi(x_0))``) added."""
    rows = _one_instance(results, instance).sort_values("step")
    last = rows.groupby(["algorithm", "seed"]).tail(1).set_index(["algorithm", "seed"]).sort_index()
    first = rows.groupby(["algorithm", "seed"]).head(1).set_index(["algorithm", "seed"])
    return last.assign(trbar_limit_start=first["trbar_limit"].reindex(last.index))


def final_trace_by_method(results: pd.DataFrame, instance: str | None = None) -> pd.Series:
    """Mean over seeds of the final ``trbar(Phi(x_T))`` per algorithm (a Series indexed by algorithm).
    Per-seed values for intervals: ``final_rows(results)["trbar_limit"]``."""
    return final_rows(results, instance)["trbar_limit"].groupby("algorithm").mean()


def trace_drift(results: pd.DataFrame, algorithm: str = "gd", instance: str | None = None) -> float:
    """``max_t |trbar(Phi(x_t)) - trbar(Phi(x_0))|`` over every checkpoint and seed of ``algorithm``:
    how far it moved along the minima (GD: ~0, it converges to the minimum next to its start)."""
    rows = _one_instance(results, instance)
    rows = rows[rows["algorithm"] == algorithm]
    if rows.empty:
        raise ValueError(f"no rows of algorithm {algorithm!r}")
    start = rows.sort_values("step").groupby("seed")["trbar_limit"].transform("first")
    return float(np.max(np.abs(rows["trbar_limit"] - start)))


# --------------------------------------------------------------------------------------------------
# Figure


def _ordered(algorithms) -> list[str]:
    return list(dict.fromkeys(algorithms))


def _line(algorithm: str) -> dict:
    """The method's own label, color and line style."""
    method = get_method(algorithm)
    return {"label": method.label or method.name, **method.style}


def _band(ax, rows: pd.DataFrame, column: str) -> None:
    for algorithm in _ordered(rows["algorithm"].unique()):
        group = rows[rows["algorithm"] == algorithm]
        stats = group.groupby("step")[column].agg(["mean", "std", "count"])
        std = stats["std"].fillna(0.0).to_numpy()
        mean = stats["mean"].to_numpy()
        line = ax.plot(stats.index, mean, **_line(algorithm), lw=1.5)[0]
        ax.fill_between(stats.index, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)


def _picture(ax, rows: pd.DataFrame, picture: dict, hyperbola: bool) -> None:
    xlim, ylim = picture["xlim"], picture["ylim"]
    if hyperbola:
        t = np.geomspace(max(xlim[0], 1e-3) if xlim[0] > 0 else 1e-3, xlim[1], 600)
        t = t[(1 / t >= ylim[0]) & (1 / t <= ylim[1])]
        curve = np.c_[t, 1 / t]
        trbar = t**2 + t**-2  # tr Hess / d = 2 (x^2 + y^2) / 2 on xy = 1
        segments = np.stack([curve[:-1], curve[1:]], axis=1)
        lc = LineCollection(segments, cmap="viridis", lw=4, alpha=0.6, zorder=1)
        lc.set_array(0.5 * (trbar[:-1] + trbar[1:]))
        ax.add_collection(lc)
        bar = ax.figure.colorbar(lc, ax=ax, pad=0.02)
        bar.set_label("trbar on X* = tr(∇²f)/d = x² + y²")
        ax.plot([1], [1], "*", color="gold", mec="k", ms=14, zorder=5, label="flattest point (1, 1), trbar = 2")
    seed = picture["seed"]
    for algorithm in _ordered(rows["algorithm"].unique()):
        path = rows[(rows["algorithm"] == algorithm) & (rows["seed"] == seed)].sort_values("step")
        if path.empty:
            raise ValueError(f"trajectories: no path of {algorithm!r} for picture seed {seed}")
        moved = np.hypot(path["x_0"] - path["x_0"].iloc[0], path["x_1"] - path["x_1"].iloc[0]).max()
        note = f" (moved at most {moved:.1e}: stays at the start)" if moved < 1e-2 else ""
        style = _line(algorithm)
        style["label"] = f"{style['label']} path{note}"
        line = ax.plot(path["x_0"], path["x_1"], **style, lw=1.2, zorder=3)[0]
        ax.plot(path["x_0"].iloc[-1], path["x_1"].iloc[-1], "o", color=line.get_color(), mec="k", ms=6, zorder=4)
    start = rows.sort_values("step").iloc[0]
    ax.plot(start["x_0"], start["x_1"], "s", color="white", mec="k", ms=8, zorder=6,
            label=f"start ({start['x_0']:.2f}, {start['x_1']:.2f})")
    ax.set(xlim=xlim, ylim=ylim, xlabel="x₁ (coordinate, no unit)", ylabel="x₂ (coordinate, no unit)",
           aspect="equal")
    ax.legend(fontsize=7, loc="upper right")


def plot(results: pd.DataFrame, config: dict):
    """Per instance: (a) ``trbar(Phi(x_t))`` and (b) distance to the flattest point against iterations
    (mean and ±1 SD band over seeds); (c) the paths in the plane for ``picture.instance``, else the
    loss against iterations."""
    check_finite(results, ["step", "trbar_limit", "loss"], "trajectories")
    known = results.groupby("instance")["distance_to_flattest"].transform(lambda d: d.notna().any())
    check_finite(results[known], ["distance_to_flattest"], "trajectories")
    instances = list(dict.fromkeys(results["instance"]))
    picture = config.get("picture", {})
    fig, axes = plt.subplots(len(instances), 3, figsize=(16, 4.8 * len(instances)), squeeze=False,
                             layout="constrained")
    seeds = results["seed"].nunique()
    for k, (row, label) in enumerate(zip(axes, instances)):
        a, b, c = (chr(ord("a") + 3 * k + i) for i in range(3))
        rows = results[results["instance"] == label]
        _band(row[0], rows, "trbar_limit")
        flat = rows["flattest_trace"].iloc[0]
        if np.isfinite(flat):
            row[0].axhline(flat, color="gold", ls="--", lw=1, label=f"flattest trbar = {flat:g}")
        row[0].set(xlabel="iterations", ylabel="normalized trace trbar(Φ(xₜ)) = tr(∇²f)/d",
                   title=f"({a}) {label}: flatness of the limit point Φ(xₜ)")
        row[0].legend(fontsize=7)
        row[1].set(xlabel="iterations", ylabel="distance ‖xₜ − x_flat‖ (Euclidean)",
                   title=f"({b}) {label}: distance to the flattest point")
        if rows["distance_to_flattest"].notna().any():
            _band(row[1], rows, "distance_to_flattest")
            row[1].legend(fontsize=7)
        else:
            row[1].text(0.5, 0.5, f"problem {rows['problem'].iloc[0]!r} gives no flattest minima:\n"
                        "no distance to draw", ha="center", va="center", transform=row[1].transAxes)
        if label == picture.get("instance") and rows["dim"].iloc[0] >= 2 and "x_1" in rows:
            hyperbola = rows["problem"].iloc[0] == "hyperbola" and rows["dim"].iloc[0] == 2
            _picture(row[2], rows, picture, hyperbola)
            row[2].set_title(f"({c}) {label}: paths of seed {picture['seed']} (dots: end points)")
        else:
            for algorithm in _ordered(rows["algorithm"].unique()):
                mean = rows[rows["algorithm"] == algorithm].groupby("step")["loss"].mean()
                row[2].plot(mean.index, mean.to_numpy(), **_line(algorithm), lw=1.5)
            row[2].set_yscale("symlog", linthresh=1e-12)
            row[2].set(xlabel="iterations", ylabel="loss f(xₜ) (mean over seeds; linear below 1e-12)",
                       title=f"({c}) {label}: loss along the run")
            row[2].legend(fontsize=7)
        row[0].set_title(row[0].get_title() + "\n" + _params_text(rows), fontsize=9)
    fig.suptitle(f"E4: trajectories from one sharp minimum, which methods drift toward the flattest minimum (mean "
                 f"± 1 SD over {seeds} seeds, one shared start)", fontsize=11)
    return fig


def _params_text(rows: pd.DataFrame) -> str:
    eta = rows["eta"].unique()
    text = "η = " + ", ".join(f"{e:g}" for e in eta)
    rhos = [f"{_line(a)['label'].split(' (')[0]} {g['rho'].iloc[0]:g}"
            for a, g in rows.groupby("algorithm", sort=False) if g["rho"].iloc[0]]
    return text + ("; ρ: " + ", ".join(rhos) if rhos else "")


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)



def _gd_drift(results):
    """Largest, over the instances GD ran on, of GD's ``max_t |trbar(Phi(x_t)) - trbar(Phi(x_0))|``."""
    gd = select(results, algorithm="gd")
    return max(trace_drift(gd, "gd", instance) for instance in instance_labels(gd))


def _flatter_than_gd(results):
    """Smallest margin, over instances and RS, SA, of GD's mean final trace over theirs."""
    margins = []
    for instance in instance_labels(results):
        final = final_trace_by_method(results, instance)
        if "gd" in final.index:
            margins += [final["gd"] - final[name] for name in ("rs", "sa") if name in final.index]  # the claim's
    if not margins:
        raise NotRun("no instance with GD and RS or SA runs")
    return min(margins)


CLAIMS = (
    Claim("gd_does_not_move", "§1, Figure 3 (control)", "GD from a sharp minimum stays where it is: largest "
          "|change of trbar(Phi(x_t))| over checkpoints and seeds (E4)", "trajectories", point_estimate(_gd_drift),
          1e-6, 0.0, "below", "<= 1e-6"),
    Claim("rs_sa_flatter_than_gd", "Theorems 1 and 2", "RS and SA end at flatter minima than GD (smallest "
          "margin of GD's final trbar over theirs, E4)", "trajectories", point_estimate(_flatter_than_gd), 0.0, 0.0,
          "above", "> 0"),
)
