"""The workflow config: its top-level keys, the job keys of an experiment section, and the check that
resolves every section to the experiment's full settings.

A config (``config/config.yaml``, ``config/quick.yaml``, or a user's file) names folders, the user's
problem and experiment files, a ``preset`` and, per experiment, the job keys (``enabled``, ``threads``,
``mem_mb``, ``runtime``, ``shard_by``) plus any setting to change. :func:`check_config` returns the same
config with each section completed from the experiment's ``Settings`` (defaults = paper values, then
the preset's overrides, then the section's keys, each replacing the one below whole), or raises
:class:`ConfigError` listing every bad key with its value and what is allowed. The files of
``problem_modules`` are imported, and every problem spec of a section (``{name, params}``) is checked
against the registered problems and the parameters of the factory it names, so a job never starts on a
problem that cannot be built.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import Field, Strict

from flatmin import experiments
from flatmin._files import import_file
from flatmin.problem import list_problems, problem_factory
from flatmin.settings import Count, ProblemSpec, Spec, describe_errors

#: The top-level keys of a complete config; a --configfile with all of them replaces config/config.yaml.
REQUIRED_KEYS = ("profile", "output", "problem_modules", "jax_cache_dir", "experiments")
#: Output folders only the paper profile may write (the committed figures and tables).
COMMITTED_OUTPUTS = {"figures": "figures", "tables": "tables"}


class ConfigError(ValueError):
    """An invalid workflow config; the message lists every bad key with its value."""


class Output(Spec):
    results: str = Field(min_length=1, description="raw tables, <results>/<profile>/<experiment>.csv (not committed)")
    figures: str = Field(min_length=1, description="figures, <figures>/<experiment>.pdf and .png")
    tables: str = Field(min_length=1, description="audit and Table 1, <tables>/audit.md, audit.csv, table1.md, table1.tex")
    logs: str = Field(min_length=1, description="one log per job, <logs>/<profile>/<job>.log")


PythonFile = Annotated[str, Field(pattern=r"\.py$")]


class WorkflowConfig(Spec):
    profile: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="name of the profile; raw results go to "
                         "<output.results>/<profile>/")
    preset: str = Field("paper", description="the experiments' settings: paper (their defaults) or a preset "
                        "they define (quick)")
    output: Output = Field(description="output folders (relative to the folder Snakemake runs in)")
    problem_modules: list[PythonFile] = Field(description="Python files imported before every job, so problems they "
                                       "register with @flatmin.register_problem can be named in the experiments")
    experiment_modules: list[PythonFile] = Field([], description="Python files, each an experiment named after the file "
                                          "(the contract of flatmin.experiments)")
    method_modules: list[PythonFile] = Field([], description="Python files imported before every job, so methods they "
                                      "register with @flatmin.register_method can be named in the experiments")
    jax_cache_dir: str | None = Field(description="persistent JAX compilation cache folder (null to switch it off)")
    experiments: dict[str, dict[str, Any]] = Field(description="one section per experiment: job keys and settings")


class JobKeys(Spec):
    """The keys of an experiment section that the workflow reads; the experiment never sees them."""

    enabled: Annotated[bool, Strict()] = Field(description="run this experiment (true/false)")
    threads: Count = Field(1, ge=1, description="CPU threads of the compute job (JAX may use them all), an integer >= 1")
    mem_mb: Count = Field(2000, ge=100, description="memory of the compute job in MB (cluster scheduling), an integer >= 100")
    runtime: Count = Field(60, ge=1, description="expected wall time of the compute job in minutes: its cluster time "
                           "limit, and its priority (jobs with a longer runtime start first)")
    shard_by: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$",
        description="optional: the name of a list-valued key of this section (a dotted path for a nested "
        "one); the experiment then runs as one job per list entry, each seeing a one-entry list, and the "
        "tables are concatenated. Only for keys whose entries give independent rows")


JOB_KEYS = tuple(JobKeys.model_fields)


def split_section(section: Mapping) -> tuple[dict, dict]:
    """``(job keys, settings)`` of an experiment section."""
    return ({k: v for k, v in section.items() if k in JOB_KEYS},
            {k: v for k, v in section.items() if k not in JOB_KEYS})


def _validated(model, values, prefix: str, errors: list[str]):
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as error:
        errors.extend(describe_errors(error, model, prefix))
        return None


def check_config(config: Mapping, base: str | os.PathLike | None = None) -> dict:
    """Validate ``config`` and return it with every experiment section resolved: the job keys (with
    their defaults) followed by the experiment's full settings. Loads the files of
    ``experiment_modules`` (relative to ``base``, default the cwd). Raises :class:`ConfigError`."""
    errors: list[str] = []
    top = _validated(WorkflowConfig, config, "", errors)
    if top is None:
        raise _error(errors)
    try:
        experiments.load_experiment_files(top.experiment_modules, base)
    except experiments.ExperimentError as error:
        raise ConfigError(f"invalid flatmin config: {error}") from None
    errors.extend(_import_user_modules("problem_modules", top.problem_modules, base))
    errors.extend(_import_user_modules("method_modules", top.method_modules, base))
    known = experiments.experiment_names()
    presets = {"paper"} | {p for name in known for p in getattr(experiments.get(name), "PRESETS", {})}
    if top.preset not in presets:
        errors.append(f"preset = {top.preset!r}: unknown preset (allowed: {', '.join(sorted(presets))})")
    sections = {}
    for name, section in top.experiments.items():
        if name not in known:
            errors.append(f"experiments.{name}: unknown experiment (known: {', '.join(known)}; "
                          "add a file of your own to experiment_modules)")
            continue
        job, overrides = split_section(section)
        job_keys = _validated(JobKeys, job, f"experiments.{name}", errors)
        module = experiments.get(name)
        layers = [getattr(module, "PRESETS", {}).get(top.preset, {}), overrides]
        try:
            settings = module.Settings.resolve(*layers)
        except pydantic.ValidationError as error:
            errors.extend(describe_errors(error, module.Settings, f"experiments.{name}"))
            continue
        errors.extend(problem_errors(settings, f"experiments.{name}"))
        if job_keys is not None:
            sections[name] = {**job_keys.model_dump(exclude_none=True), **settings.as_dict()}
    if top.profile != "paper":
        for key, committed in COMMITTED_OUTPUTS.items():
            if os.path.normpath(getattr(top.output, key)) == committed:
                errors.append(
                    f"output.{key} = {getattr(top.output, key)!r} with profile {top.profile!r}: only the paper "
                    f"profile may write the committed {committed}/ folder; choose e.g. build/{top.profile}/{committed}"
                )
    if errors:
        raise _error(errors)
    return {**top.model_dump(), "experiments": sections}


def _import_user_modules(key: str, paths: list[str], base) -> list[str]:
    """Import each file of ``problem_modules`` or ``method_modules`` (``key``; as the jobs will), so the
    problems and methods they register are known to the checks; one error line per file that is missing
    or fails to import."""
    errors = []
    for index, raw in enumerate(paths):
        path = (Path(base if base is not None else Path.cwd()) / raw).resolve()
        if not path.is_file():
            errors.append(f"{key}.{index} = {raw!r}: file not found (looked for {path})")
            continue
        try:
            import_file(path, f"flatmin_user_{key.removesuffix('_modules')}s")
        except Exception as error:  # the user's code: any error it raises is reported as a config error
            errors.append(f"{key}.{index} = {raw!r}: importing it failed: {type(error).__name__}: {error}")
    return errors


def _problem_specs(value, key: str):
    """``(dotted key, spec)`` of every :class:`ProblemSpec` in the settings ``value``."""
    if isinstance(value, ProblemSpec):
        yield key, value
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            yield from _problem_specs(getattr(value, name), f"{key}.{name}")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            yield from _problem_specs(item, f"{key}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _problem_specs(item, f"{key}.{index}")


def problem_errors(settings: pydantic.BaseModel, prefix: str) -> list[str]:
    """One line per problem spec in ``settings`` whose ``name`` is not a registered problem, or whose
    ``params`` (or ``eps_param``) are not keyword parameters of that problem's factory. Parameters an
    experiment adds itself (a dimension) are not required here."""
    errors = []
    for key, spec in _problem_specs(settings, prefix):
        try:
            factory = problem_factory(spec.name)
        except KeyError:
            errors.append(f"{key}.name = {spec.name!r}: unknown problem (registered: {', '.join(list_problems())}; "
                          "a problem of your own: a file in problem_modules that registers it)")
            continue
        parameters = inspect.signature(factory).parameters.values()
        if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            continue
        allowed = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        named = ", ".join(allowed) or "none"
        for param, value in spec.params.items():
            if param not in allowed:
                errors.append(f"{key}.params: unknown parameter {param} = {value!r} of problem {spec.name!r} "
                              f"(its parameters: {named})")
        eps_param = getattr(spec, "eps_param", None)
        if eps_param is not None and eps_param not in allowed:
            errors.append(f"{key}.eps_param = {eps_param!r}: not a parameter of problem {spec.name!r} "
                          f"(its parameters: {named})")
    return errors


def _error(lines: list[str]) -> ConfigError:
    listing = "\n".join(f"  - {line}" for line in lines)
    return ConfigError(f"invalid flatmin config ({len(lines)} error(s)):\n{listing}")
