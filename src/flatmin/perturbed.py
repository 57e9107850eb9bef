"""RS, SA and SAM for any JAX model: perturbed gradients of a loss over a pytree of parameters.

:func:`value_and_perturbed_grad` is a drop-in for ``jax.value_and_grad(loss_fn)(params, batch)`` in a
training loop; its gradient feeds any optax optimizer. With ``g = grad f_B(x)`` the gradient of the
batch loss ``f_B = loss_fn(., batch)``::

    "sgd":        g
    "rs":         g + Proj_perp(g) [grad f_B(x + rho z)],            z ~ U(unit sphere of the whole tree)
    "rs_noproj":  g + grad f_B(x + rho z)
    "sa":         g + Proj_perp(g) [grad f_B(x + rho s g/||g||)],    s ~ U{-1, +1}
    "sam":        grad f_B(x + rho g/||g||)

``Proj_perp(u)[w] = w - <u, w> u / ||u||^2`` (``w`` itself when ``u = 0``). Inner products, norms and
the sphere are those of the whole parameter vector (every leaf together), as in the paper, where the
parameters are one vector of R^d. With batch size 1, ``"sa"`` is the perturbation of Algorithm 2 (the
paper's analysed algorithm); larger batches are the variant of its experiments.

The building blocks (:func:`project_out`, :func:`rs_point`, :func:`sharpness_aware_point`, :func:`sam_point`) are
shared with :func:`flatmin.algorithms.make_step`, which runs the same code on a flat vector.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from flatmin._model_inputs import check_finite, floating_part, scalar_loss

METHODS = ("sgd", "rs", "rs_noproj", "sa", "sam")

#: Remark 2: when the (batch) gradient vanishes exactly, SA takes the direction of the gradient at a
#: point this far away in a uniformly random direction.
FALLBACK_RADIUS = 1e-9


def tree_dot(a, b) -> jax.Array:
    """``<a, b>`` over every leaf of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_norm(a) -> jax.Array:
    """Euclidean norm of all the leaves of ``a`` taken together as one vector."""
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(a)))


def _axpy(alpha, x, y):
    """``alpha * x + y`` leaf by leaf, in the dtype of ``y``."""
    return jax.tree.map(lambda u, v: (alpha * u + v).astype(v.dtype), x, y)


def unit_sphere(key: jax.Array, like):
    """A point uniform on the unit sphere of the whole parameter space of ``like`` (a pytree of
    floating arrays): one Gaussian vector over all leaves, normalized once (not one sphere per leaf)."""
    flat, unravel = ravel_pytree(like)
    z = jax.random.normal(key, flat.shape, dtype=flat.dtype)
    return unravel(z / jnp.linalg.norm(z))


def project_out(u, w):
    """``Proj_perp(u)[w] = w - <u, w> u / ||u||^2`` over whole pytrees; ``w`` itself when ``u = 0``."""
    uu = tree_dot(u, u)
    safe = jnp.where(uu > 0, uu, 1.0)
    coefficient = tree_dot(u, w) / safe
    return jax.tree.map(lambda a, b: jnp.where(uu > 0, b - coefficient * a, b), u, w)


def sharpness_aware_point(grad_fn: Callable, params, g, rho, key_sign: jax.Array, key_fallback: jax.Array,
                          fallback_radius: float | None = FALLBACK_RADIUS):
    """``x + rho s g/||g||`` with ``s`` a uniform sign drawn from ``key_sign``: the point where SA
    evaluates the gradient.

    When ``g = 0`` exactly the direction is that of ``grad_fn(x + xi)``, ``xi`` uniform on the sphere of
    radius ``fallback_radius`` (Remark 2; drawn from ``key_fallback``). That gradient is evaluated only
    when needed, except under ``vmap``, which evaluates both branches; ``fallback_radius=None`` drops
    it: a vanishing ``g`` then gives the point ``x`` itself.
    """
    norm = tree_norm(g)
    if fallback_radius is None:
        safe = jnp.where(norm > 0, norm, 1.0)
        unit = jax.tree.map(lambda a: jnp.where(norm > 0, a / safe, 0.0), g)
    else:
        def nearby_gradient():
            xi = jax.tree.map(lambda z: fallback_radius * z, unit_sphere(key_fallback, params))
            return grad_fn(_axpy(1.0, xi, params))

        # cond, not where: outside vmap the fallback gradient is computed only when g = 0
        direction = jax.lax.cond(norm > 0, lambda: g, nearby_gradient)
        direction_norm = tree_norm(direction)  # > 0 almost surely
        unit = jax.tree.map(lambda a: a / direction_norm, direction)
    dtype = jax.tree.leaves(params)[0].dtype
    sign = jax.random.rademacher(key_sign, (), dtype=dtype)
    return _axpy(rho * sign, unit, params)


def rs_point(params, rho, key: jax.Array):
    """``x + rho z``, ``z`` uniform on the unit sphere of the whole tree (drawn from ``key``): where RS
    evaluates the gradient."""
    return _axpy(rho, unit_sphere(key, params), params)


def sam_point(params, g, rho):
    """``x + rho g/||g||``, and ``x`` when ``g = 0``: where SAM evaluates the gradient."""
    norm = tree_norm(g)
    unit = jax.tree.map(lambda a: jnp.where(norm > 0, a / jnp.where(norm > 0, norm, 1.0), 0.0), g)
    return _axpy(rho, unit, params)


def _check_rho(method: str, rho) -> None:
    if method == "sgd" and rho is None:
        return
    if rho is None:
        raise ValueError(f"method {method!r} needs rho (a finite number >= 0), got None")
    if isinstance(rho, jax.core.Tracer):
        return  # traced (e.g. swept under vmap): checked by the caller's own concrete values
    if isinstance(rho, (bool, np.bool_)) or not isinstance(rho, (numbers.Real, np.number, jax.Array, np.ndarray)) \
            or np.ndim(rho) != 0 or not (math.isfinite(float(rho)) and float(rho) >= 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")


def value_and_perturbed_grad(loss_fn: Callable, method: str, rho=None, *,
                             fallback_radius: float | None = FALLBACK_RADIUS):
    """The perturbed gradient of RS, SA, SAM (or plain SGD) as a drop-in for ``jax.value_and_grad``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> ()``, the mean loss over the batch; ``params`` any pytree
        (a dict of arrays, an Equinox module, Flax parameters). Leaves that are not floating arrays
        (activation functions, integer buffers) are held fixed, as in ``equinox.filter_grad``.
      method: one of :data:`METHODS` (formulas in the module docstring).
      rho: perturbation radius, a finite number >= 0 (may be a traced value); unused by ``"sgd"``.
        ``rho = 0`` gives the base gradient ``g`` exactly for every method.
      fallback_radius: SA only, Remark 2's radius (see :func:`sharpness_aware_point`); ``None`` drops
        the fallback and its extra gradient evaluation.

    Returns:
      ``f(params, batch, key) -> (loss, grads)`` with ``loss = loss_fn(params, batch)`` and ``grads``
      of the structure of ``params`` (None at leaves that are not floating arrays). ``key`` draws ``z``
      (RS) or ``s`` (SA); SGD and SAM ignore it. Pure: the same key gives the same result; it jits and
      vmaps over keys; float32 parameters give float32 gradients. It is compiled by itself, once per
      ``loss_fn``, method and shape of the arguments (every ``rho`` shares the program), so it can also
      be called outside ``jit`` in a loop: pass the same ``loss_fn`` object each time.

    Raises:
      ValueError: called with concrete parameters that hold a NaN or an infinity (the message names the
        leaves; the check is skipped under ``jit``), or parameters with no floating-point leaf.
      TypeError: ``loss_fn`` does not return a scalar.

    Example::

        step = flatmin.value_and_perturbed_grad(loss_fn, "sa", rho=0.05)
        loss, grads = step(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    _check_rho(method, rho)
    if fallback_radius is not None and (isinstance(fallback_radius, bool) or not fallback_radius > 0):
        raise ValueError(f"fallback_radius must be a number > 0 or None, got {fallback_radius!r}")

    # One compiled program per loss, method and shape, shared by every function this returns (rho is an
    # argument, not a constant): called outside jit, a step neither traces anew nor keeps a new program.
    rho = None if method == "sgd" else jnp.asarray(rho)

    def value_and_grad(params, batch, key):
        floating_part(params)
        check_finite(params)
        return _value_and_perturbed_grad(loss_fn, method, fallback_radius, params, batch, key, rho)

    return value_and_grad


@eqx.filter_jit
def _value_and_perturbed_grad(loss_fn, method, fallback_radius, params, batch, key, rho):
    diff, static = floating_part(params)

    def loss_of(p):
        return scalar_loss(loss_fn(eqx.combine(p, static), batch))

    grad_fn = jax.grad(loss_of)
    loss, g = jax.value_and_grad(loss_of)(diff)
    if method == "sgd":
        return loss, g
    if method == "sam":
        return loss, grad_fn(sam_point(diff, g, rho))
    if method == "sa":
        key_sign, key_fallback = jax.random.split(key)
        w = grad_fn(sharpness_aware_point(grad_fn, diff, g, rho, key_sign, key_fallback, fallback_radius))
    else:
        w = grad_fn(rs_point(diff, rho, key))
    v = w if method == "rs_noproj" else project_out(g, w)
    return loss, jax.tree.map(jnp.add, g, v)
