"""The escape experiment's tables: the rows of one kind, the final values per run, the best runs,
Definition 3's measurements and the rows its claims read (:func:`claims_table`). Split from
:mod:`flatmin.experiments.escape`, which re-exports every public name."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("train_acc", "test_acc", "loss", "trace", "trace_se")
FLATNESS = ("top_eigenvalue", "top_eigenvalue_residual", "tangent_grad_norm", "tangent_grad_norm_se")


def best_runs(escape: pd.DataFrame, panel_batch: int) -> set[tuple[str, int, float]]:
    """The ``(method, batch, rho)`` of each method's best run at ``panel_batch`` and over every batch,
    best by the mean final test accuracy over seeds (ties: the smaller batch, then the smaller rho)."""
    fin = final_table(escape).sort_values(["method", "batch", "rho"])
    chosen = set()
    for _, runs in fin.groupby("method"):
        for subset in (runs[runs["batch"] == panel_batch], runs):
            if len(subset):
                best = subset.loc[subset["test_acc_mean"].idxmax()]
                chosen.add((best["method"], int(best["batch"]), float(best["rho"])))
    return chosen



# summaries


def _escape_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The escape rows of a :func:`compute` table (all rows of a :func:`run_experiment` table)."""
    if "record" in results.columns:
        results = results[results["record"] == "escape"]
    return results


def minimizer_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The minimizer rows of a :func:`compute` table, in the layout of :func:`minimizer_table`."""
    rows = results[results["record"] == "minimizer"]
    return rows.rename(columns={"method": "minimizer"})[["minimizer", *METRICS, "param_norm", "epochs",
                                                         "seconds"]].reset_index(drop=True)


def final_table(escape: pd.DataFrame) -> pd.DataFrame:
    """Per (method, batch, rho): mean and standard deviation over seeds of every metric at the last
    checkpoint, and the changes ``d_test_acc``, ``d_trace`` from step 0 (mean over seeds)."""
    escape = _escape_rows(escape)
    last = escape["step"].max()
    keys = ["method", "batch", "rho"]
    start = escape[escape["step"] == 0].set_index(keys + ["seed"])
    end = escape[escape["step"] == last].set_index(keys + ["seed"])
    delta = (end[["test_acc", "trace"]] - start[["test_acc", "trace"]]).add_prefix("d_")
    table = pd.concat([end[list(METRICS)], delta], axis=1).reset_index()
    cols = [c for c in table.columns if c not in keys + ["seed"]]
    agg = table.groupby(keys)[cols].agg(["mean", "std"])
    agg.columns = [f"{a}_{b}" for a, b in agg.columns]
    agg = agg.reset_index()
    agg.insert(3, "seeds", table.groupby(keys).size().to_numpy())
    agg.insert(3, "step", last)
    order = {m: i for i, m in enumerate(dict.fromkeys(escape["method"]))}  # the config's order
    return agg.sort_values(["method", "batch", "rho"], key=lambda s: s.map(order) if s.name == "method"
                           else s).reset_index(drop=True)


def flatness_table(results: pd.DataFrame) -> pd.DataFrame:
    """The flatness records of a :func:`compute` table, one row per point (the two minimizers first),
    mean over the measured seeds: test accuracy, training loss, Hessian trace, top eigenvalue and
    ``||dPhi grad trbar||`` (Definition 3), each with its standard error."""
    rows = results[results["record"] == "flatness"]
    keys = ["method", "batch", "rho"]
    columns = ["test_acc", "loss", "trace", "trace_se", "top_eigenvalue", "tangent_grad_norm", "tangent_grad_norm_se"]
    table = rows.groupby(keys, sort=False)[columns].mean().reset_index()
    table.insert(3, "seeds", rows.groupby(keys, sort=False).size().to_numpy())
    return table


def claims_table(results: pd.DataFrame, sgd_tol: float = 0.01) -> pd.DataFrame:
    """Audit rows for the claims of the paper's Figure 3, each with the measured value, a readable
    detail and whether it holds (final = last checkpoint, mean over seeds; accuracies as fractions).

    * ``sgd_stays``: |change of SGD's test accuracy| <= ``sgd_tol``.
    * ``sa_beats_rs_equal_rho_b{B}``: at every rho run by both, SA's final test accuracy exceeds RS's
      by more than 2 standard errors (over seeds) of the difference (value: the smallest margin).
    * ``sa_beats_rs_best_b{B}``: SA at its best rho beats RS at its best rho by more than 2 standard
      errors of the difference (value: the margin; the detail says when a best rho is at the edge of
      its grid, where a wider grid might do better).
    * ``sa_beats_rs_smaller_rho_b{B}``: some SA run beats, by more than 2 standard errors, the best RS
      run whose rho is >= its own (value: the best such margin).
    * ``smaller_batch_escapes_more_rho{r}``: SA's final test accuracy decreases with the batch size, each
      step by more than 2 standard errors (over seeds) of the difference; value: the smallest margin.
    * ``smallest_batch_best_rho{r}``: the smallest batch beats every larger one by > 2 standard errors.
    * ``train_acc_100_{method}``: the minimum training accuracy over every checkpoint, run and seed is
      1 (the detail names the runs that dipped).
    * ``trace_falls_as_test_rises``: Spearman correlation over runs of the mean changes of trace and
      test accuracy is negative.
    * ``gap_closed`` (with minimizer rows): fraction of the bad-to-normal test accuracy gap closed by
      the best run; holds if > 0. ``gap_closed_{method}``: the same for each method's best run, the
      detail with the fraction gained over the last checkpoint interval (+- its standard error over
      seeds): near 0 where the test accuracy has levelled off, clearly positive where it still rises.
    """
    escape = _escape_rows(results)
    fin = final_table(escape)
    rows = []

    def add(claim, value, detail, holds):
        rows.append({"claim": claim, "value": float(value), "detail": detail, "holds": bool(holds)})

    def acc(df):
        return df.set_index("rho")["test_acc_mean"]

    def se(df):
        return (df["test_acc_std"].fillna(0) / np.sqrt(df["seeds"])).set_axis(df["rho"])

    sgd = fin[fin["method"] == "sgd"]
    if len(sgd):
        d = float(sgd["d_test_acc_mean"].abs().max())
        add("sgd_stays", d, f"|change of test acc| = {d:.4f} (trace change {sgd['d_trace_mean'].iloc[0]:+.1f})",
            d <= sgd_tol)
    for batch in sorted(set(fin[fin["method"] == "rs"]["batch"]) & set(fin[fin["method"] == "sa"]["batch"])):
        rs_df = fin[(fin["method"] == "rs") & (fin["batch"] == batch)]
        sa_df = fin[(fin["method"] == "sa") & (fin["batch"] == batch)]
        rs, sa, rs_se, sa_se = acc(rs_df), acc(sa_df), se(rs_df), se(sa_df)
        common = sorted(set(rs.index) & set(sa.index))
        if common:
            # margin beyond 2 standard errors (over seeds) of the difference
            margins = [sa[r] - rs[r] - 2 * np.hypot(sa_se[r], rs_se[r]) for r in common]
            add(f"sa_beats_rs_equal_rho_b{batch}", min(margins),
                ", ".join(f"rho={r:g}: SA {sa[r]:.4f}+-{sa_se[r]:.4f} vs RS {rs[r]:.4f}+-{rs_se[r]:.4f}"
                          for r in common) + " (value: smallest margin beyond 2 s.e.)", min(margins) > 0)
        rs_best, sa_best = rs.idxmax(), sa.idxmax()
        margin = sa[sa_best] - rs[rs_best] - 2 * np.hypot(sa_se[sa_best], rs_se[rs_best])
        edges = [f"{name}'s best rho is the {'largest' if r == s.index.max() else 'smallest'} of its grid"
                 for name, s, r in (("SA", sa, sa_best), ("RS", rs, rs_best))
                 if len(s) > 1 and r in (s.index.min(), s.index.max())]
        train = lambda df, r: df.set_index("rho").loc[r, "train_acc_mean"]
        add(f"sa_beats_rs_best_b{batch}", margin,
            f"best SA rho={sa_best:g}: {sa[sa_best]:.4f}+-{sa_se[sa_best]:.4f} (train acc {train(sa_df, sa_best):.4f}) "
            f"vs best RS rho={rs_best:g}: {rs[rs_best]:.4f}+-{rs_se[rs_best]:.4f} (train acc "
            f"{train(rs_df, rs_best):.4f}) (value: margin beyond 2 s.e.)"
            + "".join(f"; {e}" for e in edges), margin > 0)
        margins = []
        for r in sa.index:
            larger = rs.index >= r
            if larger.any():
                best = rs[larger].idxmax()
                margins.append((r, best, sa[r] - rs[best] - 2 * np.hypot(sa_se[r], rs_se[best])))
        if margins:
            r, best, m = max(margins, key=lambda item: item[2])
            add(f"sa_beats_rs_smaller_rho_b{batch}", m,
                f"SA rho={r:g}: {sa[r]:.4f} vs best RS with rho >= {r:g} (rho={best:g}): {rs[best]:.4f} "
                "(value: margin beyond 2 s.e.)", m > 0)
    sa = fin[fin["method"] == "sa"]
    for r in sorted(sa["rho"].unique()):
        sub = sa[np.isclose(sa["rho"], r)].sort_values("batch")
        if sub["batch"].nunique() < 2:
            continue
        accs = sub["test_acc_mean"].to_numpy()
        ses = (sub["test_acc_std"].fillna(0) / np.sqrt(sub["seeds"])).to_numpy()
        detail = ", ".join(f"B={b}: {a:.4f}+-{e:.4f}" for b, a, e in zip(sub["batch"], accs, ses))
        # each smaller batch ahead of the next larger by more than 2 standard errors of the difference
        margins = -np.diff(accs) - 2 * np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)
        add(f"smaller_batch_escapes_more_rho{r:g}", float(margins.min()), detail + " (mean +- s.e. over seeds)",
            bool(np.all(margins > 0)))
        others = accs[1:] + 2 * np.sqrt(ses[1:] ** 2 + ses[0] ** 2)
        add(f"smallest_batch_best_rho{r:g}", float(accs[0] - accs[1:].max()),
            f"B={sub['batch'].iloc[0]} ahead of every larger batch by > 2 s.e.", bool(np.all(accs[0] > others)))
    for method in dict.fromkeys(escape["method"]):
        g = escape[escape["method"] == method]
        worst = g.groupby(["batch", "rho"])["train_acc"].min()
        dipped = worst[worst < 1.0]
        detail = "all runs at 100%" if dipped.empty else "dipped: " + ", ".join(
            f"B={b} rho={r:g}: {v:.4f}" for (b, r), v in dipped.items())
        add(f"train_acc_100_{method}", worst.min(), detail, dipped.empty)
    if len(fin) >= 3:
        from scipy.stats import spearmanr

        rs_ = float(spearmanr(fin["d_trace_mean"], fin["d_test_acc_mean"]).statistic)
        add("trace_falls_as_test_rises", rs_, f"Spearman(change of trace, change of test acc) over "
            f"{len(fin)} runs = {rs_:+.3f}", rs_ < 0)
    if "record" in results.columns and (results["record"] == "minimizer").any():
        mins = minimizer_rows(results).set_index("minimizer")["test_acc"]
        gap = mins["normal"] - mins["bad"]
        best = fin.loc[fin["test_acc_mean"].idxmax()]
        frac = (best["test_acc_mean"] - mins["bad"]) / gap if gap > 0 else float("nan")
        add("gap_closed", frac, f"best run {best['method']} B={best['batch']} rho={best['rho']:g}: "
            f"{best['test_acc_mean']:.4f}; bad {mins['bad']:.4f}, normal {mins['normal']:.4f}", frac > 0)
        for method in dict.fromkeys(fin["method"]):
            runs = fin[fin["method"] == method]
            best = runs.loc[runs["test_acc_mean"].idxmax()]
            gain, gain_se, (a, b) = _last_interval_gain(escape, best)
            frac = (best["test_acc_mean"] - mins["bad"]) / gap if gap > 0 else float("nan")
            add(f"gap_closed_{method}", frac,
                f"best {method} run B={best['batch']} rho={best['rho']:g}: {best['test_acc_mean']:.4f}, "
                f"{frac:.1%} of the gap; steps {a}-{b} gained {gain / gap:+.1%} +- {gain_se / gap:.1%} of it",
                frac > 0)
    return pd.DataFrame(rows)


def _last_interval_gain(escape: pd.DataFrame, run) -> tuple[float, float, tuple[int, int]]:
    """Test accuracy gained by ``run`` (a :func:`final_table` row) over its last checkpoint interval:
    mean and standard error over seeds, and the interval's two steps."""
    rows = escape[(escape["method"] == run["method"]) & (escape["batch"] == run["batch"])
                  & np.isclose(escape["rho"], run["rho"])]
    a, b = sorted(rows["step"].unique())[-2:]
    by_step = rows.pivot_table(index="seed", columns="step", values="test_acc")
    gains = by_step[b] - by_step[a]
    se = float(gains.std() / np.sqrt(len(gains))) if len(gains) > 1 else float("nan")
    return float(gains.mean()), se, (int(a), int(b))


# ----------------------------------------------------------------------------------------------
