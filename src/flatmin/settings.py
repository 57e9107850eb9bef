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
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, WithJsonSchema, model_validator

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
        loc = [str(part) for part in item["loc"]]
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
TheoryAlgorithm = Literal["rs", "sa"]
Algorithm = Literal["gd", "rs", "rs_noproj", "sa", "sgd", "sam"]
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


class EpsLists(Spec):
    """eps values per algorithm; an algorithm left out is not run."""

    rs: list[Eps] | None = Field(None, min_length=1, description="RS's eps values, a non-empty list of numbers > 0")
    sa: list[Eps] | None = Field(None, min_length=1, description="SA's eps values, a non-empty list of numbers > 0")


class TheoryConstants(Spec):
    """Constants of :func:`flatmin.theory_params` (defaults in ``flatmin.theory.DEFAULT_CONSTANTS``)."""

    beta: float | None = Field(None, gt=0, description="smoothness constant beta (eta = c / beta), a number > 0; "
                               "default the problem's smoothness")
    c: float | None = Field(None, gt=0, description="step size constant (eta = c / beta), a number > 0")
    c0: float | None = Field(None, gt=0, description="gate constant (eps0 = c0 delta^1.5 eps), a number > 0")
    c1: float | None = Field(None, gt=0, description="perturbed step constant (eta' = c1 delta eps), a number > 0")
    c2: float | None = Field(None, gt=0, description="radius constant of rho, a number > 0")
    cT: float | None = Field(None, gt=0, description="budget constant (T = cT times the iteration bound), a number > 0")


class ConstantsPerAlgorithm(Spec):
    rs: TheoryConstants | None = Field(None, description="RS's theory constants ({} for the defaults)")
    sa: TheoryConstants | None = Field(None, description="SA's theory constants ({} for the defaults)")


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


class StepParams(Spec):
    """Step parameters of :func:`flatmin.run` (each algorithm takes those it uses)."""

    eta: float | None = Field(None, gt=0, description="GD step size eta, a number > 0")
    eta_prime: float | None = Field(None, gt=0, description="perturbed step size eta', a number > 0")
    rho: float | None = Field(None, gt=0, description="perturbation radius rho, a number > 0")
    eps0: float | None = Field(None, gt=0, description="gradient-norm gate eps0 of the perturbed branch, a number > 0")
    batch_size: Count | None = Field(None, ge=1, description="mini-batch size of SGD, SAM and SA, an integer >= 1")
    fallback_radius: float | None = Field(None, gt=0, description="SA's probe radius when a sample gradient vanishes, a number > 0")
    final_gd_steps: Count | None = Field(None, ge=0, description="plain GD steps after the main steps, an integer >= 0")


class RunInstance(Spec):
    """One problem run by several algorithms from one shared start."""

    label: str = Field(min_length=1, description="the instance's name in the table and the figure, a non-empty string")
    problem: ProblemSpec = Field(description="the problem, {name, params}")
    steps: Count = Field(ge=1, description="main steps of every algorithm, an integer >= 1")
    record_every: Count = Field(ge=1, description="checkpoint spacing in steps, an integer >= 1")
    shared: StepParams = Field(description="step parameters shared by every algorithm (each takes those it uses)")
    algorithms: dict[Algorithm, StepParams] = Field(
        min_length=1, description="the algorithms run, {algorithm: {overrides of shared}} with algorithm one of "
        "gd, sgd, sam, rs, rs_noproj, sa")


DimValues = list[Annotated[Count, Field(ge=1)]]
