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


# ---------------------------------------------------------------- dependencies: what each side imports
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
#: Import names whose distribution is named otherwise.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "importlinter": "import-linter"}
#: Dependencies that no module imports by name: jax's backend, which jax needs at the same version.
NOT_IMPORTED = {"jaxlib"}


def _distribution(requirement: str) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return canonicalize_name(Requirement(requirement).name)


def _declared(*extras: str) -> set[str]:
    names = PROJECT["dependencies"] + [r for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    return {_distribution(r) for r in names}


def _module_files(names) -> list[Path]:
    files = []
    for name in names:
        path = ROOT / "src" / Path(*name.split("."))
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    return files


def _third_party_imports(path: Path) -> dict[str, bool]:
    """``{distribution: imported at module level}`` of the absolute imports of ``path`` that are neither the
    standard library, nor flatmin, nor a module beside ``path`` (a script's or a test's helper); an import
    inside a function (run when called, not when the module is imported) counts as not at module level."""
    import ast

    from packaging.utils import canonicalize_name

    src = ROOT / "src"
    local = set() if src in path.parents else {sibling.stem for sibling in path.parent.glob("*.py")}
    found: dict[str, bool] = {}

    def visit(node, top_level: bool):
        for child in ast.iter_child_nodes(node):
            inner = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "flatmin" or top in local:
                    continue
                dist = canonicalize_name(DISTRIBUTIONS.get(top, top))
                found[dist] = found.get(dist, False) or top_level
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def _imports(files) -> dict[str, dict[str, bool]]:
    """``{distribution: {file: at module level}}`` over ``files``."""
    table: dict[str, dict[str, bool]] = {}
    for path in files:
        for dist, top_level in _third_party_imports(path).items():
            table.setdefault(dist, {})[str(path.relative_to(ROOT))] = top_level
    return table


LIBRARY_FILES = [ROOT / "src" / "flatmin" / "__init__.py", *_module_files(_contract()["source_modules"])]
ARTIFACT_FILES = [*_module_files(_contract()["forbidden_modules"]),
                  *[path for folder in ("workflows/scripts", "benchmarks", "diagnostics")
                    for path in sorted((ROOT / folder).glob("*.py"))]]


def test_the_library_imports_only_its_dependencies():
    """Every third-party package a library module imports is in [project].dependencies, except the data
    sets' packages (the ``data`` extra), imported only inside the function that loads one, so that
    ``import flatmin`` works without them."""
    dependencies, data = _declared(), _declared("data") - _declared()
    missing = {dist: files for dist, files in _imports(LIBRARY_FILES).items()
               if dist not in dependencies and not (dist in data and not any(files.values()))}
    assert not missing, f"library imports not in pyproject.toml's dependencies: {missing}"


def test_every_dependency_of_the_library_is_imported_by_it():
    """No dependency the library does not use (an artifact's package belongs in the workflow extra)."""
    imported = set(_imports(LIBRARY_FILES))
    unused = _declared() - imported - NOT_IMPORTED
    assert not unused, f"dependencies that no library module imports: {sorted(unused)}"
    assert NOT_IMPORTED <= _declared()
    unused = _declared("data") - _declared() - imported
    assert not unused, f"data extra packages that no library module imports: {sorted(unused)}"


def test_the_artifact_imports_only_the_dependencies_and_the_workflow_extra():
    """The artifact's modules, the workflow's scripts, the benchmarks and diagnostics."""
    allowed = _declared("workflow")
    missing = {dist: files for dist, files in _imports(ARTIFACT_FILES).items() if dist not in allowed}
    assert not missing, f"artifact imports in neither the dependencies nor the workflow extra: {missing}"


def test_the_tests_import_only_what_the_workflow_and_test_extras_add():
    allowed = _declared("workflow", "test")
    missing = {dist: files for dist, files in _imports(sorted((ROOT / "tests").glob("*.py"))).items()
               if dist not in allowed}
    assert not missing, f"test imports in neither the dependencies nor the workflow and test extras: {missing}"
