"""Flattest points and the distance to them (docs/paper_notes.md §7): the diagonal net's flattest interpolator, the
weighted basis-pursuit LP, against an independent solver, and Problem.distance_to_flattest on every family
that defines it."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import flatmin
from flatmin.problems import diagonal_net as diagonal_net_module
from flatmin.problems.diagonal_net import diagonal_net_data
from test_problems import _diagonal_net_interpolators, problem, trbar

def test_diagonal_net_lp_is_flattest_interpolator():
    prob = problem("diagonal_net")
    data, p = diagonal_net_data(prob), prob.params["p"]
    X, y, c = data.X, data.y, data.weights
    np.testing.assert_allclose(X @ data.beta_flattest, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(X @ data.beta_start, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, np.sum(X**2, axis=0) / X.shape[0], rtol=1e-14)
    wl1 = lambda b: np.sum(c * np.abs(b))
    # an independent LP, min c.t s.t. -t <= beta <= t, X beta = y, reaches the same weighted l1
    eye, n = np.eye(p), X.shape[0]
    lp = scipy.optimize.linprog(
        np.concatenate([np.zeros(p), c]),
        A_ub=np.block([[eye, -eye], [-eye, -eye]]),
        b_ub=np.zeros(2 * p),
        A_eq=np.hstack([X, np.zeros((n, p))]),
        b_eq=y,
        bounds=[(None, None)] * p + [(0, None)] * p,
        method="highs-ipm",
    )
    np.testing.assert_allclose(wl1(data.beta_flattest), lp.fun, rtol=1e-7)
    assert wl1(data.beta_flattest) < wl1(data.beta_start) - 1e-3
    assert wl1(data.beta_flattest) <= wl1(data.beta_star) + 1e-10
    # random interpolators, built as the start (offsets >= 0), are all sharper
    for x in _diagonal_net_interpolators(data, 5, seed=1):
        assert float(trbar(prob, x)) > prob.flattest_trace
    assert prob.flattest_points.shape == (1, 2 * p)


def test_diagonal_net_distance_to_flattest_covers_every_sign_flip():
    import itertools

    prob = flatmin.make_problem("diagonal_net", n=4, p=8, sparsity=2, seed=3)
    flat = np.asarray(prob.flattest_points[0])
    support = np.flatnonzero(flat)
    flips = []
    for signs in itertools.product([1.0, -1.0], repeat=len(support)):
        point = flat.copy()
        point[support] *= signs
        flips.append(point)
        assert float(prob.distance_to_flattest(point)) == pytest.approx(0.0, abs=1e-12)
        assert float(prob.loss(jnp.asarray(point))) < 1e-20 and float(trbar(prob, point)) == pytest.approx(prob.flattest_trace)
    x = np.random.default_rng(0).normal(size=(5, 3, prob.dim))
    brute = np.linalg.norm(x[..., None, :] - np.array(flips), axis=-1).min(axis=-1)
    np.testing.assert_allclose(prob.distance_to_flattest(x), brute, rtol=1e-12)


def test_distance_to_flattest_defaults_to_the_listed_points_and_checks_shapes():
    hyperbola = flatmin.make_problem("hyperbola", depth=2)
    points = np.array([[1.0, 1.0], [-1.0, -1.0]])
    prob = flatmin.Problem("two_points", 2, hyperbola.loss, flattest_points=points)
    x = np.array([[2.0, 0.5], [-1.0, -1.0]])
    expected = np.linalg.norm(x[:, None] - points, axis=-1).min(axis=-1)
    np.testing.assert_allclose(prob.distance_to_flattest(x), expected, rtol=1e-12)
    assert prob.distance_to_flattest(x[0]).shape == ()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        prob.distance_to_flattest(np.zeros(3))
    bare = flatmin.Problem("bare", 2, lambda z: jnp.sum(z**2))
    with pytest.raises(ValueError, match="neither flattest_distance nor flattest_points"):
        bare.distance_to_flattest(np.zeros(2))


def _sign_flips(point, even: bool):
    """Every sign pattern of ``point`` (an even number of minus signs only, if ``even``)."""
    import itertools

    for signs in itertools.product([1.0, -1.0], repeat=len(point)):
        if not even or np.prod(signs) > 0:
            yield np.asarray(signs) * point


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_hyperbola_distance_to_flattest_covers_every_component(depth):
    prob = flatmin.make_problem("hyperbola", depth=depth)
    flattest = np.array(list(_sign_flips(np.ones(depth), even=True)))
    assert len(flattest) == 2 ** (depth - 1)
    for point in flattest:
        assert float(prob.distance_to_flattest(point)) == 0.0
        assert float(prob.loss(jnp.asarray(point))) == 0.0
    x = np.random.default_rng(depth).normal(scale=1.5, size=(50, depth))
    brute = np.linalg.norm(x[:, None] - flattest, axis=-1).min(axis=-1)
    np.testing.assert_allclose(prob.distance_to_flattest(x), brute, rtol=1e-12)


def test_factorization_distance_is_the_distance_to_the_orbit():
    """Every minimum U* Q (Q orthogonal, reflections included) is as flat, so its distance is 0; elsewhere
    the Procrustes formula is the minimum over Q, checked against a dense search over rotations."""
    prob = flatmin.make_problem("factorization", m=3, r=2, seed=1)
    U = np.asarray(prob.flattest_points[0]).reshape(3, 2)
    angles = np.linspace(0.0, 2 * np.pi, 20001)
    rotations = np.stack([np.stack([np.cos(angles), -np.sin(angles)], -1),
                          np.stack([np.sin(angles), np.cos(angles)], -1)], -2)
    orbit = np.concatenate([U @ rotations, U @ rotations @ np.diag([1.0, -1.0])]).reshape(len(angles) * 2, -1)
    for q in (rotations[3000], rotations[17000] @ np.diag([1.0, -1.0])):
        assert float(prob.distance_to_flattest((U @ q).reshape(-1))) == pytest.approx(0.0, abs=1e-7)
    x = np.random.default_rng(0).normal(scale=0.5, size=(5, 6))
    brute = np.linalg.norm(x[:, None] - orbit, axis=-1).min(axis=-1)
    np.testing.assert_allclose(prob.distance_to_flattest(x), brute, rtol=1e-6)


@pytest.mark.parametrize("asymmetry", [0.0, 0.25])
def test_valley_wells_distance_covers_both_wells_only_when_symmetric(asymmetry):
    prob = flatmin.make_problem("valley_wells", asymmetry=asymmetry, m=2, k=2)
    wells = [np.r_[u, 0.0, 0.0] for u in _sign_flips(np.ones(2), even=False)]
    flattest = [w for w in wells if float(trbar(prob, w)) <= prob.flattest_trace + 1e-12]
    assert len(flattest) == (4 if asymmetry == 0 else 1)
    x = np.random.default_rng(1).normal(size=(20, 4))
    brute = np.linalg.norm(x[:, None] - np.array(flattest), axis=-1).min(axis=-1)
    np.testing.assert_allclose(prob.distance_to_flattest(x), brute, rtol=1e-12)


def test_diagonal_net_flattest_interpolates_to_machine_precision():
    # at this size HiGHS leaves ~3e-10 residual; the polish on the support must remove it
    data = diagonal_net_module._data(
        n=100, p=400, sparsity=20, seed=2
    )  # no Problem: skip its Hessian
    np.testing.assert_allclose(data.X @ data.beta_flattest, data.y, rtol=0, atol=1e-12)
