"""Test problems and their registry.

A :class:`Problem` bundles a loss ``f : R^d -> R`` with whatever is known about it in closed form.
Problem families are registered with :func:`register_problem` and built with :func:`make_problem`.
Every module in :mod:`flatmin.problems` is imported on first use of the registry, so a new family is
one file in that folder; a factory registered from the user's own script works the same way.

Problems compute in float64: building one (:class:`Problem`, :func:`make_problem`) with JAX's 64-bit mode
off raises :class:`flatmin._precision.Float64RequiredError`, which names the line that enables it,
``jax.config.update("jax_enable_x64", True)`` (:mod:`flatmin._precision`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flatmin._discovery import Discovery
from flatmin._precision import require_x64

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A loss with the structure the paper needs.

    Attributes:
      name: registry name of the family (informational).
      dim: ``d``, the number of parameters; ``loss`` takes an array of shape ``(d,)``.
      loss: ``x (d,) -> ()``, JAX-traceable, float64. Must equal the mean of ``sample_losses``
        when the latter is given.
      sample_losses: optional ``x (d,) -> (n,)``, the per-sample losses ``f_i`` of Setting 1
        (training losses). Required by SA, SGD and SAM.
      batch_losses: optional ``(x (d,), idx (B,) int) -> (B,)``, the losses of the samples ``idx``.
        Give it when computing all ``n`` sample losses is much dearer than ``B`` of them; by default
        ``sample_losses(x)[idx]``.
      num_samples: ``n``; when not given with ``sample_losses``, read off the length of its output at
        a zero vector (abstractly, nothing is computed); required with ``batch_losses`` alone.
      limit_map: optional closed form of ``Phi``, ``x (d,) -> (d,)``; when absent the gradient flow is
        integrated numerically (:func:`flatmin.limit_map`).
      hessian_rank: optional rank of the Hessian on the minima (= codimension of X*). When absent
        the rank is read off the spectrum (:func:`flatmin.tangent_projector`).
      min_loss: the value of ``f`` on its minima (0 for every family shipped here).
      flattest_trace: optional normalized trace ``tr(Hess f)/d`` at the flattest minima.
      flattest_points: optional array ``(k, d)`` of flattest minima (at least one; when the flattest
        minima are more than these points, ``flattest_distance`` gives the distance to all of them).
      flattest_distance: optional ``x (d,) -> ()``, the exact distance from ``x`` to the set of
        flattest minima, for families where that set is more than ``flattest_points`` (e.g. all the
        sign flips of a diagonal net's flattest point). Default: the nearest of ``flattest_points``.
      predictions, targets: optional, for a square loss: ``predictions: x (d,) -> (n, ...)`` and ``targets``
        ``(n, ...)`` (one row per sample, e.g. a classifier's logits and one-hot targets) with
        ``sample_losses(x)_i = square_loss_scale * sum((predictions(x)_i - targets_i)^2)`` (the sum over
        the trailing axes; a scalar per sample when there are none); what a method that perturbs the
        targets needs (label-noise SGD).
      batch_predictions: optional ``(x (d,), idx (B,) int) -> (B, ...)``, the predictions of the samples
        ``idx``, for when computing all ``n`` is much dearer (default ``predictions(x)[idx]``).
      square_loss_scale: the factor of that square loss (``1/2`` unless given).
      initial_point: optional ``key -> (d,)``: a sharp point near the minima, the default start.
      smoothness: optional bound ``beta`` on the Hessian norm near ``initial_point``; step sizes of
        the theory schedules are ``c / beta``.
      params: the factory's keyword arguments, for provenance.

    Raises:
      flatmin._precision.Float64RequiredError: built while JAX's 64-bit mode is off.
    """

    name: str
    dim: int
    loss: Callable[[Array], Array]
    sample_losses: Callable[[Array], Array] | None = None
    batch_losses: Callable[[Array, Array], Array] | None = None
    num_samples: int | None = None
    limit_map: Callable[[Array], Array] | None = None
    hessian_rank: int | None = None
    min_loss: float = 0.0
    flattest_trace: float | None = None
    flattest_points: Any = None
    flattest_distance: Callable[[Array], Array] | None = None
    predictions: Callable[[Array], Array] | None = None
    targets: Any = None
    batch_predictions: Callable[[Array, Array], Array] | None = None
    square_loss_scale: float = 0.5
    initial_point: Callable[[Array], Array] | None = None
    smoothness: float | None = None
    params: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        require_x64("flatmin.Problem")
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"Problem {self.name!r}: dim must be an integer >= 1, got {self.dim!r}")
        if self.sample_losses is not None and self.num_samples is None:
            object.__setattr__(self, "num_samples", self._count_samples())
        if self.is_training_loss and (self.num_samples is None or self.num_samples < 1):
            raise ValueError(
                f"Problem {self.name!r}: sample_losses/batch_losses need num_samples >= 1, "
                f"got {self.num_samples!r}"
            )
        if (self.predictions is None) != (self.targets is None) or (
                self.predictions is not None and self.sample_losses is None):
            raise ValueError(f"Problem {self.name!r}: predictions and targets go together, with sample_losses "
                             f"(their square loss); got predictions={self.predictions!r}, targets={self.targets!r}")
        if self.hessian_rank is not None and not 0 <= self.hessian_rank <= self.dim:
            raise ValueError(
                f"Problem {self.name!r}: hessian_rank must lie in [0, dim={self.dim}], "
                f"got {self.hessian_rank!r}"
            )

    def _count_samples(self) -> int:
        try:
            shape = jax.eval_shape(self.sample_losses, jax.ShapeDtypeStruct((self.dim,), jnp.float64)).shape
        except Exception as err:
            raise ValueError(f"Problem {self.name!r}: num_samples not given and sample_losses fails on a point of "
                             f"shape ({self.dim},): {err}") from err
        if len(shape) != 1:
            raise ValueError(f"Problem {self.name!r}: sample_losses must return shape (n,), got {shape}")
        return int(shape[0])

    @property
    def is_training_loss(self) -> bool:
        """Whether the problem is an empirical risk (Setting 1), so SA, SGD and SAM apply."""
        return self.sample_losses is not None or self.batch_losses is not None

    def losses_of(self, x: Array, idx: Array) -> Array:
        """Per-sample losses ``f_i(x)`` for ``i`` in ``idx`` (shape ``(B,)``)."""
        if self.batch_losses is not None:
            return self.batch_losses(x, idx)
        if self.sample_losses is None:
            raise ValueError(
                f"Problem {self.name!r} is not a training loss (no sample_losses): "
                "SA, SGD and SAM need one"
            )
        return self.sample_losses(x)[idx]

    def predictions_of(self, x: Array, idx: Array) -> Array:
        """The predictions of the samples ``idx`` (shape ``(B, ...)``; a problem with predictions only)."""
        if self.predictions is None:
            raise ValueError(f"Problem {self.name!r} has no predictions and targets (a square loss)")
        if self.batch_predictions is not None:
            return self.batch_predictions(x, idx)
        return self.predictions(x)[idx]

    def square_losses(self, predictions: Array, targets: Array) -> Array:
        """``square_loss_scale * sum((predictions_i - targets_i)^2)`` per sample (the sum over the trailing
        axes), shape ``(B,)``: the per-sample losses with the targets replaced."""
        trailing = tuple(range(1, jnp.ndim(predictions)))
        return self.square_loss_scale * jnp.sum((predictions - targets) ** 2, axis=trailing)

    def distance_to_flattest(self, x: Array) -> Array:
        """Euclidean distance from each row of ``x`` (shape ``(..., d)``) to the flattest minima:
        ``flattest_distance`` when given, else ``min_k ||x - flattest_points[k]||``. Shape ``(...)``.

        Raises:
          ValueError: the problem gives neither ``flattest_distance`` nor ``flattest_points``, or ``x``
            does not end in ``d``.
        """
        require_x64("flatmin.Problem.distance_to_flattest")
        x = jnp.asarray(x, dtype=jnp.float64)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"Problem {self.name!r}: points must have shape (..., {self.dim}), got {x.shape}")
        if self.flattest_distance is not None:
            flat = x.reshape(-1, self.dim)
            return jax.vmap(self.flattest_distance)(flat).reshape(x.shape[:-1])
        if self.flattest_points is None:
            raise ValueError(f"Problem {self.name!r} gives neither flattest_distance nor flattest_points")
        points = jnp.asarray(self.flattest_points, dtype=jnp.float64).reshape(-1, self.dim)
        return jnp.linalg.norm(x[..., None, :] - points, axis=-1).min(axis=-1)

    def start(self, key: Array) -> Array:
        """The default starting point, ``initial_point(key)`` (shape ``(d,)``)."""
        require_x64("flatmin.Problem.start")
        if self.initial_point is None:
            raise ValueError(f"Problem {self.name!r} has no initial_point: pass x0 explicitly")
        return jnp.asarray(self.initial_point(key), dtype=jnp.float64)


_REGISTRY: dict[str, Callable[..., Problem]] = {}


def register_problem(name: str):
    """Decorator registering a problem factory ``(**params) -> Problem`` under ``name``.

    Example::

        @flatmin.register_problem("my_bowl")
        def my_bowl(scale=1.0):
            return flatmin.Problem("my_bowl", 2, lambda x: scale * x[0] ** 2)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"problem name must be a non-empty string, got {name!r}")

    def decorator(factory: Callable[..., Problem]):
        _discover()  # the shipped families first, so a clash with one is reported here
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != factory.__qualname__:
            raise ValueError(f"problem {name!r} is already registered by {existing.__module__}")
        _REGISTRY[name] = factory
        return factory

    return decorator


_discover = Discovery("flatmin.problems")  # each module of flatmin.problems registers its families


def list_problems() -> list[str]:
    """Sorted names of every registered problem family."""
    _discover()
    return sorted(_REGISTRY)


def problem_factory(name: str) -> Callable[..., Problem]:
    """The factory registered under ``name`` (the shipped families included).

    Raises:
      KeyError: unknown name (the message lists the registered ones).
    """
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown problem {name!r}; registered problems: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_problem(name: str, **params) -> Problem:
    """Build the problem ``name`` with the factory's keyword ``params``.

    Raises:
      KeyError: unknown name (the message lists the registered ones).
      TypeError / ValueError: the factory rejects ``params``.
      flatmin._precision.Float64RequiredError: JAX's 64-bit mode is off (checked before the factory runs).
    """
    require_x64("flatmin.make_problem")
    factory = problem_factory(name)
    try:
        problem = factory(**params)
    except TypeError as err:
        raise TypeError(
            f"problem {name!r}: bad parameters {params!r}: {err}; its parameters: {inspect.signature(factory)}"
        ) from err
    if not isinstance(problem, Problem):
        raise TypeError(f"factory of problem {name!r} returned {type(problem).__name__}, not Problem")
    if not problem.params:
        problem = dataclasses.replace(problem, params=dict(params))
    return problem
