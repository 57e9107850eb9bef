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
METHODS = ("sgd", "rs", "rs_noproj", "sa", "sam")


def radius(method, rho):
    """``rho`` for a method with a radius, None (not given) for one without."""
    return rho if "rho" in flatmin.get_method(method).params else None


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
    calls = {f"value_and_perturbed_grad {m}": (lambda m=m: flatmin.value_and_perturbed_grad(_loss, m, radius(m, 0.1))(
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
    # the field's methods: per-sample perturbations, perturbed targets, a method with state
    targets = (lambda b: b[1], lambda b, t: (b[0], t))
    field = {"sam_per_sample": {"rho": 0.1}, "perturbed_gd": {"sigma": 0.5}}
    calls.update({f"value_and_perturbed_grad {m}": (lambda m=m, p=p: flatmin.value_and_perturbed_grad(_loss, m, **p)(
        params, batch, key)) for m, p in field.items()})
    calls["value_and_perturbed_grad label_noise_sgd"] = lambda: flatmin.value_and_perturbed_grad(
        _loss, "label_noise_sgd", sigma=0.5, targets=targets)(params, batch, key)

    def anti_pgd():
        gradient = flatmin.perturbed_gradient(_loss, "anti_pgd", sigma=0.5)
        return gradient(params, gradient.init(params), batch, key)

    calls["perturbed_gradient anti_pgd"] = anti_pgd
    labelled = flatmin.make_problem("hyperbola", depth=2)  # the family gives its predictions and targets
    calls.update({f"run {m}": (lambda m=m, problem=problem: flatmin.run(
        problem, m, None, {"eta": 0.05, "sigma": 0.5}, 20, 2).final)
        for m, problem in (("label_noise_sgd", labelled), ("anti_pgd", hyperbola))})
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


class _TinyConvNet(eqx.Module):
    conv: eqx.nn.Conv2d
    linear: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 2, 3, key=k1)
        self.linear = eqx.nn.Linear(8, 2, key=k2)

    def __call__(self, image):
        return self.linear(jnp.tanh(self.conv(image)).ravel())


def _conv_predict(model, batch):
    return jax.vmap(model)(batch[0])


def _conv_loss(model, batch):
    return 0.5 * jnp.mean(jnp.sum((_conv_predict(model, batch) - batch[1]) ** 2, axis=1))


@pytest.fixture(scope="module")
def conv_model():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(6), 3)
    model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, _TinyConvNet(k1))
    return model, (jax.random.normal(k2, (5, 1, 4, 4)), jax.random.normal(k3, (5, 2)))


def test_only_a_loss_with_a_convolution_has_its_products_compiled_on_their_own(model, conv_model):
    """The host-callback path is for convolutions on the CPU (flatmin._products): a dense loss, or any
    loss under a transformation, keeps its products inside the traced program."""
    from flatmin._products import separate_products

    key = jax.random.PRNGKey(0)
    assert separate_products([_conv_loss], *conv_model, key) == (jax.default_backend() == "cpu")
    assert not separate_products([_loss], *model, key)
    inside = []
    eqx.filter_jit(lambda p: inside.append(separate_products([_conv_loss], p, conv_model[1], key)))(conv_model[0])
    assert inside == [False]


def test_products_on_their_own_and_inside_a_trace_agree(conv_model):
    """On concrete arrays on the CPU, a convolutional network's products run as programs of their own; under
    jit, inside the traced program. The same probes give the same numbers to rounding, the curvature tools
    compile once per shape either way, and the traced form stays differentiable."""
    params, batch = conv_model
    key = jax.random.PRNGKey(5)
    trace = flatmin.hessian_trace(_conv_loss, params, batch, key, 16)
    traced = eqx.filter_jit(lambda p: flatmin.hessian_trace(_conv_loss, p, batch, key, 16))(params)
    np.testing.assert_allclose(trace, traced, rtol=1e-12)
    top = flatmin.hessian_top_eigenvalue(_conv_loss, params, batch, key, num_matvecs=7)
    top_traced = eqx.filter_jit(flatmin.hessian_top_eigenvalue)(_conv_loss, params, batch, key, num_matvecs=7)
    np.testing.assert_allclose(top.value, top_traced.value, rtol=1e-10)
    flat = flatmin.model_flatness(_conv_loss, _conv_predict, params, batch, key, trace_probes=4)
    flat_traced = eqx.filter_jit(lambda p: flatmin.model_flatness(_conv_loss, _conv_predict, p, batch, key,
                                                                  trace_probes=4))(params)
    np.testing.assert_allclose(flat.tangent_grad_norm, flat_traced.tangent_grad_norm, rtol=1e-8)
    with CompileEvents() as compiles:
        flatmin.hessian_trace(_conv_loss, params, batch, key, 16)
        flatmin.hessian_top_eigenvalue(_conv_loss, params, batch, key, num_matvecs=7)
        flatmin.model_flatness(_conv_loss, _conv_predict, params, batch, key, trace_probes=4)
    assert compiles.events == []

    # d/db of the estimate, against central differences of the same estimate (same probes)
    def estimate(bias):
        return flatmin.hessian_trace(_conv_loss, eqx.tree_at(lambda m: m.linear.bias, params, bias), batch, key, 16)[0]

    bias = params.linear.bias
    gradient = jax.grad(estimate)(bias)
    step = jnp.zeros_like(bias).at[0].set(1e-5)
    np.testing.assert_allclose(gradient[0], (estimate(bias + step) - estimate(bias - step)) / 2e-5, rtol=1e-6)
