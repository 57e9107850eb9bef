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

DEFAULT_CONSTANTS = {"beta": 1.0, "c": 0.5, "c0": 1.0, "c1": 1.0, "c2": 1.0, "cT": 1.0}
THEORY_ALGORITHMS = ("rs", "sa")


def _check(algorithm: str, eps: float, delta: float, dim) -> None:
    if algorithm not in THEORY_ALGORITHMS:
        raise ValueError(f"no theory schedule for {algorithm!r}; allowed: {', '.join(THEORY_ALGORITHMS)}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    if not (0 < delta <= 1):
        raise ValueError(f"delta must lie in (0, 1], got {delta!r}")
    if algorithm == "sa" and not (isinstance(dim, int) and dim >= 1):
        raise ValueError(f"SA's schedule needs dim, an integer >= 1, got {dim!r}")


def iteration_bound(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None) -> float:
    """Table 1's iteration count without constants: ``eps^-3 delta^-4`` (RS) or
    ``d^-1 eps^-2 max{1, 1/(d^3 eps)} delta^-4`` (SA)."""
    _check(algorithm, eps, delta, dim)
    if algorithm == "rs":
        return eps**-3 * delta**-4
    return eps**-2 / dim * max(1.0, 1.0 / (dim**3 * eps)) * delta**-4


def decrease_bound(algorithm: str, eps: float, delta: float = 1.0, dim: int | None = None) -> float:
    """Lemma 2 / Lemma 4 per-step decrease of ``trbar(Phi(x_t))`` without constants:
    ``delta^3 eps^3`` (RS) or ``d min{1, eps d^3} delta^3 eps^2`` (SA)."""
    _check(algorithm, eps, delta, dim)
    if algorithm == "rs":
        return delta**3 * eps**3
    return dim * min(1.0, eps * dim**3) * delta**3 * eps**2


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
    _check(algorithm, eps, delta, dim)
    k = {**DEFAULT_CONSTANTS, **constants}
    for name, value in k.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"constant {name} must be a finite number > 0, got {value!r}")
    params = {
        "eta": k["c"] / k["beta"],
        "eta_prime": k["c1"] * delta * eps,
        "eps0": k["c0"] * delta**1.5 * eps,
        "steps": math.ceil(k["cT"] * iteration_bound(algorithm, eps, delta, dim)),
    }
    if algorithm == "rs":
        params["rho"] = k["c2"] * delta * math.sqrt(eps)
    else:
        params["rho"] = k["c2"] * delta * min(1.0, dim**1.5 * math.sqrt(eps))
        params["batch_size"] = 1
    return params
