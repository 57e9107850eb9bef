"""Experiments E4 (trajectories), E5 (Example 1) and E6 (generalization): the quick configs end to end,
the tables' columns, the physics the audit relies on, the figures, and the config schema fragments.

The quick configs run once per module (module-scoped fixtures); the assertions are the audit's
claims with margins that a wrong implementation (no drift, drift the wrong way, a wrong trace or
recovery error) would miss by a wide margin.
"""

from __future__ import annotations

import copy
import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import flatmin  # noqa: E402
from flatmin import experiments  # noqa: E402
from flatmin.experiments import example1, generalization, trajectories  # noqa: E402

MODULES = {"trajectories": trajectories, "example1": example1, "generalization": generalization}


def quick(module) -> dict:
    return experiments.settings(module.__name__.rsplit(".", 1)[-1], "quick")


@pytest.fixture(scope="module")
def e4():
    return trajectories.compute(quick(trajectories))


@pytest.fixture(scope="module")
def e5():
    return example1.compute(quick(example1))


@pytest.fixture(scope="module")
def e6():
    return generalization.compute(quick(generalization))


# ------------------------------------------------------------------------------------------- tables


def test_e4_table_columns_and_rows(e4):
    config = quick(trajectories)
    assert set(trajectories.COLUMNS) | {"x_0", "x_1"} <= set(e4.columns)
    instance = config["instances"][0]
    checkpoints = instance["steps"] // instance["record_every"] + 1
    assert len(e4) == len(instance["algorithms"]) * config["seeds"] * checkpoints
    assert set(e4["algorithm"]) == {"gd", "sgd", "sam", "rs", "rs_noproj", "sa"}
    assert np.all(np.isfinite(e4[["trbar_limit", "distance_to_flattest", "loss", "x_0", "x_1"]]))


def test_e5_table_columns(e5):
    assert list(e5.columns) == list(example1.COLUMNS)
    config = quick(example1)
    assert len(e5) == 6 + 2 * config["num_starts"]


def test_e6_table_columns(e6):
    assert list(e6.columns) == list(generalization.COLUMNS)
    assert set(e6["point"]) == {"iterate", "after_gd"}  # quick: phi_checkpoints = 0
    assert set(e6["instance"]) == {"diagonal_net", "matrix_sensing"}
    assert np.all(np.isfinite(e6[["loss", "recovery_error", "trbar"]]))


# ------------------------------------------------------------------------------------------- E4


def test_e4_gd_and_sgd_stay_at_the_sharp_minimum(e4):
    # The start (2, 1/2) + 1e-3 jitter: trbar(Phi) = 4.25 and it must not change under GD.
    final = trajectories.final_trace_by_method(e4)
    assert final["gd"] == pytest.approx(4.25, abs=1e-3)
    assert trajectories.trace_drift(e4, "gd") < 1e-6
    assert trajectories.trace_drift(e4, "sgd") < 1e-6  # n = 1: SGD is GD
    distance = trajectories.final_rows(e4)["distance_to_flattest"].groupby("algorithm").mean()
    assert distance["gd"] == pytest.approx(np.hypot(1.0, 0.5), abs=1e-2)


def test_e4_perturbed_methods_end_flatter_than_gd(e4):
    final = trajectories.final_trace_by_method(e4)
    for algorithm in ("rs", "sa", "sam", "rs_noproj"):
        assert final[algorithm] < final["gd"] - 1.5, (algorithm, final)
    assert final["sa"] == pytest.approx(2.0, abs=0.02)  # SA reaches the flattest trace
    assert final["rs"] < 2.2
    last = trajectories.final_rows(e4)
    np.testing.assert_array_equal(last["flattest_trace"], 2.0)  # so SA's 2.0 above is the flattest trace
    assert last["distance_to_flattest"].groupby("algorithm").mean()["sa"] < 0.05


def test_e4_sa_ahead_of_rs_midway(e4):
    # Same rho: SA's tangential signal is d = 2 times RS's (docs/paper_notes.md § 4).
    mid = e4[e4["step"] == 400].groupby("algorithm")["trbar_limit"].mean()
    assert mid["sa"] < mid["rs"] - 0.2, mid


def test_e4_projection_keeps_rs_on_the_minima(e4):
    last = trajectories.final_rows(e4)["loss"].groupby("algorithm").mean()
    assert last["rs"] < 1e-8 and last["sa"] < 1e-8
    assert last["rs_noproj"] > 1e-5  # its normal kicks are not projected out


def test_e4_helpers():
    problem = flatmin.make_problem("hyperbola", depth=2)
    assert trajectories.algorithm_params("gd", {"eta": 0.1, "rho": 1.0}, {}) == {"eta": 0.1}
    assert trajectories.algorithm_params("sa", {"eta": 0.1, "rho": 1.0}, {"rho": 0.5})["rho"] == 0.5
    with pytest.raises(ValueError, match="unknown method"):
        trajectories.algorithm_params("adam", {}, {})
    d = trajectories.nearest_flattest_distance(problem, np.array([[2.0, 0.5], [1.0, 1.0]]))
    np.testing.assert_allclose(d, [np.hypot(1.0, 0.5), 0.0])


def test_e4_problem_without_flattest_points_runs_and_plots_without_the_distance():
    problem = flatmin.make_problem("hyperbola", depth=2)
    name = "tmp_hyperbola_no_flattest"
    flatmin.register_problem(name)(lambda: dataclasses.replace(problem, name=name, flattest_points=None,
                                                                     flattest_distance=None))
    config = copy.deepcopy(quick(trajectories))
    config.update(seeds=2, picture={**config["picture"], "instance": "bare"})
    config["instances"] = [{**config["instances"][0], "label": "bare", "problem": {"name": name},
                            "steps": 40, "record_every": 20, "algorithms": {"gd": {}, "rs": {}}}]
    results = trajectories.compute(config)
    assert results["distance_to_flattest"].isna().all() and np.isfinite(results["trbar_limit"]).all()
    figure = trajectories.plot(results, config)
    try:
        texts = [t.get_text() for ax in figure.axes for t in ax.texts]
        assert any("gives no flattest minima" in t for t in texts), texts
    finally:
        plt.close(figure)
    partial = results.copy()
    partial.loc[partial.index[0], "distance_to_flattest"] = 1.0  # known for one row only: an error
    with pytest.raises(ValueError, match=r"non-finite \['distance_to_flattest'\] in trajectories rows"):
        trajectories.plot(partial, config)


def test_e4_is_deterministic():
    config = copy.deepcopy(quick(trajectories))
    config["seeds"] = 2
    config["instances"][0].update(steps=40, record_every=20)
    config["instances"][0]["algorithms"] = {"rs": {}, "sa": {}}
    a, b = trajectories.compute(config), trajectories.compute(config)
    pd.testing.assert_frame_equal(a, b)


# ------------------------------------------------------------------------------------------- E5


def test_e5_example1_numbers_are_exact(e5):
    pv = example1.point_values(e5)
    origin = pv.loc["trace_minimizer"]
    assert origin["loss"] == 1.0 and origin["trbar"] == 0.0 and origin["hessian_trace"] == 0.0
    assert (origin["hess_eig_min"], origin["hess_eig_max"]) == pytest.approx((-2.0, 2.0), abs=1e-12)
    for name in ("flattest_plus", "flattest_minus"):
        assert pv.loc[name, "loss"] == 0.0 and pv.loc[name, "trbar"] == pytest.approx(2.0, abs=1e-12)
    assert pv.loc["sharp", "trbar"] == pytest.approx(4.25, abs=1e-12)
    branch = example1.min_trace_on_minima(e5)
    np.testing.assert_allclose(branch["t"], [1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(branch["trbar"], [2.0, 2.0], atol=1e-10)
    assert branch["on_minima"].all()


def test_e5_minima_of_f_and_of_the_trace_are_disjoint(e5):
    plane_searches = e5[e5["point"].str.startswith("plane_trace_min_")]
    best = plane_searches.loc[plane_searches["trbar"].idxmin()]
    assert abs(best["x1"]) < 1e-6 and abs(best["x2"]) < 1e-6 and best["trbar"] < 1e-10
    assert example1.disjointness_gap(e5) == pytest.approx(1.0, abs=1e-10)
    loss_minima = e5[e5["point"].str.startswith("plane_loss_min_")]
    assert loss_minima["on_minima"].all()
    assert (loss_minima["trbar"] >= 2.0 - 1e-9).all()  # every minimum of f is at least as sharp
    assert (np.abs(loss_minima["x1"] * loss_minima["x2"] - 1) < 1e-6).all()


def test_e5_rejects_a_bad_t_range():
    config = {**quick(example1), "t_range": [2.0, 10.0]}
    with pytest.raises(ValueError, match="t_range"):
        example1.compute(config)


# ------------------------------------------------------------------------------------------- E6


@pytest.mark.parametrize("instance", ["diagonal_net", "matrix_sensing"])
def test_e6_gd_stays_and_its_error_is_the_start(e6, instance):
    final = generalization.final_by_method(e6, instance)
    ref = generalization.references(e6).loc[instance]
    gd = final.loc["gd"]
    np.testing.assert_allclose(gd["trbar"], ref["start_trbar"], rtol=1e-3)
    np.testing.assert_allclose(gd["recovery_error"], ref["start_error"], rtol=1e-3)


@pytest.mark.parametrize("instance", ["diagonal_net", "matrix_sensing"])
def test_e6_flatter_means_better_recovery(e6, instance):
    final = generalization.final_by_method(e6, instance).groupby("algorithm").mean()
    error, trace = final["recovery_error"], final["trbar"]
    ref = generalization.references(e6).loc[instance]
    for algorithm in ("rs", "sa"):
        assert trace[algorithm] < trace["gd"] - 0.1, trace
        assert error[algorithm] < 0.75 * error["gd"], error
    # SA reaches the flattest interpolator's trace and recovers the ground truth.
    assert trace["sa"] == pytest.approx(ref["reference_trbar"], rel=0.01)
    assert error["sa"] < 0.1 * ref["start_error"]
    assert ref["reference_error"] < 1e-8  # both default instances: flattest = ground truth
    assert generalization.error_trace_rank_correlation(e6, instance) > 0.5


def test_e6_exact_limit_points_agree_with_the_gd_stand_in():
    config = copy.deepcopy(quick(generalization))
    sensing = config["instances"][1]
    sensing.update(steps=400, record_every=200)
    sensing["algorithms"] = {"gd": {}, "rs": {}}
    config.update(instances=[sensing], seeds=1, phi_checkpoints=2)
    results = generalization.compute(config)
    assert set(results["point"]) == set(generalization.POINTS)
    gap = generalization.limit_agreement(results, "matrix_sensing")
    # GD with a finite step is not the flow: the stand-in is off by a few percent of the start's
    # error (0.395) and trace (0.62), far below the RS-vs-GD gaps the figure shows.
    assert gap["recovery_error"] < 0.03 and gap["trbar"] < 0.02, gap


def test_e6_rejects_a_problem_without_recovery_error():
    config = copy.deepcopy(quick(generalization))
    config["instances"][0]["problem"] = {"name": "hyperbola", "params": {}}
    with pytest.raises(ValueError, match="no recovery error"):
        generalization.compute(config)


# ------------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize("name", list(MODULES))
def test_plot_returns_a_labelled_figure_and_refuses_nan(name, e4, e5, e6):
    module = MODULES[name]
    results = {"trajectories": e4, "example1": e5, "generalization": e6}[name]
    config = quick(module)
    figure = module.plot(results.copy(), config)
    try:
        assert isinstance(figure, matplotlib.figure.Figure)
        assert figure._suptitle is not None and figure._suptitle.get_text()
        for ax in figure.axes:
            if ax.get_label() == "<colorbar>":
                continue
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax
    finally:
        plt.close(figure)
    broken = results.copy()
    column = {"trajectories": "trbar_limit", "example1": "trbar", "generalization": "recovery_error"}[name]
    broken.loc[broken.index[3], column] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        module.plot(broken, config)

