"""The float64 that the Problem layer needs, asked of the user rather than switched on by importing flatmin.

Importing flatmin leaves JAX's configuration as it was: JAX computes in float32 unless the program turns
on its 64-bit mode. The model API (:func:`flatmin.value_and_perturbed_grad`, :func:`flatmin.hessian_trace`,
:func:`flatmin.hessian_top_eigenvalue`, :func:`flatmin.model_flatness`) works in the dtype of the
parameters it is given. The Problem layer does not: a :class:`flatmin.Problem`, Definition 3's flatness
measures (:mod:`flatmin.flatness`: third derivatives, the projection on the tangent space of the minima,
the gradient flow to ``Phi`` run to ``||grad f|| <= 1e-7``) and the measurement of simulated trajectories
(:mod:`flatmin.measurement`) resolve per-step decreases of order ``eps^3``, which float32 rounding
(``~1e-7`` relative) swamps. Their entry points call :func:`require_x64`, which raises
:class:`Float64RequiredError` naming the one line that enables the mode, instead of computing in float32.

The mode can also be scoped: JAX 0.10's ``jax.enable_x64`` is a context manager (``with
jax.enable_x64(True): ...``) under which :func:`require_x64` passes and everything traced and compiled
inside is float64 (the flag is part of JAX's compilation cache key, so nothing compiled in float32 is
reused there). Arrays made inside it stay float64 only while they are used inside it, so the whole
computation on a problem (construction, runs, measures) belongs in the block.
"""

from __future__ import annotations

import jax

#: The line that turns on JAX's 64-bit mode for the whole program.
ENABLE_X64 = 'jax.config.update("jax_enable_x64", True)'


class Float64RequiredError(RuntimeError):
    """A float64 computation of flatmin was called while JAX's 64-bit mode is off."""


def x64_enabled() -> bool:
    """Whether JAX computes in 64 bits here (the global setting, or a ``jax.enable_x64`` block)."""
    return bool(jax.config.jax_enable_x64)


def message(what: str) -> str:
    """The error text of :func:`require_x64` for the computation ``what``."""
    return (f"{what} needs float64 (third derivatives, projections on the minima, decreases of order "
            f"eps^3), but JAX's 64-bit mode is off (its default): run {ENABLE_X64} at the start of the "
            f"program, or do the whole computation inside `with jax.enable_x64(True):`")


def require_x64(what: str) -> None:
    """Raise :class:`Float64RequiredError` naming ``what`` and :data:`ENABLE_X64` when the 64-bit mode
    is off. A read of JAX's configuration: free, and valid while tracing."""
    if not x64_enabled():
        raise Float64RequiredError(message(what))
