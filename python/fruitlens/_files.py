"""Reading one local image file safely: the one home of the rules that ``Embedder.embed``
/ ``decode`` (paths given by the user) and :mod:`fruitlens.io` (files listed by a run)
share.

Only regular files are opened (symlinks followed); a folder, FIFO, socket, device,
dangling link or link loop is found by ``stat`` first, so nothing ever blocks, and
becomes an ``unreadable: <path>: <reason>`` error; a file over the byte limit is a
``too_many_bytes`` error without being read.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["OPEN_FLAGS", "errno_reason", "not_regular", "read_local"]

#: How a local file is opened: never blocks (a FIFO), never becomes a controlling tty.
OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def errno_reason(exc: OSError, path: str | bytes) -> str:
    """A short reason for a failed ``stat``/``open``/``scandir`` of a local path."""
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return "dangling symbolic link"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "of an unknown type"


def not_regular(mode: int) -> str:
    return f"not a regular file ({_file_kind(mode)})"


def _too_big(name: str, size: int, max_bytes: int) -> str:
    return f"too_many_bytes: {name} is {size} bytes, more than the limit of {max_bytes} bytes"


def read_local(
    name: str, path: str | bytes, max_bytes: int | None
) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` for a readable regular file, else ``(None, "<kind>: ...")``;
    ``name`` is how the error names the file (the URI or path the caller was given)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):  # e.g. a folder the listing could not list
            try:
                with os.scandir(path):
                    pass
            except OSError as exc:
                return None, f"unreadable: {name}: folder not listed: {errno_reason(exc, path)}"
        if not stat.S_ISREG(st.st_mode):
            return None, f"unreadable: {name}: {not_regular(st.st_mode)}"
        if max_bytes is not None and st.st_size > max_bytes:
            return None, _too_big(name, st.st_size, max_bytes)
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        return None, f"unreadable: {name}: {errno_reason(exc, path)}"
    except ValueError as exc:  # a NUL byte in the path
        return None, f"unreadable: {name}: {exc}"
    with open(fd, "rb", closefd=True) as handle:
        st = os.fstat(fd)  # the file opened, should it have been swapped since stat
        if not stat.S_ISREG(st.st_mode):
            return None, f"unreadable: {name}: {not_regular(st.st_mode)}"
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew since stat
        return None, _too_big(name, len(data), max_bytes)
    return data, None
