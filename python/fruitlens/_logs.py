"""What a user sees when something fails: one line on stderr, the details in a log file.

``fruitlens run`` (and ``python -m fruitlens.job``) send Spark's, Java's and py4j's own
messages and every traceback to a log file under :func:`log_dir` unless ``--verbose``;
:func:`guard` turns an error into one ``PROG: error: ...`` line that names that file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from ._common import cache_dir, first_line
from ._errors import FruitlensError

__all__ = ["KEEP_LOGS", "PROG", "guard", "log_dir", "open_run_log"]

#: The program name that starts fruitlens's messages.
PROG = "fruitlens"
#: Log files kept in the log folder (older ones are deleted).
KEEP_LOGS = 20

#: The log file of the current run (None: --verbose, or not writable).
_LOG: dict[str, Any] = {"path": None, "handler": None}


def log_dir() -> Path:
    """``$FRUITLENS_LOG_DIR``, else ``logs`` in fruitlens's cache folder
    (:func:`fruitlens._common.cache_dir`: ``~/.cache/fruitlens/logs`` by default)."""
    env = os.environ.get("FRUITLENS_LOG_DIR")
    if env:
        return Path(env)
    return cache_dir() / "logs"


def _new_log_file() -> Path | None:
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        old = sorted(folder.glob("run-*.log"))
        for stale in old[: max(0, len(old) - KEEP_LOGS + 1)]:
            stale.unlink()
        path = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.touch()
        return path
    except OSError:
        return None


def open_run_log(verbose: bool) -> Path | None:
    """Start the log file of a run (None with ``verbose``, or if it cannot be written):
    later errors name it, and py4j's own reports go into it."""
    log_file = None if verbose else _new_log_file()
    _LOG["path"] = log_file
    _log_py4j(log_file)
    return log_file


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` for the block (children started in it keep it)."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _log_py4j(path: Path | None) -> None:
    """Python-side reports of py4j/pyspark (e.g. "Exception while sending command" on
    Ctrl-C, logged on the root logger) go to the log file, not the terminal."""
    previous = _LOG.get("handler")
    if previous is not None:
        logging.getLogger().removeHandler(previous)
        previous.close()
        _LOG["handler"] = None
    if path is None:
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)  # also keeps logging's stderr default away
    _LOG["handler"] = handler


def _log_exception(exc: BaseException) -> None:
    path = _LOG["path"]
    if path is None:
        return
    try:
        with open(path, "a") as handle:
            handle.write(f"\n--- {PROG} {time.strftime('%H:%M:%S')}: {type(exc).__name__}\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=handle)
    except OSError:
        pass


# --------------------------------------------------------------------------------------
# The one-line error guard of the entry points (fruitlens, python -m fruitlens.job)
# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def guard(func: Callable[[], int], prog: str = PROG) -> int:
    """Run ``func``; turn expected errors into one line on stderr and an exit status."""
    debug = bool(os.environ.get("FRUITLENS_DEBUG"))
    _LOG["path"] = None
    try:
        return func()
    except FruitlensError as exc:
        _log_exception(exc)
        if debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _log_exception(exc)
        print(f"{prog}: interrupted{_details()}", file=sys.stderr)
        return 130
    except Exception as exc:
        _log_exception(exc)
        if debug:
            raise
        # Spark / py4j failures: one line that says what failed; the rest is in the log.
        print(f"{prog}: error: {_describe(exc)[:500]}{_details()}", file=sys.stderr)
        return 1


def _details() -> str:
    path = _LOG["path"]
    if path is not None:
        return f" (details: {path})"
    return " (set FRUITLENS_DEBUG=1 for the traceback)"


def _describe(exc: BaseException) -> str:
    """A one-line description of an unexpected error; for a Java exception (py4j), the
    Spark failure and its root cause rather than "An error occurred while calling ..."."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            chain = []
            while java is not None and len(chain) < 20:
                text = " ".join(str(java.toString()).split())
                chain.append(text)
                java = java.getCause()
            first, root = chain[0], chain[-1]
            message = first if first == root else f"{first[:300]} (cause: {root[:300]})"
            return message
        except Exception:  # the JVM is gone (interrupted): fall through
            pass
    return f"{type(exc).__name__}: {first_line(exc)}"
