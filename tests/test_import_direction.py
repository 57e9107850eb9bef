"""The library apart from the artifact: no library module imports the workflow's settings, experiments,
claims, provenance or plotting (import-linter's contract in pyproject.toml), and `import flatmin` loads
none of them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contract() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"][0]


def test_the_library_imports_nothing_from_the_artifact():
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_every_module_of_the_package_is_library_or_artifact():
    """A new module must join one side of the contract, or it escapes it."""
    contract = _contract()
    sides = set(contract["source_modules"]) | set(contract["forbidden_modules"])
    package = ROOT / "src" / "flatmin"
    modules = {f"flatmin.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {f"flatmin.{path.name}" for path in package.iterdir() if (path / "__init__.py").exists()}
    assert modules == sides


def test_importing_flatmin_loads_no_artifact_module():
    forbidden = _contract()["forbidden_modules"]
    code = "import sys, flatmin; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not [name for name in loaded if any(name == f or name.startswith(f + ".") for f in forbidden)]
