"""Every Python block of the README, docs/reference.md and docs/extending.md (the examples the README points
to) runs as written (each in a fresh interpreter, beside the README's method file), and the workflow
examples, a problem, an experiment and a method of your own, run as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_support import needs_snakemake, snakemake

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REFERENCE = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
EXTENDING = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
REFERENCE_BLOCKS = re.findall(r"```python\n(.*?)```", REFERENCE, flags=re.S)
EXTENDING_BLOCKS = re.findall(r"```python\n(.*?)```", EXTENDING, flags=re.S)
METHOD_FILE = '"""GD with anticorrelated noise'


def test_the_readme_and_the_reference_have_python_examples():
    assert len(BLOCKS) >= 3 and len(REFERENCE_BLOCKS) >= 2 and len(EXTENDING_BLOCKS) >= 1


SOURCES = {"README.md": BLOCKS, "docs/reference.md": REFERENCE_BLOCKS, "docs/extending.md": EXTENDING_BLOCKS}


@pytest.mark.parametrize("source, block", [(name, block) for name, blocks in SOURCES.items() for block in blocks],
                         ids=[f"{name}-{i}" for name, blocks in SOURCES.items() for i in range(len(blocks))])
def test_python_block_runs(source, block, tmp_path):
    (tmp_path / "anti_gd.py").write_text(_block("python", METHOD_FILE), encoding="utf-8")  # as a user has it
    script = tmp_path / "block.py"
    script.write_text(block, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{source} block failed:\n{block}\n{done.stderr[-3000:]}"


def _block(language: str, first_line: str) -> str:
    """The ``language`` block of the README or docs/extending.md whose text starts with ``first_line``."""
    blocks = re.findall(rf"```{language}\n({re.escape(first_line)}.*?)```", README + EXTENDING, flags=re.S)
    assert len(blocks) == 1, f"expected one {language} block starting with {first_line!r}"
    return blocks[0]


def _user_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    """A working folder as a user has it: the repository's config/ and the README's files."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@needs_snakemake
@pytest.mark.slow
def test_the_own_problem_example_runs_through_the_workflow(tmp_path):
    folder = _user_folder(tmp_path, {
        "my_problem.py": _block("python", "import jax.numpy as jnp\nimport flatmin\n\n\n@flatmin.register_problem"),
        "my.yaml": _block("yaml", "profile: mine"),
    })
    done = snakemake(folder, "--cores", "2", "build/mine/figures/identities.png", configfile=folder / "my.yaml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(folder / "results" / "mine" / "identities.csv")
    assert set(table[table["part"] == "rho"]["problem"]) == {"my_bowl"}


@needs_snakemake
@pytest.mark.slow
def test_the_add_an_experiment_example_runs_through_the_workflow_and_the_audit(tmp_path):
    config = _block("yaml", "profile: drift")
    folder = _user_folder(tmp_path, {"drift.py": _block("python", '"""RS from a sharp minimum'), "drift.yaml": config})
    (folder / "bad.yaml").write_text(config.replace("seeds: 2", "seeds: 2, steps: 0"), encoding="utf-8")
    bad = snakemake(folder, "-n", "--cores", "1", configfile=folder / "bad.yaml")
    message = ("experiments.drift.steps = 0: Input should be greater than or equal to 1 "
               "(expected: steps of each run, an integer >= 1)")
    assert bad.returncode != 0 and message in bad.stdout + bad.stderr, bad.stdout + bad.stderr

    done = snakemake(folder, "--cores", "2", configfile=folder / "drift.yaml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for fmt in ("pdf", "png"):
        assert (folder / "build" / "drift" / "figures" / f"drift.{fmt}").stat().st_size > 0
    audit = pd.read_csv(folder / "build" / "drift" / "tables" / "audit.csv").set_index("id")
    drift = audit.loc["drift_reaches_flattest"]
    assert drift["experiment"] == "drift" and drift["verdict"] == "consistent: within tolerance", drift
    assert f"measured {drift['measured']:.4f}" in " ".join(EXTENDING.split())  # docs/extending.md quotes it
    assert (audit.drop(index="drift_reaches_flattest")["verdict"] == "not run").all()


@needs_snakemake
@pytest.mark.slow
def test_the_add_a_method_example_runs_through_the_workflow_and_the_audit(tmp_path):
    """A stateful method of the user's own file, named in method_modules, in E4 beside GD and RS: its
    rows, its label in the figure's legend, and the audit of E4's claims, touching no other file."""
    folder = _user_folder(tmp_path, {"anti_gd.py": _block("python", METHOD_FILE),
                                     "anti.yaml": _block("yaml", "profile: anti")})
    done = snakemake(folder, "--cores", "2", configfile=folder / "anti.yaml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(folder / "results" / "anti" / "trajectories.csv")
    assert list(dict.fromkeys(table["algorithm"])) == ["gd", "rs", "anti_gd"]
    anti = table[table["algorithm"] == "anti_gd"]
    first, last = (anti[anti["step"] == anti["step"].agg(f)]["trbar_limit"].mean() for f in ("min", "max"))
    assert last < first - 0.05, (first, last)  # anticorrelated noise drifts toward the flatter minima
    assert (folder / "build" / "anti" / "figures" / "trajectories.png").stat().st_size > 0
    audit = pd.read_csv(folder / "build" / "anti" / "tables" / "audit.csv").set_index("id")
    for claim in ("gd_does_not_move", "rs_sa_flatter_than_gd"):
        assert audit.loc[claim, "verdict"] != "not run", audit.loc[claim]
