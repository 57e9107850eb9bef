"""The paper's flatness on a trained model (Setting 1, Definition 3): the gradient of the normalized
Hessian trace along the manifold of interpolating parameters.

Setting 1 (docs/paper_notes.md §3): ``f(x) = (1/n) sum_i l(p_i(x), y_i)`` with ``l`` minimized at ``p = y``; the minima
are ``X* = {x : p(x) = y}``. At an interpolating ``x`` the tangent space of ``X*`` is the null space of the
Jacobian ``J = dp/dx`` of all the predictions (every output of every example), and
``dPhi(x) grad trbar(x)`` is the projection of ``grad trbar(x)`` on that null space, with
``trbar = tr(Hess f) / d``. :func:`model_flatness` computes its norm, beside the trace and the top
eigenvalue of the Hessian (:mod:`flatmin.curvature`).

The projection: ``P grad trbar = g - J^T a`` with ``a`` the least-squares solution of ``J^T a = g``,
solved through the Gram matrix (``J J^T``, or ``J^T J`` when there are more outputs than parameters),
damped for rank deficiency (Tikhonov):
``a = (J J^T + mu I)^{-1} J g`` with ``mu = rel_tol * ||J||_2^2``. The Hessian's normal eigenvalues are
about ``sigma^2 / n`` for the singular values ``sigma`` of ``J``, so ``rel_tol`` plays the role of
:data:`flatmin.flatness.RANK_REL_TOL`: a direction with ``sigma^2 <= rel_tol ||J||^2`` counts as
(mostly) tangent; the component along a singular direction is kept with weight ``mu / (sigma^2 + mu)``.
Cost: the dense ``J`` (``m x d`` for ``m`` outputs) and one Cholesky factorization of ``min(m, d)``
squared.

The gradient of the trace is exact for small models (by default ``d <= EXACT_GRADIENT_MAX_DIM``: the
sum over the ``d`` coordinate directions ``e_j`` of ``grad (e_j^T H e_j)``) and otherwise estimated
without bias by ``gradient_probes`` Rademacher probes, ``grad tr H = E_z grad (z^T H z)``, with its
error stated.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from flatmin._model_inputs import check_finite, floating_part
from flatmin._validation import check_positive
from flatmin._products import (
    flat_function,
    jvp_columns_program,
    map_product,
    separate_products,
    trace_gradient_program,
    vjp_rows_program,
)
from flatmin.curvature import (
    PROBE_BATCH_SIZE,
    _check_count,
    _hessian_top_eigenvalue,
    top_eigenpair,
    trace_estimate,
)

#: Largest number of parameters for which the trace gradient is computed exactly by default.
EXACT_GRADIENT_MAX_DIM = 2000
#: Default damping of the projection, relative to ``||J||_2^2`` (see the module docstring).
PROJECTION_REL_TOL = 1e-6


class ModelFlatness(typing.NamedTuple):
    """Output of :func:`model_flatness` (scalars).

    Attributes:
      loss: ``f(x)``; the tangent space is that of the minima only where ``x`` interpolates
        (``loss`` near its minimum, 0 for the square loss).
      trace, trace_se: Hutchinson estimate of ``tr Hess f(x)`` and its standard error.
      normalized_trace: ``trace / d``, the paper's ``trbar``.
      top_eigenvalue, top_eigenvalue_residual: Lanczos (:func:`flatmin.hessian_top_eigenvalue`).
      tangent_grad_norm: ``||dPhi grad trbar||`` at ``x``, Definition 3's second quantity.
      tangent_grad_norm_se: root-mean-square error of the estimated projected gradient (0 when the
        gradient is exact); ``tangent_grad_norm`` is off from the exact norm by at most the error of
        the vector, whose root mean square this is.
      dim: ``d``; outputs: ``m``.
    """

    loss: jax.Array
    trace: jax.Array
    trace_se: jax.Array
    normalized_trace: jax.Array
    top_eigenvalue: jax.Array
    top_eigenvalue_residual: jax.Array
    tangent_grad_norm: jax.Array
    tangent_grad_norm_se: jax.Array
    dim: int
    outputs: int


def jacobian(predict_fn: Callable, params, batch, separate: bool, chunk: int = 64) -> jax.Array:
    """Dense Jacobian ``(m, d)`` of the raveled ``predict_fn(params, batch)`` in the floating leaves of
    ``params``: ``chunk`` reverse-mode rows at a time when ``m <= d``, else ``chunk`` forward-mode columns
    (bounded memory), each block a program of its own when ``separate`` (:mod:`flatmin._products`)."""
    x = ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0]
    outputs = _raveled(predict_fn, params, batch).size  # evaluated: eval_shape would trace on every call
    by_rows = outputs <= x.size
    size = outputs if by_rows else x.size
    program = vjp_rows_program if by_rows else jvp_columns_program
    # one-hot blocks made one at a time (never the m x m identity); rows past the end are zero and cut off
    if separate:
        blocks = [np.eye(chunk, size, k=start, dtype=x.dtype) for start in range(0, size, chunk)]
        result = jnp.concatenate(map_product(program, predict_fn, params, batch, blocks, True))[:size]
    else:
        result = _blocks_in_place(program, predict_fn, params, batch, size, chunk)
    return result if by_rows else result.T


@eqx.filter_jit
def _raveled(predict_fn, params, batch):
    return jnp.ravel(predict_fn(params, batch))


@eqx.filter_jit
def _blocks_in_place(program, predict_fn, params, batch, size, chunk):
    x = ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0]
    blocks = jax.lax.map(lambda i: program(predict_fn, params, batch,
                                           jax.nn.one_hot(i * chunk + jnp.arange(chunk), size, dtype=x.dtype)),
                         jnp.arange(-(-size // chunk)))
    return blocks.reshape(-1, blocks.shape[-1])[:size]


def tangent_projection(jacobian: jax.Array, vectors: jax.Array, key: jax.Array,
                       rel_tol: float = PROJECTION_REL_TOL) -> jax.Array:
    """Project the rows of ``vectors`` ``(k, d)`` on the null space of ``jacobian`` ``(m, d)`` by the
    damped least-squares solve of the module docstring (``||J||_2^2`` by Lanczos on the Gram matrix
    from a start drawn from ``key``). The Gram matrix is ``J J^T`` when ``m <= d``, else ``J^T J``:
    ``J^T (J J^T + mu)^-1 J = (J^T J + mu)^-1 J^T J``."""
    wide = jacobian.shape[0] <= jacobian.shape[1]
    gram = jacobian @ jacobian.T if wide else jacobian.T @ jacobian
    start = jax.random.normal(key, (gram.shape[0],), dtype=gram.dtype)
    largest, _ = top_eigenpair(lambda v: gram @ v, start, 20)
    factor = jax.scipy.linalg.cho_factor(gram + rel_tol * largest * jnp.eye(gram.shape[0], dtype=gram.dtype))
    if wide:
        normal = jacobian.T @ jax.scipy.linalg.cho_solve(factor, jacobian @ vectors.T)
    else:
        normal = jax.scipy.linalg.cho_solve(factor, gram @ vectors.T)
    return vectors - normal.T


def model_flatness(loss_fn: Callable, predict_fn: Callable, params, batch, key: jax.Array, *,
                   trace_probes: int = 100, gradient_probes: int | None = None, num_matvecs: int = 30,
                   rel_tol: float = PROJECTION_REL_TOL,
                   probe_batch_size: int = PROBE_BATCH_SIZE) -> ModelFlatness:
    """Definition 3's flatness of a trained model at ``params``, with its Hessian trace and sharpness.

    Args:
      loss_fn: ``loss_fn(params, batch) -> ()``, the mean loss over the batch (the training loss when
        ``batch`` is the whole training set).
      predict_fn: ``predict_fn(params, batch) -> array``, the predictions ``p_i`` whose equality with
        the targets defines the minima (e.g. the logits for the square loss on one-hot targets); all
        its entries count as outputs.
      params: any pytree (floating leaves are the parameters, others are held fixed).
      key: draws the trace probes, the Lanczos starts and the gradient probes.
      trace_probes: Hutchinson probes of the trace (>= 2).
      gradient_probes: ``None``: the trace gradient exactly when ``d <= EXACT_GRADIENT_MAX_DIM``, else
        by 100 probes; an integer >= 2: that many Rademacher probes; ``0``: exactly at any ``d``
        (``d`` third-order products).
      num_matvecs: Lanczos depth of the top eigenvalue.
      rel_tol: the projection's damping relative to ``||J||_2^2`` (> 0; module docstring).
      probe_batch_size: probes evaluated together (memory; see :func:`flatmin.hessian_trace`).

    Returns:
      :class:`ModelFlatness`. Memory: the dense Jacobian ``m x d`` and a Gram matrix of side
      ``min(m, d)`` (about 0.6 GB at d = 10k, m = 5k).
    """
    trace_probes = _check_count("trace_probes", trace_probes, 2)
    if gradient_probes is not None and gradient_probes != 0:
        gradient_probes = _check_count("gradient_probes (0, None or >= 2)", gradient_probes, 2)
    num_matvecs = _check_count("num_matvecs", num_matvecs, 1)
    probe_batch_size = _check_count("probe_batch_size", probe_batch_size, 1)
    check_positive("rel_tol", rel_tol)
    floating_part(params)
    check_finite(params)
    separate = separate_products([loss_fn, predict_fn], params, batch, key)
    key_trace, key_lanczos, key_gradient, key_projection = jax.random.split(key, 4)
    trace, trace_se = trace_estimate(loss_fn, params, batch, key_trace, trace_probes, probe_batch_size, separate)
    top = _hessian_top_eigenvalue(loss_fn, params, batch, key_lanczos, num_matvecs, separate)
    d = _dimension(params)
    exact = gradient_probes == 0 or (gradient_probes is None and d <= EXACT_GRADIENT_MAX_DIM)
    # the trace gradient: exactly, tr H = sum_j e_j^T H e_j (projected once), or by Rademacher probes
    probes = _gradient_probes(params, key_gradient, None if exact else gradient_probes or 100)
    samples = map_product(trace_gradient_program, loss_fn, params, batch, probes, separate, probe_batch_size)
    jac = jacobian(predict_fn, params, batch, separate)
    result, jacobian_norm = _summary(loss_fn, params, batch, trace, trace_se, top, samples, exact, jac,
                                     key_projection, jnp.asarray(rel_tol))
    if not isinstance(jacobian_norm, jax.core.Tracer) and not jacobian_norm > 0:
        raise ValueError("predict_fn(params, batch) does not depend on params (its Jacobian is zero), so the "
                         "minima it defines have no tangent space to project on: return the model's "
                         "predictions computed from params")
    return result


def _dimension(params) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(eqx.filter(params, eqx.is_inexact_array)))


@eqx.filter_jit
def _gradient_probes(params, key, count):
    """The probes of the trace gradient: the ``d`` coordinate vectors (``count`` None), else ``count``
    Rademacher vectors."""
    x = ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0]
    if count is None:
        return jnp.eye(x.size, dtype=x.dtype)
    return jax.random.rademacher(key, (count, x.size), dtype=x.dtype)


@eqx.filter_jit
def _summary(loss_fn, params, batch, trace, trace_se, top, samples, exact, jac, key, rel_tol):
    """The projection of the trace gradient and the :class:`ModelFlatness` of the measured parts, with the
    Jacobian's norm (zero: the predictions ignore the parameters)."""
    f, x = flat_function(loss_fn, params, batch, scalar=True)
    d = x.size
    samples = samples.sum(0)[None] / d if exact else samples / d
    projected = tangent_projection(jac, samples, key, rel_tol)
    mean = projected.mean(axis=0)
    k = projected.shape[0]
    error = jnp.zeros((), x.dtype) if exact else jnp.sqrt(jnp.sum((projected - mean) ** 2) / ((k - 1) * k))
    result = ModelFlatness(
        loss=f(x), trace=trace, trace_se=trace_se, normalized_trace=trace / d, top_eigenvalue=top.value,
        top_eigenvalue_residual=top.residual, tangent_grad_norm=jnp.linalg.norm(mean),
        tangent_grad_norm_se=error, dim=int(d), outputs=int(jac.shape[0]),
    )
    return result, jnp.linalg.norm(jac)
