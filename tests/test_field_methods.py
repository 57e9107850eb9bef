"""The field's flat-minima methods, each against its formula: label-noise SGD, 1-SAM (SAM with a
perturbation per sample) and Anti-PGD, on a problem (flatmin.run) and on a pytree (the model API)."""

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


def test_the_field_methods_declare_their_needs_and_cost():
    assert flatmin.get_method("label_noise_sgd").needs == {"training_loss", "targets"}
    assert flatmin.get_method("sam_per_sample").cost == flatmin.Cost(gradients=2)
    assert flatmin.get_method("anti_pgd").stateful and flatmin.get_method("anti_pgd").cost == flatmin.Cost(1)


@pytest.mark.parametrize("name", [name for name in flatmin.list_problems()  # the shipped families
                                  if problem_factory(name).__module__.startswith("flatmin.problems.")])
def test_a_problems_predictions_and_targets_give_its_sample_losses(name):
    problem = flatmin.make_problem(name)
    if problem.predictions is None:
        pytest.skip(f"{name} gives no predictions")
    x = problem.start(jax.random.PRNGKey(0)) + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (problem.dim,))
    np.testing.assert_allclose(problem.square_loss_scale * (problem.predictions(x) - problem.targets) ** 2,
                               problem.sample_losses(x), rtol=1e-12, atol=1e-15)
