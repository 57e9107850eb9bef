"""Faults the workflow survives: a results table truncated or edited after its job (refused by the
figure and the audit), a deleted one (recomputed), a full disk (no partial output, a log that says so),
and kill -9 at any moment (the README's recovery gives byte-identical outputs). The Snakemake runs use a
tiny identities-only config in a temporary folder."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from flatmin import experiments
from flatmin import provenance as prov
from flatmin import workflow
from workflow_support import QUICK, ROOT, SNAKEFILE, SNAKEMAKE, load, needs_snakemake, only, resolved, snakemake, \
    write_config

AUDIT_OUTPUTS = ("audit_md", "audit.md"), ("audit_csv", "audit.csv"), ("table1_md", "table1.md"), \
    ("table1_tex", "table1.tex"), ("ranking_md", "ranking.md"), ("summary_html", "summary.html")


@pytest.fixture
def stand_in(monkeypatch):
    """A stand-in experiment (a table of squares and its line plot) under every experiment's name."""

    def plot(results, config):
        fig, ax = plt.subplots()
        ax.plot(results["seed"], results["value"])
        return fig

    module = types.SimpleNamespace(
        compute=lambda config: pd.DataFrame({"seed": config["seeds"], "value": [s ** 2.0 for s in config["seeds"]]}),
        plot=plot)
    monkeypatch.setattr(experiments, "get", lambda name: module)
    return {"enabled": True, "seeds": list(range(8))}


def test_results_sidecar_records_the_table_s_sha256(tmp_path, stand_in):
    csv = tmp_path / "identities.csv"
    workflow.compute_to_csv("identities", stand_in, csv)
    assert prov.read_sidecar(csv)["sha256"] == prov.file_sha256(csv)
    shards = [tmp_path / f"{i:02d}.csv" for i in range(2)]
    for i, path in enumerate(shards):
        workflow.compute_to_csv("identities", {**stand_in, "seeds": [i]}, path, shard=f"{i:02d}")
    workflow.merge_shards("identities", stand_in, shards, csv)
    assert prov.read_sidecar(csv)["sha256"] == prov.file_sha256(csv)


def test_a_truncated_table_is_refused_by_the_figure_and_the_audit(tmp_path, stand_in):
    csv = tmp_path / "results" / "identities.csv"
    workflow.compute_to_csv("identities", stand_in, csv)
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-3]))  # still a valid table
    figures = [tmp_path / "figures" / "identities.pdf", tmp_path / "figures" / "identities.png"]
    with pytest.raises(prov.CorruptOutputError, match=f"{csv}: not the file its job wrote.*--forcerun {csv}"):
        workflow.plot_to_files("identities", stand_in, csv, figures)
    outputs = {key: str(tmp_path / "tables" / name) for key, name in AUDIT_OUTPUTS}
    with pytest.raises(prov.CorruptOutputError, match=f"{csv}: not the file its job wrote"):
        workflow.audit_to_files({"identities": csv}, load(QUICK), outputs)
    assert not (tmp_path / "figures").exists() and not (tmp_path / "tables").exists()


def test_an_edited_shard_is_refused_by_the_merge(tmp_path, stand_in):
    shards = [tmp_path / f"{i:02d}.csv" for i in range(2)]
    for i, path in enumerate(shards):
        workflow.compute_to_csv("identities", {**stand_in, "seeds": [i]}, path, shard=f"{i:02d}")
    shards[1].write_text(shards[1].read_text().replace("1.0", "abc"))
    with pytest.raises(prov.CorruptOutputError, match=str(shards[1])):
        workflow.merge_shards("identities", stand_in, shards, tmp_path / "identities.csv")
    assert not (tmp_path / "identities.csv").exists()



def _disk_full_after(monkeypatch, calls: int) -> None:
    """``os.fsync`` (every atomic write calls it) raises ENOSPC from its ``calls + 1``-th call on."""
    real, count = os.fsync, [0]

    def fsync(fd):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_leaves_no_table_a_rerun_accepts_and_a_log_that_says_why(tmp_path, stand_in, monkeypatch):
    csv, log = tmp_path / "results" / "identities.csv", tmp_path / "logs" / "compute.log"
    workflow.compute_to_csv("identities", {**stand_in, "seeds": [0]}, csv)  # an earlier run's table
    _disk_full_after(monkeypatch, 1)  # the new table is written, its sidecar is not
    with pytest.raises(OSError, match="No space left"), workflow.tee_output(log):
        workflow.compute_to_csv("identities", stand_in, csv)
    with pytest.raises(prov.CorruptOutputError, match="changed or truncated"):
        prov.verified_sidecar(csv)
    assert not list(tmp_path.rglob("*.tmp"))
    text = log.read_text()
    assert "[identities] compute ->" in text and "OSError: [Errno 28]" in text
    assert "the job stopped: no space left on device" in text and "run the same command again" in text


def test_a_log_on_a_full_disk_does_not_hide_the_job_s_error(capsys):
    """/dev/full refuses every write with ENOSPC, as a log file does on a full disk."""
    streams = sys.stdout, sys.stderr
    with pytest.raises(ValueError, match="the job's own error"), workflow.tee_output("/dev/full"):
        print("a progress line " * 1000, file=sys.stderr)
        raise ValueError("the job's own error")
    assert (sys.stdout, sys.stderr) == streams
    err = capsys.readouterr().err
    assert "a progress line" in err and "the job's log /dev/full is incomplete: [Errno 28]" in err


# ------------------------------------------------------------------------------------------------
# Through Snakemake (slow): a tiny identities-only profile, its outputs relative to the working folder

CSV = "results/tiny/identities.csv"
#: The outputs compared byte for byte; the Markdown and LaTeX tables without their provenance line.
COMPARED = (CSV, "build/figures/identities.pdf", "build/figures/identities.png", "build/tables/audit.csv",
            "build/tables/audit.md", "build/tables/table1.md", "build/tables/table1.tex")


def outputs(folder: Path) -> dict[str, bytes]:
    found = {}
    for name in COMPARED:
        data = (folder / name).read_bytes()
        found[name] = re.sub(rb"(?m)^(_|% )Generated by flatmin .*$", b"", data)
    return found


def tiny_config(folder: Path) -> Path:
    config = only(resolved(QUICK), "identities")
    config["experiments"]["identities"].update(draws=2000, rhos=[0.2, 0.4], dims=[2])
    config.update(profile="tiny", jax_cache_dir=str(ROOT / ".jax_cache"),
                  output={"results": "results", "figures": "build/figures", "tables": "build/tables", "logs": "logs"})
    return write_config(folder, config)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny profile run once without interruption (its folder, with Snakemake's metadata)."""
    folder = tmp_path_factory.mktemp("reference")
    done = snakemake(folder, "--cores", "2", configfile=tiny_config(folder))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


def copy_of(reference: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(reference, folder)  # copies the times too, so Snakemake sees the same state
    return folder


@needs_snakemake
@pytest.mark.slow
@pytest.mark.parametrize("deleted", [CSV, CSV + prov.SIDECAR_SUFFIX])
def test_a_deleted_results_table_is_recomputed(reference, tmp_path, deleted):
    folder = copy_of(reference, tmp_path)
    (folder / deleted).unlink()
    done = snakemake(folder, "-n", "--cores", "2", configfile=folder / "config.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"rule compute:(.|\n)*reason: Missing output files: {re.escape(deleted)}", done.stdout), done.stdout
    assert "rule plot:" in done.stdout and "rule audit:" in done.stdout


@needs_snakemake
@pytest.mark.slow
def test_a_truncated_table_stops_the_figure_and_the_audit_until_recomputed(reference, tmp_path):
    folder = copy_of(reference, tmp_path)
    table = folder / CSV
    table.write_text("".join(table.read_text().splitlines(keepends=True)[:-3]))
    done = snakemake(folder, "--cores", "2", configfile=folder / "config.yaml")
    assert done.returncode != 0
    for log in ("identities_plot", "audit"):
        text = (folder / "logs" / "tiny" / f"{log}.log").read_text()
        assert f"{CSV}: not the file its job wrote" in text and f"snakemake --forcerun {CSV}" in text, text
    # The command the error gives recomputes the table, and everything is as before the damage.
    done = snakemake(folder, "--cores", "2", "--forcerun", CSV, configfile=folder / "config.yaml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert outputs(folder) == outputs(reference)


def interrupted_run(folder: Path, moment) -> None:
    """Start the workflow in ``folder`` and kill -9 Snakemake and its jobs as soon as ``moment(folder)``."""
    command = [SNAKEMAKE, "-s", str(SNAKEFILE), "-d", str(folder), "--cores", "2", "--configfile",
               str(folder / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    run = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not moment(folder) and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the workflow ended before the moment to kill it"


MOMENTS = {
    "compute": lambda folder: "compute ->" in _text(folder / "logs" / "tiny" / "identities_compute.log"),
    "figure half written": lambda folder: (folder / "build" / "figures" / "identities.pdf").exists(),
}


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


#: What Snakemake asks for after kill -9, in the order it asks (README, "Interrupted runs").
ASKS = {"--rerun-incomplete": "IncompleteFilesException", "--unlock": "LockException"}


@needs_snakemake
@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_killed_run_resumed_as_the_readme_says_is_byte_identical(reference, tmp_path, moment):
    folder = tmp_path / "run"
    folder.mkdir()
    config = tiny_config(folder)
    interrupted_run(folder, MOMENTS[moment])
    done, asked = snakemake(folder, "--cores", "2", configfile=config), []
    while done.returncode != 0 and len(asked) < len(ASKS):
        asked.append(next(flag for flag, error in ASKS.items() if error in done.stdout + done.stderr))
        if asked[-1] == "--unlock":
            assert snakemake(folder, "--unlock", configfile=config).returncode == 0
        done = snakemake(folder, "--cores", "2", "--rerun-incomplete", configfile=config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--unlock" in asked and asked == [flag for flag in ASKS if flag in asked], asked
    assert outputs(folder) == outputs(reference)
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Interrupted runs")[1].split("\n## ")[0]
    assert readme.index("--rerun-incomplete") < readme.index("--unlock")  # the order Snakemake asks in
    assert "`snakemake --unlock " in readme and " --rerun-incomplete`" in readme  # the two commands run above
