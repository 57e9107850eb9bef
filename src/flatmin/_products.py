"""The derivative products the curvature tools are made of, each a compiled program of its own.

XLA's CPU backend runs convolutions several times slower inside a compiled loop (``lax.map``,
``lax.scan``, matfree's Lanczos) than compiled by themselves: 5-12x for the Hessian-vector products of a
10k-parameter convolutional network, and nothing comparable for a dense one (``benchmarks/curvature.py``).
The curvature tools therefore run each product as a program of its own (compiled once per function and
shape) when three things hold: the backend is the CPU, the tool was called on concrete arrays, and the
loss or the predictions compute a convolution. Their loops then run in Python (:func:`map_product`),
except Lanczos, matfree's compiled loop, whose products go through a host callback
(:func:`separately_compiled`). Under a transformation (``jit``, ``vmap``, ``grad`` of the tool's result)
the products stay inside the traced program, differentiable.

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
def quadratic_form_program(loss_fn, params, batch, z):
    """``z^T Hess f z``, one Hutchinson sample."""
    return z @ hvp_program(loss_fn, params, batch, z)


@eqx.filter_jit
def trace_gradient_program(loss_fn, params, batch, z):
    f, x = flat_function(loss_fn, params, batch, scalar=True)
    return _quadratic_form_gradient(f, x, z)


@eqx.filter_jit
def vjp_rows_program(predict_fn, params, batch, cotangents):
    """``cotangents^T J`` for a block of cotangents ``(c, m)``: ``c`` rows of the Jacobian ``J`` at once
    (batched vector-Jacobian products beat single ones for dense and convolutional networks alike)."""
    g, x = flat_function(predict_fn, params, batch, scalar=False)
    return jax.vmap(jax.vjp(g, x)[1])(cotangents)[0]


@eqx.filter_jit
def jvp_columns_program(predict_fn, params, batch, tangents):
    """``J tangents^T`` for a block of tangents ``(c, d)``, as rows ``(c, m)``."""
    g, x = flat_function(predict_fn, params, batch, scalar=False)
    return jax.vmap(lambda t: jax.jvp(g, (x,), (t,))[1])(tangents)


_CONVOLUTIONS: dict = {}


def _has_convolution(jaxpr) -> bool:
    for equation in jaxpr.eqns:
        if equation.primitive.name == "conv_general_dilated":
            return True
        for value in equation.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _has_convolution(inner):
                    return True
    return False


def convolves(fn: Callable, params, batch) -> bool:
    """Whether ``fn(params, batch)`` computes a convolution; traced once per function, structure and shapes."""
    dynamic, static = eqx.partition((params, batch), eqx.is_array)
    static_leaves, static_structure = jax.tree.flatten(static)
    key = (fn, static_structure, tuple(static_leaves),
           tuple((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(dynamic)), jax.tree.structure(dynamic))
    if key not in _CONVOLUTIONS:
        if len(_CONVOLUTIONS) >= 1024:  # bounded like a compilation cache: new functions each call cannot grow it
            _CONVOLUTIONS.clear()
        _CONVOLUTIONS[key] = _has_convolution(jax.make_jaxpr(lambda d: fn(*eqx.combine(d, static)))(dynamic).jaxpr)
    return _CONVOLUTIONS[key]


def separate_products(fns, params, batch, key) -> bool:
    """Whether the products of a tool called on ``params, batch, key`` for the functions ``fns`` run as
    programs of their own: on the CPU backend, with no argument traced, for a function that convolves
    (module docstring)."""
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((params, batch, key)))
    return (jax.default_backend() == "cpu" and not traced
            and any(convolves(fn, params, batch) for fn in fns))


def separately_compiled(program: Callable, fn: Callable, params, batch, vector: jax.Array) -> jax.Array:
    """``program(fn, params, batch, vector)`` evaluated through a host callback, as a program of its own,
    from inside a traced loop; under ``vmap`` once per element."""
    dynamic, static = eqx.partition((params, batch), eqx.is_array)

    def host(dynamic, vector):
        own_params, own_batch = eqx.combine(dynamic, static)
        return np.asarray(program(fn, own_params, own_batch, vector))

    shape = eqx.filter_eval_shape(program, fn, params, batch, vector)
    return jax.pure_callback(host, shape, dynamic, vector, vmap_method="sequential")


def probe_map(fn: Callable, probes: jax.Array, batch_size: int) -> jax.Array:
    """``fn`` over the rows of ``probes`` inside a trace, ``batch_size`` rows at a time under ``vmap`` and
    the groups in sequence (``batch_size = 1``: a plain loop, no batching rule)."""
    if batch_size == 1:
        return jax.lax.map(fn, probes)
    return jax.lax.map(fn, probes, batch_size=min(batch_size, probes.shape[0]))


def map_product(program: Callable, fn: Callable, params, batch, vectors, separate: bool,
                batch_size: int = 1) -> jax.Array:
    """``program(fn, params, batch, v)`` for each row ``v`` of ``vectors``, stacked: when ``separate``, one
    call of the compiled program per row, from Python; else a loop inside the current trace
    (:func:`probe_map`)."""
    if separate:
        return jnp.stack([program(fn, params, batch, v) for v in vectors])
    return _mapped(program, fn, params, batch, jnp.asarray(vectors), batch_size)


@eqx.filter_jit
def _mapped(program, fn, params, batch, vectors, batch_size):
    # one program per function and shape, also when called outside a trace (a lax.map of a new closure
    # would compile again on every call)
    return probe_map(lambda v: program(fn, params, batch, v), vectors, batch_size)


def product(program: Callable, fn: Callable, params, batch, separate: bool) -> Callable:
    """``vector -> program(fn, params, batch, vector)``: through :func:`separately_compiled` when
    ``separate``, else traced in place."""
    if separate:
        return lambda vector: separately_compiled(program, fn, params, batch, vector)
    return lambda vector: program(fn, params, batch, vector)
