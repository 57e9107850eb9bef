"""Diagonal linear net regression: ``f(u, v) = (1/2n) ||X (u*u - v*v) - y||^2``, ``n < p`` (docs/paper_notes.md §7).

``x = (u, v) in R^{2p}``, ``beta = u*u - v*v``. On ``X* = {X beta = y}`` the Hessian is ``(1/n) J^T J``
with ``J = X [diag(2u), -diag(2v)]``, so ``tr Hess = 4 sum_j c_j (u_j^2 + v_j^2)``, ``c_j = ||X_j||^2/n``.
For fixed ``beta`` this is smallest when ``u_j v_j = 0``, where it is ``4 sum_j c_j |beta_j|``: the
flattest minima solve the weighted basis pursuit LP ``min sum_j c_j |beta_j|  s.t.  X beta = y``.

Caveats. ``hessian_rank = n`` holds where ``J`` has rank ``n`` (e.g. at the start, every
``u_j v_j != 0``). At a sparse minimum (``|supp beta| < n``, e.g. the flattest one when the LP
recovers ``beta*``) the rank drops to ``|supp beta|``: ``X*`` is not a manifold there and ``f`` is
quartic off it. The default instance (seed 0) does not recover ``beta*``: its LP solution has ``n``
nonzeros and ``X*`` is a manifold there. Every basic solution (``u_j v_j = 0``, ``n`` nonzeros) is a
first-order stationary point of ``trbar`` on ``X*`` (so passes the flatness test of docs/paper_notes.md §1); only
LP-optimal ones are local minima of ``trbar`` on ``X*`` (second order: the LP's reduced costs).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, hessian_norm, jittered


class DiagonalNetData(NamedTuple):
    """Data of a ``diagonal_net`` instance (numpy float64).

    X: ``(n, p)`` design, iid N(0, 1). y: ``(n,)`` = ``X beta_star``. beta_star: ``(p,)``, ``sparsity``
    nonzeros, iid N(0, 1) on a uniform random support. weights: ``(p,)`` the ``c_j``. beta_flattest:
    ``(p,)`` the LP solution (a vertex, polished to machine precision on its support). beta_start:
    ``(p,)`` the minimum-l2-norm interpolator ``X^+ y`` (dense).
    """

    X: np.ndarray
    y: np.ndarray
    beta_star: np.ndarray
    weights: np.ndarray
    beta_flattest: np.ndarray
    beta_start: np.ndarray


@functools.lru_cache(maxsize=32)
def _data(n: int, p: int, sparsity: int, seed: int) -> DiagonalNetData:
    import scipy.optimize  # here rather than at module level: it adds about 0.5 s to every process importing flatmin

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    beta_star = np.zeros(p)
    beta_star[rng.choice(p, sparsity, replace=False)] = rng.standard_normal(sparsity)
    y = X @ beta_star
    c = np.sum(X**2, axis=0) / n
    # beta = b_plus - b_minus, both >= 0; dual simplex returns a vertex (support of size <= n).
    lp = scipy.optimize.linprog(
        np.concatenate([c, c]), A_eq=np.hstack([X, -X]), b_eq=y, bounds=(0, None), method="highs-ds"
    )
    if lp.status != 0:
        raise RuntimeError(f"diagonal_net: the weighted basis pursuit LP failed: {lp.message}")
    beta = lp.x[:p] - lp.x[p:]
    support = np.abs(beta) > 1e-9 * max(1.0, np.abs(beta).max())
    beta_flat = np.zeros(p)
    beta_flat[support] = np.linalg.lstsq(X[:, support], y, rcond=None)[0]  # X beta = y to ~1e-15
    return DiagonalNetData(X, y, beta_star, c, beta_flat, np.linalg.pinv(X) @ y)


def diagonal_net_data(problem: Problem) -> DiagonalNetData:
    """The arrays behind a ``diagonal_net`` problem (regenerated from its ``params``; cached)."""
    prm = problem.params
    return _data(prm["n"], prm["p"], prm["sparsity"], prm["seed"])


def _uv(beta, offset):
    """``(u, v)`` flattened, with ``u*u - v*v = beta`` and ``u_j, v_j >= sqrt(offset)``."""
    return np.concatenate(
        [np.sqrt(np.maximum(beta, 0) + offset), np.sqrt(np.maximum(-beta, 0) + offset)]
    )


@register_problem("diagonal_net")
def diagonal_net(n=10, p=30, sparsity=3, seed=0, offset=1.0, noise=1e-3) -> Problem:
    """Sparse regression with a diagonal linear net, ``n`` samples ``f_i = (1/2)(X_i beta - y_i)^2``.

    Args:
      n: samples, ``1 <= n < p``. p: features. sparsity: nonzeros of ``beta*``, in ``[1, p]``.
      seed: data seed (numpy), ``>= 0``.
      offset: ``> 0``; the sharp minimum ``x_s = (sqrt(beta_0^+ + offset), sqrt(beta_0^- + offset))``
        with ``beta_0 = X^+ y`` lies exactly on ``X*`` with
        ``trbar = (2/p) sum_j c_j (|beta_0j| + 2 offset)``.
      noise: ``>= 0``; ``initial_point(key) = x_s + noise * N(0, I)/sqrt(2p)``.

    ``flattest_points``: ``(u, v) = (sqrt(beta_f^+), sqrt(beta_f^-))`` for the LP solution ``beta_f``;
    every sign flip of ``u_j``, ``v_j`` is flattest too (``2^nnz`` points), and ``flattest_distance``
    is the distance to all of them, ``||(|u|, |v|) - (sqrt(beta_f^+), sqrt(beta_f^-))||``.
    ``flattest_trace = (2/p) sum_j c_j |beta_fj|``.
    The arrays: :func:`diagonal_net_data`. ``smoothness``: Hessian norm at ``x_s``.
    """
    fam = "diagonal_net"
    p = check_int(fam, "p", p, 2)
    n = check_int(fam, "n", n, 1, p - 1)
    sparsity = check_int(fam, "sparsity", sparsity, 1, p)
    seed = check_int(fam, "seed", seed, 0)
    offset = check_float(fam, "offset", offset, 0.0, open_low=True)
    noise = check_float(fam, "noise", noise, 0.0)
    data = _data(n, p, sparsity, seed)
    X, y = jnp.asarray(data.X), jnp.asarray(data.y)

    def sample_losses(x):
        return 0.5 * (X @ (x[:p] ** 2 - x[p:] ** 2) - y) ** 2

    def loss(x):
        return jnp.mean(sample_losses(x))

    x_sharp = _uv(data.beta_start, offset)
    x_flat = jnp.asarray(_uv(data.beta_flattest, 0.0))
    return Problem(
        name=fam,
        dim=2 * p,
        loss=loss,
        sample_losses=sample_losses,
        num_samples=n,
        hessian_rank=n,
        flattest_trace=float(2.0 / p * np.sum(data.weights * np.abs(data.beta_flattest))),
        flattest_points=x_flat[None],
        flattest_distance=lambda x: jnp.linalg.norm(jnp.abs(x) - x_flat),
        predictions=lambda x: X @ (x[:p] ** 2 - x[p:] ** 2),
        targets=y,
        initial_point=jittered(x_sharp, noise),
        smoothness=hessian_norm(loss, x_sharp),
        params=dict(n=n, p=p, sparsity=sparsity, seed=seed, offset=offset, noise=noise),
    )
