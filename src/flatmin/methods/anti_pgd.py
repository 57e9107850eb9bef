"""Anti-PGD: gradient descent with anticorrelated perturbations."""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree

from flatmin.method import Method, Param, Step, register_method


@register_method
class AntiPGD(Method):
    """Orvieto et al.'s anticorrelated perturbed GD, as a direction::

        z' ~ N(0, I) drawn each step; the state is z (0 before the first step)
        direction = grad f(x) - sigma (z' - z)

    so a step of size ``eta`` moves ``x`` by ``-eta grad f(x) + (xi' - xi)`` with ``xi = eta sigma z``:
    the paper's perturbations ``xi_t ~ N(0, (eta sigma)^2 I)``, whose increments are anticorrelated.
    """

    name, label = "anti_pgd", "Anti-PGD"
    reference = "Orvieto, Kersting, Proske, Bach, Lucchi, ICML 2022"
    params = {"sigma": Param("noise scale sigma in gradient units: xi = eta sigma z", low=0)}
    style = {"color": "C5", "linestyle": "--"}

    def init(self, x, hyper):
        return jax.tree.map(jax.numpy.zeros_like, x)

    def direction(self, oracle, x, z, key, hyper):
        flat, unravel = ravel_pytree(x)
        z_next = unravel(jax.random.normal(key, flat.shape, flat.dtype))
        g = oracle.grad(x)
        return Step(jax.tree.map(lambda a, b, c: a - hyper["sigma"] * (c - b), g, z, z_next), z_next)
