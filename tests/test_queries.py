"""Oracle queries to the first flat point (flatmin.first_flat_queries, RunResult.first_flat_queries): the
perturbed steps counted exactly, through the replay that refines the first flat step, and each method's
per-step cost in per-sample units."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flatmin
from flatmin.algorithms import check_params
from flatmin.method import get_method, problem_oracle


def _flags_by_hand(problem, algorithm, params, x0, seed, steps):
    """The perturbed flag of every step, one step at a time."""
    method, hyper = get_method(algorithm), check_params(problem, algorithm, params)

    @jax.jit
    def step(x, key):
        out = method.direction(problem_oracle(problem), x, (), key, hyper)
        size = jnp.where(out.perturbed, hyper["eta_prime"], hyper["eta"])
        return x - size * out.direction, out.perturbed

    x, flags = jnp.asarray(x0), []
    for t in range(steps):
        x, perturbed = step(x, jax.random.fold_in(jax.random.PRNGKey(seed), t))
        flags.append(bool(perturbed))
    return np.array(flags)


def test_perturbed_steps_to_the_first_flat_point_are_counted_exactly(hyperbola):
    """RS with a gate that opens part of the way: the count before the first flat step, refined inside a
    checkpoint interval by the replay, equals the count of the flags step by step."""
    params = {"eta": 0.05, "eta_prime": 0.05, "rho": 0.3, "eps0": 0.05}
    x0, steps, seeds = np.array([2.2, 0.4]), 600, [0, 3]
    result = flatmin.run(hyperbola, "rs", x0, params, steps, seeds, record_every=100, eps=0.1, flat_resolution=7)
    first = result.first_flat_step
    assert np.all(first > 0) and np.all(first % 100 != 0), first  # refined inside an interval
    for row, seed in enumerate(seeds):
        flags = _flags_by_hand(hyperbola, "rs", params, x0, seed, steps)
        perturbed = int(flags[:first[row]].sum())
        assert 0 < perturbed < first[row]  # the gate was both closed and open before the flat point
        # RS on a loss of one sample: 2 gradients per perturbed step, 1 otherwise
        assert result.first_flat_queries["gradient_queries"][row] == first[row] + perturbed
    assert (result.first_flat_queries["function_queries"] == 0).all()


def test_per_step_costs_in_per_sample_units():
    net = flatmin.make_problem("diagonal_net", n=10, p=30, sparsity=3, seed=0)
    cases = [  # (method, parameters, per perturbed step, per other step)
        ("gd", {"eta": 0.01}, 10, 10),
        ("sgd", {"eta": 0.01, "batch_size": 3}, 3, 3),
        ("sam", {"eta": 0.01, "rho": 0.1, "batch_size": 3}, 6, 6),
        ("sam_per_sample", {"eta": 0.01, "rho": 0.1, "batch_size": 3}, 6, 6),
        ("rs", {"eta": 0.01, "eta_prime": 0.01, "rho": 0.1}, 20, 10),
        ("sa", {"eta": 0.01, "eta_prime": 0.01, "rho": 0.1, "batch_size": 2}, 2 * 2 + 10, 10),
        ("sa", {"eta": 0.01, "eta_prime": 0.01, "rho": 0.1, "batch_size": 2, "projection": "batch"}, 4, 2),
        ("label_noise_sgd", {"eta": 0.01, "sigma": 0.1, "batch_size": 4}, 4, 4),
    ]
    for method, params, on, off in cases:
        trajectory = flatmin.simulate(net, method, None, params, 2, seeds=1)
        queries = trajectory.queries(10, 4, final_gd_steps=3)
        assert queries["gradient_queries"] == 4 * on + 6 * off + 3 * 10, (method, params, queries)


def test_run_reports_the_queries_of_the_final_gd_phase_and_minus_one_where_never_flat(hyperbola):
    params = {"eta": 0.05, "eta_prime": 0.05, "rho": 0.3, "eps0": math.inf, "batch_size": 1}
    result = flatmin.run(hyperbola, "sa", np.array([2.2, 0.4]), params, 400, [1], record_every=50, eps=0.1,
                         measure_after_gd=5)
    first = result.first_flat_step[0]
    assert first > 0
    # always perturbed, batch 1 of n = 1 and projection on the whole loss: 2 + 1 per step, then 5 GD steps
    assert result.first_flat_queries["gradient_queries"][0] == 3 * first + 5
    never = flatmin.run(hyperbola, "gd", np.array([2.2, 0.4]), {"eta": 0.05}, 50, [0], eps=1e-3)
    assert never.first_flat_step[0] == -1 and never.first_flat_queries["gradient_queries"][0] == -1
    assert flatmin.run(hyperbola, "gd", np.array([2.2, 0.4]), {"eta": 0.05}, 5, [0]).first_flat_queries is None


@pytest.mark.parametrize("eps0", [0.05, math.inf])
def test_the_queries_follow_the_first_flat_step_without_refinement(hyperbola, eps0):
    params = {"eta": 0.05, "eta_prime": 0.05, "rho": 0.3, "eps0": eps0}
    result = flatmin.run(hyperbola, "rs", np.array([2.2, 0.4]), params, 600, 2, record_every=25, eps=0.1)
    trajectory = flatmin.simulate(hyperbola, "rs", np.array([2.2, 0.4]), params, 600, 2, record_every=25)
    before = trajectory.perturbed_steps()
    for row, first in enumerate(result.first_flat_step):
        index = int(np.searchsorted(trajectory.checkpoints, first))
        assert result.first_flat_queries["gradient_queries"][row] == first + before[row, index]
