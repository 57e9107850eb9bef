"""The simulation on a :class:`flatmin.Problem`: :func:`simulate`, the compiled multi-seed loop of any
registered method (:mod:`flatmin.method`), and :func:`run`, which simulates and then measures
(:mod:`flatmin.measurement`).

A step of method ``m`` from ``x`` with state ``s``::

    direction, s, perturbed = m.direction(oracle of the problem, x, s, key_t, hyper)
    x <- x - (eta_prime if m.gated and perturbed else eta) * direction

with ``key_t = fold_in(PRNGKey(seed), t)``. The parameters of a run are the simulation's (``eta``,
``eta_prime`` for a gated method, ``final_gd_steps``) and the method's own (``m.params``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from flatmin import measurement
from flatmin.checkpoints import checkpoint_steps
from flatmin.flatness import _check_tolerances
from flatmin.loop import descend, resimulate, run_loop
from flatmin.method import REQUIRED, Method, Param, as_step, get_method, problem_oracle
from flatmin.problem import Array, Problem
from flatmin._precision import require_x64
from flatmin._validation import seed_list

#: The simulation's own parameters; ``eta_prime`` only for a gated method.
SIMULATION_PARAMS = {
    "eta": Param("step size eta", low=0, low_open=True),
    "eta_prime": Param("step size eta' of the perturbed steps of a gated method", low=0, low_open=True),
    "final_gd_steps": Param("plain GD steps of size eta after the main steps", kind=int, default=0, low=0),
}


class DivergenceError(FloatingPointError):
    """An iterate became NaN or infinite; the message names the step, seed and parameters."""


class AlreadyFlatWarning(UserWarning):
    """The start of a run already passes the flat test: its first flat step, 0, measures nothing."""


def already_flat_message(problem: Problem, metrics: pd.DataFrame, eps: float, criterion: str) -> str | None:
    """What :func:`run` reports when some seed's start (step 0) is already (eps, sqrt(eps))-flat: the
    seeds, eps, d and the flat test's values at the start; None when no start is flat."""
    start = metrics[(metrics["step"] == 0) & metrics["flat"]]
    if start.empty:
        return None
    gap = "distance" if criterion == "distance" else "loss_gap"
    first = start.iloc[0]
    return (f"the start of {problem.name!r} {problem.params} (d = {problem.dim}) is already "
            f"(eps, sqrt(eps))-flat at eps = {eps:g} for seed(s) {start['seed'].tolist()}: at seed "
            f"{int(first['seed'])}, {gap} = {first[gap]:.3g} <= eps and tangent_grad_norm = "
            f"{first['tangent_grad_norm']:.3g} <= sqrt(eps) = {math.sqrt(eps):.3g}, so first_flat_step = 0 "
            "measures nothing: use a smaller eps, or a start farther from the flat minima")


def simulation_params(algorithm: str) -> dict[str, Param]:
    """Every parameter a run of ``algorithm`` takes: the simulation's and the method's."""
    method = get_method(algorithm)
    own = {k: p for k, p in SIMULATION_PARAMS.items() if k != "eta_prime" or method.gated}
    return {**own, **method.params}


def check_params(problem: Problem, algorithm: str, params: dict) -> dict:
    """Validate ``params`` for ``algorithm`` on ``problem``; return them with defaults filled in.

    Raises ``ValueError`` naming the bad method, key or value and the allowed ones.
    """
    method = get_method(algorithm)
    where = f"{method.name} on {problem.name!r}"
    if "training_loss" in method.needs and not problem.is_training_loss:
        raise ValueError(f"method {method.name!r} needs a training loss (sample_losses); problem {problem.name!r} "
                         "has none")
    if "targets" in method.needs and problem.predictions is None:
        raise ValueError(f"method {method.name!r} perturbs the targets: it needs a problem with predictions and "
                         f"targets (a square loss); problem {problem.name!r} has none")
    allowed = simulation_params(algorithm)
    given = {k: v for k, v in params.items() if k != "steps"}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}")
    own = {k: p for k, p in allowed.items() if k not in method.params}
    missing = [k for k, p in own.items() if p.default is REQUIRED and k not in given]
    if missing:
        raise ValueError(f"{where}: needs parameter(s) {missing}; got {sorted(given)}")
    full = {k: p.check(where, k, given.get(k, p.default)) for k, p in own.items()}
    full.update(method.resolve({k: v for k, v in given.items() if k in method.params}, where))
    if full.get("batch_size") is not None and full["batch_size"] > problem.num_samples:
        raise ValueError(f"{where}: batch_size must be an integer in [1, n={problem.num_samples}], "
                         f"got {full['batch_size']!r}")
    return full


def _split(algorithm: str, params: dict) -> tuple[tuple, dict]:
    """``(static items, traced values)`` of checked ``params``: the static part keys the compiled loop,
    the traced part is its argument, so sweeping a real-valued parameter reuses it."""
    method = get_method(algorithm)
    static, traced = method.split({k: v for k, v in params.items() if k in method.params})
    traced.update({k: float(params[k]) for k in ("eta", "eta_prime") if k in params})
    return static, traced


def perturbation(problem: Problem, algorithm: str, x: Array, rho: float, key: Array, **params) -> Array:
    """One perturbation vector ``v`` (shape ``(d,)``) of a gated method (``'rs'``, ``'rs_noproj'``,
    ``'sa'``, or one of your own): its ``v`` at ``x``, whatever the gate.

    ``params`` are the method's other parameters, by default those its theorem fixes (SA: ``batch_size
    = 1``, the perturbation Theorem 2 analyses).
    Compiled once per problem, method, non-real parameters and shape of ``x``: repeated calls (a Monte
    Carlo estimate in a Python loop) compile nothing new.
    """
    require_x64("flatmin.perturbation")
    method = get_method(algorithm)
    if not hasattr(method, "perturbation"):
        raise ValueError(f"method {method.name!r} has no perturbation (it is not gated)")
    fixed = method.theory.fixed if method.theory is not None else {}
    hyper = check_params(problem, algorithm, {"eta": 1.0, **({"eta_prime": 1.0} if method.gated else {}),
                                              **fixed, "rho": rho, **params})
    static, traced = _split(algorithm, hyper)
    return _perturbation(problem, method, static, jnp.asarray(x, dtype=jnp.float64), key, traced)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _perturbation(problem: Problem, method: Method, static: tuple, x, key, traced):
    return method.perturbation(problem_oracle(problem), x, key, {**dict(static), **traced})[1]


def _traced_step(problem: Problem, algorithm, static: tuple):
    """``step(x, state, key, t, hyper) -> (x_next, state, perturbed)`` of the method registered as
    ``algorithm`` now (a method registered anew gets its own), cached so that the compiled loops of
    :mod:`flatmin.loop` are cached on it."""
    return _step_of(problem, get_method(algorithm), static)


@functools.lru_cache(maxsize=64)
def _step_of(problem: Problem, method: Method, static: tuple):
    def step(x, state, key, t, hyper):
        step = as_step(method, method.direction(problem_oracle(problem), x, state, key, {**dict(static), **hyper}))
        size = jnp.where(step.perturbed, hyper["eta_prime"], hyper["eta"]) if method.gated else hyper["eta"]
        return x - size * step.direction, step.state, jnp.asarray(step.perturbed)

    return step


@functools.lru_cache(maxsize=64)
def _init_of(method: Method, static: tuple):
    return lambda x, hyper: method.init(x, {**dict(static), **hyper})


def _gd_step(problem: Problem):
    return _traced_step(problem, "gd", ())


def _starting_points(problem: Problem, x0, seeds: Sequence[int]) -> np.ndarray:
    if x0 is None:
        starts = np.stack([problem.start(jax.random.PRNGKey(s)) for s in seeds])
    else:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape == (problem.dim,):
            starts = np.broadcast_to(x0, (len(seeds), problem.dim))
        elif x0.shape == (len(seeds), problem.dim):
            starts = x0
        else:
            raise ValueError(
                f"x0 of shape {x0.shape} fits neither ({problem.dim},) nor (num_seeds={len(seeds)}, "
                f"{problem.dim})"
            )
    bad = ~np.all(np.isfinite(starts), axis=1)
    if bad.any():
        raise ValueError(f"x0 has non-finite entries for seed(s) {np.asarray(seeds)[bad].tolist()}")
    return starts


def _checkpoints(steps: int, record_every: int, final_gd_steps: int) -> np.ndarray:
    main = checkpoint_steps(steps, every=record_every)
    if final_gd_steps:
        return np.r_[main, steps + final_gd_steps]
    return main


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """The iterates of :func:`simulate` at its checkpoints, and what re-simulates them.

    Attributes:
      problem, algorithm: what ran.
      params: the checked step parameters (:func:`check_params`).
      seeds: ``(num_seeds,)``; seed ``s`` drives step ``t`` through ``fold_in(PRNGKey(s), t)``.
      checkpoints: the recorded steps, increasing, from 0; those after ``main_steps`` belong to the
        final GD phase.
      main_steps: the number of main steps.
      iterates: ``(num_seeds, num_checkpoints, d)``.
      perturbed_fraction: ``(num_seeds, num_checkpoints)``, the fraction of the steps since the
        previous checkpoint that took the perturbed branch (0 at step 0 and in the final GD phase).
      states: the method's state at the checkpoints, a pytree of arrays with leading axes
        ``(num_seeds, num_checkpoints)`` (``()`` for a method without state).
    """

    problem: Problem
    algorithm: str
    params: dict
    seeds: np.ndarray
    checkpoints: np.ndarray
    main_steps: int
    iterates: np.ndarray
    perturbed_fraction: np.ndarray
    states: object = ()

    def descend(self, points, steps: int) -> jax.Array:
        """``points`` ``(n, d)`` after ``steps`` plain GD steps of size ``eta`` (Algorithm 2's final
        phase from each of them)."""
        if not steps:
            return jnp.asarray(points)
        return descend(_gd_step(self.problem), {"eta": float(self.params["eta"])}, points, steps)

    def perturbed_steps(self) -> np.ndarray:
        """``(num_seeds, num_checkpoints)``: how many main steps before each checkpoint were perturbed."""
        lengths = np.diff(self.checkpoints, prepend=0)
        return np.rint(np.cumsum(np.asarray(self.perturbed_fraction) * lengths, axis=1)).astype(int)

    def queries(self, steps, perturbed, final_gd_steps=0) -> dict[str, np.ndarray]:
        """Oracle queries of ``steps`` main steps of which ``perturbed`` were perturbed, then
        ``final_gd_steps`` GD steps of the whole loss (arrays of one shape, or scalars), in per-sample
        units: a gradient of a mini-batch of ``B`` samples counts ``B``, one of the whole loss ``n`` (1 for
        a loss without samples); keys ``gradient_queries``, ``function_queries``
        (:meth:`flatmin.Method.step_cost`)."""
        method = get_method(self.algorithm)
        hyper = {k: v for k, v in self.params.items() if k in method.params}
        n = self.problem.num_samples or 1
        batch = hyper.get("batch_size") or n

        def per_step(perturbed_step):
            cost = method.step_cost(hyper, perturbed_step)
            return cost.gradients * batch + cost.full_gradients * n, cost.function_values * batch

        (grad_on, value_on), (grad_off, value_off) = per_step(True), per_step(False)
        steps, perturbed = np.asarray(steps), np.asarray(perturbed)
        return {"gradient_queries": perturbed * grad_on + (steps - perturbed) * grad_off + final_gd_steps * n,
                "function_queries": perturbed * value_on + (steps - perturbed) * value_off}

    def replay(self, rows, start_index, stops, every: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Seeds ``rows`` (indices into :attr:`seeds`) re-simulated from their checkpoint
        ``start_index`` to the main-phase steps ``stops``, with the same random keys (so the same
        iterates up to rounding): the iterates every ``every`` steps and at each stop, ``(len(rows),
        length, d)``, the steps they follow, ``(len(rows), length)``, and how many of the steps since the
        checkpoint were perturbed, ``(len(rows), length)``."""
        rows, start_index = np.asarray(rows), np.asarray(start_index)
        static, traced = _split(self.algorithm, self.params)
        states = jax.tree.map(lambda a: jnp.asarray(a[rows, start_index]), self.states)
        return resimulate(_traced_step(self.problem, self.algorithm, static), traced,
                          jnp.asarray(self.iterates[rows, start_index]), states, self.seeds[rows],
                          self.checkpoints[start_index], np.asarray(stops), every)


def simulate(
    problem: Problem,
    algorithm: str,
    x0,
    params: dict,
    steps: int,
    seeds=1,
    record_every: int | None = None,
) -> Trajectory:
    """Run ``algorithm`` from ``x0`` for ``steps`` steps on every seed at once and keep the iterates at
    the checkpoints; nothing is measured (:mod:`flatmin.measurement` does that, :func:`run` both).

    The loop is compiled once per (problem, method, its non-real parameters such as the batch size,
    number of seeds, number of checkpoints, whether a final GD phase follows): step sizes, the real
    parameters (``rho``, ``eps0``, ...), ``steps`` and ``record_every`` are arguments of the compiled
    code, so a sweep over them reuses it (:mod:`flatmin.loop`).

    Args:
      problem: the loss.
      algorithm: a registered method (:func:`flatmin.list_methods`).
      x0: ``(d,)`` shared start, ``(num_seeds, d)`` one per seed, or None for
        ``problem.initial_point(PRNGKey(seed))``.
      params: step parameters (:func:`check_params`); ``final_gd_steps`` (default 0) plain GD steps
        at step size ``eta`` follow the ``steps`` main steps. A ``steps`` entry (as in the output of
        :func:`flatmin.theory_params`) must equal ``steps``.
      steps: number of main steps, >= 1.
      seeds: a count ``S`` (seeds ``0..S-1``) or a sequence of ints; seed ``s`` drives step ``t``
        through ``fold_in(PRNGKey(s), t)``, so results do not depend on ``record_every``, nor on
        which other seeds run beside it beyond floating-point rounding (XLA may compile another
        batch size into differently fused arithmetic, ~1e-16 relative); the same call repeats exactly.
      record_every: checkpoint spacing (default ``max(1, steps // 100)``); steps 0, ``record_every``,
        ..., ``steps`` (and ``steps + final_gd_steps``) are recorded.

    Raises:
      DivergenceError: an iterate became non-finite; names the first step, the seed and ``params``.
      ValueError: a bad parameter, or ``params["steps"]`` differs from ``steps``.
    """
    require_x64("flatmin.simulate")
    p = check_params(problem, algorithm, params)
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if "steps" in params and params["steps"] != steps:
        raise ValueError(f"params['steps'] = {params['steps']!r} but steps = {steps!r}: give the number of "
                         "steps once (drop it from params, or pass the same value)")
    record_every = max(1, steps // 100) if record_every is None else record_every
    if not (isinstance(record_every, (int, np.integer)) and record_every >= 1):
        raise ValueError(f"record_every must be an integer >= 1, got {record_every!r}")
    seed_values = np.asarray(seed_list(seeds))
    starts = _starting_points(problem, x0, seed_values)
    checkpoints = _checkpoints(int(steps), int(record_every), p["final_gd_steps"])
    static, traced = _split(algorithm, p)
    iterates, states, perturbed, first_bad = run_loop(
        _traced_step(problem, algorithm, static), _init_of(get_method(algorithm), static), _gd_step(problem),
        traced, starts, seed_values, checkpoints, steps)
    bad_seeds = np.flatnonzero(first_bad >= 0)
    if bad_seeds.size:
        s = bad_seeds[0]
        raise DivergenceError(
            f"{algorithm} on {problem.name!r} {problem.params} diverged: seed {seed_values[s]} gave a "
            f"non-finite iterate at step {int(first_bad[s])} (params {p}); "
            f"{bad_seeds.size} of {len(seed_values)} seeds diverged"
        )
    return Trajectory(problem, get_method(algorithm).name, p, seed_values, checkpoints, int(steps), np.asarray(iterates),
                      perturbed, jax.tree.map(np.asarray, states))


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Output of :func:`run`.

    Attributes:
      metrics: tidy DataFrame, one row per (seed, checkpoint), columns ``step, seed, phase, loss,
        grad_norm, perturbed_fraction`` and, with ``measure=True``, ``distance, loss_gap, trbar_limit,
        tangent_grad_norm`` (:func:`flatmin.flatness`) and, with ``eps``, ``flat``
        (:func:`flatmin.measurement.measure`).
      final: last iterates, shape ``(num_seeds, d)``.
      iterates: the iterates at the checkpoints, shape ``(num_seeds, num_checkpoints, d)``, in the
        row order of ``metrics`` within each seed.
      first_flat_step: with ``eps``, per seed the first step whose iterate is (eps, sqrt(eps))-flat
        (:func:`flatmin.measurement.first_flat_step`); ``-1`` if no checkpoint is flat; ``0`` where
        the start is already flat (:class:`AlreadyFlatWarning` says so); else None.
      first_flat_queries: with ``eps``, per seed the oracle queries to that point,
        ``{"gradient_queries", "function_queries"}`` in per-sample units
        (:func:`flatmin.measurement.first_flat_queries`); ``-1`` where none is flat; else None.
    """

    metrics: pd.DataFrame
    final: np.ndarray
    iterates: np.ndarray
    first_flat_step: np.ndarray | None = None
    first_flat_queries: dict | None = None


def run(
    problem: Problem,
    algorithm: str,
    x0,
    params: dict,
    steps: int,
    seeds=1,
    record_every: int | None = None,
    *,
    eps: float | None = None,
    flat_criterion: str = "distance",
    measure: bool = True,
    measure_after_gd: int = 0,
    flat_resolution: int | None = None,
) -> RunResult:
    """:func:`simulate`, then measure the checkpoints (:func:`flatmin.measurement.measure`) and, with
    ``eps``, locate the first flat step (:func:`flatmin.measurement.first_flat_step`).

    Args:
      problem, algorithm, x0, params, steps, seeds, record_every: as in :func:`simulate`.
      eps: if given, adds the column ``flat`` and ``first_flat_step`` for (eps, sqrt(eps))-flatness.
      flat_criterion: the first condition of Definition 3 that ``eps`` bounds: ``"distance"``
        (``||x - Phi(x)||``) or ``"loss_gap"`` (``f(x) - f(Phi(x))``), see :func:`flatmin.is_flat`.
      measure: compute the flatness measures (needs Phi at every checkpoint; turn off for large d).
      measure_after_gd: measure flatness (and ``flat``) at the point reached from each checkpoint
        iterate by this many plain GD steps of size ``eta``: the output of Algorithm 2 stopped at
        that checkpoint (its final GD phase). ``loss`` and ``grad_norm`` stay those of the iterate.
      flat_resolution: with ``eps``, the spacing in steps of the flat tests that locate
        ``first_flat_step`` (default ``record_every``: the checkpoints only). A smaller value
        re-simulates, per seed, the main-phase checkpoint interval that ends at the first flat
        checkpoint (exactly the same iterates: step ``t`` uses ``fold_in(PRNGKey(s), t)``) and tests
        every ``flat_resolution`` steps in it; ``metrics`` keeps the checkpoints only.

    Raises:
      DivergenceError: an iterate became non-finite; names the first step, the seed and ``params``.
      ValueError: a bad parameter, or ``params["steps"]`` differs from ``steps``.

    Warns:
      AlreadyFlatWarning: with ``eps``, a seed's start already passes the flat test (the message names
        the seeds, eps, d and the test's values).
    """
    require_x64("flatmin.run")
    if eps is not None and not measure:
        raise ValueError("eps needs measure=True (the flat test uses Phi)")
    if eps is not None:
        _check_tolerances(eps, None, flat_criterion)  # before the (long) run, not after it
    if not (isinstance(measure_after_gd, (int, np.integer)) and measure_after_gd >= 0):
        raise ValueError(f"measure_after_gd must be an integer >= 0, got {measure_after_gd!r}")
    if flat_resolution is not None and not (isinstance(flat_resolution, (int, np.integer)) and flat_resolution >= 1):
        raise ValueError(f"flat_resolution must be an integer >= 1, got {flat_resolution!r}")
    trajectory = simulate(problem, algorithm, x0, params, steps, seeds, record_every)
    metrics = measurement.measure(trajectory, flatness=measure, after_gd=measure_after_gd, eps=eps,
                                  criterion=flat_criterion)
    first_flat = None
    if eps is not None:
        message = already_flat_message(problem, metrics, eps, flat_criterion)
        if message:
            warnings.warn(message, AlreadyFlatWarning, stacklevel=2)
        first_flat, perturbed = measurement.first_flat(trajectory, metrics, eps, criterion=flat_criterion,
                                                       resolution=flat_resolution, after_gd=measure_after_gd)
        queries = measurement.queries_to(trajectory, first_flat, perturbed, measure_after_gd)
    iterates = trajectory.iterates
    return RunResult(metrics, iterates[:, -1], iterates, first_flat, queries if eps is not None else None)
