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
from flatmin.training import minibatch_step, run_checkpointed

#: The Hutchinson probes of every trace measurement at the checkpoints, and the probes of Definition 3's
#: measurements, are drawn from these keys (the same probes at every point: common random numbers).
TRACE_KEY, FLATNESS_KEY = 7, 8

#: The columns of the results table (:func:`table`).
COLUMNS = ["record", "method", "method_options", "batch", "rho", "seed", "step", *METRICS, *FLATNESS, "param_norm", "epochs", "seconds"]


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
    """All ``rhos`` x seeds of one run group (``method``, ``options``, ``batch``, ``rhos``) from the bad
    minimizer, vmapped together: the steps of :func:`flatmin.training.minibatch_step`, seed ``s`` keyed by
    ``PRNGKey(s)``, measured by ``measure`` (:func:`measure_fn`) at the checkpoints.

    Returns ``(rows, last)``: the rows ``method, method_options, batch, rho, seed, step`` and the
    :data:`METRICS`, and ``{(rho, seed): last iterate}``.
    """
    method, batch, options = group["method"], int(group["batch"]), dict(group.get("options") or {})
    eta = float(config["eta"])
    seeds = np.arange(int(config["seeds"]))
    rhos = [float(r) for r in group["rhos"]]
    measure_all = lambda xs: np.stack([np.asarray(measure(x)) for x in xs])  # one compilation for all groups
    checkpoints = checkpoint_steps(int(config["steps"]), intervals=int(config["num_checkpoints"]))
    step = minibatch_step(built["problem"], method, batch, **options)
    traj_rho = np.repeat(rhos, len(seeds))
    traj_seed = np.tile(seeds, len(rhos))
    values, x = run_checkpointed(
        lambda y, k, r: step(y, k, eta, r), built["x_bad"], checkpoints, measure_all,
        keys=jax.vmap(jax.random.PRNGKey)(jnp.asarray(traj_seed)), args=jnp.asarray(traj_rho),
        name=f"{method} (batch {batch})",
    )
    frames = []
    for j in range(len(traj_seed)):
        df = pd.DataFrame(values[j], columns=list(METRICS))
        df.insert(0, "step", checkpoints)
        df.insert(0, "seed", int(traj_seed[j]))
        df.insert(0, "rho", float(traj_rho[j]))
        df.insert(0, "batch", batch)
        df.insert(0, "method_options", ", ".join(f"{k}={v}" for k, v in sorted(options.items())))
        df.insert(0, "method", method)
        frames.append(df)
    last = {(float(r), int(s)): x[j] for j, (r, s) in enumerate(zip(traj_rho, traj_seed))}
    return pd.concat(frames, ignore_index=True), last


def flatness_rows(built: dict, config: dict, last: dict, escape: pd.DataFrame) -> pd.DataFrame:
    """Definition 3 (:func:`flatmin.nets.classifier_flatness`) at the bad and normal minimizer (``step``
    0) and at the last iterates ``last`` (``{(method, batch, rho, seed): x}``, seeds below
    ``flatness_seeds``) of the runs that ``flatness_runs`` selects (``"best"``: :func:`best_runs` of the
    escape rows ``escape``): columns ``method, batch, rho, seed, step``, :data:`METRICS`, :data:`FLATNESS`."""
    flatness = jax.jit(nets.classifier_flatness(built["model"], built["data"], jax.random.PRNGKey(FLATNESS_KEY),
                                                config["trace_probes"], config["flatness_probes"]))
    if config["flatness_runs"] == "best":
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


def table(minimizers: pd.DataFrame, escape: pd.DataFrame, flatness: pd.DataFrame, times: dict) -> pd.DataFrame:
    """The results table (:data:`COLUMNS`) of the minimizer rows (:func:`minimizer_table`), the escape
    rows (:func:`run_group`'s, with their ``seconds``) and the flatness rows (:func:`flatness_rows`, with
    theirs); ``times``: the seconds of building the minimizers (``confusion``, ``clean_bad``,
    ``clean_normal``). A column a record does not measure holds -1 (``method_options``: empty), never NaN."""
    mins = minimizers.rename(columns={"minimizer": "method"})
    mins["seconds"] = [times["confusion"] + times["clean_bad"], times["clean_normal"], times["confusion"]]
    unmeasured = dict.fromkeys(FLATNESS, -1.0)
    mins = mins.assign(record="minimizer", method_options="", batch=0, rho=0.0, seed=0, step=0, **unmeasured)
    esc = escape.assign(record="escape", param_norm=-1.0, epochs=-1, **unmeasured)
    options = escape.drop_duplicates(["method", "batch", "rho"]).set_index(["method", "batch", "rho"])["method_options"]
    flat = flatness.assign(record="flatness", param_norm=-1.0, epochs=-1)
    flat["method_options"] = [options.get(key, "") for key in zip(flat["method"], flat["batch"], flat["rho"])]
    return pd.concat([mins[COLUMNS], esc[COLUMNS], flat[COLUMNS]], ignore_index=True)
