"""Negative control: symmetric factorisation ``f(U) = (1/4) ||U U^T - M||_F^2``, fully observed,
see docs/paper_notes.md §7.

``U in R^{m x r}``, ``x = U.reshape(-1)``, ``d = m r``, ``M = U* U*^T`` of rank ``r`` (``U*`` iid
N(0, 1/m)), so ``X* = {U* Q : Q in O(r)}``. At a minimum the Hessian's quadratic form is
``(1/2) ||D U^T + U D^T||_F^2``; on the basis ``D = E_ia`` it is ``||U_{:,a}||^2 + U_ia^2``, so
``tr Hess = (m + 1) ||U||_F^2 = (m + 1) tr M`` for every ``r``, and ``trbar = (m + 1) tr M / (m r)`` is
constant on ``X*``: every minimum is equally flat, and a correct method must not drift along ``X*``.
``hessian_rank = m r - r(r-1)/2`` (the codimension of the ``O(r)`` orbit).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, hessian_norm


@register_problem("factorization")
def factorization(m=6, r=2, seed=0, noise=1e-3) -> Problem:
    """``(1/4)||UU^T - M||_F^2`` with ``n = m^2`` samples, the entries: ``f_ij = (m^2/4)(UU^T - M)_ij^2``.

    Args:
      m: ``>= 1``. r: ``1 <= r <= m``, the rank of ``M`` and the number of columns of ``U``.
      seed: ``>= 0``, numpy seed of ``U*``.
      noise: ``>= 0``; ``initial_point(key) = U* Q + noise * N(0, I)/sqrt(d)`` with ``Q`` uniform
        (Haar) on ``O(r)`` from ``key``: near (on, if ``noise = 0``) a random point of ``X*``.

    ``flattest_points = U*``; every ``U* Q`` is as flat, so ``flattest_distance`` is the distance to
    ``X*``, ``min_Q ||U - U* Q||_F`` (orthogonal Procrustes: ``||U||^2 + ||U*||^2 - 2 ||U*^T U||_*``);
    ``smoothness``: the Hessian norm on ``X*``.
    """
    fam = "factorization"
    m = check_int(fam, "m", m, 1)
    r = check_int(fam, "r", r, 1, m)
    seed = check_int(fam, "seed", seed, 0)
    noise = check_float(fam, "noise", noise, 0.0)
    U_star = np.random.default_rng(seed).standard_normal((m, r)) / math.sqrt(m)
    M = jnp.asarray(U_star @ U_star.T)

    def sample_losses(x):
        U = x.reshape(m, r)
        return (m**2 / 4) * ((U @ U.T - M) ** 2).reshape(-1)

    def loss(x):
        return jnp.mean(sample_losses(x))

    def distance_to_minima(x):
        U = x.reshape(m, r)
        nuclear = jnp.sum(jnp.linalg.svd(jnp.asarray(U_star).T @ U, compute_uv=False))
        return jnp.sqrt(jnp.maximum(jnp.sum(U**2) + float(np.sum(U_star**2)) - 2.0 * nuclear, 0.0))

    def initial_point(key):
        k_rot, k_noise = jax.random.split(key)
        q, upper = jnp.linalg.qr(jax.random.normal(k_rot, (r, r), dtype=jnp.float64))
        q = q * jnp.sign(jnp.diag(upper))  # sign fix: Haar-distributed Q
        x = (jnp.asarray(U_star) @ q).reshape(-1)
        return x + noise / math.sqrt(m * r) * jax.random.normal(k_noise, x.shape, dtype=jnp.float64)

    return Problem(
        name=fam,
        dim=m * r,
        loss=loss,
        sample_losses=sample_losses,
        num_samples=m * m,
        hessian_rank=m * r - r * (r - 1) // 2,
        flattest_trace=float((m + 1) * np.trace(U_star @ U_star.T) / (m * r)),
        flattest_points=jnp.asarray(U_star.reshape(1, -1)),
        flattest_distance=distance_to_minima,
        initial_point=initial_point,
        smoothness=hessian_norm(loss, U_star.reshape(-1)),
        params=dict(m=m, r=r, seed=seed, noise=noise),
    )
