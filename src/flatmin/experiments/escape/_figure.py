"""The escape experiment's figure, the layout of the paper's Figure 3 (:func:`flatmin.experiments.escape.plot`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flatmin.experiments.escape._tables import METRICS, escape_rows, minimizer_rows
from flatmin.method import get_method
from flatmin.plotting import check_finite


def _band(ax, df, label, color, metric, scale=1.0, linestyle="-"):
    g = df.groupby("step")[metric]
    mean, lo, hi = g.mean() * scale, g.min() * scale, g.max() * scale
    ax.plot(mean.index, mean.values, color=color, label=label, linestyle=linestyle, lw=1.6)
    if df["seed"].nunique() > 1:
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)


def _name(method: str) -> str:
    """The method's label without its parenthesis (``RS (Alg. 1)`` -> ``RS``)."""
    return (get_method(method).label or method).split(" (")[0]


def figure(results: pd.DataFrame, config: dict, minimizers: pd.DataFrame | None = None):
    """The paper's Figure 3 layout: columns (a) the ``panel_a`` curves at batch ``panel_batch``, (b) the
    rho sweep of every method but the control at that batch, (c) ``batch_method`` at every batch size at
    ``batch_rho``; rows test accuracy (%), Hessian trace and training accuracy (%), mean over seeds with a
    min-max band; the ``control`` (SGD) dashed in every panel; the normal minimizer's value as a grey dotted line. ``results``: a results table (the
    minimizer rows are used when ``minimizers`` is not given) or escape rows only; ``config``: the
    resolved settings."""
    import matplotlib.pyplot as plt

    escape = escape_rows(results)
    if minimizers is None and "record" in results.columns:
        minimizers = minimizer_rows(results)
    check_finite(escape, METRICS, "escape")
    fig, axes = plt.subplots(3, 3, figsize=(13, 8.6), sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.6]})
    B = config["panel_batch"]

    def sel(method, batch=None, rho=None):
        mask = escape["method"] == method
        if batch is not None:
            mask &= escape["batch"] == batch
        if rho is not None:
            mask &= np.isclose(escape["rho"], rho)
        return escape[mask]

    control = sel(config["control"])
    shades = ("Blues", "Reds", "Greens", "Purples", "Oranges", "Greys")
    rows = (("test_acc", 100.0, "test accuracy (%)"), ("hessian_trace", 1.0, "Hessian trace tr(H)"),
            ("train_acc", 100.0, "train accuracy (%)"))
    for i, (metric, scale, ylabel) in enumerate(rows):
        for ax in axes[i]:
            if len(control):
                _band(ax, control, f"{_name(config['control'])} (B={int(control['batch'].iloc[0])})", "k", metric,
                      scale, "--")
        for method, shade in zip(config["panel_a"], shades):
            rhos = [r for r in config["panel_a"][method] if len(sel(method, B, r))]
            for j, r in enumerate(rhos):
                color = plt.get_cmap(shade)(0.55 + 0.4 * j / max(1, len(rhos) - 1))
                _band(axes[i, 0], sel(method, B, r), f"{_name(method)}, rho={r:g}", color, metric, scale)
        swept = [m for m in dict.fromkeys(escape[escape["batch"] == B]["method"]) if m != config["control"]]
        for method, shade in zip(swept, shades):
            rhos = sorted(sel(method, B)["rho"].unique())
            for j, r in enumerate(rhos):
                color = plt.get_cmap(shade)(0.4 + 0.55 * j / max(1, len(rhos) - 1))
                _band(axes[i, 1], sel(method, B, r), f"{_name(method)}, rho={r:g}", color, metric, scale,
                      get_method(method).style.get("linestyle", "-"))
        batches = sorted(sel(config["batch_method"], None, config["batch_rho"])["batch"].unique())
        for j, b in enumerate(batches):
            color = plt.get_cmap("plasma")(0.1 + 0.7 * j / max(1, len(batches) - 1))
            _band(axes[i, 2], sel(config["batch_method"], b, config["batch_rho"]),
                  f"{_name(config['batch_method'])}, B={b}", color, metric, scale)
        for ax in axes[i]:
            ax.set_ylabel(ylabel)
            if minimizers is not None and metric != "train_acc":
                ref = float(minimizers.set_index("minimizer").loc["normal", metric]) * scale
                ax.axhline(ref, color="gray", lw=1.0, ls=(0, (1, 2)), label="normal minimizer")
    low = min(99.0, 100.0 * float(escape["train_acc"].min()) - 0.2)
    for ax in axes[2]:
        ax.set_ylim(low, 100.2)
    titles = (f"(a) {' vs '.join(_name(m) for m in config['panel_a'])}, batch {B}", f"(b) rho sweep, batch {B}",
              f"(c) {_name(config['batch_method'])}, batch sizes, rho={config['batch_rho']:g}")
    for j, title in enumerate(titles):
        axes[0, j].set_title(title)
        axes[-1, j].set_xlabel(f"iteration (step size eta={config['eta']:g})")
        axes[0, j].legend(fontsize=7, loc="best")
    seeds = escape["seed"].nunique()
    fig.suptitle(
        f"Escaping a sharp global minimizer: MLP {config['depth']}x{config['width']} ({config['activation']}) on {config['data']}, "
        f"n={config['n_train']}, {config['loss']} loss. Mean and min-max over {seeds} seeds; "
        "dotted: the normally trained minimizer", fontsize=10)
    fig.tight_layout()
    return fig
