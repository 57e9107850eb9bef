"""Glue between the Snakemake workflow (``Snakefile``, ``workflows/``) and the library.

The workflow scripts in ``workflows/scripts/`` only wire Snakemake's inputs, outputs and config to the
functions here, so everything the workflow does can be run and tested without Snakemake:

- :func:`prepare`: import the user's problem modules named in the config (``problem_modules``) and set
  up JAX (persistent compilation cache, thread count); JAX computes in float64 here, its 64-bit mode
  turned on by :mod:`flatmin.experiments`, which this module imports, before any computation;
- :func:`compute_to_csv` / :func:`merge_shards`: run ``flatmin.experiments.<name>.compute`` on the
  experiment's config section and write the tidy table atomically with its provenance sidecar;
- :func:`plot_to_files`: the experiment's figure as PDF and PNG, each with a sidecar;
- :func:`audit_to_files`: the claims registry (:mod:`flatmin.claims`) evaluated on the results tables,
  written as the audit and Table 1 (Markdown, CSV, LaTeX) with provenance;
- :func:`tee_output` (from :mod:`flatmin.joblog`): copy progress printed by the experiments to a log file as
  well as the terminal, and say why a job failed, a full disk included.

Experiment config sections, as resolved by :func:`flatmin.config.check_config`, carry the job keys
(``enabled``, ``threads``, ``mem_mb``, ``runtime``, ``shard_by``) and the experiment's full settings.
``compute`` and ``plot`` receive the section without the job keys (:func:`experiment_config`);
provenance hashes that same dict.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flatmin import experiments
from flatmin import provenance as prov
from flatmin._files import import_file
from flatmin.config import JOB_KEYS
from flatmin.joblog import tee_output  # noqa: F401 (the workflow scripts' entry)
from flatmin.provenance import file_sha256
from flatmin._validation import seed_list

FIGURE_FORMATS = ("pdf", "png")
PNG_DPI = 150


class WorkflowConfigError(ValueError):
    """A config value the workflow cannot use; the message names the key and the value."""


# --------------------------------------------------------------------------------------------------
# Set-up


def replace_problem_specs(config: dict, overlay: Mapping) -> None:
    """Put every problem spec of ``overlay`` (a mapping with a ``name``, as ``{name, params}``) into
    ``config`` whole, at the same place. Snakemake merges a partial ``--configfile`` over the profile
    key by key; a spec merged so would keep the other problem's ``params`` (``my_bowl() got an
    unexpected keyword argument 'depth'``). Lists are replaced whole by Snakemake already."""
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), Mapping):
            if "name" in value:
                config[key] = copy.deepcopy(dict(value))
            else:
                replace_problem_specs(config[key], value)


def import_problem_modules(paths: Sequence[str | os.PathLike], base: str | os.PathLike | None = None,
                           key: str = "problem_modules") -> list:
    """Import each Python file in ``paths`` (relative ones against ``base``, default the cwd).

    A module registers its problems with ``@flatmin.register_problem`` (or its methods with
    ``@flatmin.register_method``) when imported, so they become selectable by name in the experiment
    sections. Importing the same file twice is a no-op. ``key`` names the config key in errors.
    Returns the imported modules.
    """
    base = Path(base) if base is not None else Path.cwd()
    modules = []
    for raw in paths:
        path = (base / Path(raw)).resolve()
        if not path.is_file():
            raise WorkflowConfigError(f"{key}: file {str(raw)!r} not found (looked for {path})")
        modules.append(import_file(path, f"flatmin_user_{key.removesuffix('_modules')}s"))
    return modules


def problem_module_hashes(paths: Sequence[str | os.PathLike], base=None) -> dict[str, str]:
    """SHA-256 of each problem module file, for provenance."""
    base = Path(base) if base is not None else Path.cwd()
    return {str(raw): hashlib.sha256((base / Path(raw)).read_bytes()).hexdigest() for raw in paths}


def configure_jax(cache_dir: str | os.PathLike | None, threads: int = 1, min_compile_secs: float = 0.0) -> None:
    """Persistent compilation cache in ``cache_dir`` (``None``: off) and at most ``threads`` CPU threads.

    Must run before the first JAX computation of the process (the XLA flags are read when the CPU
    backend starts). With ``threads == 1`` XLA's intra-op thread pool is switched off so that several
    workflow jobs share the cores without oversubscription; with more threads XLA uses its default.
    """
    if threads is not None and int(threads) <= 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (
                flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            ).strip()
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    import jax

    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).resolve()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def prepare(config: Mapping, threads: int = 1) -> None:
    """Everything a workflow job does before its real work: JAX set-up, then the user's problems and
    experiments."""
    configure_jax(config.get("jax_cache_dir"), threads)
    import_problem_modules(config.get("problem_modules") or [])
    import_problem_modules(config.get("method_modules") or [], key="method_modules")
    experiments.load_experiment_files(config.get("experiment_modules") or [])


# --------------------------------------------------------------------------------------------------
# Sections


def experiment_config(section: Mapping) -> dict:
    """The section as the experiment sees it: without the job keys (:data:`flatmin.config.JOB_KEYS`)."""
    return {key: value for key, value in section.items() if key not in JOB_KEYS}


def section_seeds(section: Mapping) -> list[int] | dict:
    """The seeds an experiment section uses, for provenance.

    ``seeds: n`` (an int) means seeds ``0..n-1``; ``seeds: [..]`` is that list; ``seed: s`` is ``[s]``.
    When both are given, ``{"seed": [...], "seeds": [...]}``.
    """
    found = {}
    if "seed" in section:
        found["seed"] = [int(section["seed"])]
    if "seeds" in section:
        seeds = section["seeds"]
        found["seeds"] = seed_list(seeds)
    if len(found) == 1:
        return next(iter(found.values()))
    return found or None


# --------------------------------------------------------------------------------------------------
# Outputs


def _check_table(frame, name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"flatmin.experiments.{name}.compute returned {type(frame).__name__}, not a DataFrame")
    if frame.empty:
        raise ValueError(f"flatmin.experiments.{name}.compute returned an empty table")
    return frame


def _write_csv(frame: pd.DataFrame, path) -> str:
    """Write ``frame`` to ``path``; returns the SHA-256 of the bytes written, for the sidecar."""
    data = frame.to_csv(index=False).encode("utf-8")
    prov.write_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _problem_provenance(config: Mapping) -> dict:
    return {key: problem_module_hashes(config[key]) for key in ("problem_modules", "method_modules") if config.get(key)}


def compute_to_csv(
    name: str,
    section: Mapping,
    csv_path: str | os.PathLike,
    config: Mapping | None = None,
    shard: str | None = None,
) -> pd.DataFrame:
    """Run experiment ``name`` on ``section`` and write its table to ``csv_path`` (+ sidecar).

    ``config`` is the whole workflow config (for the problem modules' hashes); ``shard`` names the
    shard when the section is one entry of a ``shard_by`` split (``workflows/shard.smk``).
    """
    started = time.time()
    module = experiments.get(name)
    config_in = experiment_config(section)
    print(f"[{name}] compute{'' if shard is None else f' shard {shard}'} -> {csv_path}", file=sys.stderr, flush=True)
    frame = _check_table(module.compute(config_in), name)
    sha256 = _write_csv(frame, csv_path)
    info = prov.provenance(
        config_in, section_seeds(section), started, experiment=name, shard=shard, rows=len(frame),
        sha256=sha256, **_problem_provenance(config or {}),
    )
    prov.write_sidecar(csv_path, info)
    print(f"[{name}] wrote {len(frame)} rows in {info['wall_time_s']:.1f} s", file=sys.stderr, flush=True)
    return frame


def merge_shards(
    name: str, section: Mapping, shard_csvs: Sequence, csv_path, config: Mapping | None = None
) -> pd.DataFrame:
    """Concatenate the shard tables of experiment ``name`` into ``csv_path`` (+ sidecar).

    The sidecar's ``wall_time_s`` is the sum of the shards' compute times (the work, not the merge).
    """
    started = time.time()
    shard_info = [prov.verified_sidecar(path) for path in shard_csvs]
    frames = [pd.read_csv(path) for path in shard_csvs]
    frame = _check_table(pd.concat(frames, ignore_index=True), name)
    sha256 = _write_csv(frame, csv_path)
    info = prov.provenance(
        experiment_config(section), section_seeds(section), started, experiment=name, rows=len(frame),
        sha256=sha256, shards={str(path): sub["wall_time_s"] for path, sub in zip(shard_csvs, shard_info)},
        **_problem_provenance(config or {}),
    )
    info["wall_time_s"] = round(sum(sub["wall_time_s"] for sub in shard_info), 3)
    prov.write_sidecar(csv_path, info)
    return frame


def plot_to_files(name: str, section: Mapping, csv_path, outputs: Sequence) -> None:
    """Draw experiment ``name``'s figure from ``csv_path`` into each path of ``outputs`` (+ sidecars).

    The format follows each path's suffix (``.pdf``, ``.png``). PDFs carry no creation date, so an
    unchanged figure gives an unchanged file. A table that is not the one its sidecar describes raises
    :class:`flatmin.provenance.CorruptOutputError` before anything is drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = time.time()
    module = experiments.get(name)
    config_in = experiment_config(section)
    computed_by = prov.verified_sidecar(csv_path).get("git_revision")
    figure = module.plot(pd.read_csv(csv_path), config_in)
    try:
        for path in outputs:
            fmt = Path(path).suffix.lstrip(".").lower()
            if fmt not in FIGURE_FORMATS:
                raise ValueError(f"figure {path}: format {fmt!r} not one of {FIGURE_FORMATS}")
            buffer = io.BytesIO()
            metadata = {"CreationDate": None} if fmt == "pdf" else {}
            figure.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
            prov.write_atomic(path, buffer.getvalue())
            info = prov.provenance(
                config_in, section_seeds(section), started, experiment=name,
                inputs={str(csv_path): file_sha256(csv_path)},
                computed_by=computed_by,
            )
            prov.write_sidecar(path, info)
    finally:
        plt.close(figure)


# --------------------------------------------------------------------------------------------------
# The audit tables

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "—": "---", "–": "--",
}


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    """The cells of ``frame`` as strings: floats to 4 significant digits, NaN/None empty."""

    def text(value) -> str:
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)

    return [[text(value) for value in row] for row in frame.itertuples(index=False)]


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (``|`` in cells escaped)."""
    def row(cells):
        return "| " + " | ".join(cell.replace("|", r"\|").replace("\n", " ") for cell in cells) + " |"

    header = [str(column) for column in frame.columns]
    lines = [row(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [row(cells) for cells in _cells(frame)]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_table(frame: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A ``table`` environment with a booktabs ``tabular`` of ``frame`` (needs ``\\usepackage{booktabs}``)."""
    header = " & ".join(latex_escape(str(column)) for column in frame.columns) + r" \\"
    # "{}" keeps a row that starts with "[" from being read as the optional argument of the "\\" before it.
    body = ["{}" + " & ".join(latex_escape(cell) for cell in cells) + r" \\" for cells in _cells(frame)]
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{'l' * len(frame.columns)}}}", r"\toprule", header, r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def audit_to_files(result_paths: Mapping[str, str | os.PathLike], config: Mapping, outputs: Mapping[str, str]) -> pd.DataFrame:
    """Evaluate the claims registry on the results tables and write the audit and Table 1.

    Args:
      result_paths: experiment name -> results CSV (the enabled experiments).
      config: the whole workflow config.
      outputs: paths for ``audit_md``, ``audit_csv``, ``table1_md``, ``table1_tex`` and ``ranking_md`` (the
        yardstick's ranking, :func:`flatmin.experiments.yardstick.ranking`, or a line saying it did not run)
        and ``summary_html`` (the report's front page, :mod:`flatmin.summary`).

    Every file gets a sidecar; the Markdown tables end with the provenance line and the LaTeX table
    carries it as a ``%`` comment. A results table that is not the one its sidecar describes raises
    :class:`flatmin.provenance.CorruptOutputError` before anything is written.
    """
    import inspect

    from flatmin import claims, summary

    started = time.time()
    for path in result_paths.values():
        prov.verified_sidecar(path)
    results = {name: pd.read_csv(path) for name, path in result_paths.items()}
    audit = claims.evaluate(results, dict(config))
    takes_config = "config" in inspect.signature(claims.table1).parameters
    table1 = claims.table1(results, config=dict(config)) if takes_config else claims.table1(results)

    sections = config.get("experiments", {})
    used = {name: experiment_config(sections[name]) for name in result_paths if name in sections}
    info = prov.provenance(
        {"experiments": used, "problem_modules": list(config.get("problem_modules") or []),
         **({"method_modules": list(config["method_modules"])} if config.get("method_modules") else {})},
        {name: section_seeds(sections[name]) for name in used},
        started,
        profile=config.get("profile"),
        inputs={str(path): file_sha256(path) for path in result_paths.values()},
        verdicts=audit["verdict"].value_counts().to_dict() if "verdict" in audit else {},
    )
    counts = ", ".join(f"{count} {verdict}" for verdict, count in info["verdicts"].items())
    audit_md = (
        f"# Audit of the paper's claims ({config.get('profile')} profile)\n\n"
        f"One row per claim of the experiments (`flatmin.claims.collect_claims()`), evaluated on the results "
        f"tables; verdicts: {counts}.\n\n"
        + markdown_table(audit) + prov.markdown_footer(info)
    )
    table1_md = (
        "# Table 1: complexity in iterations and in per-sample gradient queries, paper vs measured exponents\n\n"
        "Measured log-log exponents with 95% bootstrap intervals and the audit's verdict.\n\n"
        + markdown_table(table1) + prov.markdown_footer(info)
    )
    table1_tex = prov.tex_comment(info) + latex_table(
        table1, caption="Iteration complexity of RS and SA: the paper's rates (Table 1) and the measured "
        "exponents with 95% bootstrap intervals.", label="tab:table1")
    ranking = summary.ranking_frame(results)
    ranking_md = summary.ranking_markdown(ranking, markdown_table) + prov.markdown_footer(info)
    summary_html = summary.summary_html(audit, table1, ranking, str(config.get("profile")), prov.markdown_footer(info))
    for key, content in (("audit_csv", audit.to_csv(index=False)), ("audit_md", audit_md),
                         ("table1_md", table1_md), ("table1_tex", table1_tex), ("ranking_md", ranking_md),
                         ("summary_html", summary_html)):
        prov.write_atomic(outputs[key], content)
        prov.write_sidecar(outputs[key], info)
    print(f"[audit] {len(audit)} claims: {counts}", file=sys.stderr, flush=True)
    return audit
