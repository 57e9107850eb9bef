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

Why this file is longer than the others (about 540 lines): it is the one experiment on a trained
network, and its 33 settings with their checks (about 100 lines), the construction and measurement of the
minimizers and end points, the runs, the command line and its seven claims belong to this experiment
only. Its tables are :mod:`flatmin.experiments._escape_tables` (re-exported here) and its figure
:mod:`flatmin.experiments._escape_figure`; everything reusable (steps, checkpointed runs, the
minimizers' construction, data, model, curvature) is in the library modules named above.
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
from flatmin.experiments import _escape_figure
from flatmin.experiments._escape_tables import (  # noqa: F401 (re-exported: the experiment's tables)
    FLATNESS,
    METRICS,
    best_runs,
    claims_table,
    final_table,
    flatness_table,
    minimizer_rows,
)
from flatmin.curvature import hessian_trace
from flatmin.minimizers import bad_and_normal_minimizers
from flatmin.model_flatness import model_flatness
from flatmin.settings import Count, MethodName, Spec, StepParams
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


Loss = Literal["mse", "ce"]
# SA as the paper's escape experiment runs it: perturbation and projection on the mini-batch gradient, the
# gate open, and no Remark 2 fallback (whose extra gradient vmap would evaluate at every step).
_SA_OPTIONS = {"projection": "batch", "fallback": False}


class RunGroup(Spec):
    method: MethodName = Field(description="the method of the group, a registered method without state "
                               "(flatmin.list_methods())")
    options: StepParams = Field({}, description=(
        "the method's parameters other than rho (flatmin.get_method(method).params), e.g. SA's "
        "{projection: batch, fallback: false}"))
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
         {"method": "sa", "batch": 128, "rhos": [0.2, 0.4, 0.6], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 64, "rhos": [0.2], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 16, "rhos": [0.2], "options": _SA_OPTIONS},
         {"method": "sa", "batch": 1, "rhos": [0.2], "options": _SA_OPTIONS}],
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
            {"method": "sa", "batch": 128, "rhos": [0.4], "options": _SA_OPTIONS},
            {"method": "sa", "batch": 64, "rhos": [0.2], "options": _SA_OPTIONS},
            {"method": "sa", "batch": 1, "rhos": [0.2], "options": _SA_OPTIONS},
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


def run_group(built: dict, config: dict, method: str, batch: int, rhos, measure=None, options=None):
    """All ``rhos`` x seeds of one (method, batch) from the bad minimizer, vmapped together: the steps
    of :func:`flatmin.training.minibatch_step`, seed ``s`` keyed by ``PRNGKey(s)``.

    ``measure``: a jitted ``x (d,) -> (5,)`` (:func:`make_measure`); built when not given.
    ``options``: the method's other parameters. Returns ``(rows, last)``: the tidy rows ``method,
    method_options, batch, rho, seed, step`` + :data:`METRICS`, and ``{(rho, seed): last iterate}``.
    """
    eta = float(config["eta"])
    seeds = np.arange(int(config["seeds"]))
    rhos = [float(r) for r in rhos]
    measure_one = measure or jax.jit(make_measure(built["model"], built["data"], config))
    measure = lambda xs: np.stack([np.asarray(measure_one(x)) for x in xs])  # one compilation for all groups
    checkpoints = checkpoint_steps(int(config["steps"]), intervals=int(config["num_checkpoints"]))
    options = dict(options or {})
    step = minibatch_step(built["problem"], method, int(batch), **options)
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
        df.insert(0, "method_options", ", ".join(f"{k}={v}" for k, v in sorted(options.items())))
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

    # defined once, so that model_flatness compiles once for all the points
    def loss(p, b):
        return model.mean_loss(p, *b)

    def predict(p, b):
        return model.logits(p, b[0])

    def flatness(x):
        m = model_flatness(loss, predict, x, batch, key,
                           trace_probes=config["trace_probes"], gradient_probes=config["flatness_probes"])
        return jnp.stack([model.accuracy(x, *batch), model.accuracy(x, x_te, y_te), m.loss, m.trace, m.trace_se,
                          m.top_eigenvalue, m.top_eigenvalue_residual, m.tangent_grad_norm,
                          m.tangent_grad_norm_se])

    return flatness


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
        frame, ends = run_group(built, config, run["method"], int(run["batch"]), run["rhos"], measure,
                                run.get("options") or {})
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
def plot_escape(results: pd.DataFrame, config: dict, minimizers: pd.DataFrame | None = None, path=None):
    """The figure (:func:`flatmin.experiments._escape_figure.figure`) of a :func:`compute` table or of
    escape rows, for ``config`` completed from the :class:`Settings` defaults; saved to ``path`` if given."""
    return _escape_figure.figure(results, Settings.resolve(config).as_dict(), minimizers, path)


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
