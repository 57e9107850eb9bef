"""The method contract (flatmin.method): a method of one's own, with state or with function values only,
runs through flatmin.run (state carried through the compiled loop and its replays) and the model API;
parameters, registration and keys are checked; SA's options are explicit."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flatmin


@flatmin.register_method
class AnticorrelatedGD(flatmin.Method):
    """direction = grad f(x) - sigma (z' - z), z' ~ N(0, I); the state is z."""

    name, label = "test_anti_gd", "GD, anticorrelated noise (test)"
    params = {"sigma": flatmin.Param("noise scale", low=0)}

    def init(self, x, hyper):
        return jax.tree.map(jnp.zeros_like, x)

    def direction(self, oracle, x, z, key, hyper):
        flat, unravel = ravel_pytree(x)
        z_next = unravel(jax.random.normal(key, flat.shape, flat.dtype))
        return flatmin.Step(jax.tree.map(lambda g, a, b: g - hyper["sigma"] * (b - a), oracle.grad(x), z, z_next),
                            z_next)


@flatmin.register_method
class TwoPoint(flatmin.Method):
    """Zeroth order: direction = d (f(x + mu u) - f(x - mu u)) / (2 mu) u, u uniform on the sphere."""

    name, label = "test_two_point", "two-point estimator (test)"
    params = {"mu": flatmin.Param("smoothing radius", low=0, low_open=True)}
    cost = flatmin.Cost(gradients=0, function_values=2)

    def direction(self, oracle, x, state, key, hyper):
        u = jax.random.normal(key, x.shape, x.dtype)
        u = u / jnp.linalg.norm(u)
        slope = (oracle.loss(x + hyper["mu"] * u) - oracle.loss(x - hyper["mu"] * u)) / (2 * hyper["mu"])
        return flatmin.Step(x.size * slope * u, state)


def _anti_gd_by_hand(problem, x0, eta, sigma, seed, steps):
    x, z = np.asarray(x0, dtype=float), np.zeros(problem.dim)
    grad = jax.jit(jax.grad(problem.loss))
    for t in range(steps):
        z_next = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (problem.dim,)))
        x = x - eta * (np.asarray(grad(x)) - sigma * (z_next - z))
        z = z_next
    return x


def test_a_stateful_method_runs_in_run_with_its_state_carried(hyperbola):
    x0 = jnp.array([2.0, 0.5])
    result = flatmin.run(hyperbola, "test_anti_gd", x0, {"eta": 0.05, "sigma": 0.3}, 60, seeds=[0, 7],
                         record_every=20, measure=False)
    for row, seed in enumerate((0, 7)):
        np.testing.assert_allclose(result.final[row], _anti_gd_by_hand(hyperbola, x0, 0.05, 0.3, seed, 60),
                                   rtol=1e-12)
    trajectory = flatmin.simulate(hyperbola, "test_anti_gd", x0, {"eta": 0.05, "sigma": 0.3}, 60, seeds=2,
                                  record_every=20)
    assert trajectory.states.shape == (2, 4, 2)  # (seeds, checkpoints, d): z at every checkpoint
    # a replay from a checkpoint carries the state recorded there: the same iterates as the run
    points, _, _ = trajectory.replay([0, 1], [1, 1], [60, 60], every=20)
    np.testing.assert_allclose(points[:, -1], trajectory.iterates[:, -1], rtol=1e-12)


def test_a_stateful_method_through_the_model_api(tanh_model):
    params, batch, loss_fn = tanh_model
    grad_fn = flatmin.perturbed_gradient(loss_fn, "test_anti_gd", sigma=0.1)
    state = grad_fn.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(params)
    key = jax.random.PRNGKey(3)
    (loss, grads), new_state = grad_fn(params, state, batch, key)
    g = jax.grad(loss_fn)(params, batch)
    flat_z, _ = ravel_pytree(new_state)
    np.testing.assert_allclose(ravel_pytree(grads)[0], ravel_pytree(g)[0] - 0.1 * flat_z, rtol=1e-12)
    assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-14)
    with pytest.raises(ValueError, match="keeps a state across steps: use flatmin.perturbed_gradient"):
        flatmin.value_and_perturbed_grad(loss_fn, "test_anti_gd", sigma=0.1)


def test_a_method_of_function_values_only_estimates_the_gradient(hyperbola):
    """E[d (f(x+mu u) - f(x-mu u)) / (2 mu) u] = grad f(x) + O(mu^2): within 5 standard errors."""
    x = jnp.array([1.5, 0.4])
    grad_fn = flatmin.perturbed_gradient(lambda p, b: hyperbola.loss(p), "test_two_point", mu=1e-4)
    estimate = jax.jit(jax.vmap(lambda k: grad_fn(x, (), None, k)[0][1]))
    draws = np.asarray(estimate(jax.random.split(jax.random.PRNGKey(0), 40_000)))
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / math.sqrt(len(draws))
    assert np.all(np.abs(mean - np.asarray(jax.grad(hyperbola.loss)(x))) <= 5 * se), (mean, se)
    assert flatmin.get_method("test_two_point").cost == flatmin.Cost(gradients=0, function_values=2)


def test_has_aux_and_keys_as_in_jax(tanh_model):
    params, batch, loss_fn = tanh_model

    def with_aux(p, b):
        return loss_fn(p, b), {"norm": jnp.linalg.norm(p["w"])}

    (loss, aux), grads = flatmin.value_and_perturbed_grad(with_aux, "sam", 0.1, has_aux=True)(params, batch)
    assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-14)
    assert float(aux["norm"]) == pytest.approx(float(jnp.linalg.norm(params["w"])), rel=1e-14)
    plain = flatmin.value_and_perturbed_grad(loss_fn, "sam", 0.1)(params, batch)[1]
    np.testing.assert_array_equal(ravel_pytree(grads)[0], ravel_pytree(plain)[0])
    for name in ("gd", "sgd"):  # draw nothing: no key needed
        flatmin.value_and_perturbed_grad(loss_fn, name)(params, batch)
    with pytest.raises(ValueError, match="method 'rs' draws random numbers: pass key="):
        flatmin.value_and_perturbed_grad(loss_fn, "rs", 0.1)(params, batch)
    with pytest.raises(ValueError, match="batch_size = 4 sub-samples"):
        flatmin.value_and_perturbed_grad(loss_fn, "sgd", batch_size=4)


def test_sa_projection_is_an_explicit_option(valley_erm):
    """On a training loss, SA's full-gradient and batch-gradient projections are different methods'
    steps from the same draws; in the model API (the loss passed is the whole loss) they coincide."""
    problem, x0 = valley_erm
    base = {"eta": 0.01, "eta_prime": 0.01, "rho": 0.2, "batch_size": 1}
    full = flatmin.run(problem, "sa", x0, base, 3, seeds=[1], measure=False).final
    batch = flatmin.run(problem, "sa", x0, {**base, "projection": "batch"}, 3, seeds=[1], measure=False).final
    assert not np.allclose(full, batch)
    loss = lambda p, b: jnp.mean(problem.losses_of(p, b))  # noqa: E731
    idx, key = jnp.arange(problem.num_samples), jax.random.PRNGKey(2)
    grads = [flatmin.value_and_perturbed_grad(loss, "sa", 0.2, projection=p)(jnp.asarray(x0), idx, key)[1]
             for p in ("full", "batch")]
    np.testing.assert_array_equal(grads[0], grads[1])
    with pytest.raises(ValueError, match=r"projection = 'sample' is not allowed; expected one of 'full', 'batch'"):
        flatmin.value_and_perturbed_grad(loss, "sa", 0.2, projection="sample")


def test_registration_and_parameters_are_checked():
    with pytest.raises(TypeError, match="subclass of flatmin.Method"):
        flatmin.register_method(object)
    with pytest.raises(ValueError, match="name must be an identifier"):
        flatmin.register_method(type("Bad", (flatmin.Method,), {"name": "not a name"}))
    with pytest.raises(ValueError, match="unknown needs \\['labels'\\]"):
        flatmin.register_method(type("Bad", (flatmin.Method,), {"name": "bad_needs", "needs": frozenset({"labels"})}))
    with pytest.raises(ValueError, match="'eta' is a parameter of the simulation"):
        flatmin.register_method(type("Bad", (flatmin.Method,), {"name": "bad_eta", "params": {"eta": flatmin.Param("x")}}))
    with pytest.raises(ValueError, match="method 'sa' is already registered"):
        flatmin.register_method(type("Other", (flatmin.Method,), {"name": "sa"}))
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) \\['radius'\\] of method 'sam'; its parameters: rho, batch_size"):
        flatmin.perturbed_gradient(lambda p, b: 0.0, "sam", radius=0.1)
    with pytest.raises(ValueError, match="sigma = -1.0 is not allowed; expected a number >= 0"):
        flatmin.perturbed_gradient(lambda p, b: 0.0, "test_anti_gd", sigma=-1.0)


def test_every_builtin_declares_its_metadata():
    for name in ("gd", "sgd", "sam", "rs", "rs_noproj", "sa", "label_noise_sgd", "sam_per_sample", "anti_pgd",
                 "perturbed_gd"):
        method = flatmin.get_method(name)
        assert method.name == name and method.label and method.reference and method.style
        assert method.cost.gradients >= 1
        assert all(isinstance(p, flatmin.Param) and p.description for p in method.params.values())
    assert flatmin.get_method("rs").theory.theorem == "Theorem 1"
    assert flatmin.get_method("sa").theory.fixed == {"batch_size": 1}


@pytest.fixture
def valley_erm():
    """A training loss of n = 10 samples."""
    problem = flatmin.make_problem("diagonal_net", n=10, p=30, sparsity=3, seed=0)
    return problem, problem.start(jax.random.PRNGKey(0))


def test_a_direction_that_is_not_a_step_is_named_and_a_clash_is_refused(tanh_model):
    params, batch, loss_fn = tanh_model

    class Plain(flatmin.Method):
        name = "test_plain"

        def direction(self, oracle, x, state, key, hyper):
            return oracle.grad(x), state

    flatmin.register_method(Plain)
    with pytest.raises(TypeError, match="method 'test_plain': direction must return flatmin.Step"):
        flatmin.value_and_perturbed_grad(loss_fn, "test_plain")(params, batch, jax.random.PRNGKey(0))

    class SGD(flatmin.Method):
        name = "sgd"

    with pytest.raises(ValueError, match="method 'sgd' is already registered by flatmin.methods.sgd.SGD"):
        flatmin.register_method(SGD)


def test_a_value_from_inside_a_cond_is_not_reused_outside_it(tanh_model):
    """The oracle shares the gradient at a point only within one trace: a method that asks for it inside
    a lax.cond branch leaves no tracer of that branch behind."""
    params, batch, loss_fn = tanh_model

    class Conditional(flatmin.Method):
        name = "test_conditional"

        def direction(self, oracle, x, state, key, hyper):
            g = jax.lax.cond(True, lambda: oracle.grad(x), lambda: jax.tree.map(jnp.zeros_like, x))
            return flatmin.Step(g, state)

        def draws(self, hyper):
            return False

    flatmin.register_method(Conditional)
    loss, grads = flatmin.value_and_perturbed_grad(loss_fn, "test_conditional")(params, batch)
    np.testing.assert_allclose(ravel_pytree(grads)[0], ravel_pytree(jax.grad(loss_fn)(params, batch))[0], rtol=1e-13)
    assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-14)


def test_positional_rho_is_ignored_by_a_method_without_a_radius(tanh_model):
    params, batch, loss_fn = tanh_model
    loss, grads = flatmin.value_and_perturbed_grad(loss_fn, "sgd", 0.05)(params, batch)
    np.testing.assert_array_equal(ravel_pytree(grads)[0], ravel_pytree(jax.jit(jax.grad(loss_fn))(params, batch))[0])


def test_the_new_entry_points_compile_once_per_shape(tanh_model, hyperbola):
    """perturbed_gradient (with state, with targets), a field method on a problem, and first_flat_queries:
    a second call at a seen shape, even through a gradient built anew, compiles nothing."""
    from conftest import CompileEvents

    params, batch, loss_fn = tanh_model
    io = (lambda b: b[1], lambda b, t: (b[0], t))
    key = jax.random.PRNGKey(0)
    x0 = jnp.array([2.2, 0.4])

    def calls(sigma):
        anti = flatmin.perturbed_gradient(loss_fn, "anti_pgd", sigma=sigma)
        anti(params, anti.init(params), batch, key)
        flatmin.value_and_perturbed_grad(loss_fn, "label_noise_sgd", sigma=sigma, targets=io)(params, batch, key)
        flatmin.value_and_perturbed_grad(loss_fn, "sam_per_sample", sigma)(params, batch)
        flatmin.run(hyperbola, "rs", x0, {"eta": 0.05, "eta_prime": 0.05, "rho": sigma, "eps0": 0.05}, 300, 2,
                    record_every=50, eps=0.1, flat_resolution=7).first_flat_queries

    with CompileEvents() as first:
        calls(0.1)
    assert first.events  # the counter sees the first call's compilations
    with CompileEvents() as seen:
        calls(0.2)
    assert seen.events == [], seen.events
