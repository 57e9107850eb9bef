"""SAM: sharpness-aware minimization, the gradient at the ascent point."""

from __future__ import annotations

import jax

from flatmin._tree import axpy, tree_norm
from flatmin.method import Cost, Method, Step, register_method
from flatmin.methods._gated import RHO
from flatmin.methods.sgd import BATCH_SIZE, minibatch


def sam_point(params, g, rho):
    """``x + rho g/||g||``, and ``x`` when ``g = 0``: where SAM evaluates the gradient."""
    norm = tree_norm(g)
    unit = jax.tree.map(lambda a: jax.numpy.where(norm > 0, a / jax.numpy.where(norm > 0, norm, 1.0), 0.0), g)
    return axpy(rho, unit, params)


@register_method
class SAM(Method):
    """``direction = grad f_B(x + rho g_B/||g_B||)``, ``g_B = grad f_B(x)`` (``x`` itself when ``g_B = 0``)."""

    name, label = "sam", "SAM"
    reference = "Foret, Kleiner, Mobahi, Neyshabur, ICLR 2021"
    needs = frozenset({"training_loss"})
    params = {"rho": RHO, "batch_size": BATCH_SIZE}
    cost = Cost(gradients=2)
    style = {"color": "C2", "linestyle": "-."}

    def direction(self, oracle, x, state, key, hyper):
        batch, _ = minibatch(oracle, key, hyper["batch_size"])
        return Step(batch.grad(sam_point(x, batch.grad(x), hyper["rho"])), state)

    def draws(self, hyper):
        return hyper["batch_size"] is not None
