"""A badly and a normally generalizing global minimizer of one network (Liu et al., 2020).

The *bad* minimizer: pre-training on a confusion set (:func:`flatmin.nets.confusion_set`: the training
inputs repeated with entries zeroed, uniformly random labels), then plain SGD on the clean training set
until 100% training accuracy. The *normal* minimizer: the same clean SGD from the same initialization.
Both interpolate the training set; the bad one has memorized noise first and generalizes worse. Damian
et al. (2021) and the paper's Figure 3 escape from it.
"""

from __future__ import annotations

import time

import jax

from flatmin import nets


def bad_and_normal_minimizers(model: nets.FlatMLP, x_init: jax.Array, data: dict, *, key: jax.Array,
                              confusion: dict, clean: dict, confusion_loss: str = "ce") -> dict:
    """Train the bad and the normal minimizer of ``model`` from ``x_init`` (module docstring).

    Args:
      model: the network with its clean training loss (square loss for a minimum at 100% accuracy).
      x_init: ``(d,)`` the initialization of both.
      data: ``{"x", "y", "num_classes"}`` (as :func:`flatmin.nets.load_data` returns).
      key: draws the mini-batches of the confusion, the bad and the normal training.
      confusion: the confusion set and its training: ``repeats``, ``zero_frac``, ``seed`` (of the set),
        ``lr``, ``batch_size``, ``epochs`` (a fixed number: random labels are never all fitted).
      clean: :func:`flatmin.nets.train_sgd`'s ``lr``, ``batch_size``, ``max_epochs``, ``extra_epochs``.
      confusion_loss: the loss of the pre-training; cross-entropy memorizes random labels far better
        than the square loss, which is what makes the minimizer bad.

    Returns:
      ``{"x_confusion", "x_bad", "x_normal", "info": {"confusion", "bad", "normal"}, "seconds":
      {"confusion", "clean_bad", "clean_normal"}}``, ``info`` the logs of :func:`flatmin.nets.train_sgd`
      (the confusion log's accuracy as ``confusion_acc``).

    Raises:
      RuntimeError: a clean training did not reach 100% training accuracy.
    """
    conf_model = nets.FlatMLP(model.sizes, model.activation, confusion_loss, model.unravel, model.dim)
    k_conf, k_bad, k_normal = jax.random.split(key, 3)
    seconds = {}

    t0 = time.perf_counter()
    xc, yc = nets.confusion_set(data["x"], data["y"], confusion["repeats"], confusion["zero_frac"],
                                data["num_classes"], confusion["seed"])
    x_conf, info_conf = nets.train_sgd(conf_model, x_init, xc, yc, k_conf, confusion["lr"],
                                       confusion["batch_size"], confusion["epochs"], target_acc=None)
    seconds["confusion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_bad, info_bad = nets.train_sgd(model, x_conf, data["x"], data["y"], k_bad, **clean)
    seconds["clean_bad"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_normal, info_normal = nets.train_sgd(model, x_init, data["x"], data["y"], k_normal, **clean)
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
