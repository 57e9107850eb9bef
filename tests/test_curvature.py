"""Tests of flatmin.hessian_trace, flatmin.hessian_top_eigenvalue and flatmin.model_flatness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flatmin


def _tiny_model():
    """A two-layer tanh network on 6 examples, parameters as a dict of two leaves (d = 3*4 + 4)."""
    params = {"w": jax.random.normal(jax.random.PRNGKey(0), (3, 4)) / 2, "v": jax.random.normal(jax.random.PRNGKey(1), (4,))}
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 3))
    y = jax.random.normal(jax.random.PRNGKey(3), (6,))

    def loss_fn(p, batch):
        inputs, targets = batch
        return 0.5 * jnp.mean((jnp.tanh(inputs @ p["w"]) @ p["v"] - targets) ** 2)

    return loss_fn, params, (x, y)


def _dense_hessian(loss_fn, params, batch):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda z: loss_fn(unravel(z), batch))(flat)


def test_trace_estimate_and_standard_error_against_the_exact_values():
    """Over 400 independent estimates of 50 probes: their mean is the exact trace within 5 standard
    errors, and N * se^2 estimates the Rademacher variance 2 (||H||_F^2 - sum H_ii^2)."""
    loss_fn, params, batch = _tiny_model()
    hess = _dense_hessian(loss_fn, params, batch)
    exact = float(jnp.trace(hess))
    variance = float(2 * (jnp.sum(hess**2) - jnp.sum(jnp.diag(hess) ** 2)))
    n, reps = 50, 400
    keys = jax.random.split(jax.random.PRNGKey(4), reps)
    means, ses = jax.jit(jax.vmap(lambda k: flatmin.hessian_trace(loss_fn, params, batch, k, n)))(keys)
    means, ses = np.asarray(means), np.asarray(ses)
    assert abs(means.mean() - exact) < 5 * np.sqrt(variance / (n * reps))
    per_run = n * ses**2
    assert abs(per_run.mean() - variance) < 5 * per_run.std(ddof=1) / np.sqrt(reps)
    # the probes do not depend on how they are batched
    a = flatmin.hessian_trace(loss_fn, params, batch, keys[0], 13, probe_batch_size=4)
    b = flatmin.hessian_trace(loss_fn, params, batch, keys[0], 13, probe_batch_size=13)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_trace_of_a_quadratic_and_of_the_problem_estimator():
    matrix = jnp.diag(jnp.arange(1.0, 6.0))
    mean, se = flatmin.hessian_trace(lambda p, _: 0.5 * p @ matrix @ p, jnp.ones(5), None, jax.random.PRNGKey(0), 7)
    assert float(mean) == pytest.approx(15.0, rel=1e-12) and float(se) == pytest.approx(0.0, abs=1e-12)
    problem = flatmin.make_problem("hyperbola")
    x = jnp.array([2.0, 0.5])
    trbar, _ = flatmin.hutchinson_trace(problem, x, jax.random.PRNGKey(1), 10)
    total, _ = flatmin.hessian_trace(lambda p, _: problem.loss(p), x, None, jax.random.PRNGKey(1), 10)
    np.testing.assert_allclose(trbar, total / 2, rtol=1e-14)


def test_top_eigenvalue_against_eigh():
    loss_fn, params, batch = _tiny_model()
    hess = _dense_hessian(loss_fn, params, batch)
    top = flatmin.hessian_top_eigenvalue(loss_fn, params, batch, jax.random.PRNGKey(5), num_matvecs=16)
    largest = float(jnp.linalg.eigvalsh(hess)[-1])
    assert float(top.value) == pytest.approx(largest, rel=1e-10)
    assert float(top.residual) < 1e-8
    vector, _ = ravel_pytree(top.vector)
    np.testing.assert_allclose(hess @ vector, largest * vector, atol=1e-8)
    # a shallow Krylov space: a lower bound whose residual bounds its distance to an eigenvalue
    rough = flatmin.hessian_top_eigenvalue(loss_fn, params, batch, jax.random.PRNGKey(5), num_matvecs=2)
    eigenvalues = np.asarray(jnp.linalg.eigvalsh(hess))
    assert float(rough.value) <= largest + 1e-12
    assert np.min(np.abs(eigenvalues - float(rough.value))) <= float(rough.residual) + 1e-12


def test_bad_counts_are_named():
    loss_fn, params, batch = _tiny_model()
    with pytest.raises(ValueError, match="num_probes must be an integer >= 2, got 1"):
        flatmin.hessian_trace(loss_fn, params, batch, jax.random.PRNGKey(0), 1)
    with pytest.raises(ValueError, match="num_matvecs must be an integer >= 1, got 0"):
        flatmin.hessian_top_eigenvalue(loss_fn, params, batch, jax.random.PRNGKey(0), num_matvecs=0)
    with pytest.raises(ValueError, match="no floating-point array"):
        flatmin.hessian_trace(loss_fn, {"n": 3}, batch, jax.random.PRNGKey(0), 4)


# ------------------------------------------------------------------ Setting 1: model_flatness


def _hyperbola_model(a: float, dtype=jnp.float64):
    """f = (u v - 1)^2 as a Setting-1 model: one prediction u v, target 1."""
    predict = lambda p, _: p["u"] * p["v"]  # noqa: E731
    loss = lambda p, b: jnp.mean((predict(p, b) - 1.0) ** 2)  # noqa: E731
    return loss, predict, {"u": jnp.array([a], dtype), "v": jnp.array([1 / a], dtype)}


@pytest.mark.parametrize("a", [2.0, 0.7, 1.0])
def test_hyperbola_tangent_gradient_closed_form(a):
    """On u v = 1, trbar = u^2 + v^2; along the tangent (a, -1/a) its derivative gives
    ||dPhi grad trbar|| = 2 |a^2 - a^-2| / sqrt(a^2 + a^-2), 0 at the flattest point a = 1."""
    loss, predict, params = _hyperbola_model(a)
    result = flatmin.model_flatness(loss, predict, params, None, jax.random.PRNGKey(0))
    expected = 2 * abs(a**2 - a**-2) / np.sqrt(a**2 + a**-2)
    # the damped projection leaves rel_tol of the normal component (|grad trbar| ~ 2 sqrt(a^2 + a^-2))
    leak = 1e-6 * 2 * np.sqrt(a**2 + a**-2) * 4
    assert float(result.tangent_grad_norm) == pytest.approx(expected, abs=leak)
    assert float(result.normalized_trace) == pytest.approx(a**2 + a**-2, rel=0.5)  # 100 probes on d = 2
    assert float(result.top_eigenvalue) == pytest.approx(2 * (a**2 + a**-2), rel=1e-10)
    assert float(result.loss) == pytest.approx(0.0, abs=1e-28)
    # the library's Problem-level flatness (Hessian null space) agrees
    problem_value = flatmin.flatness(flatmin.make_problem("hyperbola"), jnp.array([a, 1 / a]))["tangent_grad_norm"]
    assert float(result.tangent_grad_norm) == pytest.approx(float(problem_value), abs=leak)


def test_float32_parameters():
    loss, predict, params = _hyperbola_model(2.0, jnp.float32)
    result = flatmin.model_flatness(loss, predict, params, None, jax.random.PRNGKey(0))
    assert result.tangent_grad_norm.dtype == jnp.float32
    assert float(result.tangent_grad_norm) == pytest.approx(7.5 / np.sqrt(4.25), rel=1e-4)


def test_valley_tangent_gradient_closed_form():
    """The valley 1/2 sum_j a_j(u) w_j^2 as predictions p_j = sqrt(a_j(u)) w_j with targets 0: at
    w = 0 the minima's tangent space is the u coordinates and dPhi grad trbar = (grad_u sum_j a_j / d, 0)."""
    scales = jnp.array([1.0, 2.0, 3.0])

    def a(u):
        return 1.0 + scales * jnp.sum(u**2) + jnp.sin(u[0]) * scales**0

    predict = lambda p, _: jnp.sqrt(a(p["u"])) * p["w"]  # noqa: E731
    loss = lambda p, b: 0.5 * jnp.sum(predict(p, b) ** 2)  # noqa: E731
    params = {"u": jnp.array([0.4, -0.3]), "w": jnp.zeros(3)}
    result = flatmin.model_flatness(loss, predict, params, None, jax.random.PRNGKey(1))
    d = 5
    expected = jnp.linalg.norm(jax.grad(lambda u: jnp.sum(a(u)))(params["u"])) / d
    assert float(result.tangent_grad_norm) == pytest.approx(float(expected), rel=1e-9)
    # the unbiased estimator with probes agrees within its stated error
    estimated = flatmin.model_flatness(loss, predict, params, None, jax.random.PRNGKey(2), gradient_probes=400)
    assert abs(float(estimated.tangent_grad_norm) - float(expected)) < 5 * float(estimated.tangent_grad_norm_se) + 1e-12
    assert float(estimated.tangent_grad_norm_se) > 0


def test_negative_control_every_minimum_equally_flat():
    """Fully observed symmetric factorization: tr Hess is constant on U U^T = M, so the tangent
    gradient vanishes (up to the damping's leak) although grad trbar itself does not."""
    u_star = jax.random.normal(jax.random.PRNGKey(3), (4, 2))
    target = u_star @ u_star.T
    rotation = jnp.array([[jnp.cos(0.7), -jnp.sin(0.7)], [jnp.sin(0.7), jnp.cos(0.7)]])
    predict = lambda p, _: p @ p.T  # noqa: E731
    loss = lambda p, b: 0.25 * jnp.sum((predict(p, b) - target) ** 2)  # noqa: E731
    params = u_star @ rotation
    result = flatmin.model_flatness(loss, predict, params, None, jax.random.PRNGKey(4))
    grad_norm = jnp.linalg.norm(jax.grad(lambda z: jnp.trace(jax.hessian(lambda y: loss(y.reshape(4, 2), None))(z)) / 8)(
        params.reshape(-1)))
    assert float(grad_norm) > 0.1
    assert float(result.tangent_grad_norm) < 1e-5 * float(grad_norm)


def test_more_outputs_than_parameters_projects_the_same():
    """With m > d the projection goes through J^T J; against the m <= d route on the same Jacobian
    (a tall J stacked from copies of a wide one has the same null space)."""
    from flatmin.model_flatness import tangent_projection

    wide = jax.random.normal(jax.random.PRNGKey(6), (3, 5))
    tall = jnp.concatenate([wide, wide, wide])  # (9, 5): rows repeated, null space unchanged
    vectors = jax.random.normal(jax.random.PRNGKey(7), (4, 5))
    a = tangent_projection(wide, vectors, jax.random.PRNGKey(8))
    b = tangent_projection(tall, vectors, jax.random.PRNGKey(8))
    # the same damped projection (push-through identity), up to the rounding of a Cholesky with
    # condition number 1/rel_tol
    np.testing.assert_allclose(a, b, atol=1e-8)
    residual = jnp.linalg.norm(wide @ a.T) / jnp.linalg.norm(wide @ vectors.T)
    assert float(residual) < 1e-5
