"""The escape experiment's computations on its resolved settings: the two minimizers and their
measurement, the escape runs from the bad one, Definition 3 at the minimizers and end points, and the
results table they make. The network, its data, its measurements and the minimizers' construction are
the library's (:mod:`flatmin.nets`, :mod:`flatmin.minimizers`), the steps and the checkpointed runs
:mod:`flatmin.training`."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from flatmin import nets
from flatmin.checkpoints import checkpoint_steps
from flatmin.experiments.escape._tables import FLATNESS, METRICS, best_runs
from flatmin.minimizers import build_minimizers
from flatmin.training import main_knob, minibatch_step, run_checkpointed

#: The Hutchinson probes of every trace measurement at the checkpoints, and the probes of Definition 3's
#: measurements, are drawn from these keys (the same probes at every point: common random numbers).
TRACE_KEY, FLATNESS_KEY = 7, 8

#: The columns of the results table (:func:`table`).
COLUMNS = ["record", "method", "method_options", "batch", "knob", "value", "rho", "seed", "step", *METRICS, *FLATNESS, "param_norm", "epochs", "seconds"]


def group_grid(group: dict) -> tuple[str | None, list[float]]:
    """``(knob, values)`` of a run group: its ``knob`` (default the method's,
    :func:`flatmin.training.main_knob`; None for a method without one) and its grid (``values``, or
    ``rhos``)."""
    knob = group.get("knob") or main_knob(group["method"])
    values = group["values"] if group.get("values") is not None else group["rhos"]
    return knob, [float(v) for v in values]


def build(config: dict) -> dict:
    """:func:`flatmin.minimizers.build_minimizers` on the settings: data, MLP, both minimizers, the
    clean training loss as a Problem, the training logs and the times."""
    confusion = {name: config[f"confusion_{name}"] for name in ("repeats", "zero_frac", "lr", "epochs")}
    confusion["batch_size"] = config["confusion_batch"]
    clean = dict(lr=config["clean_lr"], batch_size=config["clean_batch"],
                 max_epochs=config["clean_max_epochs"], extra_epochs=config["clean_extra_epochs"])
    return build_minimizers(
        data=config["data"], n_train=config["n_train"], n_test=config["n_test"], data_seed=config["data_seed"],
        hidden=[config["width"]] * config["depth"], activation=config["activation"], loss=config["loss"],
        init_seed=config["init_seed"], init_scale=config["init_scale"], confusion=confusion, clean=clean,
        confusion_loss=config["confusion_loss"])


def measure_fn(built: dict, config: dict):
    """The jitted ``x (d,) -> (5,)`` of the :data:`METRICS` at every checkpoint
    (:func:`flatmin.nets.classifier_measure`)."""
    return jax.jit(nets.classifier_measure(built["model"], built["data"], jax.random.PRNGKey(TRACE_KEY),
                                           config["trace_probes"], config["trace_samples"]))


def minimizer_table(built: dict, measure) -> pd.DataFrame:
    """One row per minimizer (``bad``, ``normal``, and the pre-trained ``confusion`` point): the
    :data:`METRICS`, the parameter norm and the epochs of training."""
    rows = []
    for name, key in (("bad", "x_bad"), ("normal", "x_normal"), ("confusion", "x_confusion")):
        values = np.asarray(measure(built[key]))
        rows.append({"minimizer": name, **dict(zip(METRICS, values.tolist())),
                     "param_norm": float(jnp.linalg.norm(built[key])), "epochs": built["info"][name]["epochs"]})
    return pd.DataFrame(rows)


def run_group(built: dict, config: dict, group: dict, measure) -> tuple[pd.DataFrame, dict]:
    """All grid values x seeds of one run group (``method``, ``options``, ``batch``, and its grid:
    ``knob`` and ``values``, or ``rhos``; :func:`group_grid`) from the bad
    minimizer, vmapped together: the steps of :func:`flatmin.training.minibatch_step`, seed ``s`` keyed
    by ``PRNGKey(s)`` (the same mini-batches for every method), measured by ``measure``
    (:func:`measure_fn`) at the checkpoints.

    Returns ``(rows, last)``: the rows ``method, method_options, batch, knob, value, rho, seed, step`` and
    the :data:`METRICS` (``knob``: "rho", "sigma" or "none"; ``rho``: the value for a rho knob, else 0), and
    ``{(value, seed): last iterate}``.
    """
    method, batch, options = group["method"], int(group["batch"]), dict(group.get("options") or {})
    knob, grid = group_grid(group)
    eta = float(config["eta"])
    seeds = np.arange(int(config["seeds"]))
    measure_all = lambda xs: np.stack([np.asarray(measure(x)) for x in xs])  # one compilation for all groups
    checkpoints = checkpoint_steps(int(config["steps"]), intervals=int(config["num_checkpoints"]))
    step = minibatch_step(built["problem"], method, batch, knob=knob, **options)
    traj_value = np.repeat(grid, len(seeds))
    traj_seed = np.tile(seeds, len(grid))
    values, x = run_checkpointed(
        lambda y, k, v: step(y, k, eta, v), built["x_bad"], checkpoints, measure_all,
        keys=jax.vmap(jax.random.PRNGKey)(jnp.asarray(traj_seed)), args=jnp.asarray(traj_value),
        name=f"{method} (batch {batch})",
    )
    frames = []
    for j in range(len(traj_seed)):
        df = pd.DataFrame(values[j], columns=list(METRICS))
        df.insert(0, "step", checkpoints)
        df.insert(0, "seed", int(traj_seed[j]))
        df.insert(0, "rho", float(traj_value[j]) if knob == "rho" else 0.0)
        df.insert(0, "value", float(traj_value[j]))
        df.insert(0, "knob", knob or "none")
        df.insert(0, "batch", batch)
        df.insert(0, "method_options", ", ".join(f"{k}={v}" for k, v in sorted(options.items())))
        df.insert(0, "method", method)
        frames.append(df)
    last = {(float(v), int(s)): x[j] for j, (v, s) in enumerate(zip(traj_value, traj_seed))}
    return pd.concat(frames, ignore_index=True), last


def flatness_rows(built: dict, config: dict, last: dict, escape: pd.DataFrame) -> pd.DataFrame:
    """Definition 3 (:func:`flatmin.nets.classifier_flatness`) at the bad and normal minimizer (``step``
    0) and at the last iterates ``last`` (``{(method, batch, value, seed): x}``, seeds below
    ``flatness_seeds``) of the runs that ``flatness_runs`` selects (``"best"``: :func:`best_runs` of the
    escape rows ``escape``): columns ``method, batch, knob, value, rho, seed, step``, :data:`METRICS`,
    :data:`FLATNESS` (``knob`` and ``rho`` those of the run's escape rows; the minimizers: "none", 0)."""
    flatness = jax.jit(nets.classifier_flatness(built["model"], built["data"], jax.random.PRNGKey(FLATNESS_KEY),
                                                config["trace_probes"], config["flatness_probes"]))
    if config["flatness_runs"] == "best":
        selected = best_runs(escape, config["panel_batch"])
    else:
        selected = {(m, b, r) for m, b, r, _ in last}
    points = {("bad", 0, 0.0, 0, 0): built["x_bad"], ("normal", 0, 0.0, 0, 0): built["x_normal"]}
    points.update({(m, b, r, s, int(config["steps"])): x for (m, b, r, s), x in last.items()
                   if s < config["flatness_seeds"] and (m, b, r) in selected})
    knobs = escape.drop_duplicates(["method", "batch", "value"]).set_index(["method", "batch", "value"])["knob"]
    rows = []
    for i, ((method, batch, value, seed, step), x) in enumerate(points.items()):
        values = np.asarray(flatness(x)).tolist()
        knob = knobs.get((method, batch, value), "none")
        rows.append({"method": method, "batch": batch, "knob": knob, "value": value,
                     "rho": value if knob == "rho" else 0.0, "seed": seed, "step": step,
                     **dict(zip((*METRICS, *FLATNESS), values))})
        print(f"[escape] flatness {i + 1}/{len(points)}: {method} B={batch} {knob}={value:g} seed {seed}: "
              f"||dPhi grad trbar|| = {values[7]:.3g} +- {values[8]:.2g}, trace {values[3]:.1f}", file=sys.stderr,
              flush=True)
    return pd.DataFrame(rows)


def table(minimizers: pd.DataFrame, escape: pd.DataFrame, flatness: pd.DataFrame, times: dict) -> pd.DataFrame:
    """The results table (:data:`COLUMNS`) of the minimizer rows (:func:`minimizer_table`), the escape
    rows (:func:`run_group`'s, with their ``seconds``) and the flatness rows (:func:`flatness_rows`, with
    theirs); ``times``: the seconds of building the minimizers (``confusion``, ``clean_bad``,
    ``clean_normal``). A column a record does not measure holds -1 (``method_options``: empty), never NaN."""
    mins = minimizers.rename(columns={"minimizer": "method"})
    mins["seconds"] = [times["confusion"] + times["clean_bad"], times["clean_normal"], times["confusion"]]
    unmeasured = dict.fromkeys(FLATNESS, -1.0)
    mins = mins.assign(record="minimizer", method_options="", batch=0, knob="none", value=0.0, rho=0.0, seed=0, step=0,
                       **unmeasured)
    esc = escape.assign(record="escape", param_norm=-1.0, epochs=-1, **unmeasured)
    keys = ["method", "batch", "value"]
    options = escape.drop_duplicates(keys).set_index(keys)["method_options"]
    flat = flatness.assign(record="flatness", param_norm=-1.0, epochs=-1)
    flat["method_options"] = [options.get(key, "") for key in zip(flat["method"], flat["batch"], flat["value"])]
    return pd.concat([mins[COLUMNS], esc[COLUMNS], flat[COLUMNS]], ignore_index=True)
