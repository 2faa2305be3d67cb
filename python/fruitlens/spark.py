"""PySpark integration: read image folders, embed them, fit and apply PCA.

Everything heavy runs in the native core inside ``mapInArrow`` (Arrow batches in,
Arrow batches out; no pandas, no per-image Python):

* :func:`read_images` lists images with Spark's ``binaryFile`` source (plus, for
  local paths, the zero-byte files that ``binaryFile`` silently skips);
* :func:`featurize` adds ``features`` (``array<float>``, 1280) and ``error``
  (``string``) with one :class:`fruitlens.Embedder` per Python worker process;
* :func:`fit_pca` reduces per-partition native PCA statistics on the driver, and
  :func:`transform_pca` adds ``pca`` (``array<float>``, k);
* :class:`ImageEmbedder`, :class:`PCA` and :class:`PCAModel` are ``pyspark.ml``
  stages (usable in a ``Pipeline``, savable with ``Pipeline.write()``); they live in
  :mod:`fruitlens.ml` and are imported from there on first use.

Works with PySpark 3.5 and 4.x.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional, Union

import pyarrow as pa

from . import _uri
from ._core import DEFAULT_BATCH_SIZE
from ._errors import FruitlensError, ModelError, PCAError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    import fruitlens

    from .ml import PCA, ImageEmbedder, PCAModel

__all__ = [
    "DEFAULT_EXTENSIONS",
    "PCA",
    "FeatureStats",
    "ImageEmbedder",
    "PCAModel",
    "collect_arrow_batches",
    "featurize",
    "fit_pca",
    "list_images",
    "read_images",
    "read_images_arrow",
    "transform_pca",
    "use_arrow_io",
    "write_parquet_arrow",
]

#: File extensions :func:`read_images` picks up (case-insensitive).
DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
#: Feature vector length of MobileNetV2.
FEATURE_DIM = 1280

_FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=True))

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------


def _case_insensitive_glob(extensions: Sequence[str]) -> str:
    """``("jpg", "png")`` -> ``*.{[jJ][pP][gG],[pP][nN][gG]}`` (a Hadoop glob)."""
    parts = []
    for ext in extensions:
        ext = ext.lstrip(".")
        if not ext or any(c in ext for c in "{}[]*?,\\/"):
            raise ValueError(f"invalid file extension {ext!r}")
        parts.append(
            "".join(f"[{c.lower()}{c.upper()}]" if c.lower() != c.upper() else c for c in ext)
        )
    return "*.{" + ",".join(parts) + "}"


def _input_paths(path: str | os.PathLike[str] | Sequence[str], caller: str) -> list[str]:
    """One path or several, as a non-empty list of strings."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise FruitlensError(f"{caller}: no input path given")
    return [os.fspath(p) for p in paths]


def _local_path(path: str) -> str | None:
    """The absolute local path of ``path`` if it is local (no scheme or ``file:``),
    taken literally (never percent-decoded; see :mod:`fruitlens._uri`)."""
    return _uri.local_path(path) if _uri.is_local(path) else None


def _hidden(name: str) -> bool:
    # Spark's file index ignores names starting with "_" or "." (and ending in "._COPYING_").
    return name.startswith(("_", ".")) or name.endswith("._COPYING_")


_HADOOP_GLOB_CHARS = frozenset("{}[]*?\\")


def _hadoop_literal(uri: str) -> str:
    """``uri`` escaped so that Hadoop's glob expansion (which Spark applies to every
    input path) matches exactly that name: ``{}[]*?\\`` get a backslash."""
    return "".join("\\" + c if c in _HADOOP_GLOB_CHARS else c for c in uri)


def _hadoop_glob(spark: SparkSession, pattern: str) -> list[str]:
    """The local paths that match the Hadoop glob ``pattern`` (a ``file:`` URI), sorted."""
    sc = spark.sparkContext
    path = sc._jvm.org.apache.hadoop.fs.Path(pattern)
    statuses = path.getFileSystem(sc._jsc.hadoopConfiguration()).globStatus(path)
    if statuses is None:
        return []
    return sorted(_uri.local_path(str(st.getPath().toString())) for st in statuses)


#: ``(path, modificationTime, length, content, label)``: a zero-byte local file.
_EmptyRow = tuple[str, Optional[datetime], int, bytes, str]


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
    from . import io as fl_io

    if os.path.lexists(local):
        roots = [local]
    elif any(c in local for c in "*?[{"):
        roots = _hadoop_glob(spark, "file:" + local)
        if not roots:
            raise FruitlensError(f"input path does not exist: {path} (no match for the pattern)")
    else:
        raise FruitlensError(f"input path does not exist: {path}")
    exts = ["." + e.lstrip(".") for e in extensions]
    sources: list[str] = []
    empty: list[_EmptyRow] = []
    fetch: list[Any] = []
    for root in roots:
        refs, plain = fl_io._scan_local(root, exts, _hidden)
        refs = [r._replace(path=_uri.to_uri(r.path)) for r in refs]
        prefix = len(_uri.to_uri(root))
        if plain and os.path.isdir(root) and not any(":" in r.path[prefix:] for r in refs):
            sources.append(_hadoop_literal(_uri.to_uri(root)))
            empty.extend((r.path, r.modified, 0, b"", r.label) for r in refs if not r.size)
        else:
            fetch.extend(refs)
    return sources, empty, fetch


def read_images(
    spark: SparkSession,
    path: str | Sequence[str],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    io: str = "auto",
) -> DataFrame:
    """Read image files below ``path`` (recursively) as a DataFrame.

    Columns: ``path`` (string), ``modificationTime`` (timestamp), ``length`` (long),
    ``content`` (binary) and ``label`` (string: the name of the parent folder).
    ``path`` may be a local folder, a ``file:``/``hdfs:``/``s3:`` URI, a glob, or a
    list of those. Only files whose extension is in ``extensions`` (any case) are
    read; names starting with ``_`` or ``.`` are skipped (as Spark does).

    ``io`` (``"auto"``, ``"spark"``, ``"arrow"``) picks who reads object stores: with
    ``"arrow"``, or ``"auto"`` and an ``s3://``/``gs://`` path that this Spark has no
    Hadoop filesystem for, :func:`read_images_arrow` does (see :func:`use_arrow_io`).

    Spark's ``binaryFile`` source silently drops zero-byte files; for local paths
    they are listed on the driver and added with empty ``content``, so that
    :func:`featurize` reports them (``error = "empty: ..."``) instead of losing them.
    Local inputs are listed safely first (``fruitlens.io.list_local``): symbolic links
    are followed without loops, each file once; dangling links, FIFOs, devices and
    unreadable folders get a row with null ``content`` and a ``_read_error`` column
    (which :func:`featurize` folds into ``error``).

    ``path`` is ``file:`` + the literal absolute path for local files (as Hadoop's
    ``Path.toString()`` writes it; never percent-encoded: ``file:/d/a b#1.jpg``), the
    same as :func:`list_images` gives; a local input path or ``file:`` URI is literal
    too (``%20`` is three characters), unless it does not exist and has glob
    characters (``*?[{``), then it is a Hadoop glob pattern.

    Raises:
        FruitlensError: a path does not exist or cannot be listed.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    paths = _input_paths(path, "read_images")
    # fruitlens.io: object stores that this Spark cannot open (see use_arrow_io)
    if any(use_arrow_io(spark, p, io) for p in paths):
        return read_images_arrow(spark, paths, extensions=extensions)
    sources: list[str] = []
    empty: list[_EmptyRow] = []
    fetch: list[Any] = []
    for p in paths:
        try:
            local = _local_path(p)
        except ValueError as exc:  # file://host/..., file:relative
            raise FruitlensError(str(exc)) from exc
        if local is None:
            sources.append(p)
        else:
            more = _local_sources(spark, p, local, extensions)
            sources.extend(more[0])
            empty.extend(more[1])
            fetch.extend(more[2])
    schema = T.StructType(
        [
            T.StructField("path", T.StringType(), False),
            T.StructField("modificationTime", T.TimestampType(), True),
            T.StructField("length", T.LongType(), True),
            T.StructField("content", T.BinaryType(), True),
            T.StructField("label", T.StringType(), True),
        ]
    )
    frames: list[DataFrame] = []
    if sources:
        reader = (
            spark.read.format("binaryFile")
            .option("recursiveFileLookup", "true")
            .option("pathGlobFilter", _case_insensitive_glob(extensions))
        )
        try:
            df = reader.load(sources)
        except Exception as exc:  # AnalysisException: path does not exist / not readable
            names = ("AnalysisException", "Py4JJavaError", "IllegalArgumentException")
            if type(exc).__name__ in names:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                first = first or type(exc).__name__
                raise FruitlensError(f"cannot read input {', '.join(paths)}: {first}") from exc
            raise
        # binaryFile writes Hadoop's Path.toString(): file: + the literal absolute path
        frames.append(df.withColumn("label", F.element_at(F.split(F.col("path"), "/"), -2)))
    if empty:
        frames.append(spark.createDataFrame(empty, schema))
    if fetch:
        frames.append(_fetch_frame(_listing_frame(spark, fetch, None, False)))
    if not frames:
        frames.append(spark.createDataFrame([], schema))
    if any(READ_ERROR_COL in f.columns for f in frames):  # featurize folds it into error
        null = F.lit(None).cast("string")
        frames = [
            f if READ_ERROR_COL in f.columns else f.withColumn(READ_ERROR_COL, null) for f in frames
        ]
    df = frames[0]
    for other in frames[1:]:
        df = df.unionByName(other)
    return df


# --------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------

#: One Embedder per Python process, by (model path, threads, batch size).
_EMBEDDERS: dict[tuple[str, int, int], fruitlens.Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()
#: The driver's view of models: path -> (mtime, size, input size, output dim).
_MODEL_INFO: dict[str, tuple[float, int, int, int]] = {}
#: Files this driver has registered with SparkContext.addFile: path -> SparkFiles name.
_SHIPPED: dict[tuple[int, str], str] = {}


def _task_threads(threads: int | None) -> int:
    """Threads for native work in this task: explicit, else the task's CPUs."""
    if threads:
        return int(threads)
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:  # pragma: no cover - older pyspark or not in a task
        pass
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


def _resolve_model(ref: tuple[str, str]) -> str:
    kind, value = ref
    if kind == "sparkfile":
        from pyspark import SparkFiles

        return SparkFiles.get(value)
    return value


def _get_embedder(ref: tuple[str, str], threads: int, batch_size: int) -> fruitlens.Embedder:
    """The cached Embedder of this process (created on first use)."""
    path = _resolve_model(ref)
    key = (path, threads, batch_size)
    emb = _EMBEDDERS.get(key)
    if emb is None:
        with _EMBEDDERS_LOCK:
            emb = _EMBEDDERS.get(key)
            if emb is None:
                from ._core import Embedder

                emb = Embedder(path, threads=threads, batch_size=batch_size)
                _EMBEDDERS[key] = emb
    return emb


def model_input_size(model: PathLike) -> tuple[int, int]:
    """``(input size, output dim)`` of a local ONNX model, checked by loading it once.

    Raises:
        ModelError: the file is missing or is not a usable fruitlens model.
    """
    path = os.path.abspath(os.fspath(model))
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {model}")
    st = os.stat(path)
    cached = _MODEL_INFO.get(path)
    if cached is not None and cached[:2] == (st.st_mtime, st.st_size):
        return cached[2], cached[3]
    from ._core import Embedder

    emb = Embedder(path, threads=1)
    if emb.output_dim != FEATURE_DIM:
        raise ModelError(
            f"{model}: the model outputs {emb.output_dim} features per image, expected "
            f"{FEATURE_DIM} (MobileNetV2)"
        )
    _MODEL_INFO[path] = (st.st_mtime, st.st_size, emb.input_size, emb.output_dim)
    return emb.input_size, emb.output_dim


def _model_ref(spark: SparkSession, model: PathLike, ship: bool | None) -> tuple[str, str]:
    """How executors find the model: a path they can open, or a SparkFiles name."""
    model = os.fspath(model)
    local = _local_path(model)
    sc = spark.sparkContext
    if ship is None:
        ship = local is None or not sc.master.startswith("local")
    if not ship:
        return ("path", os.path.abspath(local if local is not None else model))
    source = os.path.abspath(local) if local is not None else model
    key = (id(sc), source)
    if key not in _SHIPPED:
        if local is not None:  # a percent-encoded file URI: Spark reads '#' as a fragment
            import pathlib

            sc.addFile(pathlib.Path(source).as_uri())
            _SHIPPED[key] = os.path.basename(source)
        else:
            sc.addFile(source)
            _SHIPPED[key] = posixpath.basename(_uri.split_uri(source)[2]) or source
    return ("sparkfile", _SHIPPED[key])


def _field_index(schema: pa.Schema, name: str) -> int:
    index = schema.get_field_index(name)
    if index < 0:
        raise KeyError(f"column {name!r} not in the Arrow batch ({schema.names})")
    return index


def _as_float_list(array: pa.Array) -> pa.Array:
    """``fixed_size_list<float>[n]`` -> ``list<float>`` (what Spark's array<float> reads)."""
    return array.cast(_FLOAT_LIST)


def _slices(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    if batch.num_rows <= rows:
        yield batch
        return
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


#: Fault injection for tests (never set in production): ``STAGE:N[:always]`` makes the
#: Python worker running partition 0 exit abruptly (``os._exit``) before emitting its
#: N-th output batch (0-based) of ``STAGE`` (``featurize`` or ``transform``) — on the
#: first task attempt only, unless ``:always``. Spark then retries the task.
FAULT_ENV = "FRUITLENS_TEST_FAULT"


def _fault_point(stage: str, batch_index: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage or not parts[1:] or batch_index != int(parts[1]):
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None or ctx.partitionId() != 0:
        return
    if ctx.attemptNumber() > 0 and "always" not in parts[2:]:
        return
    marker = os.environ.get(FAULT_ENV + "_MARKER")
    if marker:  # lets a test see that the fault really happened
        with open(marker, "a") as f:
            f.write(f"{stage}:{batch_index} attempt {ctx.attemptNumber()}\n")
    os._exit(17)


def _fetch_content(batch: pa.RecordBatch, path_col: str) -> tuple[pa.Array, pa.Array]:
    """Read the files/objects named in ``path_col``: (content, read errors)."""
    from . import io as fl_io

    paths = pa.RecordBatch.from_arrays(
        [batch.column(_field_index(batch.schema, path_col))], names=["path"]
    )
    contents, errors = [], []
    for fetched in fl_io.fetch_batches([paths], "path", content_col="c", error_col="e"):
        contents.append(fetched.column(1))
        errors.append(fetched.column(2))
    if len(contents) == 1:
        return contents[0], errors[0]
    return pa.chunked_array(contents).combine_chunks(), pa.chunked_array(errors).combine_chunks()


def _embed_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    ref: tuple[str, str],
    threads: int | None,
    batch_size: int,
    content_col: str,
    keep: list[str],
    output_col: str,
    error_col: str,
    stats_acc: Any = None,
    fetch_from: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` body of :func:`featurize` (runs on executors)."""
    embedder = _get_embedder(ref, _task_threads(threads), batch_size)
    stats: fruitlens.PCAStats | None = None
    # Bound memory (decoded tensors) whatever spark.sql.execution.arrow.maxRecordsPerBatch is.
    chunk_rows = max(batch_size * 8, 256)
    index = 0
    for big in batches:
        for batch in _slices(big, chunk_rows):
            _fault_point("featurize", index)
            index += 1
            read_errors = None
            if fetch_from is not None:  # read the files here, next to the decoder
                content, read_errors = _fetch_content(batch, fetch_from)
            else:
                content = batch.column(_field_index(batch.schema, content_col))
            out = embedder.embed(content)
            features = out.column(0)
            if stats_acc is not None and len(features) > features.null_count:
                if stats is None:
                    from ._core import PCAStats

                    stats = PCAStats(features.type.list_size)
                stats.update(features)
            errors = out.column(1)
            if read_errors is not None and read_errors.null_count < len(read_errors):
                import pyarrow.compute as pc

                errors = pc.coalesce(read_errors, errors)
            arrays = [batch.column(_field_index(batch.schema, name)) for name in keep]
            arrays += [_as_float_list(features), errors]
            yield pa.RecordBatch.from_arrays(arrays, names=[*keep, output_col, error_col])
    if stats_acc is not None:  # the whole partition went through: report it once
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx is not None else -1
        stats_acc.add(_StatsValue({part}, stats.to_bytes() if stats is not None else None))


def featurize(
    df: DataFrame,
    *,
    model: PathLike,
    content_col: str = "content",
    output_col: str = "features",
    error_col: str = "error",
    size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    keep_content: bool = False,
    ship_model: bool | None = None,
    stats: FeatureStats | None = None,
    fetch_from: str | None = None,
) -> DataFrame:
    """Add MobileNetV2 features to a DataFrame of encoded images.

    Adds ``output_col`` (``array<float>``, 1280 values; null when the image failed)
    and ``error_col`` (``string``: null when fine, else ``"<kind>: <detail>"``). Every
    other column is passed through; ``content_col`` is dropped unless
    ``keep_content``. Columns named like the outputs are replaced.

    Args:
        model: ONNX model file (see ``fruitlens model fetch``). A local path is used
            as is by local Spark and shipped with ``SparkContext.addFile`` to cluster
            executors; a URI (``s3://...``) is always shipped that way.
        size: the expected model input size; raises if the model's differs.
        batch_size: images per ONNX Runtime run.
        threads: ONNX Runtime/decoder threads per task (default: the task's CPUs).
        ship_model: force (True) or prevent (False) shipping the model file.
        stats: a :class:`FeatureStats` that gathers the PCA statistics of the
            features while they are computed, so that a PCA can be fitted without
            another pass over them (see :class:`FeatureStats`).
        fetch_from: instead of ``content_col``, a column of file paths or URIs
            (local, ``file:``, ``s3://``, ``gs://``) that the executors read
            themselves, right before decoding (see :func:`list_images`). The bytes
            then never pass through the JVM. An unreadable file gets
            ``error = "unreadable: ..."``.

    Raises:
        ModelError: the model is missing, invalid, or its input size is not ``size``.
    """
    from pyspark.sql import types as T

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if fetch_from is not None:
        if fetch_from not in df.columns:
            raise ValueError(f"featurize: no column {fetch_from!r} in {df.columns}")
    elif content_col not in df.columns:
        raise ValueError(f"featurize: no column {content_col!r} in {df.columns}")
    model = os.fspath(model)
    local = _local_path(model)
    if local is not None:
        input_size, _ = model_input_size(local)
        if size is not None and int(size) != input_size:
            raise ModelError(
                f"{model} takes {input_size}x{input_size} images but size={size} was asked; "
                f"use a model converted at {size} (fruitlens model fetch --size {size}) "
                f"or size={input_size}"
            )
    spark = df.sparkSession
    ref = _model_ref(spark, model, ship_model)

    drop = {output_col, error_col}
    if not keep_content or fetch_from is not None:
        drop.add(content_col)
    keep = [f.name for f in df.schema.fields if f.name not in drop]
    source = fetch_from if fetch_from is not None else content_col
    df_in = df.select(*keep, source) if source not in keep else df.select(*keep)
    fields = [f for f in df.schema.fields if f.name in keep]
    schema = T.StructType(
        [
            *fields,
            T.StructField(output_col, T.ArrayType(T.FloatType(), True), True),
            T.StructField(error_col, T.StringType(), True),
        ]
    )

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _embed_batches(
            batches,
            ref=ref,
            threads=threads,
            batch_size=batch_size,
            content_col=content_col,
            keep=keep,
            output_col=output_col,
            error_col=error_col,
            stats_acc=stats_acc,
            fetch_from=fetch_from,
        )

    stats_acc = stats._accumulator if stats is not None else None
    out = df_in.mapInArrow(run, schema)
    if READ_ERROR_COL in out.columns:  # fetch failures of read_images_arrow win
        from pyspark.sql import functions as F

        folded = F.coalesce(F.col(READ_ERROR_COL), F.col(error_col))
        out = out.withColumn(error_col, folded).drop(READ_ERROR_COL)
    return out


# --------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------

#: Fitted PCA models deserialised in this process, by the sha1 of their JSON.
_PCA_MODELS: dict[str, fruitlens.PCA] = {}


class _StatsValue:
    """What a :class:`FeatureStats` accumulator holds: partitions seen, merged stats."""

    __slots__ = ("duplicate", "parts", "stats")

    def __init__(
        self,
        parts: set[int] | None = None,
        stats: bytes | fruitlens.PCAStats | None = None,
        duplicate: bool = False,
    ) -> None:
        self.parts = set(parts or ())
        self.stats = stats
        self.duplicate = duplicate

    def native(self) -> fruitlens.PCAStats | None:
        """The statistics as :class:`fruitlens.PCAStats` (decoded once, on first use)."""
        if isinstance(self.stats, bytes):
            from ._core import PCAStats

            self.stats = PCAStats.from_bytes(self.stats)
        return self.stats

    def __getstate__(self) -> tuple[set[int], bytes | None, bool]:
        stats = self.stats
        if stats is not None and not isinstance(stats, bytes):
            stats = stats.to_bytes()
        return self.parts, stats, self.duplicate

    def __setstate__(self, state: tuple[set[int], bytes | None, bool]) -> None:
        self.parts, self.stats, self.duplicate = state


class _StatsParam:
    """Spark ``AccumulatorParam`` merging :class:`_StatsValue` (duck-typed: no pyspark
    import at module level). A partition reported twice (a recomputed partition, or a
    second action over an uncached DataFrame) marks the result as unusable rather
    than counting rows twice."""

    def zero(self, value: _StatsValue) -> _StatsValue:
        return _StatsValue()

    def addInPlace(self, a: _StatsValue, b: _StatsValue) -> _StatsValue:
        if b.stats is not None:
            a.stats = b.stats if a.stats is None else a.native().merge(b.native())
        a.duplicate = a.duplicate or b.duplicate or bool(a.parts & b.parts)
        a.parts |= b.parts
        return a


class FeatureStats:
    """PCA statistics gathered by :func:`featurize` while it embeds (``stats=``).

    The statistics (n, Σx, XᵀX of the non-null features) are computed on the
    executors right after each batch is embedded and sent back with the task
    results, through a Spark accumulator, so fitting the PCA needs no second pass
    over the features. Spark may run a partition more than once (task retries are
    fine; recomputed partitions or a second action are not), so :meth:`get`
    checks the result against the number of non-null feature rows and returns
    ``None`` when it cannot be trusted; then fall back to :func:`fit_pca`::

        collected = FeatureStats(spark)
        df = featurize(images, model=..., stats=collected).persist()
        rows = df.where("features IS NOT NULL").count()  # runs the featurize job
        stats = collected.get(rows=rows)
        pca = PCA(0.95).fit_stats(stats) if stats else fit_pca(df)

    Needs a classic (non-Connect) SparkSession.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._accumulator = spark.sparkContext.accumulator(_StatsValue(), _StatsParam())

    @property
    def partitions(self) -> int:
        """Partitions that have reported so far."""
        return len(self._accumulator.value.parts)

    def get(self, *, rows: int) -> fruitlens.PCAStats | None:
        """The merged statistics if they cover exactly ``rows`` non-null rows, each
        partition once; else ``None``."""
        value = self._accumulator.value
        stats = None if value.duplicate else value.native()
        return stats if stats is not None and stats.count == rows else None


def _stats_batches(
    batches: Iterable[pa.RecordBatch], *, input_col: str, dim: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of :func:`fit_pca`: one row of stats bytes per partition."""
    from ._core import PCAStats

    stats = PCAStats(dim)
    for batch in batches:
        column = batch.column(_field_index(batch.schema, input_col))
        if len(column) - column.null_count:
            stats.update(column)
    if stats.count:
        yield pa.RecordBatch.from_arrays([pa.array([stats.to_bytes()], pa.binary())], ["stats"])


#: Up to this many partial PCA statistics (dim² / 2 float64 each) are merged on the
#: driver; more are merged by a tree reduction on the executors first.
DRIVER_MERGE_PARTITIONS = 8


def _merge_bytes(a: bytes, b: bytes) -> bytes:
    from ._core import PCAStats

    return PCAStats.from_bytes(a).merge(PCAStats.from_bytes(b)).to_bytes()


def pca_statistics(
    df: DataFrame, *, input_col: str = "features", dim: int = FEATURE_DIM
) -> fruitlens.PCAStats:
    """Merged native PCA statistics (n, Σx, XᵀX) of ``input_col`` (null rows skipped).

    One partial result per partition is computed on the executors and they are
    merged with a tree reduction; the partitions are first coalesced to the
    default parallelism so that few (dim x dim) partial results travel.
    """
    from pyspark.sql import types as T

    from ._core import PCAStats

    if input_col not in df.columns:
        raise ValueError(f"PCA: no column {input_col!r} in {df.columns}")
    sc = df.sparkSession.sparkContext
    source = df.select(input_col)
    n_parts = source.rdd.getNumPartitions()
    target = max(1, int(sc.defaultParallelism))
    if n_parts > target:
        source = source.coalesce(target)

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _stats_batches(batches, input_col=input_col, dim=dim)

    schema = T.StructType([T.StructField("stats", T.BinaryType(), False)])
    per_partition = source.mapInArrow(run, schema)
    no_rows = PCAError(
        f"cannot fit PCA: column {input_col!r} has no non-null rows "
        "(did every image fail? look at the error column)"
    )
    if min(n_parts, target) <= DRIVER_MERGE_PARTITIONS:
        # a few partial results: straight to the driver, merged natively there
        merged: PCAStats | None = None
        for blob in _collect_binary(per_partition):
            part = PCAStats.from_bytes(blob)
            merged = part if merged is None else merged.merge(part)
        if merged is None:
            raise no_rows
        return merged
    partials = per_partition.rdd.map(lambda row: bytes(row[0]))
    try:
        return PCAStats.from_bytes(partials.treeReduce(_merge_bytes, depth=2))
    except ValueError as exc:  # "Cannot reduce empty RDD"
        if "empty" in str(exc).lower():
            raise no_rows from exc
        raise


def _collect_binary(df: DataFrame) -> list[bytes]:
    """The values of a one-column binary DataFrame, on the driver.

    Spark 4's ``toArrow`` moves them as Arrow buffers; ``collect`` pickles each row,
    which costs about 0.1 s more for two 6.5 MB PCA partials.
    """
    if hasattr(df, "toArrow"):
        return [bytes(v) for v in df.toArrow().column(0).to_pylist()]
    return [bytes(row[0]) for row in df.collect()]


def fit_pca(
    df: DataFrame,
    *,
    k: int | float = 0.95,
    input_col: str = "features",
    dim: int = FEATURE_DIM,
) -> fruitlens.PCA:
    """Fit a centred PCA on ``input_col`` with distributed native statistics.

    ``k`` is a number of components (int) or the explained-variance fraction to
    reach (float in (0, 1]; default 0.95). Null rows (failed images) are skipped.
    """
    from ._core import PCA as _PCA

    pca = _PCA(k)
    stats = pca_statistics(df, input_col=input_col, dim=dim)
    return pca.fit_stats(stats)


def _cached_pca(text: str, digest: str) -> fruitlens.PCA:
    pca = _PCA_MODELS.get(digest)
    if pca is None:
        from ._core import PCA as _PCA

        pca = _PCA.from_json(text)
        _PCA_MODELS.clear()  # keep one: models can be large
        _PCA_MODELS[digest] = pca
    return pca


def _project_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    text: str,
    digest: str,
    input_col: str,
    keep: list[str],
    output_col: str,
) -> Iterator[pa.RecordBatch]:
    pca = _cached_pca(text, digest)
    for index, batch in enumerate(batches):
        _fault_point("transform", index)
        column = batch.column(_field_index(batch.schema, input_col))
        projected = _as_float_list(pca.transform_arrow(column))
        arrays = [batch.column(_field_index(batch.schema, name)) for name in keep]
        yield pa.RecordBatch.from_arrays([*arrays, projected], names=[*keep, output_col])


def transform_pca(
    df: DataFrame,
    pca: fruitlens.PCA | str,
    *,
    input_col: str = "features",
    output_col: str = "pca",
) -> DataFrame:
    """Add ``output_col`` (``array<float>``, k): the PCA scores of ``input_col``.

    ``pca`` is a fitted :class:`fruitlens.PCA` or its JSON. Rows whose input is null
    (failed images) are kept, with a null ``output_col``.
    """
    from pyspark.sql import types as T

    if input_col not in df.columns:
        raise ValueError(f"PCA: no column {input_col!r} in {df.columns}")
    text = pca if isinstance(pca, str) else pca.to_json()
    digest = hashlib.sha1(text.encode()).hexdigest()
    keep = [f.name for f in df.schema.fields if f.name != output_col]
    fields = [f for f in df.schema.fields if f.name != output_col]
    schema = T.StructType(
        [*fields, T.StructField(output_col, T.ArrayType(T.FloatType(), True), True)]
    )

    def run(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _project_batches(
            batches, text=text, digest=digest, input_col=input_col, keep=keep, output_col=output_col
        )

    return df.mapInArrow(run, schema)


# --------------------------------------------------------------------------------------
# Object stores without Hadoop jars (fruitlens.io): listing on the driver, fetching in
# mapInArrow on executors, streaming results back to the driver for an atomic write.
# --------------------------------------------------------------------------------------

#: Values of ``io=`` / ``--io``: auto (pyarrow only where Spark cannot), spark, arrow.
IO_MODES = ("auto", "spark", "arrow")
#: Column that carries a fetch failure from :func:`read_images_arrow` to :func:`featurize`.
READ_ERROR_COL = "_read_error"
#: Rows per partition :func:`read_images_arrow` aims at when no ``partitions`` is given.
ARROW_ROWS_PER_PARTITION = 512

_HADOOP_FS: dict[tuple[str, str], bool] = {}


def spark_can_read(spark: SparkSession, uri: str) -> bool:
    """True if Spark's Hadoop layer has a filesystem for ``uri``'s scheme.

    Asks Hadoop's ``FileSystem.getFileSystemClass`` (which honours ``fs.<scheme>.impl``,
    e.g. ``spark.hadoop.fs.s3.impl``, and fails when the class, such as ``hadoop-aws``'s
    ``S3AFileSystem`` or EMRFS's ``EmrFileSystem``, is not on the classpath).
    """
    scheme = _uri.scheme(os.fspath(uri)) or "file"  # literal: "a:b.jpg" is a local name
    key = (spark.sparkContext.applicationId, scheme)
    if key not in _HADOOP_FS:
        try:
            sc = spark.sparkContext
            conf = sc._jsc.hadoopConfiguration()
            sc._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, conf)
            _HADOOP_FS[key] = True
        except Exception:  # Py4JJavaError: UnsupportedFileSystemException, ClassNotFound
            _HADOOP_FS[key] = False
    return _HADOOP_FS[key]


def use_arrow_io(spark: SparkSession, uri: str, io: str = "auto") -> bool:
    """Whether ``uri`` is read/written through ``fruitlens.io`` (pyarrow) or by Spark.

    ``"arrow"``: always; ``"spark"``: never; ``"auto"``: for ``s3://``, ``s3a://``,
    ``gs://`` and ``gcs://`` when Spark has no Hadoop filesystem for the scheme (a
    ``pip install pyspark``), never on EMR (EMRFS) or with ``hadoop-aws``.
    """
    from . import io as fl_io

    if io not in IO_MODES:
        raise ValueError(f"io must be one of {', '.join(IO_MODES)}, got {io!r}")
    if io != "auto":
        return io == "arrow"
    return fl_io.is_arrow_uri(uri) and not spark_can_read(spark, uri)


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
    :func:`featurize` with ``fetch_from="path"`` and the executors read each file
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
    from . import io as fl_io

    paths = _input_paths(path, "list_images")
    exts = ["." + e.lstrip(".") for e in extensions]
    refs: list[Any] = []
    for p in paths:
        local = _uri.scheme(p) == ""
        try:  # paths are literal: glob characters are part of names here
            found = fl_io.list_images(p, exts)
        except FileNotFoundError as exc:
            if any(c in p for c in "*?[{"):
                raise FruitlensError(
                    f"input path does not exist: {p} (glob patterns need Spark's "
                    "binaryFile reader: --io spark)"
                ) from exc
            raise FruitlensError(f"input path does not exist: {p}") from exc
        except OSError as exc:
            raise FruitlensError(f"cannot list input {p}: {exc}") from exc
        if local:  # the same path strings as binaryFile: file: + the absolute path
            found = [r._replace(path=_uri.to_uri(r.path)) for r in found]
        refs.extend(found)
    return _listing_frame(spark, refs, partitions, local_relation)


def _listing_frame(
    spark: SparkSession, refs: Sequence[Any], partitions: int | None, local_relation: bool
) -> DataFrame:
    """:func:`list_images`' DataFrame of ``fruitlens.io.ImageRef`` s."""
    from pyspark.sql import types as T

    listing = T.StructType(
        [
            T.StructField("path", T.StringType(), False),
            T.StructField("modificationTime", T.TimestampType(), True),
            T.StructField("length", T.LongType(), True),
            T.StructField("label", T.StringType(), True),
        ]
    )
    if local_relation and refs and _spark_major(spark) >= 4:
        # A local relation (Arrow in, no pickling): the tasks that scan it are pure JVM,
        # where a Python RDD would start a second Python worker per featurize task.
        table = pa.table(
            {
                "path": pa.array([r.path for r in refs], pa.string()),
                "modificationTime": pa.array(
                    [r.modified for r in refs], pa.timestamp("us", tz="UTC")
                ),
                "length": pa.array([r.size for r in refs], pa.int64()),
                "label": pa.array([r.label for r in refs], pa.string()),
            }
        )
        return spark.createDataFrame(table, listing)
    rows = [(r.path, r.modified, r.size, r.label) for r in refs]
    wanted = max(spark.sparkContext.defaultParallelism, -(-len(rows) // ARROW_ROWS_PER_PARTITION))
    n_parts = partitions or max(1, min(len(rows), wanted))
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, n_parts), listing)


def _spark_major(spark: SparkSession) -> int:
    try:
        return int(spark.version.split(".", 1)[0])
    except ValueError:  # pragma: no cover - unusual version strings
        return 0


def read_images_arrow(
    spark: SparkSession,
    path: str | Sequence[str],
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    partitions: int | None = None,
    max_workers: int = 16,
) -> DataFrame:
    """:func:`read_images` through ``fruitlens.io``: no Hadoop filesystem needed.

    The driver lists the images (``fruitlens.io.list_images``), then executors fetch
    the bytes of their rows in ``mapInArrow`` (``max_workers`` concurrent reads per
    task). Same columns as :func:`read_images` plus ``_read_error`` (null, or
    ``"unreadable: ..."`` for an object that could not be fetched), which
    :func:`featurize` folds into its ``error`` column. Zero-byte files are kept.
    """
    df = list_images(spark, path, extensions=extensions, partitions=partitions)
    return _fetch_frame(df, max_workers)


def _fetch_frame(df: DataFrame, max_workers: int = 16) -> DataFrame:
    """A listing plus ``content`` and ``_read_error``, fetched by the tasks."""
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            *df.schema.fields,
            T.StructField("content", T.BinaryType(), True),
            T.StructField(READ_ERROR_COL, T.StringType(), True),
        ]
    )

    def fetch(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from fruitlens import io as worker_io

        return worker_io.fetch_batches(
            batches, "path", error_col=READ_ERROR_COL, max_workers=max_workers
        )

    return df.mapInArrow(fetch, schema)


def collect_arrow_batches(df: DataFrame) -> Iterator[pa.RecordBatch]:
    """Stream a DataFrame to the driver as Arrow batches, one partition at a time.

    Each partition's batches are serialised (Arrow IPC) by ``mapInArrow`` and brought
    back with ``toLocalIterator``, so the driver holds one partition at a time (unlike
    ``toArrow``/``toPandas``, which hold the whole result).
    """
    from pyspark.sql import types as T

    def to_ipc(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            yield pa.record_batch({"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())})

    blobs = df.mapInArrow(to_ipc, T.StructType([T.StructField("ipc", T.BinaryType(), False)]))
    for row in blobs.toLocalIterator(prefetchPartitions=True):
        yield from pa.ipc.open_stream(row["ipc"])


def write_parquet_arrow(df: DataFrame, uri: str, *, overwrite: bool = False) -> list[str]:
    """Write ``df`` as Parquet at ``uri`` through ``fruitlens.io`` (atomic publish).

    See :func:`fruitlens.io.write_parquet_atomic` for the exact guarantee.
    """
    from . import io as fl_io

    schema = None
    try:
        from pyspark.sql.pandas.types import to_arrow_schema

        schema = to_arrow_schema(df.schema)
    except Exception:  # an empty result then has no part file, only _SUCCESS
        pass
    return fl_io.write_parquet_atomic(
        collect_arrow_batches(df), uri, schema=schema, overwrite=overwrite
    )


_ML_STAGES = ("ImageEmbedder", "PCA", "PCAModel")


def __getattr__(name: str) -> Any:
    """The ``pyspark.ml`` stages live in :mod:`fruitlens.ml`, imported on first use.

    ``pyspark.ml`` pulls in pandas and scipy (~0.5 s); Python workers that only run
    :func:`featurize` never pay for it.
    """
    if name in _ML_STAGES:
        from . import ml

        return getattr(ml, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
