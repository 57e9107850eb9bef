"""Small problems with closed-form structure, shared by the core unit tests.

They are defined here with :class:`flatmin.Problem` directly (independently of the registered families
in :mod:`flatmin.problems`) and built once per session, so the jitted functions cached per problem
(:func:`flatmin.flatness.flatness_fn`) are compiled once.

- hyperbola: f(x, y) = (xy - 1)^2 (NOTES.md §1 Example 1, §7). X* = {xy = 1}; tr Hess = 2(x^2 + y^2),
  so trbar = x^2 + y^2 (4.25 at the sharp point (2, 1/2), 2 at the flattest points +-(1, 1)).
  x^2 - y^2 is conserved by the flow, so Phi(x, y) = (sign(x) sqrt(x^2 + s), sign(y) sqrt(y^2 + s))
  with s the root of (x^2 + s)(y^2 + s) = 1. Given as a training loss with n = 1 so SA applies.
- valley (ERM form, NOTES.md §7): x = (u, w), u in R^2, w in R^3, f_j = (k/2) a_j(u) w_j^2 with
  a_j(u) = b_j + exp(c_j . u) > 0, so f = (1/2) sum_j a_j(u) w_j^2, X* = {w = 0}, tr Hess = sum_j a_j
  on X* and dPhi(x*) = projector on the u-coordinates.
"""

from __future__ import annotations

import os
from pathlib import Path

# XLA's backend optimization level 0 for the test session and every process it starts (workflow runs,
# README blocks): the tests are dominated by compilation, which this halves (the quick E2 job: 55 s -> 31 s)
# without slowing the small computations they run. Results then differ from the default build's in
# rounding only (the quick E3 table to 5e-16; chaotic SGD and SAM paths more after thousands of steps);
# every test compares like with like or within tolerances, and the workflow keeps XLA's default. Set
# before JAX starts its CPU backend; an optimization level already in XLA_FLAGS is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import flatmin  # noqa: E402
from flatmin.workflow import configure_jax  # noqa: E402

# Both pytest-xdist workers and the workflow runs the tests start share one persistent compilation cache
# (keyed by the compiled computation, so sharing is safe): a function one of them compiled is loaded,
# not compiled again, by the others.
configure_jax(Path(__file__).resolve().parents[1] / ".jax_cache", threads=None)


# ---------------------------------------------------------------- hyperbola f = (xy - 1)^2
def hyperbola_loss(x):
    return (x[0] * x[1] - 1.0) ** 2


def hyperbola_limit(x):
    """Closed-form Phi, valid where the flow stays in one open quadrant (x y > 0)."""
    a, b = x[0] ** 2, x[1] ** 2
    s = (-(a + b) + jnp.sqrt((a - b) ** 2 + 4.0)) / 2.0
    return jnp.stack([jnp.sign(x[0]) * jnp.sqrt(a + s), jnp.sign(x[1]) * jnp.sqrt(b + s)])


def hyperbola_trbar(x):
    """tr Hess f / d = 2 (x^2 + y^2) / 2, computed by hand."""
    return x[0] ** 2 + x[1] ** 2


def hyperbola_tangent(x_star):
    """Unit tangent of {xy = 1} at (a, b): orthogonal to the normal (b, a)."""
    t = jnp.array([x_star[0], -x_star[1]])
    return t / jnp.linalg.norm(t)


HYPERBOLA_SHARP = np.array([2.0, 0.5])


@pytest.fixture(scope="session")
def hyperbola():
    return flatmin.Problem(
        name="hyperbola",
        dim=2,
        loss=hyperbola_loss,
        sample_losses=lambda x: hyperbola_loss(x)[None],
        num_samples=1,
        limit_map=hyperbola_limit,
        hessian_rank=1,
        flattest_trace=2.0,
        initial_point=lambda key: jnp.asarray(HYPERBOLA_SHARP) + 0.05 * jax.random.normal(key, (2,)),
    )


@pytest.fixture(scope="session")
def hyperbola_flow():
    """Same loss; no limit map (numerical flow), no Hessian rank (spectral-gap rule), no samples."""
    return flatmin.Problem(name="hyperbola_flow", dim=2, loss=hyperbola_loss)


# ---------------------------------------------------------------- valley in ERM form
VALLEY_C = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
VALLEY_B = np.array([1.0, 0.5, 2.0])
VALLEY_M, VALLEY_K = VALLEY_C.shape[1], VALLEY_C.shape[0]


def valley_a(u):
    return jnp.asarray(VALLEY_B) + jnp.exp(jnp.asarray(VALLEY_C) @ u)


def valley_grad_sum_a(u):
    """grad_u sum_j a_j(u), by hand."""
    return np.asarray(VALLEY_C).T @ np.exp(np.asarray(VALLEY_C) @ np.asarray(u))


def valley_sample_losses(x):
    u, w = x[:VALLEY_M], x[VALLEY_M:]
    return VALLEY_K / 2.0 * valley_a(u) * w**2


@pytest.fixture(scope="session")
def valley():
    return flatmin.Problem(
        name="valley_erm",
        dim=VALLEY_M + VALLEY_K,
        loss=lambda x: jnp.mean(valley_sample_losses(x)),
        sample_losses=valley_sample_losses,
        num_samples=VALLEY_K,
        hessian_rank=VALLEY_K,
    )
