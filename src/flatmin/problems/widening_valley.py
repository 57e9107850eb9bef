"""Orvieto et al.'s widening valley: ``L(u, v) = v^2 ||u||^2 / 2``, ``u in R^m``, ``v in R``.

Orvieto, Kersting, Proske, Bach, Lucchi, "Anticorrelated Noise Injection for Improved Generalization",
ICML 2022, §3 (the widening valley). ``x = (u, v)``, ``d = m + 1``. The minima are ``{v = 0}`` and
``{u = 0}``; on ``{v = 0}`` the Hessian is ``diag(0_m, ||u||^2)``, so ``tr Hess L = ||u||^2``: the valley
widens as ``||u||`` shrinks, and the flattest minimum is the origin (``tr = 0``; there the two branches
meet and the minima are no manifold). The known flattest direction is ``-u``.

The gradient flow keeps ``||u||^2 - v^2`` and the direction of ``u`` (``du/dt = -v^2 u``, ``dv/dt =
-||u||^2 v``), so ``Phi`` is closed-form: from ``||u||^2 > v^2`` it ends at ``(u sqrt(1 - v^2/||u||^2), 0)``,
from ``v^2 > ||u||^2`` at ``(0, sign(v) sqrt(v^2 - ||u||^2))``. The sharp start is ``u = start (1, ..., 1)
/ sqrt(m)`` (``||u|| = start``), ``v = 0``, jittered by ``noise``. No training-loss form (one loss).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, jittered


def widening_limit(x, m: int):
    """``Phi(x)`` of the widening valley with ``u = x[:m]``, ``v = x[m]`` (module docstring)."""
    u, v = x[:m], x[m]
    uu, vv = jnp.sum(u**2), v**2
    on_v0 = jnp.concatenate([u * jnp.sqrt(jnp.clip(1.0 - vv / jnp.where(uu > 0, uu, 1.0), 0.0)), jnp.zeros(1)])
    on_u0 = jnp.concatenate([jnp.zeros(m), jnp.sign(v)[None] * jnp.sqrt(jnp.clip(vv - uu, 0.0))[None]])
    return jnp.where(uu >= vv, on_v0, on_u0)


@register_problem("widening_valley")
def widening_valley(m=2, start=2.0, noise=1e-3) -> Problem:
    """``L = v^2 ||u||^2 / 2`` (Orvieto et al. 2022); ``tr Hess L = ||u||^2`` on ``{v = 0}``.

    Args: m >= 1, the dimension of ``u``; start > 0, ``||u||`` at the sharp start; noise >= 0, its
    distance from the minima.
    """
    fam = "widening_valley"
    m = check_int(fam, "m", m, 1)
    start = check_float(fam, "start", start, 0.0, open_low=True)
    noise = check_float(fam, "noise", noise, 0.0)
    x_sharp = np.concatenate([np.full(m, start / np.sqrt(m)), [0.0]])
    return Problem(
        name=fam,
        dim=m + 1,
        loss=lambda x: 0.5 * x[m] ** 2 * jnp.sum(x[:m] ** 2),
        limit_map=lambda x: widening_limit(x, m),
        hessian_rank=1,
        flattest_trace=0.0,
        flattest_points=np.zeros((1, m + 1)),
        initial_point=jittered(x_sharp, noise),
        smoothness=start**2,  # the Hessian norm at the start, ||u||^2
        params=dict(m=m, start=start, noise=noise),
    )
