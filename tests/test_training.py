"""Tests of flatmin.checkpoints: checkpoint grids and the fold_in key schedule."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import flatmin  # noqa: F401  (float64)
from flatmin.checkpoints import checkpoint_steps, run_steps


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
