"""A workflow job's log: what the job prints goes to the terminal and to its log file, and a job that fails
says why in both, also when the disk is full.

On a full disk the log file itself cannot grow: the job then goes on writing to the terminal only (which
Snakemake shows, and a cluster keeps in the scheduler's job log), says there that its log is incomplete,
and a job stopped by ``ENOSPC`` says in one line what happened and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

#: The errors of a full disk or an exhausted quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space_message(error: BaseException) -> str | None:
    """The one-line explanation of ``error`` when it is a full disk, else ``None``."""
    if not isinstance(error, OSError) or error.errno not in NO_SPACE:
        return None
    where = f" writing {error.filename}" if error.filename else ""
    return (f"flatmin: the job stopped: {os.strerror(error.errno).lower()}{where}. Its outputs are written to "
            "temporary files and renamed into place, so none is left half written: free some space and run the "
            "same command again.")


class _LogFile:
    """The job's log file; after a write fails (a full disk) the job goes on without it."""

    def __init__(self, path: Path):
        self.path, self.error, self.file = path, None, None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "w", encoding="utf-8", buffering=1)
        except OSError as error:
            self.error = error

    def _do(self, action) -> None:
        if self.file is None:
            return
        try:
            action(self.file)
        except OSError as error:
            self.error, file, self.file = error, self.file, None
            with contextlib.suppress(OSError):
                file.close()

    def write(self, text: str) -> None:
        self._do(lambda file: file.write(text))

    def flush(self) -> None:
        self._do(lambda file: file.flush())

    def close(self) -> None:
        self._do(lambda file: file.close())


class _Tee(io.TextIOBase):
    def __init__(self, stream, log: _LogFile):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def isatty(self):
        return False


@contextlib.contextmanager
def tee_output(log_path: str | os.PathLike | None) -> Iterator[None]:
    """Copy everything written to ``sys.stdout`` / ``sys.stderr`` into ``log_path`` as well.

    The terminal (and, on a cluster, the scheduler's job log) still shows the progress lines; the log
    file under ``logs/`` keeps them. Exceptions are logged with their traceback and re-raised; a full
    disk adds :func:`no_space_message`. A log that cannot be written does not stop the job: the terminal
    says so at the end.
    """
    if log_path is None:
        yield
        return
    log = _LogFile(Path(log_path))
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
    try:
        yield
    except BaseException as error:
        traceback.print_exc(file=log)
        message = no_space_message(error)
        if message:
            print(message, file=sys.stderr)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
        log.close()
        if log.error is not None:
            print(f"flatmin: the job's log {log_path} is incomplete: {log.error}", file=sys.stderr, flush=True)
