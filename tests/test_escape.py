"""Tests of the escape experiment (flatmin.nets, flatmin.training, flatmin.experiments.escape): data, confusion set,
MLP losses, the mini-batch steps, the flatness records, the claims and a tiny end-to-end run."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import flatmin  # noqa: E402
import flatmin.experiments  # noqa: E402
from flatmin import nets, training  # noqa: E402
from flatmin.claims import Claim, evaluate  # noqa: E402
from flatmin.experiments import escape  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """A 2-hidden-layer MLP on 60 digits, with its Problem (square loss)."""
    data = nets.load_data("digits", n_train=60, n_test=40, seed=3)
    model, x0 = nets.RaveledMLP.create(jax.random.PRNGKey(0), [64, 6, 5, 10], "tanh", "mse")
    problem = nets.mlp_problem(model, data["x"], data["y"], x0=x0)
    return data, model, x0, problem


# ------------------------------------------------------------------------------------------ data


def test_mnist1d_offline_and_deterministic():
    np_state, py_state = np.random.get_state(), random.getstate()
    a = nets.load_data("mnist1d", n_train=70, n_test=30, seed=5)
    # make_dataset seeds the global generators; load_data must leave them as they were
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    b = nets.load_data("mnist1d", n_train=70, n_test=30, seed=5)
    c = nets.load_data("mnist1d", n_train=70, n_test=30, seed=6)
    assert a["x"].shape == (70, 40) and a["x_test"].shape == (30, 40)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x"], c["x"])
    assert set(np.unique(a["y"])) <= set(range(10))
    # train and test are disjoint examples
    train_rows = {row.tobytes() for row in a["x"]}
    assert not any(row.tobytes() in train_rows for row in a["x_test"])


def test_digits_split_deterministic_and_disjoint():
    a = nets.load_data("digits", n_train=500, n_test=1297, seed=0)
    b = nets.load_data("digits", n_train=500, n_test=1297, seed=0)
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y_test"], b["y_test"])
    assert a["x"].shape == (500, 64) and a["x_test"].shape == (1297, 64)
    with pytest.raises(ValueError, match="exceeds"):
        nets.load_data("digits", n_train=1000, n_test=1000)
    with pytest.raises(ValueError, match="unknown data set"):
        nets.load_data("cifar")


def test_confusion_set_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 30)) + 5.0  # no zeros in the original inputs
    y = rng.integers(0, 10, 200)
    xc, yc = nets.confusion_set(x, y, repeats=10, zero_frac=0.1, num_classes=10, seed=1)
    assert xc.shape == (2000, 30) and yc.shape == (2000,)
    zeroed = xc == 0.0
    # each entry zeroed independently with probability 0.1: 60000 entries, s.d. of the fraction ~0.0012
    assert abs(zeroed.mean() - 0.1) < 0.006
    # the entries that survive are the repeated training inputs
    tiled = np.tile(x, (10, 1))
    np.testing.assert_array_equal(xc[~zeroed], tiled[~zeroed])
    # random labels: uniform over the classes, unrelated to the true ones
    counts = np.bincount(yc, minlength=10)
    assert counts.min() > 140 and counts.max() < 260
    assert abs(np.mean(yc == np.tile(y, 10)) - 0.1) < 0.03
    xc2, yc2 = nets.confusion_set(x, y, repeats=10, zero_frac=0.1, num_classes=10, seed=1)
    np.testing.assert_array_equal(xc, xc2)
    np.testing.assert_array_equal(yc, yc2)
    with pytest.raises(ValueError):
        nets.confusion_set(x, y, repeats=0)
    with pytest.raises(ValueError):
        nets.confusion_set(x, y, zero_frac=1.0)


# ------------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_loss_is_mean_of_batch_losses(tiny, loss):
    data, model, x0, _ = tiny
    model = model.with_loss(loss)
    problem = nets.mlp_problem(model, data["x"], data["y"])
    n = problem.num_samples
    x = x0 + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    everything = problem.batch_losses(x, jnp.arange(n))
    np.testing.assert_allclose(problem.loss(x), everything.mean(), rtol=1e-13)
    np.testing.assert_allclose(problem.sample_losses(x), everything, rtol=1e-13)
    idx = jnp.array([3, 0, 17])
    np.testing.assert_allclose(problem.losses_of(x, idx), everything[idx], rtol=1e-13)
    assert problem.dim == 64 * 6 + 6 + 6 * 5 + 5 + 5 * 10 + 10
    assert everything.dtype == jnp.float64


def test_square_loss_by_hand():
    logits = jnp.array([[0.5, -1.0, 2.0]])
    expected = 0.5 * (0.5**2 + 1.0**2 + 1.0**2)  # label 2: target (0, 0, 1)
    np.testing.assert_allclose(nets.per_sample_loss(logits, jnp.array([2]), "mse"), [expected])
    ce = -jax.nn.log_softmax(logits)[0, 2]
    np.testing.assert_allclose(nets.per_sample_loss(logits, jnp.array([2]), "ce"), [ce])


# ------------------------------------------------------------------------------------------ steps


@pytest.mark.parametrize("method", ["rs", "sa"])
@pytest.mark.parametrize("batch", [1, 8])
def test_zero_radius_is_sgd_and_perturbation_is_projected(tiny, method, batch):
    _, _, x0, problem = tiny
    key = jax.random.PRNGKey(11)
    eta = 0.01
    sgd = jax.jit(training.minibatch_step(problem, "sgd", batch))(x0, key, eta, 0.0)
    step = jax.jit(training.minibatch_step(problem, method, batch))
    np.testing.assert_allclose(step(x0, key, eta, 0.0), sgd, rtol=0, atol=1e-14)
    # with rho > 0 the perturbation v = (x - eta g_B - x_next) / eta is orthogonal to g_B
    v = (sgd - step(x0, key, eta, 0.3)) / eta
    g = (x0 - sgd) / eta
    assert float(jnp.linalg.norm(v)) > 0
    assert abs(float(v @ g)) < 1e-8 * float(jnp.linalg.norm(v) * jnp.linalg.norm(g))


@pytest.mark.parametrize("method", ["sgd", "rs", "sa"])
def test_step_is_the_library_perturbed_gradient(tiny, method):
    """The escape step is x - eta * value_and_perturbed_grad(batch loss) on the batch drawn from the
    first half of the key: one implementation of RS and SA for the theory and the experiment."""
    _, _, x0, problem = tiny
    key = jax.random.PRNGKey(3)
    k_batch, k_pert = jax.random.split(key)
    idx = jax.random.choice(k_batch, problem.num_samples, (8,), replace=False)
    loss = lambda x, i: jnp.mean(problem.losses_of(x, i))  # noqa: E731
    options = {"fallback": False} if method == "sa" else {}
    rho = 0.3 if method != "sgd" else None
    _, g = flatmin.value_and_perturbed_grad(loss, method, rho, **options)(x0, idx, k_pert)
    step = jax.jit(training.minibatch_step(problem, method, 8, **options))
    np.testing.assert_allclose(step(x0, key, 0.01, 0.3), x0 - 0.01 * g, rtol=1e-12, atol=1e-15)  # jit rounding


def test_same_batches_across_methods(tiny):
    """Seed s draws the same mini-batch for every method: SA at a tiny rho differs from SGD by
    O(eta rho), far less than another mini-batch would make (O(eta))."""
    _, _, x0, problem = tiny
    key = jax.random.PRNGKey(5)
    sgd = jax.jit(training.minibatch_step(problem, "sgd", 8))(x0, key, 0.01, 0.0)
    sa = jax.jit(training.minibatch_step(problem, "sa", 8))(x0, key, 0.01, 1e-7)
    assert float(jnp.linalg.norm(sa - sgd)) < 1e-5 * float(jnp.linalg.norm(x0 - sgd))


@pytest.mark.parametrize("batch", [1, 8])
def test_zero_label_noise_is_sgd(tiny, batch):
    """sigma = 0 label-noise SGD is SGD on the same mini-batch (common random numbers): bitwise at batch 1;
    at batch 8 the two programs may round the mean differently (a few ulps of the step)."""
    _, _, x0, problem = tiny
    key = jax.random.PRNGKey(11)
    sgd = jax.jit(training.minibatch_step(problem, "sgd", batch))(x0, key, 0.01, 0.0)
    step = jax.jit(training.minibatch_step(problem, "label_noise_sgd", batch))
    if batch == 1:
        np.testing.assert_array_equal(step(x0, key, 0.01, 0.0), sgd)
    else:
        np.testing.assert_allclose(step(x0, key, 0.01, 0.0), sgd, rtol=0, atol=1e-16)
    # sigma > 0: the gradient of the batch loss to the perturbed one-hot targets, t + sigma xi
    noisy = step(x0, key, 0.01, 0.5)
    assert float(jnp.linalg.norm(noisy - sgd)) > 1e-3 * float(jnp.linalg.norm(x0 - sgd))


def test_label_noise_step_is_the_gradient_to_noisy_targets(tiny):
    """The step's label noise: x - eta grad mean_i 0.5 ||logits_i - (onehot_i + sigma xi_i)||^2 on the batch of
    the key's first half, xi drawn from its second half (flatmin.value_and_perturbed_grad's key)."""
    data, model, x0, problem = tiny
    key, eta, sigma = jax.random.PRNGKey(4), 0.01, 0.7
    k_batch, k_pert = jax.random.split(key)
    idx = jax.random.choice(k_batch, problem.num_samples, (8,), replace=False)
    onehot = jax.nn.one_hot(jnp.asarray(data["y"])[idx], 10, dtype=jnp.float64)
    xi = jax.random.normal(k_pert, onehot.shape, jnp.float64)  # label_noise_sgd: no batch_size, key unsplit
    loss = lambda x: jnp.mean(0.5 * jnp.sum((model.logits(x, jnp.asarray(data["x"])[idx]) - onehot - sigma * xi) ** 2, 1))  # noqa: E731
    step = jax.jit(training.minibatch_step(problem, "label_noise_sgd", 8))
    np.testing.assert_allclose(step(x0, key, eta, sigma), x0 - eta * jax.grad(loss)(x0), rtol=1e-12, atol=1e-15)


def test_one_sam_at_batch_one_is_sam(tiny):
    _, _, x0, problem = tiny
    key = jax.random.PRNGKey(2)
    sam = jax.jit(training.minibatch_step(problem, "sam", 1))(x0, key, 0.01, 0.3)
    one = jax.jit(training.minibatch_step(problem, "sam_per_sample", 1))(x0, key, 0.01, 0.3)
    np.testing.assert_array_equal(one, sam)
    # at batch 8 the per-sample ascent points differ from the batch's
    sam8 = jax.jit(training.minibatch_step(problem, "sam", 8))(x0, key, 0.01, 0.3)
    one8 = jax.jit(training.minibatch_step(problem, "sam_per_sample", 8))(x0, key, 0.01, 0.3)
    assert float(jnp.linalg.norm(one8 - sam8)) > 1e-6


def test_minibatch_step_knob_and_targets_errors(tiny):
    _, _, _, problem = tiny
    with pytest.raises(ValueError, match="knob 'sigma' is not a real parameter of method 'sa'; allowed: rho"):
        training.minibatch_step(problem, "sa", 8, knob="sigma")
    assert training.main_knob("sa") == "rho" and training.main_knob("label_noise_sgd") == "sigma"
    assert training.main_knob("sgd") is None
    plain = flatmin.Problem("plain", problem.dim, problem.loss, batch_losses=problem.batch_losses,
                            num_samples=problem.num_samples)
    with pytest.raises(ValueError, match="perturbs the targets"):
        training.minibatch_step(plain, "label_noise_sgd", 8)


def test_mlp_problem_predictions_give_its_square_loss(tiny):
    """The square-loss MLP problem's predictions (logits) and one-hot targets reproduce its sample losses;
    flatmin.run's label-noise SGD (the Problem oracle) reads them."""
    data, model, x0, problem = tiny
    idx = jnp.array([4, 1, 9])
    np.testing.assert_allclose(problem.square_losses(problem.predictions_of(x0, idx), jnp.asarray(problem.targets)[idx]),
                               problem.losses_of(x0, idx), rtol=1e-13)
    np.testing.assert_allclose(problem.predictions(x0)[idx], problem.predictions_of(x0, idx), rtol=1e-13)
    assert nets.mlp_problem(model.with_loss("ce"), data["x"], data["y"]).predictions is None
    # flatmin.run's oracle: the loss with the targets replaced sums the square over the 10 outputs, so
    # sigma = 0 steps as SGD does on the same batches (a mean over the outputs would be a tenth of it)
    noisy = flatmin.run(problem, "label_noise_sgd", x0, {"eta": 0.05, "sigma": 0.0, "batch_size": 8}, 3, seeds=1,
                        measure=False)
    sgd = flatmin.run(problem, "sgd", x0, {"eta": 0.05, "batch_size": 8}, 3, seeds=1, measure=False)
    assert not np.allclose(np.asarray(sgd.final)[0], np.asarray(x0))
    np.testing.assert_allclose(np.asarray(noisy.final), np.asarray(sgd.final), rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------ end to end

TINY = dict(
    data="digits", n_train=80, n_test=60, width=12, depth=1,
    confusion_repeats=3, confusion_epochs=5, confusion_batch=16,
    clean_batch=16, clean_max_epochs=1500, clean_extra_epochs=5,
    eta=0.002, steps=30, num_checkpoints=2, seeds=2, trace_probes=4,
    runs=[
        {"method": "sgd", "batch": 8, "rhos": [0.0]},
        {"method": "rs", "batch": 8, "rhos": [0.2, 0.5]},
        {"method": "sa", "batch": 8, "rhos": [0.2]},
        {"method": "sa", "batch": 1, "rhos": [0.2]},
        {"method": "label_noise_sgd", "batch": 8, "knob": "sigma", "values": [0.5]},
        {"method": "sam_per_sample", "batch": 8, "values": [0.2]},
    ],
    panel_a={"rs": [0.5], "sa": [0.2]}, panel_batch=8, batch_rho=0.2,
)


@pytest.fixture(scope="module")
def tiny_results():
    return escape.compute(TINY)


def test_end_to_end_table(tiny_results):
    table = tiny_results
    esc = table[table["record"] == "escape"]
    mins = escape._tables.minimizer_rows(table)
    assert list(mins["minimizer"]) == ["bad", "normal", "confusion"]
    assert (mins.set_index("minimizer").loc[["bad", "normal"], "train_acc"] == 1.0).all()
    # 1 + 2 + 1 + 1 + 1 + 1 (method, batch, value) runs x 2 seeds x 3 checkpoints
    assert len(esc) == 7 * 2 * 3
    # the knob column names the grid's parameter; rho holds the value of a rho grid only
    knobs = esc.drop_duplicates(["method", "batch", "value"]).set_index(["method", "batch"])
    assert knobs.loc[("label_noise_sgd", 8), "knob"] == "sigma" and knobs.loc[("label_noise_sgd", 8), "rho"] == 0
    assert knobs.loc[("label_noise_sgd", 8), "value"] == 0.5 and knobs.loc[("sgd", 8), "knob"] == "none"
    assert (knobs.loc[("sam_per_sample", 8), ["knob", "value", "rho"]] == ["rho", 0.2, 0.2]).all()
    assert set(esc["step"]) == {0, 15, 30}
    assert np.isfinite(table[list(escape.METRICS)].to_numpy(dtype=float)).all()
    assert "hessian_trace" in table.columns and "trace" not in table.columns
    # every run starts from the bad minimizer
    start = esc[esc["step"] == 0]
    np.testing.assert_allclose(start["test_acc"], mins.loc[0, "test_acc"])
    fin = escape._tables.final_table(table)
    assert len(fin) == 7 and (fin["seeds"] == 2).all()
    audit = evaluate({"escape": table}, claims=escape.CLAIMS).set_index("id")
    # every claim is measured on this table (none is "not run"), sgd_stays from the SGD run's final rows
    assert not (audit["verdict"] == "not run").any(), audit["note"]
    sgd = fin[fin["method"] == "sgd"]
    assert audit.loc["escape_sgd_stays", "measured"] == float(sgd["d_test_acc_mean"].abs().max())
    assert audit.loc["escape_train_acc_100", "measured"] == esc["train_acc"].min()
    fig = escape.plot(table, TINY)
    assert len(fig.axes) == 12
    assert fig.axes[0].get_ylabel() == "test accuracy (%)"
    assert fig.axes[4].get_ylabel() == "Hessian trace tr(H)"
    # panel (d): one curve per method (its best run), the 2-gradient methods over twice the queries
    lines = {line.get_label(): line for line in fig.axes[3].get_lines() if not line.get_label().startswith("normal")}
    assert len(lines) == 5  # the best run of each of the 5 methods (SGD's is the control)
    extent = {label.split(",")[0]: line.get_xdata().max() for label, line in lines.items()}
    assert extent["SA"] == 2 * TINY["steps"] and extent["label-noise SGD"] == TINY["steps"]


def test_claims_read_back_from_csv(tiny_results, tmp_path):
    """The audit reads the results from CSV, where an empty method_options cell comes back as NaN."""
    tiny_results.to_csv(tmp_path / "escape.csv", index=False)
    back = pd.read_csv(tmp_path / "escape.csv")
    assert back["method_options"].isna().any()
    before = evaluate({"escape": tiny_results}, claims=escape.CLAIMS)
    after = evaluate({"escape": back}, claims=escape.CLAIMS)
    pd.testing.assert_frame_equal(before[["id", "measured", "low", "high", "verdict"]],
                                  after[["id", "measured", "low", "high", "verdict"]], check_exact=False, rtol=1e-12)


def test_flatness_records(tiny_results):
    """Definition 3 at both minimizers and at the end points (seed 0) of the best runs."""
    table = tiny_results
    flat = table[table["record"] == "flatness"]
    runs = escape._tables.best_runs(table[table["record"] == "escape"], TINY["panel_batch"])
    assert {(m, b, r) for m, b, r in flat[["method", "batch", "value"]].iloc[2:].itertuples(index=False)} == runs
    assert len(flat) == 2 + len(runs) and set(flat["seed"]) == {0}
    assert list(flat["method"].iloc[:2]) == ["bad", "normal"]
    assert (flat[list(escape.FLATNESS)] >= 0).all().all()
    assert (flat["tangent_grad_norm"] > 0).all() and (flat["top_eigenvalue"] > 0).all()
    # the top eigenvalue is at most the trace of a PSD-dominated Hessian, up to the trace's noise
    assert (flat["top_eigenvalue"] <= flat["hessian_trace"] + 5 * flat["hessian_trace_se"]).all()
    # the end point of a run: the same train/test accuracy as its escape row at the last step
    end = table[(table["record"] == "escape") & (table["step"] == table["step"].max()) & (table["seed"] == 0)]
    merged = flat.merge(end, on=["method", "batch", "knob", "value", "rho", "seed", "step"], suffixes=("", "_run"))
    assert len(merged) == len(runs)
    np.testing.assert_allclose(merged["test_acc"], merged["test_acc_run"], rtol=1e-12)
    # the other records carry the -1 sentinel, never NaN
    assert (table[table["record"] != "flatness"][list(escape.FLATNESS)] == -1).all().all()
    summary = escape._tables.flatness_table(table)
    assert list(summary["method"].iloc[:2]) == ["bad", "normal"] and len(summary) == len(flat)


def _final_rows(spec):
    """Escape rows at steps 0 and 10 for {(method, batch, rho): (accuracy at 0, at 10)} over seeds 0, 1
    (seed 1 is 0.01 higher at step 10)."""
    rows = []
    for (method, batch, rho), (start, end) in spec.items():
        for seed in (0, 1):
            for step, acc in ((0, start), (10, end + 0.01 * seed)):
                rows.append(dict(method=method, batch=batch, rho=rho, seed=seed, step=step, test_acc=acc,
                                 train_acc=1.0, loss=0.0, hessian_trace=1.0 - acc, hessian_trace_se=0.0))
    return pd.DataFrame(rows)


def test_best_runs_and_the_claims_by_hand():
    rows = _final_rows({("sgd", 8, 0.0): (0.5, 0.5), ("rs", 8, 0.5): (0.5, 0.6), ("rs", 8, 2.0): (0.5, 0.7),
                        ("sa", 8, 0.2): (0.5, 0.8), ("sa", 8, 0.5): (0.5, 0.75), ("sa", 1, 0.2): (0.5, 0.9)})
    assert escape._tables.best_runs(rows, 8) == {("sgd", 8, 0.0), ("rs", 8, 2.0), ("sa", 8, 0.2), ("sa", 1, 0.2)}
    audit = evaluate({"escape": rows}, claims=escape.CLAIMS).set_index("id")
    se = 2 * np.hypot(0.005, 0.005)  # each final accuracy: mean over seeds 0 and 1, standard error 0.005
    expected = {
        "escape_sgd_stays": 0.005,
        # best SA (rho 0.2: 0.805) against best RS (rho 2: 0.705)
        "escape_sa_beats_rs_best": 0.1 - se,
        # at rho 0.5 both ran: SA 0.755, RS 0.605
        "escape_sa_beats_rs_equal_rho": 0.15 - se,
        # SA at rho 0.2 against the best RS with rho >= 0.2 (rho 2), and at 0.5 against the same: the best
        "escape_sa_beats_rs_smaller_rho": 0.1 - se,
        # SA rho 0.2: batch 1 (0.905) against batch 8 (0.805)
        "escape_small_batch_best": 0.1,
        "escape_train_acc_100": 1.0,
        # the trace change is minus the test accuracy change: a correlation of -1
        "escape_trace_falls_as_test_rises": -1.0,
    }
    for claim_id, value in expected.items():
        assert audit.loc[claim_id, "measured"] == pytest.approx(value, abs=1e-12), claim_id
    assert set(audit.loc[list(expected), "verdict"]) == {"threshold met", "consistent: interval contains"}
    # no label-noise SGD or 1-SAM run here: their claims are not run (test_the_field_claims_by_hand has them)
    assert (audit.loc[[c.id for c in escape.CLAIMS[7:-1]], "verdict"] == "not run").all()


def test_the_field_claims_by_hand():
    """The claims on label-noise SGD and 1-SAM on a table by hand: checkpoints 0, 5, 10, seed 1 0.01 above
    seed 0 after step 0 (so every paired difference is exact and its interval a point)."""
    spec = {  # (method, batch, knob, value): test accuracy at steps 0, 5, 10
        ("sgd", 128, "none", 0.0): (0.5, 0.5, 0.5),
        ("label_noise_sgd", 128, "sigma", 0.5): (0.5, 0.58, 0.55), ("label_noise_sgd", 128, "sigma", 2.0): (0.5, 0.53, 0.6),
        ("rs", 128, "rho", 8.0): (0.5, 0.66, 0.88),
        ("sa", 128, "rho", 0.4): (0.5, 0.7, 0.8), ("sa", 128, "rho", 0.6): (0.5, 0.72, 0.78),
        ("sa", 1, "rho", 0.2): (0.5, 0.75, 0.9),
        ("sam_per_sample", 1, "rho", 0.2): (0.5, 0.7, 0.75), ("sam_per_sample", 1, "rho", 0.4): (0.5, 0.8, 0.7),
    }
    rows = []
    for (method, batch, knob, value), accuracies in spec.items():
        for seed in (0, 1):
            for step, acc in zip((0, 5, 10), accuracies):
                worse = method == "sam_per_sample" and value == 0.2 and seed == 1 and step == 10
                rows.append(dict(method=method, batch=batch, knob=knob, value=value, rho=value if knob == "rho" else 0.0,
                                 seed=seed, step=step, test_acc=acc + 0.01 * seed * (step > 0),
                                 train_acc=0.998 if worse else 1.0, loss=0.0, hessian_trace=1.0 - acc,
                                 hessian_trace_se=0.0))
    audit = evaluate({"escape": pd.DataFrame(rows)}, claims=escape.CLAIMS).set_index("id")
    expected = {
        "escape_label_noise_beats_sgd": 0.1,  # sigma 2 (0.6) against SGD at batch 128 (0.5)
        "escape_sa_vs_label_noise_best": 0.3,  # SA's best is at batch 1 (0.9)
        "escape_rs_vs_label_noise_best": 0.28,
        "escape_sa_vs_one_sam_best": 0.15,  # 1-SAM's best final is rho 0.2 (0.75)
        "escape_rs_vs_one_sam_best": 0.13,
        # batch 128: SA at step 5 (its best there: rho 0.6, 0.72) against label-noise SGD at step 10 (0.6);
        # batch 1: SA and 1-SAM both take 2 gradients a step, so step 10 (0.9 against 0.75): the smaller
        "escape_sa_vs_field_equal_queries": 0.12,
        "escape_rs_vs_field_equal_queries": 0.06,  # RS at step 5 (0.66); 1-SAM ran no batch RS ran
        "escape_best_runs_train_acc_100": 0.998,  # 1-SAM's best run, seed 1
    }
    for claim_id, value in expected.items():
        assert audit.loc[claim_id, "measured"] == pytest.approx(value, abs=1e-12), claim_id
        assert audit.loc[claim_id, "low"] == pytest.approx(value, abs=1e-12), claim_id
        assert audit.loc[claim_id, "high"] == pytest.approx(value, abs=1e-12), claim_id
    assert audit.loc["escape_best_runs_train_acc_100", "verdict"] == "not confirmed"
    assert (audit.loc[list(expected)[:-1], "verdict"] == "threshold met").all()
    # a paired interval: seed-to-seed spread of the difference widens it around the mean
    noisy = pd.DataFrame(rows)
    noisy.loc[(noisy["method"] == "sgd") & (noisy["seed"] == 1) & (noisy["step"] == 10), "test_acc"] += 0.02
    row = evaluate({"escape": noisy}, claims=escape.CLAIMS).set_index("id").loc["escape_label_noise_beats_sgd"]
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * 0.01  # differences 0.1 and 0.08: mean 0.09, standard error 0.01
    assert row["measured"] == pytest.approx(0.09 - half) and row["high"] == pytest.approx(0.09 + half)
    assert row["verdict"] == "not confirmed"


def test_the_experiment_is_the_common_contract_only():
    """The escape experiment is found like the others (a package) and has no config path, command line or
    claim table of its own: its claims are plain Claims that read the results table."""
    assert "escape" in flatmin.experiments.experiment_names()
    assert flatmin.experiments.get("escape") is escape and escape.__file__.endswith("escape/__init__.py")
    for name in ("make_config", "main", "run_experiment", "save_results", "claims_table", "plot_escape"):
        assert not hasattr(escape, name), name
    assert "__main__" not in open(escape.__file__, encoding="utf-8").read()
    assert escape.CLAIMS and all(type(claim) is Claim and claim.experiment == "escape" for claim in escape.CLAIMS)
    assert len({claim.id for claim in escape.CLAIMS}) == len(escape.CLAIMS) == 15


def test_config_validation():
    from pydantic import ValidationError

    def settings(preset="paper", **overrides):
        return flatmin.experiments.settings("escape", preset, overrides)

    with pytest.raises(ValidationError, match="unknown key stepz"):
        settings(stepz=3)
    with pytest.raises(ValidationError, match="method"):
        settings(runs=[{"method": "adam", "batch": 8, "rhos": [0.1]}])
    with pytest.raises(ValidationError, match="flatness_seeds"):
        settings(seeds=2, flatness_seeds=3)
    with pytest.raises(ValidationError, match="knob = 'sigma' is not a parameter of method 'sa'; allowed: rho"):
        settings(runs=[{"method": "sa", "batch": 8, "knob": "sigma", "values": [0.1]}])
    with pytest.raises(ValidationError, match="rhos is the rho grid, not that of knob = 'sigma'"):
        settings(runs=[{"method": "label_noise_sgd", "batch": 8, "rhos": [0.1]}])
    with pytest.raises(ValidationError, match="needs its grid once"):
        settings(runs=[{"method": "rs", "batch": 8, "rhos": [0.1], "values": [0.2]}])
    with pytest.raises(ValidationError, match=r"method 'sgd' has no knob \(rho or sigma\), so its values must be \[0\], got \[0.0, 0.5\]"):
        settings(runs=[{"method": "sgd", "batch": 8, "values": [0.0, 0.5]}])
    with pytest.raises(ValidationError, match="label_noise_sgd at batch 8 and sigma 0.5 appears twice"):
        settings(runs=[{"method": "label_noise_sgd", "batch": 8, "values": [0.5]},
                       {"method": "label_noise_sgd", "batch": 8, "knob": "sigma", "values": [0.5]}])
    with pytest.raises(ValidationError, match="values.0"):
        settings(runs=[{"method": "label_noise_sgd", "batch": 8, "values": [-1.0]}])
    paper_runs = settings()["runs"]
    assert [escape._runs.group_grid(g) for g in paper_runs if g["method"] in ("label_noise_sgd", "sam_per_sample")] == [
        ("sigma", [0.5, 2.0, 8.0]), ("rho", [0.2, 0.3, 0.4])]
    quick_runs = settings("quick")["runs"]
    assert [len(escape._runs.group_grid(g)[1]) for g in quick_runs if g["method"] in escape.FIELD] == [1, 1]
    quick, paper = settings("quick"), settings()
    assert quick["steps"] < paper["steps"]
    assert set(quick) == set(paper) == set(escape.Settings.model_fields)
