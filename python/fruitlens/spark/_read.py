"""Reading and listing images into DataFrames (driver side).

:func:`read_images` reads with Spark's ``binaryFile`` source (plus, for local paths, what
it would drop or mishandle, listed by ``fruitlens.io``); :func:`list_images` lists on the
driver without the bytes, and :func:`read_images_arrow` has the tasks fetch them
through ``fruitlens.io`` (object stores without Hadoop jars).

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

from .. import _uri
from .._common import IMAGE_EXTENSIONS, first_line, has_glob, is_hidden
from .._errors import FruitlensError
from .._fs import use_arrow_io
from .._listing import find_images, scan_local
from ._lazy import default_partitions, listing_frame, with_lazy_content, with_partitions_hint
from ._paths import (
    case_insensitive_glob,
    dotted,
    hadoop_glob,
    hadoop_literal,
    input_paths,
    local_path_or_none,
)
from ._task_pca import fetch_batches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "ARROW_ROWS_PER_PARTITION",
    "DEFAULT_EXTENSIONS",
    "READ_ERROR_COL",
    "image_files",
    "list_images",
    "read_images",
    "read_images_arrow",
    "with_folder_label",
]

#: File extensions :func:`read_images` picks up (case-insensitive; without the dot).
DEFAULT_EXTENSIONS: tuple[str, ...] = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
#: Column that carries a fetch failure from :func:`read_images_arrow` to ``featurize``.
READ_ERROR_COL = "_read_error"
#: Rows per partition :func:`read_images_arrow` aims at when no ``partitions`` is given.
ARROW_ROWS_PER_PARTITION = 512

#: ``(path, modificationTime, length, content, label)``: a zero-byte local file.
_EmptyRow = tuple[str, Optional[datetime], int, bytes, str]

# --------------------------------------------------------------------------------------
# read_images: binaryFile, plus what fruitlens lists and reads itself
# --------------------------------------------------------------------------------------


def _local_roots(spark: SparkSession, path: str, local: str) -> list[str]:
    """The local input ``path`` (``local``: its path), or the matches of its glob."""
    if os.path.lexists(local):
        return [local]
    if has_glob(local):
        roots = hadoop_glob(spark, "file:" + local)
        if not roots:
            raise FruitlensError(f"input path does not exist: {path} (no match for the pattern)")
        return roots
    raise FruitlensError(f"input path does not exist: {path}")


def _local_sources(
    spark: SparkSession, path: str, local: str, extensions: Sequence[str]
) -> tuple[list[str], list[_EmptyRow], list[Any]]:
    """How :func:`read_images` reads the local input ``path`` (``local``: its path):
    ``(paths for binaryFile, zero-byte rows, refs that fruitlens reads itself)``.

    The input (or each match of a glob) is listed first by ``fruitlens.io``. A plain
    folder (regular files and folders only, no ``:`` in names) goes to ``binaryFile``
    as it is, and its zero-byte files (which ``binaryFile`` drops) become rows with
    empty ``content``. Anything else is listed by fruitlens and read by the tasks
    (``fruitlens.io.fetch_batches``): Hadoop follows symbolic links into loops and
    duplicates, opens FIFOs, and fails the job on a file name with ``:`` (its
    checksum-file path is not a valid URI).
    """
    exts = dotted(extensions)
    sources: list[str] = []
    empty: list[_EmptyRow] = []
    fetch: list[Any] = []
    for root in _local_roots(spark, path, local):
        refs, plain = scan_local(root, exts, is_hidden)
        refs = [r._replace(path=_uri.to_uri(r.path)) for r in refs]
        prefix = len(_uri.to_uri(root))
        if plain and os.path.isdir(root) and not any(":" in r.path[prefix:] for r in refs):
            sources.append(hadoop_literal(_uri.to_uri(root)))
            empty.extend((r.path, r.modified, 0, b"", r.label) for r in refs if not r.size)
        else:
            fetch.extend(refs)
    return sources, empty, fetch


def _plan_sources(
    spark: SparkSession, paths: list[str], extensions: Sequence[str]
) -> tuple[list[str], list[_EmptyRow], list[Any]]:
    """:func:`_local_sources` of every input; non-local inputs go to ``binaryFile``."""
    sources: list[str] = []
    empty: list[_EmptyRow] = []
    fetch: list[Any] = []
    for p in paths:
        try:
            local = local_path_or_none(p)
        except ValueError as exc:  # file://host/..., file:relative
            raise FruitlensError(str(exc)) from exc
        if local is None:
            sources.append(p)
        else:
            more = _local_sources(spark, p, local, extensions)
            sources.extend(more[0])
            empty.extend(more[1])
            fetch.extend(more[2])
    return sources, empty, fetch


def _image_schema() -> StructType:
    """The columns of :func:`read_images`."""
    from pyspark.sql import types as T  # optional dependency

    return T.StructType(
        [
            T.StructField("path", T.StringType(), False),
            T.StructField("modificationTime", T.TimestampType(), True),
            T.StructField("length", T.LongType(), True),
            T.StructField("content", T.BinaryType(), True),
            T.StructField("label", T.StringType(), True),
        ]
    )


def _binary_file_frame(
    spark: SparkSession, sources: list[str], paths: list[str], extensions: Sequence[str]
) -> DataFrame:
    """``sources`` read by Spark's ``binaryFile``, plus ``label`` (the parent folder)."""
    reader = image_files(spark.read, extensions)
    try:
        df = reader.load(sources)
    except Exception as exc:  # AnalysisException: path does not exist / not readable
        names = ("AnalysisException", "Py4JJavaError", "IllegalArgumentException")
        if type(exc).__name__ in names:
            raise FruitlensError(
                f"cannot read input {', '.join(paths)}: {first_line(exc)}"
            ) from exc
        raise
    return with_folder_label(df)


def image_files(reader: Any, extensions: Sequence[str]) -> Any:
    """A ``spark.read``/``spark.readStream`` set to read images with Spark's
    ``binaryFile``: recursively, only ``extensions`` (any case)."""
    return (
        reader.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", case_insensitive_glob(extensions))
    )


def with_folder_label(df: DataFrame) -> DataFrame:
    """``df`` plus ``label``: the parent folder's name of each ``path``."""
    from pyspark.sql import functions as F  # optional dependency

    # binaryFile writes Hadoop's Path.toString(): file: + the literal absolute path
    return df.withColumn("label", F.element_at(F.split(F.col("path"), "/"), -2))


def _union(spark: SparkSession, frames: list[DataFrame]) -> DataFrame:
    """The frames of :func:`read_images` as one (``_read_error`` added where missing)."""
    from pyspark.sql import functions as F  # optional dependency

    if not frames:
        return spark.createDataFrame([], _image_schema())
    if any(READ_ERROR_COL in f.columns for f in frames):  # featurize folds it into error
        null = F.lit(None).cast("string")
        frames = [
            f if READ_ERROR_COL in f.columns else f.withColumn(READ_ERROR_COL, null) for f in frames
        ]
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other)
    return df


def _read_in_tasks(spark: SparkSession, paths: list[str], io: str) -> bool:
    """Whether :func:`read_images` lists ``paths`` on the driver and leaves the bytes to
    the tasks (as ``fruitlens run``): local folders and files (an existing path is
    literal, even with glob characters in it) and object stores read through
    ``fruitlens.io``; not Hadoop filesystems, globs, or ``io="spark"``."""
    if io == "spark":
        return False
    for p in paths:
        try:
            local = local_path_or_none(p)
        except ValueError as exc:  # file://host/..., file:relative
            raise FruitlensError(str(exc)) from exc
        if local is not None:
            if has_glob(local) and not os.path.lexists(local):
                return False
        elif not use_arrow_io(spark, p, io):
            return False
    return True


def read_images(
    spark: SparkSession,
    path: str | Sequence[str],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    io: str = "auto",
    partitions: int | None = None,
) -> DataFrame:
    """Read image files below ``path`` (recursively) as a DataFrame.

    Columns: ``path``, ``modificationTime``, ``length``, ``label`` (the parent folder's
    name), ``content`` (binary) and, when fruitlens reads the files, ``_read_error``
    (null, or why ``content`` is null; ``featurize`` folds it into ``error``).
    ``path``: a local folder, a ``file:``/``hdfs:``/``s3:`` URI, a glob, or a list of
    those. Only files with one of ``extensions`` (any case) are read; names starting
    with ``_`` or ``.`` are skipped (as Spark does).

    Local paths, and object stores that ``fruitlens.io`` reads, are listed on the
    driver (as ``fruitlens run`` does) into ``partitions`` partitions of equal image
    counts (default: two per core); ``content`` is lazy: read by a task only when a
    query uses it. ``featurize`` reads each file itself, right before decoding it (the
    bytes never pass through the JVM). Zero-byte files are listed (``empty`` errors),
    links are followed without loops, each file once, and dangling links, FIFOs or
    unreadable files get an ``unreadable`` error.

    ``io``: ``"spark"`` reads everything with Spark's ``binaryFile`` source (bytes
    read by the JVM, ``content`` materialised: what ``"auto"`` did before it became
    lazy); ``"arrow"`` lists and reads through ``fruitlens.io``; ``"auto"``:
    ``fruitlens.io`` for local paths and for ``s3://``/``gs://`` that this Spark has no
    Hadoop filesystem for (:func:`use_arrow_io`), ``binaryFile`` for Hadoop
    filesystems (HDFS, EMRFS) and glob patterns. With ``binaryFile``, local zero-byte
    files (which it skips) are added with empty ``content``; local trees with links,
    FIFOs or ``:`` in names are listed by fruitlens and read by the tasks.

    ``path`` values are ``file:`` + the literal absolute path for local files (never
    percent-encoded: ``file:/d/a b#1.jpg``), as :func:`list_images` gives; a local
    input path is literal too, unless it does not exist and has glob characters
    (``*?[{``): then it is a Hadoop glob pattern.

    Raises:
        FruitlensError: a path does not exist or cannot be listed.
    """
    paths = input_paths(path, "read_images")
    if io == "arrow" or (io == "auto" and _read_in_tasks(spark, paths, io)):
        exts = dotted(extensions)
        refs = [ref for p in paths for ref in _list_one(p, exts)]
        n_parts = partitions or default_partitions(spark, len(refs))
        listing = with_partitions_hint(listing_frame(spark, refs, n_parts, False), n_parts)
        return with_lazy_content(listing, READ_ERROR_COL)
    if any(use_arrow_io(spark, p, io) for p in paths):
        return read_images_arrow(spark, paths, extensions=extensions, partitions=partitions)
    sources, empty, fetch = _plan_sources(spark, paths, extensions)
    frames: list[DataFrame] = []
    if sources:
        frames.append(_binary_file_frame(spark, sources, paths, extensions))
    if empty:
        frames.append(spark.createDataFrame(empty, _image_schema()))
    if fetch:
        frames.append(_fetch_frame(listing_frame(spark, fetch, None, False)))
    return _union(spark, frames)


# --------------------------------------------------------------------------------------
# Listing on the driver, fetching in the tasks (fruitlens.io)
# --------------------------------------------------------------------------------------


def _list_one(path: str, exts: list[str]) -> list[Any]:
    """``fruitlens.io.find_images`` of one input, local paths as ``file:`` URIs."""
    try:  # paths are literal: glob characters are part of names here
        found = find_images(path, exts)
    except FileNotFoundError as exc:
        if has_glob(path):
            raise FruitlensError(
                f"input path does not exist: {path} (glob patterns need Spark's "
                "binaryFile reader: --io spark)"
            ) from exc
        raise FruitlensError(f"input path does not exist: {path}") from exc
    except OSError as exc:
        raise FruitlensError(f"cannot list input {path}: {exc}") from exc
    if _uri.scheme(path) == "":  # the same path strings as binaryFile: file: + the path
        found = [r._replace(path=_uri.to_uri(r.path)) for r in found]
    return found


def list_images(
    spark: SparkSession,
    path: str | Sequence[str],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    partitions: int | None = None,
    local_relation: bool = False,
) -> DataFrame:
    """List images on the driver (``fruitlens.io``) into a DataFrame, without their bytes.

    Columns: ``path``, ``modificationTime``, ``length``, ``label`` (as
    :func:`read_images`, minus ``content``), in partitions of equal row counts. Feed it to
    ``featurize`` with ``fetch_from="path"`` and the executors read each file
    right before decoding it. Local folders give ``file:`` paths, like Spark's
    ``binaryFile``. Zero-byte files are listed (they become ``empty`` errors).

    ``partitions``: how many (default: about 512 rows each, at least one per core);
    the rows are parallelized from Python, so each task that reads them runs a Python
    worker to unpickle them. ``local_relation=True`` (Spark 4+; ignored on 3.5) sends
    the listing to the JVM as Arrow instead: its tasks need no Python worker, and it
    is split when it runs, into ``spark.sql.leafNodeDefaultParallelism`` partitions
    (the default parallelism unless set) and not ``partitions``. ``fruitlens run``
    uses that, with the conf set for its featurize pass.

    Raises:
        FruitlensError: a path does not exist or cannot be listed.
    """
    exts = dotted(extensions)
    refs = [ref for p in input_paths(path, "list_images") for ref in _list_one(p, exts)]
    return listing_frame(spark, refs, partitions, local_relation)


def read_images_arrow(
    spark: SparkSession,
    path: str | Sequence[str],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    partitions: int | None = None,
    max_workers: int = 16,
) -> DataFrame:
    """:func:`read_images` through ``fruitlens.io``: no Hadoop filesystem needed.

    The driver lists the images (``fruitlens.io.find_images``), then executors fetch
    the bytes of their rows in ``mapInArrow`` (``max_workers`` concurrent reads per
    task). Same columns as :func:`read_images` plus ``_read_error`` (null, or
    ``"unreadable: ..."`` for an object that could not be fetched), which
    ``featurize`` folds into its ``error`` column. Zero-byte files are kept.
    """
    df = list_images(spark, path, extensions=extensions, partitions=partitions)
    return _fetch_frame(df, max_workers)


def _fetch_frame(df: DataFrame, max_workers: int = 16) -> DataFrame:
    """A listing plus ``content`` and ``_read_error``, fetched by the tasks."""
    from pyspark.sql import types as T  # optional dependency

    schema = T.StructType(
        [
            *df.schema.fields,
            T.StructField("content", T.BinaryType(), True),
            T.StructField(READ_ERROR_COL, T.StringType(), True),
        ]
    )

    def fetch(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return fetch_batches(batches, error_col=READ_ERROR_COL, max_workers=max_workers)

    return df.mapInArrow(fetch, schema)
