"""Helpers shared by the problem families: parameter checks, the start's jitter, Hessian norms."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def check_int(family: str, name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; ValueError naming ``name``, the value and the range."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{family}: {name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{family}: {name} must be an integer {allowed}, got {value!r}")
    return int(value)


def check_float(
    family: str,
    name: str,
    value,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]``, either end open on request."""
    allowed = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (
            value < high if open_high else value <= high
        )
    if not ok:
        raise ValueError(f"{family}: {name} must be a finite number in {allowed}, got {value!r}")
    return float(value)


def jittered(x_sharp, noise: float):
    """``key -> x_sharp + noise * g / sqrt(d)``, ``g ~ N(0, I_d)``: a start about ``noise`` away."""
    x_sharp = jnp.asarray(x_sharp, dtype=jnp.float64)
    scale = noise / math.sqrt(x_sharp.size)

    def initial_point(key):
        return x_sharp + scale * jax.random.normal(key, x_sharp.shape, dtype=jnp.float64)

    return initial_point


def hessian_norm(loss, x) -> float:
    """Spectral norm of ``Hess loss(x)`` by autodiff (dense; for the small ``d`` of these families)."""
    hess = np.asarray(
        jax.jit(jax.hessian(loss))(jnp.asarray(x, dtype=jnp.float64))
    )  # jit: 5x faster
    return float(np.max(np.abs(np.linalg.eigvalsh(hess))))
