"""A small workflow through a real SLURM cluster (profiles/slurm), against the same workflow run locally.

Needs a reachable cluster without an accounting database, such as the one-node cluster that
``profiles/slurm/local-cluster.sh start`` runs on this machine (CI starts it). Without one the test skips
saying why; with ``FLATMIN_REQUIRE_SLURM=1`` (set by .ci/run) it fails instead.

One run checks both the normal path and a fault: every compute job goes through ``sbatch`` with the
resources of its config section, one running job is cancelled with ``scancel`` and the profile's
``retries`` resubmits it, and the tables and figures are those of the local run. The workflow is the quick
profile's identities (fewer draws and dimensions), trajectories and example1: three compute jobs of a few
seconds each, plots and the audit, so the test exercises the executor rather than the science (the quick
profile runs whole, locally, in tests/test_workflow.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from workflow_support import QUICK, ROOT, SNAKEFILE, SNAKEMAKE, into, only, resolved, snakemake, write_config

PROFILE = ROOT / "profiles" / "slurm"
NO_ACCOUNTING = PROFILE / "no-accounting"
RUN_TIMEOUT = 600  # seconds for the whole SLURM run (about 1 minute on 2 idle cores)
# The compute rule's jobs log to .../rule_compute/<experiment>/<jobid>.log; each is named <experiment>_compute
# here, as its log file in logs/<profile>/ is.
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: [^)]*/rule_compute/(\w+)/[^)]*\)")
# Columns of the results tables that hold wall-clock times: the only values allowed to differ between runs.
TIMING_COLUMNS = ["seconds"]  # escape.csv

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def cluster_problem() -> str | None:
    """Why no SLURM cluster can take jobs from here, or None when one can."""
    for tool in ("sbatch", "squeue", "scontrol", "sinfo", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    states = done.stdout.split()
    if done.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states):
        return f"no SLURM node is up (sinfo: {(done.stdout + done.stderr).strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    problem = cluster_problem()
    if problem is not None:
        message = f"no reachable SLURM cluster: {problem} (start one with profiles/slurm/local-cluster.sh start)"
        if os.environ.get("FLATMIN_REQUIRE_SLURM") == "1":
            pytest.fail(message + "; FLATMIN_REQUIRE_SLURM=1 requires one")
        pytest.skip(message)


def scontrol_job(jobid: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay visible for the cluster's MinJobAge)."""
    done = subprocess.run(["scontrol", "--oneliner", "show", "job", jobid], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"slurmctld no longer knows job {jobid} (MinJobAge shorter than the run?) {done.stderr}"
    return dict(field.partition("=")[::2] for field in done.stdout.split())


def seconds(duration: str) -> int:
    """A SLURM duration ([D-][HH:]MM:SS, as in TimeLimit) in seconds."""
    days, _, clock = duration.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    return int(days or 0) * 86400 + sum(part * 60**i for i, part in enumerate(reversed(parts)))


def megabytes(memory: str) -> int:
    """A SLURM memory size (e.g. 1500M, 2G) in MB."""
    return int(float(memory[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[memory[-1]])


def running_compute_jobs(workdir: Path) -> dict[str, str]:
    """Job id -> rule of the compute jobs of the run in ``workdir`` that SLURM is running now."""
    done = subprocess.run(["squeue", "--noheader", "--states=RUNNING", "--format=%i|%k|%Z"],
                          capture_output=True, text=True, timeout=30)
    jobs = {}
    for line in done.stdout.splitlines():
        jobid, comment, jobdir = line.strip().split("|")
        if Path(jobdir) == workdir and comment.startswith("rule_compute_wildcards_"):
            jobs[jobid] = comment.removeprefix("rule_compute_wildcards_") + "_compute"
    return jobs


def run_cancelling_one_job(command: list[str], env: dict, workdir: Path, logs: Path) -> tuple[int, str, tuple | None]:
    """Run Snakemake in ``workdir`` and cancel the first compute job caught in mid-computation (its job log
    in ``logs`` reports a finished step), as an administrator or a failing node would. Returns Snakemake's
    exit status, its output and (SLURM job id, rule) of the cancelled job."""
    log = workdir / "snakemake.out"
    started = time.time()
    cancelled = None
    with log.open("w") as out:
        run = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)
        try:
            while run.poll() is None:
                if time.time() - started > RUN_TIMEOUT:
                    pytest.fail(f"the SLURM run took over {RUN_TIMEOUT} s:\n{log.read_text()[-5000:]}")
                for jobid, rule in running_compute_jobs(workdir).items() if cancelled is None else ():
                    job_log = logs / f"{rule}.log"  # line 1: what it computes; then one line per step done
                    if job_log.exists() and len(job_log.read_text().splitlines()) >= 2:
                        subprocess.run(["scancel", jobid], check=True, timeout=30)
                        cancelled = (jobid, rule)
                        break
                time.sleep(1)
        finally:
            if run.poll() is None:
                run.send_signal(signal.SIGINT)  # Snakemake then cancels its SLURM jobs
                run.wait(timeout=120)
    return run.returncode, log.read_text(), cancelled


def without_timing(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])


def without_provenance(text: str) -> str:
    """A Markdown or LaTeX table without its provenance line (revision, config hash, finishing time)."""
    return "\n".join(line for line in text.splitlines() if "Generated by flatmin" not in line)


def small_workflow() -> dict:
    """Three of the quick profile's experiments, identities reduced (its log still reports 8 steps)."""
    config = only(resolved(QUICK), "identities", "trajectories", "example1")
    config["experiments"]["identities"].update(draws=5000, dims=[2, 4])
    return config


def output_folders(config: dict) -> dict[str, Path]:
    """Where a run of ``config`` writes its results tables, figures and tables."""
    output = config["output"]
    return {"results": Path(output["results"]) / config["profile"], "figures": Path(output["figures"]),
            "tables": Path(output["tables"])}


def test_small_workflow_through_slurm_matches_the_local_run(slurm_cluster, tmp_path):
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    local_config = into(small_workflow(), local_dir)
    done = snakemake(local_dir, "--cores", "2", configfile=write_config(local_dir, local_config))
    assert done.returncode == 0, f"the local reference run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    local = output_folders(local_config)

    config = into(small_workflow(), slurm_dir)
    # A memory and a time limit per experiment, all different, so that a job given another section's
    # (or the profile's default) resources shows. Threads stay as configured: XLA's thread count can change
    # the last bits of a result, and the tables must match the local run.
    enabled = [name for name, section in config["experiments"].items() if section.get("enabled")]
    for i, name in enumerate(enabled):
        config["experiments"][name].update(mem_mb=1000 + 100 * i, runtime=20 + i)
    command = [SNAKEMAKE, "--profile", str(PROFILE), "--workflow-profile", str(NO_ACCOUNTING), "-s", str(SNAKEFILE),
               "-d", str(slurm_dir), "--configfile", str(write_config(slurm_dir, config))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}

    started = time.time()
    logs = Path(config["output"]["logs"]) / config["profile"]
    returncode, output, cancelled = run_cancelling_one_job(command, env, slurm_dir, logs)
    print(f"small workflow through SLURM: {time.time() - started:.0f} s (cancelled job, rule: {cancelled})")
    assert returncode == 0, output[-5000:]

    # Every compute job went through sbatch, and only the compute jobs (plots and audit are localrules).
    submitted = [(jobid, f"{experiment}_compute") for jobid, experiment in SUBMITTED.findall(output)]
    assert cancelled is not None, "no compute job was caught in mid-computation, so none was cancelled"
    expected = sorted([f"{name}_compute" for name in enabled] + [cancelled[1]])
    assert sorted(rule for _, rule in submitted) == expected, output[-5000:]

    # The cancelled job was resubmitted by `retries: 1` as a new SLURM job, which completed.
    jobs = {jobid: scontrol_job(jobid) for jobid, _ in submitted}
    assert jobs[cancelled[0]]["JobState"] == "CANCELLED", jobs[cancelled[0]]
    retried = [jobid for jobid, rule in submitted if rule == cancelled[1] and jobid != cancelled[0]]
    assert len(retried) == 1 and int(retried[0]) > int(cancelled[0]), submitted

    # Each job asked SLURM for its config section's threads, memory and time limit.
    for jobid, rule in submitted:
        experiment = rule.removesuffix("_compute")
        job, section = jobs[jobid], config["experiments"][experiment]
        assert job["Comment"] == f"rule_compute_wildcards_{experiment}" and Path(job["WorkDir"]) == slurm_dir, job
        assert job["JobState"] == ("CANCELLED" if jobid == cancelled[0] else "COMPLETED"), job
        assert int(job["CPUs/Task"]) == section.get("threads", 1), (rule, job["CPUs/Task"])
        assert megabytes(job["MinMemoryNode"]) == section["mem_mb"], (rule, job["MinMemoryNode"])
        assert seconds(job["TimeLimit"]) == 60 * section["runtime"], (rule, job["TimeLimit"])

    # Tables and figures are those of the local run, except wall-clock times and provenance lines.
    here = output_folders(config)
    results, tables, figures = here["results"], here["tables"], here["figures"]
    csvs = sorted(p.name for p in local["results"].glob("*.csv"))
    assert csvs == sorted(p.name for p in results.glob("*.csv")) and len(csvs) == len(enabled), csvs
    for name in csvs:
        pd.testing.assert_frame_equal(without_timing(pd.read_csv(results / name)),
                                      without_timing(pd.read_csv(local["results"] / name)), check_exact=True, obj=name)
    assert (tables / "audit.csv").read_bytes() == (local["tables"] / "audit.csv").read_bytes()
    for name in ("audit.md", "table1.md", "table1.tex"):
        here, there = (tables / name).read_text(), (local["tables"] / name).read_text()
        assert without_provenance(here) == without_provenance(there), name
    pictures = sorted(p.name for p in local["figures"].iterdir() if p.suffix in (".pdf", ".png"))
    assert pictures == sorted(p.name for p in figures.iterdir() if p.suffix in (".pdf", ".png")) and pictures
    for name in pictures:
        assert (figures / name).read_bytes() == (local["figures"] / name).read_bytes(), name
