"""RS without the projection: the ablation that shows what Proj_perp does."""

from __future__ import annotations

from flatmin.method import register_method
from flatmin.methods.rs import RS


@register_method
class RSNoProjection(RS):
    """RS with ``v = grad f(x + rho z)`` unprojected: its normal kicks keep the iterates off the minima."""

    name, label = "rs_noproj", "RS, no projection"
    reference = "ablation of Algorithm 1"
    style = {"color": "C9", "linestyle": "--"}
    theory = None
    project = False
