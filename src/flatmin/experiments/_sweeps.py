"""Shared pieces of the eps and d sweeps (E2, E3): building instances and theory schedules.

A problem spec in the config is ``{name, params, eps_param?}``: ``params`` go to
:func:`flatmin.make_problem`, and ``eps_param`` names a parameter set to the sweep's ``eps`` (the ramp
depends on eps, as lower-bound constructions do). A d sweep names ``dim_param``, the parameter whose
``values`` change the dimension (e.g. the valley's ``k``).
"""

from __future__ import annotations

import sys

import flatmin
from flatmin.theory import theory_params


def make_instance(spec: dict, eps: float | None = None, dim_param: str | None = None, dim_value=None):
    params = dict(spec.get("params", {}))
    if spec.get("eps_param"):
        params[spec["eps_param"]] = eps
    if dim_param is not None:
        params[dim_param] = dim_value
    return flatmin.make_problem(spec["name"], **params)


def schedule(algorithm: str, problem, eps: float, constants: dict) -> tuple[dict, int]:
    """Theory parameters (Theorem 1 or 2) for ``problem`` at ``eps`` and the step budget.

    ``constants`` are those of :func:`flatmin.theory_params`; ``beta`` defaults to the problem's
    ``smoothness`` (1 when unknown). Returns ``(params, steps)``.
    """
    constants = dict(constants)
    constants.setdefault("beta", problem.smoothness or 1.0)
    params = theory_params(algorithm, eps, dim=problem.dim, **constants)
    steps = params.pop("steps")
    if algorithm == "sa" and problem.num_samples is not None:
        params["batch_size"] = 1
    return params, int(steps)


def progress(experiment: str, message: str) -> None:
    print(f"[{experiment}] {message}", file=sys.stderr, flush=True)
