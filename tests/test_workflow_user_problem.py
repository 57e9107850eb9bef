"""A user's own problem module, selected from the config, run through the workflow's compute script,
plot and report (slow)."""

from __future__ import annotations

import pandas as pd
import pytest

from flatmin import experiments, workflow
from flatmin import provenance as prov
from workflow_support import BOWL_MODULE, QUICK, into, needs_snakemake, only, resolved, snakemake, write_config


def _identities_on(config: dict, problem: str) -> dict:
    section = config["experiments"]["identities"]
    section.update(rho_problem={"name": problem, "params": {"scale": 2.0}}, rho_point=[2.0, 0.5],
                   rhos=[0.2, 0.4], dims=[2], draws=2000)
    return config


def _complexity_on(config: dict, problem: str) -> dict:
    section = config["experiments"]["complexity"]
    section.update(seeds=2, records=50)
    # d = 2: SA's budget grows like eps^-3 / d^4 where d^3 eps < 1 (1.5 million steps at eps = 0.008)
    section["eps_sweep"] = {"eps": {"rs": [0.04, 0.056], "sa": [0.04, 0.056]},
                            "instances": [{"name": problem, "params": {"scale": 2.0}, "label": problem}]}
    section["dim_sweep"] = {**section["dim_sweep"], "values": [3], "algorithms": ["rs"]}  # not the subject here
    return config


# How each experiment's config names its problem, and the column of its table that says which rows are
# the user's problem: experiment -> (configure(config, problem name) -> config, column).
def _trajectories_on(config: dict, problem: str) -> dict:
    section = config["experiments"]["trajectories"]
    section.update(seeds=2, picture={**section["picture"], "instance": problem})
    section["instances"] = [{"label": problem, "problem": {"name": problem, "params": {"scale": 2.0}},
                             "steps": 400, "record_every": 100,
                             "shared": {"eta": 0.05, "eta_prime": 0.05, "rho": 0.1, "eps0": 1.0, "batch_size": 1},
                             "algorithms": {"gd": {}, "rs": {}, "sa": {}}}]
    return config


SELECT_PROBLEM = {"identities": (_identities_on, "problem"), "complexity": (_complexity_on, "instance"),
                  "trajectories": (_trajectories_on, "instance")}


@needs_snakemake
@pytest.mark.slow
def test_user_problem_module_runs_through_the_workflow(tmp_path):
    """One workflow run of every experiment in SELECT_PROBLEM, each on the user's problem (one run rather
    than one per experiment: one Snakemake start and one report, and two jobs at a time)."""
    (tmp_path / "my_problem.py").write_text(BOWL_MODULE)
    config = into(only(resolved(QUICK), *SELECT_PROBLEM), tmp_path / "out")
    config["problem_modules"] = ["my_problem.py"]  # relative to the working directory
    for configure, _ in SELECT_PROBLEM.values():
        config = configure(config, "tmp_bowl")
    csvs = {name: tmp_path / "out" / "results" / "quick" / f"{name}.csv" for name in SELECT_PROBLEM}
    pngs = {name: tmp_path / "out" / "figures" / f"{name}.png" for name in SELECT_PROBLEM}
    configfile = write_config(tmp_path, config)
    done = snakemake(tmp_path, "--cores", "2", *map(str, pngs.values()), configfile=configfile)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, (_, column) in SELECT_PROBLEM.items():
        table = pd.read_csv(csvs[name])
        assert (table[column] == "tmp_bowl").any(), (name, table)
        assert list(prov.read_sidecar(csvs[name])["problem_modules"]) == ["my_problem.py"], name
        assert (tmp_path / "out" / "logs" / "quick" / f"{name}_compute.log").read_text().strip(), name
        assert prov.read_sidecar(pngs[name])["inputs"] == {str(csvs[name]): workflow.file_sha256(csvs[name])}, name
    # The HTML report of what was built, with each figure's caption.
    report = tmp_path / "report.html"
    done = snakemake(tmp_path, *map(str, pngs.values()), "--report", str(report), configfile=configfile)
    assert done.returncode == 0, done.stdout + done.stderr
    html = report.read_text(encoding="utf-8")
    for name in SELECT_PROBLEM:
        assert experiments.get(name).CAPTION.split(":")[0] in html, name
