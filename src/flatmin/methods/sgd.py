"""SGD: the gradient of a uniform mini-batch."""

from __future__ import annotations

import jax

from flatmin.method import Method, Param, Step, register_method

BATCH_SIZE = Param("mini-batch size B, drawn uniformly without replacement (None: the whole loss at hand; "
                   "in the model API the batch you pass)", kind=int, default=None, low=1, allow_none=True)


def minibatch(oracle, key, batch_size):
    """``(oracle of a mini-batch, key left)``: the whole loss when ``batch_size`` is None."""
    if batch_size is None:
        return oracle, key
    key_batch, key_rest = jax.random.split(key)
    return oracle.minibatch(key_batch, batch_size), key_rest


@register_method
class SGD(Method):
    """``direction = grad f_B(x)``, ``B`` a uniform mini-batch of ``batch_size`` samples."""

    name, label = "sgd", "SGD"
    reference = "stochastic gradient descent (Robbins and Monro, 1951)"
    needs = frozenset({"training_loss"})
    params = {"batch_size": BATCH_SIZE}
    style = {"color": "0.55", "linestyle": ":"}

    def direction(self, oracle, x, state, key, hyper):
        batch, _ = minibatch(oracle, key, hyper["batch_size"])
        return Step(batch.grad(x), state)

    def draws(self, hyper):
        return hyper["batch_size"] is not None
