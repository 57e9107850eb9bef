"""flatmin.run(): seeds and checkpoints, the metrics, the final GD phase, the first flat step against
independent loops, and its errors (divergence, bad inputs, problems without per-sample losses)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import HYPERBOLA_SHARP, hyperbola_limit, hyperbola_loss

import flatmin

RS = {"eta": 0.05, "eta_prime": 0.01, "rho": 0.3, "eps0": 0.5}
SA = {**RS, "batch_size": 1}


# ============================================================================ run(): bookkeeping
def test_same_seed_same_arrays_and_record_every_independence(hyperbola):
    x0 = HYPERBOLA_SHARP
    a = flatmin.run(hyperbola, "sa", x0, SA, 40, [3, 7], 1, measure=False)
    b = flatmin.run(hyperbola, "sa", x0, SA, 40, [3, 7], 1, measure=False)
    np.testing.assert_array_equal(a.final, b.final)
    np.testing.assert_array_equal(a.iterates, b.iterates)
    assert a.metrics.equals(b.metrics)
    assert not np.allclose(a.final[0], a.final[1])  # different seeds differ
    c = flatmin.run(hyperbola, "sa", x0, SA, 40, [3, 7], 10, measure=False)
    np.testing.assert_allclose(c.final, a.final, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(c.iterates, a.iterates[:, ::10], rtol=1e-13, atol=1e-15)
    # a seed's trajectory does not depend on the other seeds in the batch
    d = flatmin.run(hyperbola, "sa", x0, SA, 40, [7], 10, measure=False)
    np.testing.assert_allclose(d.final[0], a.final[1], rtol=1e-13, atol=1e-15)


def test_seeds_count_or_list(hyperbola):
    a = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, RS, 10, 2, 10, measure=False)
    b = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, RS, 10, [0, 1], 10, measure=False)
    np.testing.assert_allclose(a.final, b.final, rtol=1e-13)
    assert sorted(a.metrics["seed"].unique()) == [0, 1]
    c = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, RS, 10, (11, 4, 9), 10, measure=False)
    assert c.final.shape == (3, 2) and c.metrics["seed"].unique().tolist() == [11, 4, 9]


def test_metrics_columns_and_checkpoints(hyperbola):
    res = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, {**RS, "final_gd_steps": 5}, 25, 2, 10, eps=1e-3)
    m = res.metrics
    assert list(m.columns[:6]) == ["step", "seed", "phase", "loss", "grad_norm", "perturbed_fraction"]
    assert set(m.columns[6:]) == {"distance", "loss_gap", "trbar_limit", "tangent_grad_norm", "flat"}
    assert m[m["seed"] == 1]["step"].tolist() == [0, 10, 20, 25, 30]
    assert m[m["seed"] == 0]["phase"].tolist() == ["main"] * 4 + ["final_gd"]
    assert res.iterates.shape == (2, 5, 2)
    np.testing.assert_array_equal(res.iterates[:, -1], res.final)
    np.testing.assert_allclose(res.iterates[:, 0], np.broadcast_to(HYPERBOLA_SHARP, (2, 2)))
    last = m[m["step"] == 30]
    np.testing.assert_allclose(
        last["grad_norm"], np.linalg.norm(jax.vmap(jax.grad(hyperbola_loss))(res.final), axis=1), rtol=1e-9
    )
    np.testing.assert_allclose(
        last["distance"],
        np.linalg.norm(res.final - jax.vmap(hyperbola_limit)(res.final), axis=1),
        rtol=1e-10,
        atol=1e-15,
    )
    assert (last["perturbed_fraction"] == 0).all()  # the final GD phase never perturbs
    assert res.first_flat_step.tolist() == [-1, -1]  # sharp: tangent grad ~3.6 > sqrt(1e-3)

    bare = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, RS, 250, 1, measure=False)
    assert list(bare.metrics.columns) == ["step", "seed", "phase", "loss", "grad_norm", "perturbed_fraction"]
    assert bare.metrics["step"].tolist() == list(range(0, 251, 2))  # default record_every = steps // 100
    assert bare.first_flat_step is None


def test_final_gd_phase_is_plain_gd(hyperbola):
    params = {**RS, "final_gd_steps": 30}
    both = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, params, 20, [2], 20, measure=False)
    main = flatmin.run(hyperbola, "rs", HYPERBOLA_SHARP, RS, 20, [2], 20, measure=False)
    gd = flatmin.run(hyperbola, "gd", main.final[0], {"eta": RS["eta"]}, 30, [2], 30, measure=False)
    np.testing.assert_allclose(both.iterates[0, 1], main.final[0], rtol=1e-14)
    np.testing.assert_allclose(both.final[0], gd.final[0], rtol=1e-13)
    assert not np.allclose(both.final[0], main.final[0], rtol=1e-8)  # the GD phase did move


def test_first_flat_step_against_independent_gd(hyperbola):
    """GD from (1.2, 1.2) stays on the diagonal, so Phi = (1, 1) (flat: tangent gradient 0) and the
    iterate is (eps, sqrt eps)-flat once ||x_t - (1, 1)|| <= eps; seed 1 starts at the sharp minimum."""
    eta, eps, steps, every = 0.05, 1e-6, 120, 5
    x = np.array([1.2, 1.2])
    first = -1
    for t in range(steps + 1):
        if t % every == 0 and np.linalg.norm(x - 1.0) <= eps:
            first = t
            break
        x = x - eta * np.array([2 * (x[0] * x[1] - 1) * x[1], 2 * (x[0] * x[1] - 1) * x[0]])
    assert 0 < first < steps
    starts = np.array([[1.2, 1.2], HYPERBOLA_SHARP + np.array([0.01, 0.0])])
    res = flatmin.run(hyperbola, "gd", starts, {"eta": eta}, steps, 2, every, eps=eps)
    assert res.first_flat_step.tolist() == [first, -1]
    m = res.metrics
    assert (
        m[(m.seed == 0) & (m.step >= first)]["flat"].all()
        and not m[(m.seed == 0) & (m.step < first)]["flat"].any()
    )
    # Located to every step inside the last interval: the first flat step of the step-by-step loop.
    exact = next(t for t in range(steps + 1) if np.linalg.norm(_gd_iterate([1.2, 1.2], eta, t) - 1.0) <= eps)
    fine = flatmin.run(hyperbola, "gd", starts, {"eta": eta}, steps, 2, every, eps=eps, flat_resolution=1)
    assert fine.first_flat_step.tolist() == [exact, -1] and first - every < exact <= first
    assert fine.metrics.equals(res.metrics)  # the table keeps the checkpoints


def _gd_iterate(x0, eta, t):
    x = np.array(x0, dtype=float)
    for _ in range(t):
        x = x - eta * np.array([2 * (x[0] * x[1] - 1) * x[1], 2 * (x[0] * x[1] - 1) * x[0]])
    return x


def test_first_flat_step_with_the_loss_gap_criterion_against_independent_gd(hyperbola):
    """As above, with the loss-gap form of Definition 3: flat once f(x_t) - f(Phi(x_t)) = (x_t y_t - 1)^2
    <= eps; at eps = 1e-6 that comes before the distance falls under eps (the gap is quadratic in it)."""
    eta, eps, steps = 0.05, 1e-6, 120
    gap = lambda t: (np.prod(_gd_iterate([1.2, 1.2], eta, t)) - 1.0) ** 2  # noqa: E731
    exact = next(t for t in range(steps + 1) if gap(t) <= eps)
    starts = np.array([[1.2, 1.2], HYPERBOLA_SHARP + np.array([0.01, 0.0])])
    kwargs = dict(x0=starts, params={"eta": eta}, steps=steps, seeds=2, record_every=5, eps=eps, flat_resolution=1)
    by_gap = flatmin.run(hyperbola, "gd", flat_criterion="loss_gap", **kwargs)
    by_distance = flatmin.run(hyperbola, "gd", **kwargs)
    assert by_gap.first_flat_step.tolist() == [exact, -1]
    assert 0 < exact < by_distance.first_flat_step[0]
    m = by_gap.metrics
    np.testing.assert_array_equal(m["flat"], (m["loss_gap"] <= eps) & (m["tangent_grad_norm"] <= np.sqrt(eps)))
    with pytest.raises(ValueError, match="unknown flatness criterion 'gap'"):
        flatmin.run(hyperbola, "gd", flat_criterion="gap", **kwargs)


def test_flat_resolution_locates_the_first_flat_step_of_a_random_run():
    """RS: refined first flat steps equal the step-by-step ones whenever those fall in the last checkpoint
    interval (the run is re-simulated with the same keys); earlier flat steps (the test flickering on
    and off between checkpoints) are outside the refined interval, so never later than the coarse one."""
    problem = flatmin.make_problem("hyperbola", depth=2)
    params = flatmin.theory_params("rs", eps=0.04, beta=problem.smoothness)  # flat after ~1000 steps
    del params["steps"]
    kwargs = dict(x0=HYPERBOLA_SHARP, params=params, steps=1300, seeds=6, eps=0.04)
    coarse = flatmin.run(problem, "rs", record_every=130, **kwargs).first_flat_step
    fine = flatmin.run(problem, "rs", record_every=130, flat_resolution=1, **kwargs).first_flat_step
    exact = flatmin.run(problem, "rs", record_every=1, **kwargs).first_flat_step
    assert (coarse > 0).all() and not (coarse == fine).all()
    for c, f, e in zip(coarse, fine, exact):
        assert c - 130 < f <= c and e <= f
        if e > c - 130:
            assert f == e
    with pytest.raises(ValueError, match="flat_resolution must be an integer >= 1, got 0"):
        flatmin.run(problem, "rs", record_every=130, flat_resolution=0, **kwargs)


def test_x0_none_uses_initial_point(hyperbola):
    res = flatmin.run(hyperbola, "gd", None, {"eta": 0.01}, 1, [0, 5], 1, measure=False)
    for row, seed in enumerate([0, 5]):
        start = np.asarray(hyperbola.initial_point(jax.random.PRNGKey(seed)))
        np.testing.assert_array_equal(res.iterates[row, 0], start)
        np.testing.assert_allclose(
            res.final[row], start - 0.01 * np.asarray(jax.grad(hyperbola_loss)(start)), rtol=1e-14
        )
    assert not np.allclose(res.iterates[0, 0], res.iterates[1, 0])
    with pytest.raises(ValueError, match="no initial_point"):
        flatmin.run(flatmin.Problem("bare", 2, hyperbola_loss), "gd", None, {"eta": 0.01}, 1)


def test_measure_after_gd_measures_the_descended_points(hyperbola):
    x0 = HYPERBOLA_SHARP + np.array([0.05, 0.02])
    res = flatmin.run(hyperbola, "rs", x0, RS, 20, 1, 10, measure_after_gd=7)
    plain = flatmin.run(hyperbola, "rs", x0, RS, 20, 1, 10)
    np.testing.assert_allclose(res.iterates, plain.iterates, rtol=1e-14)
    np.testing.assert_allclose(res.metrics["loss"], plain.metrics["loss"], rtol=1e-14)  # loss of the iterate
    descended = []
    for x in res.iterates[0]:
        for _ in range(7):
            x = x - RS["eta"] * np.asarray(jax.grad(hyperbola_loss)(x))
        descended.append(x)
    expected = flatmin.flatness(hyperbola, np.array(descended))
    for name in ("distance", "trbar_limit", "tangent_grad_norm"):
        np.testing.assert_allclose(res.metrics[name], expected[name], rtol=1e-10, atol=1e-14)
    assert np.all(res.metrics["distance"] < plain.metrics["distance"])


# ============================================================================ errors
def test_divergence_raises_with_step():
    """GD on x^2 with eta = 10: x_t = (-19)^t overflows at t = 242 (19^241 = 1.5e308 < 1.8e308)."""
    bowl = flatmin.Problem("bowl", 1, lambda x: jnp.sum(x**2))
    x, first = np.array([1.0]), None
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, 400):
            x = x - 10.0 * (2.0 * x)
            if not np.all(np.isfinite(x)):
                first = t
                break
    assert first == 242
    with pytest.raises(flatmin.DivergenceError, match=rf"seed 3 .*at step {first}\b"):
        flatmin.run(bowl, "gd", [1.0], {"eta": 10.0}, 400, [3], measure=False)
    flatmin.run(bowl, "gd", [1.0], {"eta": 10.0}, 241, [3], measure=False)  # no error before the overflow


BAD_RUNS = [
    # (algorithm, params, kwargs, error type, message pattern)
    ("adam", RS, {}, ValueError, "unknown method 'adam'; registered methods: anti_pgd, gd, "),
    ("rs", {k: v for k, v in RS.items() if k != "rho"}, {}, ValueError, r"needs parameter\(s\) \['rho'\]"),
    ("rs", {k: v for k, v in RS.items() if k != "eta"}, {}, ValueError, r"needs parameter\(s\) \['eta'\]"),
    ("rs", {**RS, "lr": 0.1}, {}, ValueError, "unknown parameter.*'lr'"),
    ("rs", {**RS, "eta": -0.1}, {}, ValueError, "eta = -0.1 is not allowed; expected a number > 0"),
    ("rs", {**RS, "eta_prime": float("nan")}, {}, ValueError, "eta_prime = nan is not allowed"),
    ("rs", {**RS, "rho": -0.1}, {}, ValueError, "rho = -0.1 is not allowed; expected a number >= 0"),
    ("rs", {**RS, "eps0": 0.0}, {}, ValueError, "eps0 = 0.0 is not allowed; expected a number > 0, math.inf allowed"),
    ("rs", {**RS, "final_gd_steps": -1}, {}, ValueError, "final_gd_steps.*-1"),
    ("sa", {**SA, "batch_size": 0}, {}, ValueError, "batch_size = 0 is not allowed; expected an integer >= 1, or None"),
    ("sa", {**SA, "batch_size": 2}, {}, ValueError, r"batch_size must be an integer in \[1, n=1\], got 2"),
    ("sa", {**SA, "batch_size": 0.5}, {}, ValueError, "batch_size.*0.5"),
    ("rs", RS, {"steps": 0}, ValueError, "steps must be.*got 0"),
    ("rs", {**RS, "steps": 5}, {}, ValueError, r"params\['steps'\] = 5 but steps = 3"),
    ("rs", RS, {"record_every": 0}, ValueError, "record_every.*got 0"),
    ("rs", RS, {"seeds": 0}, ValueError, "seeds = 0: seeds are an integer n >= 1"),
    ("rs", RS, {"seeds": []}, ValueError, r"seeds = \[\]: seeds are"),
    ("rs", RS, {"eps": 0.0}, ValueError, "eps must be.*0.0"),
    ("rs", RS, {"eps": -1.0}, ValueError, "eps must be.*-1.0"),
    ("rs", RS, {"eps": 1e-3, "measure": False}, ValueError, "eps needs measure=True"),
    ("rs", RS, {"measure_after_gd": -2}, ValueError, "measure_after_gd.*-2"),
    ("rs", RS, {"x0": [1.0, float("nan")]}, ValueError, r"x0 has non-finite entries for seed\(s\) \[0\]"),
    ("rs", RS, {"x0": [1.0, 2.0, 3.0]}, ValueError, r"x0 of shape \(3,\)"),
    ("rs", RS, {"x0": np.ones((3, 2)), "seeds": 2}, ValueError, r"x0 of shape \(3, 2\).*num_seeds=2"),
]


@pytest.mark.parametrize("algorithm, params, kwargs, error, pattern", BAD_RUNS)
def test_run_bad_inputs(hyperbola, algorithm, params, kwargs, error, pattern):
    kwargs = {"x0": HYPERBOLA_SHARP, "steps": 3, **kwargs}
    with pytest.raises(error, match=pattern):
        flatmin.run(hyperbola, algorithm, params=params, **kwargs)


@pytest.mark.parametrize("algorithm", ["sa", "sgd", "sam"])
def test_training_loss_algorithms_reject_plain_loss(hyperbola_flow, algorithm):
    with pytest.raises(ValueError, match=f"method '{algorithm}' needs a training loss.*'hyperbola_flow'"):
        flatmin.run(hyperbola_flow, algorithm, HYPERBOLA_SHARP, {**SA, "batch_size": 1}, 3)


def test_a_parameter_the_method_does_not_take_is_a_clear_error(hyperbola_flow):
    with pytest.raises(ValueError, match=r"rs on 'hyperbola_flow': unknown parameter\(s\) \['batch_size'\]; allowed: eta, "):
        flatmin.run(hyperbola_flow, "rs", HYPERBOLA_SHARP, {**RS, "batch_size": 1}, 3)


def test_problem_and_registry_bad_inputs():
    for dim in (0, -3, 2.0):
        with pytest.raises(ValueError, match=f"dim must be an integer >= 1, got {dim}"):
            flatmin.Problem("bad", dim, hyperbola_loss)
    # num_samples is read off sample_losses' output when not given, and checked when given
    assert flatmin.Problem("ok", 2, hyperbola_loss, sample_losses=lambda x: jnp.concatenate([x, x, x])).num_samples == 6
    with pytest.raises(ValueError, match=r"sample_losses must return shape \(n,\), got \(\)"):
        flatmin.Problem("bad", 2, hyperbola_loss, sample_losses=lambda x: x @ x)
    with pytest.raises(ValueError, match="num_samples not given and sample_losses fails"):
        flatmin.Problem("bad", 2, hyperbola_loss, sample_losses=lambda x: x[:, None] @ jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="num_samples >= 1, got 0"):
        flatmin.Problem("bad", 2, hyperbola_loss, sample_losses=lambda x: x, num_samples=0)
    with pytest.raises(ValueError, match="num_samples >= 1, got None"):
        flatmin.Problem("bad", 2, hyperbola_loss, batch_losses=lambda x, idx: x[idx])
    with pytest.raises(ValueError, match=r"hessian_rank must lie in \[0, dim=2\], got 3"):
        flatmin.Problem("bad", 2, hyperbola_loss, hessian_rank=3)
    with pytest.raises(KeyError, match="unknown problem 'no_such_family'"):
        flatmin.make_problem("no_such_family")


def _near_flat_hyperbola():
    """The hyperbola started next to its flattest point (1, 1): flat at the start for a loose eps."""
    return flatmin.Problem(name="hyperbola_near_flat", dim=2, loss=hyperbola_loss,
                           sample_losses=lambda x: hyperbola_loss(x)[None], num_samples=1,
                           limit_map=hyperbola_limit, hessian_rank=1, flattest_trace=2.0,
                           initial_point=lambda key: jnp.array([1.001, 0.999]))


def test_a_start_that_is_already_flat_is_reported_with_eps_d_and_the_test_values():
    problem = _near_flat_hyperbola()
    with pytest.warns(flatmin.AlreadyFlatWarning,
                      match=r"\(d = 2\) is already \(eps, sqrt\(eps\)\)-flat at eps = 0.5 for seed\(s\) \[0, 1\]: at "
                            r"seed 0, distance = .* <= eps and tangent_grad_norm = .* <= sqrt\(eps\) = 0.707"):
        result = flatmin.run(problem, "gd", None, {"eta": 0.05}, 10, 2, eps=0.5)
    np.testing.assert_array_equal(result.first_flat_step, [0, 0])


def test_a_start_that_is_not_flat_warns_nothing(hyperbola, recwarn):
    flatmin.run(hyperbola, "gd", None, {"eta": 0.05}, 10, 2, eps=1e-3)
    assert not [w for w in recwarn if issubclass(w.category, flatmin.AlreadyFlatWarning)]
