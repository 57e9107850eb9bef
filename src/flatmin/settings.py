"""Typed, validated experiment settings: the one place an experiment's keys are declared.

An experiment module defines ``class Settings(flatmin.settings.Settings)`` whose field defaults are
the paper profile's values and whose field descriptions document each key, and optionally
``PRESETS = {"quick": {key: value, ...}}``, named sets of overrides. :meth:`Settings.resolve` layers
the defaults, a preset and the user's keys, each key replacing the one below it whole, and validates
the result with pydantic; :func:`describe_errors` turns a validation error into lines that name the
key, the bad value and what is allowed.

The building blocks below (seeds, problem specs, eps lists, theory constants, step parameters) are
shared by the experiments, so a key means the same thing everywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, Strict, WithJsonSchema, model_validator

from flatmin._validation import seed_list

# --------------------------------------------------------------------------------------------------
# Base classes


class Spec(BaseModel):
    """A mapping with a fixed set of keys: a misspelt key is an error listing the allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields), key=str)
            if unknown:
                allowed = ", ".join(cls.model_fields)
                found = ", ".join(f"{name} = {data[name]!r}" for name in unknown)
                raise ValueError(f"unknown key {found} (allowed keys here: {allowed})")
        return data

    def as_dict(self) -> dict:
        """Plain Python values; an optional key left out stays left out."""
        return self.model_dump(mode="python", exclude_unset=True)


class Settings(Spec):
    """An experiment's settings. Subclasses give every field a default (the paper's value)."""

    @classmethod
    def resolve(cls, *layers: Mapping) -> Settings:
        """The defaults overridden by each of ``layers`` in turn, key by key (a key's value is replaced
        whole, never merged), validated. Raises :class:`pydantic.ValidationError`."""
        values = {name: field.get_default(call_default_factory=True) for name, field in cls.model_fields.items()}
        for layer in layers:
            values.update(copy.deepcopy(dict(layer)))
        return cls.model_validate(values)


def describe_errors(error: pydantic.ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per problem of ``error`` (raised validating ``model``): the dotted key under ``prefix``,
    the bad value, pydantic's message and the key's description."""
    lines = []
    for item in error.errors(include_url=False):
        loc = [str(part) for part in item["loc"] if part != "[key]"]  # a dict key's error: the key is named
        key = ".".join([prefix, *loc] if prefix else loc) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "value_error" and message.startswith("unknown key"):
            lines.append(f"{key}: {message}")
            continue
        expected = field_description(model, item["loc"])
        hint = f" (expected: {expected})" if expected else ""
        if item["type"] == "missing":
            lines.append(f"{key}: missing{hint}")
        else:
            lines.append(f"{key} = {item['input']!r}: {message}{hint}")
    return lines


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def field_description(model: type[BaseModel], loc) -> str | None:
    """The description of the innermost named field on the path ``loc`` through ``model``."""
    description, current = None, [model]
    for part in loc:
        fields = [m.model_fields[part] for m in current if isinstance(part, str) and part in m.model_fields]
        if fields:
            description = fields[0].description or description
            current = _models_in(fields[0].annotation)
    return description


def all_fields(model: type[BaseModel], prefix: str = ""):
    """``(dotted key, FieldInfo)`` of every field of ``model`` and of the models nested in it."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        yield key, field
        for nested in _models_in(field.annotation):
            yield from all_fields(nested, f"{key}.")


# --------------------------------------------------------------------------------------------------
# Building blocks

Count = Annotated[int, Strict()]
"""An integer (``True`` is not one); bounds are given per field with ``Field(ge=...)``."""

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _registered_method(name: str) -> str:
    from flatmin.method import get_method

    get_method(name)  # a ValueError listing the registered methods
    return name


def _theory_method(name: str) -> str:
    from flatmin.theory import schedule_of

    schedule_of(name)  # a ValueError listing the methods with a schedule
    return name


MethodName = Annotated[str, AfterValidator(_registered_method)]
"""A registered method (:func:`flatmin.list_methods`; a file of ``method_modules`` registers more)."""
TheoryAlgorithm = Annotated[str, AfterValidator(_theory_method)]
"""A method with a theorem's schedule (:func:`flatmin.theory.theory_methods`)."""
FlatCriterion = Literal["distance", "loss_gap"]
Eps = Annotated[float, Field(gt=0, description="a target accuracy eps, a number > 0")]


def _check_seeds(value):
    seed_list(value)
    return value


Seeds = Annotated[
    int | list[int],
    PlainValidator(_check_seeds),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 1},
                              {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}]}),
]


class ProblemSpec(Spec):
    """A problem of :func:`flatmin.make_problem`: ``{name, params}``."""

    name: str = Field(min_length=1, description="a problem name of flatmin.make_problem (flatmin.list_problems(), "
                      "or one registered by a file of problem_modules), a non-empty string")
    params: dict[str, Any] = Field({}, description="keyword arguments of flatmin.make_problem(name, **params), a mapping")


class SweepProblem(ProblemSpec):
    """A problem of an eps sweep, whose ``eps_param`` (optional) is set to each eps."""

    eps_param: Identifier | None = Field(None, description="optional, the keyword argument of the problem set to the "
                                         "sweep's eps (e.g. the ramp's eps)")


class LabelledProblem(SweepProblem):
    label: str = Field(min_length=1, description="the instance's name in the tables and figures, a non-empty string")


EpsLists = dict[TheoryAlgorithm, Annotated[list[Eps], Field(min_length=1)]]
"""eps values per method with a schedule, ``{method: [eps, ...]}``; a method left out is not run."""


class TheoryConstants(Spec):
    """Constants of :func:`flatmin.theory_params` (defaults in ``flatmin.theory.DEFAULT_CONSTANTS``)."""

    beta: float | None = Field(None, gt=0, description="smoothness constant beta (eta = c / beta), a number > 0; "
                               "default the problem's smoothness")
    c: float | None = Field(None, gt=0, description="step size constant (eta = c / beta), a number > 0")
    c0: float | None = Field(None, gt=0, description="gate constant (eps0 = c0 delta^1.5 eps), a number > 0")
    c1: float | None = Field(None, gt=0, description="perturbed step constant (eta' = c1 delta eps), a number > 0")
    c2: float | None = Field(None, gt=0, description="radius constant of rho, a number > 0")
    cT: float | None = Field(None, gt=0, description="budget constant (T = cT times the iteration bound), a number > 0")


ConstantsPerAlgorithm = dict[TheoryAlgorithm, TheoryConstants]
"""Theory constants per method with a schedule, ``{method: {constant: value}}`` (``{}``: the defaults)."""


class Instance(LabelledProblem):
    """A problem of an eps sweep with its own eps lists, constants, flat test and checkpoints (optional)."""

    eps: EpsLists | None = Field(None, description="optional, this instance's eps lists per algorithm, replacing the sweep's eps")
    constants: ConstantsPerAlgorithm | None = Field(
        None, description="optional, this instance's theory constants per algorithm, overriding the section's "
        "constants key by key (the theorems' constants depend on the instance)")
    flat_criterion: FlatCriterion | None = Field(None, description=(
        "optional, the first condition of Definition 3 that eps bounds on this instance: distance "
        "(||x - Phi(x)|| <= eps, the default) or loss_gap (f(x) - f(Phi(x)) <= eps)"))
    records: Count | None = Field(None, ge=1, description=(
        "optional, checkpoints per run on this instance, replacing the section's records, an integer >= 1"))


StepParams = dict[Identifier, Any]
"""Parameters of :func:`flatmin.run`: the simulation's (``eta``, ``eta_prime``, ``final_gd_steps``) and the
method's own (``flatmin.get_method(name).params``)."""


class RunInstance(Spec):
    """One problem run by several algorithms from one shared start."""

    label: str = Field(min_length=1, description="the instance's name in the table and the figure, a non-empty string")
    problem: ProblemSpec = Field(description="the problem, {name, params}")
    steps: Count = Field(ge=1, description="main steps of every algorithm, an integer >= 1")
    record_every: Count = Field(ge=1, description="checkpoint spacing in steps, an integer >= 1")
    shared: StepParams = Field(description="step parameters shared by every algorithm (each takes those it uses)")
    algorithms: dict[MethodName, StepParams | None] = Field(
        min_length=1, description="the methods run, {method: {overrides of shared}}, each a registered method "
        "(flatmin.list_methods())")

    @model_validator(mode="after")
    def _parameters_known(self):
        from flatmin.algorithms import simulation_params

        taken = {}
        for name, overrides in self.algorithms.items():
            allowed = simulation_params(name)
            taken.update(allowed)
            unknown = sorted(set(overrides or {}) - set(allowed))
            if unknown:
                raise ValueError(f"algorithms.{name}: unknown parameter(s) {unknown}; {name} takes {', '.join(allowed)}")
        unused = sorted(set(self.shared) - set(taken))
        if unused:
            raise ValueError(f"shared: parameter(s) {unused} taken by none of the methods run ({', '.join(self.algorithms)})")
        for name, overrides in self.algorithms.items():
            allowed = simulation_params(name)
            for key, value in {**self.shared, **(overrides or {})}.items():
                if key in allowed:
                    allowed[key].check(f"{name}", key, value)
        return self


DimValues = list[Annotated[Count, Field(ge=1)]]
