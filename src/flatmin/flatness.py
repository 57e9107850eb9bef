"""Measuring flatness: the limit map Phi, the normalized trace and its tangential gradient.

Notation (docs/paper_notes.md §1): ``trbar(x) = tr(Hess f(x)) / d``; ``Phi(x)`` is the end point of the gradient
flow from ``x``; at a minimum ``x*`` the Jacobian ``dPhi(x*)`` is the orthogonal projector onto the
null space of ``Hess f(x*)``, the tangent space of the minima. A point ``x`` is (eps, eps')-flat when
``||x - Phi(x)|| <= eps`` (or, selectable, ``f(x) - f(Phi(x)) <= eps``) and
``||dPhi(Phi(x)) grad trbar(Phi(x))|| <= eps'``.

Every function taking ``x`` accepts one point of shape ``(d,)``; :func:`flatness` and :func:`is_flat`
also take a batch ``(..., d)`` and return arrays of the batch shape.

Everything here computes in float64 (third derivatives, a gradient flow run to ``||grad f|| <= 1e-7``):
each function taking a problem raises :class:`flatmin._precision.Float64RequiredError`, naming the line
``jax.config.update("jax_enable_x64", True)``, when JAX's 64-bit mode is off.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from flatmin.curvature import hessian_trace
from flatmin.problem import Array, Problem
from flatmin._precision import require_x64
from flatmin._validation import check_positive

#: Default tolerances of the numerical gradient flow. The flow (Tsit5, PID control by ``rtol`` and
#: ``atol``) stops once ``||grad f|| <= gtol``; on stiff problems the adaptive solver cannot push the
#: gradient much below ``lambda_max * rtol * ||x||``, so ``gtol`` sits above that. Then
#: ``polish_steps`` Newton steps ``x <- x - pinv(H) grad f`` (eigenvalues below ``RANK_REL_TOL``
#: times the largest dropped) land on the minima: they move along the normal space only, so they
#: change the end point by ``O(||grad f||^2)``, and under PL with constant ``mu`` the whole error is
#: far below ``gtol / mu``.
FLOW_TOLERANCES = {"gtol": 1e-7, "rtol": 1e-10, "atol": 1e-12, "max_steps": 200_000, "polish_steps": 3,
                   "loss_tol": 1e-8}

#: Spectral-gap rule for the Hessian rank when the problem gives none: eigenvalues at most
#: ``RANK_REL_TOL * max eigenvalue`` count as zero (tangent directions).
RANK_REL_TOL = 1e-6

CRITERIA = ("distance", "loss_gap")


def _check_point(problem: Problem, x) -> Array:
    x = jnp.asarray(x, dtype=jnp.float64)
    if x.ndim < 1 or x.shape[-1] != problem.dim:
        raise ValueError(
            f"point of shape {x.shape} does not fit problem {problem.name!r} of dim {problem.dim}: "
            f"expected (..., {problem.dim})"
        )
    return x


def _over_points(fn, x: Array, dim: int) -> Array:
    """``fn`` (one point ``(d,)`` -> array of shape ``S``) applied to every point of ``x``
    ``(..., d)``; shape ``(...) + S``."""
    if x.ndim == 1:
        return fn(x)
    out = jax.vmap(fn)(x.reshape(-1, dim))
    return out.reshape(x.shape[:-1] + out.shape[1:])


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def hessian(problem: Problem, x: Array) -> Array:
    """``Hess f(x)``, shape ``(..., d, d)`` for ``x`` of shape ``(..., d)``, by forward-over-reverse
    autodiff."""
    require_x64("flatmin.flatness.hessian")
    return _over_points(jax.hessian(problem.loss), _check_point(problem, x), problem.dim)


def _normalized_trace(loss, dim: int, x: Array) -> Array:
    return jnp.trace(jax.hessian(loss)(x)) / dim


def normalized_trace(problem: Problem, x: Array) -> Array:
    """Exact ``trbar(x) = tr(Hess f(x)) / d`` from the full autodiff Hessian: shape ``()`` for one
    point ``x`` ``(d,)``, ``(...)`` for a batch ``(..., d)``.

    Costs d Hessian-vector products per point; for large d use :func:`hutchinson_trace`.
    """
    require_x64("flatmin.normalized_trace")
    trace = functools.partial(_normalized_trace, problem.loss, problem.dim)
    return _over_points(trace, _check_point(problem, x), problem.dim)


def hutchinson_trace(
    problem: Problem, x: Array, key: Array, num_probes: int = 100
) -> tuple[Array, Array]:
    """Hutchinson estimate of ``trbar(x)`` with Rademacher probes.

    Args:
      x: point, shape ``(d,)``.
      key: PRNG key.
      num_probes: number of probes ``z``; the estimate is the mean of ``z^T H z / d``.

    Returns:
      ``(mean, standard_error)``, both shape ``()``; the standard error is the sample standard
      deviation over probes divided by ``sqrt(num_probes)`` (needs ``num_probes >= 2``). This is
      :func:`flatmin.hessian_trace` of ``problem.loss`` divided by ``d``.
    """
    require_x64("flatmin.hutchinson_trace")
    x = _check_point(problem, x)
    if x.ndim != 1:
        raise ValueError(f"hutchinson_trace takes one point of shape ({problem.dim},), got {x.shape}")
    mean, standard_error = hessian_trace(_batchless_loss(problem), x, None, key, num_probes)
    return mean / problem.dim, standard_error / problem.dim


@functools.lru_cache(maxsize=128)
def _batchless_loss(problem: Problem):
    """``(x, batch) -> f(x)``, one function per problem, so that :func:`hessian_trace` compiles once."""
    return lambda y, _: problem.loss(y)


def _newton_polish(loss, x: Array, steps: int) -> Array:
    grad, hess = jax.grad(loss), jax.hessian(loss)

    def newton(_, y):
        return y - jnp.linalg.pinv(hess(y), rtol=RANK_REL_TOL, hermitian=True) @ grad(y)

    return jax.lax.fori_loop(0, steps, newton, x)


def _flow_limit(loss, x: Array, gtol, rtol, atol, max_steps, polish_steps) -> tuple[Array, Array]:
    import diffrax  # here rather than at module level: it adds about 0.4 s to every process importing flatmin

    grad = jax.grad(loss)
    term = diffrax.ODETerm(lambda t, y, args: -grad(y))
    event = diffrax.Event(lambda t, y, args, **kwargs: jnp.linalg.norm(grad(y)) <= gtol)
    solution = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        t0=0.0,
        t1=jnp.inf,
        dt0=None,
        y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    converged = solution.result == diffrax.RESULTS.event_occurred
    return _newton_polish(loss, solution.ys[-1], polish_steps), converged


def _end_point(problem: Problem, x: Array, tol: dict) -> tuple[Array, Array]:
    """``(end point, converged)``: the closed-form limit (always converged) or the numerical flow's."""
    if problem.limit_map is not None:
        return problem.limit_map(x), jnp.array(True)
    return _flow_limit(problem.loss, x, **_flow_settings(tol))


def _limit_fn(problem: Problem, tolerances: dict):
    tol = {**FLOW_TOLERANCES, **tolerances}

    def limit(x):
        y, converged = _end_point(problem, x, tol)
        at_minimum = problem.loss(y) - problem.min_loss <= tol["loss_tol"]
        return jnp.where(converged & at_minimum, y, jnp.nan)

    return limit


@functools.lru_cache(maxsize=16)
def _jitted_end_point(problem: Problem, tolerances: tuple):
    """``x -> (end point, converged)`` before the minimum test, for the error message of limit_map."""
    return jax.jit(functools.partial(_end_point, problem, tol={**FLOW_TOLERANCES, **dict(tolerances)}))


def _flow_settings(tol: dict) -> dict:
    """The integration settings among the tolerances (``loss_tol`` only judges the end point)."""
    return {k: v for k, v in tol.items() if k != "loss_tol"}


@functools.lru_cache(maxsize=128)
def _jitted_limit_fn(problem: Problem, tolerances: tuple):
    # Cached so that repeated calls reuse one compilation instead of re-tracing the ODE solve.
    return jax.jit(_limit_fn(problem, dict(tolerances)))


def limit_map(problem: Problem, x: Array, **tolerances) -> Array:
    """``Phi(x)``: the limit of the gradient flow started at ``x``; shape ``(d,)`` for one point,
    ``(..., d)`` for a batch ``(..., d)`` (points are independent).

    Uses ``problem.limit_map`` when the problem gives a closed form; otherwise integrates
    ``dx/dt = -grad f(x)`` with diffrax's Tsit5 under a PID step-size controller until
    ``||grad f|| <= gtol``, then takes ``polish_steps`` pseudo-inverse Newton steps (defaults in
    :data:`FLOW_TOLERANCES`, overridable by keyword).

    The result must be a minimum: NaN entries are returned when the flow has not converged within
    ``max_steps`` (e.g. ``x`` is not in the basin of a minimum) or when its end point (closed form or
    numerical) is not at the minimum value, ``f(y) - problem.min_loss > loss_tol`` (a saddle, e.g.
    ``u_j = v_j = 0`` of a diagonal net, or a wrong ``min_loss``; only the value is tested, so a
    critical point at the level ``min_loss`` passes). Called outside a JAX transformation it raises
    ``ValueError`` naming which instead.
    """
    require_x64("flatmin.limit_map")
    unknown = set(tolerances) - set(FLOW_TOLERANCES)
    if unknown:
        raise TypeError(f"unknown tolerance(s) {sorted(unknown)}; allowed: {sorted(FLOW_TOLERANCES)}")
    x = _check_point(problem, x)
    key = tuple(sorted(tolerances.items()))
    limit = _over_points(_jitted_limit_fn(problem, key), x, problem.dim)
    if _is_concrete(limit) and not bool(jnp.all(jnp.isfinite(limit))):
        tol = {**FLOW_TOLERANCES, **tolerances}
        if x.ndim > 1:  # diagnose the first point that failed
            bad = ~jnp.all(jnp.isfinite(limit.reshape(-1, problem.dim)), axis=1)
            x = x.reshape(-1, problem.dim)[int(jnp.argmax(bad))]
        end, converged = _jitted_end_point(problem, key)(x)
        if not bool(converged):
            raise ValueError(
                f"gradient flow of {problem.name!r} from x={x} did not converge within max_steps "
                f"(tolerances {tol}); is x near a minimum?"
            )
        gap = float(problem.loss(end)) - problem.min_loss
        how = "the closed-form limit map" if problem.limit_map is not None else "gradient flow"
        raise ValueError(
            f"{how} of {problem.name!r} from x={x} stopped at a critical point that is not a "
            f"minimum: f - min_loss = {gap:.3g} > loss_tol = {tol['loss_tol']:g} (a saddle, or "
            f"problem.min_loss = {problem.min_loss!r} is wrong); the point: {end}"
        )
    return limit


def _projector(hess: Array, rank: int | None, rel_tol: float) -> Array:
    eigenvalues, eigenvectors = jnp.linalg.eigh(hess)
    if rank is None:
        tangent = eigenvalues <= rel_tol * jnp.max(jnp.abs(eigenvalues))
    else:
        tangent = jnp.arange(hess.shape[0]) < hess.shape[0] - rank
    return (eigenvectors * tangent) @ eigenvectors.T


def tangent_projector(
    problem: Problem, x_star: Array, rank: int | None = None, rel_tol: float = RANK_REL_TOL
) -> Array:
    """``dPhi(x*)``: orthogonal projector ``(d, d)`` on the null space of ``Hess f(x*)`` (shape
    ``(..., d, d)`` for a batch ``x_star`` of shape ``(..., d)``).

    ``x_star`` should be a minimum (e.g. ``limit_map(problem, x)``). The Hessian rank is ``rank``
    (an integer in ``[0, d]``) if given, else ``problem.hessian_rank``, else the number of eigenvalues
    above ``rel_tol * max |eigenvalue|`` (spectral-gap rule, :data:`RANK_REL_TOL`; negative
    eigenvalues, which a minimum does not have, count as tangent).
    """
    require_x64("flatmin.tangent_projector")
    rank = _rank(problem, rank)
    return _over_points(lambda y: _projector(jax.hessian(problem.loss)(y), rank, rel_tol),
                        _check_point(problem, x_star), problem.dim)


def _rank(problem: Problem, rank):
    """``rank`` if given (checked against ``[0, d]``), else ``problem.hessian_rank``."""
    if rank is None:
        return problem.hessian_rank
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank <= problem.dim:
        raise ValueError(f"rank must be an integer in [0, d={problem.dim}] or None, got {rank!r}")
    return int(rank)


def _tangent_gradient(problem: Problem, x_star: Array, rank, rel_tol) -> Array:
    grad_trace = jax.grad(functools.partial(_normalized_trace, problem.loss, problem.dim))(x_star)
    return _projector(jax.hessian(problem.loss)(x_star), rank, rel_tol) @ grad_trace


def tangent_gradient(
    problem: Problem, x_star: Array, rank: int | None = None, rel_tol: float = RANK_REL_TOL
) -> Array:
    """``dPhi(x*) grad trbar(x*)``, shape ``(d,)`` (``(..., d)`` for a batch): the gradient of the
    normalized trace along the minima (third derivatives by autodiff). Zero exactly at flat minima.
    ``rank`` and ``rel_tol`` as in :func:`tangent_projector`."""
    require_x64("flatmin.tangent_gradient")
    rank = _rank(problem, rank)
    return _over_points(lambda y: _tangent_gradient(problem, y, rank, rel_tol),
                        _check_point(problem, x_star), problem.dim)


def flatness_fn(problem: Problem, rel_tol: float = RANK_REL_TOL):
    """A jitted pure function ``x (d,) -> dict`` of the four flatness measures (see :func:`flatness`).

    Cached per problem; ``jax.vmap`` it for batches. Uses the default flow tolerances.
    """
    require_x64("flatmin.flatness.flatness_fn")  # on every call: the cache below would check only the first
    return _flatness_fn(problem, rel_tol)


@functools.lru_cache(maxsize=128)
def _flatness_fn(problem: Problem, rel_tol: float):
    limit = _limit_fn(problem, {})

    @jax.jit
    def measures(x):
        x_star = limit(x)
        values = {
            "distance": jnp.linalg.norm(x - x_star),
            "loss_gap": problem.loss(x) - problem.loss(x_star),
            "trbar_limit": _normalized_trace(problem.loss, problem.dim, x_star),
            "tangent_grad_norm": jnp.linalg.norm(
                _tangent_gradient(problem, x_star, problem.hessian_rank, rel_tol)
            ),
        }
        # NaN everywhere when the flow did not converge (derivatives need not propagate the NaN).
        converged = jnp.all(jnp.isfinite(x_star))
        return {name: jnp.where(converged, value, jnp.nan) for name, value in values.items()}

    return measures


def flatness(problem: Problem, x: Array) -> dict[str, Array]:
    """Flatness measures of ``x`` (shape ``(d,)`` or a batch ``(..., d)``).

    Returns a dict of arrays of the batch shape:
      ``distance``: ``||x - Phi(x)||``;
      ``loss_gap``: ``f(x) - f(Phi(x))``;
      ``trbar_limit``: ``trbar(Phi(x))``, the normalized trace at the limit point;
      ``tangent_grad_norm``: ``||dPhi(Phi(x)) grad trbar(Phi(x))||``.
    Entries are NaN where the gradient flow did not reach a minimum (see :func:`limit_map`).
    """
    require_x64("flatmin.flatness")
    x = _check_point(problem, x)
    measures = flatness_fn(problem)
    batch_shape = x.shape[:-1]
    flat = jax.vmap(measures)(x.reshape(-1, problem.dim))
    return {name: value.reshape(batch_shape) for name, value in flat.items()}


def flat_test(measures: dict, eps: float, eps_prime: float | None = None, criterion: str = "distance"):
    """Definition 3 applied to precomputed :func:`flatness` measures (arrays or DataFrame columns)."""
    _check_tolerances(eps, eps_prime, criterion)
    eps_prime = math.sqrt(eps) if eps_prime is None else eps_prime
    gap = measures["distance"] if criterion == "distance" else measures["loss_gap"]
    return (gap <= eps) & (measures["tangent_grad_norm"] <= eps_prime)


def _check_tolerances(eps, eps_prime, criterion) -> None:
    check_positive("eps", eps)
    if eps_prime is not None:
        check_positive("eps_prime", eps_prime, note="or None for sqrt(eps)")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown flatness criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")


def is_flat(
    problem: Problem,
    x: Array,
    eps: float,
    eps_prime: float | None = None,
    criterion: str = "distance",
) -> Array:
    """Whether ``x`` is an (eps, eps')-flat local minimum (Definition 3).

    Args:
      x: shape ``(d,)`` or ``(..., d)``.
      eps: > 0, bound on ``||x - Phi(x)||`` (criterion ``"distance"``, the default) or on
        ``f(x) - f(Phi(x))`` (criterion ``"loss_gap"``).
      eps_prime: > 0, bound on ``||dPhi grad trbar||`` at ``Phi(x)``; default ``sqrt(eps)``
        as in both theorems.

    Returns:
      Boolean array of the batch shape (``()`` for one point).
    """
    require_x64("flatmin.is_flat")
    _check_tolerances(eps, eps_prime, criterion)
    return flat_test(flatness(problem, x), eps, eps_prime, criterion)
