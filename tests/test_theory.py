"""Parameter schedules of Theorems 1 and 2 (docs/paper_notes.md §5): scalings, the SA switch at d^3 eps = 1,
consistency with the per-step decreases of Lemmas 2 and 4, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import flatmin
from flatmin.algorithms import check_params
from flatmin.theory import DEFAULT_CONSTANTS, decrease_bound, iteration_bound, theory_params

KEYS_RS = {"eta", "eta_prime", "rho", "eps0", "steps"}
KEYS_SA = KEYS_RS | {"batch_size"}


def assert_steps(actual, expected):
    """steps = ceil(expected), up to the rounding of expected itself."""
    assert isinstance(actual, int)
    assert expected * (1 - 1e-12) <= actual <= expected * (1 + 1e-12) + 1, (actual, expected)


def test_rs_schedule_values_and_scalings():
    p = flatmin.theory_params("rs", 1e-2)
    assert set(p) == KEYS_RS
    assert p["eta"] == pytest.approx(DEFAULT_CONSTANTS["c"] / DEFAULT_CONSTANTS["beta"])
    assert p["eta_prime"] == pytest.approx(1e-2)
    assert p["rho"] == pytest.approx(0.1)
    assert p["eps0"] == pytest.approx(1e-2)
    assert_steps(p["steps"], 1e6)  # ceil(eps^-3)
    q = flatmin.theory_params("rs", 1e-2 / 4)
    assert q["eta"] == p["eta"]  # eta = c / beta, independent of eps
    assert q["eta_prime"] / p["eta_prime"] == pytest.approx(1 / 4)  # eta' ~ eps
    assert q["rho"] / p["rho"] == pytest.approx(1 / 2)  # rho ~ sqrt(eps)
    assert q["eps0"] / p["eps0"] == pytest.approx(1 / 4)  # eps0 ~ eps
    assert q["steps"] / p["steps"] == pytest.approx(64, rel=1e-5)  # T ~ eps^-3


def test_delta_scalings():
    for algorithm, dim in (("rs", None), ("sa", 10)):
        p = flatmin.theory_params(algorithm, 1e-4, delta=1.0, dim=dim)
        q = flatmin.theory_params(algorithm, 1e-4, delta=0.5, dim=dim)
        assert q["eta_prime"] / p["eta_prime"] == pytest.approx(0.5)
        assert q["rho"] / p["rho"] == pytest.approx(0.5)
        assert q["eps0"] / p["eps0"] == pytest.approx(0.5**1.5)
        assert q["steps"] / p["steps"] == pytest.approx(16, rel=1e-5)  # delta^-4
        assert q["eta"] == p["eta"]


def test_constants_enter_linearly():
    base = flatmin.theory_params("rs", 1e-2)
    scaled = flatmin.theory_params("rs", 1e-2, beta=4.0, c=0.2, c0=3.0, c1=2.0, c2=5.0, cT=0.5)
    assert scaled["eta"] == pytest.approx(0.2 / 4.0)
    assert scaled["eps0"] / base["eps0"] == pytest.approx(3.0)
    assert scaled["eta_prime"] / base["eta_prime"] == pytest.approx(2.0)
    assert scaled["rho"] / base["rho"] == pytest.approx(5.0)
    assert scaled["steps"] / base["steps"] == pytest.approx(0.5, rel=1e-5)


def test_sa_schedule_switches_at_d_cubed_eps_equal_one():
    d = 10
    switch = 1.0 / d**3  # 1e-3
    at = flatmin.theory_params("sa", switch, dim=d)
    assert set(at) == KEYS_SA and at["batch_size"] == 1
    assert at["rho"] == pytest.approx(1.0)  # both branches agree: min{1, d^1.5 sqrt(eps)} = 1
    assert_steps(at["steps"], switch**-2 / d)
    # below the switch (d^3 eps < 1): rho = d^1.5 sqrt(eps) ~ sqrt(eps), T = eps^-3 d^-4 ~ eps^-3
    lo, lo4 = (flatmin.theory_params("sa", switch / k, dim=d) for k in (10, 40))
    assert lo["rho"] == pytest.approx(d**1.5 * math.sqrt(switch / 10))
    assert_steps(lo["steps"], (switch / 10) ** -3 * d**-4)
    assert lo4["rho"] / lo["rho"] == pytest.approx(0.5)
    assert lo4["steps"] / lo["steps"] == pytest.approx(64, rel=1e-5)
    # above the switch: rho = 1 (capped), T = eps^-2 / d ~ eps^-2
    hi, hi4 = (flatmin.theory_params("sa", switch * k, dim=d) for k in (10, 40))
    assert hi["rho"] == hi4["rho"] == pytest.approx(1.0)
    assert_steps(hi["steps"], (switch * 10) ** -2 / d)
    assert_steps(hi4["steps"], (switch * 40) ** -2 / d)
    ratio = iteration_bound("sa", switch * 40, dim=d) / iteration_bound("sa", switch * 10, dim=d)
    assert ratio == pytest.approx(1 / 16)
    # the rest of the schedule does not switch
    for p, eps in ((lo, switch / 10), (hi, switch * 10)):
        assert p["eta_prime"] == pytest.approx(eps) and p["eps0"] == pytest.approx(eps)


def test_sa_dimension_dependence():
    """Above the switch T ~ 1/d; below it T ~ d^-4 (Table 1: d^-1 eps^-2 max{1, 1/(d^3 eps)})."""
    eps = 1e-4
    assert iteration_bound("sa", eps, dim=100) / iteration_bound("sa", eps, dim=50) == pytest.approx(0.5)
    assert iteration_bound("sa", eps, dim=10) / iteration_bound("sa", eps, dim=5) == pytest.approx(2.0**-4)
    # SA's bound is never above RS's (eps < 1)
    for d in (1, 3, 10, 100):
        for e in (1e-1, 1e-3, 1e-6):
            assert iteration_bound("sa", e, dim=d) <= iteration_bound("rs", e) * (1 + 1e-12)


@pytest.mark.parametrize("algorithm, dim", [("rs", None), ("sa", 3), ("sa", 50)])
@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-5])
def test_schedules_give_lemma_decreases(algorithm, dim, eps):
    """docs/paper_notes.md §5 check: while ||dPhi grad trbar|| >= sqrt(eps), the expected decrease per perturbed step,
    (d for SA) * eta' rho^2 / 2 * eps, is (c1 c2^2 / 2) times the Lemma 2 / 4 bound, and
    steps * bound = cT / delta (a trace drop of order one)."""
    delta, c1, c2, cT = 0.5, 2.0, 0.7, 3.0
    p = flatmin.theory_params(algorithm, eps, delta=delta, dim=dim, c1=c1, c2=c2, cT=cT)
    gain = dim if algorithm == "sa" else 1
    decrease = gain * p["eta_prime"] * p["rho"] ** 2 / 2 * eps
    bound = decrease_bound(algorithm, eps, delta, dim)
    assert decrease == pytest.approx(c1 * c2**2 / 2 * bound, rel=1e-12)
    assert_steps(p["steps"], cT * iteration_bound(algorithm, eps, delta, dim))
    assert p["steps"] * bound == pytest.approx(cT / delta, rel=1e-6, abs=bound)


def test_schedule_is_accepted_by_run_and_check_params(hyperbola):
    rs = flatmin.theory_params("rs", 1e-2)
    sa = flatmin.theory_params("sa", 1e-2, dim=hyperbola.dim)
    check_params(hyperbola, "rs", rs)
    check_params(hyperbola, "sa", sa)
    res = flatmin.run(hyperbola, "sa", [2.0, 0.5], {**sa, "steps": 5}, 5, measure=False)
    assert res.metrics["step"].max() == 5
    with pytest.raises(ValueError, match=rf"params\['steps'\] = {sa['steps']} but steps = 5"):
        flatmin.run(hyperbola, "sa", [2.0, 0.5], sa, 5, measure=False)  # a schedule's budget is not dropped silently


@pytest.mark.parametrize(
    "args, kwargs, pattern",
    [
        (("gd", 1e-2), {}, "no theory schedule for 'gd'"),
        (("rs", 0.0), {}, "eps must be.*0.0"),
        (("rs", -1e-3), {}, "eps must be.*-0.001"),
        (("rs", float("nan")), {}, "eps must be.*nan"),
        (("rs", float("inf")), {}, "eps must be.*inf"),
        (("rs", 1e-2), {"delta": 0.0}, r"delta must lie in \(0, 1\], got 0.0"),
        (("rs", 1e-2), {"delta": 1.5}, r"delta must lie in \(0, 1\], got 1.5"),
        (("rs", 1e-2), {"delta": float("nan")}, "delta must lie.*nan"),
        (("sa", 1e-2), {}, "SA's schedule needs dim.*None"),
        (("sa", 1e-2), {"dim": 0}, "SA's schedule needs dim.*got 0"),
        (("sa", 1e-2), {"dim": 2.5}, "SA's schedule needs dim.*got 2.5"),
        (("rs", 1e-2), {"c9": 1.0}, r"unknown constant\(s\) \['c9'\]"),
        (("rs", 1e-2), {"beta": 0.0}, "constant beta must be.*0.0"),
        (("rs", 1e-2), {"c2": -1.0}, "constant c2 must be.*-1.0"),
        (("rs", True), {}, "eps must be.*not a bool.*True"),
        (("rs", "0.1"), {}, "eps must be.*'0.1'"),
        (("rs", 1e-2), {"delta": True}, r"delta must lie in \(0, 1\], got True; allowed: real numbers, not bools"),
        (("sa", 1e-2), {"dim": True}, "SA's schedule needs dim.*not a bool.*got True"),
        (("sa", 1e-2), {"dim": np.float64(3.0)}, "SA's schedule needs dim.*got np.float64"),
        (("rs", 1e-2), {"cT": True}, "constant cT must be.*not a bool.*True"),
    ],
)
def test_theory_params_bad_inputs(args, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        flatmin.theory_params(*args, **kwargs)


def test_numpy_numbers_are_accepted_as_python_numbers():
    """numpy integers are dims and numpy floats are reals; the schedule is that of the equal Python
    numbers (eps = float(np.float32(0.1)), not 0.1), with Python floats and an int ``steps`` out."""
    eps32 = np.float32(0.1)
    p = theory_params("sa", eps32, delta=np.float64(0.5), dim=np.int64(3), c=np.float32(0.25), cT=np.int32(2))
    assert p == theory_params("sa", float(eps32), delta=0.5, dim=3, c=0.25, cT=2.0)
    assert all(type(v) is float for k, v in p.items() if k not in ("steps", "batch_size"))
    assert type(p["steps"]) is int
    # d^3 in Python ints: np.int64(3e6)**3 would wrap around int64
    d = 3_000_000
    for bound in (iteration_bound, decrease_bound):
        assert bound("sa", 1e-25, dim=np.int64(d)) == bound("sa", 1e-25, dim=d) > 0


@pytest.mark.parametrize(
    "algorithm, eps, kwargs, shown",
    [
        ("rs", 1e-200, {}, "eps=1e-200, delta=1.0"),
        ("rs", 1e-2, {"delta": 1e-80}, "eps=0.01, delta=1e-80"),
        ("sa", 1e-200, {"dim": 3}, "eps=1e-200, delta=1.0, dim=3"),
    ],
)
def test_iteration_bound_beyond_the_float_range_is_a_value_error(algorithm, eps, kwargs, shown):
    pattern = f"'{algorithm}' iteration bound for {shown}.*exceeds the largest representable float"
    with pytest.raises(ValueError, match=pattern):
        iteration_bound(algorithm, eps, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        theory_params(algorithm, eps, **kwargs)


def test_iteration_budget_beyond_the_float_range_is_a_value_error():
    assert_steps(theory_params("rs", 1e-100)["steps"], 1e300)  # large, still representable
    with pytest.raises(ValueError, match=r"\['steps'\] exceed the largest representable float .*eps=1e-100"):
        theory_params("rs", 1e-100, cT=1e10)
    with pytest.raises(ValueError, match=r"\['eta'\] exceed the largest representable float"):
        theory_params("rs", 1e-2, c=1e300, beta=1e-300)


def test_decrease_bound_beyond_the_float_range_is_a_value_error():
    assert decrease_bound("rs", 1e100) == pytest.approx(1e300)
    with pytest.raises(ValueError, match="'rs' decrease bound for eps=1e[+]200.*exceeds the largest representable"):
        decrease_bound("rs", 1e200)
