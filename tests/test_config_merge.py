"""A partial --configfile is merged over the profile key by key, except problem specs, replaced whole;
the settings it names then replace the experiment's defaults whole."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from snakemake.utils import update_config

from flatmin import experiments
from flatmin.config import check_config
from flatmin.workflow import replace_problem_specs

ROOT = Path(__file__).resolve().parents[1]


def merged(base: dict, overlay: dict) -> dict:
    """What the workflow does: Snakemake's recursive update, then the specs put back whole."""
    config = copy.deepcopy(base)
    update_config(config, overlay)
    replace_problem_specs(config, overlay)
    return config


def test_a_problem_spec_is_replaced_whole_and_other_mappings_merged():
    base = {"a": {"problem": {"name": "valley", "params": {"depth": 2, "m": 3}}, "steps": 10, "keep": 1},
            "b": {"x": 1}}
    overlay = {"a": {"problem": {"name": "my_bowl", "params": {"scale": 2.0}}, "steps": 20}}
    config = merged(base, overlay)
    assert config["a"]["problem"] == {"name": "my_bowl", "params": {"scale": 2.0}}
    assert config["a"]["steps"] == 20 and config["a"]["keep"] == 1 and config["b"] == {"x": 1}
    # without params the spec is still replaced whole: the factory's defaults, not valley's
    config = merged(base, {"a": {"problem": {"name": "my_bowl"}}})
    assert config["a"]["problem"] == {"name": "my_bowl"}


def test_the_readme_overlay_names_only_its_own_parameters(tmp_path):
    """The README's own-problem example: E1's rho_problem must carry my_bowl's params only."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    overlay = yaml.safe_load(re.search(r"```yaml\n(profile: mine.*?)```", text, flags=re.S).group(1))
    # check_config imports the overlay's problem_modules, the README's my_problem.py
    module = re.search(r"```python\n(import jax.numpy as jnp\nimport flatmin\n\n\n@flatmin.register_problem.*?)```",
                       text, flags=re.S).group(1)
    (tmp_path / "my_problem.py").write_text(module, encoding="utf-8")
    paper = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    identities = check_config(merged(paper, overlay), base=tmp_path)["experiments"]["identities"]
    assert identities["rho_problem"] == {"name": "my_bowl", "params": {"scale": 2.0}}
    assert identities["rho_point"] == [2.0, 0.5]
    # the rest of the section is the quick preset's (the overlay's `preset: quick`)
    assert overlay["preset"] == "quick"
    for key, value in experiments.settings("identities", preset="quick").items():
        if key not in ("rho_problem", "rho_point"):
            assert identities[key] == value
