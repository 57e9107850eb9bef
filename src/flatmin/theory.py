"""Parameter schedules and rates of the theorems (docs/paper_notes.md §5).

A method with a theorem declares its :class:`Schedule` (``theory`` in its file: RS's Theorem 1 in
:mod:`flatmin.methods.rs`, SA's Theorem 2 in :mod:`flatmin.methods.sa`). The paper states rates up to
constants; the schedules are the [reconstructed] ones consistent with those rates, and every constant
is a keyword argument (defaults in :data:`DEFAULT_CONSTANTS`)::

    eta = c/beta,  eta' = c1 delta eps,  eps0 = c0 delta^1.5 eps,  rho = radius(c2, eps, delta, d),
    T = cT iterations(eps, delta, d)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from collections.abc import Callable, Mapping

from flatmin.method import get_method, list_methods

DEFAULT_CONSTANTS = {"beta": 1.0, "c": 0.5, "c0": 1.0, "c1": 1.0, "c2": 1.0, "cT": 1.0}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A theorem's rates, without constants.

    Attributes:
      theorem: where it is proved (e.g. "Theorem 1").
      iterations: ``(eps, delta, dim) -> T / cT``, Table 1's iteration count.
      decrease: ``(eps, delta, dim) ->`` the per-step decrease of ``trbar(Phi(x_t))`` of its lemma.
      radius: ``(c2, eps, delta, dim) -> rho``.
      rate, decrease_rate: ``iterations`` and ``decrease`` written out for figure legends.
      identity_factor: ``dim ->`` the factor of ``(rho^2/2) dPhi grad trbar`` in the mean tangential
        perturbation (the estimator identity, docs/paper_notes.md §4: 1 for RS, ``d`` for SA), with
        ``identity`` written out.
      needs_dim: whether the rates depend on ``d``.
      final_gd_phase: whether the algorithm ends with plain GD steps before its output (SA).
      fixed: parameters the theorem fixes (SA: ``batch_size = 1``).
    """

    theorem: str
    iterations: Callable[[float, float, int | None], float]
    decrease: Callable[[float, float, int | None], float]
    radius: Callable[[float, float, float, int | None], float]
    rate: str = ""
    decrease_rate: str = ""
    identity_factor: Callable[[int], float] = lambda dim: 1.0
    identity: str = "ρ²/2 ∂trbar"
    needs_dim: bool = False
    final_gd_phase: bool = False
    fixed: Mapping = dataclasses.field(default_factory=dict)


def theory_methods() -> list[str]:
    """The methods that declare a theorem's schedule."""
    return [name for name in list_methods() if get_method(name).theory is not None]


def schedule_of(method: str) -> Schedule:
    """The schedule of ``method``, or a ValueError naming the methods that have one."""
    found = get_method(method).theory if isinstance(method, str) and method in list_methods() else None
    if found is None:
        raise ValueError(f"no theory schedule for {method!r}; allowed: {', '.join(theory_methods())}")
    return found


def _is_real(value) -> bool:
    """Whether ``value`` is a real number (Python or numpy); bools are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validated(algorithm: str, eps, delta, dim) -> tuple[float, float, int | None]:
    """``(eps, delta, dim)`` as Python numbers (``dim`` an int for SA, unchanged for RS), or a
    ValueError naming the first bad one."""
    schedule = schedule_of(algorithm)
    if not (_is_real(eps) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite real number > 0 (not a bool), got {eps!r}")
    if not (_is_real(delta) and 0 < delta <= 1):
        raise ValueError(f"delta must lie in (0, 1], got {delta!r}; allowed: real numbers, not bools")
    if not schedule.needs_dim:
        return float(eps), float(delta), dim
    if not (isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and dim >= 1):
        raise ValueError(f"{algorithm.upper()}'s schedule needs dim, an integer >= 1 (not a bool), got {dim!r}")
    return float(eps), float(delta), int(dim)


def _finite(quantity: str, compute) -> float:
    """``compute()``, or a ValueError saying that ``quantity`` exceeds the largest float."""
    try:
        value = compute()
    except OverflowError:  # float ** raises where float * gives inf
        value = math.inf
    if math.isinf(value):
        raise ValueError(f"{quantity} exceeds the largest representable float ({sys.float_info.max:.3g})")
    return value


def iteration_bound(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None) -> float:
    """Table 1's iteration count without constants (RS: ``eps^-3 delta^-4``; SA: ``d^-1 eps^-2
    max{1, 1/(d^3 eps)} delta^-4``); a ValueError where it exceeds the float range."""
    eps, delta, dim = _validated(algorithm, eps, delta, dim)
    quantity = f"the {algorithm!r} iteration bound for eps={eps!r}, delta={delta!r}, dim={dim!r}"
    return _finite(quantity, lambda: schedule_of(algorithm).iterations(eps, delta, dim))


def decrease_bound(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None) -> float:
    """The lemma's per-step decrease of ``trbar(Phi(x_t))`` without constants (RS, Lemma 2:
    ``delta^3 eps^3``; SA, Lemma 4: ``d min{1, eps d^3} delta^3 eps^2``)."""
    eps, delta, dim = _validated(algorithm, eps, delta, dim)
    quantity = f"the {algorithm!r} decrease bound for eps={eps!r}, delta={delta!r}, dim={dim!r}"
    return _finite(quantity, lambda: schedule_of(algorithm).decrease(eps, delta, dim))


def theory_params(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None, **constants) -> dict:
    """The schedule of ``algorithm``'s theorem (RS: Theorem 1; SA: Theorem 2) for target accuracy ``eps``.

    Args:
      algorithm: a method with a schedule (:func:`theory_methods`).
      eps: target, > 0; the flat test is (eps, sqrt(eps)).
      delta: failure probability scale in (0, 1].
      dim: ``d``, required where the rates depend on it (SA).
      constants: any of :data:`DEFAULT_CONSTANTS` (``beta`` the smoothness constant).

    Returns:
      dict with ``eta, eta_prime, rho, eps0, steps`` (``steps`` = ceil of the iteration bound
      times ``cT``), ready for :func:`flatmin.run` (pass ``steps`` separately), and the parameters the
      theorem fixes (SA: ``batch_size = 1``).
    """
    unknown = set(constants) - set(DEFAULT_CONSTANTS)
    if unknown:
        raise ValueError(f"unknown constant(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_CONSTANTS)}")
    eps, delta, dim = _validated(algorithm, eps, delta, dim)
    for name, value in constants.items():
        if not (_is_real(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"constant {name} must be a finite real number > 0 (not a bool), got {value!r}")
    k = {name: float(value) for name, value in {**DEFAULT_CONSTANTS, **constants}.items()}
    params = {
        "eta": k["c"] / k["beta"],
        "eta_prime": k["c1"] * delta * eps,
        "eps0": k["c0"] * delta**1.5 * eps,
        "steps": k["cT"] * iteration_bound(algorithm, eps, delta, dim),
    }
    params["rho"] = schedule_of(algorithm).radius(k["c2"], eps, delta, dim)
    overflowed = sorted(name for name, value in params.items() if math.isinf(value))
    if overflowed:
        raise ValueError(f"schedule value(s) {overflowed} exceed the largest representable float "
                         f"({sys.float_info.max:.3g}) for eps={eps!r}, delta={delta!r}, dim={dim!r}, constants {k}")
    params["steps"] = math.ceil(params["steps"])
    from flatmin.algorithms import simulation_params  # noqa: PLC0415 (the simulation imports this module)

    taken = {**simulation_params(algorithm), "steps": None}
    return {k: v for k, v in {**params, **schedule_of(algorithm).fixed}.items() if k in taken}
