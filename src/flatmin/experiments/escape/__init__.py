"""Escaping a sharp, badly generalizing global minimizer on real data: the paper's Figure 3 at CPU scale
(docs/paper_notes.md §6; the design and its record in docs/escape_notes.md).

A multilayer perceptron (no normalization layers) on scikit-learn's bundled 8x8 digits (default: 500
training, 1297 test images; MNIST-1D generated offline is the alternative) is driven to a *bad* global
minimizer following Liu et al. (2020) / Damian et al. (2021): pre-training on a confusion set (the
training set repeated, ~10% of the input entries zeroed, uniformly random labels), then plain SGD on the
clean training set until 100% training accuracy. A *normal* minimizer (same architecture and
initialization, clean SGD from scratch) is the reference. The training loss is the square loss on
one-hot targets (Setting 1: ``l`` minimized at ``p = y``; with cross-entropy 100% training accuracy is
not a minimum and the trace keeps falling as the margins grow); the confusion pre-training uses
cross-entropy, which memorizes the random labels. From the bad minimizer, at one constant small step
size ``eta``, the run groups of ``runs`` (a method, its options, a batch size and a grid over the method's
knob: ``rho`` of RS, SA and 1-SAM, ``sigma`` of label-noise SGD; over seeds) take mini-batch steps: with a
uniform mini-batch ``B``, ``g_B = grad f_B(x)`` and ``f_i`` the sample losses ``l(p_i(x), y_i)``::

    SGD:             x <- x - eta * g_B
    RS :             x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * g)]),        g ~ U(S^{d-1})
    SA :             x <- x - eta * (g_B + Proj_perp(g_B)[grad f_B(x + rho * s * g_B/||g_B||)]),  s ~ U{-1,+1}
    label-noise SGD: x <- x - eta * grad_x mean_{i in B} l(p_i(x), y_i + sigma * xi_i),   xi_i ~ N(0, I)
    1-SAM:           x <- x - eta * mean_{i in B} grad f_i(x + rho * g_i/||g_i||),       g_i = grad f_i(x)

(label-noise SGD: Damian, Ma, Lee 2021, the baseline of this very construction; 1-SAM: m-sharpness with
m = 1, which regularizes the trace, Wen, Ma, Li 2023; at batch size 1 it is SAM at batch size 1)

(:func:`flatmin.training.minibatch_step`, the library's methods with the batch as the loss at hand; SA
projects on the batch gradient, gate open, no Remark 2 fallback). With ``rho = 0`` RS and SA are SGD
exactly (so is label-noise SGD with ``sigma = 0``), and seed ``s`` draws the same mini-batches for every
method: the SGD run is a common-random-numbers control. Training and test accuracy, training loss and the Hessian trace
(Hutchinson, the same probes at every checkpoint) are recorded; at both minimizers and at the end points
of the best runs (seeds ``0..flatness_seeds-1``) Definition 3 on the network (:func:`flatmin.model_flatness`:
``||dPhi grad trbar||``, the trace and the top Hessian eigenvalue).

The data, the network, its measurements and the minimizers are the library's (:mod:`flatmin.nets`,
:mod:`flatmin.minimizers`), the steps and checkpointed runs :mod:`flatmin.training`; this package holds the
settings (:mod:`._settings`), the runs on them (:mod:`._runs`), the tables (:mod:`._tables`), the figure (:mod:`._figure`)
and the claims.

Results table (:func:`compute`), one row per record: ``record`` ("minimizer", "escape" or "flatness"),
``method`` (minimizer rows: "bad", "normal", "confusion"; escape rows: the run group's method; flatness
rows: "bad", "normal" or a method), ``method_options`` (the group's options, ``k=v, ...``), ``batch``,
``knob`` (the parameter the group's grid runs over: "rho", "sigma", or "none" for SGD and the minimizers),
``value`` (its value: a run is keyed by ``method, batch, value``), ``rho`` (the value where the knob is
rho, else 0), ``seed``, ``step``, the :data:`METRICS`
(``train_acc``, ``test_acc``, ``loss``, ``hessian_trace``, ``hessian_trace_se``: the unnormalized
``tr Hess f`` of the training loss at the point), the :data:`FLATNESS` (flatness rows; -1 elsewhere),
``param_norm`` and ``epochs`` (minimizer rows; -1 elsewhere) and ``seconds`` (wall time of building the
minimizer / of the run group / of one flatness measurement).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from flatmin.claims import Claim, NotRun, point_estimate
from flatmin.experiments.escape import _figure, _runs
from flatmin.experiments.escape._field import (FIELD, LABEL_NOISE, ONE_SAM,  # noqa: F401 (FIELD: the field's methods)
                                               _against_field_equal_queries, _best_against_best_of, _best_runs_train_acc)
from flatmin.experiments.escape._settings import KNOBS, PRESETS, RunGroup, Settings  # noqa: F401 (the contract)
from flatmin.experiments.escape._tables import (FLATNESS, METRICS, claim_finals, escape_rows,  # noqa: F401 (the columns)
                                                final_table)

ORDER = 6
CAPTION = (
    "Escape from a sharp global minimizer on real data (the paper's Figure 3 at CPU scale): test "
    "accuracy and Hessian trace of an MLP started at a badly generalizing minimizer, for the run groups "
    "of the config (the methods over a grid of their knob, rho or sigma, at one batch size, and SA over "
    "several batch sizes), mean and band over seeds; column (d) sets each method's best run, the field's "
    "label-noise SGD and 1-SAM included, against the mini-batch gradients it took. The results table also holds Definition 3 measured on the network "
    "(flatmin.model_flatness): the tangent gradient of the normalized trace, the trace and the top "
    "Hessian eigenvalue at both minimizers and at the end points of the best runs."
)


# ----------------------------------------------------------------------------------------------
# compute and plot


def compute(config: dict) -> pd.DataFrame:
    """The results table (module docstring) of the settings ``config`` (missing keys from the
    :class:`Settings` defaults): build the minimizers, run every group of ``runs``, measure Definition 3."""
    config = Settings.resolve(config).as_dict()
    t_all = time.perf_counter()
    built = _runs.build(config)
    measure = _runs.measure_fn(built, config)
    minimizers = _runs.minimizer_table(built, measure)
    print(minimizers.to_string(index=False), file=sys.stderr, flush=True)
    frames, last = [], {}
    for group in config["runs"]:
        t0 = time.perf_counter()
        frame, ends = _runs.run_group(built, config, group, measure)
        last.update({(group["method"], int(group["batch"]), r, s): x for (r, s), x in ends.items()})
        frame["seconds"] = seconds = time.perf_counter() - t0
        frames.append(frame)
        print(f"[escape] {group['method']}_b{group['batch']}: {seconds:.1f} s", file=sys.stderr, flush=True)
    escape = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    flatness = _runs.flatness_rows(built, config, last, escape)
    flatness["seconds"] = (time.perf_counter() - t0) / len(flatness)
    print(f"[escape] total {time.perf_counter() - t_all:.1f} s", file=sys.stderr, flush=True)
    return _runs.table(minimizers, escape, flatness, built["times"])


def plot(results: pd.DataFrame, config: dict):
    """The paper's Figure 3 layout (:func:`flatmin.experiments.escape._figure.figure`) of a results table
    (or of escape rows only), for ``config`` completed from the :class:`Settings` defaults."""
    return _figure.figure(results, Settings.resolve(config).as_dict())


# ----------------------------------------------------------------------------------------------
# The audit's claims on this table (flatmin.claims): final values at the last checkpoint, mean over
# seeds (final_table); a difference of test accuracies is a margin beyond 2 standard errors over seeds.


def _accuracy(fin: pd.DataFrame, method: str, batch) -> tuple[pd.Series, pd.Series]:
    """The mean final test accuracy of ``method``'s runs at ``batch`` and its standard error over seeds,
    indexed by rho."""
    rows = fin[(fin["method"] == method) & (fin["batch"] == batch)]
    se = (rows["test_acc_std"].fillna(0) / np.sqrt(rows["seeds"])).set_axis(rows["rho"])
    return rows.set_index("rho")["test_acc_mean"], se


_NO_RS_SA = "no batch size at which both RS and SA ran (their runs are not in the config)"
_NO_COMMON_RHO = "no batch size at which RS and SA ran the same rho (their runs are not in the config)"
_NO_LARGER_RHO = "no batch size with an RS run whose rho is >= an SA run's (their runs are not in the config)"


def _rs_sa_batches(fin: pd.DataFrame) -> list:
    return sorted(set(fin[fin["method"] == "rs"]["batch"]) & set(fin[fin["method"] == "sa"]["batch"]))


def _margins(statistic, missing: str, reduce=min):
    """A measure: ``statistic(fin, batch)`` (a margin, None where undefined) at every batch size that both
    RS and SA ran, reduced over the batch sizes by ``reduce``; ``missing`` says what is not run when no
    batch size has one."""

    def measure(results):
        fin = claim_finals(results)
        values = [v for v in (statistic(fin, batch) for batch in _rs_sa_batches(fin)) if v is not None]
        if not values:
            raise NotRun(missing)
        return reduce(values)

    return point_estimate(measure)


def _sgd_stays(results) -> float:
    """The largest |change of SGD's final test accuracy|."""
    sgd = claim_finals(results).query("method == 'sgd'")
    if sgd.empty:
        raise NotRun("no SGD run")
    return float(sgd["d_test_acc_mean"].abs().max())


def _equal_rho(fin, batch):
    """The smallest margin of SA over RS at the rhos both ran at ``batch``."""
    (rs, rs_se), (sa, sa_se) = _accuracy(fin, "rs", batch), _accuracy(fin, "sa", batch)
    common = sorted(set(rs.index) & set(sa.index))
    return min(sa[r] - rs[r] - 2 * np.hypot(sa_se[r], rs_se[r]) for r in common) if common else None


def _best_against_best(fin, batch):
    """The margin of SA at its best rho over RS at its best rho, at ``batch``."""
    (rs, rs_se), (sa, sa_se) = _accuracy(fin, "rs", batch), _accuracy(fin, "sa", batch)
    rs_best, sa_best = rs.idxmax(), sa.idxmax()
    return sa[sa_best] - rs[rs_best] - 2 * np.hypot(sa_se[sa_best], rs_se[rs_best])


def _smaller_rho(fin, batch):
    """The best margin of an SA run over the best RS run whose rho is >= its own, at ``batch``."""
    (rs, rs_se), (sa, sa_se) = _accuracy(fin, "rs", batch), _accuracy(fin, "sa", batch)
    margins = []
    for r in sa.index:
        larger = rs.index >= r
        if larger.any():
            best = rs[larger].idxmax()
            margins.append(sa[r] - rs[best] - 2 * np.hypot(sa_se[r], rs_se[best]))
    return max(margins) if margins else None


def _smallest_batch_best(results) -> float:
    """At every SA rho run at >= 2 batch sizes: the smallest batch's final test accuracy minus the best of
    the larger batches'; the smallest over the rhos."""
    sa = claim_finals(results).query("method == 'sa'")
    values = []
    for r in sorted(sa["rho"].unique()):
        sub = sa[np.isclose(sa["rho"], r)].sort_values("batch")
        if sub["batch"].nunique() >= 2:
            accs = sub["test_acc_mean"].to_numpy()
            values.append(float(accs[0] - accs[1:].max()))
    if not values:
        raise NotRun("no SA rho run at two or more batch sizes")
    return min(values)


def _worst_train_acc(results) -> float:
    """The smallest training accuracy over every checkpoint, run and seed."""
    escape = escape_rows(results)
    if escape.empty:
        raise NotRun("no escape rows")
    return float(escape["train_acc"].min())


def _trace_test_correlation(results) -> float:
    """Spearman correlation, over the runs, of the mean changes of the Hessian trace and of the test accuracy."""
    from scipy.stats import spearmanr

    fin = claim_finals(results)
    if len(fin) < 3:
        raise NotRun(f"a correlation over the runs needs 3 escape runs, found {len(fin)}")
    return float(spearmanr(fin["d_hessian_trace_mean"], fin["d_test_acc_mean"]).statistic)


CLAIMS = (
    Claim("escape_sgd_stays", "Figure 3", "At the small constant step, SGD does not escape the sharp minimizer "
          "(largest |change of test accuracy|)", "escape", point_estimate(_sgd_stays), 0.01, 0.0, "below",
          "<= 0.01"),
    Claim("escape_sa_beats_rs_equal_rho", "Figure 3", "SA escapes more than RS at equal rho, batch 128 "
          "(smallest SA - RS final test accuracy beyond 2 SE over seeds)", "escape",
          _margins(_equal_rho, _NO_COMMON_RHO), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_beats_rs_best", "Figure 3", "SA at its best rho escapes more than RS at its best rho, "
          "batch 128 (margin of final test accuracy beyond 2 SE over seeds; each over its rho grid)", "escape",
          _margins(_best_against_best, _NO_RS_SA), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_beats_rs_smaller_rho", "Figure 3", "SA escapes more than RS even with a smaller rho "
          "(best margin beyond 2 SE over the best RS run with rho >= SA's)", "escape",
          _margins(_smaller_rho, _NO_LARGER_RHO, max), 0.0, 0.0, "above", "> 0"),
    Claim("escape_small_batch_best", "Figure 3", "SA with batch 1 escapes best (margin of test accuracy over "
          "larger batches)", "escape", point_estimate(_smallest_batch_best), 0.0, 0.0, "above", "> 0"),
    Claim("escape_train_acc_100", "Figure 3", "Training accuracy stays at 100% for every method "
          "(minimum over checkpoints, runs, seeds)", "escape", point_estimate(_worst_train_acc), 1.0, 0.0,
          "equal", "1"),
    Claim("escape_trace_falls_as_test_rises", "§1, Figure 3", "The trace falls as test accuracy rises "
          "(Spearman correlation of their changes over runs)", "escape",
          point_estimate(_trace_test_correlation), 0.0, 0.0, "below", "< 0"),
)


# ----------------------------------------------------------------------------------------------
# The field's methods against RS and SA (issue 22): label-noise SGD (Damian, Ma, Lee 2021: their own
# baseline for this construction) and 1-SAM (Wen, Ma, Li 2023: it regularizes the trace). A seed draws the
# same mini-batches for every method at a batch size, so two runs are compared by the paired differences
# of their test accuracies over their common seeds; the statistic is the lower end of the 95% Student-t
# interval of the mean difference (the interval itself is the claim's), so "> 0" says the difference is
# resolved over the seeds (the statistics: :mod:`._field`).

_DAMIAN, _WEN = "Damian, Ma, Lee, NeurIPS 2021", "Wen, Ma, Li, ICLR 2023"
_PAIRED = "lower end of the 95% interval over seeds of the paired difference of final test accuracies"
_BEST = "each at the best value of its grid over every batch size, by mean final test accuracy"
_QUERIES = ("at equal mini-batch gradient queries (SGD and label-noise SGD take 1 per step, RS, SA and 1-SAM 2: "
            "the checkpoints of the largest equal budget), each at its best value there, smallest margin over "
            "label-noise SGD and 1-SAM; lower end of the 95% interval of the paired difference of test accuracies")
CLAIMS = CLAIMS + (
    Claim("escape_label_noise_beats_sgd", _DAMIAN, "Label-noise SGD at its best sigma escapes the sharp minimizer "
          f"more than SGD at the same batch size ({_PAIRED})", "escape",
          _best_against_best_of(LABEL_NOISE, "sgd", at_first_batch=True), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_vs_label_noise_best", f"Figure 3; {_DAMIAN}", "SA escapes more than label-noise SGD, best "
          f"against best ({_BEST}; {_PAIRED})", "escape", _best_against_best_of("sa", LABEL_NOISE), 0.0, 0.0,
          "above", "> 0"),
    Claim("escape_rs_vs_label_noise_best", f"Figure 3; {_DAMIAN}", "RS escapes more than label-noise SGD, best "
          f"against best ({_BEST}; {_PAIRED})", "escape", _best_against_best_of("rs", LABEL_NOISE), 0.0, 0.0,
          "above", "> 0"),
    Claim("escape_sa_vs_one_sam_best", f"Figure 3; {_WEN}", "SA escapes more than 1-SAM, best against best "
          f"({_BEST}; {_PAIRED})", "escape", _best_against_best_of("sa", ONE_SAM), 0.0, 0.0, "above", "> 0"),
    Claim("escape_rs_vs_one_sam_best", f"Figure 3; {_WEN}", "RS escapes more than 1-SAM, best against best "
          f"({_BEST}; {_PAIRED})", "escape", _best_against_best_of("rs", ONE_SAM), 0.0, 0.0, "above", "> 0"),
    Claim("escape_sa_vs_field_equal_queries", f"Figure 3; {_DAMIAN}; {_WEN}", "SA escapes more than the field's "
          f"methods at equal gradient queries and batch size ({_QUERIES})", "escape",
          _against_field_equal_queries("sa"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_rs_vs_field_equal_queries", f"Figure 3; {_DAMIAN}; {_WEN}", "RS escapes more than the field's "
          f"methods at equal gradient queries and batch size ({_QUERIES})", "escape",
          _against_field_equal_queries("rs"), 0.0, 0.0, "above", "> 0"),
    Claim("escape_best_runs_train_acc_100", "Figure 3", "Each method's best run (by mean final test accuracy) "
          "ends at 100% training accuracy (smallest final training accuracy over seeds and methods)", "escape",
          point_estimate(_best_runs_train_acc), 1.0, 0.0, "equal", "1"),
)
