"""The model API: any registered method (RS, SA, SAM, SGD, a method of your own) on a loss over any
pytree of parameters, its direction fed to any optax optimizer.

With ``f_B = loss_fn(., batch)``, the loss of the batch you pass, the returned gradient is the method's
direction (:meth:`flatmin.Method.direction`) with ``f_B`` as the whole loss at hand, for instance::

    "sgd":        g = grad f_B(x)
    "rs":         g + Proj_perp(g) [grad f_B(x + rho z)],            z ~ U(unit sphere of the whole tree)
    "sa":         g + Proj_perp(g) [grad f_B(x + rho s g/||g||)],    s ~ U{-1, +1}
    "sam":        grad f_B(x + rho g/||g||)

Inner products, norms and the sphere are those of the whole parameter vector (every leaf together),
as in the paper, where the parameters are one vector of R^d. The step size is the optimizer's: a gated
method's ``eps0`` (default: always perturbed) returns ``g`` where ``||g|| > eps0``, and its two step
sizes belong to :func:`flatmin.run`. The batch is yours, so ``batch_size`` stays unset; with batch
size 1, ``"sa"`` is the perturbation of Algorithm 2, larger batches the variant of its experiments.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from flatmin._model_inputs import check_finite, floating_part, scalar_loss
from flatmin.method import Method, Oracle, as_step, get_method


class PerturbedGradient:
    """A method's gradient on a model, with its state: ``state = f.init(params)``, then per step
    ``(value, grads), state = f(params, state, batch, key)``.

    ``value`` is ``loss_fn(params, batch)`` (with ``has_aux``, the pair ``(loss, aux)``) at the
    unperturbed parameters; ``grads`` has the structure of ``params`` (None at leaves that are not
    floating arrays, which are held fixed as in ``equinox.filter_grad``). ``key`` draws the method's
    randomness and may be left out by a method that draws none. Pure: the same key gives the same
    result; it jits and vmaps over keys; float32 parameters give float32 gradients. It is compiled by
    itself, once per ``loss_fn``, method, non-real parameters and shapes (real-valued parameters such
    as ``rho`` are arguments of the program), so it can also be called outside ``jit`` in a loop.

    Raises (on a call):
      ValueError: concrete parameters hold a NaN or an infinity (the message names the leaves; skipped
        under ``jit``), no floating-point leaf, or a method that draws random numbers got no key.
      TypeError: ``loss_fn`` does not return a scalar (with ``has_aux``: a pair whose first entry is one).
    """

    def __init__(self, loss_fn: Callable, method: Method, hyper: dict, has_aux: bool, targets):
        self.loss_fn, self.method, self.has_aux, self.targets_io = loss_fn, method, has_aux, targets
        self.static, traced = method.split(hyper)
        self.traced = {k: jnp.asarray(v) for k, v in traced.items()}
        self.draws = method.draws(hyper)

    def init(self, params):
        """The method's state before the first step (``()`` for a method without state)."""
        diff, _ = floating_part(params)
        return self.method.init(diff, {**dict(self.static), **self.traced})

    def __call__(self, params, state, batch, key: jax.Array | None = None):
        floating_part(params)
        check_finite(params)
        if key is None and self.draws:
            raise ValueError(f"method {self.method.name!r} draws random numbers: pass key=jax.random.PRNGKey(...)")
        value, grads, state = _program(self.loss_fn, self.method, self.static, self.has_aux, self.targets_io, params,
                                       state, batch, key, self.traced)
        return (value, grads), state


def perturbed_gradient(loss_fn: Callable, method: str, *, has_aux: bool = False, targets=None,
                       **params) -> PerturbedGradient:
    """``method``'s gradient of ``loss_fn(params, batch)`` as a :class:`PerturbedGradient`, for every
    method, with or without state (e.g. a method with anticorrelated noise).

    Args:
      loss_fn: ``loss_fn(params, batch) -> ()``, the mean loss over the batch (with ``has_aux``:
        ``-> (loss, aux)``, as in ``jax.value_and_grad``); ``params`` any pytree (a dict of arrays, an
        Equinox module, Flax parameters).
      method: a registered method name (:func:`flatmin.list_methods`).
      targets: ``(get, put)`` for a method that perturbs the targets (label-noise SGD): ``get(batch)`` the
        batch's targets, ``put(batch, targets)`` the batch with them replaced.
      params: the method's parameters (``flatmin.get_method(method).params``), e.g. ``rho``; each is
        checked, and a bad or unknown one is a ValueError naming the allowed ones.
    """
    found = get_method(method)
    hyper = found.resolve(params, f"perturbed_gradient({found.name!r})")
    if hyper.get("batch_size") is not None:
        raise ValueError(f"method {found.name!r}: batch_size = {hyper['batch_size']!r} sub-samples a loss with samples "
                         "(flatmin.run on a Problem); the model API's batch is the one you pass: leave batch_size out")
    if "targets" in found.needs and targets is None:
        raise ValueError(f"method {found.name!r} perturbs the targets: pass targets=(get, put), get(batch) -> the "
                         "targets and put(batch, targets) -> the batch with them replaced")
    return PerturbedGradient(loss_fn, found, hyper, has_aux, targets)


def value_and_perturbed_grad(loss_fn: Callable, method: str, rho=None, *, has_aux: bool = False, targets=None,
                             **params):
    """The gradient of a method without state as a drop-in for ``jax.value_and_grad(loss_fn)``.

    Args: as :func:`perturbed_gradient`; ``rho`` (RS, SA, SAM: the radius; ``rho = 0`` gives ``g``
    exactly) may be given by position, and may be a traced value (swept under ``vmap``); a method
    without a radius (SGD) ignores it.

    Returns:
      ``f(params, batch, key=None) -> (value, grads)`` (see :class:`PerturbedGradient`).

    Raises:
      ValueError: an unknown method or parameter, or a method with state (use
        :func:`perturbed_gradient`, which carries it).

    Example::

        grad_fn = flatmin.value_and_perturbed_grad(loss_fn, "sa", rho=0.05)
        loss, grads = grad_fn(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
    """
    if rho is not None and "rho" in get_method(method).params:  # ignored by a method without a radius
        params["rho"] = rho
    gradient = perturbed_gradient(loss_fn, method, has_aux=has_aux, targets=targets, **params)
    if gradient.method.stateful:
        raise ValueError(f"method {gradient.method.name!r} keeps a state across steps: use "
                         "flatmin.perturbed_gradient, whose init and call carry it")

    def value_and_grad(params, batch, key: jax.Array | None = None):
        return gradient(params, (), batch, key)[0]

    return value_and_grad


@eqx.filter_jit
def _program(loss_fn, method, static, has_aux, targets_io, params, state, batch, key, traced):
    # One compiled program per loss, method, structure and shape, shared by every gradient built for
    # them: the real-valued parameters are arguments, so a new rho neither traces nor keeps a program.
    diff, rest = floating_part(params)

    def full(p, batch=batch):
        out = loss_fn(eqx.combine(p, rest), batch)
        if not has_aux:
            return scalar_loss(out), None
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("loss_fn with has_aux=True must return a pair (loss, aux), got "
                            f"{type(out).__name__}")
        return scalar_loss(out[0]), out[1]

    oracle = Oracle(lambda p: full(p)[0], source="the loss you passed", **_samples(full, batch, targets_io))
    if has_aux:
        (loss, aux), g = jax.value_and_grad(full, has_aux=True)(diff)
        oracle.remember(diff, loss, g)
    step = as_step(method, method.direction(oracle, diff, state, key, {**dict(static), **traced}))
    value = (oracle.loss(diff), aux) if has_aux else oracle.loss(diff)
    return value, step.direction, step.state


def _samples(full, batch, targets_io) -> dict:
    """The per-sample and target parts of the oracle of a batch whose leaves share a leading sample axis
    (the loss of a one-sample slice is that sample's loss: the leading axis is taken as the samples'),
    and of its targets where ``targets_io`` says how to get and put them."""
    leaves = jax.tree.leaves(batch)
    out = {}
    if leaves and all(jnp.ndim(leaf) >= 1 for leaf in leaves) and len({jnp.shape(leaf)[0] for leaf in leaves}) == 1:
        def sample(i):
            one = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i, 1), batch)
            return Oracle(lambda p: full(p, one)[0], source="a sample of the batch you passed")

        out.update(sample=sample, size=int(jnp.shape(leaves[0])[0]))
    if targets_io is not None:
        get, put = targets_io
        out.update(targets=get(batch), loss_with_targets=lambda p, t: full(p, put(batch, t))[0])
    return out
