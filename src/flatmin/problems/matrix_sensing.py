"""Symmetric matrix sensing: ``f(U) = (1/2N) sum_k (<A_k, U U^T> - y_k)^2``, ``U in R^{m x r}``,
see docs/paper_notes.md §7.

``x = U.reshape(-1)`` (row-major), ``d = m r``. ``A_k = (G_k + G_k^T)/2`` with ``G_k`` iid N(0, 1) entries
(so ``E <A_k, Z>^2 = ||Z||_F^2`` for symmetric ``Z``), ``y = A(U* U*^T)`` for a ground truth
``U* in R^{m x r_star}`` with iid N(0, 1/m) entries. On ``X* = {A(U U^T) = y}`` the Hessian is
``(1/N) J^T J``, ``J_k = 2 A_k U``, so ``tr Hess = 4 tr(U^T S U)``, ``S = (1/N) sum_k A_k^2``: the
flattest minima minimise the weighted nuclear norm ``tr(S UU^T)`` on ``X*`` (a convex problem in
``UU^T``). Under RIP the ground truth is (approximately) flattest; this is not claimed exactly, so
``flattest_trace`` and ``flattest_points`` are None (the ground truth: :func:`matrix_sensing_data`).

``hessian_rank = N`` where ``J`` has full rank (generic ``U`` of rank ``r``; the factory checks
``N <= m r - r(r-1)/2``). At the ground truth ``[U*, 0]`` (``r_star < r``) ``J`` has rank at most
``m r_star - r_star(r_star-1)/2``: ``X*`` is not a manifold there.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, hessian_norm, jittered


class MatrixSensingData(NamedTuple):
    """Arrays of a ``matrix_sensing`` instance (numpy float64).

    A: ``(N, m, m)`` symmetric sensing matrices. y: ``(N,)``. U_star: ``(m, r_star)``; the ground truth
    is ``U_star @ U_star.T``. x_ground_truth: ``(m r,)``, ``[U_star, 0]`` flattened, a point of ``X*``.
    x_sharp: ``(m r,)``, the sharp interpolator (Gauss-Newton projection of ``[U_star, 0] + init_scale
    G / sqrt(m)`` onto ``X*``, residual below 1e-13).
    """

    A: np.ndarray
    y: np.ndarray
    U_star: np.ndarray
    x_ground_truth: np.ndarray
    x_sharp: np.ndarray


def _measure(A, U):
    return np.einsum("kij,ij->k", A, U @ U.T)


def _project(A, y, U):
    """Gauss-Newton with minimum-norm steps onto ``{A(UU^T) = y}``; ``U (m, r)``; quadratic near it."""
    for _ in range(100):
        res = _measure(A, U) - y
        if np.max(np.abs(res)) < 1e-13 * max(1.0, np.max(np.abs(y))):
            return U
        jac = 2.0 * np.einsum("kij,ja->kia", A, U).reshape(len(y), -1)
        U = U - np.linalg.lstsq(jac, res, rcond=None)[0].reshape(U.shape)
    raise RuntimeError(
        "matrix_sensing: no interpolator found near the start; change seed or init_scale"
    )


@functools.lru_cache(maxsize=32)
def _data(m, r, r_star, N, seed, init_scale) -> MatrixSensingData:
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((N, m, m))
    A = (G + G.transpose(0, 2, 1)) / 2
    U_star = rng.standard_normal((m, r_star)) / np.sqrt(m)
    y = _measure(A, U_star)
    U_gt = np.pad(U_star, ((0, 0), (0, r - r_star)))
    U_sharp = _project(A, y, U_gt + init_scale * rng.standard_normal((m, r)) / np.sqrt(m))
    return MatrixSensingData(A, y, U_star, U_gt.reshape(-1), U_sharp.reshape(-1))


def matrix_sensing_data(problem: Problem) -> MatrixSensingData:
    """The arrays behind a ``matrix_sensing`` problem (regenerated from its ``params``; cached)."""
    prm = problem.params
    return _data(prm["m"], prm["r"], prm["r_star"], prm["N"], prm["seed"], prm["init_scale"])


@register_problem("matrix_sensing")
def matrix_sensing(m=10, r=5, r_star=1, N=30, seed=0, init_scale=2.0, noise=1e-3) -> Problem:
    """Over-parametrised matrix sensing, ``N`` samples ``f_k = (1/2)(<A_k, UU^T> - y_k)^2``.

    Args:
      m: ``>= 2``. r: columns, ``r_star <= r <= m``. r_star: ground-truth rank, ``>= 1``.
      N: measurements, ``1 <= N <= min(m r - r(r-1)/2, m(m+1)/2 - 1)`` (so minima form a manifold
        of codimension ``N`` away from rank-deficient points).
      seed: data seed (numpy), ``>= 0``. init_scale: ``> 0``, size of the random start before it is
        projected onto ``X*`` (larger: sharper, on average).
      noise: ``>= 0``; ``initial_point(key) = x_sharp + noise * N(0, I)/sqrt(d)``.

    ``smoothness``: Hessian norm at ``x_sharp``. No closed-form ``Phi``.
    """
    fam = "matrix_sensing"
    m = check_int(fam, "m", m, 2)
    r_star = check_int(fam, "r_star", r_star, 1, m)
    r = check_int(fam, "r", r, r_star, m)
    N = check_int(fam, "N", N, 1, min(m * r - r * (r - 1) // 2, m * (m + 1) // 2 - 1))
    seed = check_int(fam, "seed", seed, 0)
    init_scale = check_float(fam, "init_scale", init_scale, 0.0, open_low=True)
    noise = check_float(fam, "noise", noise, 0.0)
    data = _data(m, r, r_star, N, seed, init_scale)
    A, y = jnp.asarray(data.A), jnp.asarray(data.y)

    def sample_losses(x):
        U = x.reshape(m, r)
        return 0.5 * (jnp.einsum("kij,ij->k", A, U @ U.T) - y) ** 2

    def loss(x):
        return jnp.mean(sample_losses(x))

    return Problem(
        name=fam,
        dim=m * r,
        loss=loss,
        sample_losses=sample_losses,
        num_samples=N,
        hessian_rank=N,
        predictions=lambda x: jnp.einsum("kij,ij->k", A, x.reshape(m, r) @ x.reshape(m, r).T),
        targets=y,
        initial_point=jittered(data.x_sharp, noise),
        smoothness=hessian_norm(loss, data.x_sharp),
        params=dict(m=m, r=r, r_star=r_star, N=N, seed=seed, init_scale=init_scale, noise=noise),
    )
