"""run() compiles once per shape: hyperparameters are arguments of the compiled loop, not constants.

The reference for the iterates is the method's own direction (hyperparameters closed over as
constants) applied seed by seed in a Python loop. It is another compiled program, so
the comparison is to rounding (XLA may contract a product and a sum into one fused multiply-add in one
program and not in the other), not to the bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import HYPERBOLA_SHARP, CompileEvents

import flatmin
from flatmin.algorithms import check_params, simulation_params
from flatmin.method import get_method, problem_oracle

ALGORITHMS = ("gd", "sgd", "sam", "rs", "rs_noproj", "sa")


def make_step(problem, algorithm, params):
    """``step(x, key, t) -> (x_next, perturbed)`` with the checked ``params`` as constants."""
    method, hyper = get_method(algorithm), check_params(problem, algorithm, params)

    def step(x, key, t):
        out = method.direction(problem_oracle(problem), x, (), key, hyper)
        size = jnp.where(out.perturbed, hyper["eta_prime"], hyper["eta"]) if method.gated else hyper["eta"]
        return x - size * out.direction, out.perturbed

    return step

PARAMS = {"eta": 0.05, "eta_prime": 0.01, "rho": 0.3, "eps0": 0.5, "batch_size": 1, "final_gd_steps": 4}
SWEEP = ({}, {"eta": 0.04, "eta_prime": 0.02, "rho": 0.2, "eps0": 2.0})


def params_of(algorithm, change):
    params = {**PARAMS, **change}
    return {k: v for k, v in params.items() if k in simulation_params(algorithm)}


def step_by_step(problem, algorithm, params, x0, seed, steps, gd_steps):
    """Iterates after every step and the perturbed flags, from make_step one step at a time."""
    step = jax.jit(make_step(problem, algorithm, params))
    gd = jax.jit(make_step(problem, "gd", {"eta": params["eta"]}))
    x, xs, flags = jnp.asarray(x0), [np.asarray(x0)], []
    for t in range(steps + gd_steps):
        x, perturbed = step(x, jax.random.fold_in(jax.random.PRNGKey(seed), t), t) if t < steps else gd(x, None, t)
        xs.append(np.asarray(x))
        flags.append(bool(perturbed) and t < steps)
    return np.array(xs), np.array(flags)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_swept_hyperparameters_give_the_step_of_make_step(hyperbola, algorithm):
    """Two calls at one shape (the second reuses the compiled loop) each follow their own parameters."""
    steps, every, seeds = 12, 4, [0, 3]
    x0 = HYPERBOLA_SHARP + np.array([0.05, -0.03])
    for change in SWEEP:
        params = params_of(algorithm, change)
        res = flatmin.run(hyperbola, algorithm, x0, params, steps, seeds, every, measure=False)
        for row, seed in enumerate(seeds):
            xs, flags = step_by_step(hyperbola, algorithm, params, x0, seed, steps, params["final_gd_steps"])
            np.testing.assert_allclose(res.iterates[row], xs[[0, 4, 8, 12, 16]], rtol=1e-13, atol=1e-15)
            fractions = [flags[a:b].mean() for a, b in ((0, 4), (4, 8), (8, 12), (12, 16))]
            np.testing.assert_array_equal(res.metrics[res.metrics.seed == seed]["perturbed_fraction"],
                                          [0.0, *fractions])


@pytest.mark.parametrize("algorithm", ["rs", "sa"])
def test_repeat_call_with_new_hyperparameters_does_not_recompile(hyperbola, algorithm):
    """A sweep over eta, eta', rho, eps0 and the flat test's eps at one shape traces and compiles nothing
    after its first call; a number of seeds not seen before compiles again (a new shape)."""
    x0 = HYPERBOLA_SHARP + np.array([0.05, -0.03])
    call = dict(steps=30, seeds=3, record_every=10, measure_after_gd=2)
    first = flatmin.run(hyperbola, algorithm, x0, params_of(algorithm, SWEEP[0]), eps=1e-2, **call)
    with CompileEvents() as compiles:
        swept = flatmin.run(hyperbola, algorithm, x0, params_of(algorithm, SWEEP[1]), eps=3e-2, **call)
    assert compiles.events == []
    assert not np.array_equal(first.iterates, swept.iterates)
    with CompileEvents() as compiles:
        flatmin.run(hyperbola, algorithm, x0, params_of(algorithm, SWEEP[1]), eps=3e-2, **{**call, "seeds": 5})
    assert compiles.events
