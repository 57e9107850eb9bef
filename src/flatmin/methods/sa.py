"""SA, sharpness-aware perturbation (Algorithm 2), with Theorem 2's schedule."""

from __future__ import annotations

import math

import jax

from flatmin._tree import axpy, project_out, tree_norm, unit_sphere
from flatmin.method import Cost, Param, register_method
from flatmin.methods._gated import EPS0, RHO, Gated
from flatmin.methods.sgd import BATCH_SIZE
from flatmin.theory import Schedule

FALLBACK_RADIUS = 1e-9


def sa_point(grad_fn, params, g, rho, key_sign, key_fallback, fallback_radius=FALLBACK_RADIUS):
    """``x + rho s g/||g||`` with ``s`` a uniform sign drawn from ``key_sign``: where SA evaluates the
    gradient.

    When ``g = 0`` exactly the direction is that of ``grad_fn(x + xi)``, ``xi`` uniform on the sphere of
    radius ``fallback_radius`` (Remark 2; drawn from ``key_fallback``). That gradient is evaluated only
    when needed, except under ``vmap``, which evaluates both branches; ``fallback_radius=None`` drops
    it: a vanishing ``g`` then gives the point ``x`` itself.
    """
    norm = tree_norm(g)
    if fallback_radius is None:
        safe = jax.numpy.where(norm > 0, norm, 1.0)
        unit = jax.tree.map(lambda a: jax.numpy.where(norm > 0, a / safe, 0.0), g)
    else:
        def nearby_gradient():
            xi = jax.tree.map(lambda z: fallback_radius * z, unit_sphere(key_fallback, params))
            return grad_fn(axpy(1.0, xi, params))

        # cond, not where: outside vmap the fallback gradient is computed only when g = 0
        direction = jax.lax.cond(norm > 0, lambda: g, nearby_gradient)
        direction_norm = tree_norm(direction)  # > 0 almost surely
        unit = jax.tree.map(lambda a: a / direction_norm, direction)
    dtype = jax.tree.leaves(params)[0].dtype
    sign = jax.random.rademacher(key_sign, (), dtype=dtype)
    return axpy(rho * sign, unit, params)


@register_method
class SA(Gated):
    """Algorithm 2 (the gate: :class:`flatmin.methods._gated.Gated`)::

        B a uniform mini-batch of batch_size samples (None: the whole loss at hand),  s ~ U{-1, +1}
        u = grad f_B(x) / ||grad f_B(x)||
        g = grad f(x)   (projection = "full")   or   grad f_B(x)   (projection = "batch")
        v = Proj_perp(g) [grad f_B(x + rho s u)]

    With ``batch_size = 1`` and ``projection = "full"`` this is the algorithm Theorem 2 analyses; the
    escape experiment runs ``projection = "batch"`` with the gate open (``eps0 = math.inf``). When
    ``grad f_B(x) = 0`` exactly, ``u`` is the direction of ``grad f_B(x + xi)``, ``xi`` uniform on the
    sphere of radius ``fallback_radius`` (Remark 2; ``fallback = False`` drops it, and its extra
    gradient evaluation under ``vmap``). In the model API the loss you pass is the whole loss, so the
    two projections coincide.
    """

    name, label = "sa", "SA (Alg. 2)"
    reference = "Ahn, Jadbabaie, Sra, ICML 2024, Algorithm 2"
    needs = frozenset({"training_loss"})
    params = {
        "rho": RHO,
        "eps0": EPS0,
        "batch_size": BATCH_SIZE,
        "projection": Param("the gradient the gate tests and the perturbation is projected against: of the whole "
                            "loss (Algorithm 2) or of the mini-batch", kind=str, default="full",
                            choices=("full", "batch")),
        "fallback": Param("Remark 2's fallback direction where the batch gradient vanishes", kind=bool, default=True),
        "fallback_radius": Param("Remark 2's radius", default=FALLBACK_RADIUS, low=0, low_open=True),
    }
    style = {"color": "C3", "linestyle": "-"}
    theory = Schedule(
        "Theorem 2",
        iterations=lambda eps, delta, dim: eps**-2 / dim * max(1.0, 1.0 / (dim**3 * eps)) * delta**-4,
        decrease=lambda eps, delta, dim: dim * min(1.0, eps * dim**3) * delta**3 * eps**2,
        radius=lambda c2, eps, delta, dim: c2 * delta * min(1.0, dim**1.5 * math.sqrt(eps)),
        rate="d⁻¹ε⁻²max{1, 1/(d³ε)}",
        decrease_rate="d min{1,εd³} ε²",
        identity_factor=lambda dim: dim,
        identity="d ρ²/2 ∂trbar",
        needs_dim=True,
        final_gd_phase=True,
        fixed={"batch_size": 1},
    )

    def step_cost(self, hyper, perturbed):
        """Two gradients of the batch when perturbed (at ``x`` and at the SA point), one when not, and with
        ``projection = "full"`` and a batch, a gradient of the whole loss beside them for the gate (and the
        step that is not perturbed takes that one alone). Remark 2's extra gradient, evaluated only where
        the batch gradient vanishes exactly, is not counted."""
        full = hyper["projection"] == "full" and hyper["batch_size"] is not None
        if perturbed:
            return Cost(gradients=2, full_gradients=int(full))
        return Cost(gradients=0, full_gradients=1) if full else Cost(gradients=1)

    def perturbation(self, oracle, x, key, hyper):
        if hyper["batch_size"] is None:
            key_sign, key_fallback = jax.random.split(key)
            batch = oracle
        else:
            key_batch, key_sign, key_fallback = jax.random.split(key, 3)
            batch = oracle.minibatch(key_batch, hyper["batch_size"])
        g_batch = batch.grad(x)
        g = g_batch if hyper["projection"] == "batch" else oracle.full_grad(x)
        radius = hyper["fallback_radius"] if hyper["fallback"] else None
        point = sa_point(batch.grad, x, g_batch, hyper["rho"], key_sign, key_fallback, radius)
        return g, project_out(g, batch.grad(point))
