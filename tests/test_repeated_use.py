"""Repeated use: a public function called again at a shape it has seen traces and compiles nothing, and a
long loop of un-jitted calls does not grow the process (memory maps, the resource the process once ran
out of after about 1,500 SA calls)."""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import HYPERBOLA_SHARP, CompileEvents

import flatmin
from flatmin.perturbed import METHODS


def _loss(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)


def _predict(params, batch):
    return jnp.tanh(batch[0] @ params["w"]) @ params["v"]


@pytest.fixture(scope="module")
def model():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"w": jax.random.normal(k1, (3, 4)), "v": jax.random.normal(k2, (4,))}
    return params, (jax.random.normal(k3, (8, 3)), jnp.ones(8))


def _calls(params, batch, hyperbola):
    """Each public function of the model API and of the Problem layer, as a call without arguments."""
    key = jax.random.PRNGKey(1)
    x = jnp.asarray(HYPERBOLA_SHARP)
    run_params = {"eta": 0.05, "eta_prime": 0.01, "rho": 0.3, "eps0": 0.5, "batch_size": 1}
    calls = {f"value_and_perturbed_grad {m}": (lambda m=m: flatmin.value_and_perturbed_grad(_loss, m, 0.1)(
        params, batch, key)) for m in METHODS}
    calls.update({f"perturbation {a}": (lambda a=a: flatmin.perturbation(hyperbola, a, x, 0.1, key))
                  for a in ("rs", "rs_noproj", "sa")})
    calls.update({
        "hessian_trace": lambda: flatmin.hessian_trace(_loss, params, batch, key, 10),
        "hessian_top_eigenvalue": lambda: flatmin.hessian_top_eigenvalue(_loss, params, batch, key),
        "model_flatness": lambda: flatmin.model_flatness(_loss, _predict, params, batch, key, trace_probes=4),
        "flatness": lambda: flatmin.flatness(hyperbola, x),
        "hutchinson_trace": lambda: flatmin.hutchinson_trace(hyperbola, x, key, 10),
        "run": lambda: flatmin.run(hyperbola, "sa", x, run_params, 20, 2, eps=0.1).final,
    })
    return calls


def test_a_second_call_at_a_seen_shape_compiles_nothing(model, hyperbola):
    """Every public function, the factory of value_and_perturbed_grad built anew each call as a user in a
    loop would: after the first call, two more trace and compile nothing (each one did before: SA's
    Remark 2 branch, the curvature tools' loops over probes)."""
    params, batch = model
    for name, call in _calls(params, batch, hyperbola).items():
        jax.block_until_ready(call())
        with CompileEvents() as compiles:
            jax.block_until_ready(call())
            jax.block_until_ready(call())
        assert compiles.events == [], f"{name} compiled again at a shape it has seen: {compiles.events}"


def test_a_new_radius_compiles_nothing(model):
    params, batch = model
    key = jax.random.PRNGKey(2)
    flatmin.value_and_perturbed_grad(_loss, "sa", 0.1)(params, batch, key)
    with CompileEvents() as compiles:
        loss, grads = flatmin.value_and_perturbed_grad(_loss, "sa", 0.3)(params, batch, key)
    assert compiles.events == []
    reference = jax.jit(flatmin.value_and_perturbed_grad(_loss, "sa", 0.3))(params, batch, key)[1]
    np.testing.assert_allclose(grads["w"], reference["w"], rtol=1e-12)


def _memory_maps() -> int:
    return len(Path("/proc/self/maps").read_text().splitlines())


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_ten_thousand_unjitted_sa_calls_do_not_grow_the_process(model, hyperbola):
    """10,000 un-jitted SA gradients and 2,000 SA perturbations in one loop: the memory maps stay flat
    (each call added 42 before, and the process died at 65,530). The slack, 64 maps, is what the
    allocator may map for arrays in flight, not a per-call growth: one map per 150 calls would exceed it."""
    params, batch = model
    key = jax.random.PRNGKey(3)
    x = jnp.asarray(HYPERBOLA_SHARP)
    for _ in range(100):  # warm-up: compilation and the allocator's first pools
        flatmin.value_and_perturbed_grad(_loss, "sa", 0.1)(params, batch, key)
        flatmin.perturbation(hyperbola, "sa", x, 0.1, key)
    before = _memory_maps()
    for i in range(10_000):
        loss, _ = flatmin.value_and_perturbed_grad(_loss, "sa", 0.1)(params, batch, jax.random.fold_in(key, i))
        if i % 5 == 0:
            flatmin.perturbation(hyperbola, "sa", x, 0.1, jax.random.fold_in(key, i))
    jax.block_until_ready(loss)
    assert _memory_maps() - before <= 64


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_curvature_loops_do_not_grow_the_process(model):
    """The curvature tools called 300 times each (one compilation per call before: +18 to +174 maps)."""
    params, batch = model
    key = jax.random.PRNGKey(4)
    calls = (lambda: flatmin.hessian_trace(_loss, params, batch, key, 10),
             lambda: flatmin.hessian_top_eigenvalue(_loss, params, batch, key),
             lambda: flatmin.model_flatness(_loss, _predict, params, batch, key, trace_probes=4))
    for call in calls:
        jax.block_until_ready(call())
    before = _memory_maps()
    for _ in range(300):
        for call in calls:
            out = call()
    jax.block_until_ready(out)
    assert _memory_maps() - before <= 64


def test_products_on_their_own_and_inside_a_trace_agree(model):
    """Called on concrete arrays on the CPU, the tools evaluate each product as a program of its own
    (flatmin._products); under jit, inside the traced program. The same probes give the same numbers to
    rounding, and the traced form stays differentiable."""
    params, batch = model
    key = jax.random.PRNGKey(5)
    trace = flatmin.hessian_trace(_loss, params, batch, key, 16)
    traced = jax.jit(lambda p: flatmin.hessian_trace(_loss, p, batch, key, 16))(params)
    np.testing.assert_allclose(trace, traced, rtol=1e-12)
    top = flatmin.hessian_top_eigenvalue(_loss, params, batch, key, num_matvecs=7)
    top_traced = eqx.filter_jit(flatmin.hessian_top_eigenvalue)(_loss, params, batch, key, num_matvecs=7)
    np.testing.assert_allclose(top.value, top_traced.value, rtol=1e-10)
    flat = flatmin.model_flatness(_loss, _predict, params, batch, key, trace_probes=4)
    flat_traced = jax.jit(lambda p: flatmin.model_flatness(_loss, _predict, p, batch, key, trace_probes=4))(params)
    np.testing.assert_allclose(flat.tangent_grad_norm, flat_traced.tangent_grad_norm, rtol=1e-8)

    # d/dw of the estimate, against central differences of the same estimate (same probes)
    gradient = jax.grad(lambda p: flatmin.hessian_trace(_loss, p, batch, key, 16)[0])(params)
    step = 1e-5
    bump = jax.tree.map(jnp.zeros_like, params)
    bump["v"] = bump["v"].at[0].set(step)
    up = flatmin.hessian_trace(_loss, jax.tree.map(jnp.add, params, bump), batch, key, 16)[0]
    down = flatmin.hessian_trace(_loss, jax.tree.map(jnp.subtract, params, bump), batch, key, 16)[0]
    np.testing.assert_allclose(gradient["v"][0], (up - down) / (2 * step), rtol=1e-6)
