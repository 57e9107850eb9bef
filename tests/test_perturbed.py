"""Tests of flatmin.value_and_perturbed_grad: RS, SA and SAM on pytrees of parameters."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import flatmin
from flatmin._tree import project_out, unit_sphere

METHODS = ("sgd", "rs", "rs_noproj", "sa", "sam")


def radius(method, rho):
    """``rho`` for a method with a radius, None (not given) for one without."""
    return rho if "rho" in flatmin.get_method(method).params else None


def _mlp_params(key, sizes=(3, 5, 2), dtype=jnp.float64):
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"w": jax.random.normal(k, (a, b), dtype) / np.sqrt(a), "b": jnp.full((b,), 0.1, dtype)})
    return params


def _mlp_loss(params, batch):
    x, y = batch
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    out = h @ params[-1]["w"] + params[-1]["b"]
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))


@pytest.fixture(scope="module")
def mlp():
    key = jax.random.PRNGKey(0)
    params = _mlp_params(key)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    y = jax.random.normal(jax.random.PRNGKey(2), (7, 2))
    return params, (x, y)


def _flat(tree):
    return ravel_pytree(tree)[0]


@pytest.mark.parametrize("method", METHODS)
def test_zero_radius_gives_the_base_gradient_exactly(mlp, method):
    params, batch = mlp
    loss, grads = flatmin.value_and_perturbed_grad(_mlp_loss, method, radius(method, 0.0))(params, batch, jax.random.PRNGKey(3))
    # compiled, like the perturbed gradient (an eager reference differs from any compiled one in rounding)
    ref_loss, ref = jax.jit(jax.value_and_grad(_mlp_loss))(params, batch)
    assert float(loss) == float(ref_loss)
    if method == "rs_noproj":  # g + grad f(x + 0 z) = 2 g
        np.testing.assert_array_equal(_flat(grads), 2 * _flat(ref))
    else:
        np.testing.assert_array_equal(_flat(grads), _flat(ref))


@pytest.mark.parametrize("method", ["rs", "sa"])
def test_perturbation_is_orthogonal_to_the_gradient_over_the_whole_tree(mlp, method):
    params, batch = mlp
    g = _flat(jax.grad(_mlp_loss)(params, batch))
    step = flatmin.value_and_perturbed_grad(_mlp_loss, method, 0.5)
    for key in jax.random.split(jax.random.PRNGKey(4), 5):
        v = _flat(step(params, batch, key)[1]) - g
        assert float(jnp.linalg.norm(v)) > 1e-3
        assert abs(float(v @ g)) < 1e-12 * float(jnp.linalg.norm(v) * jnp.linalg.norm(g))
    # the projection is over the whole tree, not leaf by leaf: some leaf's own part is not orthogonal
    v_tree = jax.tree.map(jnp.subtract, step(params, batch, jax.random.PRNGKey(5))[1], jax.grad(_mlp_loss)(params, batch))
    per_leaf = [float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(v_tree), jax.tree.leaves(jax.grad(_mlp_loss)(params, batch)))]
    assert max(abs(p) for p in per_leaf) > 1e-6


def test_sa_and_sam_against_their_formulas(mlp):
    """References computed independently on the flat vector: SA's sign is the one its key draws."""
    params, batch = mlp
    flat, unravel = ravel_pytree(params)
    f = lambda z: _mlp_loss(unravel(z), batch)  # noqa: E731
    g = jax.grad(f)(flat)
    u = g / jnp.linalg.norm(g)
    rho = 0.3
    sam = flatmin.value_and_perturbed_grad(_mlp_loss, "sam", rho)(params, batch, jax.random.PRNGKey(0))[1]
    np.testing.assert_allclose(_flat(sam), jax.grad(f)(flat + rho * u), rtol=1e-12, atol=1e-15)
    signs = set()
    for key in jax.random.split(jax.random.PRNGKey(6), 8):
        sa = _flat(flatmin.value_and_perturbed_grad(_mlp_loss, "sa", rho)(params, batch, key)[1])
        candidates = []
        for s in (1.0, -1.0):
            w = jax.grad(f)(flat + s * rho * u)
            candidates.append(g + w - (w @ g) / (g @ g) * g)
        errors = [float(jnp.max(jnp.abs(sa - c))) for c in candidates]
        assert min(errors) < 1e-13 and max(errors) > 1e-6
        signs.add(int(np.argmin(errors)))
    assert signs == {0, 1}  # both signs drawn


def test_sa_fallback_when_the_gradient_vanishes():
    """Remark 2: at a critical point the direction comes from a nearby gradient, not 0/0."""
    loss = lambda p, b: 0.5 * jnp.sum(p["a"] ** 2) + 0.25 * jnp.sum(p["b"] ** 4)  # noqa: E731
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    _, grads = flatmin.value_and_perturbed_grad(loss, "sa", 0.5)(params, None, jax.random.PRNGKey(0))
    flat = _flat(grads)
    assert bool(jnp.all(jnp.isfinite(flat))) and float(jnp.linalg.norm(flat)) > 0.1
    _, off = flatmin.value_and_perturbed_grad(loss, "sa", 0.5, fallback=False)(params, None, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(_flat(off), 0.0)


@pytest.mark.parametrize("project", [True, False])
def test_rs_identity_with_the_sphere_over_the_whole_tree(project):
    """E_z grad f(x + rho z) = grad f(x) + (rho^2/2) grad trbar(x), trbar = tr H / d with d the size of
    the whole tree, exactly for a cubic f. A sphere per leaf (leaves of sizes 1 and 5) would weigh
    leaf a's third derivatives by 1 instead of 1/6 and is many standard errors away."""
    coefficients = jnp.array([1.0, 2.0, -1.0, 0.5, 1.5, -2.0])

    def loss(p, _):
        x = jnp.concatenate([p["a"], p["b"]])
        return jnp.sum(coefficients * x**3) / 6 + 2.0 * p["a"][0] ** 2 * jnp.sum(p["b"]) + 0.5 * x @ x

    params = {"a": jnp.array([0.3]), "b": jnp.array([0.1, -0.2, 0.4, 0.0, 0.2])}
    rho, n = 1.0, 20000
    flat, unravel = ravel_pytree(params)
    f = lambda z: loss(unravel(z), None)  # noqa: E731
    g = jax.grad(f)(flat)
    d = flat.size
    grad_trbar = jax.grad(lambda z: jnp.trace(jax.hessian(f)(z)) / d)(flat)
    method = "rs" if project else "rs_noproj"
    step = flatmin.value_and_perturbed_grad(loss, method, rho)
    samples = jax.vmap(lambda k: _flat(step(params, None, k)[1]))(jax.random.split(jax.random.PRNGKey(7), n))
    mean = samples.mean(0) - (g if project else 2 * g)
    se = samples.std(0, ddof=1) / np.sqrt(n)
    expected = rho**2 / 2 * grad_trbar
    if project:
        expected = project_out(g, expected)
    assert np.all(np.abs(mean - expected) < 5 * se + 1e-12), (mean, expected, se)
    per_leaf = rho**2 / 2 * (jax.grad(lambda z: jax.hessian(f)(z)[0, 0])(flat)
                             + jax.grad(lambda z: jnp.trace(jax.hessian(f)(z)[1:, 1:]) / 5)(flat))
    if project:
        per_leaf = project_out(g, per_leaf)
    assert np.any(np.abs(mean - per_leaf) > 20 * se)


def test_unit_sphere_is_one_sphere_over_all_leaves():
    like = {"a": jnp.zeros(1), "b": jnp.zeros((2, 3))}
    z = jax.vmap(lambda k: _flat(unit_sphere(k, like)))(jax.random.split(jax.random.PRNGKey(0), 4000))
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=1), 1.0, rtol=1e-12)
    # every coordinate has second moment 1/d (d = 7), the leaf of size 1 included
    moments = (z**2).mean(0)
    se = (z**2).std(0) / np.sqrt(len(z))
    assert np.all(np.abs(moments - 1 / 7) < 5 * se)


def test_same_key_same_result_jit_vmap_and_float32(mlp):
    params, batch = mlp
    step = flatmin.value_and_perturbed_grad(_mlp_loss, "rs", 0.2)
    key = jax.random.PRNGKey(9)
    a, b = step(params, batch, key), jax.jit(step)(params, batch, key)
    np.testing.assert_allclose(_flat(a[1]), _flat(b[1]), rtol=1e-13)
    np.testing.assert_array_equal(_flat(step(params, batch, key)[1]), _flat(a[1]))
    keys = jax.random.split(key, 3)
    many = jax.vmap(lambda k: step(params, batch, k)[1])(keys)
    np.testing.assert_allclose(_flat(jax.tree.map(lambda leaf: leaf[1], many)), _flat(step(params, batch, keys[1])[1]),
                               rtol=1e-12)
    params32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), params)
    batch32 = jax.tree.map(lambda leaf: leaf.astype(jnp.float32), batch)
    for method in METHODS:
        loss, grads = flatmin.value_and_perturbed_grad(_mlp_loss, method, radius(method, 0.2))(params32, batch32, key)
        assert loss.dtype == jnp.float32
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(grads))


def test_rho_may_be_traced_and_bad_input_is_named(mlp):
    params, batch = mlp
    f = jax.jit(lambda r: flatmin.value_and_perturbed_grad(_mlp_loss, "sa", r)(params, batch, jax.random.PRNGKey(0))[1])
    np.testing.assert_allclose(_flat(f(0.0)), _flat(jax.grad(_mlp_loss)(params, batch)), rtol=1e-14)
    with pytest.raises(ValueError, match="unknown method 'adam'; registered methods: anti_pgd, gd, label_noise_sgd, perturbed_gd, rs, rs_noproj, sa, sam, sam_per_sample, sgd"):
        flatmin.value_and_perturbed_grad(_mlp_loss, "adam", 0.1)
    with pytest.raises(ValueError, match=r"needs parameter\(s\) \['rho'\]"):
        flatmin.value_and_perturbed_grad(_mlp_loss, "rs")
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="rho = .* is not allowed; expected a number >= 0, finite"):
            flatmin.value_and_perturbed_grad(_mlp_loss, "sam", bad)
    with pytest.raises(ValueError, match="fallback_radius"):
        flatmin.value_and_perturbed_grad(_mlp_loss, "sa", 0.1, fallback_radius=0.0)


def test_an_equinox_model_trains_with_optax():
    """A model the project does not ship: an Equinox MLP (with a non-array field) under optax's
    SGD. The update equals the one computed from the flat formula, and SA lowers the loss."""
    model = eqx.nn.MLP(2, 1, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    y = jnp.sin(x[:, :1]) * x[:, 1:]

    def loss_fn(m, batch):
        inputs, targets = batch
        return jnp.mean((jax.vmap(m)(inputs) - targets) ** 2)

    optimizer = optax.sgd(0.1)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    step = eqx.filter_jit(flatmin.value_and_perturbed_grad(loss_fn, "sa", 0.05))  # as Equinox users jit
    first = None
    for t in range(200):
        loss, grads = step(model, (x, y), jax.random.PRNGKey(t))
        first = loss if first is None else first
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        model = eqx.combine(params, static)
    assert float(loss) < 0.5 * float(first)
    # the gradient of one step against the flat reference (SAM, no randomness)
    flat, unravel = ravel_pytree(params)
    f = lambda z: loss_fn(eqx.combine(unravel(z), static), (x, y))  # noqa: E731
    g = jax.grad(f)(flat)
    _, sam = flatmin.value_and_perturbed_grad(loss_fn, "sam", 0.05)(model, (x, y), None)
    np.testing.assert_allclose(_flat(sam), jax.grad(f)(flat + 0.05 * g / jnp.linalg.norm(g)), rtol=1e-10, atol=1e-14)
