"""The derivative products the curvature tools are made of, each a compiled program of its own.

XLA's CPU backend runs a network's products several times slower inside a compiled loop (``lax.map``,
``lax.scan``, matfree's Lanczos) than the same products compiled by themselves: on a 10k-parameter
convolutional network, 12x for Hessian-vector products (``benchmarks/curvature.py``). The curvature
tools therefore run their loops with each product evaluated through a host callback, as its own program
(compiled once per loss and shape), when two things hold: the backend is the CPU, and the tool was
called on concrete arrays. Under a transformation (``jit``, ``vmap``, ``grad`` of the tool's result)
the products stay inside the traced program, differentiable as before.

Each product takes the user's ``fn`` (the loss, or the predictions), ``params`` (any pytree; its
floating leaves, flattened, are the variable), ``batch`` and a flat vector.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from flatmin._model_inputs import floating_part, scalar_loss


def flat_function(fn: Callable, params, batch, scalar: bool):
    """``(g, x)``: ``g(y) = fn(params with floating leaves y, batch)`` and ``x`` those leaves, flat;
    ``scalar`` checks that ``g`` returns a scalar (a loss), else ``g`` returns the raveled output."""
    diff, static = floating_part(params)
    x, unravel = ravel_pytree(diff)

    def g(y):
        value = fn(eqx.combine(unravel(y), static), batch)
        return scalar_loss(value) if scalar else jnp.ravel(value)

    return g, x


def hvp_fn(f: Callable, x: jax.Array) -> Callable:
    """``v -> Hess f(x) v`` by forward-over-reverse differentiation."""
    grad = jax.grad(f)
    return lambda v: jax.jvp(grad, (x,), (v,))[1]


def _quadratic_form_gradient(f: Callable, x: jax.Array, z: jax.Array) -> jax.Array:
    """``grad_x (z^T Hess f(x) z)``: third derivatives by reverse mode over the Hessian-vector product."""
    return jax.grad(lambda y: z @ hvp_fn(f, y)(z))(x)


@eqx.filter_jit
def hvp_program(loss_fn, params, batch, v):
    f, x = flat_function(loss_fn, params, batch, scalar=True)
    return hvp_fn(f, x)(v)


@eqx.filter_jit
def trace_gradient_program(loss_fn, params, batch, z):
    f, x = flat_function(loss_fn, params, batch, scalar=True)
    return _quadratic_form_gradient(f, x, z)


@eqx.filter_jit
def vjp_program(predict_fn, params, batch, cotangent):
    g, x = flat_function(predict_fn, params, batch, scalar=False)
    return jax.vjp(g, x)[1](cotangent)[0]


@eqx.filter_jit
def jvp_program(predict_fn, params, batch, tangent):
    g, x = flat_function(predict_fn, params, batch, scalar=False)
    return jax.jvp(g, (x,), (tangent,))[1]


def separate_products(*trees) -> bool:
    """Whether the products of a tool called on ``trees`` run as programs of their own: on the CPU
    backend, with no leaf traced (module docstring)."""
    return jax.default_backend() == "cpu" and not any(
        isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def separately_compiled(program: Callable, fn: Callable, params, batch, vector: jax.Array) -> jax.Array:
    """``program(fn, params, batch, vector)`` evaluated through a host callback, as a program of its own,
    from inside a traced loop; under ``vmap`` once per element."""
    dynamic, static = eqx.partition((params, batch), eqx.is_array)

    def host(dynamic, vector):
        own_params, own_batch = eqx.combine(dynamic, static)
        return np.asarray(program(fn, own_params, own_batch, vector))

    shape = eqx.filter_eval_shape(program, fn, params, batch, vector)
    return jax.pure_callback(host, shape, dynamic, vector, vmap_method="sequential")


def product(program: Callable, fn: Callable, params, batch, separate: bool) -> Callable:
    """``vector -> program(fn, params, batch, vector)``: through :func:`separately_compiled` when
    ``separate``, else traced in place."""
    if separate:
        return lambda vector: separately_compiled(program, fn, params, batch, vector)
    return lambda vector: program(fn, params, batch, vector)
