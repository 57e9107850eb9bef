"""Registries filled by the modules of a package: each module registers what it defines on import."""

from __future__ import annotations

import importlib
import pkgutil


class Discovery:
    """Imports every module of ``package`` whose name does not start with ``_``, once, on the first
    call; a failed import is retried on the next call rather than left half done."""

    def __init__(self, package: str):
        self.package, self.done = package, False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True  # set first: the imports register, and registering calls discovery again
        try:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        except BaseException:
            self.done = False
            raise
