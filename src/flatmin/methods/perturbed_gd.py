"""Perturbed GD: gradient descent with i.i.d. Gaussian perturbations (the control of Anti-PGD)."""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree

from flatmin.method import Method, Param, Step, register_method


@register_method
class PerturbedGD(Method):
    """Uncorrelated perturbed GD, as a direction::

        z ~ N(0, I) drawn fresh each step (no state)
        direction = grad f(x) + sigma z

    so a step of size ``eta`` moves ``x`` by ``-eta grad f(x) - eta sigma z``: increments of the same
    marginal scale ``eta sigma`` as Anti-PGD's ``xi = eta sigma z`` (:mod:`flatmin.methods.anti_pgd`), but
    independent from step to step instead of anticorrelated. Their sum is a random walk of variance
    ``t (eta sigma)^2`` per coordinate, where Anti-PGD's telescopes to ``xi_t - xi_0``: the comparison of
    Orvieto et al. (PGD against Anti-PGD), the perturbed GD of Zhou et al. and of Jin et al.'s saddle escape.
    """

    name, label = "perturbed_gd", "perturbed GD"
    reference = ("Orvieto, Kersting, Proske, Bach, Lucchi, ICML 2022 (PGD); Zhou, Feng, Ma, Xiong, Hoi, E, "
                 "NeurIPS 2020; Jin, Ge, Netrapalli, Kakade, Jordan, ICML 2017")
    params = {"sigma": Param("noise scale sigma in gradient units: each step adds -eta sigma z, z ~ N(0, I)", low=0)}
    style = {"color": "C9", "linestyle": ":"}

    def direction(self, oracle, x, state, key, hyper):
        flat, unravel = ravel_pytree(x)
        z = unravel(jax.random.normal(key, flat.shape, flat.dtype))
        return Step(jax.tree.map(lambda g, n: g + hyper["sigma"] * n, oracle.grad(x), z), state)
