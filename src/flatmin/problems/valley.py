"""Valleys: ``x = (u, w)``, ``u in R^m``, ``w in R^k``, ``f = (1/2) sum_j c_j b(u) w_j^2``,
see docs/paper_notes.md §5, §7.

``X* = {w = 0}``, ``hessian_rank = k``, and at ``w = 0`` the Hessian is ``diag(0_m, c b(u))``, so
``trbar(u, 0) = C b(u)`` with ``C = sum_j c_j / (m + k)`` and ``dPhi`` projects on the ``u``-coordinates.
Each ``b >= 1`` with ``min b = 1``, so ``flattest_trace = C``. Training-loss form: ``n = k`` samples
``f_j = (k/2) c_j b(u) w_j^2``, the square loss ``(1/2) (p_j - 0)^2`` of the predictions
``p_j = sqrt(k c_j b(u)) w_j`` against targets 0. No closed-form ``Phi`` (``u`` moves ``O(||w||^2)``; integrate the flow).
Three shapes ``b``, one registered name each:

- ``valley_bowl``: ``b = 1 + ||u||^2/2``, trace strongly convex along ``X*``, flattest at ``u = 0``.
- ``valley_ramp``: the ramp of docs/paper_notes.md §5, ``trbar`` falls with slope ``s = slope_factor sqrt(eps)``
  over a drop ``drop``, then bottoms out smoothly at ``u = 0``.
- ``valley_wells``: a tilted double well in each ``u_i``, flat minima at every ``u in {-1, +1}^m``,
  flattest at ``u = (1, ..., 1)``.
- ``valley_split``: one factor per direction (``m = 1``, ``k = 2``), so that the trace and the top
  eigenvalue of the Hessian have different minimizers along ``X*``: what tells a method that lowers the
  trace (1-SAM, label-noise SGD, RS, SA) from one that lowers the top eigenvalue (full-batch SAM).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from flatmin.problem import Problem, register_problem
from flatmin.problems._common import check_float, check_int, jittered


def _check_sizes(fam, m, k, curvatures):
    """Validated ``m``, ``k`` and the curvature scales ``c (k,)`` (default all 1)."""
    m = check_int(fam, "m", m, 1)
    k = check_int(fam, "k", k, 1)
    c = np.ones(k) if curvatures is None else np.asarray(curvatures, dtype=np.float64).reshape(-1)
    if c.shape != (k,) or not np.all(np.isfinite(c) & (c > 0)):
        raise ValueError(
            f"{fam}: curvatures must be {k} (= k) positive numbers, got {curvatures!r}"
        )
    return m, k, c


def _valley(fam, shape, u_sharp, u_flat, m, k, c, noise, params, flattest_distance=None,
            flattest_trace=None) -> Problem:
    """The valley with shape ``b: u (m,) -> ()`` (or ``(k,)``, one factor per direction ``w_j``), sharp
    minimum ``(u_sharp, 0)``, flattest ``(u_flat, 0)`` (``flattest_distance``: when the flattest minima are
    more than that point; ``flattest_trace``: when ``min b`` is not 1 there)."""
    noise = check_float(fam, "noise", noise, 0.0)
    c_j = jnp.asarray(c)

    def sample_losses(x):
        return (k / 2) * c_j * shape(x[:m]) * x[m:] ** 2

    def predictions(x):  # b >= 1: the square loss of these against targets 0 is sample_losses
        return jnp.sqrt(k * c_j * shape(x[:m])) * x[m:]

    u_sharp = np.broadcast_to(np.asarray(u_sharp, dtype=np.float64), (m,))
    x_sharp = np.concatenate([u_sharp, np.zeros(k)])
    x_flat = np.concatenate([np.broadcast_to(u_flat, (m,)), np.zeros(k)])[None]
    return Problem(
        name=fam,
        dim=m + k,
        loss=lambda x: jnp.mean(sample_losses(x)),
        sample_losses=sample_losses,
        predictions=predictions,
        targets=jnp.zeros(k),
        num_samples=k,
        hessian_rank=k,
        flattest_trace=float(c.sum() / (m + k)) if flattest_trace is None else flattest_trace,
        flattest_points=jnp.asarray(x_flat),
        flattest_distance=flattest_distance,
        initial_point=jittered(x_sharp, noise),
        smoothness=float(jnp.max(c_j * shape(jnp.asarray(u_sharp)))),  # Hessian norm at (u_sharp, 0)
        params=dict(params, m=m, k=k, curvatures=c.tolist(), noise=noise),
    )


@register_problem("valley_bowl")
def valley_bowl(m=2, k=2, curvatures=None, start=2.0, noise=1e-3) -> Problem:
    """``b(u) = 1 + ||u||^2/2``; sharp start ``u = start * (1, ..., 1)``, flattest ``u = 0``.

    ``curvatures``: ``k`` positive ``c_j`` (default all 1). ``noise``: start distance from ``X*``.
    """
    fam = "valley_bowl"
    m, k, c = _check_sizes(fam, m, k, curvatures)
    start = check_float(fam, "start", start)
    return _valley(
        fam, lambda u: 1.0 + 0.5 * jnp.sum(u**2), start, 0.0, m, k, c, noise, dict(start=start)
    )


@register_problem("valley_ramp")
def valley_ramp(
    eps=1e-3, slope_factor=2.0, drop=1.0, width=1.0, m=1, k=2, curvatures=None, noise=1e-3
) -> Problem:
    """The ramp: ``trbar(u, 0) = C + s width q(u_1/width) + (C/2) ||u_{2:}||^2``, ``q(z) = sqrt(1+z^2)-1``.

    ``s = slope_factor sqrt(eps)``. ``|d trbar/du_1| = s |q'|`` tends to ``s`` on the ramp and is at
    most ``sqrt(eps)`` only where ``|u_1| <= width / sqrt(slope_factor^2 - 1)`` (everywhere if
    ``slope_factor <= 1``): the ``(eps, sqrt(eps))``-flatness test fails on the ramp and passes only
    near the bottom ``u = 0``. The sharp start ``u_1 = width z0`` sits where ``trbar - C = drop``.

    Args: eps > 0; slope_factor > 0; drop > 0 (in units of ``trbar``); width > 0 (of the bottom).
    """
    fam = "valley_ramp"
    m, k, c = _check_sizes(fam, m, k, curvatures)
    eps = check_float(fam, "eps", eps, 0.0, open_low=True)
    factor = check_float(fam, "slope_factor", slope_factor, 0.0, open_low=True)
    drop = check_float(fam, "drop", drop, 0.0, open_low=True)
    width = check_float(fam, "width", width, 0.0, open_low=True)
    const = c.sum() / (m + k)  # C
    slope = factor * math.sqrt(eps)
    z0 = math.sqrt((1.0 + drop / (slope * width)) ** 2 - 1.0)  # s width q(z0) = drop

    def shape(u):
        q = jnp.sqrt(1.0 + (u[0] / width) ** 2) - 1.0
        return 1.0 + slope * width * q / const + 0.5 * jnp.sum(u[1:] ** 2)

    u_sharp = np.zeros(m)
    u_sharp[0] = width * z0
    return _valley(
        fam,
        shape,
        u_sharp,
        0.0,
        m,
        k,
        c,
        noise,
        dict(eps=eps, slope_factor=factor, drop=drop, width=width),
    )


@register_problem("valley_wells")
def valley_wells(
    asymmetry=0.25, depth=1.0, start=2.0, m=1, k=2, curvatures=None, noise=1e-3
) -> Problem:
    """``b(u) = 1 + depth sum_i phi(u_i)``, ``phi' = (z^2 - 1)(z + asymmetry)``, ``phi(1) = 0``.

    ``phi(z) = z^4/4 + a z^3/3 - z^2/2 - a z + 1/4 + 2a/3`` with ``a = asymmetry`` in ``[0, 1)``:
    wells at ``z = +1`` (``phi = 0``) and ``z = -1`` (``phi = 4a/3``), a ridge at ``z = -a``. So every
    ``u in {-1, +1}^m`` (``w = 0``) is a flat local minimum (a local minimum of ``trbar`` on ``X*``),
    with ``trbar = C (1 + depth (4a/3) #{i: u_i = -1})``; the flattest is ``u = (1, ..., 1)``. A start
    ``u = start * (1, ..., 1)`` with ``start < -a`` lies in the basin of the non-flattest well ``-1``.
    With ``a = 0`` both wells are equally flat: every ``(u, 0)`` with ``u in {-1, 1}^m`` is flattest and
    ``flattest_distance`` is the distance to all ``2^m`` of them.
    """
    fam = "valley_wells"
    m, k, c = _check_sizes(fam, m, k, curvatures)
    a = check_float(fam, "asymmetry", asymmetry, 0.0, 1.0, open_high=True)
    depth = check_float(fam, "depth", depth, 0.0, open_low=True)
    start = check_float(fam, "start", start)

    def shape(u):
        phi = u**4 / 4 + a * u**3 / 3 - u**2 / 2 - a * u + 0.25 + 2 * a / 3
        return 1.0 + depth * jnp.sum(phi)

    def distance_to_both_wells(x):
        return jnp.sqrt(jnp.sum((jnp.abs(x[:m]) - 1.0) ** 2) + jnp.sum(x[m:] ** 2))

    return _valley(
        fam, shape, start, 1.0, m, k, c, noise, dict(asymmetry=a, depth=depth, start=start),
        flattest_distance=distance_to_both_wells if a == 0 else None,
    )


def split_minimizers(top: float, side: float) -> tuple[float, float]:
    """``(u_trace, u_top)``: where ``valley_split(top, side)`` has its smallest trace and its smallest top
    eigenvalue along ``X*``."""
    return (top - side) / (top + side), 1.0


@register_problem("valley_split")
def valley_split(top=10.0, side=4.0, start=-2.0, noise=1e-3) -> Problem:
    """``f = (1/2) (l_1(u) w_1^2 + l_2(u) w_2^2)``, ``u`` in R, with the Hessian's eigenvalues on ``X*``::

        l_1(u) = top (1 + (u - 1)^2 / 2)     (the top one: smallest, top, at u = 1)
        l_2(u) = 1 + side (u + 1)^2 / 2      (smallest, 1, at u = -1)

    With ``top > 1 + 2 side``, ``l_1 > l_2`` at ``u = 1``, so the top eigenvalue ``max(l_1, l_2)`` is
    smallest at ``u_top = 1``, where the trace ``l_1 + l_2`` is smallest at
    ``u_trace = (top - side) / (top + side)`` (:func:`split_minimizers`; 3/7 at the defaults), the
    flattest point. The sharp start is ``u = start``. Training-loss form as every valley (``n = k = 2``).

    Args: top > 1 + 2 side; side > 0; start, the sharp start's ``u``; noise, its distance from ``X*``.
    """
    fam = "valley_split"
    side = check_float(fam, "side", side, 0.0, open_low=True)
    top = check_float(fam, "top", top, 1.0 + 2.0 * side, open_low=True)
    start = check_float(fam, "start", start)

    def shape(u):
        return jnp.stack([1.0 + 0.5 * (u[0] - 1.0) ** 2, 1.0 + 0.5 * side * (u[0] + 1.0) ** 2])

    u_trace, _ = split_minimizers(top, side)
    trace = top * (1.0 + 0.5 * (u_trace - 1.0) ** 2) + 1.0 + 0.5 * side * (u_trace + 1.0) ** 2
    return _valley(fam, shape, start, u_trace, 1, 2, np.array([top, 1.0]), noise,
                   dict(top=top, side=side, start=start), flattest_trace=trace / 3)
