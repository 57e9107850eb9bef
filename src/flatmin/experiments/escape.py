"""Escaping a sharp, badly generalizing global minimizer on real data: the paper's Figure 3 at CPU scale.

NOTES.md §6. A multilayer perceptron (no normalization layers) on scikit-learn's bundled 8x8 digits
(default: 500 training, 1297 test images; MNIST-1D generated offline by ``mnist1d.data.make_dataset`` is
the alternative, on which an MLP generalizes poorly and the bad minimizer came out *flatter*, see
docs/escape_notes.md) is driven to a *bad* global
minimizer following Liu et al. (2020) / Damian et al. (2021): pre-training on a confusion set (the
training set repeated, ~10% of the input entries zeroed, uniformly random labels), then plain SGD on
the clean training set until 100% training accuracy. A *normal* minimizer (same architecture and
initialization, clean SGD from scratch) is the reference. From the bad minimizer, at one constant
small step size ``eta``, SGD, RS and SA are run (several ``rho``, batch sizes, seeds); training and
test accuracy, training loss and the Hessian trace (Hutchinson, standard error) are recorded.

Design (what gave a clean experiment; docs/escape_notes.md has the record of what did not):

* Digits, n = 500, confusion set x20 (x10 was not enough at n = 500): bad minimizer 73.7% test accuracy,
  trace 746; normal one 97.1%, trace 495 (paper profile).
* The training loss is the **square loss on one-hot targets** (Setting 1 of the paper: ``l`` minimized
  at ``p = y``). With cross-entropy the "minimizer" at 100% training accuracy is not a minimum: SGD
  keeps growing the margins and the Hessian trace falls by a factor ~10 without any change of the test
  accuracy, so "the trace falls" would say nothing. The confusion pre-training uses cross-entropy
  (random labels are memorized much better with it, which is what makes the minimizer bad).
* Steps (mini-batches, as in the paper's experiments): with a
  mini-batch ``B`` (uniform, without replacement) and ``g_B = grad f_B(x)``::

      SGD:  x <- x - eta * g_B
      RS :  x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * g)]),        g ~ U(S^{d-1})
      SA :  x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * s * g_B/||g_B||)]),  s ~ U{-1,+1}

  i.e. SGD plus a projected perturbation, the same batch in the three terms, computed by
  :func:`flatmin.value_and_perturbed_grad` (the library's RS and SA, Remark 2's fallback off); the gate
  ``eps0`` is open (always perturbed): at a minimizer of an interpolating network the full gradient is
  ~0 anyway. The projection is orthogonal to the *batch* gradient: projecting onto the full gradient
  (as in Algorithm 2) needs one full gradient per step, 10-1000 times dearer than the rest of a step at
  these sizes. With ``rho = 0`` RS and SA reduce to SGD exactly, and seed ``s`` draws the same
  mini-batches for every method, so the SGD run is a common-random-numbers control.
* Definition 3 on real data: at the bad and the normal minimizer and at the last iterate of every run
  (seeds ``0..flatness_seeds-1``), :func:`flatmin.model_flatness` measures ``||dPhi grad trbar||`` (the
  tangent space of the interpolating minima is the null space of the Jacobian of the logits), the
  Hessian trace and its top eigenvalue (records ``"flatness"`` of :func:`compute`).

The steps and the checkpointed runs are :mod:`flatmin.training`, the construction of the two
minimizers :mod:`flatmin.minimizers`, data and model :mod:`flatmin.nets`. Entry points: :func:`compute`
and :func:`plot` (workflow), :func:`run_experiment` (config dict, see :class:`Settings` /
:data:`PRESETS`), :func:`final_table`, :func:`claims_table`, :func:`plot_escape`, and ``python -m
flatmin.experiments.escape --profile quick --out DIR``.

Why this file is longer than the others (about 740 lines): it is the one experiment on a trained
network, and its 32 settings, the measurement at the minimizers and end points, the tables its six
claims read, its nine-panel figure and the claims themselves belong to this experiment only; everything
reusable (steps, checkpointed runs, the minimizers' construction, data, model, curvature) is in the
library modules named above.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

import flatmin.settings
from flatmin import nets
from flatmin.checkpoints import checkpoint_steps
from flatmin.claims import Claim, NotRun, point_estimate
from flatmin.curvature import hessian_trace
from flatmin.minimizers import bad_and_normal_minimizers
from flatmin.model_flatness import model_flatness
from flatmin.plotting import check_finite
from flatmin.settings import Count, Spec
from flatmin.training import minibatch_step, run_checkpointed

ORDER = 6
CAPTION = (
    "Escape from a sharp global minimizer on real data (the paper's Figure 3 at CPU scale): test "
    "accuracy and Hessian trace of an MLP started at a badly generalizing minimizer, for SGD, RS and "
    "SA at batch 128 over several rho and SA at batch 1, 64 and 128, mean and band over seeds. The "
    "results table also holds Definition 3 measured on the network (flatmin.model_flatness): the "
    "tangent gradient of the normalized trace, the trace and the top Hessian eigenvalue at both "
    "minimizers and at seed 0's end point of every run."
)

METHODS = ("sgd", "rs", "sa")
METRICS = ("train_acc", "test_acc", "loss", "trace", "trace_se")
FLATNESS = ("top_eigenvalue", "top_eigenvalue_residual", "tangent_grad_norm", "tangent_grad_norm_se")

Loss = Literal["mse", "ce"]


class RunGroup(Spec):
    method: Literal["sgd", "rs", "sa"] = Field(description="the method of the group, one of sgd, rs, sa")
    batch: Count = Field(ge=1, description="mini-batch size of the group, an integer in [1, n_train]")
    rhos: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1, description=(
        "perturbation radii of the group, a non-empty list of finite numbers >= 0 (0 is SGD)"))


class PanelA(Spec):
    rs_rhos: list[Annotated[float, Field(ge=0)]] = Field(description=(
        "rhos of the RS curves in panel (a), a list of numbers >= 0 (among the RS runs' rhos)"))
    sa_rhos: list[Annotated[float, Field(ge=0)]] = Field(description=(
        "rhos of the SA curves in panel (a), a list of numbers >= 0 (among the SA runs' rhos)"))


class Settings(flatmin.settings.Settings):
    """Every knob of the experiment; the defaults are the paper profile (CPU scale)."""

    # data / model
    data: Literal["mnist1d", "digits"] = Field("digits", description=(
        "the data set, mnist1d (generated offline) or digits (scikit-learn, n_train + n_test <= 1797)"))
    n_train: Count = Field(500, ge=1, description="size of the training split, an integer >= 1")
    n_test: Count = Field(1297, ge=1, description="size of the test split, an integer >= 1")
    data_seed: Count = Field(0, ge=0, description=(
        "seed of the MNIST-1D generator, the split and the confusion set, an integer >= 0"))
    width: Count = Field(64, ge=1, description="width of each hidden layer of the MLP, an integer >= 1")
    depth: Count = Field(2, ge=1, description="number of hidden layers of the MLP, an integer >= 1")
    activation: Literal["tanh", "relu", "gelu", "softplus"] = Field("tanh", description=(
        "activation of the MLP, one of tanh (smooth, the default), relu, gelu, softplus"))
    loss: Loss = Field("mse", description=(
        "training loss of the clean phase and of the escape, mse (half squared error to one-hot) or ce"))
    init_seed: Count = Field(0, ge=0, description=(
        "seed of the initialization (and of the pre-training and clean SGD), an integer >= 0"))
    init_scale: float = Field(1.0, gt=0, description="scale of the LeCun normal initialization, a number > 0")
    # bad minimizer: the confusion pre-training (plain SGD, a fixed number of epochs)
    confusion_repeats: Count = Field(20, ge=1, description="copies of the training inputs in the confusion set, an integer >= 1")
    confusion_zero_frac: float = Field(0.1, ge=0, lt=1, description=(
        "fraction of the confusion set's input entries zeroed, a number in [0, 1)"))
    confusion_loss: Loss = Field("ce", description="loss of the confusion pre-training, ce or mse")
    confusion_epochs: Count = Field(150, ge=0, description="epochs of the confusion pre-training, an integer >= 0")
    confusion_lr: float = Field(0.05, gt=0, description="step size of the confusion pre-training, a number > 0")
    confusion_batch: Count = Field(32, ge=1, description="batch size of the confusion pre-training, an integer >= 1")
    # clean training: the bad minimizer from the pre-trained point, the normal one from the initialization
    clean_lr: float = Field(0.05, gt=0, description="step size of the clean training (both minimizers), a number > 0")
    clean_batch: Count = Field(32, ge=1, description="batch size of the clean training, an integer >= 1")
    clean_max_epochs: Count = Field(2000, ge=1, description=(
        "epochs after which the clean training gives up reaching 100% training accuracy, an integer >= 1"))
    clean_extra_epochs: Count = Field(500, ge=0, description=(
        "epochs of clean training after 100% training accuracy is reached (to get close to an interpolating "
        "minimum), an integer >= 0"))
    # escape
    eta: float = Field(0.002, gt=0, description="the constant step size of every method in the escape, a number > 0")
    steps: Count = Field(10000, ge=1, description="steps of every escape run, an integer >= 1")
    num_checkpoints: Count = Field(10, ge=1, description="equally spaced checkpoints of each run (plus step 0), an integer >= 1")
    seeds: Count = Field(5, ge=1, description="number of seeds n of every run (seeds 0..n-1), an integer >= 1")
    runs: list[RunGroup] = Field(
        [{"method": "sgd", "batch": 128, "rhos": [0.0]},
         {"method": "rs", "batch": 128, "rhos": [0.4, 2.0, 8.0]},
         {"method": "sa", "batch": 128, "rhos": [0.2, 0.4, 0.6]},
         {"method": "sa", "batch": 64, "rhos": [0.2]},
         {"method": "sa", "batch": 16, "rhos": [0.2]},
         {"method": "sa", "batch": 1, "rhos": [0.2]}],
        min_length=1, description="the escape runs, a non-empty list of {method: sgd|rs|sa, batch: B, rhos: [rho...]}")
    trace_probes: Count = Field(20, ge=2, description=(
        "Hutchinson probes per trace measurement (the same at every checkpoint: common random numbers), an "
        "integer >= 2 (the standard error needs two)"))
    trace_samples: Count | None = Field(None, ge=1, description=(
        "training samples in the loss whose trace is estimated, an integer >= 1 or null (all)"))
    # Definition 3 at the minimizers and the end points (flatmin.model_flatness on the whole training loss)
    flatness_seeds: Count = Field(1, ge=0, description=(
        "end points measured per run (seeds 0..flatness_seeds-1; 0 for the two minimizers only), an integer "
        ">= 0 and <= seeds"))
    flatness_probes: Count = Field(100, ge=2, description=(
        "Rademacher probes of the trace gradient at each measured point, an integer >= 2"))
    flatness_runs: Literal["best", "all"] = Field("best", description=(
        "the runs whose end points are measured: best (per method, the rho with the highest mean final test "
        "accuracy at panel_batch, and the best run over every batch) or all (every run)"))
    # figure
    panel_a: PanelA = Field({"rs_rhos": [0.4, 8.0], "sa_rhos": [0.4, 0.6]}, description=(
        "the RS and SA curves of panel (a), {rs_rhos, sa_rhos}"))
    panel_batch: Count = Field(128, ge=1, description="batch size of panels (a) and (b), an integer >= 1 (one of the runs' batches)")
    batch_rho: float = Field(0.2, ge=0, description="rho of panel (c) (SA at every batch size), a number >= 0")

    @model_validator(mode="after")
    def _consistent(self):
        for group in self.runs:
            if group.batch > self.n_train:
                raise ValueError(f"runs: batch {group.batch} of the {group.method} group exceeds n_train = {self.n_train}")
        if self.flatness_seeds > self.seeds:
            raise ValueError(f"flatness_seeds = {self.flatness_seeds} exceeds seeds = {self.seeds}")
        return self


#: "quick" keeps the minimizers of the paper profile (same data, model and construction) and shortens
#: the escape runs.
PRESETS = {
    "quick": {
        "steps": 2500,
        "num_checkpoints": 5,
        "seeds": 2,
        "trace_probes": 10,
        "flatness_seeds": 0,
        "runs": [
            {"method": "sgd", "batch": 128, "rhos": [0.0]},
            {"method": "rs", "batch": 128, "rhos": [0.4, 4.0]},
            {"method": "sa", "batch": 128, "rhos": [0.4]},
            {"method": "sa", "batch": 64, "rhos": [0.2]},
            {"method": "sa", "batch": 1, "rhos": [0.2]},
        ],
    },
}


def make_config(profile: str = "paper", **overrides) -> dict:
    """The resolved :class:`Settings` of preset ``profile`` ("paper" or one of :data:`PRESETS`) with
    ``overrides``. Raises ValueError for an unknown profile or key, or an invalid value."""
    if profile != "paper" and profile not in PRESETS:
        raise ValueError(f"unknown profile {profile!r}; choose from paper, {', '.join(PRESETS)}")
    return Settings.resolve(PRESETS.get(profile, {}), overrides).as_dict()


# ----------------------------------------------------------------------------------------------
# the two minimizers


def build_minimizers(config: dict) -> dict:
    """Data, model, the bad and the normal minimizer (see module docstring).

    Returns a dict with ``data`` (numpy arrays), ``model`` (:class:`flatmin.nets.FlatMLP`),
    ``problem`` (the clean training loss as a :class:`flatmin.Problem`), ``x_bad``, ``x_normal``,
    ``x_confusion`` (after pre-training), ``info`` (training logs) and ``times`` (seconds).
    """
    t0 = time.perf_counter()
    data = nets.load_data(config["data"], config["n_train"], config["n_test"], config["data_seed"])
    times = {"data": time.perf_counter() - t0}
    sizes = [data["x"].shape[1]] + [config["width"]] * config["depth"] + [data["num_classes"]]
    model, x_init = nets.FlatMLP.create(
        jax.random.PRNGKey(config["init_seed"]), sizes, config["activation"], config["loss"],
        config["init_scale"],
    )
    confusion = {name: config[f"confusion_{name}"] for name in ("repeats", "zero_frac", "lr", "epochs")}
    confusion.update(seed=config["data_seed"], batch_size=config["confusion_batch"])
    clean = dict(lr=config["clean_lr"], batch_size=config["clean_batch"],
                 max_epochs=config["clean_max_epochs"], extra_epochs=config["clean_extra_epochs"])
    built = bad_and_normal_minimizers(model, x_init, data, key=jax.random.PRNGKey(1000 + config["init_seed"]),
                                      confusion=confusion, clean=clean, confusion_loss=config["confusion_loss"])
    times.update(built.pop("seconds"))
    problem = nets.mlp_problem(model, data["x"], data["y"], name=f"mlp_{config['data']}", x0=built["x_bad"])
    return {"data": data, "model": model, "problem": problem, "x_init": x_init, **built, "times": times}


def make_measure(model: nets.FlatMLP, data: dict, config: dict):
    """``measure(x (d,)) -> (5,)``: train acc, test acc, training loss, Hessian trace and its
    standard error (Hutchinson on the training loss, ``trace_probes`` fixed Rademacher probes).
    JAX-traceable (vmap over points)."""
    x_tr, y_tr = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    x_te, y_te = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])
    m = config["trace_samples"] or len(data["y"])
    trace_key = jax.random.PRNGKey(7)

    def trace_loss(x):
        return model.mean_loss(x, x_tr[:m], y_tr[:m])

    def measure(x):
        tr, se = hessian_trace(lambda y, _: trace_loss(y), x, None, trace_key, config["trace_probes"])
        return jnp.stack([
            model.accuracy(x, x_tr, y_tr), model.accuracy(x, x_te, y_te),
            model.mean_loss(x, x_tr, y_tr), tr, se,
        ])

    return measure


def minimizer_table(built: dict, config: dict, measure=None) -> pd.DataFrame:
    """One row per minimizer (``bad``, ``normal``, and the pre-trained ``confusion`` point):
    train/test accuracy, loss, trace (+- se), parameter norm and epochs of clean training."""
    measure = measure or jax.jit(make_measure(built["model"], built["data"], config))
    rows = []
    for name, key in (("bad", "x_bad"), ("normal", "x_normal"), ("confusion", "x_confusion")):
        values = np.asarray(measure(built[key]))
        info = built["info"][name]
        rows.append({
            "minimizer": name, **dict(zip(METRICS, values.tolist())),
            "param_norm": float(jnp.linalg.norm(built[key])),
            "epochs": info["epochs"],
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# escape runs


def run_group(built: dict, config: dict, method: str, batch: int, rhos, measure=None):
    """All ``rhos`` x seeds of one (method, batch) from the bad minimizer, vmapped together: the steps
    of :func:`flatmin.training.minibatch_step`, seed ``s`` keyed by ``PRNGKey(s)``.

    ``measure``: a jitted ``x (d,) -> (5,)`` (:func:`make_measure`); built when not given.
    Returns ``(rows, last)``: the tidy rows ``method, batch, rho, seed, step`` + :data:`METRICS`, and
    ``{(rho, seed): last iterate}``.
    """
    eta = float(config["eta"])
    seeds = np.arange(int(config["seeds"]))
    rhos = [float(r) for r in rhos]
    measure_one = measure or jax.jit(make_measure(built["model"], built["data"], config))
    measure = lambda xs: np.stack([np.asarray(measure_one(x)) for x in xs])  # one compilation for all groups
    checkpoints = checkpoint_steps(int(config["steps"]), intervals=int(config["num_checkpoints"]))
    step = minibatch_step(built["problem"], method, int(batch))
    traj_rho = np.repeat(rhos, len(seeds))
    traj_seed = np.tile(seeds, len(rhos))
    values, x = run_checkpointed(
        lambda y, k, r: step(y, k, eta, r), built["x_bad"], checkpoints, measure,
        keys=jax.vmap(jax.random.PRNGKey)(jnp.asarray(traj_seed)), args=jnp.asarray(traj_rho),
        name=f"{method} (batch {batch})",
    )
    frames = []
    for j in range(len(traj_seed)):
        df = pd.DataFrame(values[j], columns=list(METRICS))
        df.insert(0, "step", checkpoints)
        df.insert(0, "seed", int(traj_seed[j]))
        df.insert(0, "rho", float(traj_rho[j]))
        df.insert(0, "batch", int(batch))
        df.insert(0, "method", method)
        frames.append(df)
    last = {(float(r), int(s)): x[j] for j, (r, s) in enumerate(zip(traj_rho, traj_seed))}
    return pd.concat(frames, ignore_index=True), last


def make_flatness(model: nets.FlatMLP, data: dict, config: dict):
    """``flatness(x (d,)) -> (9,)``: :data:`METRICS` then :data:`FLATNESS` of the whole training loss,
    the curvature by :func:`flatmin.model_flatness` (predictions: the logits of the training inputs;
    ``trace_probes`` trace probes, ``flatness_probes`` gradient probes)."""
    batch = (jnp.asarray(data["x"]), jnp.asarray(data["y"]))
    x_te, y_te = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])
    key = jax.random.PRNGKey(8)

    def flatness(x):
        m = model_flatness(lambda p, b: model.mean_loss(p, *b), lambda p, b: model.logits(p, b[0]), x, batch, key,
                           trace_probes=config["trace_probes"], gradient_probes=config["flatness_probes"])
        return jnp.stack([model.accuracy(x, *batch), model.accuracy(x, x_te, y_te), m.loss, m.trace, m.trace_se,
                          m.top_eigenvalue, m.top_eigenvalue_residual, m.tangent_grad_norm,
                          m.tangent_grad_norm_se])

    return flatness


def best_runs(escape: pd.DataFrame, panel_batch: int) -> set[tuple[str, int, float]]:
    """The ``(method, batch, rho)`` of each method's best run at ``panel_batch`` and over every batch,
    best by the mean final test accuracy over seeds (ties: the smaller batch, then the smaller rho)."""
    fin = final_table(escape).sort_values(["method", "batch", "rho"])
    chosen = set()
    for _, runs in fin.groupby("method"):
        for subset in (runs[runs["batch"] == panel_batch], runs):
            if len(subset):
                best = subset.loc[subset["test_acc_mean"].idxmax()]
                chosen.add((best["method"], int(best["batch"]), float(best["rho"])))
    return chosen


def flatness_rows(built: dict, config: dict, last: dict, escape: pd.DataFrame | None = None) -> pd.DataFrame:
    """Definition 3 at the bad and normal minimizer (``step`` 0) and at the last iterates ``last``
    (``{(method, batch, rho, seed): x}``, seeds below ``flatness_seeds``) of the runs that
    ``flatness_runs`` selects (``"best"``: :func:`best_runs` of the escape rows ``escape``):
    columns ``method, batch, rho, seed, step``, :data:`METRICS` and :data:`FLATNESS`."""
    flatness = jax.jit(make_flatness(built["model"], built["data"], config))
    if config["flatness_runs"] == "best":
        if escape is None:
            raise ValueError("flatness_runs = 'best' needs the escape rows (escape=) to rank the runs")
        selected = best_runs(escape, config["panel_batch"])
    else:
        selected = {(m, b, r) for m, b, r, _ in last}
    points = {("bad", 0, 0.0, 0, 0): built["x_bad"], ("normal", 0, 0.0, 0, 0): built["x_normal"]}
    points.update({(m, b, r, s, int(config["steps"])): x for (m, b, r, s), x in last.items()
                   if s < config["flatness_seeds"] and (m, b, r) in selected})
    rows = []
    for i, ((method, batch, rho, seed, step), x) in enumerate(points.items()):
        values = np.asarray(flatness(x)).tolist()
        rows.append({"method": method, "batch": batch, "rho": rho, "seed": seed, "step": step,
                     **dict(zip((*METRICS, *FLATNESS), values))})
        print(f"[escape] flatness {i + 1}/{len(points)}: {method} B={batch} rho={rho:g} seed {seed}: "
              f"||dPhi grad trbar|| = {values[7]:.3g} +- {values[8]:.2g}, trace {values[3]:.1f}", file=sys.stderr,
              flush=True)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# the whole experiment


def run_experiment(config: dict | None = None, verbose: bool = False) -> dict:
    """Build the minimizers and run every group of ``config["runs"]``.

    Returns ``{"config", "minimizers" (DataFrame, :func:`minimizer_table`), "escape" (tidy DataFrame:
    method, batch, rho, seed, step, train_acc, test_acc, loss, trace, trace_se), "flatness"
    (:func:`flatness_rows`), "timings" (seconds), "info"}``.
    """
    config = make_config() if config is None else Settings.model_validate(config).as_dict()
    t_all = time.perf_counter()
    built = build_minimizers(config)
    timings = dict(built["times"])
    t0 = time.perf_counter()
    measure = jax.jit(make_measure(built["model"], built["data"], config))
    minimizers = minimizer_table(built, config, measure)
    timings["measure_minimizers"] = time.perf_counter() - t0
    if verbose:
        print(minimizers.to_string(index=False), file=sys.stderr, flush=True)
    frames, last = [], {}
    for run in config["runs"]:
        t0 = time.perf_counter()
        frame, ends = run_group(built, config, run["method"], int(run["batch"]), run["rhos"], measure)
        last.update({(run["method"], int(run["batch"]), r, s): x for (r, s), x in ends.items()})
        label = f"{run['method']}_b{run['batch']}"
        timings[f"escape_{label}"] = time.perf_counter() - t0
        frame["seconds"] = timings[f"escape_{label}"]
        frames.append(frame)
        if verbose:
            print(f"[escape] {label}: {timings[f'escape_{label}']:.1f} s", file=sys.stderr, flush=True)
    escape = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    flatness = flatness_rows(built, config, last, escape)
    timings["flatness"] = time.perf_counter() - t0
    flatness["seconds"] = timings["flatness"] / len(flatness)
    timings["total"] = time.perf_counter() - t_all
    return {
        "config": config,
        "minimizers": minimizers,
        "escape": escape,
        "flatness": flatness,
        "timings": timings,
        "info": built["info"],
        "dim": built["model"].dim,
    }


# ----------------------------------------------------------------------------------------------
# summaries


def _escape_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The escape rows of a :func:`compute` table (all rows of a :func:`run_experiment` table)."""
    if "record" in results.columns:
        results = results[results["record"] == "escape"]
    return results


def minimizer_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The minimizer rows of a :func:`compute` table, in the layout of :func:`minimizer_table`."""
    rows = results[results["record"] == "minimizer"]
    return rows.rename(columns={"method": "minimizer"})[["minimizer", *METRICS, "param_norm", "epochs",
                                                         "seconds"]].reset_index(drop=True)


def final_table(escape: pd.DataFrame) -> pd.DataFrame:
    """Per (method, batch, rho): mean and standard deviation over seeds of every metric at the last
    checkpoint, and the changes ``d_test_acc``, ``d_trace`` from step 0 (mean over seeds)."""
    escape = _escape_rows(escape)
    last = escape["step"].max()
    keys = ["method", "batch", "rho"]
    start = escape[escape["step"] == 0].set_index(keys + ["seed"])
    end = escape[escape["step"] == last].set_index(keys + ["seed"])
    delta = (end[["test_acc", "trace"]] - start[["test_acc", "trace"]]).add_prefix("d_")
    table = pd.concat([end[list(METRICS)], delta], axis=1).reset_index()
    cols = [c for c in table.columns if c not in keys + ["seed"]]
    agg = table.groupby(keys)[cols].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg = agg.reset_index()
    agg.insert(3, "seeds", table.groupby(keys).size().to_numpy())
    agg.insert(3, "step", last)
    order = {m: i for i, m in enumerate(METHODS)}
    return agg.sort_values(["method", "batch", "rho"], key=lambda s: s.map(order) if s.name == "method"
                           else s).reset_index(drop=True)


def flatness_table(results: pd.DataFrame) -> pd.DataFrame:
    """The flatness records of a :func:`compute` table, one row per point (the two minimizers first),
    mean over the measured seeds: test accuracy, training loss, Hessian trace, top eigenvalue and
    ``||dPhi grad trbar||`` (Definition 3), each with its standard error."""
    rows = results[results["record"] == "flatness"]
    keys = ["method", "batch", "rho"]
    columns = ["test_acc", "loss", "trace", "trace_se", "top_eigenvalue", "tangent_grad_norm", "tangent_grad_norm_se"]
    table = rows.groupby(keys, sort=False)[columns].mean().reset_index()
    table.insert(3, "seeds", rows.groupby(keys, sort=False).size().to_numpy())
    return table


def claims_table(results: pd.DataFrame, sgd_tol: float = 0.01) -> pd.DataFrame:
    """Audit rows for the claims of the paper's Figure 3, each with the measured value, a readable
    detail and whether it holds (final = last checkpoint, mean over seeds; accuracies as fractions).

    * ``sgd_stays``: |change of SGD's test accuracy| <= ``sgd_tol``.
    * ``sa_beats_rs_equal_rho_b{B}``: at every rho run by both, SA's final test accuracy exceeds RS's
      by more than 2 standard errors (over seeds) of the difference (value: the smallest margin).
    * ``sa_beats_rs_best_b{B}``: SA at its best rho beats RS at its best rho by more than 2 standard
      errors of the difference (value: the margin; the detail says when a best rho is at the edge of
      its grid, where a wider grid might do better).
    * ``sa_beats_rs_smaller_rho_b{B}``: some SA run beats, by more than 2 standard errors, the best RS
      run whose rho is >= its own (value: the best such margin).
    * ``smaller_batch_escapes_more_rho{r}``: SA's final test accuracy decreases with the batch size, each
      step by more than 2 standard errors (over seeds) of the difference; value: the smallest margin.
    * ``smallest_batch_best_rho{r}``: the smallest batch beats every larger one by > 2 standard errors.
    * ``train_acc_100_{method}``: the minimum training accuracy over every checkpoint, run and seed is
      1 (the detail names the runs that dipped).
    * ``trace_falls_as_test_rises``: Spearman correlation over runs of the mean changes of trace and
      test accuracy is negative.
    * ``gap_closed`` (with minimizer rows): fraction of the bad-to-normal test accuracy gap closed by
      the best run; holds if > 0. ``gap_closed_{method}``: the same for each method's best run, the
      detail with the fraction gained over the last checkpoint interval (+- its standard error over
      seeds): near 0 where the test accuracy has levelled off, clearly positive where it still rises.
    """
    escape = _escape_rows(results)
    fin = final_table(escape)
    rows = []

    def add(claim, value, detail, holds):
        rows.append({"claim": claim, "value": float(value), "detail": detail, "holds": bool(holds)})

    def acc(df):
        return df.set_index("rho")["test_acc_mean"]

    def se(df):
        return (df["test_acc_std"].fillna(0) / np.sqrt(df["seeds"])).set_axis(df["rho"])

    sgd = fin[fin["method"] == "sgd"]
    if len(sgd):
        d = float(sgd["d_test_acc_mean"].abs().max())
        add("sgd_stays", d, f"|change of test acc| = {d:.4f} (trace change {sgd['d_trace_mean'].iloc[0]:+.1f})",
            d <= sgd_tol)
    for batch in sorted(set(fin[fin["method"] == "rs"]["batch"]) & set(fin[fin["method"] == "sa"]["batch"])):
        rs_df = fin[(fin["method"] == "rs") & (fin["batch"] == batch)]
        sa_df = fin[(fin["method"] == "sa") & (fin["batch"] == batch)]
        rs, sa, rs_se, sa_se = acc(rs_df), acc(sa_df), se(rs_df), se(sa_df)
        common = sorted(set(rs.index) & set(sa.index))
        if common:
            # margin beyond 2 standard errors (over seeds) of the difference
            margins = [sa[r] - rs[r] - 2 * np.hypot(sa_se[r], rs_se[r]) for r in common]
            add(f"sa_beats_rs_equal_rho_b{batch}", min(margins),
                ", ".join(f"rho={r:g}: SA {sa[r]:.4f}+-{sa_se[r]:.4f} vs RS {rs[r]:.4f}+-{rs_se[r]:.4f}"
                          for r in common) + " (value: smallest margin beyond 2 s.e.)", min(margins) > 0)
        rs_best, sa_best = rs.idxmax(), sa.idxmax()
        margin = sa[sa_best] - rs[rs_best] - 2 * np.hypot(sa_se[sa_best], rs_se[rs_best])
        edges = [f"{name}'s best rho is the {'largest' if r == s.index.max() else 'smallest'} of its grid"
                 for name, s, r in (("SA", sa, sa_best), ("RS", rs, rs_best))
                 if len(s) > 1 and r in (s.index.min(), s.index.max())]
        train = lambda df, r: df.set_index("rho").loc[r, "train_acc_mean"]
        add(f"sa_beats_rs_best_b{batch}", margin,
            f"best SA rho={sa_best:g}: {sa[sa_best]:.4f}+-{sa_se[sa_best]:.4f} (train acc {train(sa_df, sa_best):.4f}) "
            f"vs best RS rho={rs_best:g}: {rs[rs_best]:.4f}+-{rs_se[rs_best]:.4f} (train acc "
            f"{train(rs_df, rs_best):.4f}) (value: margin beyond 2 s.e.)"
            + "".join(f"; {e}" for e in edges), margin > 0)
        margins = []
        for r in sa.index:
            larger = rs.index >= r
            if larger.any():
                best = rs[larger].idxmax()
                margins.append((r, best, sa[r] - rs[best] - 2 * np.hypot(sa_se[r], rs_se[best])))
        if margins:
            r, best, m = max(margins, key=lambda item: item[2])
            add(f"sa_beats_rs_smaller_rho_b{batch}", m,
                f"SA rho={r:g}: {sa[r]:.4f} vs best RS with rho >= {r:g} (rho={best:g}): {rs[best]:.4f} "
                "(value: margin beyond 2 s.e.)", m > 0)
    sa = fin[fin["method"] == "sa"]
    for r in sorted(sa["rho"].unique()):
        sub = sa[np.isclose(sa["rho"], r)].sort_values("batch")
        if sub["batch"].nunique() < 2:
            continue
        accs = sub["test_acc_mean"].to_numpy()
        ses = (sub["test_acc_std"].fillna(0) / np.sqrt(sub["seeds"])).to_numpy()
        detail = ", ".join(f"B={b}: {a:.4f}+-{e:.4f}" for b, a, e in zip(sub["batch"], accs, ses))
        # each smaller batch ahead of the next larger by more than 2 standard errors of the difference
        margins = -np.diff(accs) - 2 * np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)
        add(f"smaller_batch_escapes_more_rho{r:g}", float(margins.min()), detail + " (mean +- s.e. over seeds)",
            bool(np.all(margins > 0)))
        others = accs[1:] + 2 * np.sqrt(ses[1:] ** 2 + ses[0] ** 2)
        add(f"smallest_batch_best_rho{r:g}", float(accs[0] - accs[1:].max()),
            f"B={sub['batch'].iloc[0]} ahead of every larger batch by > 2 s.e.", bool(np.all(accs[0] > others)))
    for method in [m for m in METHODS if m in set(escape["method"])]:
        g = escape[escape["method"] == method]
        worst = g.groupby(["batch", "rho"])["train_acc"].min()
        dipped = worst[worst < 1.0]
        detail = "all runs at 100%" if dipped.empty else "dipped: " + ", ".join(
            f"B={b} rho={r:g}: {v:.4f}" for (b, r), v in dipped.items())
        add(f"train_acc_100_{method}", worst.min(), detail, dipped.empty)
    if len(fin) >= 3:
        from scipy.stats import spearmanr

        rs_ = float(spearmanr(fin["d_trace_mean"], fin["d_test_acc_mean"]).statistic)
        add("trace_falls_as_test_rises", rs_, f"Spearman(change of trace, change of test acc) over "
            f"{len(fin)} runs = {rs_:+.3f}", rs_ < 0)
    if "record" in results.columns and (results["record"] == "minimizer").any():
        mins = minimizer_rows(results).set_index("minimizer")["test_acc"]
        gap = mins["normal"] - mins["bad"]
        best = fin.loc[fin["test_acc_mean"].idxmax()]
        frac = (best["test_acc_mean"] - mins["bad"]) / gap if gap > 0 else float("nan")
        add("gap_closed", frac, f"best run {best['method']} B={best['batch']} rho={best['rho']:g}: "
            f"{best['test_acc_mean']:.4f}; bad {mins['bad']:.4f}, normal {mins['normal']:.4f}", frac > 0)
        for method in [m for m in METHODS if m in set(fin["method"])]:
            runs = fin[fin["method"] == method]
            best = runs.loc[runs["test_acc_mean"].idxmax()]
            gain, gain_se, (a, b) = _last_interval_gain(escape, best)
            frac = (best["test_acc_mean"] - mins["bad"]) / gap if gap > 0 else float("nan")
            add(f"gap_closed_{method}", frac,
                f"best {method} run B={best['batch']} rho={best['rho']:g}: {best['test_acc_mean']:.4f}, "
                f"{frac:.1%} of the gap; steps {a}-{b} gained {gain / gap:+.1%} +- {gain_se / gap:.1%} of it",
                frac > 0)
    return pd.DataFrame(rows)


def _last_interval_gain(escape: pd.DataFrame, run) -> tuple[float, float, tuple[int, int]]:
    """Test accuracy gained by ``run`` (a :func:`final_table` row) over its last checkpoint interval:
    mean and standard error over seeds, and the interval's two steps."""
    rows = escape[(escape["method"] == run["method"]) & (escape["batch"] == run["batch"])
                  & np.isclose(escape["rho"], run["rho"])]
    a, b = sorted(rows["step"].unique())[-2:]
    by_step = rows.pivot_table(index="seed", columns="step", values="test_acc")
    gains = by_step[b] - by_step[a]
    se = float(gains.std() / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
    return float(gains.mean()), se, (int(a), int(b))


# ----------------------------------------------------------------------------------------------
# figure


def _band(ax, df, label, color, metric, scale=1.0, linestyle="-"):
    g = df.groupby("step")[metric]
    mean, lo, hi = g.mean() * scale, g.min() * scale, g.max() * scale
    ax.plot(mean.index, mean.values, color=color, label=label, linestyle=linestyle, lw=1.6)
    if df["seed"].nunique() > 1:
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)


def plot_escape(results: pd.DataFrame, config: dict, minimizers: pd.DataFrame | None = None, path=None):
    """The paper's Figure 3 layout: columns (a) RS vs SA at batch ``panel_batch``, (b) the rho sweep of
    RS and SA at that batch, (c) SA at every batch size at ``batch_rho``; rows test accuracy (%),
    Hessian trace and training accuracy (%), mean over seeds with a min-max band; SGD (the control) in
    every panel; the normal minimizer's value as a grey dotted line. ``results``: a :func:`compute`
    table (the minimizer rows are used when ``minimizers`` is not given) or escape rows only."""
    import matplotlib.pyplot as plt

    escape = _escape_rows(results)
    if minimizers is None and "record" in results.columns:
        minimizers = minimizer_rows(results)
    check_finite(escape, METRICS, "escape")
    config = Settings.resolve(config).as_dict()
    fig, axes = plt.subplots(3, 3, figsize=(13, 8.6), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.6]})
    B = config["panel_batch"]

    def sel(method, batch=None, rho=None):
        mask = escape["method"] == method
        if batch is not None:
            mask &= escape["batch"] == batch
        if rho is not None:
            mask &= np.isclose(escape["rho"], rho)
        return escape[mask]

    sgd = sel("sgd")
    rows = (("test_acc", 100.0, "test accuracy (%)"), ("trace", 1.0, "Hessian trace tr(H)"),
            ("train_acc", 100.0, "train accuracy (%)"))
    for i, (metric, scale, ylabel) in enumerate(rows):
        for ax in axes[i]:
            if len(sgd):
                _band(ax, sgd, f"SGD (B={int(sgd['batch'].iloc[0])})", "k", metric, scale, "--")
        pa = config["panel_a"]
        for method, cmap in (("rs", plt.get_cmap("Blues")), ("sa", plt.get_cmap("Reds"))):
            rhos = [r for r in pa[f"{method}_rhos"] if len(sel(method, B, r))]
            for j, r in enumerate(rhos):
                color = cmap(0.55 + 0.4 * j / max(1, len(rhos) - 1))
                _band(axes[i, 0], sel(method, B, r), f"{method.upper()}, rho={r:g}", color, metric, scale)
        for method, ls, cmap in (("rs", ":", plt.get_cmap("Blues")), ("sa", "-", plt.get_cmap("Reds"))):
            rhos = sorted(sel(method, B)["rho"].unique())
            for j, r in enumerate(rhos):
                color = cmap(0.4 + 0.55 * j / max(1, len(rhos) - 1))
                _band(axes[i, 1], sel(method, B, r), f"{method.upper()}, rho={r:g}", color, metric, scale, ls)
        batches = sorted(sel("sa", None, config["batch_rho"])["batch"].unique())
        for j, b in enumerate(batches):
            color = plt.get_cmap("plasma")(0.1 + 0.7 * j / max(1, len(batches) - 1))
            _band(axes[i, 2], sel("sa", b, config["batch_rho"]), f"SA, B={b}", color, metric, scale)
        for ax in axes[i]:
            ax.set_ylabel(ylabel)
            if minimizers is not None and metric != "train_acc":
                ref = float(minimizers.set_index("minimizer").loc["normal", metric]) * scale
                ax.axhline(ref, color="gray", lw=1.0, ls=(0, (1, 2)), label="normal minimizer")
    low = min(99.0, 100.0 * float(escape["train_acc"].min()) - 0.2)
    for ax in axes[2]:
        ax.set_ylim(low, 100.2)
    titles = (f"(a) RS vs SA, batch {B}", f"(b) rho sweep, batch {B}",
              f"(c) SA, batch sizes, rho={config['batch_rho']:g}")
    for j, title in enumerate(titles):
        axes[0, j].set_title(title)
        axes[-1, j].set_xlabel(f"iteration (step size eta={config['eta']:g})")
        axes[0, j].legend(fontsize=7, loc="best")
    seeds = escape["seed"].nunique()
    fig.suptitle(
        f"Escaping a sharp global minimizer: MLP {config['depth']}x{config['width']} ({config['activation']}) on {config['data']}, "
        f"n={config['n_train']}, {config['loss']} loss. Mean and min-max over {seeds} seeds; "
        "dotted: the normally trained minimizer", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130)
    return fig


def compute(config: dict) -> pd.DataFrame:
    """Workflow entry point: :func:`run_experiment` on ``config`` (missing keys from the
    :class:`Settings` defaults) as one tidy table.

    Columns: ``record`` ("minimizer", "escape" or "flatness"), ``method`` (minimizer rows: "bad",
    "normal", "confusion"; escape rows: "sgd", "rs", "sa"; flatness rows: any of these but "confusion"),
    ``batch``, ``rho``, ``seed``, ``step``, the :data:`METRICS`, the :data:`FLATNESS` (flatness rows; -1
    elsewhere), ``param_norm`` and ``epochs`` (minimizer rows; NaN-free: -1 elsewhere) and ``seconds``
    (wall time of building the minimizer / of the run group / of one flatness measurement).
    """
    config = make_config("paper", **{k: v for k, v in config.items() if k != "seed"})
    result = run_experiment(config, verbose=True)
    print(f"[escape] total {result['timings']['total']:.1f} s", file=sys.stderr, flush=True)
    return results_table(result)


def results_table(result: dict) -> pd.DataFrame:
    """The one tidy table of :func:`compute` from a :func:`run_experiment` result."""
    mins = result["minimizers"].rename(columns={"minimizer": "method"})
    times = result["timings"]
    mins["seconds"] = [times["confusion"] + times["clean_bad"], times["clean_normal"], times["confusion"]]
    unmeasured = dict.fromkeys(FLATNESS, -1.0)
    mins = mins.assign(record="minimizer", batch=0, rho=0.0, seed=0, step=0, **unmeasured)
    esc = result["escape"].assign(record="escape", param_norm=-1.0, epochs=-1, **unmeasured)
    flat = result["flatness"].assign(record="flatness", param_norm=-1.0, epochs=-1)
    columns = ["record", "method", "batch", "rho", "seed", "step", *METRICS, *FLATNESS, "param_norm", "epochs",
               "seconds"]
    return pd.concat([mins[columns], esc[columns], flat[columns]], ignore_index=True)


def plot(results: pd.DataFrame, config: dict):
    """Workflow entry point: :func:`plot_escape` of a :func:`compute` table."""
    return plot_escape(results, config)


# ----------------------------------------------------------------------------------------------
# command line


def save_results(result: dict, out: Path) -> pd.DataFrame:
    """Write ``results.csv`` (:func:`results_table`), ``final.csv``, ``claims.csv``, ``flatness.csv``, ``meta.json``
    (config, timings, training logs) and ``escape.png`` into ``out``; return the results table."""
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(result)
    table.to_csv(out / "results.csv", index=False)
    final_table(table).to_csv(out / "final.csv", index=False)
    claims_table(table).to_csv(out / "claims.csv", index=False)
    flatness_table(table).to_csv(out / "flatness.csv", index=False)
    meta = {"config": result["config"], "timings": result["timings"], "info": result["info"], "dim": result["dim"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=float))
    import matplotlib.pyplot as plt

    plt.close(plot_escape(table, result["config"], path=out / "escape.png"))
    return table


def main(argv=None) -> int:
    """``python -m flatmin.experiments.escape --profile quick --out DIR``: :func:`save_results` of a run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="paper", choices=["paper", *PRESETS])
    parser.add_argument("--out", type=Path, required=True, help="folder for csv/json/png outputs")
    args = parser.parse_args(argv)
    table = save_results(run_experiment(make_config(args.profile), verbose=True), args.out)
    print(claims_table(table).to_string(index=False))
    return 0


# ----------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims)


def _claims_row_value(prefix: str, reduce: str = "min"):
    """A measure: the values of :func:`claims_table`'s rows whose name starts with ``prefix``
    (one per batch size or rho), reduced by ``reduce``."""

    def statistic(results):
        table = claims_table(results)
        rows = table[table["claim"].str.startswith(prefix)]
        if rows.empty:
            raise NotRun(f"no claim row starting with {prefix!r} (its runs are not in the config)")
        return getattr(rows["value"], reduce)()

    return point_estimate(statistic)


CLAIMS = (
    Claim("escape_sgd_stays", "Figure 3", "At the small constant step, SGD does not escape the sharp minimizer "
          "(largest |change of test accuracy|)", "escape", _claims_row_value("sgd_stays"), 0.01, 0.0, "below",
          "<= 0.01"),
    Claim("escape_sa_beats_rs_equal_rho", "Figure 3", "SA escapes more than RS at equal rho, batch 128 "
          "(smallest SA - RS final test accuracy beyond 2 SE over seeds)", "escape",
          _claims_row_value("sa_beats_rs_equal_rho"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_beats_rs_best", "Figure 3", "SA at its best rho escapes more than RS at its best rho, "
          "batch 128 (margin of final test accuracy beyond 2 SE over seeds; each over its rho grid)", "escape",
          _claims_row_value("sa_beats_rs_best"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_beats_rs_smaller_rho", "Figure 3", "SA escapes more than RS even with a smaller rho "
          "(best margin beyond 2 SE over the best RS run with rho >= SA's)", "escape",
          _claims_row_value("sa_beats_rs_smaller_rho", "max"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_small_batch_best", "Figure 3", "SA with batch 1 escapes best (margin of test accuracy over "
          "larger batches)", "escape", _claims_row_value("smallest_batch_best"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_train_acc_100", "Figure 3", "Training accuracy stays at 100% for every method "
          "(minimum over checkpoints, runs, seeds)", "escape", _claims_row_value("train_acc_100"), 1.0, 0.0,
          "equal", "1"),
    Claim("escape_trace_falls_as_test_rises", "§1, Figure 3", "The trace falls as test accuracy rises "
          "(Spearman correlation of their changes over runs)", "escape",
          _claims_row_value("trace_falls_as_test_rises"), 0.0, 0.0, "below", "< 0"),
)


if __name__ == "__main__":
    raise SystemExit(main())
