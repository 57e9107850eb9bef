"""Every Python block of the README and of docs/reference.md (the library examples the README points to)
runs as written (each in a fresh interpreter), and the README's two workflow examples, a problem of your
own and an experiment of your own, run as written."""

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
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
REFERENCE_BLOCKS = re.findall(r"```python\n(.*?)```", REFERENCE, flags=re.S)


def test_the_readme_and_the_reference_have_python_examples():
    assert len(BLOCKS) >= 3 and len(REFERENCE_BLOCKS) >= 2


@pytest.mark.parametrize("source, block", [("README.md", block) for block in BLOCKS]
                         + [("docs/reference.md", block) for block in REFERENCE_BLOCKS],
                         ids=[f"README.md-{i}" for i in range(len(BLOCKS))]
                         + [f"reference.md-{i}" for i in range(len(REFERENCE_BLOCKS))])
def test_python_block_runs(source, block, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(block, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{source} block failed:\n{block}\n{done.stderr[-3000:]}"


def _block(language: str, first_line: str) -> str:
    """The README's ``language`` block whose text starts with ``first_line``."""
    blocks = re.findall(rf"```{language}\n({re.escape(first_line)}.*?)```", README, flags=re.S)
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
    assert f"measured {drift['measured']:.4f}" in " ".join(README.split())  # the README quotes it
    assert (audit.drop(index="drift_reaches_flattest")["verdict"] == "not run").all()
