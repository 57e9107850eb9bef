"""Faults the workflow survives: a results table truncated or edited after its job (refused by the
figure and the audit), a deleted one (recomputed), a full disk (no partial output, a log that says so),
and kill -9 at any moment (the README's recovery gives byte-identical outputs). The Snakemake runs use a
tiny identities-only config in a temporary folder."""

from __future__ import annotations

import types

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from flatmin import experiments
from flatmin import provenance as prov
from flatmin import workflow
from workflow_support import QUICK, load

AUDIT_OUTPUTS = ("audit_md", "audit.md"), ("audit_csv", "audit.csv"), ("table1_md", "table1.md"), \
    ("table1_tex", "table1.tex")


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
