"""RS, randomly smoothed perturbation (Algorithm 1), with Theorem 1's schedule."""

from __future__ import annotations

import math

from flatmin._tree import axpy, project_out, unit_sphere
from flatmin.method import register_method
from flatmin.methods._gated import EPS0, RHO, Gated
from flatmin.theory import Schedule


def rs_point(params, rho, key):
    """``x + rho z``, ``z`` uniform on the unit sphere of the whole tree (drawn from ``key``): where RS
    evaluates the gradient."""
    return axpy(rho, unit_sphere(key, params), params)


@register_method
class RS(Gated):
    """Algorithm 1 (the gate: :class:`flatmin.methods._gated.Gated`)::

        g = grad f(x),  z ~ U(S^{d-1})
        v = Proj_perp(g) [grad f(x + rho z)]
    """

    name, label = "rs", "RS (Alg. 1)"
    reference = "Ahn, Jadbabaie, Sra, ICML 2024, Algorithm 1"
    params = {"rho": RHO, "eps0": EPS0}
    style = {"color": "C0", "linestyle": "-"}
    theory = Schedule(
        "Theorem 1",
        iterations=lambda eps, delta, dim: eps**-3 * delta**-4,
        decrease=lambda eps, delta, dim: delta**3 * eps**3,
        radius=lambda c2, eps, delta, dim: c2 * delta * math.sqrt(eps),
        rate="ε⁻³",
        decrease_rate="ε³",
    )
    project = True

    def perturbation(self, oracle, x, key, hyper):
        g = oracle.grad(x)
        w = oracle.grad(rs_point(x, hyper["rho"], key))
        return g, project_out(g, w) if self.project else w
