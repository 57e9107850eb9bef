"""Parameter schedules and rates of Theorems 1 and 2 (NOTES.md §5).

The paper states rates up to constants; the schedules below are the [reconstructed] ones consistent
with those rates, and every constant is a keyword argument (defaults in :data:`DEFAULT_CONSTANTS`).

RS: eta = c/beta, eta' = c1 delta eps, rho = c2 delta sqrt(eps), eps0 = c0 delta^1.5 eps,
    T = cT eps^-3 delta^-4.
SA: eta = c/beta, eta' = c1 delta eps, rho = c2 delta min{1, d^1.5 sqrt(eps)}, eps0 as RS,
    T = cT d^-1 eps^-2 max{1, 1/(d^3 eps)} delta^-4, followed by plain GD.
"""

from __future__ import annotations

import math
import numbers
import sys

DEFAULT_CONSTANTS = {"beta": 1.0, "c": 0.5, "c0": 1.0, "c1": 1.0, "c2": 1.0, "cT": 1.0}
THEORY_ALGORITHMS = ("rs", "sa")


def _is_real(value) -> bool:
    """Whether ``value`` is a real number (Python or numpy); bools are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _validated(algorithm: str, eps, delta, dim) -> tuple[float, float, int | None]:
    """``(eps, delta, dim)`` as Python numbers (``dim`` an int for SA, unchanged for RS), or a
    ValueError naming the first bad one."""
    if algorithm not in THEORY_ALGORITHMS:
        raise ValueError(f"no theory schedule for {algorithm!r}; allowed: {', '.join(THEORY_ALGORITHMS)}")
    if not (_is_real(eps) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite real number > 0 (not a bool), got {eps!r}")
    if not (_is_real(delta) and 0 < delta <= 1):
        raise ValueError(f"delta must lie in (0, 1], got {delta!r}; allowed: real numbers, not bools")
    if algorithm == "rs":
        return float(eps), float(delta), dim
    if not (isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and dim >= 1):
        raise ValueError(f"SA's schedule needs dim, an integer >= 1 (not a bool), got {dim!r}")
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
    """Table 1's iteration count without constants: ``eps^-3 delta^-4`` (RS) or
    ``d^-1 eps^-2 max{1, 1/(d^3 eps)} delta^-4`` (SA); a ValueError where it exceeds the float range."""
    eps, delta, dim = _validated(algorithm, eps, delta, dim)
    quantity = f"the {algorithm!r} iteration bound for eps={eps!r}, delta={delta!r}, dim={dim!r}"
    if algorithm == "rs":
        return _finite(quantity, lambda: eps**-3 * delta**-4)
    return _finite(quantity, lambda: eps**-2 / dim * max(1.0, 1.0 / (dim**3 * eps)) * delta**-4)


def decrease_bound(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None) -> float:
    """Lemma 2 / Lemma 4 per-step decrease of ``trbar(Phi(x_t))`` without constants:
    ``delta^3 eps^3`` (RS) or ``d min{1, eps d^3} delta^3 eps^2`` (SA)."""
    eps, delta, dim = _validated(algorithm, eps, delta, dim)
    quantity = f"the {algorithm!r} decrease bound for eps={eps!r}, delta={delta!r}, dim={dim!r}"
    if algorithm == "rs":
        return _finite(quantity, lambda: delta**3 * eps**3)
    return _finite(quantity, lambda: dim * min(1.0, eps * dim**3) * delta**3 * eps**2)


def theory_params(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None, **constants) -> dict:
    """The schedule of Theorem 1 (``'rs'``) or 2 (``'sa'``) for target accuracy ``eps``.

    Args:
      eps: target, > 0; the flat test is (eps, sqrt(eps)).
      delta: failure probability scale in (0, 1].
      dim: ``d``, required for SA.
      constants: any of :data:`DEFAULT_CONSTANTS` (``beta`` the smoothness constant).

    Returns:
      dict with ``eta, eta_prime, rho, eps0, steps`` (``steps`` = ceil of the iteration bound
      times ``cT``), ready for :func:`flatmin.run` (pass ``steps`` separately) and, for SA,
      ``batch_size = 1``.
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
    if algorithm == "rs":
        params["rho"] = k["c2"] * delta * math.sqrt(eps)
    else:
        params["rho"] = k["c2"] * delta * min(1.0, dim**1.5 * math.sqrt(eps))
    overflowed = sorted(name for name, value in params.items() if math.isinf(value))
    if overflowed:
        raise ValueError(f"schedule value(s) {overflowed} exceed the largest representable float "
                         f"({sys.float_info.max:.3g}) for eps={eps!r}, delta={delta!r}, dim={dim!r}, constants {k}")
    params["steps"] = math.ceil(params["steps"])
    if algorithm == "sa":
        params["batch_size"] = 1
    return params
