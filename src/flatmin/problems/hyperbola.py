"""Hyperbola / scalar deep linear net: ``f(u) = (prod_i u_i - 1)^2``, ``u in R^L`` (docs/paper_notes.md §1, §7).

``L = 2`` is the paper's Example 1, ``f(x, y) = (xy - 1)^2``. On ``X* = {prod u = 1}`` the Hessian is
``2 g g^T`` with ``g_i = 1/u_i``, so ``tr Hess = 2 sum_i 1/u_i^2`` and ``trbar = (2/L) sum_i 1/u_i^2``,
smallest (= 2) exactly where every ``|u_i| = 1``: the all-ones point and its sign flips with an even
number of minus signs (one per connected component of ``X*``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, jittered

# Newton's rate is linear (>= 1 - 1/L) far from the root, quadratic near it; 8 steps reach 1e-14 for
# L <= 30 and |u_i| in [e^-6, e^6] in tests, so 30 is ample.
NEWTON_STEPS = 30


def _log_gap_root(delta):
    """``tau`` with ``sum_i log(delta_i + exp(tau)) = 0`` for ``delta (L,) >= 0`` with a zero entry.

    ``G(tau) = sum log(delta_i + e^tau)`` is convex and increasing with ``1 <= G' <= L`` (the zero entry
    contributes ``tau``), and the root has ``tau <= 0`` (the geometric mean of ``delta + t`` is 1 and
    ``min = t``), so Newton from ``tau = 0`` decreases monotonically to the root without overshoot.
    """

    def newton(_, tau):
        t = jnp.exp(tau)
        return tau - jnp.sum(jnp.log(delta + t)) / jnp.sum(t / (delta + t))

    return jax.lax.fori_loop(0, NEWTON_STEPS, newton, jnp.zeros((), delta.dtype))


def hyperbola_limit(u):
    """Closed-form gradient-flow limit ``Phi(u)`` for ``f = (prod u - 1)^2``; ``u (L,) -> (L,)``.

    The flow conserves ``u_i^2 - u_j^2``, so ``Phi(u)_i^2 = delta_i + t`` with ``delta_i = u_i^2 - min_j
    u_j^2`` and ``t > 0`` the root of ``prod_i (delta_i + t) = 1`` (solved in ``log t`` for accuracy
    when ``t`` is tiny). Signs are kept when ``prod u > 0``. When ``prod u < 0`` every ``|u_i|`` shrinks
    until the smallest one crosses zero, so that coordinate's sign flips; with exactly one ``u_i = 0``
    it leaves zero with the sign of the product of the others (both cases: flip the smallest
    coordinate, counting ``sign(0) = +1``). With two or more zeros ``u`` is a stationary point
    (``grad f = 0``, ``f = 1``) and ``Phi(u) = u``; when ``prod u < 0`` and the smallest ``|u_i|`` is
    shared by two or more coordinates, they reach zero together and the flow ends at that saddle
    (``Phi(u)_i = sign(u_i) sqrt(delta_i)``). Saddles are returned as they are; :func:`flatmin.limit_map`
    refuses them (``f = 1``). jit-, vmap- and grad-compatible.
    """
    a = jnp.abs(u)
    # (|u_i| - min)(|u_i| + min) rather than u_i^2 - min^2: >= 0 and exactly 0 at the argmin even when
    # XLA fuses the latter into an FMA (a negative delta_i would make log(delta_i + t) NaN for tiny t).
    delta = (a - jnp.min(a)) * (a + jnp.min(a))
    tau = _log_gap_root(jax.lax.stop_gradient(delta))
    # One differentiable Newton step from the converged root carries the implicit-function derivative.
    t = jnp.exp(tau)
    t = jnp.exp(tau - jnp.sum(jnp.log(delta + t)) / jnp.sum(t / (delta + t)))
    signs = jnp.where(u >= 0, 1.0, -1.0)
    flip = jnp.prod(signs) < 0
    to_saddle = flip & (jnp.sum(a == jnp.min(a)) >= 2)
    signs = signs.at[jnp.argmin(a)].multiply(jnp.where(flip, -1.0, 1.0))
    limit = signs * jnp.sqrt(delta + t)
    # sqrt only where taken: its infinite slope at delta_i = 0 would give NaN gradients through where.
    saddle = jnp.where(u >= 0, 1.0, -1.0) * jnp.sqrt(jnp.where(to_saddle, delta, 1.0))
    return jnp.where(jnp.sum(u == 0) >= 2, u, jnp.where(to_saddle, saddle, limit))


def distance_to_flattest_hyperbola(u):
    """Distance from ``u (L,)`` to the flattest minima ``{s in {-1, 1}^L : prod s = 1}``: round each
    coordinate to its sign (``sign(0) = +1``); if the product is then -1, flip the coordinate that
    costs least, the smallest ``|u_i|`` (flipping it adds ``4 |u_i|`` to the squared distance)."""
    a = jnp.abs(u)
    squared = jnp.sum((a - 1.0) ** 2)
    odd = jnp.prod(jnp.where(u >= 0, 1.0, -1.0)) < 0
    return jnp.sqrt(squared + jnp.where(odd, 4.0 * jnp.min(a), 0.0))


@register_problem("hyperbola")
def hyperbola(depth: int = 2, sharpness: float = 2.0, noise: float = 1e-3) -> Problem:
    """``f(u) = (prod u - 1)^2`` on ``R^depth``, a training loss with ``n = 1`` sample.

    Args:
      depth: ``L >= 2``.
      sharpness: ``a > 0``; the sharp minimum is ``u_a = (a, 1/a, 1, ..., 1)`` with
        ``trbar = (2/L)(a^2 + 1/a^2 + L - 2)`` (``a = 1`` is flattest).
      noise: ``>= 0``; ``initial_point(key) = u_a + noise * N(0, I)/sqrt(L)`` (near, not on, ``X*``
        unless ``noise = 0``).

    ``hessian_rank = 1``; ``flattest_trace = 2``; ``flattest_points`` = the all-ones point, and
    ``flattest_distance`` the distance to all ``2^(L-1)`` flattest minima (sign flips in pairs);
    ``smoothness = 2 (a^2 + 1/a^2 + L - 2)``, the Hessian norm at ``u_a``; ``limit_map`` is exact.
    """
    fam = "hyperbola"
    depth = check_int(fam, "depth", depth, 2)
    a = check_float(fam, "sharpness", sharpness, 0.0, open_low=True)
    noise = check_float(fam, "noise", noise, 0.0)

    def loss(u):
        return (jnp.prod(u) - 1.0) ** 2

    u_sharp = jnp.ones(depth).at[0].set(a).at[1].set(1.0 / a)
    return Problem(
        name=fam,
        dim=depth,
        loss=loss,
        sample_losses=lambda u: loss(u)[None],
        num_samples=1,
        limit_map=hyperbola_limit,
        hessian_rank=1,
        flattest_trace=2.0,
        flattest_points=jnp.ones((1, depth)),
        flattest_distance=distance_to_flattest_hyperbola,
        predictions=lambda u: jnp.prod(u)[None],
        targets=jnp.ones(1),
        square_loss_scale=1.0,
        initial_point=jittered(u_sharp, noise),
        smoothness=2.0 * (a**2 + a**-2 + depth - 2),
        params=dict(depth=depth, sharpness=a, noise=noise),
    )
