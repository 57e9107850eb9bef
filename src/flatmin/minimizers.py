"""A badly and a normally generalizing global minimizer of one network (Liu et al., 2020), the start of
the escape experiment (the paper's Figure 3, docs/paper_notes.md §6).

The *bad* minimizer: pre-training on a confusion set (:func:`flatmin.nets.confusion_set`: the training
inputs repeated with entries zeroed, uniformly random labels), then plain SGD on the clean training set
until 100% training accuracy. The *normal* minimizer: the same clean SGD from the same initialization.
Both interpolate the training set; the bad one has memorized noise first and generalizes worse. Damian
et al. (2021) and the paper's Figure 3 escape from it.

:func:`train_sgd` is the plain SGD of both phases, :func:`bad_and_normal_minimizers` the two trainings of
a given network, and :func:`build_minimizers` the whole construction from the data set's and the
network's description: data (:func:`flatmin.nets.load_data`), MLP (:class:`flatmin.nets.RaveledMLP`),
both minimizers and the clean training loss as a :class:`flatmin.Problem`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flatmin import nets
from flatmin._precision import require_x64
from flatmin.nets import _default_float

Array = jax.Array


def train_sgd(
    model: nets.RaveledMLP,
    x0: Array,
    inputs,
    labels,
    key: Array,
    lr: float,
    batch_size: int,
    max_epochs: int,
    eval_inputs=None,
    eval_labels=None,
    target_acc: float | None = 1.0,
    extra_epochs: int = 0,
    chunk_epochs: int = 5,
) -> tuple[Array, dict]:
    """Plain mini-batch SGD (no momentum, no weight decay), sampling without replacement per epoch.

    Runs in chunks of ``chunk_epochs`` epochs (one ``lax.scan`` each); after each chunk the accuracy
    on ``(eval_inputs, eval_labels)`` (default: the training data) is checked and training stops once it
    reaches ``target_acc`` (``None``: never), followed by ``extra_epochs`` more epochs (and more chunks
    if the accuracy has fallen below the target again by then, up to ``max_epochs`` more).

    Stops early if the iterate becomes non-finite (``info["diverged"]``).

    Returns ``(x, info)`` with ``info = {"epochs", "reached", "diverged", "loss", "acc"}``.
    """
    inputs = jnp.asarray(inputs, dtype=_default_float())
    labels = jnp.asarray(labels)
    n = labels.shape[0]
    b = min(int(batch_size), n)
    steps_per_epoch = n // b
    ev_x = inputs if eval_inputs is None else jnp.asarray(eval_inputs, dtype=_default_float())
    ev_y = labels if eval_labels is None else jnp.asarray(eval_labels)
    grad = jax.grad(model.mean_loss)

    @jax.jit
    def run_chunk(x, key, num_epochs_dummy):
        def epoch(carry, k):
            x = carry
            perm = jax.random.permutation(k, n)[: steps_per_epoch * b].reshape(steps_per_epoch, b)

            def step(x, idx):
                return x - lr * grad(x, inputs[idx], labels[idx]), None

            x, _ = jax.lax.scan(step, x, perm)
            return x, None

        keys = jax.random.split(key, num_epochs_dummy.shape[0])
        x, _ = jax.lax.scan(epoch, x, keys)
        return x

    chunk = jnp.zeros((chunk_epochs,))
    x = jnp.asarray(x0, dtype=_default_float())
    epochs, reached = 0, False
    acc_fn = jax.jit(model.accuracy)
    diverged = False
    while epochs < max_epochs:
        key, sub = jax.random.split(key)
        x = run_chunk(x, sub, chunk)
        epochs += chunk_epochs
        if not bool(jnp.all(jnp.isfinite(x))):
            diverged = True
            break
        if target_acc is not None and float(acc_fn(x, ev_x, ev_y)) >= target_acc:
            reached = True
            break
    if reached and extra_epochs > 0:
        for _ in range(int(math.ceil(extra_epochs / chunk_epochs))):
            key, sub = jax.random.split(key)
            x = run_chunk(x, sub, chunk)
            epochs += chunk_epochs
        # the extra epochs must end at the target too: continue until it holds again
        limit = epochs + max_epochs
        while float(acc_fn(x, ev_x, ev_y)) < target_acc and epochs < limit:
            key, sub = jax.random.split(key)
            x = run_chunk(x, sub, chunk)
            epochs += chunk_epochs
        reached = float(acc_fn(x, ev_x, ev_y)) >= target_acc and bool(jnp.all(jnp.isfinite(x)))
    info = {
        "epochs": epochs,
        "reached": reached,
        "diverged": diverged,
        "loss": float(jax.jit(model.mean_loss)(x, inputs, labels)),
        "acc": float(acc_fn(x, ev_x, ev_y)),
    }
    return x, info



def bad_and_normal_minimizers(model: nets.RaveledMLP, x_init: jax.Array, data: dict, *, key: jax.Array,
                              confusion: dict, clean: dict, confusion_loss: str = "ce") -> dict:
    """Train the bad and the normal minimizer of ``model`` from ``x_init`` (module docstring).

    Args:
      model: the network with its clean training loss (square loss for a minimum at 100% accuracy).
      x_init: ``(d,)`` the initialization of both.
      data: ``{"x", "y", "num_classes"}`` (as :func:`flatmin.nets.load_data` returns).
      key: draws the mini-batches of the confusion, the bad and the normal training.
      confusion: the confusion set and its training: ``repeats``, ``zero_frac``, ``seed`` (of the set),
        ``lr``, ``batch_size``, ``epochs`` (a fixed number: random labels are never all fitted).
      clean: :func:`train_sgd`'s ``lr``, ``batch_size``, ``max_epochs``, ``extra_epochs``.
      confusion_loss: the loss of the pre-training; cross-entropy memorizes random labels far better
        than the square loss, which is what makes the minimizer bad.

    Returns:
      ``{"x_confusion", "x_bad", "x_normal", "info": {"confusion", "bad", "normal"}, "seconds":
      {"confusion", "clean_bad", "clean_normal"}}``, ``info`` the logs of :func:`train_sgd`
      (the confusion log's accuracy as ``confusion_acc``).

    Raises:
      RuntimeError: a clean training did not reach 100% training accuracy.
    """
    conf_model = model.with_loss(confusion_loss)
    k_conf, k_bad, k_normal = jax.random.split(key, 3)
    seconds = {}

    t0 = time.perf_counter()
    xc, yc = nets.confusion_set(data["x"], data["y"], confusion["repeats"], confusion["zero_frac"],
                                data["num_classes"], confusion["seed"])
    x_conf, info_conf = train_sgd(conf_model, x_init, xc, yc, k_conf, confusion["lr"],
                                  confusion["batch_size"], confusion["epochs"], target_acc=None)
    seconds["confusion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_bad, info_bad = train_sgd(model, x_conf, data["x"], data["y"], k_bad, **clean)
    seconds["clean_bad"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_normal, info_normal = train_sgd(model, x_init, data["x"], data["y"], k_normal, **clean)
    seconds["clean_normal"] = time.perf_counter() - t0
    for name, info in (("bad", info_bad), ("normal", info_normal)):
        if not info["reached"]:
            raise RuntimeError(
                f"the {name} minimizer did not reach 100% training accuracy in {clean['max_epochs']} epochs "
                f"(accuracy {info['acc']:.4f}, diverged: {info['diverged']}); lower the clean learning rate "
                "if it diverged, else allow more epochs"
            )
    info_conf["confusion_acc"] = info_conf.pop("acc")
    return {
        "x_confusion": x_conf,
        "x_bad": x_bad,
        "x_normal": x_normal,
        "info": {"confusion": info_conf, "bad": info_bad, "normal": info_normal},
        "seconds": seconds,
    }


def build_minimizers(*, data: str, n_train: int, n_test: int, data_seed: int, hidden: Sequence[int],
                     activation: str, loss: str, init_seed: int, init_scale: float, confusion: dict, clean: dict,
                     confusion_loss: str = "ce") -> dict:
    """Data, network, the bad and the normal minimizer (module docstring) and the clean training loss.

    Args:
      data, n_train, n_test, data_seed: the split of :func:`flatmin.nets.load_data` (``data_seed`` also
        seeds the confusion set).
      hidden: the widths of the hidden layers; the input and output widths are the data's.
      activation, loss, init_scale: the :class:`flatmin.nets.RaveledMLP` and its clean training loss.
      init_seed: the initialization is drawn from ``PRNGKey(init_seed)``, the mini-batches of the three
        trainings from ``PRNGKey(1000 + init_seed)``.
      confusion: ``repeats``, ``zero_frac``, ``lr``, ``batch_size``, ``epochs`` of the confusion set and its
        pre-training (:func:`bad_and_normal_minimizers`; the set's seed is ``data_seed``).
      clean: :func:`train_sgd`'s ``lr``, ``batch_size``, ``max_epochs``, ``extra_epochs``.
      confusion_loss: the loss of the pre-training.

    Returns:
      ``{"data"`` (numpy arrays), ``"model"``, ``"problem"`` (the clean training loss as a
      :class:`flatmin.Problem` named ``mlp_<data>``, its initial point the bad minimizer), ``"x_init"``,
      ``"x_confusion"``, ``"x_bad"``, ``"x_normal"``, ``"info"`` (training logs), ``"times"`` (seconds:
      ``data``, ``confusion``, ``clean_bad``, ``clean_normal``)``}``.

    Needs JAX's 64-bit mode (the Problem does), checked before anything is computed.
    """
    require_x64("flatmin.minimizers.build_minimizers")
    t0 = time.perf_counter()
    arrays = nets.load_data(data, n_train, n_test, data_seed)
    times = {"data": time.perf_counter() - t0}
    sizes = [arrays["x"].shape[1], *hidden, arrays["num_classes"]]
    model, x_init = nets.RaveledMLP.create(jax.random.PRNGKey(init_seed), sizes, activation, loss, init_scale)
    built = bad_and_normal_minimizers(model, x_init, arrays, key=jax.random.PRNGKey(1000 + init_seed),
                                      confusion={**confusion, "seed": data_seed}, clean=clean,
                                      confusion_loss=confusion_loss)
    times.update(built.pop("seconds"))
    problem = nets.mlp_problem(model, arrays["x"], arrays["y"], name=f"mlp_{data}", x0=built["x_bad"])
    return {"data": arrays, "model": model, "problem": problem, "x_init": x_init, **built, "times": times}
