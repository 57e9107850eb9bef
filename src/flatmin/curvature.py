"""Curvature of a loss over any pytree of parameters: the Hessian trace and its top eigenvalue.

Both are matrix-free: Hessian-vector products ``H v`` by forward-over-reverse differentiation
(``jax.jvp`` of ``jax.grad``), never the ``d x d`` Hessian. The probes and the Lanczos iteration are
matfree's (``matfree.stochtrace``, ``matfree.decomp``, ``matfree.eig``). Leaves of ``params`` that are
not floating arrays are held fixed, as in ``equinox.filter_grad``. Each tool compiles once per
``loss_fn`` and shape of its arguments (pass the same ``loss_fn`` object to reuse it); called on concrete
arrays on the CPU, a loss with a convolution has each product run as a program of its own
(:mod:`flatmin._products`).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matfree import decomp, eig, stochtrace

from flatmin._model_inputs import check_finite, floating_part
from flatmin._products import hvp_program, map_product, product, quadratic_form_program, separate_products

#: Probes evaluated together (under ``vmap``) by default; the groups run one after the other, so peak
#: memory is that of this many Hessian-vector products. One: batched products of a convolution are
#: grouped convolutions, several times slower on CPU than the products one by one.
PROBE_BATCH_SIZE = 1


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def hessian_trace(loss_fn: Callable, params, batch, key: jax.Array, num_probes: int = 100, *,
                  probe_batch_size: int = PROBE_BATCH_SIZE) -> tuple[jax.Array, jax.Array]:
    """Hutchinson estimate of ``tr Hess`` of ``loss_fn(., batch)`` at ``params`` (not normalized by d).

    Args:
      loss_fn: ``loss_fn(params, batch) -> ()``.
      params: any pytree; the trace is over all its floating leaves together.
      batch: passed through to ``loss_fn``.
      key: draws the Rademacher probes (over all leaves at once).
      num_probes: >= 2, the number of probes ``z``; the estimate is the mean of ``z^T H z``.
      probe_batch_size: probes evaluated together under ``vmap`` (peak memory: that many
        Hessian-vector products); the groups run in sequence. Does not change the result beyond
        rounding. Where the products run as programs of their own (a convolutional loss on the CPU,
        :mod:`flatmin._products`) they run one by one.

    Returns:
      ``(estimate, standard_error)``, scalars; the standard error is the sample standard deviation of
      ``z^T H z`` over the probes (``ddof=1``) over ``sqrt(num_probes)``. For Rademacher probes the
      variance of one ``z^T H z`` is ``2 (||H||_F^2 - sum_i H_ii^2)``. Jit-, vmap- and grad-compatible.
    """
    num_probes = _check_count("num_probes", num_probes, 2)
    probe_batch_size = _check_count("probe_batch_size", probe_batch_size, 1)
    floating_part(params)
    check_finite(params)
    return trace_estimate(loss_fn, params, batch, key, num_probes, probe_batch_size,
                          separate_products([loss_fn], params, batch, key))


def trace_estimate(loss_fn, params, batch, key, num_probes: int, probe_batch_size: int, separate: bool):
    """:func:`hessian_trace` after its checks: its products one program each when ``separate``
    (:mod:`flatmin._products`), else one compiled program of all."""
    if separate:
        probes = _probes(params, key, num_probes)
        return _mean_and_standard_error(map_product(quadratic_form_program, loss_fn, params, batch, probes, True))
    return _hessian_trace(loss_fn, params, batch, key, num_probes, probe_batch_size)


@eqx.filter_jit
def _probes(params, key, num_probes):
    # matfree's sampler draws every probe at once from key, so the values do not depend on the grouping
    return stochtrace.sampler_signs(ravel_pytree(eqx.filter(params, eqx.is_inexact_array))[0], num=num_probes)(key)


@jax.jit
def _mean_and_standard_error(values):
    return values.mean(), values.std(ddof=1) / math.sqrt(values.shape[0])


@eqx.filter_jit
def _hessian_trace(loss_fn, params, batch, key, num_probes, probe_batch_size):
    values = map_product(quadratic_form_program, loss_fn, params, batch, _probes(params, key, num_probes), False,
                         probe_batch_size)
    return _mean_and_standard_error(values)


class TopEigenvalue(typing.NamedTuple):
    """Output of :func:`hessian_top_eigenvalue`.

    Attributes:
      value: the largest Ritz value ``lambda`` of the Lanczos iteration, never above the largest
        eigenvalue of the Hessian.
      residual: ``||H v - lambda v||`` for the unit Ritz vector ``v``: some eigenvalue of the
        (symmetric) Hessian lies within ``residual`` of ``value``; from a random start that is the
        largest one unless it is nearly orthogonal to the start.
      vector: ``v``, of the structure of the floating leaves of ``params``.
    """

    value: jax.Array
    residual: jax.Array
    vector: typing.Any


def top_eigenpair(matvec: Callable, start: jax.Array, num_matvecs: int) -> tuple[jax.Array, jax.Array]:
    """Largest Ritz pair ``(value, unit vector)`` of the symmetric ``matvec`` after ``num_matvecs``
    (capped at the dimension) Lanczos steps with full reorthogonalization from ``start``."""
    values, vectors = eig.eigh_partial(decomp.tridiag_sym(min(num_matvecs, start.size)))(matvec, start)
    return values[-1], vectors[-1] / jnp.linalg.norm(vectors[-1])


def hessian_top_eigenvalue(loss_fn: Callable, params, batch, key: jax.Array, *,
                           num_matvecs: int = 30) -> TopEigenvalue:
    """The largest eigenvalue of ``Hess loss_fn(., batch)`` at ``params`` (the sharpness SAM targets),
    by Lanczos with full reorthogonalization (matfree) from a Gaussian start drawn from ``key``.

    ``num_matvecs`` (at least 1, capped at the number of parameters ``d``, where the result is exact)
    Hessian-vector products build the Krylov space; one more checks the result (``residual``).
    Returns a :class:`TopEigenvalue`. Jit-compatible.
    """
    num_matvecs = _check_count("num_matvecs", num_matvecs, 1)
    floating_part(params)
    check_finite(params)
    return _hessian_top_eigenvalue(loss_fn, params, batch, key, num_matvecs,
                                   separate_products([loss_fn], params, batch, key))


@eqx.filter_jit
def _hessian_top_eigenvalue(loss_fn, params, batch, key, num_matvecs, separate):
    hvp = product(hvp_program, loss_fn, params, batch, separate)
    x, unravel = ravel_pytree(eqx.filter(params, eqx.is_inexact_array))
    start = jax.random.normal(key, x.shape, dtype=x.dtype)
    value, vector = top_eigenpair(hvp, start, num_matvecs)
    residual = jnp.linalg.norm(hvp(vector) - value * vector)
    return TopEigenvalue(value, residual, unravel(vector))
