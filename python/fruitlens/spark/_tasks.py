"""Executor-side task code: the ``mapInArrow`` bodies and what they cache per process.

This is what runs in every Spark Python worker, so it imports only the standard
library, pyarrow and the fruitlens core (never pyspark at module level, never the other
``fruitlens.spark`` modules): the driver-side modules build DataFrames around these
functions, the workers only call them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import _native, _reading
from .._core import Embedder
from .._pca import PCA, PCAStats

__all__ = [
    "FAULT_ENV",
    "StatsParam",
    "StatsValue",
    "embed_batches",
    "fetch_batches",
    "ipc_batches",
    "merge_stats_bytes",
    "project_batches",
    "stats_batches",
]

#: Fault injection for tests (never set in production): ``STAGE:N[:always]`` makes the
#: Python worker running partition 0 exit abruptly (``os._exit``) before emitting its
#: N-th output batch (0-based) of ``STAGE`` (``featurize`` or ``transform``) — on the
#: first task attempt only, unless ``:always``. Spark then retries the task.
FAULT_ENV = "FRUITLENS_TEST_FAULT"

_FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=True))

#: One Embedder per Python process, by (model path, threads, batch size).
_EMBEDDERS: dict[tuple[str, int, int], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()
#: Fitted PCA models deserialised in this process, by the digest of their JSON.
_PCA_MODELS: dict[str, PCA] = {}


# --------------------------------------------------------------------------------------
# Task context: threads, model file, fault injection
# --------------------------------------------------------------------------------------


def _task_threads(threads: int | None) -> int:
    """Threads for native work in this task: explicit, else the task's CPUs, else the
    native default (``OMP_NUM_THREADS``, else the CPU count)."""
    if threads:
        return int(threads)
    try:
        from pyspark.taskcontext import TaskContext  # pyspark: only in a task, not at import

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:  # pragma: no cover - older pyspark or not in a task
        pass
    return int(_native.default_threads())


def _executor_model_path(ref: tuple[str, str]) -> str:
    """The local path of the model a task opens: ``ref`` is ``("path", path)`` or
    ``("sparkfile", name)`` (a file shipped with ``SparkContext.addFile``)."""
    kind, value = ref
    if kind == "sparkfile":
        from pyspark.files import SparkFiles  # pyspark: only in a task, not at import

        return SparkFiles.get(value)
    return value


def _get_embedder(ref: tuple[str, str], threads: int, batch_size: int) -> Embedder:
    """The cached Embedder of this process (created on first use)."""
    path = _executor_model_path(ref)
    key = (path, threads, batch_size)
    emb = _EMBEDDERS.get(key)
    if emb is None:
        with _EMBEDDERS_LOCK:
            emb = _EMBEDDERS.get(key)
            if emb is None:
                emb = Embedder(path, threads=threads, batch_size=batch_size)
                _EMBEDDERS[key] = emb
    return emb


def _fault_point(stage: str, batch_index: int) -> None:
    """Exit this worker here if :data:`FAULT_ENV` asks for it (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage or not parts[1:] or batch_index != int(parts[1]):
        return
    from pyspark.taskcontext import TaskContext  # pyspark: only in a task, not at import

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


def _partition_id() -> int:
    """The partition this task computes (-1 outside a task)."""
    from pyspark.taskcontext import TaskContext  # pyspark: only in a task, not at import

    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else -1


# --------------------------------------------------------------------------------------
# Arrow helpers
# --------------------------------------------------------------------------------------


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


def _columns(batch: pa.RecordBatch, names: list[str]) -> list[pa.Array]:
    return [batch.column(_field_index(batch.schema, name)) for name in names]


# --------------------------------------------------------------------------------------
# Reading files in tasks
# --------------------------------------------------------------------------------------


def fetch_batches(
    batches: Iterable[pa.RecordBatch], *, error_col: str, max_workers: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of a listing: adds ``content`` and ``error_col`` (the bytes
    of each row's ``path``, read here; see :func:`fruitlens.io.fetch_batches`)."""
    return _reading.fetch_batches(batches, "path", error_col=error_col, max_workers=max_workers)


def _fetch_content(batch: pa.RecordBatch, path_col: str) -> tuple[pa.Array, pa.Array]:
    """Read the files/objects named in ``path_col``: (content, read errors)."""
    paths = pa.RecordBatch.from_arrays(_columns(batch, [path_col]), names=["path"])
    contents, errors = [], []
    for fetched in _reading.fetch_batches([paths], "path", content_col="c", error_col="e"):
        contents.append(fetched.column(1))
        errors.append(fetched.column(2))
    if len(contents) == 1:
        return contents[0], errors[0]
    return pa.chunked_array(contents).combine_chunks(), pa.chunked_array(errors).combine_chunks()


# --------------------------------------------------------------------------------------
# PCA statistics gathered while embedding (FeatureStats' accumulator)
# --------------------------------------------------------------------------------------


class StatsValue:
    """What a ``FeatureStats`` accumulator holds: partitions seen, merged stats."""

    __slots__ = ("duplicate", "parts", "stats")

    def __init__(
        self,
        parts: set[int] | None = None,
        stats: bytes | PCAStats | None = None,
        duplicate: bool = False,
    ) -> None:
        self.parts = set(parts or ())
        self.stats = stats
        self.duplicate = duplicate

    def native(self) -> PCAStats | None:
        """The statistics as :class:`fruitlens.PCAStats` (decoded once, on first use)."""
        if isinstance(self.stats, bytes):
            self.stats = PCAStats.from_bytes(self.stats)
        return self.stats

    def __getstate__(self) -> tuple[set[int], bytes | None, bool]:
        stats = self.stats
        if stats is not None and not isinstance(stats, bytes):
            stats = stats.to_bytes()
        return self.parts, stats, self.duplicate

    def __setstate__(self, state: tuple[set[int], bytes | None, bool]) -> None:
        self.parts, self.stats, self.duplicate = state


class StatsParam:
    """Spark ``AccumulatorParam`` merging :class:`StatsValue` (duck-typed: no pyspark
    import at module level). A partition reported twice (a recomputed partition, or a
    second action over an uncached DataFrame) marks the result as unusable rather
    than counting rows twice."""

    def zero(self, value: StatsValue) -> StatsValue:
        return StatsValue()

    def addInPlace(self, a: StatsValue, b: StatsValue) -> StatsValue:
        if b.stats is not None:
            a.stats = b.stats if a.stats is None else a.native().merge(b.native())
        a.duplicate = a.duplicate or b.duplicate or bool(a.parts & b.parts)
        a.parts |= b.parts
        return a


# --------------------------------------------------------------------------------------
# featurize
# --------------------------------------------------------------------------------------


def _embed_one(
    embedder: Embedder,
    batch: pa.RecordBatch,
    *,
    content_col: str,
    fetch_from: str | None,
) -> tuple[pa.Array, pa.Array]:
    """``(features, errors)`` of one batch: its ``content_col``, or the files named in
    ``fetch_from`` read here, next to the decoder (read errors win)."""
    read_errors = None
    if fetch_from is not None:
        content, read_errors = _fetch_content(batch, fetch_from)
    else:
        content = batch.column(_field_index(batch.schema, content_col))
    out = embedder.embed(content)
    errors = out.column(1)
    if read_errors is not None and read_errors.null_count < len(read_errors):
        errors = pc.coalesce(read_errors, errors)
    return out.column(0), errors


def embed_batches(
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
    """The ``mapInArrow`` body of ``featurize`` (runs on executors)."""
    embedder = _get_embedder(ref, _task_threads(threads), batch_size)
    stats: PCAStats | None = None
    # Bound memory (decoded tensors) whatever spark.sql.execution.arrow.maxRecordsPerBatch is.
    chunk_rows = max(batch_size * 8, 256)
    index = 0
    for big in batches:
        for batch in _slices(big, chunk_rows):
            _fault_point("featurize", index)
            index += 1
            features, errors = _embed_one(
                embedder, batch, content_col=content_col, fetch_from=fetch_from
            )
            if stats_acc is not None and len(features) > features.null_count:
                if stats is None:
                    stats = PCAStats(features.type.list_size)
                stats.update(features)
            arrays = [*_columns(batch, keep), _as_float_list(features), errors]
            yield pa.RecordBatch.from_arrays(arrays, names=[*keep, output_col, error_col])
    if stats_acc is not None:  # the whole partition went through: report it once
        blob = stats.to_bytes() if stats is not None else None
        stats_acc.add(StatsValue({_partition_id()}, blob))


# --------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------


def stats_batches(
    batches: Iterable[pa.RecordBatch], *, input_col: str, dim: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of ``pca_stats``: one row of stats bytes per partition."""
    stats = PCAStats(dim)
    for batch in batches:
        column = batch.column(_field_index(batch.schema, input_col))
        if len(column) - column.null_count:
            stats.update(column)
    if stats.count:
        yield pa.RecordBatch.from_arrays([pa.array([stats.to_bytes()], pa.binary())], ["stats"])


def merge_stats_bytes(a: bytes, b: bytes) -> bytes:
    """Two serialised :class:`fruitlens.PCAStats`, merged (a tree-reduction step)."""
    return PCAStats.from_bytes(a).merge(PCAStats.from_bytes(b)).to_bytes()


def _cached_pca(text: str, digest: str) -> PCA:
    pca = _PCA_MODELS.get(digest)
    if pca is None:
        pca = PCA.from_json(text)
        _PCA_MODELS.clear()  # keep one: models can be large
        _PCA_MODELS[digest] = pca
    return pca


def project_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    text: str,
    digest: str,
    input_col: str,
    keep: list[str],
    output_col: str,
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` body of ``transform_pca``: ``keep`` + the PCA scores."""
    pca = _cached_pca(text, digest)
    for index, batch in enumerate(batches):
        _fault_point("transform", index)
        column = batch.column(_field_index(batch.schema, input_col))
        projected = _as_float_list(pca.transform_arrow(column))
        yield pa.RecordBatch.from_arrays(
            [*_columns(batch, keep), projected], names=[*keep, output_col]
        )


# --------------------------------------------------------------------------------------
# Arrow I/O
# --------------------------------------------------------------------------------------


def ipc_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of ``collect_arrow_batches``: each batch as one row of
    Arrow IPC bytes (column ``ipc``)."""
    for batch in batches:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield pa.record_batch({"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())})
