"""Label-noise SGD: SGD on the square loss with each sampled target perturbed."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flatmin.method import Method, Param, Step, register_method
from flatmin.methods.sgd import BATCH_SIZE, minibatch


@register_method
class LabelNoiseSGD(Method):
    """The gradient of the mini-batch loss with the batch's targets perturbed::

        B a uniform mini-batch (batch_size; None: the whole loss at hand)
        t_i' = t_i + sigma xi_i,  xi_i ~ N(0, 1) (noise = "gaussian") or U{-1, +1} (noise = "sign")
        direction = grad_x  mean_{i in B} l(p_i(x), t_i')

    Near the minima it follows the Riemannian gradient flow of the trace on a time scale of order
    ``eta^-2`` steps (Li, Wang, Arora, ICLR 2022). It needs the targets (a problem's ``predictions`` and
    ``targets``; in the model API ``targets=(get, put)``).
    """

    name, label = "label_noise_sgd", "label-noise SGD"
    reference = "Blanc, Gupta, Valiant, Valiant, COLT 2020; Damian, Ma, Lee, NeurIPS 2021"
    needs = frozenset({"training_loss", "targets"})
    params = {
        "sigma": Param("label noise scale sigma, in the targets' units", low=0),
        "noise": Param("the noise's law: gaussian N(0, sigma^2) or sign +-sigma", kind=str, default="gaussian",
                       choices=("gaussian", "sign")),
        "batch_size": BATCH_SIZE,
    }
    style = {"color": "C1", "linestyle": "-."}

    def direction(self, oracle, x, state, key, hyper):
        batch, key = minibatch(oracle, key, hyper["batch_size"])
        targets = batch.targets
        draw = jax.random.normal if hyper["noise"] == "gaussian" else jax.random.rademacher
        leaves, treedef = jax.tree.flatten(targets)
        keys = jax.random.split(key, len(leaves)) if len(leaves) > 1 else [key]
        noisy = treedef.unflatten([
            t + hyper["sigma"] * draw(k, jnp.shape(t), jnp.result_type(t, float)) for t, k in zip(leaves, keys)])
        return Step(jax.grad(lambda y: batch.loss_with_targets(y, noisy))(x), state)
