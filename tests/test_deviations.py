"""diagnostics/deviation_fits.py on synthetic data whose answer is known (the diagnostic itself, runs
included, is diagnostics/deviations.py; it is not run here)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from flatmin.analysis import loglog_slope

SCRIPT = Path(__file__).resolve().parents[1] / "diagnostics" / "deviation_fits.py"
_spec = importlib.util.spec_from_file_location("deviation_fits", SCRIPT)
fits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fits)

EPS = np.array([0.01, 0.014, 0.02, 0.028, 0.04])


def test_two_term_fit_recovers_the_width_correction_and_an_offset_does_not():
    steps = 0.5 * EPS**-3 + 1.3 * EPS**-2.5
    two_terms = fits.width_correction_fit(EPS, steps)
    assert two_terms["a"] == pytest.approx(0.5, rel=1e-9) and two_terms["b"] == pytest.approx(1.3, rel=1e-9)
    assert two_terms["max_relative_residual"] < 1e-12
    assert two_terms["exponent_after_correction"] == pytest.approx(-3.0, abs=1e-9)
    # an offset absorbs part of the lower-order term and overshoots the leading exponent
    assert fits.offset_fit(EPS, steps)["exponent_after_offset"] < -3.05
    offset = fits.offset_fit(EPS, 4000 + 0.6 * EPS**-3)
    assert offset["T0"] == pytest.approx(4000, rel=1e-6) and offset["c"] == pytest.approx(0.6, rel=1e-9)
    assert offset["exponent_after_offset"] == pytest.approx(-3.0, abs=1e-9)


def test_ramp_flow_steps_integrates_the_profile_and_tends_to_half_eps_cubed_at_zero_width():
    eps, factor, drop, width = 0.02, 2.0, 1.0, 1.0
    s = factor * math.sqrt(eps)
    z_start, z_flat = math.sqrt((1 + drop / (s * width)) ** 2 - 1), 1 / math.sqrt(factor**2 - 1)
    integral = quad(lambda z: math.sqrt(1 + z * z) / z, z_flat, z_start)[0]
    steps = fits.ramp_flow_steps(eps, factor, drop, width, eta_prime=eps, rho=math.sqrt(eps))
    assert steps == pytest.approx(2 * width / (eps * eps * s) * integral, rel=1e-9)
    narrow = fits.ramp_flow_steps(eps, factor, drop, 1e-7, eta_prime=eps, rho=math.sqrt(eps))
    assert narrow * eps**3 == pytest.approx(0.5, rel=1e-4)
    flow = [fits.ramp_flow_steps(e, factor, drop, width, eta_prime=e, rho=math.sqrt(e)) for e in EPS]
    assert -3.0 < loglog_slope(EPS, flow) < -2.9


def test_gate_open_steps_accumulates_the_fractions_between_checkpoints():
    metrics = pd.DataFrame({"seed": [0] * 5 + [1] * 5, "phase": "main", "step": [0, 10, 20, 30, 40] * 2,
                            "perturbed_fraction": [0, 1, 0.5, 0.5, 0, 0, 0, 1, 1, 1]})
    counts = fits.gate_open_steps(metrics, {0: 25, 1: 40})
    assert counts[0] == pytest.approx(17.5) and counts[1] == pytest.approx(30.0)


def test_rs_ramp_shares_add_up_to_the_measured_exponent():
    gate_open, fraction = 3 * EPS**-2.95, 0.9 * EPS**-0.1
    means = pd.DataFrame({"eps": EPS, "gate_open": gate_open, "steps_run": gate_open / fraction,
                          "steps": 1.01 * gate_open / fraction, "flow_steps": 2 * EPS**-2.9})
    share = fits.rs_ramp_budget(means)
    assert share["width"] == pytest.approx(0.1) and share["gate"] == pytest.approx(0.1)
    assert share["rest"] == pytest.approx(-0.05) and share["seeds"] == pytest.approx(0.0, abs=1e-12)
    total = -3 + share["width"] + share["gate"] + share["rest"] + share["seeds"]
    assert total == pytest.approx(share["exponent_steps"])
    assert share["exponent_steps"] == pytest.approx(-2.85)


def test_kick_motion_splits_the_path_by_step_kind():
    motion = fits.kick_motion([10, 9, 8.9, 8.8, 7.8, 7.7], [True, False, False, True, False])
    assert motion["steps"] == 5 and motion["kicks"] == 2
    assert motion["A"] == pytest.approx(2.0) and motion["B"] == pytest.approx(0.3)


def test_sa_dim_split_is_exact_and_finds_the_invariant_constant():
    dims = np.array([4, 8, 16, 32, 128])
    steps_per_kick, ratio = 5 * dims**0.4, 0.05 * dims  # B/A
    kicks = 1600 / (dims * (1 + ratio))
    first_order = kicks * 0.01 * dims
    rows = pd.DataFrame({"dim": np.repeat(dims, 2), "seed": np.tile([0, 1], dims.size),
                         "steps": np.repeat(steps_per_kick * kicks, 2), "kicks": np.repeat(kicks, 2),
                         "A": np.repeat(first_order, 2), "B": np.repeat(first_order * ratio, 2)})
    pooled = fits.pooled_kicks(rows)
    assert pooled["invariant"].to_numpy() == pytest.approx(1600)
    assert pooled["steps_per_kick"].to_numpy() == pytest.approx(steps_per_kick)
    by_pair = fits.sa_dim_budget(pooled)
    assert by_pair["steps_per_kick"].to_numpy() == pytest.approx(0.4)
    assert by_pair["invariant"].to_numpy() == pytest.approx(0.0, abs=1e-12)
    assert by_pair["total"].to_numpy() == pytest.approx(by_pair["steps"].to_numpy())
    assert by_pair["one_plus_B_over_A"].iloc[0] == pytest.approx(math.log(1.4 / 1.2) / math.log(2))
    fitted = fits.fitted_budget(pooled)
    assert fitted["total"] == pytest.approx(fitted["steps"]) and fitted["steps_per_kick"] == pytest.approx(0.4)
    # the per-kick motion: A per kick proportional to d, (A + B) per kick = that times 1 + B/A
    assert fits.slopes(pooled, "dim", "A_per_kick") == pytest.approx((1.0,) * 4)
    assert pooled["motion_per_kick"].to_numpy() == pytest.approx(0.01 * dims * (1 + ratio))


def test_steps_to_level_inverts_an_exponential_decay():
    steps = np.arange(0, 3001, 100)
    metrics = pd.DataFrame({"seed": 0, "phase": "main", "step": steps, "tangent_grad_norm": np.exp(-steps / 1000)})
    assert fits.steps_to_level(metrics, 0.5)[0] == pytest.approx(1000 * math.log(2))
    assert fits.steps_to_level(metrics, 0.2)[0] == pytest.approx(1000 * math.log(5))
    assert fits.steps_to_level(metrics, 2.0)[0] == 0
    assert np.isnan(fits.steps_to_level(metrics, 0.01)[0])


def test_threshold_split_of_a_power_law_in_eps_and_level():
    eps, levels = np.array([0.04, 0.056, 0.08]), (0.2, 0.25, 0.3)
    fixed = pd.DataFrame([{"eps": e, "level": level, "steps": 7 * e**-1.7 * level**-1.2}
                          for e in eps for level in (*levels, 0.5)])
    moving = pd.DataFrame({"eps": eps, "steps": 7 * eps**-1.7 * np.sqrt(eps) ** -1.2})
    split = fits.threshold_budget(fixed, moving, levels)
    assert split["fixed_level"] == pytest.approx(-1.7) and split["threshold"] == pytest.approx(-0.6)
    assert split["sum"] == pytest.approx(-2.3) and split["measured"] == pytest.approx(-2.3)


def test_at_first_flat_reads_the_ratios_around_the_first_flat_checkpoint():
    eps = 0.04
    metrics = pd.DataFrame({"seed": 0, "phase": "main", "step": [0, 10, 20, 30],
                            "loss_gap": [0.001, 0.002, 0.004, 0.001], "tangent_grad_norm": [0.5, 0.3, 0.19, 0.18],
                            "flat": [False, False, True, True]})
    ratios = fits.at_first_flat(metrics, eps).iloc[0]
    assert ratios["gap_before"] == pytest.approx(0.05) and ratios["gap_at"] == pytest.approx(0.1)
    assert ratios["tangent_before"] == pytest.approx(1.5) and ratios["tangent_at"] == pytest.approx(0.95)
