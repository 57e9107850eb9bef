"""Copy an experiment module's presets into the workflow config files (a maintenance tool).

    python workflows/scripts/sync_config.py complexity [more experiments...]

An experiment module may ship its paper and quick settings as ``PAPER_CONFIG`` / ``QUICK_CONFIG`` (or
``make_config("paper")`` / ``make_config("quick")``). This rewrites ``experiments.<name>`` in
``config/config.yaml`` and ``config/quick.yaml`` with those values, keeping the workflow-only keys
(``enabled``, ``threads``, ``mem_mb``, ``runtime``, ``shard_by``) and every other line of the files.
``tests/test_workflow.py`` checks that the config files and the presets agree.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from flatmin.workflow import WORKFLOW_ONLY_KEYS, experiment_config, module_preset  # noqa: E402

FILES = {"paper": ROOT / "config" / "config.yaml", "quick": ROOT / "config" / "quick.yaml"}
WIDTH = 100


def flow(value) -> str:
    """``value`` as one line of YAML flow style."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value)
        return value if plain and yaml.safe_load(value) == value else json.dumps(value)
    return json.dumps(value)


def entry(key: str, value, indent: int) -> list[str]:
    """``key: value`` at ``indent``, in flow style when it fits on a line, else one level deeper."""
    pad = " " * indent
    line = f"{pad}{key}: {flow(value)}"
    if len(line) <= WIDTH or not value or not isinstance(value, (dict, list)):
        return [line]
    if isinstance(value, dict):
        return [f"{pad}{key}:"] + [sub for k, v in value.items() for sub in entry(k, v, indent + 2)]
    return [f"{pad}{key}:"] + [f"{pad}  - {flow(v)}" for v in value]


def section_text(name: str, settings: dict, workflow_keys: dict) -> str:
    lines = [f"  {name}:"]
    lines += [line for k, v in workflow_keys.items() for line in entry(k, v, 4)]
    lines += [line for k, v in settings.items() for line in entry(k, v, 4)]
    return "\n".join(lines) + "\n"


def sync(name: str) -> None:
    module = importlib.import_module(f"flatmin.experiments.{name}")
    for profile, path in FILES.items():
        settings = module_preset(module, profile)
        if settings is None:
            print(f"{name}: no {profile} preset in {module.__name__}; {path.name} left as is")
            continue
        text = path.read_text(encoding="utf-8")
        current = yaml.safe_load(text)["experiments"].get(name, {"enabled": True})
        workflow_keys = {k: current[k] for k in WORKFLOW_ONLY_KEYS if k in current}
        pattern = re.compile(rf"^  {re.escape(name)}:\n(?:(?:    |\s*\n(?=    )).*\n)*", re.M)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no section experiments.{name} to replace")
        text = pattern.sub(lambda _: section_text(name, settings, workflow_keys), text, count=1)
        written = yaml.safe_load(text)["experiments"][name]
        if experiment_config(written) != json.loads(json.dumps(settings)):
            raise SystemExit(f"{name}: the YAML written for {profile} does not read back as the preset")
        path.write_text(text, encoding="utf-8")
        print(f"{name}: {path.relative_to(ROOT)} updated from the {profile} preset")


if __name__ == "__main__":
    for experiment in sys.argv[1:] or sys.exit(__doc__):
        sync(experiment)
