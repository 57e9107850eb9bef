"""The yardstick: every method on every problem with a known flattest point, counted in gradient queries.

Which method reaches an (eps, sqrt(eps))-flat point (Definition 3) with the fewest gradient queries? Every
registered method (the built-ins, and those of ``method_modules``) runs on every problem of the config
it applies to (a method that needs a training loss or the targets is ``not applicable`` where the problem
has none, and a registered method whose knob has no grid in ``knobs`` reads ``not run``: the cell says
why). Each method gets the same tuning budget:

- its step size ``eta`` over ``step_sizes`` (in units of ``1 / beta``, the problem's smoothness; a gated
  method's perturbed steps take ``eta' = eta``), times
- its own knob: the one real-valued parameter without a default (``rho`` for SAM, 1-SAM, RS and SA,
  ``sigma`` for label-noise SGD, Anti-PGD and perturbed GD), over the ``knobs`` grid given for that method; every
  knob grid has the same length ``K``. A method without such a parameter (GD, SGD) tries ``K`` times as
  many step sizes, log-spaced over the same range, so that every method tries the same number of
  settings. Its other parameters keep their defaults or the values in ``fixed`` (the mini-batch sizes).

The tuning runs at the calibration eps, the smallest of the problem's eps list, on ``tuning_seeds`` (not
the sweep's seeds): the setting with the most seeds flat within the budget wins, ties going to the
fewest mean gradient queries; where no setting is ever flat, the one with the lowest final
trbar(Phi(x)). The winner is never retuned: the eps sweep runs it at every eps on ``seeds`` seeds and
records the gradient (and function) queries to the first flat point, NaN where a seed is not flat
within ``steps``. Every method's output is measured after ``final_gd_steps`` plain GD steps (Algorithm
2's last phase, which removes the distance to the minima that a stochastic method's noise leaves), and
those steps are counted.

Results table (:func:`compute`), one row per (stage, problem, method, setting, eps, seed): ``stage``
("tuning" or "sweep"), ``problem`` (the label), ``problem_name``, ``dim``, ``method``, ``setting`` (the
tuned parameters as JSON), ``eta``, ``knob``, ``knob_value``, ``eps``, ``seed``, ``status`` ("ran",
"diverged", "not applicable: ..." or "not run: ...", the reason), ``chosen`` (tuning rows: the winner), ``steps`` (the budget),
``first_flat_step``, ``gradient_queries``, ``function_queries``, ``flat``, ``trbar_limit_end`` and
``flattest_trace``. The ranking (:func:`flatmin.experiments.yardstick.ranking`, ``tables/ranking.md``)
reads the sweep at the calibration eps; the audit measures each method's exponent in eps on each problem
(:func:`claims_from_results`), for a user's method or problem as for the built-in ones.
"""

from __future__ import annotations

import json
import warnings
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

import flatmin
import flatmin.settings
from flatmin._validation import seed_list
from flatmin.algorithms import DivergenceError, simulation_params
from flatmin.claims import MEASURED_KIND, Claim, SweepExponent, select
from flatmin.experiments._sweeps import make_instance, progress
from flatmin.experiments.yardstick._figure import plot  # noqa: F401 (the experiment's plot)
from flatmin.experiments.yardstick._ranking import ranking  # noqa: F401 (the ranking table)
from flatmin.method import REQUIRED, get_method, list_methods
from flatmin.settings import Count, Eps, LabelledProblem, MethodName, Seeds, StepParams

ORDER = 7
CAPTION = (
    "The yardstick: gradient queries (per-sample gradients, the final GD phase included) to the first "
    "(eps, sqrt(eps))-flat point against eps, for every method on every problem of the config with a known "
    "flattest point, each method at its best setting of an equal tuning grid chosen at the smallest eps; "
    "median over seeds with a 95% interval, a method that is not flat within the budget on a problem is "
    "named in the panel, one that does not apply is left out with the reason in the ranking table."
)


def caption(config: dict) -> str:
    """:data:`CAPTION` for the problems and seeds ``config`` runs."""
    problems = ", ".join(f"{spec['label']} (eps {min(spec['eps']):g} to {max(spec['eps']):g}, {spec['steps']} steps)"
                         for spec in config["problems"])
    seeds = config["seeds"] if isinstance(config["seeds"], int) else len(config["seeds"])
    return (f"{CAPTION.split('; median')[0]}, on {problems}; median over {seeds} seeds with a 95% interval, a method "
            "not flat within the budget named in the panel, one that does not apply left out with the reason in "
            "tables/ranking.md.")


class YardstickProblem(LabelledProblem):
    eps: Annotated[list[Eps], Field(min_length=2)] = Field(description=(
        "the eps values of the sweep on this problem, >= 2 numbers > 0; the smallest is the calibration eps"))
    steps: Count = Field(ge=1, description="the budget: main steps of every run on this problem, an integer >= 1")


_PROBLEMS = [
    # The ramp of slope 2 sqrt(0.01) = 0.2 at every eps (no eps_param): one problem, compiled once per method;
    # its flat test fails on the ramp while sqrt(eps) < 0.2.
    {"name": "valley_ramp", "params": {"m": 1, "k": 7, "eps": 0.01}, "label": "ramp",
     "eps": [0.0025, 0.0035, 0.005, 0.007, 0.01], "steps": 20000},
    {"name": "valley_bowl", "params": {"m": 1, "k": 7}, "label": "bowl",
     "eps": [0.01, 0.014, 0.02, 0.028, 0.04], "steps": 20000},
    {"name": "hyperbola", "params": {"depth": 2}, "label": "hyperbola",
     "eps": [0.01, 0.014, 0.02, 0.028, 0.04], "steps": 20000},
    # Started beyond both minimizers (u = 2 > u_top = 1 > u_trace = 3/7): a method lowering the trace passes
    # u_top on its way, one lowering the top eigenvalue stops there and is never flat.
    {"name": "valley_split", "params": {"start": 2.0}, "label": "split valley",
     "eps": [0.01, 0.014, 0.02, 0.028, 0.04], "steps": 20000},
    # Matrix sensing is left out: its flattest point is not known exactly (flatmin.problems.matrix_sensing).
    {"name": "diagonal_net", "params": {"n": 10, "p": 30, "sparsity": 3, "seed": 0}, "label": "diagonal net",
     "eps": [0.04, 0.056, 0.08], "steps": 20000},
]


class Settings(flatmin.settings.Settings):
    problems: list[YardstickProblem] = Field(_PROBLEMS, min_length=1, description=(
        "the problems, a non-empty list of {name, params, eps_param?, label, eps, steps}"))
    methods: list[MethodName] | None = Field(None, description=(
        "the methods, registered names (flatmin.list_methods()); null: every registered method, those of "
        "method_modules included"))
    step_sizes: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = Field(
        [0.1, 0.3, 1.0], description="step sizes eta tried, in units of 1/beta (beta: the problem's smoothness), "
        "a non-empty list of numbers > 0")
    knobs: dict[MethodName, dict[str, Annotated[list[float], Field(min_length=1)]]] = Field(
        {"rs": {"rho": [0.01, 0.03, 0.1]}, "rs_noproj": {"rho": [0.01, 0.03, 0.1]}, "sa": {"rho": [0.01, 0.03, 0.1]},
         "sam": {"rho": [0.01, 0.03, 0.1]}, "sam_per_sample": {"rho": [0.01, 0.03, 0.1]},
         "label_noise_sgd": {"sigma": [0.1, 0.3, 1.0]}, "anti_pgd": {"sigma": [0.1, 0.3, 1.0]},
         "perturbed_gd": {"sigma": [0.1, 0.3, 1.0]}},
        description="the grid of each method's own knob, {method: {parameter: [values]}}, every grid of the same "
        "length; a method left out has no knob (only its step size is tuned)")
    fixed: dict[MethodName, StepParams] = Field(
        {"sgd": {"batch_size": 1}, "label_noise_sgd": {"batch_size": 1}, "sam_per_sample": {"batch_size": 1}},
        description="parameters held fixed per method, {method: {parameter: value}} (the others keep their defaults)")
    seeds: Seeds = Field(16, description="seeds of the eps sweep: an integer n >= 1 (seeds 0..n-1) or a list of "
                         "distinct integers >= 0")
    # As many as the sweep's: the compiled loop is shared (it is compiled per number of seeds).
    tuning_seeds: Seeds = Field(list(range(1000, 1016)), description=(
        "seeds of the tuning runs, distinct from the sweep's: a list of distinct integers >= 0"))
    records: Count = Field(20, ge=1, description="checkpoints per run, an integer >= 1")
    flat_refine: Count = Field(20, ge=1, description=(
        "flat tests per checkpoint interval locating the first flat step, an integer >= 1"))
    final_gd_steps: Count = Field(50, ge=0, description=(
        "plain GD steps from each checkpoint before the flat test, counted in the queries, an integer >= 0"))

    @field_validator("knobs")
    @classmethod
    def _one_knob_of_one_length(cls, knobs):
        lengths = {}
        for method, grid in knobs.items():
            if len(grid) != 1:
                raise ValueError(f"knobs.{method}: one knob per method, got {sorted(grid)}; fix the others in `fixed`")
            lengths[method] = len(next(iter(grid.values())))
        if len(set(lengths.values())) > 1:
            raise ValueError(f"knobs: every grid must have the same length (the same tuning budget), got {lengths}")
        return knobs

    @model_validator(mode="after")
    def _parameters_known(self):
        for where, grids in (("knobs", self.knobs), ("fixed", self.fixed)):
            for method, params in grids.items():
                allowed = simulation_params(method)
                unknown = sorted(set(params) - set(allowed))
                if unknown:
                    raise ValueError(f"{where}.{method}: unknown parameter(s) {unknown}; {method} takes "
                                     f"{', '.join(allowed)}")
                for key, value in params.items():
                    for item in value if where == "knobs" else [value]:
                        allowed[key].check(method, key, item)
        labels = [problem.label for problem in self.problems]
        if len(set(labels)) != len(labels):
            raise ValueError(f"problems: labels must be distinct, got {labels}")
        config = self.model_dump()
        for method in self.methods or []:
            knob_of(method, config)  # a method named here whose knob has no grid fails before any job starts
        return self


PRESETS = {
    "quick": {
        "problems": [{**_PROBLEMS[2], "eps": [0.02, 0.04], "steps": 10000}],
        "seeds": 4,
        "tuning_seeds": [1000, 1001, 1002, 1003],
        "records": 10,
    },
}


def methods_of(config: dict) -> list[str]:
    """The methods of the yardstick: the config's, or every registered one."""
    return list(config.get("methods") or list_methods())


def knob_of(method: str, config: dict) -> str | None:
    """The method's tuned knob: the one in ``knobs``, else None. A method with a real-valued parameter
    that has no default, is not fixed and has no grid cannot be run: the error says where to give it."""
    grid = config["knobs"].get(method, {})
    fixed = config["fixed"].get(method, {})
    free = [name for name, param in get_method(method).params.items()
            if param.default is REQUIRED and name not in fixed and name not in grid]
    if free:
        raise ValueError(f"yardstick: method {method!r} needs parameter(s) {free} that have no default: give one "
                         f"grid in experiments.yardstick.knobs.{method} (e.g. {{{free[0]}: [...]}}) or values in "
                         f"experiments.yardstick.fixed.{method}")
    return next(iter(grid), None)


def tuning_grid(method: str, problem, config: dict) -> list[dict]:
    """The settings tried, each ``{eta, [eta_prime,] knob: value}``: the step sizes times the knob's grid,
    or ``K`` times as many step sizes for a method without a knob (:mod:`the module docstring
    <flatmin.experiments.yardstick>`)."""
    beta = problem.smoothness or 1.0
    knob = knob_of(method, config)
    sizes = np.asarray(config["step_sizes"], dtype=float)
    if knob is None:
        width = len(next(iter(next(iter(config["knobs"].values())).values()))) if config["knobs"] else 1
        count = len(sizes) * width
        sizes = np.geomspace(sizes.min(), sizes.max(), count) if count > 1 else sizes
        pairs = [(float(size), None) for size in sizes]
    else:
        pairs = [(float(size), float(value)) for size in sizes for value in config["knobs"][method][knob]]
    gated = "eta_prime" in simulation_params(method)
    grid = []
    for size, value in pairs:
        setting = {"eta": size / beta, **({"eta_prime": size / beta} if gated else {})}
        if knob is not None:
            setting[knob] = value
        grid.append(setting)
    return grid


def not_applicable(method: str, problem, config: dict) -> str | None:
    """Why ``method`` cannot run on ``problem`` (None if it can): a need the problem does not meet, or
    (for a method that joined as a registered one, not named in ``methods``) a knob without a grid."""
    try:
        knob_of(method, config)
    except ValueError as missing:
        return f"not run: {str(missing).removeprefix('yardstick: ')}"
    needs = get_method(method).needs
    if "training_loss" in needs and not problem.is_training_loss:
        return "not applicable: needs a training loss (sample_losses)"
    if "targets" in needs and problem.targets is None:
        return "not applicable: needs predictions and targets"
    return None


def runs_to_flat(problem, method: str, setting: dict, eps: float, seeds, config: dict, steps: int) -> pd.DataFrame:
    """One row per seed of ``method`` at ``setting`` (plus ``fixed``) on ``problem``: the first flat step
    and the queries to it (NaN where not flat within ``steps``), ``flat``, the final trbar(Phi(x)), and
    ``status`` "diverged" (every seed's values NaN) where an iterate became non-finite."""
    params = {**config["fixed"].get(method, {}), **setting}
    record_every = max(1, steps // config["records"])
    seeds = seed_list(seeds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", flatmin.AlreadyFlatWarning)
            result = flatmin.run(problem, method, None, params, steps, seeds, record_every=record_every, eps=eps,
                                 measure_after_gd=config["final_gd_steps"],
                                 flat_resolution=max(1, record_every // config["flat_refine"]))
    except flatmin.AlreadyFlatWarning as flat_start:
        raise ValueError(f"yardstick: problem {problem.name!r} at eps = {eps:g}: {flat_start}. Lower this eps in "
                         "experiments.yardstick.problems or give the problem a sharper start") from None
    except DivergenceError:
        return pd.DataFrame({"seed": seeds, "status": "diverged", "first_flat_step": np.nan,
                             "gradient_queries": np.nan, "function_queries": np.nan, "flat": False,
                             "trbar_limit_end": np.nan})
    found = result.first_flat_step >= 0
    queries = result.first_flat_queries
    ends = result.metrics[result.metrics["phase"] == "main"].groupby("seed")["trbar_limit"].last()
    return pd.DataFrame({
        "seed": seeds, "status": "ran",
        "first_flat_step": np.where(found, result.first_flat_step, np.nan),
        "gradient_queries": np.where(found, queries["gradient_queries"], np.nan),
        "function_queries": np.where(found, queries["function_queries"], np.nan),
        "flat": found, "trbar_limit_end": ends.loc[seeds].to_numpy(),
    })


def best_setting(tuning: pd.DataFrame) -> int:
    """The index (column ``setting_index``) of the tuning's winner: most seeds flat, then the fewest mean
    gradient queries; where none is flat, the lowest mean final trbar(Phi(x)) (a diverged setting last)."""
    scores = tuning.groupby("setting_index").agg(flat=("flat", "mean"), queries=("gradient_queries", "mean"),
                                                 trbar=("trbar_limit_end", "mean"))
    if scores["flat"].max() > 0:
        return int(scores.sort_values(["flat", "queries"], ascending=[False, True]).index[0])
    return int(scores["trbar"].fillna(np.inf).sort_values(kind="stable").index[0])


def compute(config: dict) -> pd.DataFrame:
    """Tuning then the eps sweep, for every problem and method (the module docstring)."""
    methods = methods_of(config)
    frames = []
    for spec in config["problems"]:
        calibration = min(spec["eps"])
        calibration_problem = make_instance(spec, calibration)
        for method in methods:
            base = {"stage": "sweep", "problem": spec["label"], "problem_name": spec["name"],
                    "dim": calibration_problem.dim, "method": method, "steps": spec["steps"],
                    "flattest_trace": calibration_problem.flattest_trace}
            reason = not_applicable(method, calibration_problem, config)
            if reason:
                frames.append(pd.DataFrame([{**base, "status": reason, "eps": calibration}]))
                continue
            progress("yardstick", f"{spec['label']} {method}: tuning at eps={calibration:g}")
            grid = tuning_grid(method, calibration_problem, config)
            tuning = pd.concat([
                runs_to_flat(calibration_problem, method, setting, calibration, config["tuning_seeds"], config,
                             spec["steps"]).assign(setting_index=index)
                for index, setting in enumerate(grid)], ignore_index=True)
            chosen = best_setting(tuning)
            frames.append(_with_setting(tuning.assign(**{**base, "stage": "tuning", "eps": calibration,
                                                         "chosen": tuning["setting_index"] == chosen}), grid, method, config))
            progress("yardstick", f"{spec['label']} {method}: sweep at {json.dumps(grid[chosen])}")
            for eps in spec["eps"]:
                problem = make_instance(spec, eps)
                sweep = runs_to_flat(problem, method, grid[chosen], eps, config["seeds"], config, spec["steps"])
                frames.append(_with_setting(sweep.assign(**base, eps=eps, setting_index=chosen, chosen=True),
                                            grid, method, config))
    return pd.concat(frames, ignore_index=True).drop(columns="setting_index")[COLUMNS]


COLUMNS = ["stage", "problem", "problem_name", "dim", "method", "setting", "eta", "knob", "knob_value", "eps", "seed",
           "status", "chosen", "steps", "first_flat_step", "gradient_queries", "function_queries", "flat",
           "trbar_limit_end", "flattest_trace"]


def _with_setting(frame: pd.DataFrame, grid: list[dict], method: str, config: dict) -> pd.DataFrame:
    knob = knob_of(method, config)
    settings = [grid[i] for i in frame["setting_index"]]
    return frame.assign(setting=[json.dumps(s, sort_keys=True) for s in settings], eta=[s["eta"] for s in settings],
                        knob=knob or "", knob_value=[s[knob] if knob else np.nan for s in settings])


# --------------------------------------------------------------------------------------------------
# The audit's claims on this table: one measured exponent per method and problem.


def _exponent_rows(problem: str, method: str):
    def rows(results):
        swept = select(results, stage="sweep", problem=problem, method=method)
        return swept.dropna(subset=["gradient_queries"])

    return rows


def claims_from_results(results: pd.DataFrame) -> tuple[Claim, ...]:
    """The exponent in eps of the gradient queries to flat, one claim per (problem, method) of the sweep that
    ran (a user's method or problem too). No paper states a rate for a tuned, fixed setting: the
    verdict is ``measured``, with the exponent, its interval and local slopes; a method flat at fewer
    than two eps reads ``not confirmed`` with the reason."""
    swept = results[(results["stage"] == "sweep") & (results["status"] == "ran")]
    claims = []
    for (problem, method), _ in swept.groupby(["problem", "method"], sort=False):
        label = get_method(method).label or method
        claims.append(Claim(
            f"yardstick_exponent_{method}_{problem.replace(' ', '_')}", "yardstick (issue 22)",
            f"{label}: gradient queries to an (eps, sqrt(eps))-flat point on the {problem} at its tuned setting, "
            "exponent in eps", "yardstick", SweepExponent(_exponent_rows(problem, method), "eps", "gradient_queries"),
            float("nan"), 0.0, MEASURED_KIND, "—"))
    return tuple(claims)

