"""The compiled multi-seed loops behind :func:`flatmin.run`, built once per shape.

A step here is ``step(x (d,), state, key, t, hyper) -> (x_next, state, perturbed)`` with ``state`` the
method's (any pytree, ``()`` for most) and ``hyper`` a dict of traced scalars (step sizes, rho, eps0,
...): the jitted loops below take ``hyper`` as an argument, so a sweep over hyperparameters at fixed
shapes reuses one compilation, and the compiled program, free of their values, is found again by the
persistent compilation cache in another process. Each builder is cached on the step function (itself
cached per problem, method and non-real parameters by :mod:`flatmin.algorithms`) and on what fixes
the program's structure; jit adds one compilation per number of seeds and of checkpoints.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flatmin.checkpoints import run_steps


def _first_bad(x, t, first_bad):
    """``t + 1`` the first time ``x`` (the iterate after step ``t``) is not finite."""
    return jnp.where((first_bad < 0) & ~jnp.all(jnp.isfinite(x)), t + 1, first_bad)


def _stack_first(first, rest):
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)


@functools.lru_cache(maxsize=64)
def _loop(step, init, gd_step, final_gd: bool):
    """The jitted ``(starts, seeds, hyper, main_bounds, final_bound) -> (iterates, states, fractions,
    first_bad)``.

    The main phase and the final GD phase are separate loops, so a main step computes no GD step
    beside it; ``final_gd`` says whether the second loop exists. ``init(x0, hyper)`` is the method's
    first state; the final GD phase keeps the last one.
    """

    def one_seed(x0, seed, hyper, main_bounds, final_bound):
        key = jax.random.PRNGKey(seed)
        state0 = init(x0, hyper)

        def main_step(carry, k, t):
            x, state, count, first_bad = carry
            x, state, perturbed = step(x, state, k, t, hyper)
            return x, state, count + perturbed, _first_bad(x, t, first_bad)

        def segment(carry, bound):
            x, state, first_bad = carry
            x, state, count, first_bad = run_steps(main_step, (x, state, 0, first_bad), bound[0], bound[1], key=key)
            return (x, state, first_bad), (x, state, count / (bound[1] - bound[0]))

        (x, state, first_bad), (xs, states, fractions) = jax.lax.scan(
            segment, (x0, state0, jnp.array(-1)), main_bounds)
        if final_gd:
            def gd(t, carry):
                x, first_bad = carry
                x = gd_step(x, (), None, t, hyper)[0]
                return x, _first_bad(x, t, first_bad)

            x, first_bad = jax.lax.fori_loop(final_bound[0], final_bound[1], gd, (x, first_bad))
            xs, fractions = jnp.concatenate([xs, x[None]]), jnp.r_[fractions, 0.0]
            states = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), states, state)
        return (jnp.concatenate([x0[None], xs]), _stack_first(state0, states), jnp.r_[0.0, fractions],
                first_bad)

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, None, None)))


def run_loop(step, init, gd_step, hyper: dict, starts, seeds, checkpoints: np.ndarray, main_steps: int):
    """Iterates ``(num_seeds, num_checkpoints, d)`` at ``checkpoints``, the method's states there (leading
    axes the same), the perturbed fraction of each checkpoint interval ``(num_seeds, num_checkpoints)``
    and per seed the first step whose iterate is not finite (-1: none). Steps after ``main_steps`` are
    ``gd_step``s."""
    bounds = np.c_[checkpoints[:-1], checkpoints[1:]]
    final_gd = bool(checkpoints[-1] > main_steps)
    main_bounds, final_bound = (bounds[:-1], bounds[-1]) if final_gd else (bounds, bounds[-1])
    iterates, states, fractions, first_bad = _loop(step, init, gd_step, final_gd)(
        starts, np.asarray(seeds), hyper, main_bounds, final_bound)
    return iterates, states, np.asarray(fractions), np.asarray(first_bad)


@functools.lru_cache(maxsize=64)
def _resimulation(step, length: int):
    """The jitted ``(starts, states, seeds, lo, hi, resolution, hyper) -> (points, ends, perturbed)`` of
    :func:`resimulate`."""

    def one_seed(x, state, seed, lo, hi, resolution, hyper):
        key = jax.random.PRNGKey(seed)

        def one_step(carry, k, t):
            x, state, count = carry
            x, state, perturbed = step(x, state, k, t, hyper)
            return x, state, count + perturbed

        def segment(carry, j):
            end = jnp.minimum(lo + j * resolution, hi)
            carry = run_steps(one_step, carry, jnp.minimum(lo + (j - 1) * resolution, hi), end, key=key)
            return carry, (carry[0], end, carry[2])

        return jax.lax.scan(segment, (x, state, jnp.array(0)), jnp.arange(1, length + 1))[1]

    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, 0, 0, None, None)))


def resimulate(step, hyper: dict, starts, states, seeds, lo: np.ndarray, hi: np.ndarray, resolution: int):
    """Per row, the main-phase steps ``lo .. hi`` from ``starts`` and the method's ``states`` there
    again (the same keys, so the same iterates up to rounding): the iterates every ``resolution`` steps
    and at ``hi``, shape ``(rows, length, d)``, the steps they follow, ``(rows, length)`` (repeating
    ``hi`` at the end of shorter rows), and how many of the steps from ``lo`` to each were perturbed,
    ``(rows, length)``."""
    length = int(-(-int(np.max(hi - lo)) // resolution))
    return _resimulation(step, length)(starts, states, np.asarray(seeds), lo, hi, resolution, hyper)


@functools.lru_cache(maxsize=64)
def _descent(gd_step, steps: int):
    def descend(x, hyper):
        return jax.lax.fori_loop(0, steps, lambda t, y: gd_step(y, (), None, t, hyper)[0], x)

    return jax.jit(jax.vmap(descend, in_axes=(0, None)))


def descend(gd_step, hyper: dict, points, steps: int):
    """``points`` ``(n, d)`` after ``steps`` GD steps each."""
    return _descent(gd_step, steps)(points, hyper)
