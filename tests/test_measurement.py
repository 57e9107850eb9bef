"""Simulation apart from measurement: flatmin.simulate keeps the iterates, flatmin.measure and
flatmin.first_flat_step measure them, and flatmin.run is the two together."""

import numpy as np
import pandas as pd
import pytest

import flatmin

SHARP = np.array([2.0, 0.5])  # a sharp minimum of the hyperbola (x1 x2 = 1)
RS = {"eta": 0.05, "eta_prime": 0.05, "rho": 0.3, "eps0": 0.05}


@pytest.fixture(scope="module")
def trajectory(hyperbola):
    return flatmin.simulate(hyperbola, "rs", SHARP, {**RS, "final_gd_steps": 5}, 400, seeds=3, record_every=40)


def test_simulate_keeps_the_checkpoints_and_measures_nothing(trajectory):
    assert isinstance(trajectory, flatmin.Trajectory)
    assert trajectory.iterates.shape == (3, 12, 2)
    assert trajectory.checkpoints.tolist() == [*range(0, 401, 40), 405]
    np.testing.assert_array_equal(trajectory.seeds, [0, 1, 2])
    np.testing.assert_array_equal(trajectory.iterates[:, 0], np.broadcast_to(SHARP, (3, 2)))
    # no step before step 0, and the final GD phase never perturbs
    assert (trajectory.perturbed_fraction[:, [0, -1]] == 0).all()
    assert (trajectory.perturbed_fraction[:, 1:-1] > 0).any()
    assert trajectory.params["final_gd_steps"] == 5 and trajectory.main_steps == 400


def test_run_is_simulate_then_measure(hyperbola, trajectory):
    eps = 0.05
    result = flatmin.run(hyperbola, "rs", SHARP, {**RS, "final_gd_steps": 5}, 400, 3, 40, eps=eps,
                         flat_resolution=4, measure_after_gd=3)
    metrics = flatmin.measure(trajectory, eps=eps, after_gd=3)
    pd.testing.assert_frame_equal(metrics, result.metrics)
    first = flatmin.first_flat_step(trajectory, metrics, eps, resolution=4, after_gd=3)
    np.testing.assert_array_equal(first, result.first_flat_step)
    np.testing.assert_array_equal(trajectory.iterates, result.iterates)


def test_one_trajectory_measured_at_several_eps(hyperbola, trajectory):
    """Each eps and criterion of a sweep reuses the one simulation; the answers are those of a run
    per eps."""
    for eps, criterion in ((0.2, "distance"), (0.02, "distance"), (0.02, "loss_gap")):
        metrics = flatmin.measure(trajectory, eps=eps, criterion=criterion)
        run = flatmin.run(hyperbola, "rs", SHARP, {**RS, "final_gd_steps": 5}, 400, 3, 40, eps=eps,
                          flat_criterion=criterion)
        pd.testing.assert_frame_equal(metrics, run.metrics)
        np.testing.assert_array_equal(flatmin.first_flat_step(trajectory, metrics, eps), run.first_flat_step)
    coarse, fine = (flatmin.measure(trajectory, eps=e)["flat"].sum() for e in (0.2, 0.02))
    assert coarse >= fine  # a looser eps is flat at least as often


def test_refinement_lies_inside_the_interval_before_the_first_flat_checkpoint(trajectory):
    eps = 0.05
    metrics = flatmin.measure(trajectory, eps=eps)
    coarse = flatmin.first_flat_step(trajectory, metrics, eps)
    fine = flatmin.first_flat_step(trajectory, metrics, eps, resolution=1)
    flat = coarse > 0
    assert flat.any()
    assert ((fine[flat] <= coarse[flat]) & (fine[flat] > coarse[flat] - 40)).all()
    # a resolution no finer than the checkpoints changes nothing
    np.testing.assert_array_equal(flatmin.first_flat_step(trajectory, metrics, eps, resolution=40), coarse)


def test_measure_refuses_what_it_cannot_do(trajectory):
    with pytest.raises(ValueError, match="eps needs flatness=True"):
        flatmin.measure(trajectory, flatness=False, eps=0.1)
    with pytest.raises(ValueError, match="after_gd must be an integer >= 0, got -1"):
        flatmin.measure(trajectory, after_gd=-1)
    plain = flatmin.measure(trajectory, flatness=False)
    assert list(plain.columns) == ["step", "seed", "phase", "loss", "grad_norm", "perturbed_fraction"]
    with pytest.raises(ValueError, match="measure the trajectory with eps first"):
        flatmin.first_flat_step(trajectory, plain, 0.1)
    with pytest.raises(ValueError, match="resolution must be an integer >= 1, got 0"):
        flatmin.first_flat_step(trajectory, flatmin.measure(trajectory, eps=0.1), 0.1, resolution=0)


def test_measures_in_chunks_equal_the_pointwise_measures_and_compile_once(hyperbola):
    """More points than a chunk, at two counts: the values are flatmin.flatness's, to the bit, and the
    measures are compiled for one shape only (the chunk's)."""
    from flatmin.measurement import CHUNK, _batched_flatness, flatness_measures

    rng = np.random.default_rng(0)
    trajectory = flatmin.simulate(hyperbola, "gd", SHARP, {"eta": 0.05}, 1)
    compiled = []
    for count in (CHUNK + 3, 2 * CHUNK + 1):
        points = SHARP + 0.05 * rng.standard_normal((count, 2))
        chunked = flatness_measures(trajectory, points)
        compiled.append(_batched_flatness(hyperbola)._cache_size())
        for name, value in flatmin.flatness(hyperbola, points).items():
            np.testing.assert_array_equal(chunked[name], value, err_msg=name)
    assert compiled[1] == compiled[0], "the second number of points compiled the measures again"
