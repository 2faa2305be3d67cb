"""Listing images: local folders safely (links followed without loops, each file once,
unreadable entries kept as errors), object-store prefixes through ``pyarrow.fs``."""

from __future__ import annotations

import heapq
import os
import posixpath
import stat
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

import pyarrow.fs as pafs

from ._common import IMAGE_EXTENSIONS, is_hidden
from ._files import errno_reason, not_regular
from ._fs import filesystem_for, uri_prefix

__all__ = ["ImageRef", "find_images", "list_local", "scan_local"]


class ImageRef(NamedTuple):
    """One listed image: full URI, label (parent folder name), size, modification time.

    ``error`` is null for a regular file, else why it cannot be read (a dangling
    symbolic link, a FIFO/socket/device, a folder that could not be listed, …): such
    entries are listed so that they become per-row errors instead of vanishing.
    """

    path: str
    label: str
    size: int
    modified: datetime | None = None
    error: str | None = None


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)


def _label(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path))


def _lower(extensions: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if extensions is None else tuple(e.lower() for e in extensions)


def list_local(
    root: str,
    extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
    hidden: Callable[[str], bool] | None = None,
) -> list[ImageRef]:
    """List the image files under the local folder (or file) ``root``, safely.

    Symbolic links to files and folders are followed, but every folder is listed once
    (by ``(device, inode)``), so link loops end; a file reachable through several
    paths (links, hard links) is listed once, by its first path in sorted order.
    Entries that cannot be read get an ``error`` instead of vanishing: a dangling or
    looping link or a FIFO, socket or device whose name has an image extension, and a
    subfolder that cannot be listed (permission denied: listed with its own path).
    Nothing is opened, so a FIFO never blocks. ``hidden(name)`` (default: a name
    starting with ``_`` or ``.``, or ending in ``._COPYING_``) skips files and folders.
    Paths are absolute local paths, sorted.

    Raises:
        FileNotFoundError: nothing exists at ``root``.
    """
    return scan_local(root, extensions, hidden)[0]


def scan_local(
    root: str,
    extensions: Sequence[str] | None = IMAGE_EXTENSIONS,
    hidden: Callable[[str], bool] | None = None,
) -> tuple[list[ImageRef], bool]:
    """:func:`list_local`, plus whether the tree is plain: only regular files and
    folders, no symbolic links (then a recursive listing by Hadoop gives the same)."""
    root = os.path.abspath(root)
    single = _scan_non_folder(root)
    if single is not None:
        return single
    scan = _Scan(_lower(extensions), hidden or is_hidden)
    scan.walk(root)
    return scan.result()


def _scan_non_folder(root: str) -> tuple[list[ImageRef], bool] | None:
    """The listing of a ``root`` that is not a folder (a file, a special file, a broken
    link); None for a folder."""
    try:
        top = os.stat(root)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not os.path.islink(root):
            raise FileNotFoundError(f"no such folder or file: {root}") from exc
        return [ImageRef(root, _label(root), 0, None, errno_reason(exc, root))], False
    if stat.S_ISDIR(top.st_mode):
        return None
    if stat.S_ISREG(top.st_mode):
        return [ImageRef(root, _label(root), top.st_size, _mtime(top))], True
    return [ImageRef(root, _label(root), 0, _mtime(top), not_regular(top.st_mode))], False


class _Scan:
    """One walk of a local folder tree (see :func:`scan_local`)."""

    def __init__(self, exts: tuple[str, ...] | None, hidden: Callable[[str], bool]) -> None:
        self.exts = exts
        self.hidden = hidden
        self.plain = True
        #: (ref, (device, inode) of a regular file, else None)
        self.found: list[tuple[ImageRef, tuple[int, int] | None]] = []
        self.seen_dirs: set[tuple[int, int]] = set()

    def walk(self, root: str) -> None:
        # Folders in path order (a heap): a folder reachable through several paths is
        # listed through the first one in sorted order, as every child path sorts after
        # its parent's.
        pending = [root]
        while pending:
            folder = heapq.heappop(pending)
            for name, link in self._entries(folder):
                if self.hidden(name):
                    continue
                self.plain = self.plain and not link
                path = posixpath.join(folder, name)
                if self._add(path, name):
                    heapq.heappush(pending, path)

    def _entries(self, folder: str) -> list[tuple[str, bool]]:
        """(name, is a symbolic link) of the entries of ``folder``, sorted; none when it
        was listed already (through another path) or cannot be listed (an error row)."""
        try:
            st = os.stat(folder)
            ident = (st.st_dev, st.st_ino)
            if ident in self.seen_dirs:
                return []
            self.seen_dirs.add(ident)
            with os.scandir(folder) as it:
                return sorted((entry.name, entry.is_symlink()) for entry in it)
        except OSError as exc:
            error = f"folder not listed: {errno_reason(exc, folder)}"
            self.found.append((ImageRef(folder, _label(folder), 0, None, error), None))
            self.plain = False
            return []

    def _add(self, path: str, name: str) -> bool:
        """Record the entry ``path`` if it is a wanted file; True if it is a folder."""
        wanted = self.exts is None or name.lower().endswith(self.exts)
        try:
            st = os.stat(path)  # follows links; never opens (a FIFO cannot block)
        except OSError as exc:
            if wanted:
                ref = ImageRef(path, _label(path), 0, None, errno_reason(exc, path))
                self.found.append((ref, None))
            self.plain = False
            return False
        if stat.S_ISDIR(st.st_mode):
            return True
        if not stat.S_ISREG(st.st_mode):
            self.plain = False
            if wanted:
                ref = ImageRef(path, _label(path), 0, _mtime(st), not_regular(st.st_mode))
                self.found.append((ref, None))
        elif wanted:
            ref = ImageRef(path, _label(path), st.st_size, _mtime(st))
            self.found.append((ref, (st.st_dev, st.st_ino)))
        return False

    def result(self) -> tuple[list[ImageRef], bool]:
        """The refs sorted by path, each file (device, inode) once; and ``plain``."""
        self.found.sort(key=lambda item: item[0].path)
        refs: list[ImageRef] = []
        seen_files: set[tuple[int, int]] = set()
        for ref, ident in self.found:
            if ident is not None:
                if ident in seen_files:
                    self.plain = False  # Hadoop would list it twice
                    continue
                seen_files.add(ident)
            refs.append(ref)
        return refs, self.plain


def find_images(uri: str, extensions: Sequence[str] | None = IMAGE_EXTENSIONS) -> list[ImageRef]:
    """List image files under ``uri`` (recursively), sorted by path.

    Keeps files whose name ends with one of ``extensions`` (case-insensitive; ``None``
    keeps every file), zero-byte files included (they become per-row ``empty`` errors
    later). Files and folders whose name starts with ``_`` or ``.`` (or ends in
    ``._COPYING_``) are skipped, as Spark does. ``label`` is the name of the file's
    parent folder; ``path`` is a full URI of the same kind as ``uri`` (``s3a://`` stays
    ``s3a://``, a ``file:`` URI gives ``file:/absolute/path``, a local path gives
    absolute paths), built literally: a name with ``#``, ``?``, ``%``, spaces or
    newlines is kept as it is (see :mod:`fruitlens._uri`). A ``uri`` naming one file
    gives that file.

    Local folders are listed by :func:`list_local`: links are followed without loops,
    each file is listed once, and unreadable entries (dangling links, FIFOs, folders
    that cannot be listed) come with an ``error``.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
    """
    fs, root = filesystem_for(uri)
    prefix = uri_prefix(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            local = list_local(root, extensions)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no such folder, prefix or file: {uri}") from exc
        return [r._replace(path=prefix + r.path) for r in local]
    return _find_objects(fs, root, uri, prefix, _lower(extensions))


def _find_objects(
    fs: pafs.FileSystem, root: str, uri: str, prefix: str, exts: tuple[str, ...] | None
) -> list[ImageRef]:
    """:func:`find_images` on an object store (one recursive listing call)."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such folder, prefix or file: {uri}")
    if info.type == pafs.FileType.File:
        infos = [info]
        base = posixpath.dirname(root)
    else:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        base = root
    refs = []
    for item in infos:
        if item.type != pafs.FileType.File:
            continue
        path = item.path
        relative = path[len(base) :] if path.startswith(base) else path
        if is_hidden(relative):
            continue
        if exts is not None and info.type != pafs.FileType.File and not path.lower().endswith(exts):
            continue
        refs.append(ImageRef(prefix + path, _label(path), int(item.size or 0), item.mtime))
    refs.sort(key=lambda r: r.path)
    return refs
