"""Checks of what a user hands the model API (:mod:`flatmin.perturbed`, :mod:`flatmin.curvature`,
:mod:`flatmin.model_flatness`): errors that name the bad input instead of a silent NaN or an error from
deep inside JAX.

The structural checks (a scalar loss, some floating leaf) run while tracing, so they cost nothing at run
time. The value check (finite parameters) needs the values: it runs when the parameters are concrete
arrays and is skipped under a transformation (``jit``, ``vmap``), where it could only be a runtime
callback.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def floating_part(params, where: str = "params"):
    """``(diff, static)`` = ``equinox.partition(params, is_inexact_array)``; a ValueError when ``params``
    holds no floating-point array, so there is nothing to differentiate."""
    diff, static = eqx.partition(params, eqx.is_inexact_array)
    if not jax.tree.leaves(diff):
        kinds = sorted({f"{leaf.dtype} array" if hasattr(leaf, "dtype") else type(leaf).__name__
                        for leaf in jax.tree.leaves(params)}) or ["none"]
        raise ValueError(f"{where} holds no floating-point array to differentiate (its leaves: "
                         f"{', '.join(kinds)}); give the parameters as floating arrays")
    return diff, static


def scalar_loss(value, name: str = "loss_fn"):
    """``value`` if it is a scalar; else a TypeError saying that ``name`` must return the mean loss."""
    shape = jnp.shape(value)
    if shape != ():
        raise TypeError(f"{name}(params, batch) must return a scalar (the mean loss over the batch), "
                        f"got an array of shape {shape}; reduce it, e.g. with jnp.mean")
    return value


@jax.jit
def _finite_leaves(leaves):
    return [jnp.all(jnp.isfinite(leaf)) for leaf in leaves]


def check_finite(params, where: str = "params") -> None:
    """A ValueError naming every floating leaf of ``params`` (by its path) with a NaN or an infinity.
    Skipped under a transformation (``jit``, ``vmap``), where the values are not known."""
    entries = jax.tree_util.tree_leaves_with_path(eqx.filter(params, eqx.is_inexact_array))
    if not entries or any(isinstance(leaf, jax.core.Tracer) for _, leaf in entries):
        return
    finite = _finite_leaves([leaf for _, leaf in entries])
    if any(isinstance(ok, jax.core.Tracer) for ok in finite):  # concrete leaves inside a trace
        return
    finite = np.asarray(finite)
    if finite.all():
        return
    bad = []
    for (path, leaf), ok in zip(entries, finite):
        if not ok:
            count = int(np.sum(~np.isfinite(np.asarray(leaf))))
            bad.append(f"{jax.tree_util.keystr(path) or '(root)'} ({count} of {np.size(leaf)} entries)")
    raise ValueError(f"{where} has non-finite (NaN or infinite) entries at {', '.join(bad)}: the loss "
                     "and every gradient would be NaN; check the step size or the initialization")
