"""Tests of the problem families (docs/paper_notes.md §7): losses, closed forms, flattest points, limit maps, params."""

import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flatmin
from flatmin.problems.diagonal_net import diagonal_net_data
from flatmin.problems.hyperbola import hyperbola_limit
from flatmin.problems.matrix_sensing import matrix_sensing_data

KEY = jax.random.PRNGKey(0)

# Small instances keep the suite fast; every family and every valley shape is covered.
CASES = {
    "hyperbola_2": ("hyperbola", {}),
    "hyperbola_4": ("hyperbola", {"depth": 4, "sharpness": 3.0}),
    "valley_bowl": ("valley_bowl", {"m": 2, "k": 3, "curvatures": [1.0, 2.0, 0.5]}),
    "valley_ramp": ("valley_ramp", {"eps": 1e-2, "m": 2, "k": 2}),
    "valley_wells": ("valley_wells", {"m": 2, "k": 2}),
    "valley_split": ("valley_split", {}),
    "diagonal_net": ("diagonal_net", {"n": 6, "p": 12, "sparsity": 2, "seed": 0}),
    "matrix_sensing": ("matrix_sensing", {"m": 5, "r": 3, "r_star": 1, "N": 8, "seed": 1}),
    "factorization": ("factorization", {"m": 4, "r": 2}),
}


@functools.cache
def problem(case, **override):
    name, params = CASES[case]
    return flatmin.make_problem(name, **{**params, **override})


@functools.cache  # keyed by the problem's identity
def _compiled(prob):
    fn = lambda x: jnp.trace(jax.hessian(prob.loss)(x)) / prob.dim
    return jax.jit(fn), jax.jit(jax.grad(fn))


def trbar(prob, x):
    """Autodiff normalized trace tr(Hess f(x)) / d (compiled once per problem)."""
    return _compiled(prob)[0](jnp.asarray(x))


def grad_trbar(prob, x):
    """Gradient of the normalized trace (compiled once per problem)."""
    return _compiled(prob)[1](jnp.asarray(x))


def tangent_part(prob, x_star, v):
    """Component of v in the null space of Hess f(x_star) (the tangent space of the minima)."""
    evals, evecs = np.linalg.eigh(np.asarray(jax.hessian(prob.loss)(x_star)))
    null = evecs[:, evals <= 1e-8 * evals.max()]
    return null @ (null.T @ np.asarray(v))


def test_registry_lists_every_family():
    names = set(flatmin.list_problems())
    assert {name for name, _ in CASES.values()} <= names


def test_params_record_defaults():
    prob = flatmin.make_problem("valley_ramp", eps=1e-4)
    assert prob.params["eps"] == 1e-4 and prob.params["slope_factor"] == 2.0


@pytest.mark.parametrize("case", CASES)
def test_loss_is_mean_of_sample_losses(case):
    prob = problem(case)
    xs = prob.start(KEY) + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (3, prob.dim))
    for x in xs:
        per_sample = prob.sample_losses(x)
        assert per_sample.shape == (prob.num_samples,)
        np.testing.assert_allclose(prob.loss(x), jnp.mean(per_sample), rtol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_central_differences(case):
    prob = problem(case)
    x = prob.start(KEY) + 0.3 * jax.random.normal(jax.random.PRNGKey(2), (prob.dim,))
    grad = jax.grad(prob.loss)(x)
    h = 1e-5
    for v in jax.random.normal(jax.random.PRNGKey(3), (3, prob.dim)):
        fd = (prob.loss(x + h * v) - prob.loss(x - h * v)) / (2 * h)
        np.testing.assert_allclose(fd, grad @ v, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_initial_point_is_sharp_and_near_minima(case):
    prob = problem(case)
    exact = problem(case, noise=0.0)
    x0 = prob.start(KEY)
    assert x0.shape == (prob.dim,) and bool(jnp.all(jnp.isfinite(x0)))
    np.testing.assert_array_equal(x0, prob.start(KEY))
    assert not np.allclose(x0, prob.start(jax.random.PRNGKey(7)))
    x_on = exact.start(KEY)  # same key: the same point of X*, without the jitter
    assert float(exact.loss(x_on)) < 1e-24
    assert 0.2e-3 < float(jnp.linalg.norm(x0 - x_on)) < 3e-3
    assert float(prob.loss(x0)) <= prob.smoothness * 1e-5
    # smoothness is the Hessian norm at the (unjittered) start; hessian_rank is the rank there
    evals = np.abs(np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(prob.loss))(x_on))))
    np.testing.assert_allclose(prob.smoothness, evals.max(), rtol=1e-8)
    assert prob.hessian_rank == np.sum(evals > 1e-8 * evals.max())


@pytest.mark.parametrize("case", [c for c in CASES if c != "matrix_sensing"])
def test_flattest_points_are_flat_minima(case):
    prob = problem(case)
    x0 = prob.start(KEY)
    for x_star in jnp.atleast_2d(prob.flattest_points):
        assert abs(float(prob.loss(x_star)) - prob.min_loss) < 1e-24
        np.testing.assert_allclose(trbar(prob, x_star), prob.flattest_trace, rtol=1e-10)
        grad_tr = grad_trbar(prob, x_star)
        assert np.linalg.norm(tangent_part(prob, x_star, grad_tr)) < 1e-7 * (
            1 + np.linalg.norm(grad_tr)
        )
    if case != "factorization":  # the negative control is equally flat everywhere
        assert prob.flattest_trace < float(trbar(prob, x0)) - 0.1


# ---- closed forms of the normalized trace on X* ------------------------------------------------


def _hyperbola_minima(depth, key, num=4):
    """Random points of {prod u = 1} with an even number of negative coordinates."""
    k1, k2 = jax.random.split(key)
    u = jnp.exp(jax.random.uniform(k1, (num, depth), minval=-1.0, maxval=1.0))
    u = u.at[:, -1].set(1.0 / jnp.prod(u[:, :-1], axis=1))
    signs = jnp.where(jax.random.bernoulli(k2, 0.5, (num, depth)), -1.0, 1.0)
    signs = signs.at[:, -1].set(jnp.prod(signs[:, :-1], axis=1))
    return u * signs


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_hyperbola_trace_formula(depth):
    prob = flatmin.make_problem("hyperbola", depth=depth)
    for u in _hyperbola_minima(depth, jax.random.PRNGKey(depth)):
        np.testing.assert_allclose(trbar(prob, u), 2 * jnp.sum(u**-2) / depth, rtol=1e-12)


def test_hyperbola_trace_by_finite_difference_hessian():
    prob = flatmin.make_problem("hyperbola", depth=3)
    u, h = _hyperbola_minima(3, jax.random.PRNGKey(9))[0], 1e-4
    eye = np.eye(3)
    second = [(prob.loss(u + h * e) - 2 * prob.loss(u) + prob.loss(u - h * e)) / h**2 for e in eye]
    np.testing.assert_allclose(sum(second) / 3, 2 * jnp.sum(u**-2) / 3, rtol=1e-6)


def test_valley_trace_formulas():
    u = jnp.array([0.7, -1.3])
    for case, shape in [
        ("valley_bowl", lambda p, u: 1 + 0.5 * jnp.sum(u**2)),
        (
            "valley_wells",
            lambda p, u: 1 + jnp.sum(u**4 / 4 + u**3 / 12 - u**2 / 2 - u / 4 + 1 / 4 + 1 / 6),
        ),
    ]:
        prob = problem(case)
        m, c = prob.params["m"], np.asarray(prob.params["curvatures"])
        x = jnp.concatenate([u, jnp.zeros(prob.dim - m)])
        np.testing.assert_allclose(trbar(prob, x), c.sum() * shape(prob, u) / prob.dim, rtol=1e-12)


def test_valley_wells_corners():
    prob = problem("valley_wells")  # asymmetry 1/4, depth 1, m = 2, k = 2: C = 2/4
    for u, count in [((1, 1), 0), ((1, -1), 1), ((-1, -1), 2)]:
        x = jnp.array([*u, 0.0, 0.0])
        np.testing.assert_allclose(trbar(prob, x), 0.5 * (1 + count / 3), rtol=1e-12)
        grad_u = grad_trbar(prob, x)[:2]
        np.testing.assert_allclose(grad_u, 0.0, atol=1e-10)  # every corner is a flat local minimum


def test_valley_ramp_slope_and_drop():
    eps, factor = 1e-4, 2.0
    prob = flatmin.make_problem("valley_ramp", eps=eps, m=2, noise=0.0)  # u = (u_1, u_2), k = 2
    x0 = prob.start(KEY)
    np.testing.assert_allclose(trbar(prob, x0) - prob.flattest_trace, 1.0, rtol=1e-10)  # the drop
    slope = lambda u1: grad_trbar(prob, jnp.array([u1, 0.0, 0.0, 0.0]))[0]
    # the normalized trace falls at ~ 2 sqrt(eps) all along the ramp, so the flatness test fails ...
    for u1 in (x0[0], x0[0] / 2, x0[0] / 10):
        assert 1.95 * math.sqrt(eps) < slope(u1) <= factor * math.sqrt(eps)
    # ... until |u_1| <= width / sqrt(factor^2 - 1), near the bottom u = 0
    np.testing.assert_allclose(slope(1 / math.sqrt(factor**2 - 1)), math.sqrt(eps), rtol=1e-10)


def _diagonal_net_interpolators(data, num, seed=0):
    """Random points (u, v) of X*: beta = beta_start + null-space noise, u_j, v_j >= sqrt(offset_j)."""
    X = data.X
    null = np.linalg.svd(X)[2][X.shape[0] :].T
    rng = np.random.default_rng(seed)
    for _ in range(num):
        beta = data.beta_start + null @ rng.standard_normal(null.shape[1])
        offset = rng.uniform(0.0, 0.5, size=beta.shape)
        yield jnp.concatenate(
            [np.sqrt(np.maximum(beta, 0) + offset), np.sqrt(np.maximum(-beta, 0) + offset)]
        )


def test_diagonal_net_trace_formula():
    prob = problem("diagonal_net")
    data, p = diagonal_net_data(prob), prob.params["p"]
    for x in _diagonal_net_interpolators(data, 3):
        assert float(prob.loss(x)) < 1e-24
        expected = 4 * np.sum(data.weights * (x[:p] ** 2 + x[p:] ** 2)) / (2 * p)
        np.testing.assert_allclose(trbar(prob, x), expected, rtol=1e-10)


def test_matrix_sensing_trace_formula():
    prob = problem("matrix_sensing")
    data, m, r = matrix_sensing_data(prob), prob.params["m"], prob.params["r"]
    S = np.einsum("kij,kjl->il", data.A, data.A) / len(data.y)
    for x in (data.x_sharp, data.x_ground_truth):
        U = x.reshape(m, r)
        assert float(prob.loss(x)) < 1e-26
        np.testing.assert_allclose(trbar(prob, x), 4 * np.trace(U.T @ S @ U) / (m * r), rtol=1e-10)
    # the ground truth (approximately flattest under RIP) is flatter than the start
    assert trbar(prob, data.x_ground_truth) < trbar(prob, data.x_sharp)


@pytest.mark.parametrize("r", [1, 3])
def test_factorization_trace_is_constant(r):
    prob = flatmin.make_problem("factorization", m=5, r=r, noise=0.0)
    U_star = np.asarray(prob.flattest_points[0]).reshape(5, r)
    expected = 6 * np.trace(U_star @ U_star.T) / (5 * r)  # (m + 1) tr M / d
    np.testing.assert_allclose(prob.flattest_trace, expected, rtol=1e-12)
    for seed in range(3):
        np.testing.assert_allclose(
            trbar(prob, prob.start(jax.random.PRNGKey(seed))), expected, rtol=1e-10
        )


# ---- hyperbola limit map ------------------------------------------------------------------------


def test_hyperbola_limit_fixes_minima():
    for depth in (2, 3, 5):
        u = _hyperbola_minima(depth, jax.random.PRNGKey(depth))
        np.testing.assert_allclose(jax.vmap(hyperbola_limit)(u), u, rtol=1e-13)


HARD_POINTS = [
    [1.0, -2.0, 0.3],  # negative product: the smallest coordinate flips sign
    [0.0, 1.5, 2.0],  # one zero: it leaves zero with the sign of the product of the others
    [0.0, -1.5, 2.0],
    [30.0, 40.0, 1e-3],  # tiny root t
    [0.1, 0.2, 0.05],
    [-3.0, -0.5, 0.7],
]


@pytest.mark.parametrize("depth", [3, 10])
def test_hyperbola_limit_lands_on_minima_and_conserves(depth):
    k1, k2 = jax.random.split(jax.random.PRNGKey(depth))
    spread = jnp.exp(
        jax.random.uniform(k1, (500, depth), minval=-6.0, maxval=6.0)
    )  # |u_i| in e^[-6, 6]
    u = spread * jnp.where(jax.random.bernoulli(k2, 0.5, (500, depth)), -1.0, 1.0)
    if depth == 3:
        u = jnp.concatenate([jnp.array(HARD_POINTS), u])
    phi = jax.jit(jax.vmap(hyperbola_limit))(u)
    np.testing.assert_allclose(jnp.prod(phi, axis=1), 1.0, rtol=0, atol=1e-12)
    gaps = lambda z: z[:, :, None] ** 2 - z[:, None, :] ** 2
    scale = jnp.max(u**2, axis=1)[:, None, None]
    assert bool(jnp.all(jnp.abs(gaps(phi) - gaps(u)) <= 1e-13 * (1 + scale)))


def test_hyperbola_limit_at_saddle_is_identity():
    u = jnp.array([0.0, 0.0, 3.0])
    np.testing.assert_array_equal(hyperbola_limit(u), u)


def test_hyperbola_limit_jacobian_is_tangent_projector():
    u = _hyperbola_minima(3, jax.random.PRNGKey(4))[0]
    normal = 1.0 / u  # gradient of prod u on X*
    projector = jnp.eye(3) - jnp.outer(normal, normal) / (normal @ normal)
    np.testing.assert_allclose(jax.jacfwd(hyperbola_limit)(u), projector, rtol=0, atol=1e-10)
    np.testing.assert_allclose(jax.jacrev(hyperbola_limit)(u), projector, rtol=0, atol=1e-10)


def test_hyperbola_limit_matches_gradient_flow():
    prob = flatmin.make_problem("hyperbola", depth=3)
    grad = jax.grad(prob.loss)
    term = diffrax.ODETerm(lambda t, u, args: -grad(u))

    @jax.jit
    @jax.vmap
    def flow(u0):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            50.0,
            1e-3,
            u0,
            max_steps=100_000,
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        )
        return sol.ys[-1]

    u0 = jnp.array([[1.0, -2.0, 0.3], [0.5, 1.5, 2.0], [0.4, 0.6, -0.9], [1.3, 0.7, 0.2]])
    np.testing.assert_allclose(flow(u0), jax.vmap(prob.limit_map)(u0), rtol=0, atol=1e-7)


# ---- parameter validation ----------------------------------------------------------------------


BAD_PARAMS = [
    ("hyperbola", {"depth": 1}, "depth"),
    ("hyperbola", {"depth": 2.5}, "depth"),
    ("hyperbola", {"sharpness": 0.0}, "sharpness"),
    ("hyperbola", {"noise": -1e-3}, "noise"),
    ("valley_bowl", {"m": 0}, "m"),
    ("valley_bowl", {"k": 2, "curvatures": [1.0]}, "curvatures"),
    ("valley_bowl", {"curvatures": [1.0, -1.0]}, "curvatures"),
    ("valley_ramp", {"eps": 0.0}, "eps"),
    ("valley_ramp", {"slope_factor": -2.0}, "slope_factor"),
    ("valley_ramp", {"drop": float("nan")}, "drop"),
    ("valley_wells", {"asymmetry": 1.0}, "asymmetry"),
    ("diagonal_net", {"n": 30, "p": 30}, "n"),
    ("diagonal_net", {"sparsity": 0}, "sparsity"),
    ("diagonal_net", {"offset": 0.0}, "offset"),
    ("matrix_sensing", {"r": 1, "r_star": 2}, "r"),
    ("matrix_sensing", {"m": 4, "r": 2, "N": 8}, "N"),
    ("factorization", {"m": 3, "r": 4}, "r"),
]


@pytest.mark.parametrize("name,params,bad", BAD_PARAMS)
def test_bad_params_raise(name, params, bad):
    with pytest.raises(ValueError, match=f"{bad} must") as err:
        flatmin.make_problem(name, **params)
    assert repr(params[bad]) in str(err.value)


REGISTRATION_SCRIPT = """
import flatmin
try:
    @flatmin.register_problem("hyperbola")
    def mine():
        return flatmin.Problem("h", 2, lambda x: x.sum())
except ValueError as err:
    print("raised:", err)
print(sorted(flatmin.list_problems()) == {expected!r})
"""


def test_registering_a_shipped_name_first_fails_there_and_leaves_the_registry_whole():
    """In a fresh interpreter (the registry is discovered lazily), a user factory that takes a shipped
    family's name is refused at the decorator, and every shipped family stays available."""
    import ast
    import subprocess
    import sys

    shipped = subprocess.run([sys.executable, "-c", "import flatmin; print(flatmin.list_problems())"],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    script = REGISTRATION_SCRIPT.format(expected=ast.literal_eval(shipped))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "raised: problem 'hyperbola' is already registered by flatmin.problems.hyperbola" in done.stdout
    assert done.stdout.strip().endswith("True"), done.stdout


def test_make_problem_bad_keyword_lists_the_parameters():
    with pytest.raises(TypeError, match=r"'dept'.*its parameters: \(depth: 'int' = 2"):
        flatmin.make_problem("hyperbola", dept=3)


def test_problem_factory_returns_the_registered_factory_and_names_the_choices_for_an_unknown_name():
    from flatmin.problem import problem_factory

    factory = problem_factory("valley_ramp")
    assert factory(eps=0.02).params["eps"] == 0.02
    assert factory is problem_factory("valley_ramp")
    with pytest.raises(KeyError, match=r"unknown problem 'no_such_family'; registered problems: .*valley_ramp"):
        problem_factory("no_such_family")


def test_valley_split_trace_and_top_eigenvalue_have_their_own_minimizers():
    from flatmin.problems.valley import split_minimizers

    prob = flatmin.make_problem("valley_split", top=10.0, side=4.0, noise=0.0)
    u = np.linspace(-1.5, 2.0, 3501)
    hessian = jax.jit(jax.vmap(lambda ui: jax.hessian(prob.loss)(jnp.array([ui, 0.0, 0.0]))))
    eigenvalues = np.linalg.eigvalsh(np.asarray(hessian(jnp.asarray(u))))
    u_trace, u_top = split_minimizers(10.0, 4.0)
    assert u[np.argmin(eigenvalues.sum(axis=1))] == pytest.approx(u_trace, abs=1e-3)
    assert u[np.argmin(eigenvalues.max(axis=1))] == pytest.approx(u_top, abs=1e-3)
    assert abs(u_trace - u_top) > 0.5
    assert eigenvalues.sum(axis=1).min() / 3 == pytest.approx(prob.flattest_trace, rel=1e-6)
    at_start = np.linalg.eigvalsh(np.asarray(jax.hessian(prob.loss)(jnp.array([-2.0, 0.0, 0.0]))))
    assert prob.smoothness == pytest.approx(at_start.max())


def test_valley_split_refuses_a_top_direction_that_is_not_on_top():
    with pytest.raises(ValueError, match=r"top must be a finite number in \(9.0, inf\], got 5.0"):
        flatmin.make_problem("valley_split", top=5.0, side=4.0)
