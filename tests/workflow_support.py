"""What the workflow tests share: the repository's paths, the snakemake next to this interpreter, and
helpers to write, resolve and restrict configs and run the workflow in a temporary folder."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flatmin import experiments
from flatmin.config import check_config

EXPERIMENTS = experiments.experiment_names()

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
PAPER = ROOT / "config" / "config.yaml"
QUICK = ROOT / "config" / "quick.yaml"
TABLES = ("audit.md", "audit.csv", "table1.md", "table1.tex")


def tool(name: str) -> str | None:
    """The executable ``name`` next to this interpreter, else on PATH, else None."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


SNAKEMAKE = tool("snakemake")
needs_snakemake = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed (extra 'workflow')")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def resolved(path: Path) -> dict:
    """The config at ``path`` with every experiment section written out in full (job keys and settings)."""
    return check_config(load(path))


def write_config(tmp_path: Path, config: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, timeout: float = 600):
    """Run the repository's workflow in ``workdir``; returns the CompletedProcess (text output)."""
    command = [SNAKEMAKE, "-s", str(SNAKEFILE), "-d", str(workdir), *args]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


def dry_run_outputs(stdout: str) -> list[str]:
    """Every path listed on an ``output:`` line of a dry run."""
    paths = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("output:"):
            paths += [p.strip() for p in line[len("output:"):].split(",") if p.strip()]
    return paths


def only(config: dict, *names: str) -> dict:
    """``config`` with every experiment but ``names`` disabled."""
    config = copy.deepcopy(config)
    for name, section in config["experiments"].items():
        section["enabled"] = name in names
    return config


def into(config: dict, base: Path) -> dict:
    """``config`` with all outputs under ``base``; the repository's JAX compilation cache is shared
    (it is keyed by the compiled computation, so sharing it is safe and saves compile time)."""
    config = copy.deepcopy(config)
    config["output"] = {key: str(base / key) for key in ("results", "figures", "tables", "logs")}
    config["jax_cache_dir"] = str(ROOT / ".jax_cache")
    return config


BOWL_MODULE = '''
import jax.numpy as jnp
import flatmin


def _loss(x):
    return 0.5 * (x[0] * x[1] - 1.0) ** 2


@flatmin.register_problem("tmp_bowl")
def tmp_bowl(scale=1.0):
    """A user's own problem: the hyperbola xy = 1 as a one-sample training loss."""
    return flatmin.Problem(
        "tmp_bowl", 2, lambda x: scale * _loss(x),
        sample_losses=lambda x: scale * _loss(x)[None], num_samples=1, hessian_rank=1,
        initial_point=lambda key: jnp.array([2.0, 0.5]), smoothness=5.0 * scale, flattest_trace=scale,
    )
'''
