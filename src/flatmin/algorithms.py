"""The algorithms: GD, RS (Algorithm 1), SA (Algorithm 2) and the baselines SGD, SAM and RS
without projection, as pure step functions; :func:`simulate`, the compiled multi-seed loop, and
:func:`run`, which simulates and then measures (:mod:`flatmin.measurement`).

Every step has the signature ``step(x (d,), key, t) -> (x_next (d,), perturbed ())``, where
``perturbed`` says whether the perturbed branch was taken (always False for GD/SGD/SAM).

RS and SA (NOTES.md §2-3)::

    if ||grad f(x)|| > eps0:  x <- x - eta * grad f(x)
    else:                     x <- x - eta_prime * (grad f(x) + Proj_perp(grad f(x)) [w])

with ``w = grad f(x + rho g)``, ``g`` uniform on the unit sphere (RS), or
``w = grad f_B(x + rho s u)``, ``u = grad f_B(x) / ||grad f_B(x)||``, ``B`` a uniform mini-batch of
``batch_size`` samples drawn without replacement, ``s`` a uniform sign (SA; ``batch_size = 1`` is the
algorithm analysed). When ``grad f_B(x) = 0`` exactly, SA takes the direction of
``grad f_B(x + xi)`` with ``xi`` uniform on the sphere of radius ``fallback_radius`` (Remark 2).
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
from flatmin.perturbed import project_out, rs_point, sam_point, sharpness_aware_point
from flatmin.problem import Array, Problem
from flatmin._validation import check_positive, seed_list

#: Parameters each algorithm requires; ``optional`` ones have the defaults below.
REQUIRED = {
    "gd": ("eta",),
    "sgd": ("eta", "batch_size"),
    "sam": ("eta", "rho", "batch_size"),
    "rs": ("eta", "eta_prime", "rho", "eps0"),
    "rs_noproj": ("eta", "eta_prime", "rho", "eps0"),
    "sa": ("eta", "eta_prime", "rho", "eps0", "batch_size"),
}
ALGORITHMS = tuple(REQUIRED)
TRAINING_LOSS_ONLY = ("sgd", "sam", "sa")
DEFAULTS = {"fallback_radius": 1e-9, "final_gd_steps": 0}
ALL_PARAMS = ("eta", "eta_prime", "rho", "eps0", "batch_size", *DEFAULTS)
#: The real-valued parameters, arguments of the compiled loops rather than constants in them.
TRACED = ("eta", "eta_prime", "rho", "eps0", "fallback_radius")


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


def check_params(problem: Problem, algorithm: str, params: dict) -> dict:
    """Validate ``params`` for ``algorithm`` on ``problem``; return them with defaults filled in.

    Raises ``ValueError`` naming the bad algorithm, key or value and the allowed ones.
    """
    if algorithm not in REQUIRED:
        raise ValueError(f"unknown algorithm {algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    if algorithm in TRAINING_LOSS_ONLY and not problem.is_training_loss:
        raise ValueError(
            f"algorithm {algorithm!r} needs a training loss (sample_losses); problem "
            f"{problem.name!r} has none. Use one of: gd, rs, rs_noproj"
        )
    unknown = set(params) - set(ALL_PARAMS) - {"steps"}
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {algorithm!r}; allowed: {ALL_PARAMS}")
    missing = [name for name in REQUIRED[algorithm] if name not in params]
    if missing:
        raise ValueError(f"algorithm {algorithm!r} needs parameter(s) {missing}; got {sorted(params)}")
    full = {**DEFAULTS, **{k: v for k, v in params.items() if k != "steps"}}
    for name in ("eta", "eta_prime", "rho", "fallback_radius"):
        if name in full:
            check_positive(name, full[name])
    if "eps0" in full:
        check_positive("eps0", full["eps0"], allow_inf=True, note="math.inf: always perturb")
    if "batch_size" in full:
        n = problem.num_samples
        if n is None:
            raise ValueError(
                f"batch_size={full['batch_size']!r} needs a training loss; problem {problem.name!r} has "
                "no samples (num_samples is None)"
            )
        if not (isinstance(full["batch_size"], (int, np.integer)) and 1 <= full["batch_size"] <= n):
            raise ValueError(f"batch_size must be an integer in [1, n={n}], got {full['batch_size']!r}")
    if not (isinstance(full["final_gd_steps"], (int, np.integer)) and full["final_gd_steps"] >= 0):
        raise ValueError(f"final_gd_steps must be an integer >= 0, got {full['final_gd_steps']!r}")
    return full


def _batch_loss(problem: Problem, batch_size: int, key: Array):
    idx = jax.random.choice(key, problem.num_samples, (batch_size,), replace=False)
    return lambda y: jnp.mean(problem.losses_of(y, idx))


def rs_direction(problem: Problem, x: Array, rho: float, key: Array, project: bool = True) -> Array:
    """RS perturbation ``v = Proj_perp(grad f(x)) [grad f(x + rho g)]``, ``g ~ U(S^{d-1})``."""
    grad = jax.grad(problem.loss)
    w = grad(rs_point(x, rho, key))
    return project_out(grad(x), w) if project else w


def sa_direction(
    problem: Problem,
    x: Array,
    rho: float,
    key: Array,
    batch_size: int = 1,
    fallback_radius: float = DEFAULTS["fallback_radius"],
) -> Array:
    """SA perturbation ``v = Proj_perp(grad f(x)) [grad f_B(x + rho s u)]`` (see module docstring)."""
    key_batch, key_sign, key_fallback = jax.random.split(key, 3)
    batch_grad = jax.grad(_batch_loss(problem, batch_size, key_batch))
    point = sharpness_aware_point(batch_grad, x, batch_grad(x), rho, key_sign, key_fallback, fallback_radius)
    return project_out(jax.grad(problem.loss)(x), batch_grad(point))


def perturbation(problem: Problem, algorithm: str, x: Array, rho: float, key: Array, **options) -> Array:
    """One perturbation vector ``v`` (shape ``(d,)``) of ``'rs'``, ``'rs_noproj'`` or ``'sa'``.

    ``options`` for SA: ``batch_size`` (default 1), ``fallback_radius``. Compiled once per problem,
    algorithm, batch size and shape of ``x``: ``rho`` and ``fallback_radius`` are arguments of the
    compiled program, so repeated calls (a Monte Carlo estimate in a Python loop) compile nothing new.
    """
    allowed = ("rs", "rs_noproj", "sa")
    if algorithm not in allowed:
        raise ValueError(f"unknown perturbation {algorithm!r}; allowed: {', '.join(allowed)}")
    check_positive("rho", rho)
    x = jnp.asarray(x, dtype=jnp.float64)
    if algorithm == "sa":
        full = check_params(problem, "sa", {"eta": 1.0, "eta_prime": 1.0, "rho": rho, "eps0": 1.0,
                                            "batch_size": options.get("batch_size", 1), **options})
        return _sa_perturbation(problem, full["batch_size"], x, rho, key, full["fallback_radius"])
    if options:
        raise TypeError(f"{algorithm!r} takes no options, got {sorted(options)}")
    return _rs_perturbation(problem, algorithm == "rs", x, rho, key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sa_perturbation(problem: Problem, batch_size: int, x, rho, key, fallback_radius):
    return sa_direction(problem, x, rho, key, batch_size, fallback_radius)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _rs_perturbation(problem: Problem, project: bool, x, rho, key):
    return rs_direction(problem, x, rho, key, project=project)


def make_step(problem: Problem, algorithm: str, params: dict):
    """The pure step ``(x (d,), key, t) -> (x_next (d,), perturbed ())`` of ``algorithm``.

    ``params`` are validated by :func:`check_params`; ``t`` is unused by the algorithms here but
    kept in the signature so schedules can depend on it.
    """
    p = check_params(problem, algorithm, params)
    step, hyper = _traced_step(problem, algorithm, p.get("batch_size")), _hyperparameters(p)
    return lambda x, key, t: step(x, key, t, hyper)


def _hyperparameters(params: dict) -> dict:
    """The values a compiled loop takes as arguments (not constants): sweeping them reuses it."""
    return {name: float(params[name]) for name in TRACED if name in params}


@functools.lru_cache(maxsize=64)
def _traced_step(problem: Problem, algorithm: str, batch_size: int | None):
    """``step(x, key, t, hyper) -> (x_next, perturbed)`` with the values of :data:`TRACED` in ``hyper``;
    one function per key, so that the compiled loops of :mod:`flatmin.loop` are cached on it."""
    grad = jax.grad(problem.loss)

    if algorithm == "gd":
        def step(x, key, t, hyper):
            return x - hyper["eta"] * grad(x), jnp.array(False)

    elif algorithm in ("sgd", "sam"):
        def step(x, key, t, hyper):
            key_batch, _ = jax.random.split(key)
            batch_grad = jax.grad(_batch_loss(problem, batch_size, key_batch))
            if algorithm == "sgd":
                return x - hyper["eta"] * batch_grad(x), jnp.array(False)
            return x - hyper["eta"] * batch_grad(sam_point(x, batch_grad(x), hyper["rho"])), jnp.array(False)

    else:
        def direction(x, key, hyper):
            if algorithm == "sa":
                return sa_direction(problem, x, hyper["rho"], key, batch_size, hyper["fallback_radius"])
            return rs_direction(problem, x, hyper["rho"], key, project=algorithm == "rs")

        def step(x, key, t, hyper):
            g = grad(x)
            perturbed = jnp.linalg.norm(g) <= hyper["eps0"]
            x_perturbed = x - hyper["eta_prime"] * (g + direction(x, key, hyper))
            return jnp.where(perturbed, x_perturbed, x - hyper["eta"] * g), perturbed

    return step


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
    """

    problem: Problem
    algorithm: str
    params: dict
    seeds: np.ndarray
    checkpoints: np.ndarray
    main_steps: int
    iterates: np.ndarray
    perturbed_fraction: np.ndarray

    def descend(self, points, steps: int) -> jax.Array:
        """``points`` ``(n, d)`` after ``steps`` plain GD steps of size ``eta`` (Algorithm 2's final
        phase from each of them)."""
        if not steps:
            return jnp.asarray(points)
        return descend(_traced_step(self.problem, "gd", None), _hyperparameters(self.params), points, steps)

    def replay(self, rows, start_index, stops, every: int) -> tuple[jax.Array, jax.Array]:
        """Seeds ``rows`` (indices into :attr:`seeds`) re-simulated from their checkpoint
        ``start_index`` to the main-phase steps ``stops``, with the same random keys (so the same
        iterates up to rounding): the iterates every ``every`` steps and at each stop, ``(len(rows),
        length, d)``, and the steps they follow, ``(len(rows), length)``."""
        rows, start_index = np.asarray(rows), np.asarray(start_index)
        step = _traced_step(self.problem, self.algorithm, self.params.get("batch_size"))
        return resimulate(step, _hyperparameters(self.params), jnp.asarray(self.iterates[rows, start_index]),
                          self.seeds[rows], self.checkpoints[start_index], np.asarray(stops), every)


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

    The loop is compiled once per (problem, algorithm, batch size, number of seeds, number of
    checkpoints, whether a final GD phase follows): step sizes, ``rho``, ``eps0``,
    ``fallback_radius``, ``steps`` and ``record_every`` are arguments of the compiled code, so a sweep
    over them reuses it (:mod:`flatmin.loop`).

    Args:
      problem: the loss.
      algorithm: one of :data:`ALGORITHMS`.
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
    step = _traced_step(problem, algorithm, p.get("batch_size"))
    iterates, perturbed, first_bad = run_loop(step, _traced_step(problem, "gd", None), _hyperparameters(p), starts,
                                              seed_values, checkpoints, steps)
    bad_seeds = np.flatnonzero(first_bad >= 0)
    if bad_seeds.size:
        s = bad_seeds[0]
        raise DivergenceError(
            f"{algorithm} on {problem.name!r} {problem.params} diverged: seed {seed_values[s]} gave a "
            f"non-finite iterate at step {int(first_bad[s])} (params {p}); "
            f"{bad_seeds.size} of {len(seed_values)} seeds diverged"
        )
    return Trajectory(problem, algorithm, p, seed_values, checkpoints, int(steps), np.asarray(iterates), perturbed)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Output of :func:`run`.

    Attributes:
      metrics: tidy DataFrame, one row per (seed, checkpoint), columns ``step, seed, phase, loss,
        grad_norm, perturbed_fraction`` and, with ``measure=True``, ``distance, loss_gap, trace,
        tangent_grad_norm`` (:func:`flatmin.flatness`) and, with ``eps``, ``flat``
        (:func:`flatmin.measurement.measure`).
      final: last iterates, shape ``(num_seeds, d)``.
      iterates: the iterates at the checkpoints, shape ``(num_seeds, num_checkpoints, d)``, in the
        row order of ``metrics`` within each seed.
      first_flat_step: with ``eps``, per seed the first step whose iterate is (eps, sqrt(eps))-flat
        (:func:`flatmin.measurement.first_flat_step`); ``-1`` if no checkpoint is flat; ``0`` where
        the start is already flat (:class:`AlreadyFlatWarning` says so); else None.
    """

    metrics: pd.DataFrame
    final: np.ndarray
    iterates: np.ndarray
    first_flat_step: np.ndarray | None = None


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
        first_flat = measurement.first_flat_step(trajectory, metrics, eps, criterion=flat_criterion,
                                                 resolution=flat_resolution, after_gd=measure_after_gd)
    iterates = trajectory.iterates
    return RunResult(metrics, iterates[:, -1], iterates, first_flat)
