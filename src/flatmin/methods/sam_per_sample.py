"""1-SAM: SAM with a perturbation per sample (m-sharpness with m = 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flatmin.method import Cost, Method, Step, register_method
from flatmin.methods._gated import RHO
from flatmin.methods.sam import sam_point
from flatmin.methods.sgd import BATCH_SIZE, minibatch


@register_method
class SAMPerSample(Method):
    """Each sample's gradient at its own ascent point, averaged over the batch::

        B a uniform mini-batch (batch_size; None: every sample at hand)
        direction = mean_{i in B} grad f_i(x + rho g_i/||g_i||),   g_i = grad f_i(x)

    At batch size 1 it is SAM at batch size 1. It regularizes the trace of the Hessian, where full-batch
    SAM regularizes its top eigenvalue (Wen, Ma, Li, ICLR 2023).
    """

    name, label = "sam_per_sample", "1-SAM"
    reference = "Foret et al., ICLR 2021 (m-sharpness); Andriushchenko, Flammarion, ICML 2022; Wen, Ma, Li, ICLR 2023"
    needs = frozenset({"training_loss"})
    params = {"rho": RHO, "batch_size": BATCH_SIZE}
    cost = Cost(gradients=2)
    style = {"color": "C8", "linestyle": "-."}

    def direction(self, oracle, x, state, key, hyper):
        batch, _ = minibatch(oracle, key, hyper["batch_size"])
        if batch.size is None:
            raise ValueError("sam_per_sample needs the samples of the loss at hand: a training-loss problem, or in "
                             "the model API a batch whose leaves share a leading sample axis")

        def one(i):
            sample = batch.sample(i)
            return sample.grad(sam_point(x, sample.grad(x), hyper["rho"]))

        per_sample = jax.vmap(one)(jnp.arange(batch.size))
        return Step(jax.tree.map(lambda a: jnp.mean(a, axis=0), per_sample), state)

    def draws(self, hyper):
        return hyper["batch_size"] is not None
