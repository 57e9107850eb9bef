"""Flatness measures: trbar, Hutchinson, the limit map Phi, dPhi, the tangent projector, is_flat.

Reference values are computed independently of the library: finite differences, closed forms
(conftest.py), or the library's other route (closed-form Phi vs numerical gradient flow).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    VALLEY_K,
    VALLEY_M,
    hyperbola_limit,
    hyperbola_loss,
    hyperbola_tangent,
    hyperbola_trbar,
    valley_grad_sum_a,
)

import flatmin
from flatmin.flatness import hessian

# Points off X* in the positive quadrant (x y > 0), where the closed-form Phi applies.
OFF_POINTS = np.array([[2.1, 0.4], [0.3, 0.2], [1.5, 1.5], [3.0, 0.5], [0.8, 1.6], [1.2, 0.95]])
ON_POINTS = np.array([[t, 1.0 / t] for t in (0.4, 0.5, 1.0, 2.0, 3.0, -1.5)])  # same shape as OFF_POINTS


# ---------------------------------------------------------------------------- trace
def _generic_loss(x):
    """Non-polynomial, dense Hessian, d = 4."""
    c = jnp.array([0.3, -0.2, 0.5, 0.1])
    return (
        jnp.sum(jnp.sin(x) * jnp.roll(x, -1))
        + jnp.exp(c @ x)
        + 0.25 * (x @ x) ** 2
        + jnp.log1p(x[0] ** 2 * x[2] ** 2)
    )


@pytest.fixture(scope="module")
def generic():
    return flatmin.Problem("generic", 4, _generic_loss)


def _fd_hessian(f, x, h):
    """Central second differences of function values only."""
    d = x.size
    eye = np.eye(d) * h
    hess = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            hess[i, j] = (
                f(x + eye[i] + eye[j])
                - f(x + eye[i] - eye[j])
                - f(x - eye[i] + eye[j])
                + f(x - eye[i] - eye[j])
            ) / (4 * h * h)
    return hess


def test_hessian_and_trbar_match_finite_differences(generic):
    f = jax.jit(_generic_loss)
    rng = np.random.default_rng(0)
    for x in rng.normal(size=(3, 4)):
        # truncation O(h^2 f'''') ~ 1e-7, round-off O(1e-16 f / h^2) ~ 1e-10
        fd = _fd_hessian(lambda y: float(f(y)), x, h=1e-3)
        np.testing.assert_allclose(hessian(generic, jnp.asarray(x)), fd, atol=1e-5)
        assert float(flatmin.normalized_trace(generic, x)) == pytest.approx(np.trace(fd) / 4, abs=1e-5)


def test_grad_trbar_matches_finite_differences(generic):
    """Third derivatives: autodiff grad of trbar vs central differences of trbar itself."""
    trbar = jax.jit(lambda y: flatmin.normalized_trace(generic, y))
    x = np.array([0.3, -0.7, 1.1, 0.2])
    h = 1e-4
    fd = np.array([(trbar(x + h * e) - trbar(x - h * e)) / (2 * h) for e in np.eye(4)])
    np.testing.assert_allclose(jax.grad(trbar)(jnp.asarray(x)), fd, atol=1e-6)


def test_trbar_hyperbola_closed_form(hyperbola):
    for x in np.r_[OFF_POINTS, ON_POINTS]:
        assert float(flatmin.normalized_trace(hyperbola, x)) == pytest.approx(
            float(hyperbola_trbar(x)), rel=1e-13
        )
    assert float(flatmin.normalized_trace(hyperbola, [2.0, 0.5])) == pytest.approx(4.25, rel=1e-14)


# ---------------------------------------------------------------------------- Hutchinson
HUTCH_D = 6


def _hutch_loss(x):
    rng = np.random.default_rng(1)
    m = rng.normal(size=(HUTCH_D, HUTCH_D))
    a = jnp.asarray(m @ m.T / HUTCH_D + np.eye(HUTCH_D))
    return 0.5 * x @ a @ x + 0.1 * jnp.sum(x**4) + 0.2 * x[0] * x[1] * x[2]


@pytest.fixture(scope="module")
def hutch():
    problem = flatmin.Problem("hutch", HUTCH_D, _hutch_loss)
    x = jnp.linspace(-1.0, 1.0, HUTCH_D)
    h = np.asarray(hessian(problem, x))
    exact = np.trace(h) / HUTCH_D
    # Rademacher z: Var(z^T H z) = 2 (||H||_F^2 - sum_i H_ii^2)
    probe_sd = math.sqrt(2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2))) / HUTCH_D
    assert probe_sd > 0.1 * exact  # the test is not vacuous: a dense Hessian
    return problem, x, exact, probe_sd


def test_hutchinson_mean_within_5_se(hutch):
    problem, x, exact, probe_sd = hutch
    mean, se = flatmin.hutchinson_trace(problem, x, jax.random.PRNGKey(0), num_probes=400)
    assert abs(float(mean) - exact) <= 5 * float(se)
    # and SE is the right order (sample sd of 400 probes: a few percent off at most)
    assert float(se) == pytest.approx(probe_sd / math.sqrt(400), rel=0.25)


def test_hutchinson_standard_error_is_calibrated(hutch):
    """Over K independent estimates, z = (mean - exact) / se has sd ~ 1 and mean se ~ exact se."""
    problem, x, exact, probe_sd = hutch
    num_probes, reps = 50, 300
    keys = jax.random.split(jax.random.PRNGKey(1), reps)
    means, ses = jax.jit(jax.vmap(lambda k: flatmin.hutchinson_trace(problem, x, k, num_probes)))(keys)
    means, ses = np.asarray(means), np.asarray(ses)
    z = (means - exact) / ses
    # mean estimate unbiased: 5 SE of the mean over reps
    assert abs(means.mean() - exact) <= 5 * means.std(ddof=1) / math.sqrt(reps)
    # sd of z ~ sqrt(49/47) (Student t); sd of a sample sd over `reps` values ~ 1/sqrt(2 reps) (x1.5 for
    # the heavier tails of quadratic forms); 5 of those
    tol = 5 * 1.5 / math.sqrt(2 * reps)
    assert abs(z.std(ddof=1) - math.sqrt(49 / 47)) <= tol
    # the reported se agrees with the exact one: 5 SE of the average se, plus the O(1/m) bias of a sd
    exact_se = probe_sd / math.sqrt(num_probes)
    assert abs(ses.mean() - exact_se) <= 5 * ses.std(ddof=1) / math.sqrt(reps) + 0.05 * exact_se


def test_hutchinson_bad_probes(hutch):
    problem, x, _, _ = hutch
    with pytest.raises(ValueError, match="num_probes.*1"):
        flatmin.hutchinson_trace(problem, x, jax.random.PRNGKey(0), num_probes=1)


# ---------------------------------------------------------------------------- limit map
@pytest.fixture(scope="module")
def numeric_limit(hyperbola_flow):
    return jax.jit(jax.vmap(lambda x: flatmin.limit_map(hyperbola_flow, x)))


def test_limit_map_closed_form_matches_numerical_flow(hyperbola, numeric_limit):
    closed = np.asarray(jax.vmap(lambda x: flatmin.limit_map(hyperbola, x))(OFF_POINTS))
    numeric = np.asarray(numeric_limit(OFF_POINTS))
    np.testing.assert_allclose(numeric, closed, atol=1e-7, rtol=0)
    np.testing.assert_allclose(closed[:, 0] * closed[:, 1], 1.0, atol=1e-13)  # on X*
    # the flow moves: the test is not comparing points with themselves
    assert np.min(np.linalg.norm(closed - OFF_POINTS, axis=1)) > 1e-2


def test_limit_map_single_point_and_tolerances(hyperbola_flow):
    x = OFF_POINTS[0]
    coarse = flatmin.limit_map(hyperbola_flow, x, gtol=1e-4, rtol=1e-6, atol=1e-8)
    assert np.linalg.norm(np.asarray(coarse) - np.asarray(hyperbola_limit(jnp.asarray(x)))) < 1e-3
    with pytest.raises(TypeError, match="tolerance.*'tol'"):
        flatmin.limit_map(hyperbola_flow, x, tol=1e-3)


def test_limit_map_fixes_the_minima(hyperbola, numeric_limit, valley):
    np.testing.assert_allclose(numeric_limit(ON_POINTS), ON_POINTS, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(hyperbola.limit_map)(ON_POINTS), ON_POINTS, atol=1e-14)
    x_star = np.array([0.3, -0.2, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(flatmin.limit_map(valley, x_star), x_star, atol=1e-12)


def test_valley_limit_moves_u_by_order_w_squared(valley):
    """docs/paper_notes.md §7: Phi(u, w) = (u + O(|w|^2), 0)."""
    u = np.array([0.3, -0.2])
    scales = np.array([1e-1, 1e-2])
    points = np.array([np.r_[u, s * np.array([1.0, -0.5, 0.8])] for s in scales])
    phi = np.asarray(jax.jit(jax.vmap(lambda x: flatmin.limit_map(valley, x)))(points))
    assert np.all(np.linalg.norm(phi[:, VALLEY_M:], axis=1) < 1e-8)
    moved = np.linalg.norm(phi[:, :VALLEY_M] - u, axis=1)
    assert np.all(1e-3 * scales**2 < moved) and np.all(moved < 10 * scales**2)
    assert moved[0] / moved[1] == pytest.approx(100, rel=0.1)  # quadratic in |w|


def test_limit_map_not_converging_raises():
    linear = flatmin.Problem("linear", 2, lambda x: x[0] + 0.5 * x[1])  # no minimum: the flow never stops
    with pytest.raises(ValueError, match="did not converge"):
        flatmin.limit_map(linear, [0.0, 0.0], max_steps=50)


def test_limit_map_refuses_a_saddle():
    """On f = (x^2 - 1)^2 + y^2 the flow from (0, 0.3) stops at the critical point (0, 0), a local
    maximum in x with f = 1, not a minimum: NaN inside a transformation, else an error."""
    bump = flatmin.Problem("bump", 2, lambda z: (z[0] ** 2 - 1.0) ** 2 + z[1] ** 2)
    with pytest.raises(ValueError, match=r"not a minimum: f - min_loss = 1 > loss_tol"):
        flatmin.limit_map(bump, [0.0, 0.3])
    assert np.all(np.isnan(jax.jit(lambda x: flatmin.limit_map(bump, x))(jnp.array([0.0, 0.3]))))
    assert np.isnan(flatmin.flatness(bump, jnp.array([0.0, 0.3]))["trbar_limit"])
    np.testing.assert_allclose(flatmin.limit_map(bump, [0.5, 0.3]), [1.0, 0.0], atol=1e-9)  # a minimum
    np.testing.assert_allclose(flatmin.limit_map(bump, [0.0, 0.3], loss_tol=2.0), [0.0, 0.0], atol=1e-9)
    # a wrong min_loss reads as "not a minimum" too, and the message says so
    shifted = flatmin.Problem("shifted", 2, lambda z: (z[0] * z[1] - 1.0) ** 2 + 1.0)
    with pytest.raises(ValueError, match=r"min_loss = 0.0 is wrong"):
        flatmin.limit_map(shifted, [2.0, 0.5])
    fixed = flatmin.Problem("shifted", 2, shifted.loss, min_loss=1.0)
    assert float(fixed.loss(flatmin.limit_map(fixed, [2.0, 0.5]))) == pytest.approx(1.0)


def test_limit_map_bad_shape(hyperbola):
    with pytest.raises(ValueError, match=r"shape \(3,\).*dim 2"):
        flatmin.limit_map(hyperbola, [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------- dPhi
def test_dphi_kills_grad_f_closed_form(hyperbola):
    jac = jax.vmap(jax.jacobian(hyperbola_limit))(OFF_POINTS)
    grads = jax.vmap(jax.grad(hyperbola_loss))(OFF_POINTS)
    killed = np.linalg.norm(np.einsum("nij,nj->ni", jac, grads), axis=1)
    scale = np.linalg.norm(jac, axis=(1, 2)) * np.linalg.norm(grads, axis=1)
    assert np.all(scale > 1e-3)
    assert np.all(killed <= 1e-12 * scale)


def test_dphi_of_numerical_flow_kills_grad_f(numeric_limit):
    """Central differences of the numerical Phi: zero along grad f, the closed form's dPhi across it."""
    pts = OFF_POINTS[[0, 3, 5]]
    grads = np.asarray(jax.vmap(jax.grad(hyperbola_loss))(pts))
    along = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    across = along[:, ::-1] * np.array([1.0, -1.0])
    h = 1e-4  # truncation O(h^2) ~ 1e-8, flow error (~1e-10) / h ~ 1e-6
    for direction, expect_zero in ((along, True), (across, False)):
        phi = np.asarray(numeric_limit(np.r_[pts + h * direction, pts - h * direction]))
        derivative = (phi[:3] - phi[3:]) / (2 * h)
        closed = np.einsum("nij,nj->ni", jax.vmap(jax.jacobian(hyperbola_limit))(pts), direction)
        np.testing.assert_allclose(derivative, closed, atol=1e-5)
        if expect_zero:
            assert np.all(np.linalg.norm(derivative, axis=1) < 1e-5)
        else:
            assert np.all(np.linalg.norm(derivative, axis=1) > 0.5)


def test_dphi_on_minima_is_tangent_projector(hyperbola):
    for x_star in ON_POINTS:
        jac = np.asarray(jax.jacobian(hyperbola_limit)(jnp.asarray(x_star)))
        np.testing.assert_allclose(jac, flatmin.tangent_projector(hyperbola, x_star), atol=1e-10)


# ---------------------------------------------------------------------------- tangent projector
def test_tangent_projector_is_projector_on_hessian_null_space(hyperbola, hyperbola_flow):
    for x_star in ON_POINTS:
        h = np.asarray(hessian(hyperbola, x_star))
        p_rank = np.asarray(flatmin.tangent_projector(hyperbola, x_star))  # problem.hessian_rank = 1
        p_gap = np.asarray(flatmin.tangent_projector(hyperbola_flow, x_star))  # spectral-gap rule
        np.testing.assert_allclose(p_rank, p_gap, atol=1e-12)
        np.testing.assert_allclose(p_rank, p_rank.T, atol=1e-14)
        np.testing.assert_allclose(p_rank @ p_rank, p_rank, atol=1e-12)
        np.testing.assert_allclose(h @ p_rank, 0.0, atol=1e-12 * np.abs(h).max())
        assert np.trace(p_rank) == pytest.approx(1.0, abs=1e-12)
        t = np.asarray(hyperbola_tangent(jnp.asarray(x_star)))
        np.testing.assert_allclose(p_rank, np.outer(t, t), atol=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_spectral_gap_rule_is_relative(scale):
    """The rank rule compares eigenvalues with the largest one, so rescaling f changes nothing."""
    scaled = flatmin.Problem(f"hyperbola_x{scale:g}", 2, lambda x: scale * hyperbola_loss(x))
    for x_star in ON_POINTS[[0, 4]]:
        t = np.asarray(hyperbola_tangent(jnp.asarray(x_star)))
        np.testing.assert_allclose(flatmin.tangent_projector(scaled, x_star), np.outer(t, t), atol=1e-12)


def test_tangent_projector_valley_rank_rule_agrees(valley):
    x_star = np.array([0.3, -0.2, 0.0, 0.0, 0.0])
    expected = np.diag([1.0] * VALLEY_M + [0.0] * VALLEY_K)
    no_rank = dataclasses.replace(valley, hessian_rank=None)
    np.testing.assert_allclose(flatmin.tangent_projector(valley, x_star), expected, atol=1e-12)
    np.testing.assert_allclose(flatmin.tangent_projector(no_rank, x_star), expected, atol=1e-12)
    # explicit rank overrides
    np.testing.assert_allclose(flatmin.tangent_projector(valley, x_star, rank=0), np.eye(5), atol=1e-12)
    np.testing.assert_allclose(flatmin.tangent_projector(valley, x_star, rank=5), 0.0, atol=1e-12)


def test_tangent_gradient_closed_forms(hyperbola, valley):
    for x_star in ON_POINTS:
        t = np.asarray(hyperbola_tangent(jnp.asarray(x_star)))
        expected = t * (t @ (2 * x_star))  # grad trbar = (2x, 2y), projected on the tangent
        np.testing.assert_allclose(flatmin.tangent_gradient(hyperbola, x_star), expected, atol=1e-12)
    assert np.linalg.norm(flatmin.tangent_gradient(hyperbola, [1.0, 1.0])) < 1e-14  # flattest point
    u = np.array([0.3, -0.2])
    expected = np.r_[valley_grad_sum_a(u) / valley.dim, np.zeros(VALLEY_K)]
    np.testing.assert_allclose(flatmin.tangent_gradient(valley, np.r_[u, 0, 0, 0]), expected, atol=1e-12)


# ---------------------------------------------------------------------------- flatness, is_flat
def test_flatness_measures_closed_form(hyperbola, hyperbola_flow):
    phi = np.asarray(jax.vmap(hyperbola_limit)(OFF_POINTS))
    tangents = np.asarray(jax.vmap(hyperbola_tangent)(phi))
    expected = {
        "distance": np.linalg.norm(OFF_POINTS - phi, axis=1),
        "loss_gap": (OFF_POINTS[:, 0] * OFF_POINTS[:, 1] - 1) ** 2,
        "trbar_limit": np.sum(phi**2, axis=1),
        "tangent_grad_norm": np.abs(np.sum(tangents * 2 * phi, axis=1)),
    }
    for problem, tol in ((hyperbola, 1e-12), (hyperbola_flow, 1e-7)):
        measures = flatmin.flatness(problem, OFF_POINTS)
        assert set(measures) == set(expected)
        for name, value in expected.items():
            assert measures[name].shape == (len(OFF_POINTS),)
            np.testing.assert_allclose(measures[name], value, atol=tol, err_msg=f"{problem.name} {name}")


def test_flatness_batch_shapes(hyperbola):
    batch = np.broadcast_to(OFF_POINTS[:3], (2, 3, 2))
    measures = flatmin.flatness(hyperbola, batch)
    assert all(v.shape == (2, 3) for v in measures.values())
    single = flatmin.flatness(hyperbola, OFF_POINTS[0])
    assert all(v.shape == () for v in single.values())
    np.testing.assert_allclose(measures["trbar_limit"][1, 0], single["trbar_limit"], rtol=1e-14)


def test_flatness_nan_where_flow_does_not_converge():
    linear = flatmin.Problem("linear_nan", 1, lambda x: x[0])
    measures = flatmin.flatness(linear, [[0.0]])
    assert all(np.isnan(v).all() for v in measures.values())


def test_is_flat(hyperbola):
    near_flat = [1.001, 1.001]  # Phi = (1, 1): distance 1.41e-3, loss gap 4.0e-6, tangent grad 0
    assert bool(flatmin.is_flat(hyperbola, [1.0, 1.0], eps=1e-8))
    assert not bool(flatmin.is_flat(hyperbola, [2.0, 0.5], eps=1e-2))  # at X* but sharp: 3.6 > 0.1
    assert bool(flatmin.is_flat(hyperbola, [2.0, 0.5], eps=1e-2, eps_prime=4.0))
    assert bool(flatmin.is_flat(hyperbola, near_flat, eps=1e-2))
    assert not bool(flatmin.is_flat(hyperbola, near_flat, eps=1e-4))  # distance 1.4e-3 > 1e-4
    assert bool(flatmin.is_flat(hyperbola, near_flat, eps=1e-4, criterion="loss_gap"))  # 4e-6 <= 1e-4
    out = flatmin.is_flat(hyperbola, [[1.0, 1.0], [2.0, 0.5], near_flat], eps=1e-2)
    assert out.shape == (3,) and out.tolist() == [True, False, True]


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_is_flat_bad_eps(hyperbola, eps):
    with pytest.raises(ValueError, match=f"eps must be.*{eps}"):
        flatmin.is_flat(hyperbola, [1.0, 1.0], eps=eps)


@pytest.mark.parametrize("eps", [True, "0.1", np.array([0.1, 0.2])])
def test_is_flat_eps_must_be_one_real_number(hyperbola, eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        flatmin.is_flat(hyperbola, [1.0, 1.0], eps=eps)


@pytest.mark.parametrize("eps", [np.float32(0.01), np.float64(0.01), jnp.asarray(0.01), 1])
def test_is_flat_takes_numpy_and_jax_scalars(hyperbola, eps):
    assert bool(flatmin.is_flat(hyperbola, [1.001, 1.001], eps=eps)) == (float(eps) >= 1.5e-3)
    assert bool(flatmin.is_flat(hyperbola, [2.0, 0.5], eps=1e-2, eps_prime=np.float32(4.0)))


def test_is_flat_bad_eps_prime_and_criterion(hyperbola):
    with pytest.raises(ValueError, match="eps_prime.*-0.5"):
        flatmin.is_flat(hyperbola, [1.0, 1.0], eps=1e-2, eps_prime=-0.5)
    with pytest.raises(ValueError, match="criterion 'sharpness'"):
        flatmin.is_flat(hyperbola, [1.0, 1.0], eps=1e-2, criterion="sharpness")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        flatmin.is_flat(hyperbola, [1.0, 1.0, 1.0], eps=1e-2)


# ---------------------------------------------------------------------------- batches
@pytest.mark.parametrize("fixture", ["hyperbola", "hyperbola_flow"])
def test_pointwise_functions_take_batches_point_by_point(request, fixture):
    """A batch ``(..., d)`` gives, for every point, what that point alone gives (the loss is written for
    one point, so a batch must never reach it whole)."""
    problem = request.getfixturevalue(fixture)
    points = jnp.array([[[2.0, 0.5], [1.5, 0.7]], [[0.6, 1.8], [1.2, 0.9]], [[-2.0, -0.4], [3.0, 0.3]]])
    x_star = flatmin.limit_map(problem, points)
    assert x_star.shape == (3, 2, 2)
    for index in np.ndindex(3, 2):
        one = points[index]
        np.testing.assert_allclose(x_star[index], flatmin.limit_map(problem, one), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(flatmin.normalized_trace(problem, points)[index],
                                   flatmin.normalized_trace(problem, one), rtol=1e-12)
        np.testing.assert_allclose(hessian(problem, points)[index], hessian(problem, one), rtol=1e-12)
        np.testing.assert_allclose(flatmin.tangent_projector(problem, x_star)[index],
                                   flatmin.tangent_projector(problem, x_star[index]), atol=1e-12)
        np.testing.assert_allclose(flatmin.tangent_gradient(problem, x_star)[index],
                                   flatmin.tangent_gradient(problem, x_star[index]), atol=1e-12)
    np.testing.assert_allclose(flatmin.normalized_trace(problem, points), hyperbola_trbar(jnp.moveaxis(points, -1, 0)), rtol=1e-12)
    assert flatmin.tangent_projector(problem, x_star).shape == (3, 2, 2, 2)


@pytest.mark.parametrize("point", [[1.0, -1.0], [0.0, 0.0], [2.0, -2.0]])
def test_closed_form_limit_refuses_the_saddle_the_flow_reaches(point):
    """From (t, -t) the flow of (xy - 1)^2 runs into the saddle (0, 0): the closed form says so, and
    limit_map refuses it as it refuses the numerical flow's saddles."""
    problem = flatmin.make_problem("hyperbola", depth=2)
    np.testing.assert_allclose(problem.limit_map(jnp.array(point)), [0.0, 0.0], atol=0)
    with pytest.raises(ValueError, match="closed-form limit map of 'hyperbola'.*not a minimum: f - min_loss = 1"):
        flatmin.limit_map(problem, point)
    assert not bool(flatmin.is_flat(problem, jnp.array(point), 1e-2))
    assert np.isnan(flatmin.flatness(problem, jnp.array(point))["trbar_limit"])


def test_tangent_functions_check_the_rank(hyperbola):
    for rank in (3, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"rank must be an integer in \[0, d=2\] or None, got {rank!r}"):
            flatmin.tangent_projector(hyperbola, [1.0, 1.0], rank=rank)
        with pytest.raises(ValueError, match="rank must be an integer"):
            flatmin.tangent_gradient(hyperbola, [1.0, 1.0], rank=rank)


def test_limit_map_batch_error_names_the_failing_point():
    bump = flatmin.Problem("bump", 2, lambda z: (z[0] ** 2 - 1.0) ** 2 + z[1] ** 2)
    with pytest.raises(ValueError, match=r"from x=\[0\.  0\.3\] stopped at a critical point"):
        flatmin.limit_map(bump, [[0.5, 0.1], [0.0, 0.3], [2.0, 0.0]])


def test_hutchinson_takes_one_point(hyperbola):
    with pytest.raises(ValueError, match=r"one point of shape \(2,\), got \(2, 2\)"):
        flatmin.hutchinson_trace(hyperbola, jnp.ones((2, 2)), jax.random.PRNGKey(0))
