"""Stores: the few operations the commit protocol needs, on a local filesystem, a
pyarrow filesystem (S3, GCS) and a Hadoop filesystem (through Spark's py4j gateway).

Every store has ``kind`` (``"local"``, ``"object"``, ``"hadoop"``), ``join``, ``stat``
(``"file"``, ``"dir"`` or ``"missing"``), ``files`` (relative path → size, recursive),
``read``, ``write`` and ``delete_file``; the local and Hadoop stores (which can rename)
also ``delete_tree``, ``rename``, ``exchange``, ``listdir``, ``mkdirs`` and ``sync_dir``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import shutil
from typing import Any

import pyarrow.fs as pafs

from .. import _uri
from .._common import is_spark_connect, write_atomic
from .._errors import OutputError
from .._fs import filesystem_for, use_arrow_io

__all__ = [
    "NO_EXCHANGE_ENV",
    "ArrowStore",
    "HadoopStore",
    "LocalStore",
    "raise_error",
    "store_for",
]

#: Test-only: ``FRUITLENS_TEST_NO_EXCHANGE=1`` uses the two-rename fallback locally.
NO_EXCHANGE_ENV = "FRUITLENS_TEST_NO_EXCHANGE"


def raise_error(exc: OSError) -> None:
    """``os.walk``'s ``onerror``: an unreadable subfolder is never taken for absent."""
    raise exc


class LocalStore:
    kind = "local"

    def join(self, base: str, rel: str) -> str:
        return os.path.join(base, *rel.split("/"))

    def stat(self, path: str) -> str:
        if os.path.islink(path) and not os.path.exists(path):
            return "file"
        if os.path.isdir(path):
            return "dir"
        return "file" if os.path.lexists(path) else "missing"

    def files(self, root: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for folder, dirs, names in os.walk(root, onerror=raise_error):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                full = os.path.join(folder, name)
                out[os.path.relpath(full, root).replace(os.sep, "/")] = os.lstat(full).st_size
        return out

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def write(self, path: str, data: bytes) -> None:
        write_atomic(path, data)

    def delete_file(self, path: str) -> None:
        os.unlink(path)

    def delete_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def link(self, src: str, dst: str) -> None:
        """``dst`` with ``src``'s content: a hard link (no bytes copied), or a copy where
        the filesystem has no hard links."""
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    def exchange(self, a: str, b: str) -> bool:
        if os.environ.get(NO_EXCHANGE_ENV):
            return False
        return _renameat2_exchange(a, b)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):  # prepare() says what is wrong
            return []

    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def sync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _renameat2_exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)


class ArrowStore:
    kind = "object"

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def join(self, base: str, rel: str) -> str:
        return posixpath.join(base, rel)

    def stat(self, path: str) -> str:
        kind = self.fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            return "missing"
        return "dir" if kind == pafs.FileType.Directory else "file"

    def files(self, root: str) -> dict[str, int]:
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        return {
            info.path[len(root) + 1 :]: int(info.size or 0)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }

    def read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as handle:
            return handle.read()

    def write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:  # one PUT: atomic
            out.write(data)

    def delete_file(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass


class HadoopStore:
    """A Hadoop filesystem through py4j (HDFS, EMRFS, s3a, ...): ``--io spark``."""

    kind = "hadoop"

    def __init__(self, spark: Any, uri: str) -> None:
        self._jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        self.fs = path.getFileSystem(conf)

    def _p(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def join(self, base: str, rel: str) -> str:
        return base.rstrip("/") + "/" + rel

    def stat(self, path: str) -> str:
        p = self._p(path)
        if not self.fs.exists(p):
            return "missing"
        return "dir" if self.fs.getFileStatus(p).isDirectory() else "file"

    def files(self, root: str) -> dict[str, int]:
        if self.stat(root) != "dir":
            return {}
        base = self.fs.makeQualified(self._p(root)).toUri().getPath().rstrip("/") + "/"
        out: dict[str, int] = {}
        it = self.fs.listFiles(self._p(root), True)
        while it.hasNext():
            status = it.next()
            path = status.getPath().toUri().getPath()
            out[path[len(base) :] if path.startswith(base) else path] = int(status.getLen())
        return out

    def read(self, path: str) -> bytes:
        stream = self.fs.open(self._p(path))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write(self, path: str, data: bytes) -> None:
        stream = self.fs.create(self._p(path), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def delete_file(self, path: str) -> None:
        self.fs.delete(self._p(path), False)

    def delete_tree(self, path: str) -> None:
        self.fs.delete(self._p(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self._p(src), self._p(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def exchange(self, a: str, b: str) -> bool:
        return False

    def listdir(self, path: str) -> list[str]:
        p = self._p(path)
        if not self.fs.exists(p):
            return []
        return [s.getPath().getName() for s in self.fs.listStatus(p)]

    def mkdirs(self, path: str) -> None:
        self.fs.mkdirs(self._p(path))

    def sync_dir(self, path: str) -> None:
        pass


def store_for(uri: str, spark: Any = None, io: str = "auto") -> tuple[Any, str]:
    """(store, root path in that store) for an output URI: local folders are resolved
    (symbolic links), object stores go through pyarrow unless a Spark session has a
    Hadoop filesystem for them (``io``, see :func:`fruitlens._fs.use_arrow_io`)."""
    if _uri.is_local(uri):
        return LocalStore(), os.path.realpath(_uri.local_path(uri))
    scheme = _uri.scheme(uri)
    if scheme in _uri.OBJECT_SCHEMES and (spark is None or use_arrow_io(spark, uri, io)):
        fs, path = filesystem_for(uri)
        return ArrowStore(fs), path.rstrip("/")
    if spark is None:
        raise OutputError(
            f"{uri}: {scheme}:// outputs are written through Spark's Hadoop filesystems; "
            "this reader supports local folders, s3:// and gs:// only"
        )
    if is_spark_connect(spark):  # no JVM on this side to reach Hadoop through
        raise OutputError(
            f"{uri}: on Spark Connect, outputs go to local folders, s3:// or gs:// (a "
            f"{scheme}:// output needs a classic session's Hadoop filesystems)"
        )
    return HadoopStore(spark, uri), uri.rstrip("/")
