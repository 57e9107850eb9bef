"""The Snakemake workflow: config files, dry runs of both profiles, lint, the workflow's library
functions without Snakemake, and (slow) the quick profile end to end. Provenance is in
tests/test_provenance.py, a user's own problem through the workflow in tests/test_workflow_user_problem.py.

Snakemake runs in a subprocess (the snakemake next to this interpreter, else the one on PATH), from a
temporary working directory (``-d``) with the repository's Snakefile, so the tests never touch the
repository's results/, figures/ or tables/.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import flatmin
from flatmin import provenance as prov
from flatmin import workflow
from flatmin import experiments
from workflow_support import (
    BOWL_MODULE, EXPERIMENTS, PAPER, QUICK, ROOT, SNAKEFILE, SNAKEMAKE, TABLES, dry_run_outputs, into, load,
    needs_snakemake, only, resolved, snakemake, tool, write_config,
)

# ------------------------------------------------------------------------------------------------
# Config files (fast)


@needs_snakemake
def test_a_complete_configfile_replaces_the_paper_config(tmp_path):
    """Snakemake merges a --configfile over config/config.yaml; the workflow instead takes a complete one
    (all top-level keys) as is, so nothing of the paper profile leaks into the quick profile."""
    config = load(QUICK)
    del config["experiments"]["escape"]  # enabled in config/config.yaml: would come back from a merge
    done = snakemake(tmp_path, "-n", "--cores", "1", configfile=write_config(tmp_path, config))
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dry_run_outputs(done.stdout)
    assert "results/quick/identities.csv" in outputs and not [p for p in outputs if "escape" in p]


@needs_snakemake
def test_a_partial_configfile_is_merged_over_the_paper_config(tmp_path):
    overlay = {"profile": "mine", "output": {"figures": "build/mine/figures", "tables": "build/mine/tables"},
               "experiments": {"escape": {"enabled": False}}}
    done = snakemake(tmp_path, "-n", "--cores", "1", configfile=write_config(tmp_path, overlay))
    # Without config/config.yaml in the working directory there is nothing to merge over.
    assert done.returncode != 0
    shutil.copytree(ROOT / "config", tmp_path / "config")
    done = snakemake(tmp_path, "-n", "--cores", "1", configfile=write_config(tmp_path, overlay))
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dry_run_outputs(done.stdout)
    assert "results/mine/identities.csv" in outputs and "build/mine/figures/identities.png" in outputs
    assert not [p for p in outputs if "escape" in p]


def test_profiles_write_where_they_should():
    paper, quick = load(PAPER), load(QUICK)
    assert paper["profile"] == "paper" and quick["profile"] == "quick"
    assert paper["output"]["figures"] == "figures" and paper["output"]["tables"] == "tables"
    for key in ("figures", "tables"):
        assert Path(quick["output"][key]).parts[:2] == ("build", "quick"), quick["output"][key]


def test_every_experiment_has_a_caption_and_a_section_in_both_profiles():
    for name in EXPERIMENTS:
        assert experiments.get(name).CAPTION.strip(), name
        assert name in load(PAPER)["experiments"] and name in load(QUICK)["experiments"]
    for rules in ("common", "experiments", "shard", "audit"):
        assert (ROOT / "workflows" / f"{rules}.smk").is_file(), rules


# ------------------------------------------------------------------------------------------------
# flatmin.workflow without Snakemake (fast)



def test_problem_modules_are_imported_from_files(tmp_path):
    (tmp_path / "my_problem.py").write_text(BOWL_MODULE)
    modules = workflow.import_problem_modules(["my_problem.py"], base=tmp_path)
    assert workflow.import_problem_modules([tmp_path / "my_problem.py"]) == modules  # idempotent
    assert "tmp_bowl" in flatmin.list_problems()
    problem = flatmin.make_problem("tmp_bowl", scale=2.0)
    assert float(problem.loss(flatmin.Problem.start(problem, None))) == 0.0
    with pytest.raises(workflow.WorkflowConfigError, match="problem_modules.*missing.py"):
        workflow.import_problem_modules(["missing.py"], base=tmp_path)


def test_experiment_config_strips_workflow_keys():
    section = {"enabled": True, "threads": 2, "mem_mb": 500, "runtime": 5, "shard_by": "x", "seeds": 3, "x": [1]}
    assert workflow.experiment_config(section) == {"seeds": 3, "x": [1]}


def test_compute_plot_and_merge_with_a_stand_in_experiment(tmp_path, monkeypatch):
    """The contract end to end on a stand-in module (no real experiment involved)."""
    import matplotlib.pyplot as plt
    import types

    seen = {}

    def compute(config):
        seen["config"] = config
        return pd.DataFrame({"seed": config["seeds"], "value": [float(s) ** 2 for s in config["seeds"]]})

    def plot(results, config):
        fig, ax = plt.subplots()
        ax.plot(results["seed"], results["value"])
        return fig

    stand_in = types.SimpleNamespace(compute=compute, plot=plot)
    monkeypatch.setattr(experiments, "get", lambda name: stand_in)
    section = {"enabled": True, "threads": 1, "seeds": [0, 1, 2], "shard_by": "seeds"}
    shards = []
    for i, seed in enumerate(section["seeds"]):
        path = tmp_path / "shards" / f"{i:02d}.csv"
        workflow.compute_to_csv("identities", {**section, "seeds": [seed]}, path, shard=f"{i:02d}")
        shards.append(path)
    assert seen["config"] == {"seeds": [2]}  # workflow-only keys removed
    csv = tmp_path / "identities.csv"
    merged = workflow.merge_shards("identities", section, shards, csv)
    assert merged["value"].tolist() == [0.0, 1.0, 4.0]
    assert prov.read_sidecar(csv)["seeds"] == [0, 1, 2]
    outputs = [tmp_path / "fig" / "identities.pdf", tmp_path / "fig" / "identities.png"]
    workflow.plot_to_files("identities", section, csv, outputs)
    for path in outputs:
        assert path.stat().st_size > 0
        info = prov.read_sidecar(path)
        assert info["inputs"] == {str(csv): workflow.file_sha256(csv)}
    assert b"CreationDate" not in outputs[0].read_bytes()  # reproducible PDF
    assert not list(tmp_path.rglob("*.tmp"))


def test_compute_rejects_a_non_table(tmp_path, monkeypatch):
    import types

    monkeypatch.setattr(experiments, "get", lambda name: types.SimpleNamespace(compute=lambda c: [1]))
    with pytest.raises(TypeError, match="not a DataFrame"):
        workflow.compute_to_csv("identities", {"seed": 0}, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_tee_output_copies_progress_to_the_log(tmp_path, capsys):
    log = tmp_path / "logs" / "job.log"
    with workflow.tee_output(log):
        print("[exp] step 1", file=sys.stderr)
        print("result line")
    captured = capsys.readouterr()
    assert "[exp] step 1" in captured.err and "result line" in captured.out
    assert log.read_text() == "[exp] step 1\nresult line\n"
    with pytest.raises(RuntimeError), workflow.tee_output(log):
        raise RuntimeError("boom")
    assert "RuntimeError: boom" in log.read_text()


def test_markdown_and_latex_tables_escape_and_blank_missing_values():
    frame = pd.DataFrame({"rate": ["O(d^-1 eps^-2 max{1, x_1})", "a|b"], "value": [0.123456, float("nan")],
                          "note": ["50% & more", None]})
    md = workflow.markdown_table(frame)
    assert md.splitlines()[0] == "| rate | value | note |" and r"a\|b" in md and "| 0.1235 |" in md
    assert "nan" not in md.lower() and "None" not in md
    tex = workflow.latex_table(frame, caption="Table 1", label="tab:t1")
    assert r"O(d\^{}-1 eps\^{}-2 max\{1, x\_1\})" in tex and r"50\% \& more" in tex
    assert tex.count(r"\\") == 3 and r"\begin{tabular}{lll}" in tex and "nan" not in tex.lower()


def test_audit_without_results_has_a_row_per_claim(tmp_path):
    """With no experiment run, every claim is still listed (verdict "not run"), with provenance."""
    claims = pytest.importorskip("flatmin.claims")
    outputs = {key: str(tmp_path / name) for key, name in
               (("audit_md", "audit.md"), ("audit_csv", "audit.csv"), ("table1_md", "table1.md"),
                ("table1_tex", "table1.tex"), ("ranking_md", "ranking.md"), ("summary_html", "summary.html"))}
    audit = workflow.audit_to_files({}, load(QUICK), outputs)
    assert len(audit) == len(claims.collect_claims()) and set(audit["verdict"]) == {"not run"}
    assert len(pd.read_csv(outputs["audit_csv"])) == len(claims.collect_claims())
    for path in outputs.values():
        assert prov.sidecar_path(path).is_file()
    assert "Generated by flatmin" in Path(outputs["audit_md"]).read_text().splitlines()[-1]
    assert Path(outputs["table1_tex"]).read_text().startswith("% Generated by flatmin")
    front = Path(outputs["summary_html"]).read_text()
    assert f"The audit: {len(audit)} claims" in front and "not run: " in front and "Table 1" in front
    assert "The yardstick did not run" in front and "did not run" in Path(outputs["ranking_md"]).read_text()


def test_captions_describe_what_the_profile_runs():
    """The quick profile's E3 and E4 run one problem each: their captions name that one only."""
    quick = {name: experiments.settings(name, "quick") for name in ("trajectories", "complexity", "yardstick")}
    assert "diagonal" not in experiments.get("trajectories").caption(quick["trajectories"])
    assert "diagonal" in experiments.get("trajectories").caption(experiments.settings("trajectories"))
    assert "bowl" not in experiments.get("complexity").caption(quick["complexity"])
    assert "3 seeds" in experiments.get("trajectories").caption(quick["trajectories"])
    assert "ramp" not in experiments.get("yardstick").caption(quick["yardstick"])


# ------------------------------------------------------------------------------------------------
# Snakemake: dry runs, bad configs, lint


@needs_snakemake
@pytest.mark.parametrize("profile", [PAPER, QUICK], ids=["paper", "quick"])
def test_dry_run(tmp_path, profile):
    done = snakemake(tmp_path, "-n", "--cores", "2", configfile=profile)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dry_run_outputs(done.stdout)
    config = load(profile)
    figures, tables = config["output"]["figures"], config["output"]["tables"]
    for name in EXPERIMENTS:
        assert f"{config['output']['results']}/{config['profile']}/{name}.csv" in outputs
        for fmt in ("pdf", "png"):
            assert f"{figures}/{name}.{fmt}" in outputs and f"{figures}/{name}.{fmt}.provenance.json" in outputs
    for table in TABLES:
        assert f"{tables}/{table}" in outputs and f"{tables}/{table}.provenance.json" in outputs
    if config["profile"] != "paper":
        assert not [p for p in outputs if p.split("/")[0] in ("figures", "tables")], "quick writes over paper outputs"


@needs_snakemake
def test_default_config_is_the_paper_profile(tmp_path):
    """Without --configfile the workflow reads config/config.yaml relative to the working directory."""
    done = subprocess.run([SNAKEMAKE, "-n", "--forceall", "--cores", "1"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "figures/identities.pdf" in dry_run_outputs(done.stdout)


@needs_snakemake
def test_sharded_experiment_runs_one_job_per_entry(tmp_path):
    config = only(resolved(QUICK), "identities")
    config["experiments"]["identities"]["shard_by"] = "rhos"
    done = snakemake(tmp_path, "-n", "--cores", "2", configfile=write_config(tmp_path, into(config, tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    shards = [p for p in dry_run_outputs(done.stdout) if "/shards/identities/" in p and p.endswith(".csv")]
    assert len(shards) == len(config["experiments"]["identities"]["rhos"])


@needs_snakemake
@pytest.mark.slow
def test_sharded_experiment_is_computed_per_shard_and_merged(tmp_path):
    config = into(only(resolved(QUICK), "identities"), tmp_path / "out")
    config["experiments"]["identities"].update(draws=2000, rhos=[0.2, 0.4], dims=[2], shard_by="rhos")
    csv = tmp_path / "out" / "results" / "quick" / "identities.csv"
    done = snakemake(tmp_path, "--cores", "2", str(csv), configfile=write_config(tmp_path, config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.count("rule compute_shard") + done.stdout.count("rule compute_shard") == 2
    table = pd.read_csv(csv)
    assert sorted(table[table["part"] == "rho"]["rho"].unique()) == [0.2, 0.4]
    info = prov.read_sidecar(csv)
    assert len(info["shards"]) == 2 and info["seeds"] == [0]


@needs_snakemake
def test_shard_by_a_nested_key_and_a_bad_one(tmp_path):
    config = only(resolved(QUICK), "identities")
    section = config["experiments"]["identities"]
    section["shard_by"] = "dim_problem.params.curvatures"  # a list-valued parameter of valley_bowl
    section["dim_problem"]["params"]["curvatures"] = [1.0, 2.0, 3.0]
    done = snakemake(tmp_path, "-n", "--cores", "2", configfile=write_config(tmp_path, into(config, tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len([p for p in dry_run_outputs(done.stdout) if "/shards/" in p and p.endswith(".csv")]) == 3
    section["shard_by"] = "draws"
    done = snakemake(tmp_path, "-n", "--cores", "2", configfile=write_config(tmp_path, into(config, tmp_path)))
    assert done.returncode != 0 and "experiments.identities.shard_by = 'draws'" in done.stdout + done.stderr


# The workflow's error path end to end, one case per kind (an experiment's setting, a job key, the
# profile's output folders, a problem); tests/test_config.py checks every error message in-process.
BAD_CONFIGS = {
    "misspelt experiment key": (("experiments", "identities", "draw"), 100,
                                ["experiments.identities: unknown key draw = 100", "draws"]),
    "threads zero": (("experiments", "escape", "threads"), 0, ["experiments.escape.threads", "0"]),
    "quick over paper figures": (("output", "figures"), "figures", ["output.figures", "'figures'", "paper profile"]),
    "unknown problem": (("experiments", "example1", "problem", "name"), "hyperbolaa",
                        ["experiments.example1.problem.name = 'hyperbolaa': unknown problem", "hyperbola"]),
}


@needs_snakemake
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_fails_naming_key_and_value(tmp_path, case):
    path, value, expected = BAD_CONFIGS[case]
    config = resolved(QUICK)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    done = snakemake(tmp_path, "-n", "--cores", "1", configfile=write_config(tmp_path, config))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "invalid flatmin config" in output, output
    for text in expected:
        assert text in output, (text, output)


@needs_snakemake
def test_lint_is_clean(tmp_path):
    done = subprocess.run([SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_snakefmt_is_clean():
    snakefmt = tool("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed (extra 'workflow')")
    done = subprocess.run([snakefmt, "--check", "."], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_snakemake
def test_slurm_profile_dry_run_needs_no_sbatch(tmp_path):
    # an sbatch first on PATH that records any call: a real one may be installed (the local cluster)
    stub = tmp_path / "bin" / "sbatch"
    stub.parent.mkdir()
    stub.write_text(f"#!/bin/sh\ntouch {tmp_path / 'sbatch-called'}\nexit 1\n")
    stub.chmod(0o755)
    command = [SNAKEMAKE, "--profile", str(ROOT / "profiles" / "slurm"), "-n", "-s", str(SNAKEFILE), "-d", str(tmp_path),
               "--configfile", str(QUICK)]
    env = {**os.environ, "PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "FLATMIN_SLURM_PARTITION": "short"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slurm_partition=short" in done.stdout
    assert not (tmp_path / "sbatch-called").exists()


# ------------------------------------------------------------------------------------------------
# The quick profile end to end (slow): what CI runs


def readme_outputs() -> list[str]:
    """Every figures/... and tables/... file the README names as a paper-profile output (not those under
    another profile's folder, such as build/drift/figures/; the benchmark and deviation tables are written
    by workflows/scripts/benchmark.py, benchmarks/ and diagnostics/, not by the workflow)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![/\w])((?:figures|tables)/[\w.-]+\.(?:pdf|png|md|csv|tex))", text))
    return sorted(named - {"tables/benchmark.md", "tables/benchmark_steps.md", "tables/benchmark_run.md",
                           "tables/benchmark_curvature.md",
                           "tables/deviations.md"})


def test_readme_names_every_figure_and_table():
    named = readme_outputs()
    for name in EXPERIMENTS:
        assert f"figures/{name}.png" in named or f"figures/{name}.pdf" in named, name
    for table in TABLES:
        assert f"tables/{table}" in named, table


@pytest.fixture(scope="session")
def quick_local_run(tmp_path_factory) -> dict:
    """The quick profile run locally, once per test session: its outcome (returncode, output, seconds) and
    its output folders (results, figures, tables).
    Under pytest-xdist the first worker to ask runs it, under a file lock in the folder all workers of the
    session share, and the others wait and read its outcome from there."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    base = shared / "quick-local"
    folders = {"results": base / "results" / "quick", "figures": base / "build" / "quick" / "figures",
               "tables": base / "build" / "quick" / "tables"}
    outcome = base / "outcome.json"
    with open(shared / "quick-local.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not outcome.exists():
            base.mkdir(exist_ok=True)
            config = load(QUICK)
            config["output"] = {"results": str(base / "results"), "logs": str(base / "logs"),
                                "figures": str(folders["figures"]), "tables": str(folders["tables"])}
            config["jax_cache_dir"] = str(ROOT / ".jax_cache")
            started = time.time()
            done = snakemake(base, "--cores", "all", configfile=write_config(base, config), timeout=1800)
            outcome.write_text(json.dumps({"returncode": done.returncode, "seconds": time.time() - started,
                                           "output": done.stdout[-5000:] + done.stderr[-5000:]}))
    return {**json.loads(outcome.read_text()), **folders}


@needs_snakemake
@pytest.mark.slow
def test_quick_profile_end_to_end(quick_local_run):
    missing = [name for name in EXPERIMENTS if importlib.util.find_spec(f"flatmin.experiments.{name}") is None]
    if missing or importlib.util.find_spec("flatmin.claims") is None:
        pytest.skip(f"experiments not written yet: {missing + (['claims'] if not missing else [])}")
    assert quick_local_run["returncode"] == 0, quick_local_run["output"]
    print(f"quick profile: {quick_local_run['seconds']:.0f} s")
    outputs = {"figures": quick_local_run["figures"], "tables": quick_local_run["tables"]}
    for named in readme_outputs():
        folder, filename = named.split("/")
        path = outputs[folder] / filename
        assert path.is_file() and path.stat().st_size > 0, named
        assert prov.sidecar_path(path).is_file(), f"no provenance sidecar for {named}"
    for table in ("audit.md", "table1.md"):
        assert "Generated by flatmin" in (outputs["tables"] / table).read_text()
    assert (outputs["tables"] / "table1.tex").read_text().count("% Generated by flatmin") == 1
    from flatmin import claims

    audit = pd.read_csv(outputs["tables"] / "audit.csv")
    results = {path.stem: pd.read_csv(path) for path in quick_local_run["results"].glob("*.csv")}
    expected = claims.collect_claims(results=results)
    # The static claims and those the results tables generate (the yardstick's exponents), each once.
    assert len(expected) > len(claims.collect_claims())
    assert list(audit["id"]) == [claim.id for claim in expected]
