"""Object-store I/O through ``pyarrow.fs``: S3 (and GCS) without Hadoop jars.

A local Spark (``pip install pyspark``) has no ``hadoop-aws`` jars, so it cannot read
``s3://`` paths itself. This module lets fruitlens do the object-store work in Python
with Arrow's native S3 client instead:

* the driver lists images with :func:`list_images` (one recursive listing call);
* executors fetch the bytes of their rows with :func:`fetch_batches` inside
  ``mapInArrow`` (concurrent reads; a missing object is a per-row error, not a failure);
* the driver writes the result with :func:`write_parquet_atomic` (new parts, then the
  ``_SUCCESS`` manifest that commits them: :mod:`fruitlens.output`) and small files
  with :func:`write_text`.

Credentials come from the standard AWS chain (environment, ``~/.aws`` files, instance
profile). ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000``
for MinIO or moto) overrides the endpoint; the region is ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, else it is looked up for the bucket. ``s3a://`` is treated as
``s3://``, ``gcs://`` as ``gs://``. Everything also accepts local paths and ``file:``
URIs, so the same code runs on local folders.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple, Union
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from . import _uri
from ._files import errno_reason as _errno_reason
from ._files import not_regular as _not_regular
from ._files import read_local

__all__ = [
    "ARROW_SCHEMES",
    "DEFAULT_EXTENSIONS",
    "STAGING_DIR",
    "SUCCESS_FILE",
    "ImageRef",
    "exists",
    "fetch_batches",
    "filesystem_for",
    "is_arrow_uri",
    "list_images",
    "list_local",
    "read_bytes",
    "read_text",
    "remove",
    "write_bytes",
    "write_parquet_atomic",
    "write_text",
]

#: URI schemes served by ``pyarrow.fs`` here (a local Spark cannot read them itself).
ARROW_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})
#: File-name extensions that :func:`list_images` keeps by default (case-insensitive).
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: Hidden folder of Hadoop committers' staged parts (fruitlens no longer writes it).
STAGING_DIR = "_temporary"
#: The commit marker (a JSON manifest, see :mod:`fruitlens.output`), written last.
SUCCESS_FILE = "_SUCCESS"

#: Content above this many bytes per output batch is split into more batches, so that
#: a ``binary`` column's 32-bit offsets never overflow.
_MAX_BATCH_BYTES = 1 << 30
_DEFAULT_MAX_BYTES = 256 * 1024 * 1024

TableLike = Union[pa.Table, pa.RecordBatch, Iterable[pa.RecordBatch]]


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


# --------------------------------------------------------------------------------------
# URIs and filesystems
# --------------------------------------------------------------------------------------


def _scheme(uri: str) -> str:
    return _uri.scheme(uri)  # literal: never decodes, '#' and '?' are part of names


def is_arrow_uri(uri: str, force: bool = False) -> bool:
    """True if ``uri`` is an object-store URI (``s3://``, ``s3a://``, ``gs://``, ``gcs://``).

    Local paths and ``file:`` URIs give ``force`` (False by default): with ``force`` the
    caller asks for the pyarrow path even for local data (``--io arrow``).
    """
    return _scheme(uri) in ARROW_SCHEMES or bool(force)


_fs_cache: dict[tuple[Any, ...], pafs.FileSystem] = {}
_fs_lock = threading.Lock()


def _endpoint() -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _region() -> str | None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    endpoint = _endpoint()
    region = _region()
    kwargs: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs["scheme"] = parts.scheme or "https"
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["region"] = region or "us-east-1"
    elif region:
        kwargs["region"] = region
    else:
        try:  # the bucket's own region (an unauthenticated HEAD request)
            kwargs["region"] = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError):
            pass  # leave it to the SDK (profile, instance metadata, us-east-1)
    # Key: the settings plus the process id, so a forked Python worker never reuses a
    # client created before the fork.
    key = ("s3", os.getpid(), tuple(sorted(kwargs.items())))
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = pafs.S3FileSystem(**kwargs)
            _fs_cache[key] = fs
    return fs  # type: ignore[return-value]


def _gcs_filesystem() -> pafs.FileSystem:
    key = ("gs", os.getpid())
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = pafs.GcsFileSystem()
            _fs_cache[key] = fs
    return fs


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a URI or a local path.

    ``s3://bucket/key`` (and ``s3a://``) → a cached :class:`pyarrow.fs.S3FileSystem`
    and ``"bucket/key"``; ``gs://`` / ``gcs://`` → ``GcsFileSystem``; a local path or
    ``file:`` URI → ``LocalFileSystem`` and an absolute path.
    """
    uri = os.fspath(uri)
    scheme = _scheme(uri)
    if scheme in ("s3", "s3a", "gs", "gcs"):
        _, bucket, key = _uri.split_uri(uri)
        if not bucket:
            raise ValueError(f"{uri!r} has no bucket name (expected {scheme}://BUCKET/KEY)")
        path = (bucket + "/" + key.lstrip("/")).rstrip("/")
        if scheme in ("s3", "s3a"):
            return _s3_filesystem(bucket), path
        return _gcs_filesystem(), path
    if scheme and scheme != "file":
        raise ValueError(
            f"unsupported URI scheme {scheme!r} in {uri!r}: use s3://, s3a://, gs://, "
            "gcs://, file: or a local path (hdfs:// and others need Spark's own I/O, --io spark)"
        )
    return pafs.LocalFileSystem(), _uri.local_path(uri)


def _uri_prefix(uri: str) -> str:
    """What to put before a filesystem path to make a full URI of the same kind
    (``file:`` + an absolute path for ``file:`` URIs, as Hadoop writes them)."""
    scheme = _scheme(uri)
    if scheme in ARROW_SCHEMES:
        return scheme + "://"
    if scheme == "file":
        return "file:"
    return ""


def _join(uri: str, *names: str) -> str:
    return _uri.join(uri, *names)


def _not_found(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.NotFound


# --------------------------------------------------------------------------------------
# Listing and reading
# --------------------------------------------------------------------------------------


def _hidden(relative: str) -> bool:
    """Hadoop's rule: a path component starting with ``_`` or ``.`` is not data."""
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)


def _label(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path))


def list_local(
    root: str,
    extensions: Sequence[str] | None = DEFAULT_EXTENSIONS,
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
    starting with ``_`` or ``.``) skips files and folders. Paths are absolute local
    paths, sorted.

    Raises:
        FileNotFoundError: nothing exists at ``root``.
    """
    return _scan_local(root, extensions, hidden)[0]


def _scan_local(
    root: str,
    extensions: Sequence[str] | None = DEFAULT_EXTENSIONS,
    hidden: Callable[[str], bool] | None = None,
) -> tuple[list[ImageRef], bool]:
    """:func:`list_local`, plus whether the tree is plain: only regular files and
    folders, no symbolic links (then a recursive listing by Hadoop gives the same)."""
    exts = None if extensions is None else tuple(e.lower() for e in extensions)
    is_hidden = hidden or (lambda name: name.startswith(("_", ".")))
    root = os.path.abspath(root)
    try:
        top = os.stat(root)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not os.path.islink(root):
            raise FileNotFoundError(f"no such folder or file: {root}") from exc
        return [ImageRef(root, _label(root), 0, None, _errno_reason(exc, root))], False
    if not stat.S_ISDIR(top.st_mode):
        if stat.S_ISREG(top.st_mode):
            return [ImageRef(root, _label(root), top.st_size, _mtime(top))], True
        return [ImageRef(root, _label(root), 0, _mtime(top), _not_regular(top.st_mode))], False
    plain = True

    found: list[tuple[ImageRef, tuple[int, int] | None]] = []
    seen_dirs: set[tuple[int, int]] = set()
    # Folders in path order (a heap): a folder reachable through several paths is
    # listed through the first one in sorted order, as every child path sorts after
    # its parent's.
    pending = [root]
    while pending:
        folder = heapq.heappop(pending)
        try:
            st = os.stat(folder)
            ident = (st.st_dev, st.st_ino)
            if ident in seen_dirs:
                continue
            seen_dirs.add(ident)
            with os.scandir(folder) as it:
                entries = sorted((entry.name, entry.is_symlink()) for entry in it)
        except OSError as exc:
            reason = _errno_reason(exc, folder)
            error = f"folder not listed: {reason}"
            found.append((ImageRef(folder, _label(folder), 0, None, error), None))
            plain = False
            continue
        for name, link in entries:
            if is_hidden(name):
                continue
            plain = plain and not link
            path = posixpath.join(folder, name)
            wanted = exts is None or name.lower().endswith(exts)
            try:
                st = os.stat(path)  # follows links; never opens (a FIFO cannot block)
            except OSError as exc:
                if wanted:
                    ref = ImageRef(path, _label(path), 0, None, _errno_reason(exc, path))
                    found.append((ref, None))
                plain = False
                continue
            if stat.S_ISDIR(st.st_mode):
                heapq.heappush(pending, path)
            elif wanted:
                if stat.S_ISREG(st.st_mode):
                    ref = ImageRef(path, _label(path), st.st_size, _mtime(st))
                    found.append((ref, (st.st_dev, st.st_ino)))
                else:
                    ref = ImageRef(path, _label(path), 0, _mtime(st), _not_regular(st.st_mode))
                    found.append((ref, None))
            if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
                plain = False
    found.sort(key=lambda item: item[0].path)
    refs: list[ImageRef] = []
    seen_files: set[tuple[int, int]] = set()
    for ref, ident in found:
        if ident is not None:
            if ident in seen_files:
                plain = False  # Hadoop would list it twice
                continue
            seen_files.add(ident)
        refs.append(ref)
    return refs, plain


def list_images(uri: str, extensions: Sequence[str] | None = DEFAULT_EXTENSIONS) -> list[ImageRef]:
    """List image files under ``uri`` (recursively), sorted by path.

    Keeps files whose name ends with one of ``extensions`` (case-insensitive; ``None``
    keeps every file), zero-byte files included (they become per-row ``empty`` errors
    later). Files and folders whose name starts with ``_`` or ``.`` are skipped, as
    Spark does. ``label`` is the name of the file's parent folder; ``path`` is a full
    URI of the same kind as ``uri`` (``s3a://`` stays ``s3a://``, a ``file:`` URI gives
    ``file:/absolute/path``, a local path gives absolute paths), built literally: a
    name with ``#``, ``?``, ``%``, spaces or newlines is kept as it is (see
    :mod:`fruitlens._uri`). A ``uri`` naming one file gives that file.

    Local folders are listed by :func:`list_local`: links are followed without loops,
    each file is listed once, and unreadable entries (dangling links, FIFOs, folders
    that cannot be listed) come with an ``error``.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
    """
    fs, root = filesystem_for(uri)
    prefix = _uri_prefix(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            local = list_local(root, extensions)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"no such folder, prefix or file: {uri}") from exc
        return [r._replace(path=prefix + r.path) for r in local]
    exts = None if extensions is None else tuple(e.lower() for e in extensions)
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
        if _hidden(relative):
            continue
        if exts is not None and info.type != pafs.FileType.File and not path.lower().endswith(exts):
            continue
        refs.append(ImageRef(prefix + path, _label(path), int(item.size or 0), item.mtime))
    refs.sort(key=lambda r: r.path)
    return refs


def _read_one(uri: str, max_bytes: int | None) -> tuple[bytes | None, str | None]:
    try:
        fs, path = filesystem_for(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            return read_local(uri, path, max_bytes)
        with fs.open_input_file(path) as handle:
            size = handle.size()
            if max_bytes is not None and size > max_bytes:
                return None, (
                    f"too_many_bytes: {uri} is {size} bytes, more than the limit of "
                    f"{max_bytes} bytes"
                )
            return handle.read(), None
    except Exception as exc:  # one bad object must not fail the batch
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"unreadable: {uri}: {detail}"


def _read_many(
    uris: Sequence[str | None], max_workers: int, max_bytes: int | None
) -> list[tuple[bytes | None, str | None]]:
    def one(uri: str | None) -> tuple[bytes | None, str | None]:
        if uri is None:
            return None, "unreadable: the path is null"
        return _read_one(uri, max_bytes)

    if len(uris) <= 1 or max_workers <= 1:
        return [one(u) for u in uris]
    workers = min(max_workers, len(uris))
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fruitlens-io") as ex:
        return list(ex.map(one, uris))


def read_bytes(
    uris: Sequence[str], *, max_workers: int = 16, max_bytes: int | None = None
) -> list[bytes | None]:
    """Read whole objects/files concurrently; ``None`` where one cannot be read.

    Use :func:`fetch_batches` to also get the reason of each failure.
    """
    return [content for content, _ in _read_many(list(uris), max_workers, max_bytes)]


def fetch_batches(
    record_batches: Iterable[pa.RecordBatch],
    path_col: str = "path",
    *,
    content_col: str = "content",
    error_col: str = "error",
    max_workers: int = 16,
    max_bytes: int | None = _DEFAULT_MAX_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Add the bytes of each row's ``path_col`` object to Arrow batches (for executors).

    Meant for ``df.mapInArrow(lambda it: fetch_batches(it), schema)``: every input
    column is kept, then ``content_col`` (``binary``, null when unreadable) and
    ``error_col`` (``utf8``: null when fine, else ``"unreadable: <uri>: <reason>"`` or
    ``"too_many_bytes: ..."`` for objects over ``max_bytes``, which are not fetched).
    Objects are read concurrently with ``max_workers`` threads. A batch whose content
    would exceed 1 GiB is split into several, so ``binary`` offsets never overflow.
    """
    for batch in record_batches:
        if content_col in batch.schema.names or error_col in batch.schema.names:
            raise ValueError(
                f"the input already has a {content_col!r} or {error_col!r} column: "
                "pass other content_col/error_col names"
            )
        paths = batch.column(batch.schema.get_field_index(path_col)).to_pylist()
        results = _read_many(paths, max_workers, max_bytes)
        start = 0
        while start < len(results) or (start == 0 and not results):
            end, total = start, 0
            while end < len(results):
                size = len(results[end][0] or b"")
                if end > start and total + size > _MAX_BATCH_BYTES:
                    break
                total += size
                end += 1
            part = results[start:end]
            columns = list(batch.slice(start, end - start).columns)
            columns.append(pa.array([c for c, _ in part], type=pa.binary()))
            columns.append(pa.array([e for _, e in part], type=pa.string()))
            names = [*batch.schema.names, content_col, error_col]
            yield pa.RecordBatch.from_arrays(columns, names=names)
            if not results:
                break
            start = end


# --------------------------------------------------------------------------------------
# Small files, existence, removal
# --------------------------------------------------------------------------------------


def _ensure_parent(fs: pafs.FileSystem, path: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(posixpath.dirname(path), recursive=True)


def write_text(uri: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``uri``, replacing it (atomic on local filesystems)."""
    write_bytes(uri, text.encode("utf-8"))


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing it (atomic on local filesystems)."""
    fs, path = filesystem_for(uri)
    _ensure_parent(fs, path)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    else:  # an object store PUT is atomic by itself
        with fs.open_output_stream(path) as out:
            out.write(data)


def read_text(uri: str) -> str:
    """Read a whole UTF-8 file/object. Raises ``FileNotFoundError`` if missing."""
    fs, path = filesystem_for(uri)
    if _not_found(fs, path):
        raise FileNotFoundError(f"no such file or object: {uri}")
    with fs.open_input_stream(path) as handle:
        return handle.read().decode("utf-8")


def exists(uri: str) -> bool:
    """True if a file, folder or non-empty prefix exists at ``uri``."""
    fs, path = filesystem_for(uri)
    if not posixpath.basename(path):  # a bare bucket: it "exists" if it can be listed
        try:
            return bool(fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)))
        except OSError:
            return False
    return not _not_found(fs, path)


def remove(uri: str) -> bool:
    """Delete a file, or a folder/prefix and everything under it.

    Returns False if there was nothing to delete. Refuses to delete a whole bucket or
    a filesystem root.
    """
    fs, path = filesystem_for(uri)
    if path in ("", "/") or (not isinstance(fs, pafs.LocalFileSystem) and "/" not in path):
        raise ValueError(f"refusing to delete {uri!r}: name a folder or prefix inside it")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return False
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    else:
        fs.delete_file(path)
    return True


# --------------------------------------------------------------------------------------
# Atomic Parquet output
# --------------------------------------------------------------------------------------


def write_parquet_atomic(
    data: TableLike,
    uri: str,
    *,
    schema: pa.Schema | None = None,
    overwrite: bool = False,
    rows_per_file: int = 1_000_000,
    compression: str = "zstd",
) -> list[str]:
    """Write Arrow data as a Parquet dataset at ``uri`` so that it appears all at once.

    ``data`` is a table, a record batch or any iterable of them (streamed: only one
    batch is held at a time; ``rows_per_file`` rows per part, later batches cast to
    the first one's schema; an input without rows gives one empty part when the schema
    is known from a batch or ``schema``). The output is a fruitlens output committed by
    a ``_SUCCESS`` manifest written last (see :mod:`fruitlens.output` for the protocol:
    a staged folder swapped in locally; new part names plus one manifest PUT on object
    stores). At every moment ``uri`` holds the complete previous output or the complete
    new one; on an error, what this call wrote is removed and the error raised again.

    Raises:
        OutputError: ``uri`` holds data and ``overwrite`` is False, or holds data that
            is not a fruitlens output (never replaced), or is a bucket root.

    Returns the URIs of the published parts.
    """
    from .output import OutputTarget

    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
    target = OutputTarget(uri)
    target.prepare(overwrite=overwrite)
    try:
        names = target.write_parquet(
            data, schema=schema, rows_per_file=rows_per_file, compression=compression
        )
        target.commit()
    except BaseException:
        target.abort()
        raise
    return [_join(uri, name) for name in names]
