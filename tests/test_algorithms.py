"""Algorithms 1 and 2 and their perturbations (run() is in tests/test_run.py).

The Monte Carlo tests check the identities of docs/paper_notes.md §4 with many perturbation draws (vmap over keys
of flatmin.perturbation); every tolerance is 5 standard errors estimated from the draws themselves
(plus, where stated, a derived deterministic bound), with fixed seeds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from conftest import (
    HYPERBOLA_SHARP,
    VALLEY_K,
    VALLEY_M,
    hyperbola_limit,
    hyperbola_loss,
    valley_grad_sum_a,
)

import flatmin

RS = {"eta": 0.05, "eta_prime": 0.01, "rho": 0.3, "eps0": 0.5}
SA = {**RS, "batch_size": 1}
U0 = np.array([0.3, -0.2])  # a point u of the valley; (U0, 0) is in X*


def draws(problem, algorithm, x, rho, num, seed, chunk=2**20, **options):
    """``num`` perturbation vectors at ``x``, shape ``(num, d)``."""
    one = jax.jit(jax.vmap(lambda k: flatmin.perturbation(problem, algorithm, x, rho, k, **options)))
    out = []
    for c in range(0, num, chunk):
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), c), min(chunk, num - c))
        out.append(np.asarray(one(keys)))
    return np.concatenate(out)


def mean_se(samples):
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(len(samples))


def assert_within_5se(samples, target, what=""):
    mean, se = mean_se(samples)
    err = np.abs(mean - target)
    assert np.all(err <= 5 * se), f"{what}: mean {mean} target {target} |err| {err} > 5 SE {5 * se}"


# ============================================================================ perturbation identities
def test_rs_identity_on_minimum_exact(hyperbola):
    """f = (xy-1)^2 is quartic: E grad f(x + rho g) = grad f + (rho^2/2) grad trbar exactly (docs/paper_notes.md §4).

    At x* in X*, grad f = 0, v = grad f(x* + rho g), dPhi = P."""
    x_star, rho = HYPERBOLA_SHARP, 0.3
    v = draws(hyperbola, "rs", x_star, rho, 2**20, seed=0)
    grad_trbar = 2 * x_star  # trbar = x^2 + y^2
    assert_within_5se(v, rho**2 / 2 * grad_trbar, "E[v]")
    p = np.asarray(flatmin.tangent_projector(hyperbola, x_star))
    target = rho**2 / 2 * np.asarray(flatmin.tangent_gradient(hyperbola, x_star))
    np.testing.assert_allclose(target, rho**2 / 2 * p @ grad_trbar, atol=1e-14)
    assert_within_5se(v @ p.T, target, "E[P v]")
    assert np.linalg.norm(target) > 20 * np.max(mean_se(v @ p.T)[1])  # resolved, not a null test


def test_rs_identity_off_minimum_with_dphi_of_closed_form_phi(hyperbola):
    """Off X*: dPhi(x) E[v] = (rho^2/2) dPhi(x) grad trbar(x), exactly for the quartic (dPhi grad f = 0
    removes the projection)."""
    x_star = HYPERBOLA_SHARP
    normal = np.array([x_star[1], x_star[0]]) / np.linalg.norm(x_star)
    x, rho = x_star + 0.05 * normal, 0.3
    jac = np.asarray(jax.jacobian(hyperbola_limit)(jnp.asarray(x)))
    v = draws(hyperbola, "rs", x, rho, 2**20, seed=1)
    assert_within_5se(v @ jac.T, rho**2 / 2 * jac @ (2 * x), "E[dPhi v]")


@pytest.fixture(scope="module")
def exp_valley():
    """f(u, w) = exp(u) w^2 / 2, d = 2, X* = {w = 0}; at 0: E[dPhi v]/(rho^2/2) = I_1(rho)/rho exactly
    (uniform angle on the circle), against dPhi grad trbar = (1/2, 0): bias rho^2/16 + rho^4/384 + ..."""
    return flatmin.Problem("exp_valley", 2, lambda x: 0.5 * jnp.exp(x[0]) * x[1] ** 2, hessian_rank=1)


def test_rs_identity_bias_shrinks_like_rho_squared(exp_valley):
    x_star = np.zeros(2)
    tangent_grad = float(flatmin.tangent_gradient(exp_valley, x_star)[0])
    assert tangent_grad == pytest.approx(0.5, abs=1e-14)
    biases, ses, samples = {}, {}, {}
    for rho in (0.8, 0.4):
        normalized = draws(exp_valley, "rs", x_star, rho, 2**22, seed=2)[:, 0] / (rho**2 / 2)  # = (P v)_u
        samples[rho] = normalized - tangent_grad
        biases[rho], ses[rho] = mean_se(samples[rho])
        exact = scipy.special.iv(1, rho) / rho - 0.5
        assert abs(biases[rho] - exact) <= 5 * ses[rho], (rho, biases[rho], exact, ses[rho])
        assert biases[rho] > 20 * ses[rho]  # the bias is resolved
    ratio = biases[0.8] / biases[0.4]
    # delta method; same keys for both rho, so keep the covariance
    a, b = samples[0.8], samples[0.4]
    var = (np.var(a) + ratio**2 * np.var(b) - 2 * ratio * np.cov(a, b)[0, 1]) / (len(a) * biases[0.4] ** 2)
    exact_ratio = (scipy.special.iv(1, 0.8) / 0.8 - 0.5) / (scipy.special.iv(1, 0.4) / 0.4 - 0.5)  # 4.08
    assert abs(ratio - exact_ratio) <= 5 * math.sqrt(var), (ratio, exact_ratio, math.sqrt(var))
    assert 3.5 < ratio < 4.7  # O(rho^2): halving rho divides the bias by ~4 (not 2, not 1)


def test_sa_identity_on_minimum_is_d_times_rs(valley):
    """On X* (grad f_j = 0: Remark 2 fallback), tangent E[v_SA] = d (rho^2/2) dPhi grad trbar, exactly for
    the valley; RS gives (rho^2/2) dPhi grad trbar (to O(rho^4)), d times less."""
    x_star = np.r_[U0, np.zeros(VALLEY_K)]
    d, rho = valley.dim, 0.2
    tangent_grad = np.asarray(flatmin.tangent_gradient(valley, x_star))
    np.testing.assert_allclose(tangent_grad[:VALLEY_M], valley_grad_sum_a(U0) / d, rtol=1e-12)
    v_sa = draws(valley, "sa", x_star, rho, 2**16, seed=3, batch_size=1)
    assert_within_5se(v_sa[:, :VALLEY_M], d * rho**2 / 2 * tangent_grad[:VALLEY_M], "SA tangent")
    # normal part: first-order term rho s Hess f_j u_j, zero mean over the sign
    assert_within_5se(v_sa[:, VALLEY_M:], 0.0, "SA normal")
    # no tangential noise from the sign: each draw's tangent part is (k/2) rho^2 grad a_j(u) for its j
    per_sample = (
        VALLEY_K
        / 2
        * rho**2
        * (np.asarray([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]]) * np.exp(np.array([0.3, -0.2, 0.25]))[:, None])
    )
    nearest = np.min(np.linalg.norm(v_sa[:, None, :VALLEY_M] - per_sample[None], axis=2), axis=1)
    assert np.max(nearest) < 1e-8
    # the sample j is uniform: each value about 1/3 of the draws (5 SE of a binomial proportion)
    which = np.argmin(np.linalg.norm(v_sa[:, None, :VALLEY_M] - per_sample[None], axis=2), axis=1)
    freq = np.bincount(which, minlength=VALLEY_K) / len(which)
    assert np.all(np.abs(freq - 1 / 3) <= 5 * math.sqrt(2 / 9 / len(which)))

    rho_rs = 0.05  # small: the O(rho^4) remainder of RS is below its standard error here
    v_rs = draws(valley, "rs", x_star, rho_rs, 2**20, seed=4)
    assert_within_5se(v_rs[:, :VALLEY_M] / (rho_rs**2 / 2), tangent_grad[:VALLEY_M], "RS tangent")


def test_sa_identity_near_minimum(valley):
    """Near X* (|w| = 1e-3) with grad f_j != 0 (no fallback): tangent (u-) part of E[v] equals
    d (rho^2/2) dPhi grad trbar up to 5 SE plus the O(|w|) deviation of the u-part from dPhi (bounded
    here by |w| times the signal)."""
    w = 1e-3 * np.array([1.0, -0.5, 0.8])
    x, rho = np.r_[U0, w], 0.2
    v = draws(valley, "sa", x, rho, 2**16, seed=5, batch_size=1)
    target = rho**2 / 2 * valley_grad_sum_a(U0)
    mean, se = mean_se(v[:, :VALLEY_M])
    assert np.all(np.abs(mean - target) <= 5 * se + np.linalg.norm(w) * np.abs(target)), (mean, target, se)
    # normal part: the random sign s cancels the first-order term rho s Hess f_j u_j (here u_j is
    # deterministic given j, so only s can); what is left is O(rho^2 |w|), far below the SE
    mean, se = mean_se(v[:, VALLEY_M:])
    assert np.all(np.abs(mean) <= 5 * se + rho**2 * np.linalg.norm(w)), (mean, se)


def test_perturbations_orthogonal_to_gradient(hyperbola, valley):
    """RS and SA project out grad f(x); rs_noproj does not."""
    cases = [(hyperbola, np.array([2.1, 0.4])), (valley, np.r_[U0, 0.05, -0.1, 0.02])]
    for problem, x in cases:
        g = np.asarray(jax.grad(problem.loss)(x))
        for algorithm in ("rs", "sa", "rs_noproj"):
            v = draws(problem, algorithm, x, 0.3, 512, seed=6)
            cosine = (v @ g) / (np.linalg.norm(v, axis=1) * np.linalg.norm(g))
            if algorithm == "rs_noproj":
                assert np.max(np.abs(cosine)) > 0.5, (problem.name, algorithm)
            else:
                assert np.max(np.abs(cosine)) < 1e-12, (problem.name, algorithm, np.max(np.abs(cosine)))


def test_perturbation_bad_inputs(hyperbola, hyperbola_flow):
    with pytest.raises(ValueError, match="method 'sam' has no perturbation"):
        flatmin.perturbation(hyperbola, "sam", HYPERBOLA_SHARP, 0.1, jax.random.PRNGKey(0))
    for rho in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rho"):
            flatmin.perturbation(hyperbola, "rs", HYPERBOLA_SHARP, rho, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="'sa' needs a training loss"):
        flatmin.perturbation(hyperbola_flow, "sa", HYPERBOLA_SHARP, 0.1, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="batch_size.*got 2"):
        flatmin.perturbation(hyperbola, "sa", HYPERBOLA_SHARP, 0.1, jax.random.PRNGKey(0), batch_size=2)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['batch_size'\]"):
        flatmin.perturbation(hyperbola, "rs", HYPERBOLA_SHARP, 0.1, jax.random.PRNGKey(0), batch_size=1)


# ============================================================================ the eps0 gate
@pytest.mark.parametrize("algorithm", ["rs", "sa"])
def test_eps0_gate_switches_branch(hyperbola, algorithm):
    x0 = np.array([2.1, 0.4])
    grad = np.asarray(jax.grad(hyperbola_loss)(x0))
    gnorm = np.linalg.norm(grad)
    params = SA if algorithm == "sa" else RS
    seed = 5
    # gate closed: ||grad|| > eps0 -> plain GD with eta
    closed = flatmin.run(hyperbola, algorithm, x0, {**params, "eps0": gnorm / 2}, 1, [seed], 1, measure=False)
    np.testing.assert_allclose(closed.final[0], x0 - params["eta"] * grad, rtol=1e-15)
    assert closed.metrics["perturbed_fraction"].tolist() == [0.0, 0.0]
    # gate open: perturbed step with eta' and v drawn with key fold_in(PRNGKey(seed), t = 0)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    options = {"batch_size": params["batch_size"]} if algorithm == "sa" else {}
    v = np.asarray(flatmin.perturbation(hyperbola, algorithm, x0, params["rho"], key, **options))
    for eps0 in (2 * gnorm, math.inf):
        opened = flatmin.run(hyperbola, algorithm, x0, {**params, "eps0": eps0}, 1, [seed], 1, measure=False)
        np.testing.assert_allclose(opened.final[0], x0 - params["eta_prime"] * (grad + v), rtol=1e-14)
        assert opened.metrics["perturbed_fraction"].tolist() == [0.0, 1.0]


def test_eps0_gate_follows_gradient_norm_every_step(hyperbola):
    """From a far start the gate is closed and opens near X*: step t+1 is perturbed iff
    ||grad f(x_t)|| <= eps0."""
    eps0 = 0.05
    res = flatmin.run(hyperbola, "rs", [2.5, 0.1], {**RS, "eps0": eps0}, 150, 1, 1, measure=False)
    m = res.metrics
    opened = m["grad_norm"].to_numpy()[:-1] <= eps0
    np.testing.assert_array_equal(m["perturbed_fraction"].to_numpy()[1:], opened.astype(float))
    assert 0 < opened.sum() < len(opened)  # both branches taken
    # the checkpoint iterates are the iterates: loss and grad_norm columns agree with them
    np.testing.assert_allclose(m["loss"], jax.vmap(hyperbola_loss)(res.iterates[0]), rtol=1e-9, atol=1e-18)


# ============================================================================ escaping a sharp minimum
def test_rs_and_sa_escape_sharp_minimum_gd_does_not(hyperbola):
    """From the sharp minimum (2, 1/2) of (xy-1)^2 (trbar 4.25), RS and SA end near the flattest minima
    (1, 1) (trbar 2) while staying on X*; GD with the same step stays put."""
    steps, seeds = 1500, 4
    x0 = HYPERBOLA_SHARP
    results = {
        "rs": flatmin.run(hyperbola, "rs", x0, RS, steps, seeds, steps),
        "sa": flatmin.run(hyperbola, "sa", x0, SA, steps, seeds, steps),
        "gd": flatmin.run(hyperbola, "gd", x0, {"eta": RS["eta_prime"]}, steps, seeds, steps),
    }
    for name, res in results.items():
        start = res.metrics[res.metrics["step"] == 0]
        np.testing.assert_allclose(start["trbar_limit"], 4.25, rtol=1e-14)
        end = res.metrics[res.metrics["step"] == steps]
        assert np.all(end["distance"] < 1e-3), name  # still at a minimum
        if name == "gd":
            np.testing.assert_allclose(end["trbar_limit"], 4.25, atol=1e-6)
        else:
            assert np.all(end["trbar_limit"] < 2.1), (name, end["trbar_limit"].tolist())  # 4.25 -> < 2.1 (flattest: 2)
            assert end["perturbed_fraction"].min() > 0.99
            np.testing.assert_allclose(np.abs(res.final), 1.0, atol=0.2)


def test_sgd_and_sam_with_full_batch(valley):
    """Baselines: SGD with B = n is GD; one SAM step is x - eta grad f(x + rho grad f / ||grad f||)."""
    x0 = np.r_[U0, 0.3, -0.2, 0.1]
    eta, rho, n = 0.1, 0.05, VALLEY_K
    grad = jax.grad(valley.loss)
    sgd = flatmin.run(valley, "sgd", x0, {"eta": eta, "batch_size": n}, 10, 1, 10, measure=False)
    gd = flatmin.run(valley, "gd", x0, {"eta": eta}, 10, 1, 10, measure=False)
    np.testing.assert_allclose(sgd.final, gd.final, rtol=1e-13)
    sam = flatmin.run(valley, "sam", x0, {"eta": eta, "rho": rho, "batch_size": n}, 1, 1, 1, measure=False)
    g = np.asarray(grad(x0))
    np.testing.assert_allclose(
        sam.final[0], x0 - eta * np.asarray(grad(x0 + rho * g / np.linalg.norm(g))), rtol=1e-13
    )
    assert sam.metrics["perturbed_fraction"].max() == 0.0
    # with B = 1 SGD follows single-sample gradients: not GD
    sgd1 = flatmin.run(valley, "sgd", x0, {"eta": eta, "batch_size": 1}, 10, 1, 10, measure=False)
    assert not np.allclose(sgd1.final, gd.final, rtol=1e-3)


# ============================================================================ a user-registered problem
@flatmin.register_problem("test_user_valley")
def user_valley(scale=1.0):
    """x = (u, w1, w2); f_j = (2/2) a_j(u) w_j^2 with a_1 = scale (1 + u^2), a_2 = scale (1 + (u - 1)^2).
    On X* = {w = 0}: trbar = scale (2 + u^2 + (u - 1)^2) / 3, flattest at u = 1/2 (trbar 2.5 scale / 3)."""

    def sample_losses(x):
        a = scale * jnp.stack([1 + x[0] ** 2, 1 + (x[0] - 1) ** 2])
        return a * x[1:] ** 2

    return flatmin.Problem(
        name="test_user_valley",
        dim=3,
        loss=lambda x: jnp.mean(sample_losses(x)),
        sample_losses=sample_losses,
        num_samples=2,
        hessian_rank=2,
        flattest_trace=2.5 * scale / 3,
        initial_point=lambda key: jnp.array([2.0, 0.0, 0.0])
        + jnp.r_[0.0, 1e-3 * jax.random.normal(key, (2,))],
    )


def test_user_registered_problem():
    assert "test_user_valley" in flatmin.list_problems()
    problem = flatmin.make_problem("test_user_valley", scale=2.0)
    assert problem.params == {"scale": 2.0} and problem.dim == 3
    with pytest.raises(TypeError, match="test_user_valley.*bad parameters.*'depth'"):
        flatmin.make_problem("test_user_valley", depth=3)
    measures = flatmin.flatness(problem, np.array([[2.0, 0.0, 0.0], [0.5, 1e-3, -1e-3]]))
    np.testing.assert_allclose(measures["trbar_limit"], [2.0 * 7 / 3, 2.0 * 2.5 / 3], rtol=1e-8)
    np.testing.assert_allclose(measures["tangent_grad_norm"][0], 2.0 * 6 / 3, rtol=1e-8)  # d/du at u=2
    start_trace = 2.0 * 7 / 3
    # final GD phase: RS leaves normal noise (codimension 2 > 1) that plain GD then removes
    params = {"eta": 0.1, "eta_prime": 0.02, "rho": 0.3, "eps0": 1.0, "final_gd_steps": 100}
    end = {}
    for algorithm in ("rs", "sa"):
        options = {"batch_size": 1} if algorithm == "sa" else {}
        res = flatmin.run(problem, algorithm, None, {**params, **options}, 200, 2, 100)
        end[algorithm] = res.metrics[res.metrics["step"] == 300]
        assert np.all(end[algorithm]["distance"] < 1e-6)
        assert np.all(end[algorithm]["trbar_limit"] < start_trace - 0.1), (
            algorithm,
            end[algorithm]["trbar_limit"].tolist(),
        )
    # SA's signal is d = 3 times RS's: it gets further in the same number of steps
    assert end["sa"]["trbar_limit"].max() < end["rs"]["trbar_limit"].min(), (end["sa"]["trbar_limit"], end["rs"]["trbar_limit"])
