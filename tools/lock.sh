#!/usr/bin/env bash
# Writes requirements.lock, the environment that the README's regenerate command installs: the exact
# versions installed in a virtual environment (VENV, default .venv: the one that made the committed figures)
# of everything that pyproject.toml's dependencies and its data, workflow and test extras bring, resolved for
# Python 3.11 on every platform (markers keep the Windows-only packages), each with the sha256 of every
# file that the package index has for that version, so that pip's hash-checking mode installs it on any
# platform those files cover. It adds the setuptools that built VENV's flatmin, because the regenerate
# command installs flatmin with --no-build-isolation from the lock's setuptools (with build isolation pip
# would fetch an unpinned, unhashed one). Needs the package index; uv goes into a scratch environment.
# Usage: tools/lock.sh [VENV]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(cd "${1:-$repo/.venv}" && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/flatmin-lock.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

python3.11 -m venv "$scratch/uv"
"$scratch/uv/bin/pip" install --quiet uv
cd "$scratch"
"$venv/bin/pip" freeze --exclude-editable > installed.txt
"$venv/bin/python" - > build.txt <<'PY'
import re
from importlib.metadata import distribution

generator = re.search(r"^Generator: setuptools \((.+)\)$", distribution("flatmin").read_text("WHEEL"), re.M)
print(f"setuptools=={generator.group(1)}")
PY
cp "$repo/pyproject.toml" .  # read here, so that the lock's comments name no folder of this machine
"$scratch/uv/bin/uv" pip compile pyproject.toml build.txt --extra data --extra workflow --extra test \
    --constraint installed.txt --universal --python-version 3.11 --generate-hashes \
    --no-header --output-file body.txt --quiet
{
    echo "# The exact environment of the committed figures and tables, for Python 3.11 (the README's regenerate"
    echo "# command installs it with pip install --require-hashes -r requirements.lock). pyproject.toml keeps"
    echo "# the ranges, which the test command installs; tests/test_lock.py checks that these pins are within them."
    echo "# Written by tools/lock.sh VENV (with $("$scratch/uv/bin/uv" --version | cut -d" " -f1,2)) from the environment that made them;"
    echo "# to move to newer versions, install them into a .venv, regenerate the figures there, then run tools/lock.sh."
    cat body.txt
} > requirements.lock

# A package of the closure that VENV lacks would have been pinned at the index's newest version, not the
# one that made the figures: every pin that applies here must be what VENV has.
"$venv/bin/python" - requirements.lock installed.txt build.txt <<'PY'
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pins(path):
    lines = [line.split(" \\")[0] for line in Path(path).read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line and not line.startswith((" ", "#"))]
    return {canonicalize_name(r.name): r for r in reqs if r.marker is None or r.marker.evaluate()}


lock, have = pins(sys.argv[1]), pins(sys.argv[2]) | pins(sys.argv[3])
wrong = sorted(f"{name}: lock {lock[name].specifier}, venv {have[name].specifier if name in have else 'none'}"
               for name in lock if name not in have or lock[name].specifier != have[name].specifier)
if wrong:
    sys.exit("tools/lock.sh: the lock differs from the environment:\n  " + "\n  ".join(wrong))
PY
cp requirements.lock "$repo/requirements.lock"
echo "tools/lock.sh: wrote $repo/requirements.lock"
