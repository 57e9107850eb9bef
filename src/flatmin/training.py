"""Mini-batch training with perturbed gradients, many trajectories at once, recorded at checkpoints.

The steps of the escape experiment (the paper's Figure 3), usable on any :class:`flatmin.Problem` with
per-sample losses: with a uniform mini-batch ``B``, ``x <- x - eta * direction``, the direction of any
registered method with ``f_B`` as the loss at hand (:func:`flatmin.value_and_perturbed_grad`), e.g.
``g_B = grad f_B(x)`` for SGD and ``g_B + Proj_perp(g_B)[grad f_B(x + rho s g_B/||g_B||)]`` for SA.
Trajectories are run side by side (vmap) between checkpoints, step ``t`` keyed by ``fold_in(key, t)``
(:mod:`flatmin.checkpoints`). A method that perturbs the targets (label-noise SGD) gets the
mini-batch's targets (the problem's ``predictions`` and ``targets``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flatmin.checkpoints import run_steps
from flatmin.method import get_method
from flatmin.perturbed import value_and_perturbed_grad


#: The knobs :func:`minibatch_step` sweeps, in the order :func:`main_knob` looks for them.
KNOBS = ("rho", "sigma")


def main_knob(method: str) -> str | None:
    """The real-valued parameter a sweep of ``method`` runs over: ``rho`` (RS, SA, SAM, 1-SAM), ``sigma``
    (label-noise SGD), or None for a method with neither (SGD)."""
    params = get_method(method).params
    return next((k for k in KNOBS if k in params), None)


def minibatch_step(problem, method: str, batch_size: int, knob: str | None = "main", **options) -> Callable:
    """``step(x, key, eta, value) -> x_next``: one step of ``method`` (a registered method without state)
    on a uniform mini-batch of ``problem`` (module docstring), with its other parameters ``options``.

    ``value`` is the method's parameter ``knob`` (default ``"main"``: :func:`main_knob`, e.g. ``rho``
    of RS and SA, ``sigma`` of label-noise SGD; ignored by a method without one, e.g. SGD); ``eta``
    and ``value`` may be traced, so one compilation serves every value. ``key`` splits into a batch key
    and a perturbation key the same way for every method: one key draws the same mini-batch whatever the
    method, and ``rho = 0`` (``sigma = 0``) gives the SGD step exactly. A larger batch is drawn without
    replacement. A method that perturbs the targets (label-noise SGD) gets the batch's targets and its
    loss with them replaced (``targets=(get, put)`` of the model API): the problem's
    ``predictions_of`` and ``targets``, whose square loss is the problem's.
    """
    found = get_method(method)
    if knob == "main":
        knob = main_knob(method)
    elif knob is not None and (knob not in found.params or not found.params[knob].traced):
        allowed = [k for k, p in found.params.items() if p.traced] or ["none"]
        raise ValueError(f"minibatch_step: knob {knob!r} is not a real parameter of method {found.name!r}; "
                         f"allowed: {', '.join(allowed)}")
    takes_knob = knob is not None and knob in found.params
    labelled = "targets" in found.needs
    if labelled and problem.predictions is None:
        raise ValueError(f"minibatch_step: method {found.name!r} perturbs the targets: problem {problem.name!r} "
                         "has no predictions and targets (a square loss)")
    n = problem.num_samples
    if labelled:
        targets = jnp.asarray(problem.targets)

        def batch_loss(x, batch):  # batch = (idx, the targets of idx, maybe replaced)
            idx, t = batch
            return jnp.mean(problem.square_losses(problem.predictions_of(x, idx), t))

        io = {"targets": (lambda batch: batch[1], lambda batch, t: (batch[0], t))}
        as_batch = lambda idx: (idx, targets[idx])  # noqa: E731
    else:
        def batch_loss(x, idx):
            return jnp.mean(problem.losses_of(x, idx))

        io, as_batch = {}, lambda idx: idx  # noqa: E731
    # checks the method and its options now, not inside the compiled step
    value_and_perturbed_grad(batch_loss, method, **io, **options, **({knob: 0.0} if takes_knob else {}))

    def step(x, key, eta, value):
        k_batch, k_pert = jax.random.split(key)
        if batch_size == 1:
            idx = jax.random.randint(k_batch, (1,), 0, n)
        else:
            idx = jax.random.choice(k_batch, n, (batch_size,), replace=False)
        given = {knob: value} if takes_knob else {}
        _, g = value_and_perturbed_grad(batch_loss, method, **io, **options, **given)(x, as_batch(idx), k_pert)
        return x - eta * g

    return step


def segment_runner(step: Callable) -> Callable:
    """``advance(xs, keys, args, start, stop)``: steps ``start, ..., stop - 1`` of every trajectory.

    Trajectory ``i`` moves by ``x <- step(x, fold_in(keys[i], t), args[i])`` (``args``: any pytree with
    a leading trajectory axis, e.g. radii). Compiled once: ``start`` and ``stop`` are traced.
    """

    @jax.jit
    def advance(xs, keys, args, start, stop):
        def one(x, key, arg):
            return run_steps(lambda y, k, t: step(y, k, arg), x, start, stop, key=key)

        return jax.vmap(one)(xs, keys, args)

    return advance


def run_checkpointed(step: Callable, start, checkpoints, measure: Callable, *, keys: jax.Array, args,
                     name: str = "run") -> tuple[np.ndarray, jax.Array]:
    """Trajectories from one ``start``, advanced by :func:`segment_runner` and measured at ``checkpoints``.

    Args:
      step: ``step(x, key, arg) -> x_next``.
      start: ``(d,)``, the start of every trajectory.
      checkpoints: increasing steps, the first one the start (e.g. :func:`flatmin.checkpoints.checkpoint_steps`).
      measure: ``measure(xs (n, d)) -> (n, m)`` values recorded at every checkpoint.
      keys: ``(n, ...)`` one random key per trajectory.
      args: per-trajectory argument of ``step``, leading axis ``n``.
      name: names the run in the error raised on divergence.

    Returns:
      ``(values (n, len(checkpoints), m), last iterates (n, d))``.

    Raises:
      FloatingPointError: an iterate became non-finite (named by the checkpoint it did not reach).
    """
    advance = segment_runner(step)
    x = jnp.broadcast_to(start, (len(keys), *jnp.shape(start)))
    records = [np.asarray(measure(x))]
    for a, b in zip(checkpoints[:-1], checkpoints[1:]):
        x = advance(x, keys, args, int(a), int(b))
        if not bool(jnp.all(jnp.isfinite(x))):
            raise FloatingPointError(f"{name} diverged before step {b}; lower the step size or the radius")
        records.append(np.asarray(measure(x)))
    return np.stack(records, axis=1), x
