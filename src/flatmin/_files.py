"""Importing a user's Python file (a problem or experiment module named in the workflow config)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_file(path: Path, namespace: str) -> ModuleType:
    """The module of the Python file at ``path`` (absolute), imported once per process under
    ``<namespace>.<stem>_<hash of the path>``: two files with the same name do not collide, and a
    second call returns the module of the first. A file that fails to import is not kept."""
    name = f"{namespace}.{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
