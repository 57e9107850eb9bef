"""The method contract: one file per algorithm, found automatically, shared by every use.

A method is a subclass of :class:`Method`, registered with :func:`register_method`. Every module of
:mod:`flatmin.methods` is imported on first use of the registry, so a new method is one file in that
folder, or in a file of the user's own (imported by the script, or named in the workflow config's
``method_modules``). The same definition drives the simulation on a :class:`flatmin.Problem`
(:func:`flatmin.run`, flat vectors, the compiled multi-seed loop) and the model API on any pytree
(:func:`flatmin.value_and_perturbed_grad`, :func:`flatmin.perturbed_gradient`).

Its lifecycle, per run and seed::

    state = method.init(x0, hyper)
    for t in steps:
        direction, state, perturbed = method.direction(oracle, x, state, key_t, hyper)
        x = x - (eta_prime if method.gated and perturbed else eta) * direction   # flatmin.run only

The model API returns ``direction`` as the gradient for an optax optimizer, which sets the step. The
``oracle`` (:class:`Oracle`) is the method's only access to the loss: values, gradients, per-sample
losses, mini-batches, and the gradient of the whole loss. ``hyper`` holds the method's parameters
(:attr:`Method.params`): the real-valued ones are traced arguments of the compiled programs (a sweep
over them compiles nothing new); the others (integers, flags, choices) fix the program's structure.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import get_opaque_trace_state

from flatmin._discovery import Discovery

#: What a method may need of the loss: a training loss is a mean of per-sample losses (Setting 1);
#: ``targets``: the samples' targets, which the method may replace (:meth:`Oracle.loss_with_targets`).
NEEDS = ("training_loss", "targets")


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter of a method: its type, bounds, default and meaning.

    Attributes:
      description: what it is, shown in errors and in the generated documentation.
      kind: ``float`` (traced: an argument of the compiled code), ``int``, ``bool`` or ``str``
        (static: part of the compiled program's structure).
      default: the value when not given; :data:`REQUIRED` when it must be given.
      low, high: bounds (``low_open``: ``value > low`` rather than ``>=``).
      choices: the allowed values of a ``str`` parameter.
      allow_none: None is allowed (e.g. "no mini-batch").
      allow_inf: ``math.inf`` is allowed (e.g. a gate that is always open).
    """

    description: str
    kind: type = float
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple | None = None
    allow_none: bool = False
    allow_inf: bool = False

    @property
    def traced(self) -> bool:
        return self.kind is float

    def allowed(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind is bool:
            text = "True or False"
        else:
            noun = "a number" if self.kind is float else "an integer"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"<= {self.high:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
            text += ", math.inf allowed" if self.allow_inf else (", finite" if self.kind is float else "")
        return text + (", or None" if self.allow_none else "")

    def check(self, where: str, name: str, value):
        """``value`` as the parameter's type, or a ValueError naming ``where``, ``name``, the value and
        what is allowed. Traced values pass unchecked (the caller's concrete values are checked)."""
        if isinstance(value, jax.core.Tracer):
            return value
        if value is None and self.allow_none:
            return None
        bad = ValueError(f"{where}: {name} = {value!r} is not allowed; expected {self.allowed()} ({self.description})")
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise bad
            return bool(value)
        if self.kind is str:
            if value not in (self.choices or ()) and not (self.choices is None and isinstance(value, str)):
                raise bad
            return value
        if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
            raise bad
        if self.kind is int:
            if not isinstance(value, (numbers.Integral, np.integer)):
                raise bad
            value = int(value)
        else:
            if not isinstance(value, (numbers.Real, np.number, jax.Array, np.ndarray)):
                raise bad
            value = float(value)
            if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
                raise bad
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad
        if self.high is not None and value > self.high:
            raise bad
        return value


@dataclasses.dataclass(frozen=True)
class Cost:
    """What one step costs in oracle queries: gradients and function values of the loss at hand (a
    mini-batch where the method draws one, else the whole loss), and gradients of the whole loss beside
    a mini-batch's (SA's gate and projection)."""

    gradients: int
    function_values: int = 0
    full_gradients: int = 0


class Step(NamedTuple):
    """What :meth:`Method.direction` returns: the direction (a pytree like ``x``), the new state and,
    for a gated method, whether the perturbed branch was taken (a boolean scalar)."""

    direction: Any
    state: Any = ()
    perturbed: Any = False


class Method:
    """Base class of a method; a subclass is one algorithm (see the module docstring).

    Class attributes a subclass sets:
      name: registry name (the config's and the results' name of the method).
      label: its name in figures and tables.
      reference: where it comes from.
      params: ``{name: Param}``, the parameters of its direction (not the step sizes, which belong to
        the simulation: ``eta`` and, for a gated method, ``eta_prime``).
      needs: a subset of :data:`NEEDS`.
      cost: oracle queries of one step (of a perturbed step, for a gated method);
        ``unperturbed_cost`` those of a step that is not perturbed (default ``cost``).
      gated: whether :func:`flatmin.run` steps ``eta_prime`` on perturbed steps and ``eta`` on the
        others (the gate of Algorithms 1 and 2).
      style: matplotlib keywords of its curves (``color``, ``linestyle``).
      theory: optional schedule of a theorem (:mod:`flatmin.theory`).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    needs: ClassVar[frozenset] = frozenset()
    cost: ClassVar[Cost] = Cost(gradients=1)
    unperturbed_cost: ClassVar[Cost | None] = None
    gated: ClassVar[bool] = False
    style: ClassVar[Mapping[str, Any]] = {}
    theory: ClassVar[Any] = None

    def init(self, x, hyper: Mapping):
        """The state before the first step (a pytree; ``()`` for a method without state)."""
        return ()

    def direction(self, oracle: Oracle, x, state, key: jax.Array, hyper: Mapping) -> Step:
        """One step's direction from ``x`` (module docstring)."""
        raise NotImplementedError(f"method {self.name!r} defines no direction")

    def draws(self, hyper: Mapping) -> bool:
        """Whether a step with these parameters draws random numbers (needs a key)."""
        return True

    def step_cost(self, hyper: Mapping, perturbed: bool) -> Cost:
        """The oracle queries of a step with these parameters: :attr:`cost`, or for a gated method's step
        that is not perturbed :attr:`unperturbed_cost` (default :attr:`cost`)."""
        if perturbed or not self.gated:
            return self.cost
        return self.unperturbed_cost or self.cost

    @property
    def stateful(self) -> bool:
        return type(self).init is not Method.init

    def resolve(self, params: Mapping, where: str) -> dict:
        """``params`` checked against :attr:`params` with the defaults filled in; a ValueError names
        ``where``, the bad key or value and the allowed ones."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ValueError(f"{where}: unknown parameter(s) {unknown} of method {self.name!r}; its parameters: {allowed}")
        missing = [k for k, p in self.params.items() if p.default is REQUIRED and k not in params]
        if missing:
            raise ValueError(f"{where}: method {self.name!r} needs parameter(s) {missing}: "
                             + "; ".join(f"{k}: {self.params[k].description}" for k in missing))
        return {k: p.check(where, k, params.get(k, p.default)) for k, p in self.params.items()}

    def split(self, hyper: Mapping) -> tuple[tuple, dict]:
        """``(static items, traced values)`` of resolved parameters: the static part keys the compiled
        program, the traced part is its argument."""
        static = tuple((k, v) for k, v in hyper.items() if not self.params[k].traced)
        return static, {k: v for k, v in hyper.items() if self.params[k].traced}


class Oracle:
    """A method's access to the loss at hand: ``loss``, ``grad``, ``value_and_grad`` at any point,
    ``full_grad`` (the gradient of the whole loss: the same as ``grad`` unless this oracle is a
    mini-batch of a larger loss), and where the loss has samples: ``size`` (how many are at hand),
    ``sample_losses`` (their losses), ``sample(i)`` (the oracle of the ``i``-th alone), ``minibatch(key,
    size)``, and where it has targets: ``targets`` and ``loss_with_targets(x, targets)`` (the loss at hand
    with the samples' targets replaced).

    The value and gradient at a point are computed once per point object while tracing, so a method
    and its caller asking for the gradient at the same ``x`` share one evaluation.
    """

    def __init__(self, loss: Callable, *, full_loss: Callable | None = None, sample_losses: Callable | None = None,
                 minibatch: Callable | None = None, sample: Callable | None = None, size: int | None = None,
                 targets=None, loss_with_targets: Callable | None = None, source: str = "the loss"):
        self._loss, self._full_loss = loss, full_loss
        self._sample_losses, self._minibatch, self._source = sample_losses, minibatch, source
        self._sample, self.size = sample, size
        self._targets, self._loss_with_targets = targets, loss_with_targets
        self._memo: dict[int, tuple] = {}

    def _hit(self, x):
        # the same point object, in the same trace: a value from inside a cond or scan body is not
        # reused outside it
        hit = self._memo.get(id(x))
        return hit if hit is not None and hit[0] is x and hit[3] == _trace_state() else None

    def loss(self, x):
        hit = self._hit(x)
        return hit[1] if hit is not None else self._loss(x)

    def value_and_grad(self, x):
        hit = self._hit(x)
        if hit is None:
            hit = self._memo[id(x)] = (x, *jax.value_and_grad(self._loss)(x), _trace_state())
        return hit[1], hit[2]

    def remember(self, x, value, grad) -> None:
        """Record the value and gradient at ``x`` computed by the caller."""
        self._memo[id(x)] = (x, value, grad, _trace_state())

    def grad(self, x):
        return self.value_and_grad(x)[1]

    def full_grad(self, x):
        if self._full_loss is None:
            return self.grad(x)
        return jax.grad(self._full_loss)(x)

    def sample_losses(self, x):
        if self._sample_losses is None:
            raise ValueError(f"{self._source} gives no per-sample losses: this method needs a training loss")
        return self._sample_losses(x)

    def sample(self, i) -> Oracle:
        """The oracle of the ``i``-th sample at hand alone (``i`` may be traced, e.g. under ``vmap``)."""
        if self._sample is None:
            raise ValueError(f"{self._source} gives no per-sample losses: this method needs a training loss")
        return self._sample(i)

    @property
    def targets(self):
        if self._targets is None:
            raise ValueError(f"{self._source} gives no targets: this method perturbs them (in the model API pass "
                             "targets=(get, put))")
        return self._targets

    def loss_with_targets(self, x, targets):
        """The loss at hand at ``x`` with the samples' targets replaced by ``targets``."""
        if self._loss_with_targets is None:
            raise ValueError(f"{self._source} gives no targets: this method perturbs them")
        return self._loss_with_targets(x, targets)

    def minibatch(self, key: jax.Array, size: int) -> Oracle:
        """The oracle of ``size`` samples drawn uniformly without replacement."""
        if self._minibatch is None:
            raise ValueError(f"{self._source} cannot be sub-sampled (batch_size = {size}): it has no samples "
                             "here (in the model API the batch you pass is the batch; leave batch_size out)")
        return self._minibatch(key, size)


def _trace_state():
    return get_opaque_trace_state(convention="flatmin")


def as_step(method: Method, out) -> Step:
    """``out`` if ``method.direction`` returned a :class:`Step`, else a TypeError saying what to return."""
    if isinstance(out, Step):
        return out
    raise TypeError(f"method {method.name!r}: direction must return flatmin.Step(direction, state, perturbed), "
                    f"got {type(out).__name__}")


def problem_oracle(problem) -> Oracle:
    """The oracle of a :class:`flatmin.Problem`: its loss, and for a training loss its samples (and, where
    the problem gives them, their predictions' targets)."""
    if not problem.is_training_loss:
        return Oracle(problem.loss, source=f"problem {problem.name!r}")
    n = problem.num_samples

    def of_samples(idx, loss, full_loss, source):
        def sample(i):
            one = idx[i][None]
            return Oracle(lambda y: problem.losses_of(y, one)[0], source=f"a sample of {problem.name!r}")

        labelled = problem.predictions is not None
        return Oracle(loss, full_loss=full_loss, sample_losses=lambda y: problem.losses_of(y, idx), sample=sample,
                      size=int(idx.shape[0]), minibatch=None if full_loss is not None else minibatch,
                      targets=jnp.asarray(problem.targets)[idx] if labelled else None,
                      loss_with_targets=(lambda y, t: jnp.mean(problem.square_losses(
                          problem.predictions_of(y, idx), t))) if labelled else None, source=source)

    def minibatch(key, size):
        idx = jax.random.choice(key, n, (size,), replace=False)
        return of_samples(idx, lambda y: jnp.mean(problem.losses_of(y, idx)), problem.loss,
                          f"a mini-batch of {problem.name!r}")

    return of_samples(jnp.arange(n), problem.loss, None, f"problem {problem.name!r}")


# --------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Method] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator registering a :class:`Method` subclass under its ``name``.

    Example::

        @flatmin.register_method
        class Heavy(flatmin.Method):
            name, label = "heavy_gd", "GD, twice the gradient"

            def direction(self, oracle, x, state, key, hyper):
                return flatmin.Step(2 * oracle.grad(x))
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method takes a subclass of flatmin.Method, got {cls!r}")
    name = cls.name
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"method {cls.__qualname__}: name must be an identifier, got {name!r}")
    bad = sorted(set(cls.needs) - set(NEEDS))
    if bad:
        raise ValueError(f"method {name!r}: unknown needs {bad}; allowed: {', '.join(NEEDS)}")
    for key, param in cls.params.items():
        if not isinstance(param, Param):
            raise TypeError(f"method {name!r}: params[{key!r}] must be a flatmin.Param, got {param!r}")
        if key in ("eta", "eta_prime", "final_gd_steps", "steps"):
            raise ValueError(f"method {name!r}: {key!r} is a parameter of the simulation, not of a method")
        if key in ("has_aux", "targets", "key"):
            raise ValueError(f"method {name!r}: {key!r} is a keyword of the model API, not a method parameter")
    _discover()
    existing = _REGISTRY.get(name)
    same = existing is not None and (type(existing).__module__, type(existing).__qualname__) == (
        cls.__module__, cls.__qualname__)
    if existing is not None and not same:
        raise ValueError(f"method {name!r} is already registered by {type(existing).__module__}."
                         f"{type(existing).__qualname__}")
    _REGISTRY[name] = cls()
    return cls


_discover = Discovery("flatmin.methods")  # each module of flatmin.methods registers its method


def list_methods() -> list[str]:
    """Sorted names of every registered method."""
    _discover()
    return sorted(_REGISTRY)


def get_method(name) -> Method:
    """The method registered under ``name`` (a :class:`Method` instance passes through).

    Raises:
      ValueError: unknown name (the message lists the registered ones).
    """
    if isinstance(name, Method):
        return name
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
