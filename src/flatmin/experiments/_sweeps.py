"""Shared pieces of the eps and d sweeps (E2, E3): building instances and theory schedules.

A problem spec in the config is ``{name, params, eps_param?}``: ``params`` go to
:func:`flatmin.make_problem`, and ``eps_param`` names a parameter set to the sweep's ``eps`` (the ramp
depends on eps, as lower-bound constructions do). A d sweep names ``dim_param``, the parameter whose
``values`` change the dimension (e.g. the valley's ``k``).
"""

from __future__ import annotations

import functools
import json
import sys

import flatmin
from flatmin.problem import problem_factory
from flatmin.theory import theory_params


def make_instance(spec: dict, eps: float | None = None, dim_param: str | None = None, dim_value=None):
    """The problem of ``spec`` at ``eps`` (when it has an ``eps_param``) and ``dim_param = dim_value``.

    One :class:`flatmin.Problem` per name and parameters in a process: the compiled loops and flatness
    measures are cached per problem, so an instance swept over eps whose problem does not depend on eps
    (the bowl, the hyperbola, the net) is traced and compiled once, not once per eps."""
    params = dict(spec.get("params", {}))
    if spec.get("eps_param"):
        params[spec["eps_param"]] = eps
    if dim_param is not None:
        params[dim_param] = dim_value
    factory = problem_factory(spec["name"])
    try:
        key = json.dumps(params, sort_keys=True)
    except TypeError:  # parameters that are not plain data: no sharing
        return flatmin.make_problem(spec["name"], **params)
    return _shared_problem(factory, spec["name"], key)


@functools.lru_cache(maxsize=64)
def _shared_problem(factory, name: str, params_json: str):
    """Keyed by the factory too: a name registered again with another factory builds anew."""
    return flatmin.make_problem(name, **json.loads(params_json))


def schedule(algorithm: str, problem, eps: float, constants: dict) -> tuple[dict, int]:
    """Theory parameters (Theorem 1 or 2) for ``problem`` at ``eps`` and the step budget.

    ``constants`` are those of :func:`flatmin.theory_params`; ``beta`` defaults to the problem's
    ``smoothness`` (1 when unknown). Returns ``(params, steps)``.
    """
    constants = dict(constants)
    constants.setdefault("beta", problem.smoothness or 1.0)
    params = theory_params(algorithm, eps, dim=problem.dim, **constants)
    steps = params.pop("steps")
    return params, int(steps)


def progress(experiment: str, message: str) -> None:
    print(f"[{experiment}] {message}", file=sys.stderr, flush=True)
