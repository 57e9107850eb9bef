"""Tests of flatmin.checkpoints (checkpoint grids, the fold_in key schedule), flatmin.training
(mini-batch steps with perturbed gradients, trajectories recorded at checkpoints) and
flatmin.minimizers (the bad and the normal minimizer of a network)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flatmin
from flatmin import nets
from flatmin.checkpoints import checkpoint_steps, run_steps
from flatmin.minimizers import bad_and_normal_minimizers
from flatmin.training import minibatch_step, run_checkpointed, segment_runner

CENTERS = jnp.arange(12.0).reshape(6, 2) ** 1.5 / 7.0
CURVATURES = jnp.array([1.0, 4.0])


@pytest.fixture(scope="module")
def quadratics():
    """``f_i(x) = sum_j a_j (x - c_i)_j^2 / 2`` on six centres: the batch gradient is ``a (x - mean(c_B))``;
    unequal curvatures ``a``, so that SA's gradient at ``x + r g`` is not parallel to ``g``."""

    def sample_losses(x):
        return 0.5 * jnp.sum(CURVATURES * (x - CENTERS) ** 2, axis=1)

    return flatmin.Problem(name="quadratics", dim=2, loss=lambda x: jnp.mean(sample_losses(x)),
                           sample_losses=sample_losses)


# ------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(("stop", "every", "expected"), [(10, 3, [0, 3, 6, 9, 10]), (10, 5, [0, 5, 10]),
                                                         (4, 10, [0, 4])])
def test_checkpoints_every(stop, every, expected):
    np.testing.assert_array_equal(checkpoint_steps(stop, every=every), expected)


@pytest.mark.parametrize(("stop", "intervals", "expected"), [
    (10, 4, [0, 2, 5, 8, 10]),  # 2.5 and 7.5 round to even
    (2, 4, [0, 1, 2]),  # rounding merges points
    (10, 1, [0, 10]),
    (7, 0, [0]),
])
def test_checkpoints_intervals(stop, intervals, expected):
    steps = checkpoint_steps(stop, intervals=intervals)
    np.testing.assert_array_equal(steps, expected)
    assert steps.dtype.kind == "i"


@pytest.mark.parametrize("kwargs", [{}, {"every": 2, "intervals": 3}])
def test_checkpoints_need_one_spacing(kwargs):
    with pytest.raises(ValueError, match="exactly one of every and intervals"):
        checkpoint_steps(10, **kwargs)


def test_run_steps_keys_step_t_by_fold_in():
    key = jax.random.PRNGKey(4)

    def step(s, k, t):
        return s * 0.5 + jax.random.normal(k) + t

    by_hand = 1.0
    for t in range(3, 9):
        by_hand = step(by_hand, jax.random.fold_in(key, t), t)
    whole = run_steps(step, 1.0, 3, 9, key=key)
    split = run_steps(step, run_steps(step, 1.0, 3, 5, key=key), 5, 9, key=key)
    assert float(whole) == float(by_hand) == float(split)


def test_run_steps_carries_a_pytree():
    count, total = run_steps(lambda s, k, t: (s[0] + 1, s[1] + t), (0, 0), 2, 6, key=jax.random.PRNGKey(0))
    assert (int(count), int(total)) == (4, 2 + 3 + 4 + 5)


# ------------------------------------------------------------------------------------- mini-batch steps


def test_full_batch_sgd_is_gradient_descent(quadratics):
    """A batch of all n samples drawn without replacement is the whole data set: one GD step."""
    x = jnp.array([3.0, -1.0])
    step = jax.jit(minibatch_step(quadratics, "sgd", 6))
    expected = x - 0.1 * CURVATURES * (x - CENTERS.mean(axis=0))
    np.testing.assert_allclose(step(x, jax.random.PRNGKey(2), 0.1, 0.0), expected, rtol=1e-14)


def test_batch_of_one_moves_towards_one_sample(quadratics):
    x = jnp.array([3.0, -1.0])
    step = jax.jit(minibatch_step(quadratics, "sgd", 1))
    candidates = x - 0.1 * CURVATURES * (x - CENTERS)
    for seed in range(5):
        x_next = step(x, jax.random.PRNGKey(seed), 0.1, 0.0)
        assert np.min(np.linalg.norm(candidates - x_next, axis=1)) < 1e-14


@pytest.mark.parametrize("method", ["rs", "sa"])
def test_zero_radius_is_sgd_and_the_perturbation_is_projected(quadratics, method):
    x, key, eta = jnp.array([3.0, -1.0]), jax.random.PRNGKey(9), 0.1
    sgd = minibatch_step(quadratics, "sgd", 3)(x, key, eta, 0.0)
    step = minibatch_step(quadratics, method, 3)
    np.testing.assert_array_equal(step(x, key, eta, 0.0), sgd)
    # the perturbation v = (sgd - x_next) / eta is orthogonal to the batch gradient (x - sgd) / eta
    v, g = (sgd - step(x, key, eta, 0.5)) / eta, (x - sgd) / eta
    assert float(jnp.linalg.norm(v)) > 1e-3
    assert abs(float(v @ g)) < 1e-12 * float(jnp.linalg.norm(v) * jnp.linalg.norm(g))


def test_unknown_method(quadratics):
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        minibatch_step(quadratics, "adam", 2)


# ------------------------------------------------------------------------------------- checkpointed runs


def _noisy_step(x, key, scale):
    return 0.9 * x + scale * jax.random.normal(key, x.shape)


def test_segment_runner_per_trajectory_arguments():
    advance = segment_runner(lambda x, k, a: x + a)
    xs = jnp.zeros((3, 2))
    out = advance(xs, jax.vmap(jax.random.PRNGKey)(jnp.arange(3)), jnp.array([[1.0], [2.0], [-1.0]]), 2, 7)
    np.testing.assert_array_equal(out, [[5.0, 5.0], [10.0, 10.0], [-5.0, -5.0]])


def test_run_checkpointed_does_not_depend_on_the_checkpoints():
    keys = jax.vmap(jax.random.PRNGKey)(jnp.array([0, 1, 0]))
    args = jnp.array([0.1, 0.1, 0.2])
    start = jnp.array([1.0, -2.0, 0.5])
    measure = lambda xs: jnp.stack([jnp.sum(xs, axis=1), jnp.linalg.norm(xs, axis=1)], axis=1)  # noqa: E731
    coarse, last = run_checkpointed(_noisy_step, start, np.array([0, 12]), measure, keys=keys, args=args)
    fine, last_fine = run_checkpointed(_noisy_step, start, np.array([0, 3, 4, 9, 12]), measure, keys=keys,
                                       args=args)
    assert coarse.shape == (3, 2, 2) and fine.shape == (3, 5, 2) and last.shape == (3, 3)
    np.testing.assert_allclose(last_fine, last, rtol=1e-15, atol=0)
    np.testing.assert_allclose(fine[:, [0, -1]], coarse, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(coarse[:, 0], np.broadcast_to(measure(start[None]), (3, 2)))
    np.testing.assert_array_equal(coarse[:, -1], measure(last))
    # trajectories 0 and 2 share a key: their noise is the same, scaled by their own argument
    noise = lambda i: last[i] - 0.9**12 * start  # noqa: E731
    np.testing.assert_allclose(noise(2), 2 * noise(0), rtol=1e-12)
    assert float(jnp.linalg.norm(noise(1) - noise(0))) > 1e-3


def test_run_checkpointed_stops_at_divergence():
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(2))
    with pytest.raises(FloatingPointError, match="sa \\(batch 4\\) diverged before step 20"):
        run_checkpointed(lambda x, k, a: x * a, jnp.ones(2), np.array([0, 10, 20, 30]),
                         lambda xs: jnp.zeros((len(xs), 1)), keys=keys, args=jnp.array([1.0, 1e20]),
                         name="sa (batch 4)")


# ------------------------------------------------------------------------------------- minimizers


@pytest.fixture(scope="module")
def digits_mlp():
    data = nets.load_data("digits", n_train=40, n_test=20, seed=1)
    model, x_init = nets.RaveledMLP.create(jax.random.PRNGKey(0), [64, 10, 10], "tanh", "mse")
    return data, model, x_init


CONFUSION = {"repeats": 2, "zero_frac": 0.1, "seed": 0, "lr": 0.05, "batch_size": 16, "epochs": 10}


def test_bad_and_normal_minimizers_interpolate(digits_mlp):
    data, model, x_init = digits_mlp
    clean = {"lr": 0.05, "batch_size": 8, "max_epochs": 1000, "extra_epochs": 5}
    built = bad_and_normal_minimizers(model, x_init, data, key=jax.random.PRNGKey(3), confusion=CONFUSION,
                                      clean=clean)
    for name in ("x_bad", "x_normal"):
        assert float(model.accuracy(built[name], data["x"], data["y"])) == 1.0, name
    # the bad minimizer was trained from the pre-trained point, the normal one from the initialization
    assert built["info"]["confusion"]["epochs"] == CONFUSION["epochs"]
    assert 0.0 <= built["info"]["confusion"]["confusion_acc"] <= 1.0
    assert float(jnp.linalg.norm(built["x_confusion"] - x_init)) > 0
    assert float(jnp.linalg.norm(built["x_bad"] - built["x_normal"])) > 0
    assert set(built["seconds"]) == {"confusion", "clean_bad", "clean_normal"}


def test_minimizers_that_do_not_interpolate_raise(digits_mlp):
    data, model, x_init = digits_mlp
    clean = {"lr": 1e-6, "batch_size": 8, "max_epochs": 5, "extra_epochs": 0}
    with pytest.raises(RuntimeError, match="bad minimizer did not reach 100% training accuracy in 5 epochs"):
        bad_and_normal_minimizers(model, x_init, data, key=jax.random.PRNGKey(3), confusion=CONFUSION, clean=clean)
