"""requirements.lock, the exact environment that the README's regenerate command installs
(tools/lock.sh writes it): every pin is one version with its sha256 hashes, lies within the ranges of
pyproject.toml (its dependencies, every extra, and the build requirement, since the
regenerate command installs flatmin with the lock's setuptools), and pins every package those name.
Offline: nothing is downloaded.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = tuple(PYPROJECT["project"]["optional-dependencies"])  # data, workflow, test


def lock_entries() -> list[tuple[Requirement, list[str]]]:
    """Each pin of the lock, with its hash options; continuation lines joined, comments dropped."""
    lines = [line for line in LOCK.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    entries = []
    for logical in "\n".join(lines).replace("\\\n", " ").splitlines():
        if not logical.strip():
            continue
        requirement, *options = re.split(r"\s+(?=--)", logical)
        entries.append((Requirement(requirement), options))
    return entries


ENTRIES = lock_entries()
PINS = {canonicalize_name(req.name): req for req, _ in ENTRIES}


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    names = project["dependencies"] + [r for extra in EXTRAS for r in project["optional-dependencies"][extra]]
    return [Requirement(r) for r in names + PYPROJECT["build-system"]["requires"]]


def test_every_pin_is_one_version_with_sha256_hashes():
    assert len(ENTRIES) == len(PINS), "a package is pinned twice"
    for req, options in ENTRIES:
        (spec,) = req.specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{req}: not one exact version"
        assert options, f"{req}: no hash"
        for option in options:
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", option), f"{req}: {option}"


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_pyproject_requirement_is_pinned_within_its_range(requirement):
    pin = PINS.get(canonicalize_name(requirement.name))
    assert pin is not None, f"{requirement.name} (pyproject.toml) is not in requirements.lock"
    version = next(iter(pin.specifier)).version
    assert requirement.specifier.contains(version, prereleases=True), (
        f"requirements.lock pins {pin.name}=={version}, outside pyproject.toml's {requirement}"
    )


def test_the_lock_leaves_out_flatmin_itself():
    assert "flatmin" not in PINS  # installed from the checkout, editable, after the lock
