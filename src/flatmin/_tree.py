"""Vector operations over whole pytrees: the parameters are one vector of R^d, as in the paper, however
they are split into leaves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def tree_dot(a, b) -> jax.Array:
    """``<a, b>`` over every leaf of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_norm(a) -> jax.Array:
    """Euclidean norm of all the leaves of ``a`` taken together as one vector."""
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(a)))


def axpy(alpha, x, y):
    """``alpha * x + y`` leaf by leaf, in the dtype of ``y``."""
    return jax.tree.map(lambda u, v: (alpha * u + v).astype(v.dtype), x, y)


def tree_where(condition, a, b):
    """``a`` where the scalar ``condition`` holds, else ``b``, leaf by leaf."""
    return jax.tree.map(lambda u, v: jnp.where(condition, u, v), a, b)


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
    return jax.tree.map(lambda a, b: jnp.where(uu > 0, b - coefficient * a, b).astype(b.dtype), u, w)
