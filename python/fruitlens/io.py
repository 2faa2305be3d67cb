"""Object-store I/O through ``pyarrow.fs``: S3 (and GCS) without Hadoop jars.

A local Spark (``pip install pyspark``) has no ``hadoop-aws`` jars, so it cannot read
``s3://`` paths itself. This module lets fruitlens do the object-store work in Python
with Arrow's native S3 client instead:

* the driver lists images with :func:`find_images` (one recursive listing call);
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

Filesystems live in :mod:`fruitlens._fs`, listing in :mod:`fruitlens._listing` and reading
in :mod:`fruitlens._reading` (what Spark's Python workers import); their public names are
re-exported here. ``list_images`` is the deprecated old name of
:func:`find_images` (``fruitlens.spark.list_images`` is another function: it gives a
DataFrame).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any, Union

import pyarrow as pa
import pyarrow.fs as pafs

from . import _uri
from ._common import IMAGE_EXTENSIONS, deprecated, write_atomic
from ._fs import ARROW_SCHEMES, filesystem_for, is_arrow_uri
from ._listing import ImageRef, find_images, list_local
from ._manifest import MANIFEST
from ._reading import fetch_batches, read_bytes
from .output import OutputTarget

__all__ = [
    "ARROW_SCHEMES",
    "DEFAULT_EXTENSIONS",
    "STAGING_DIR",
    "SUCCESS_FILE",
    "ImageRef",
    "exists",
    "fetch_batches",
    "filesystem_for",
    "find_images",
    "is_arrow_uri",
    "list_local",
    "read_bytes",
    "read_text",
    "remove",
    "write_bytes",
    "write_parquet_atomic",
    "write_text",
]

#: File-name extensions that :func:`find_images` keeps by default (case-insensitive).
DEFAULT_EXTENSIONS = IMAGE_EXTENSIONS
#: Hidden folder of Hadoop committers' staged parts (fruitlens no longer writes it).
STAGING_DIR = "_temporary"
#: The commit marker (a JSON manifest, see :mod:`fruitlens.output`), written last.
SUCCESS_FILE = MANIFEST

TableLike = Union[pa.Table, pa.RecordBatch, Iterable[pa.RecordBatch]]

#: Deprecated names: old name → (new name, object).
_DEPRECATED = {"list_images": ("find_images", find_images)}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, obj = _DEPRECATED[name]
        return deprecated(f"fruitlens.io.{name}", f"fruitlens.io.{new}", obj)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------
# Small files, existence, removal
# --------------------------------------------------------------------------------------


def write_text(uri: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``uri``, replacing it (atomic on local filesystems)."""
    write_bytes(uri, text.encode("utf-8"))


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``, replacing it (atomic on local filesystems)."""
    fs, path = filesystem_for(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        write_atomic(path, data)
    else:  # an object store PUT is atomic by itself
        with fs.open_output_stream(path) as out:
            out.write(data)


def _not_found(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.NotFound


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
    return [_uri.join(uri, name) for name in names]
