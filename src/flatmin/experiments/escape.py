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
* Steps (``mode="minibatch"``, the default; the paper's experiments use mini-batches): with a
  mini-batch ``B`` (uniform, without replacement) and ``g_B = grad f_B(x)``::

      SGD:  x <- x - eta * g_B
      RS :  x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * g)]),        g ~ U(S^{d-1})
      SA :  x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * s * g_B/||g_B||)]),  s ~ U{-1,+1}

  i.e. SGD plus a projected perturbation, the same batch in the three terms; the gate ``eps0`` is open
  (always perturbed): at a minimizer of an interpolating network the full gradient is ~0 anyway.
  The projection is orthogonal to the *batch* gradient: projecting onto the full gradient (as in
  Algorithm 2, ``mode="algorithm"``, which calls :func:`flatmin.algorithms.make_step` with
  ``eps0 = inf``, full-gradient base step and, for RS, the full-batch gradient) needs one full
  gradient per step, 10-1000 times dearer than the rest of a step at these sizes.
  With ``rho = 0`` RS and SA reduce to SGD exactly, and seed ``s`` draws the same mini-batches for every
  method, so the SGD run is a common-random-numbers control.

Entry points: :func:`run_experiment` (config dict, see :data:`DEFAULT_CONFIG` / :data:`PROFILES`),
:func:`final_table`, :func:`claims_table`, :func:`plot_escape`, and ``python -m
flatmin.experiments.escape --profile quick --out DIR``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from flatmin import nets
from flatmin.algorithms import make_step, project_out

#: Every knob of the experiment, with the "paper" defaults (CPU scale). Keys:
#:
#: data / model
#:   ``data``: "mnist1d" (offline make_dataset) or "digits" (scikit-learn). ``n_train`` / ``n_test``:
#:   split sizes. ``data_seed``: seeds the MNIST-1D generator and the split.
#:   ``width``, ``depth``: hidden layers of the MLP; ``activation``: "tanh" (smooth, default), "relu",
#:   "gelu", "softplus"; ``loss``: training loss of the clean phase and of the escape, "mse" (half squared
#:   error to one-hot) or "ce"; ``init_seed``, ``init_scale``: initialization (LeCun normal x scale).
#: bad minimizer
#:   ``confusion_repeats`` (copies of the training inputs), ``confusion_zero_frac`` (fraction of input
#:   entries zeroed), ``confusion_loss`` ("ce"), ``confusion_epochs``, ``confusion_lr``,
#:   ``confusion_batch``: the confusion pre-training (plain SGD, fixed number of epochs).
#: clean training (bad minimizer from the pre-trained point, normal minimizer from the initialization)
#:   ``clean_lr``, ``clean_batch``, ``clean_max_epochs`` (give up after), ``clean_extra_epochs`` (more
#:   epochs after 100% training accuracy is reached, to get close to an interpolating minimum).
#: escape
#:   ``eta``: the constant step size of every method; ``steps``; ``num_checkpoints`` (equally spaced,
#:   plus step 0); ``seeds``: number of seeds; ``mode``: "minibatch" or "algorithm" (module docstring);
#:   ``runs``: list of ``{"method": "sgd"|"rs"|"sa", "batch": B, "rhos": [...]}``; ``trace_probes``:
#:   Hutchinson probes per measurement (same probes at every checkpoint: common random numbers);
#:   ``trace_samples``: training samples in the loss whose trace is estimated (``None``: all).
#: figure
#:   ``panel_a``: ``{"rs_rhos": [...], "sa_rhos": [...]}`` the RS and SA curves of panel (a) (batch
#:   ``panel_batch``);
#:   ``panel_batch``: batch of panels (a) and (b); ``batch_rho``: rho of panel (c).
DEFAULT_CONFIG: dict = {
    "data": "digits",
    "n_train": 500,
    "n_test": 1297,
    "data_seed": 0,
    "width": 64,
    "depth": 2,
    "activation": "tanh",
    "loss": "mse",
    "init_seed": 0,
    "init_scale": 1.0,
    "confusion_repeats": 20,
    "confusion_zero_frac": 0.1,
    "confusion_loss": "ce",
    "confusion_epochs": 150,
    "confusion_lr": 0.05,
    "confusion_batch": 32,
    "clean_lr": 0.05,
    "clean_batch": 32,
    "clean_max_epochs": 2000,
    "clean_extra_epochs": 500,
    "eta": 0.002,
    "steps": 10000,
    "num_checkpoints": 10,
    "seeds": 3,
    "mode": "minibatch",
    "runs": [
        {"method": "sgd", "batch": 128, "rhos": [0.0]},
        {"method": "rs", "batch": 128, "rhos": [0.4, 1.0, 4.0]},
        {"method": "sa", "batch": 128, "rhos": [0.1, 0.2, 0.4]},
        {"method": "sa", "batch": 64, "rhos": [0.2]},
        {"method": "sa", "batch": 1, "rhos": [0.2]},
    ],
    "trace_probes": 20,
    "trace_samples": None,
    "panel_a": {"rs_rhos": [0.4, 4.0], "sa_rhos": [0.4]},
    "panel_batch": 128,
    "batch_rho": 0.2,
}

#: Named configurations: overrides of :data:`DEFAULT_CONFIG`. "quick" keeps the minimizers of
#: "paper" (same data, model and construction) and shortens the escape runs.
PROFILES: dict[str, dict] = {
    "paper": {},
    "quick": {
        "steps": 2500,
        "num_checkpoints": 5,
        "seeds": 2,
        "trace_probes": 10,
        "runs": [
            {"method": "sgd", "batch": 128, "rhos": [0.0]},
            {"method": "rs", "batch": 128, "rhos": [0.4, 4.0]},
            {"method": "sa", "batch": 128, "rhos": [0.4]},
            {"method": "sa", "batch": 64, "rhos": [0.2]},
            {"method": "sa", "batch": 1, "rhos": [0.2]},
        ],
    },
}

METHODS = ("sgd", "rs", "sa")
MODES = ("minibatch", "algorithm")
METRICS = ("train_acc", "test_acc", "loss", "trace", "trace_se")


def make_config(profile: str = "paper", **overrides) -> dict:
    """:data:`DEFAULT_CONFIG` updated with ``PROFILES[profile]`` and then ``overrides``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    config = copy.deepcopy(DEFAULT_CONFIG)
    config.update(copy.deepcopy(PROFILES[profile]))
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    config.update(copy.deepcopy(overrides))
    _check_config(config)
    return config


def _check_config(config: dict) -> None:
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    if config["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config['mode']!r}")
    for run in config["runs"]:
        if run["method"] not in METHODS:
            raise ValueError(f"run method must be one of {METHODS}, got {run['method']!r}")
        if not 1 <= int(run["batch"]) <= int(config["n_train"]):
            raise ValueError(f"run batch must lie in [1, n_train], got {run['batch']!r}")
        if any(r < 0 or not math.isfinite(r) for r in run["rhos"]):
            raise ValueError(f"rhos must be finite and >= 0, got {run['rhos']!r}")
    if config["steps"] < 1 or config["num_checkpoints"] < 1 or config["seeds"] < 1:
        raise ValueError("steps, num_checkpoints and seeds must be >= 1")


# ----------------------------------------------------------------------------------------------
# the two minimizers


def build_minimizers(config: dict) -> dict:
    """Data, model, the bad and the normal minimizer (see module docstring).

    Returns a dict with ``data`` (numpy arrays), ``model`` (:class:`flatmin.nets.FlatMLP`),
    ``problem`` (the clean training loss as a :class:`flatmin.Problem`), ``x_bad``, ``x_normal``,
    ``x_confusion`` (after pre-training), ``info`` (training logs) and ``times`` (seconds).
    """
    times = {}
    t0 = time.perf_counter()
    data = nets.load_data(config["data"], config["n_train"], config["n_test"], config["data_seed"])
    times["data"] = time.perf_counter() - t0
    sizes = [data["x"].shape[1]] + [config["width"]] * config["depth"] + [data["num_classes"]]
    model, x_init = nets.FlatMLP.create(
        jax.random.PRNGKey(config["init_seed"]), sizes, config["activation"], config["loss"],
        config["init_scale"],
    )
    conf_model = nets.FlatMLP(model.sizes, model.activation, config["confusion_loss"], model.unravel,
                              model.dim)
    key = jax.random.PRNGKey(1000 + config["init_seed"])
    k_conf, k_bad, k_normal = jax.random.split(key, 3)

    t0 = time.perf_counter()
    xc, yc = nets.confusion_set(data["x"], data["y"], config["confusion_repeats"],
                                config["confusion_zero_frac"], data["num_classes"], config["data_seed"])
    x_conf, info_conf = nets.train_sgd(
        conf_model, x_init, xc, yc, k_conf, config["confusion_lr"], config["confusion_batch"],
        config["confusion_epochs"], target_acc=None,
    )
    times["confusion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clean = dict(lr=config["clean_lr"], batch_size=config["clean_batch"],
                 max_epochs=config["clean_max_epochs"], extra_epochs=config["clean_extra_epochs"])
    x_bad, info_bad = nets.train_sgd(model, x_conf, data["x"], data["y"], k_bad, **clean)
    times["clean_bad"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_normal, info_normal = nets.train_sgd(model, x_init, data["x"], data["y"], k_normal, **clean)
    times["clean_normal"] = time.perf_counter() - t0
    for name, info in (("bad", info_bad), ("normal", info_normal)):
        if not info["reached"]:
            raise RuntimeError(
                f"the {name} minimizer did not reach 100% training accuracy in "
                f"{config['clean_max_epochs']} epochs (accuracy {info['acc']:.4f}, diverged: "
                f"{info['diverged']}); lower clean_lr if it diverged, else raise clean_max_epochs"
            )
    info_conf["confusion_acc"] = info_conf.pop("acc")
    problem = nets.mlp_problem(model, data["x"], data["y"], name=f"mlp_{config['data']}", x0=x_bad)
    return {
        "data": data,
        "model": model,
        "problem": problem,
        "x_init": x_init,
        "x_confusion": x_conf,
        "x_bad": x_bad,
        "x_normal": x_normal,
        "info": {"confusion": info_conf, "bad": info_bad, "normal": info_normal},
        "times": times,
    }


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
        tr, se = nets.hutchinson_trace(trace_loss, x, trace_key, config["trace_probes"])
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
# escape steps


def make_minibatch_step(problem, method: str, batch: int):
    """``step(x, key, eta, rho) -> x_next`` of the mini-batch variant (module docstring).

    ``eta`` and ``rho`` are traced, so one compilation serves every rho. ``key`` is split into a batch
    key and a perturbation key the same way for every method (same batches across methods).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n = problem.num_samples

    def batch_loss(y, idx):
        return jnp.mean(problem.losses_of(y, idx))

    grad_b = jax.grad(batch_loss)

    def step(x, key, eta, rho):
        k_batch, k_pert = jax.random.split(key)
        if batch == 1:
            idx = jax.random.randint(k_batch, (1,), 0, n)
        else:
            idx = jax.random.choice(k_batch, n, (batch,), replace=False)
        g = grad_b(x, idx)
        if method == "sgd":
            return x - eta * g
        if method == "sa":
            norm = jnp.linalg.norm(g)
            u = jnp.where(norm > 0, g / jnp.where(norm > 0, norm, 1.0), 0.0)
            direction = jax.random.rademacher(k_pert, (), dtype=x.dtype) * u
        else:
            # drawn in float32 (half the cost of the draw, which dominates an RS step at these sizes),
            # normalized in float64: uniform on the sphere up to float32 rounding of the Gaussian
            z = jax.random.normal(k_pert, x.shape, dtype=jnp.float32).astype(x.dtype)
            direction = z / jnp.linalg.norm(z)
        w = grad_b(x + rho * direction, idx)
        return x - eta * (g + project_out(g, w))

    return step


def make_algorithm_step(problem, method: str, batch: int, eta: float, rho: float):
    """``step(x, key) -> x_next`` from :func:`flatmin.algorithms.make_step` with the gate open
    (``eps0 = inf``) and ``eta_prime = eta``: full-gradient base step, projection on the full
    gradient, RS with the full-batch gradient (``batch`` then unused)."""
    if method == "sgd" or rho == 0:
        step = make_step(problem, "sgd", {"eta": eta, "batch_size": batch})
    elif method == "rs":
        step = make_step(problem, "rs", {"eta": eta, "eta_prime": eta, "rho": rho, "eps0": math.inf})
    else:
        step = make_step(problem, "sa", {"eta": eta, "eta_prime": eta, "rho": rho, "eps0": math.inf,
                                         "batch_size": batch})
    return lambda x, key: step(x, key, 0)[0]


def _checkpoint_steps(steps: int, num_checkpoints: int) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, steps, num_checkpoints + 1)).astype(int))


def run_group(built: dict, config: dict, method: str, batch: int, rhos, measure=None) -> pd.DataFrame:
    """All ``rhos`` x seeds of one (method, batch) from the bad minimizer, vmapped together.

    ``measure``: a jitted ``x (d,) -> (5,)`` (:func:`make_measure`); built when not given.
    Returns the tidy rows ``method, batch, rho, seed, step`` + :data:`METRICS`.
    """
    problem = built["problem"]
    eta, steps = float(config["eta"]), int(config["steps"])
    seeds = np.arange(int(config["seeds"]))
    rhos = [float(r) for r in rhos]
    measure_one = measure or jax.jit(make_measure(built["model"], built["data"], config))
    measure = lambda xs: np.stack([np.asarray(measure_one(x)) for x in xs])  # one compilation for all groups
    checkpoints = _checkpoint_steps(steps, int(config["num_checkpoints"]))

    if config["mode"] == "minibatch":
        step = make_minibatch_step(problem, method, int(batch))
        traj_rho = jnp.asarray(np.repeat(rhos, len(seeds)))
        traj_seed = np.tile(seeds, len(rhos))
        advances = [_segment_runner(lambda x, k, r: step(x, k, eta, r))]
        rho_groups = [(traj_rho, traj_seed, advances[0])]
    else:  # one compilation per rho: the library's parameters are Python floats
        rho_groups = []
        for r in rhos:
            st = make_algorithm_step(problem, method, int(batch), eta, r)
            rho_groups.append((jnp.full(len(seeds), r), seeds, _segment_runner(lambda x, k, _r, st=st: st(x, k))))

    frames = []
    for traj_rho, traj_seed, advance in rho_groups:
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(traj_seed))
        x = jnp.broadcast_to(built["x_bad"], (len(traj_seed), problem.dim))
        records = [np.asarray(measure(x))]
        for a, b in zip(checkpoints[:-1], checkpoints[1:]):
            x = advance(x, keys, traj_rho, int(a), int(b))
            if not bool(jnp.all(jnp.isfinite(x))):
                raise FloatingPointError(f"{method} (batch {batch}) diverged before step {b}; lower eta or rho")
            records.append(np.asarray(measure(x)))
        values = np.stack(records, axis=1)  # (traj, checkpoints, metrics)
        for j in range(len(traj_seed)):
            df = pd.DataFrame(values[j], columns=list(METRICS))
            df.insert(0, "step", checkpoints)
            df.insert(0, "seed", int(traj_seed[j]))
            df.insert(0, "rho", float(traj_rho[j]))
            df.insert(0, "batch", int(batch))
            df.insert(0, "method", method)
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _segment_runner(step):
    """``advance(xs, keys, rhos, start, stop)``: steps ``start..stop-1`` of every trajectory; step t
    uses ``fold_in(key, t)`` so results do not depend on the checkpoint spacing."""

    @jax.jit
    def advance(xs, keys, rhos, start, stop):
        def one(x, key, rho):
            return jax.lax.fori_loop(start, stop, lambda t, y: step(y, jax.random.fold_in(key, t), rho), x)

        return jax.vmap(one)(xs, keys, rhos)

    return advance


# ----------------------------------------------------------------------------------------------
# the whole experiment


def run_experiment(config: dict | None = None, verbose: bool = False) -> dict:
    """Build the minimizers and run every group of ``config["runs"]``.

    Returns ``{"config", "minimizers" (DataFrame, :func:`minimizer_table`), "escape" (tidy DataFrame:
    method, batch, rho, seed, step, train_acc, test_acc, loss, trace, trace_se), "timings" (seconds),
    "info"}``.
    """
    config = make_config() if config is None else config
    _check_config(config)
    t_all = time.perf_counter()
    built = build_minimizers(config)
    timings = dict(built["times"])
    t0 = time.perf_counter()
    measure = jax.jit(make_measure(built["model"], built["data"], config))
    minimizers = minimizer_table(built, config, measure)
    timings["measure_minimizers"] = time.perf_counter() - t0
    if verbose:
        print(minimizers.to_string(index=False), file=sys.stderr, flush=True)
    frames = []
    for run in config["runs"]:
        t0 = time.perf_counter()
        frame = run_group(built, config, run["method"], int(run["batch"]), run["rhos"], measure)
        label = f"{run['method']}_b{run['batch']}"
        timings[f"escape_{label}"] = time.perf_counter() - t0
        frame["seconds"] = timings[f"escape_{label}"]
        frames.append(frame)
        if verbose:
            print(f"[escape] {label}: {timings[f'escape_{label}']:.1f} s", file=sys.stderr, flush=True)
    timings["total"] = time.perf_counter() - t_all
    return {
        "config": config,
        "minimizers": minimizers,
        "escape": pd.concat(frames, ignore_index=True),
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


def claims_table(results: pd.DataFrame, sgd_tol: float = 0.01) -> pd.DataFrame:
    """Audit rows for the claims of the paper's Figure 3, each with the measured value, a readable
    detail and whether it holds (final = last checkpoint, mean over seeds; accuracies as fractions).

    * ``sgd_stays``: |change of SGD's test accuracy| <= ``sgd_tol``.
    * ``sa_beats_rs_equal_rho_b{B}``: at every rho run by both, SA's final test accuracy exceeds RS's
      by more than 2 standard errors (over seeds) of the difference (value: the smallest margin).
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
      the best run; holds if > 0.
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
    return pd.DataFrame(rows)


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
    values = escape[list(METRICS)].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("escape results hold non-finite values; refusing to plot them silently")
    config = {**DEFAULT_CONFIG, **config}
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
    """Workflow entry point: :func:`run_experiment` on ``config`` (missing keys from
    :data:`DEFAULT_CONFIG`) as one tidy table.

    Columns: ``record`` ("minimizer" or "escape"), ``method`` (minimizer rows: "bad", "normal",
    "confusion"; escape rows: "sgd", "rs", "sa"), ``batch``, ``rho``, ``seed``, ``step``, the
    :data:`METRICS`, ``param_norm`` and ``epochs`` (minimizer rows; NaN-free: -1 on escape rows) and
    ``seconds`` (wall time of building the minimizer / of the run group).
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
    mins = mins.assign(record="minimizer", batch=0, rho=0.0, seed=0, step=0)
    esc = result["escape"].assign(record="escape", param_norm=-1.0, epochs=-1)
    columns = ["record", "method", "batch", "rho", "seed", "step", *METRICS, "param_norm", "epochs", "seconds"]
    return pd.concat([mins[columns], esc[columns]], ignore_index=True)


def plot(results: pd.DataFrame, config: dict):
    """Workflow entry point: :func:`plot_escape` of a :func:`compute` table."""
    return plot_escape(results, config)


# ----------------------------------------------------------------------------------------------
# command line


def save_results(result: dict, out: Path) -> pd.DataFrame:
    """Write ``results.csv`` (:func:`results_table`), ``final.csv``, ``claims.csv``, ``meta.json``
    (config, timings, training logs) and ``escape.png`` into ``out``; return the results table."""
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(result)
    table.to_csv(out / "results.csv", index=False)
    final_table(table).to_csv(out / "final.csv", index=False)
    claims_table(table).to_csv(out / "claims.csv", index=False)
    meta = {"config": result["config"], "timings": result["timings"], "info": result["info"], "dim": result["dim"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=float))
    import matplotlib.pyplot as plt

    plt.close(plot_escape(table, result["config"], path=out / "escape.png"))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    parser.add_argument("--out", type=Path, required=True, help="folder for csv/json/png outputs")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="config overrides as JSON values, e.g. steps=1000 seeds=1")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    config = make_config(args.profile, **overrides)
    result = run_experiment(config, verbose=True)
    table = save_results(result, args.out)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(minimizer_rows(table).to_string(index=False))
        print(final_table(table).to_string(index=False))
        print(claims_table(table).to_string(index=False))
    print(json.dumps({k: round(v, 2) for k, v in result["timings"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
