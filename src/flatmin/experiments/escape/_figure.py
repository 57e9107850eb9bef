"""The escape experiment's figure, the layout of the paper's Figure 3 (:func:`flatmin.experiments.escape.plot`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flatmin.experiments.escape._tables import METRICS, best_runs, escape_rows, minimizer_rows
from flatmin.method import get_method
from flatmin.plotting import check_finite


def _band(ax, df, label, color, metric, scale=1.0, linestyle="-", per_step=1):
    g = df.groupby("step")[metric]
    mean, lo, hi = g.mean() * scale, g.min() * scale, g.max() * scale
    mean.index, lo.index, hi.index = (series.index * per_step for series in (mean, lo, hi))
    ax.plot(mean.index, mean.values, color=color, label=label, linestyle=linestyle, lw=1.6)
    if df["seed"].nunique() > 1:
        ax.fill_between(mean.index, lo.values, hi.values, color=color, alpha=0.2, lw=0)


def _name(method: str) -> str:
    """The method's label without its parenthesis (``RS (Alg. 1)`` -> ``RS``)."""
    return (get_method(method).label or method).split(" (")[0]


def gradients_per_step(method: str, options: dict | None = None) -> int:
    """Gradients of the mini-batch one step of ``method`` takes, every step perturbed (the escape's gate
    is open): 1 for SGD and label-noise SGD, 2 for RS, SA and 1-SAM (:meth:`flatmin.Method.step_cost`)."""
    found = get_method(method)
    given = {k: v for k, v in (options or {}).items() if k in found.params}
    given.update({k: 0.0 for k in ("rho", "sigma") if k in found.params})
    if "batch_size" in found.params:
        given["batch_size"] = 2  # a mini-batch (its size does not change the count)
    return found.step_cost(found.resolve(given, f"gradients_per_step({method!r})"), True).gradients


def _options(text: str) -> dict:
    """The options of a ``method_options`` cell (``"k=v, ..."``) that the gradient count reads."""
    if not isinstance(text, str):  # an empty cell read back from a CSV file is NaN
        return {}
    pairs = (item.split("=", 1) for item in text.split(", ") if "=" in item)
    return {k: v for k, v in pairs if k == "projection"}


def _knob(df) -> str:
    knob = df["knob"].iloc[0] if "knob" in df.columns and len(df) else "rho"
    return "" if knob == "none" else knob


def figure(results: pd.DataFrame, config: dict, minimizers: pd.DataFrame | None = None):
    """The paper's Figure 3 layout and the field's methods: columns (a) the ``panel_a`` curves at batch
    ``panel_batch``, (b) the sweep of every method but the control over its knob (rho, sigma) at that
    batch, (c) ``batch_method`` at every batch size at ``batch_rho``, (d) each method's best run (the
    highest mean final test accuracy over its runs) against the gradient queries of its batch (steps
    times :func:`gradients_per_step`); rows test accuracy (%), Hessian trace and training accuracy (%), mean over seeds with a
    min-max band; the ``control`` (SGD) dashed in every panel; the normal minimizer's value as a grey dotted line. ``results``: a results table (the
    minimizer rows are used when ``minimizers`` is not given) or escape rows only; ``config``: the
    resolved settings."""
    import matplotlib.pyplot as plt

    escape = escape_rows(results)
    if minimizers is None and "record" in results.columns:
        minimizers = minimizer_rows(results)
    check_finite(escape, METRICS, "escape")
    fig, axes = plt.subplots(3, 4, figsize=(17, 8.6), sharex="col", gridspec_kw={"height_ratios": [3, 3, 1.6]})
    B = config["panel_batch"]

    def sel(method, batch=None, value=None):
        mask = escape["method"] == method
        if batch is not None:
            mask &= escape["batch"] == batch
        if value is not None:
            mask &= np.isclose(escape["value"], value)
        return escape[mask]

    best = {}  # each method's best run over every batch (best_runs holds it beside the one at B)
    for method, batch, value in sorted(best_runs(escape, B)):
        accuracy = float(sel(method, batch, value).query("step == step.max()")["test_acc"].mean())
        if method not in best or accuracy > best[method][2]:
            best[method] = (batch, value, accuracy)
    options = (escape.drop_duplicates("method").set_index("method")["method_options"]
               if "method_options" in escape.columns else pd.Series(dtype=str))

    control = sel(config["control"])
    shades = ("Blues", "Reds", "Greens", "Purples", "Oranges", "Greys")
    rows = (("test_acc", 100.0, "test accuracy (%)"), ("hessian_trace", 1.0, "Hessian trace tr(H)"),
            ("train_acc", 100.0, "train accuracy (%)"))
    for i, (metric, scale, ylabel) in enumerate(rows):
        for ax in axes[i, :3]:  # column (d) has SGD's best run
            if len(control):
                _band(ax, control, f"{_name(config['control'])} (B={int(control['batch'].iloc[0])})", "k", metric,
                      scale, "--")
        for method, shade in zip(config["panel_a"], shades):
            rhos = [r for r in config["panel_a"][method] if len(sel(method, B, r))]
            for j, r in enumerate(rhos):
                color = plt.get_cmap(shade)(0.55 + 0.4 * j / max(1, len(rhos) - 1))
                run = sel(method, B, r)
                _band(axes[i, 0], run, f"{_name(method)}, {_knob(run)}={r:g}", color, metric, scale)
        swept = [m for m in dict.fromkeys(escape[escape["batch"] == B]["method"]) if m != config["control"]]
        for method, shade in zip(swept, shades):
            values = sorted(sel(method, B)["value"].unique())
            for j, r in enumerate(values):
                color = plt.get_cmap(shade)(0.4 + 0.55 * j / max(1, len(values) - 1))
                run = sel(method, B, r)
                _band(axes[i, 1], run, f"{_name(method)}, {_knob(run)}={r:g}", color, metric, scale,
                      get_method(method).style.get("linestyle", "-"))
        for method, (batch, value, _) in best.items():
            run, style = sel(method, batch, value), get_method(method).style
            per_step = gradients_per_step(method, _options(options.get(method, "")))
            knob = _knob(run)
            label = f"{_name(method)}, B={batch}" + (f", {knob}={value:g}" if knob else "")
            _band(axes[i, 3], run, label, style.get("color", "k"), metric, scale, style.get("linestyle", "-"),
                  per_step)
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
    titles = (f"(a) {' vs '.join(_name(m) for m in config['panel_a'])}, batch {B}",
              f"(b) sweep of each method's knob, batch {B}",
              f"(c) {_name(config['batch_method'])}, batch sizes, rho={config['batch_rho']:g}",
              "(d) best runs, per gradient query")
    for j, title in enumerate(titles):
        axes[0, j].set_title(title)
        axes[-1, j].set_xlabel(f"iteration (step size eta={config['eta']:g})")
        axes[0, j].legend(fontsize=7, loc="best")
    axes[-1, 3].set_xlabel("mini-batch gradients (steps x gradients per step)")
    seeds = escape["seed"].nunique()
    fig.suptitle(
        f"Escaping a sharp global minimizer: MLP {config['depth']}x{config['width']} ({config['activation']}) on {config['data']}, "
        f"n={config['n_train']}, {config['loss']} loss. Mean and min-max over {seeds} seeds; "
        "dotted: the normally trained minimizer", fontsize=10)
    fig.tight_layout()
    return fig
