"""The field's flat-minima methods, each against its formula: label-noise SGD, 1-SAM (SAM with a
perturbation per sample), Anti-PGD and perturbed GD, on a problem (flatmin.run) and on a pytree (the model
API)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flatmin
from flatmin.problem import problem_factory


@pytest.fixture(scope="module")
def net():
    return flatmin.make_problem("diagonal_net", n=10, p=30, sparsity=3, seed=0)


def _one_step(problem, method, params, seed=3):
    x0 = problem.start(jax.random.PRNGKey(0))
    x1 = flatmin.run(problem, method, x0, params, 1, seeds=[seed], record_every=1, measure=False).final[0]
    return np.asarray(x0), x1, jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def test_label_noise_sgd_is_sgd_on_perturbed_targets(net):
    eta, sigma, b = 0.01, 0.3, 4
    x0, x1, key = _one_step(net, "label_noise_sgd", {"eta": eta, "sigma": sigma, "batch_size": b})
    key_batch, key_noise = jax.random.split(key)
    idx = jax.random.choice(key_batch, net.num_samples, (b,), replace=False)
    targets = jnp.asarray(net.targets)[idx] + sigma * jax.random.normal(key_noise, (b,))
    loss = lambda x: jnp.mean(0.5 * (net.predictions(x)[idx] - targets) ** 2)  # noqa: E731
    np.testing.assert_allclose(x1, x0 - eta * np.asarray(jax.grad(loss)(x0)), rtol=1e-12)
    # at sigma = 0 it is SGD, and its mean over the noise is SGD's gradient (the noise is centred)
    sgd = _one_step(net, "sgd", {"eta": eta, "batch_size": b})[1]
    np.testing.assert_allclose(_one_step(net, "label_noise_sgd", {"eta": eta, "sigma": 0.0, "batch_size": b})[1],
                               sgd, rtol=1e-13)


def test_label_noise_sgd_with_sign_noise_and_on_a_pytree(tanh_model):
    params, batch, loss_fn = tanh_model
    io = (lambda b: b[1], lambda b, t: (b[0], t))
    key = jax.random.PRNGKey(7)
    _, grads = flatmin.value_and_perturbed_grad(loss_fn, "label_noise_sgd", sigma=0.5, noise="sign",
                                                targets=io)(params, batch, key)
    noisy = batch[1] + 0.5 * jax.random.rademacher(key, batch[1].shape, batch[1].dtype)
    expected = jax.grad(loss_fn)(params, (batch[0], noisy))
    np.testing.assert_allclose(ravel_pytree(grads)[0], ravel_pytree(expected)[0], rtol=1e-12)
    with pytest.raises(ValueError, match="perturbs the targets: pass targets=\\(get, put\\)"):
        flatmin.value_and_perturbed_grad(loss_fn, "label_noise_sgd", sigma=0.5)
    with pytest.raises(ValueError, match="needs a problem with predictions and targets.*'factorization' has none"):
        flatmin.run(flatmin.make_problem("factorization"), "label_noise_sgd", None, {"eta": 0.1, "sigma": 0.1}, 1)


def test_sam_per_sample_averages_each_samples_sam_gradient(net, tanh_model):
    eta, rho, b = 0.01, 0.05, 3
    x0, x1, key = _one_step(net, "sam_per_sample", {"eta": eta, "rho": rho, "batch_size": b})
    idx = jax.random.choice(jax.random.split(key)[0], net.num_samples, (b,), replace=False)

    def sample_sam(i):
        f = lambda x: net.losses_of(x, idx[i][None])[0]  # noqa: E731
        g = jax.grad(f)(x0)
        return jax.grad(f)(x0 + rho * g / jnp.linalg.norm(g))

    expected = np.mean([np.asarray(sample_sam(i)) for i in range(b)], axis=0)
    np.testing.assert_allclose(x1, x0 - eta * expected, rtol=1e-11)
    # at batch size 1 it is SAM at batch size 1
    one = {"eta": eta, "rho": rho, "batch_size": 1}
    np.testing.assert_allclose(_one_step(net, "sam_per_sample", one)[1], _one_step(net, "sam", one)[1], rtol=1e-13)
    # on a pytree: the batch's leading axis is its samples
    params, batch, loss_fn = tanh_model
    grads = flatmin.value_and_perturbed_grad(loss_fn, "sam_per_sample", rho)(params, batch)[1]
    singles = [flatmin.value_and_perturbed_grad(loss_fn, "sam", rho)(params, jax.tree.map(lambda a: a[i:i + 1], batch))[1]
               for i in range(5)]
    np.testing.assert_allclose(ravel_pytree(grads)[0], np.mean([ravel_pytree(g)[0] for g in singles], axis=0),
                               rtol=1e-11)


def test_anti_pgd_perturbations_are_anticorrelated(hyperbola):
    """x_{t+1} = x_t - eta grad f(x_t) + xi_{t+1} - xi_t with xi_t = eta sigma z_t (xi_0 = 0)."""
    eta, sigma, steps, seed = 0.05, 0.2, 30, 4
    x = np.array([2.0, 0.5])
    result = flatmin.run(hyperbola, "anti_pgd", x, {"eta": eta, "sigma": sigma}, steps, seeds=[seed],
                         record_every=steps, measure=False)
    xi = np.zeros(2)
    grad = jax.jit(jax.grad(hyperbola.loss))
    for t in range(steps):
        xi_next = eta * sigma * np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (2,)))
        x = x - eta * np.asarray(grad(x)) + xi_next - xi
        xi = xi_next
    np.testing.assert_allclose(result.final[0], x, rtol=1e-12)


def test_perturbed_gd_adds_independent_gaussian_increments(hyperbola, tanh_model):
    """x_{t+1} = x_t - eta grad f(x_t) - eta sigma z_t, z_t ~ N(0, I) fresh each step (no state)."""
    eta, sigma, steps, seed = 0.05, 0.2, 30, 4
    x = np.array([2.0, 0.5])
    result = flatmin.run(hyperbola, "perturbed_gd", x, {"eta": eta, "sigma": sigma}, steps, seeds=[seed],
                         record_every=steps, measure=False)
    grad = jax.jit(jax.grad(hyperbola.loss))
    for t in range(steps):
        z = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), t), (2,)))
        x = x - eta * np.asarray(grad(x)) - eta * sigma * z
    np.testing.assert_allclose(result.final[0], x, rtol=1e-12)
    gd = flatmin.run(hyperbola, "gd", [2.0, 0.5], {"eta": eta}, steps, seeds=[seed], record_every=steps, measure=False)
    quiet = flatmin.run(hyperbola, "perturbed_gd", [2.0, 0.5], {"eta": eta, "sigma": 0.0}, steps, seeds=[seed],
                        record_every=steps, measure=False)
    np.testing.assert_allclose(quiet.final, gd.final, rtol=1e-13)  # sigma = 0 is GD
    # the model API: the gradient plus sigma z over the whole parameter vector, z drawn from the key
    params, batch, loss_fn = tanh_model
    key = jax.random.PRNGKey(11)
    loss, grads = flatmin.value_and_perturbed_grad(loss_fn, "perturbed_gd", sigma=0.5)(params, batch, key)
    flat, _ = ravel_pytree(jax.grad(loss_fn)(params, batch))
    z = jax.random.normal(key, flat.shape, flat.dtype)
    np.testing.assert_allclose(ravel_pytree(grads)[0], flat + 0.5 * z, rtol=1e-12)
    assert float(loss) == pytest.approx(float(loss_fn(params, batch)), rel=1e-14)
    stateful = flatmin.perturbed_gradient(loss_fn, "perturbed_gd", sigma=0.5)
    (_, again), state = stateful(params, stateful.init(params), batch, key)
    assert state == () and np.array_equal(ravel_pytree(again)[0], ravel_pytree(grads)[0])


def test_perturbed_gd_increments_are_uncorrelated_where_anti_pgds_are_anticorrelated(hyperbola):
    """On a flat loss (a quadratic at zero curvature: the gradient is 0) the displacement after T steps has
    variance T (eta sigma)^2 per coordinate for perturbed GD (a random walk) and 2 (eta sigma)^2 for Anti-PGD
    (xi_T - xi_0 with xi_0 = 0: (eta sigma)^2 only); 400 seeds, tolerances of 5 standard errors."""
    flat = flatmin.Problem("flat", 2, lambda x: 0.0 * jnp.sum(x))
    eta, sigma, steps, seeds = 0.1, 1.0, 50, 400
    walk = flatmin.run(flat, "perturbed_gd", [0.0, 0.0], {"eta": eta, "sigma": sigma}, steps, seeds,
                       record_every=steps, measure=False).final
    anti = flatmin.run(flat, "anti_pgd", [0.0, 0.0], {"eta": eta, "sigma": sigma}, steps, seeds,
                       record_every=steps, measure=False).final
    for values, variance in ((walk, steps * (eta * sigma) ** 2), (anti, (eta * sigma) ** 2)):
        estimate = np.mean(values**2)  # 800 coordinates, each N(0, variance): SE = variance sqrt(2 / 800)
        assert abs(estimate - variance) < 5 * variance * np.sqrt(2 / values.size), (estimate, variance)


def test_the_field_methods_declare_their_needs_and_cost():
    assert flatmin.get_method("label_noise_sgd").needs == {"training_loss", "targets"}
    assert flatmin.get_method("sam_per_sample").cost == flatmin.Cost(gradients=2)
    assert flatmin.get_method("anti_pgd").stateful and flatmin.get_method("anti_pgd").cost == flatmin.Cost(1)
    perturbed = flatmin.get_method("perturbed_gd")
    assert not perturbed.stateful and perturbed.cost == flatmin.Cost(1)


@pytest.mark.parametrize("name", [name for name in flatmin.list_problems()  # the shipped families
                                  if problem_factory(name).__module__.startswith("flatmin.problems.")])
def test_a_problems_predictions_and_targets_give_its_sample_losses(name):
    problem = flatmin.make_problem(name)
    if problem.predictions is None:
        pytest.skip(f"{name} gives no predictions")
    x = problem.start(jax.random.PRNGKey(0)) + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (problem.dim,))
    np.testing.assert_allclose(problem.square_loss_scale * (problem.predictions(x) - problem.targets) ** 2,
                               problem.sample_losses(x), rtol=1e-12, atol=1e-15)
