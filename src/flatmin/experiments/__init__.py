"""Experiments, one module each, found automatically.

Every module of this package whose name does not start with ``_`` (a file, or a package such as
``escape`` that keeps its private helpers in ``_``-named modules of its own), and every file named in the
workflow config's ``experiment_modules``, is an experiment named after its file. Its contract:

``Settings``
    a :class:`flatmin.settings.Settings` subclass: every key of the experiment with its type, its bounds,
    a description and the paper profile's value as default. The workflow validates the experiment's
    config section against it.
``PRESETS`` (optional)
    named overrides of the defaults, e.g. ``{"quick": {"seeds": 8}}``, chosen by the config's ``preset``.
``compute(config: dict) -> pandas.DataFrame``
    runs the experiment on its resolved settings (:meth:`Settings.as_dict`) and returns a tidy results
    table; deterministic given the config (seeds live in it); prints progress lines to stderr.
``plot(results: pandas.DataFrame, config: dict) -> matplotlib.figure.Figure``
    the figure from the results table: labelled axes with units, a caption-ready title, no NaN silently
    dropped (rows with non-finite values raise).
``CAPTION``
    the figure's caption in the HTML report (reStructuredText).
``caption(config: dict) -> str`` (optional)
    the caption of what the resolved settings run, when that depends on them (which problems, which
    methods); the report uses it in place of ``CAPTION``, whose first sentence it should keep.
``CLAIMS`` (optional)
    the paper's claims this experiment's results table supports (:class:`flatmin.claims.Claim`), at the
    end of the module beside the statistics they read; the audit (:func:`flatmin.claims.collect_claims`)
    gathers them in the order of :func:`experiment_names`.
``ORDER`` (optional)
    the experiment's position in the audit and the report (default: after those that give one).

The experiments compute in float64, as the paper's quantities need (third derivatives, per-step decreases of
order eps^3): importing this package, the artifact's application code, turns on JAX's 64-bit mode for the
process, before any of its computations. The library leaves JAX's configuration alone and asks for the
mode where it needs it (:mod:`flatmin._precision`); every workflow job imports this package through
:mod:`flatmin.workflow` before it computes anything.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import jax

from flatmin._files import import_file

jax.config.update("jax_enable_x64", True)

REQUIRED = ("Settings", "compute", "plot", "CAPTION")

_FROM_FILES: dict[str, ModuleType] = {}


class ExperimentError(ValueError):
    """An unknown experiment, or a module that does not follow the contract."""


def _check_contract(module: ModuleType, name: str) -> ModuleType:
    from flatmin.settings import Settings

    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ExperimentError(
            f"experiment {name!r} ({module.__file__}) lacks {', '.join(missing)} (see flatmin.experiments)"
        )
    if not (isinstance(module.Settings, type) and issubclass(module.Settings, Settings)):
        raise ExperimentError(f"experiment {name!r}: Settings must subclass flatmin.settings.Settings")
    return module


def _builtin_names() -> list[str]:
    return [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]


def load_experiment_files(paths: Sequence[str | os.PathLike], base: str | os.PathLike | None = None) -> list[str]:
    """Import each experiment file in ``paths`` (relative ones against ``base``, default the cwd) and
    make it known under its file name. Importing the same file again is a no-op. Returns the names."""
    base = Path(base) if base is not None else Path.cwd()
    names = []
    for raw in paths:
        path = (base / Path(raw)).resolve()
        if not path.is_file():
            raise ExperimentError(f"experiment_modules: file {str(raw)!r} not found (looked for {path})")
        name = path.stem
        if name in _builtin_names():
            raise ExperimentError(f"experiment_modules: {str(raw)!r} is named like the built-in experiment {name!r}; rename it")
        known = _FROM_FILES.get(name)
        if known is not None and Path(known.__file__).resolve() != path:
            raise ExperimentError(f"experiment_modules: two files named {name!r}: {known.__file__} and {path}")
        if known is None:
            _FROM_FILES[name] = _check_contract(import_file(path, "flatmin_user_experiments"), name)
        names.append(name)
    return names


def experiment_names() -> list[str]:
    """Every known experiment: the built-in ones and those loaded from files, by ``ORDER`` then name."""
    modules = {name: get(name) for name in [*_builtin_names(), *_FROM_FILES]}
    return sorted(modules, key=lambda name: (getattr(modules[name], "ORDER", float("inf")), name))


def get(name: str) -> ModuleType:
    """The module of experiment ``name``, checked against the contract."""
    if name in _FROM_FILES:
        return _FROM_FILES[name]
    if name not in _builtin_names():
        known = ", ".join(sorted([*_builtin_names(), *_FROM_FILES]))
        raise ExperimentError(f"unknown experiment {name!r}; known: {known} (or add its file to experiment_modules)")
    return _check_contract(importlib.import_module(f"{__name__}.{name}"), name)


def settings(name: str, preset: str = "paper", overrides: Mapping | None = None) -> dict:
    """Experiment ``name``'s resolved settings: its defaults, the preset's overrides (``"paper"``, and a
    preset the module does not define, have none) and ``overrides``, each key replacing the one below
    whole. Raises :class:`pydantic.ValidationError` for an invalid value."""
    module = get(name)
    layers = [getattr(module, "PRESETS", {}).get(preset, {}), overrides or {}]
    return module.Settings.resolve(*layers).as_dict()
