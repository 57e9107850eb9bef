"""GD: gradient descent, the baseline that stays at the sharp minimum it converges to."""

from __future__ import annotations

from flatmin.method import Method, Step, register_method


@register_method
class GD(Method):
    """``direction = grad f(x)``."""

    name, label = "gd", "GD"
    reference = "gradient descent"
    style = {"color": "black", "linestyle": "-"}

    def direction(self, oracle, x, state, key, hyper):
        return Step(oracle.grad(x), state)

    def draws(self, hyper):
        return False
