"""Small problems with closed-form structure, shared by the core unit tests.

They are defined here with :class:`flatmin.Problem` directly (independently of the registered families
in :mod:`flatmin.problems`) and built once per session, so the jitted functions cached per problem
(:func:`flatmin.flatness.flatness_fn`) are compiled once.

- hyperbola: f(x, y) = (xy - 1)^2 (docs/paper_notes.md §1 Example 1, §7). X* = {xy = 1}; tr Hess = 2(x^2 + y^2),
  so trbar = x^2 + y^2 (4.25 at the sharp point (2, 1/2), 2 at the flattest points +-(1, 1)).
  x^2 - y^2 is conserved by the flow, so Phi(x, y) = (sign(x) sqrt(x^2 + s), sign(y) sqrt(y^2 + s))
  with s the root of (x^2 + s)(y^2 + s) = 1. Given as a training loss with n = 1 so SA applies.
- valley (ERM form, docs/paper_notes.md §7): x = (u, w), u in R^2, w in R^3, f_j = (k/2) a_j(u) w_j^2 with
  a_j(u) = b_j + exp(c_j . u) > 0, so f = (1/2) sum_j a_j(u) w_j^2, X* = {w = 0}, tr Hess = sum_j a_j
  on X* and dPhi(x*) = projector on the u-coordinates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Two XLA settings for the test session and every process it starts (workflow runs, README blocks, SLURM
# jobs), set before JAX starts its CPU backend; a setting already in XLA_FLAGS is kept. The tests are
# dominated by compilation, thousands of small programs, and both cut it; the computations slow down only
# where they are long (the quick profile's escape job, mostly MLP training: 52 s at level 0 against 43 s):
# - backend optimization level 0 halves it (the quick E2 job: 55 s -> 31 s);
# - the CPU backend's earlier (LLVM IR) fusion emitters instead of its MLIR ones: a small program compiles
#   in about 13 ms instead of 22 ms (750 one-op programs: 16.2 s -> 10.0 s), and six library test modules
#   take 81 s instead of 109 s from a cold cache. The flag is passed only where this jaxlib knows it (an
#   unknown XLA flag is fatal), which a short child process checks once per session.
# Results then differ from the default build's in rounding only (the quick E3 table to 5e-16; chaotic SGD
# and SAM paths more after thousands of steps); every test compares like with like or within tolerances,
# and the workflow keeps XLA's defaults.
_FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags: str) -> bool:
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    try:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags = f"{_flags} --xla_backend_optimization_level=0".strip()
if "xla_cpu_use_fusion_emitters" not in _flags and _xla_accepts(f"{_flags} {_FUSION_EMITTERS_OFF}"):
    _flags = f"{_flags} {_FUSION_EMITTERS_OFF}"
os.environ["XLA_FLAGS"] = _flags

import jax  # noqa: E402

# The tests compute in float64, as the Problem layer requires and the workflow does: importing flatmin leaves
# JAX's configuration alone (tests/test_precision.py checks that, and the float32 default, in fresh
# interpreters), so the test process turns the 64-bit mode on itself, before any computation.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import flatmin  # noqa: E402
from flatmin.workflow import configure_jax  # noqa: E402

# Both pytest-xdist workers and the workflow runs the tests start share one persistent compilation cache
# (keyed by the compiled computation, so sharing is safe): a function one of them compiled is loaded,
# not compiled again, by the others.
configure_jax(Path(__file__).resolve().parents[1] / ".jax_cache", threads=None)


def pytest_collection_modifyitems(items):
    """The modules holding slow tests first, the others after them, each in collection order.

    pytest-xdist runs with ``--dist loadfile`` (pyproject.toml): a module goes whole to one worker, so its
    module-scoped fixtures are computed once, and a worker takes the next module in this order when it
    runs out. With the modules of the workflow runs (one to two minutes each) first, the many short modules
    fill in behind them on whichever worker frees first, and no long run starts last on one worker while
    the other sits idle."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)


class CompileEvents:
    """Counts JAX's tracing and backend-compilation events while in use."""

    NAMES = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")

    def __enter__(self):
        self.events = []
        jax.monitoring.register_event_duration_secs_listener(self._record)
        return self

    def _record(self, event, duration, **kwargs):
        if event in self.NAMES:
            self.events.append(event)

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._record)


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


@pytest.fixture(scope="module")
def tanh_model():
    """``(params, batch, loss_fn)``: a one-layer tanh model, a dict of arrays, 5 samples of 3 inputs and
    2 targets, the mean square loss."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w": jax.random.normal(k1, (3, 2)), "b": jnp.zeros(2)}
    batch = (jax.random.normal(k2, (5, 3)), jnp.ones((5, 2)))

    def loss_fn(p, b):
        inputs, targets = b
        return 0.5 * jnp.mean(jnp.sum((jnp.tanh(inputs @ p["w"] + p["b"]) - targets) ** 2, axis=1))

    return params, batch, loss_fn
