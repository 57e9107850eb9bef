"""The gate shared by RS and SA (Algorithms 1 and 2): perturb only near a stationary point."""

from __future__ import annotations

import math

import jax

from flatmin._tree import tree_norm, tree_where
from flatmin.method import Cost, Method, Param, Step

EPS0 = Param("the gate: the step is perturbed where ||grad f(x)|| <= eps0 (math.inf: always perturbed)",
             default=math.inf, low=0, low_open=True, allow_inf=True)
RHO = Param("perturbation radius rho", low=0)


class Gated(Method):
    """A gated perturbation::

        g, v = perturbation(x)
        if ||g|| <= eps0:  direction = g + v     (flatmin.run steps eta')
        else:              direction = g         (flatmin.run steps eta)

    A subclass defines :meth:`perturbation`, returning the gradient ``g`` that the gate tests and the
    perturbation ``v``."""

    gated = True
    cost = Cost(gradients=2)
    unperturbed_cost = Cost(gradients=1)

    def perturbation(self, oracle, x, key, hyper):
        raise NotImplementedError

    def direction(self, oracle, x, state, key, hyper):
        g, v = self.perturbation(oracle, x, key, hyper)
        perturbed = tree_norm(g) <= hyper["eps0"]
        total = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), g, v)
        return Step(tree_where(perturbed, total, g), state, perturbed)
