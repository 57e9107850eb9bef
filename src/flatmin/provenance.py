"""Provenance of every result, figure and table the workflow writes.

:func:`provenance` describes how a file was made: the git revision of the flatmin checkout (with a
dirty flag), a hash of the configuration, the seeds, the versions of the packages that produced the
numbers, the interpreter and machine, and the wall time. :func:`write_sidecar` stores it beside the
file as ``<file>.provenance.json``; :func:`markdown_footer` and :func:`tex_comment` carry it in-band in
the tables. :func:`write_atomic` writes through a temporary file in the same folder and
:func:`os.replace`, so an interrupted run never leaves a truncated output under the final name. A results
table's sidecar also records the table's SHA-256, and :func:`verified_sidecar` checks it before a figure
or the audit reads the table, so a table truncated or edited afterwards is refused rather than used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded (missing ones are recorded as ``None``).
PACKAGES = ("flatmin", "jax", "jaxlib", "numpy", "scipy", "pandas", "matplotlib", "diffrax", "equinox", "matfree", "optax",
            "snakemake")
SIDECAR_SUFFIX = ".provenance.json"


def _json_default(value: Any):
    """JSON encoding of the non-JSON values a config may hold (numpy scalars/arrays, paths, sets)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """Canonical JSON text of ``value``: sorted keys, no whitespace, so equal configs give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=True)


def config_hash(config: Mapping) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config``; independent of key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _repository_root() -> Path:
    """The folder the flatmin sources live in (``src/flatmin/..`` -> the checkout), else the cwd."""
    here = Path(__file__).resolve().parent
    return here.parents[1] if len(here.parents) > 1 else Path.cwd()


#: The folders of the checkout that the paper profile writes (committed outputs, not code).
COMMITTED_OUTPUTS = ("figures", "tables")


def git_revision(root: str | os.PathLike | None = None) -> dict:
    """``{"revision": sha or None, "dirty": bool or None}`` of the git checkout at ``root``.

    ``None`` where git is missing or ``root`` is not inside a work tree (an installed wheel, a tarball).
    ``dirty`` counts modified tracked files and untracked files that are not ignored, except under
    :data:`COMMITTED_OUTPUTS`: the paper profile rewrites those itself, so a job that starts after
    another has written a figure would otherwise record the checkout as dirty.
    """
    root = Path(root) if root is not None else _repository_root()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if revision is None:
        return {"revision": None, "dirty": None}
    status = git("status", "--porcelain", "--", ".", *(f":(exclude){folder}" for folder in COMMITTED_OUTPUTS))
    return {"revision": revision.strip(), "dirty": None if status is None else bool(status.strip())}


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """Platform, architecture, CPU model and the number of cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": cores,
        "hostname": platform.node(),
    }


def normalize_seeds(seeds) -> list[int] | dict | None:
    """Seeds as a list of ints: an int is one seed, an iterable is listed, a mapping is normalised per
    entry, ``None`` stays ``None``."""
    if seeds is None:
        return None
    if isinstance(seeds, Mapping):
        return {str(key): normalize_seeds(value) for key, value in seeds.items()}
    if hasattr(seeds, "__index__"):
        return [int(seeds)]
    return [int(seed) for seed in seeds]


def _source_version() -> str | None:
    """``flatmin.__version__`` when flatmin runs from a source tree that is not installed."""
    try:
        from flatmin import __version__
    except ImportError:
        return None
    return __version__


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(config: Mapping, seeds, started: float, **extra) -> dict:
    """The provenance record of an output made from ``config`` with ``seeds``, begun at ``started``.

    Args:
      config: the configuration that determines the output (hashed, and stored verbatim).
      seeds: an int, a list of ints, or a mapping ``name -> seeds`` (e.g. one entry per experiment).
      started: :func:`time.time` when the work began; the wall time is measured up to this call.
      extra: further JSON-serialisable entries (e.g. ``experiment="identities"``, ``inputs=[...]``).

    Returns:
      A JSON-serialisable dict: ``flatmin_version, git_revision, git_dirty, config_sha256, config,
      seeds, packages, python, machine, started, finished, wall_time_s`` and ``extra``'s entries.
    """
    finished = time.time()
    git = git_revision()
    versions = package_versions()
    record = {
        "flatmin_version": versions.get("flatmin") or _source_version(),
        "git_revision": git["revision"],
        "git_dirty": git["dirty"],
        "config_sha256": config_hash(config),
        "config": json.loads(canonical_json(config)),
        "seeds": normalize_seeds(seeds),
        "packages": versions,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "machine": machine(),
        "started": _iso(started),
        "finished": _iso(finished),
        "wall_time_s": round(finished - started, 3),
    }
    record.update(json.loads(canonical_json(extra)))
    return record


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically.

    The bytes go to a temporary file in the same folder, are flushed to disk and then renamed over
    ``path`` with :func:`os.replace`; on any error the temporary file is removed and ``path`` is left as
    it was. Parent folders are created. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        try:
            os.unlink(handle.name)
        except FileNotFoundError:
            pass
        raise
    return path


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<path>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, info: Mapping) -> Path:
    """Write ``info`` as indented JSON to ``<path>.provenance.json`` (atomically); return that path."""
    text = json.dumps(info, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_atomic(sidecar_path(path), text)


def write_markdown(path: str | os.PathLike, text: str, info: Mapping) -> Path:
    """Write ``text`` and the :func:`markdown_footer` of ``info`` to ``path``, ``info`` to its sidecar."""
    write_sidecar(path, info)
    return write_atomic(path, text + "\n" + markdown_footer(info) + "\n")


def read_sidecar(path: str | os.PathLike) -> dict:
    """The provenance record stored beside ``path``."""
    return json.loads(sidecar_path(path).read_text(encoding="utf-8"))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of the file at ``path``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CorruptOutputError(ValueError):
    """A file that is not the one its sidecar describes (changed, truncated, or without a sidecar)."""


def verified_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar record of ``path`` once ``path`` is shown to be the file it describes: the SHA-256
    the sidecar records (``sha256``) equals that of the file. Raises :class:`CorruptOutputError` naming
    the file, what is wrong and the command that recomputes it."""
    path = Path(path)
    sidecar = sidecar_path(path)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _corrupt(path, f"its provenance sidecar {sidecar} is missing") from None
    except (OSError, ValueError) as error:
        raise _corrupt(path, f"its provenance sidecar {sidecar} cannot be read ({error})") from None
    recorded = record.get("sha256") if isinstance(record, dict) else None
    if not recorded:
        raise _corrupt(path, f"its provenance sidecar {sidecar} records no SHA-256 of it")
    try:
        actual = file_sha256(path)
    except OSError as error:
        raise _corrupt(path, f"it cannot be read ({error})") from None
    if actual != recorded:
        raise _corrupt(path, f"its SHA-256 is {actual[:12]}..., its sidecar records {recorded[:12]}... "
                       "(the file was changed or truncated after the job that wrote it)")
    return record


def _corrupt(path: Path, reason: str) -> CorruptOutputError:
    return CorruptOutputError(
        f"{path}: not the file its job wrote: {reason}. Recompute it and what is made from it with "
        f"`snakemake --forcerun {path}` and the arguments of this run (e.g. `--cores all --configfile "
        f"config/quick.yaml`), or delete {path} and {sidecar_path(path)} and run the workflow again."
    )


def _seed_summary(seeds) -> str:
    if seeds is None:
        return "none"
    if isinstance(seeds, Mapping):
        return "; ".join(f"{name}: {_seed_summary(value)}" for name, value in seeds.items())
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(str(seed) for seed in seeds)


def summary(info: Mapping) -> str:
    """One line: ``Generated by flatmin <version> (<rev>[+dirty]) from config <hash>, seeds <...>, on <date>.``"""
    revision = info.get("git_revision")
    if revision:
        revision = revision[:12] + ("+dirty" if info.get("git_dirty") else "")
    else:
        revision = "no git revision"
    seeds = info.get("seeds")
    seeds = "" if seeds is None else f", seeds {_seed_summary(seeds)}"
    return (
        f"Generated by flatmin {info.get('flatmin_version')} ({revision}) from config "
        f"{str(info.get('config_sha256'))[:12]}{seeds}, on {info.get('finished')}."
    )


def markdown_footer(info: Mapping) -> str:
    """The provenance footer of a Markdown table (preceded by a blank line, in italics)."""
    return f"\n_{summary(info)}_\n"


def tex_comment(info: Mapping) -> str:
    """The provenance of a LaTeX table as a ``%`` comment line."""
    return f"% {summary(info)}\n"
