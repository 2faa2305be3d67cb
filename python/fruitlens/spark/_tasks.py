"""Executor-side task code: the ``mapInArrow`` bodies and what they cache per process.

This is what runs in every Spark Python worker, so it imports only the standard
library, pyarrow and the fruitlens core (never pyspark at module level, never the other
``fruitlens.spark`` modules): the driver-side modules build DataFrames around these
functions, the workers only call them.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from .. import _native, _reading
from .._core import Embedder
from .._pca import PCAStats

__all__ = [
    "FAULT_ENV",
    "StatsParam",
    "StatsValue",
    "embed_batches",
]

#: Fault injection for tests (never set in production): ``STAGE:N[:always]`` makes the
#: Python worker running partition 0 exit abruptly (``os._exit``) before emitting its
#: N-th output batch (0-based) of ``STAGE`` (``featurize`` or ``transform``) — on the
#: first task attempt only, unless ``:always``. Spark then retries the task.
FAULT_ENV = "FRUITLENS_TEST_FAULT"

#: Files above this size are not read (a ``too_many_bytes`` error), as ``fruitlens.io``.
_MAX_FILE_BYTES = 256 * 1024 * 1024

_FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=True))

#: Image bytes embedded per slice of a batch, at most (and at least one image): with
#: 12-Mpx photos a 256-row batch would hold about a gigabyte of bytes.
MAX_SLICE_BYTES = 16 << 20
#: Files read at once (threads) when ``featurize`` fetches them itself.
_FETCH_GROUP = 16

#: One Embedder per Python process, by (model path, threads, batch size, resize).
_EMBEDDERS: dict[tuple[str, int, int, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


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


def _get_embedder(
    ref: tuple[str, str], threads: int, batch_size: int, resize: str = "exact"
) -> Embedder:
    """The cached Embedder of this process (created on first use)."""
    path = _executor_model_path(ref)
    key = (path, threads, batch_size, resize)
    emb = _EMBEDDERS.get(key)
    if emb is None:
        with _EMBEDDERS_LOCK:
            emb = _EMBEDDERS.get(key)
            if emb is None:
                emb = Embedder(path, threads=threads, batch_size=batch_size, resize=resize)
                _EMBEDDERS[key] = emb
    return emb


def _embedder_soon(
    ref: tuple[str, str], threads: int, batch_size: int, resize: str
) -> concurrent.futures.Future[Embedder]:
    """:func:`_get_embedder`; the first time in this process, in a thread, so that the
    ONNX Runtime session is made while the first input batch is read (cold start)."""
    path = _executor_model_path(ref)
    done: concurrent.futures.Future[Embedder] = concurrent.futures.Future()
    if (path, threads, batch_size, resize) in _EMBEDDERS:
        done.set_result(_get_embedder(("path", path), threads, batch_size, resize))
        return done

    def make() -> None:
        try:
            done.set_result(_get_embedder(("path", path), threads, batch_size, resize))
        except BaseException as exc:  # raised in the task by result()
            done.set_exception(exc)

    threading.Thread(target=make, name="fruitlens-model", daemon=True).start()
    return done


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


def _value_sizes(array: pa.Array) -> list[int] | None:
    """The byte length of each value of a binary array (0 for nulls), from its offsets
    (no ``pyarrow.compute``: it costs a Python worker ~0.4 s to import); None for
    other types."""
    if pa.types.is_large_binary(array.type):
        offset_type = pa.int64()
    elif pa.types.is_binary(array.type):
        offset_type = pa.int32()
    else:
        return None
    offsets = pa.Array.from_buffers(
        offset_type, len(array) + 1, [None, array.buffers()[1]], offset=array.offset
    ).to_pylist()
    return [end - start for start, end in zip(offsets, offsets[1:])]


def _coalesce(first: pa.Array, second: pa.Array) -> pa.Array:
    """``first`` where not null, else ``second`` (two string arrays)."""
    return pa.array(
        [a if a is not None else b for a, b in zip(first.to_pylist(), second.to_pylist())],
        pa.string(),
    )


def _slices(
    batch: pa.RecordBatch, rows: int, sizes: list[int] | None = None
) -> Iterator[pa.RecordBatch]:
    """``batch`` in slices of at most ``rows`` rows and (when the byte ``sizes`` of its
    rows are given) :data:`MAX_SLICE_BYTES`, at least one row each."""
    if sizes is None or batch.num_rows <= 1:
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows) if batch.num_rows > rows else batch
        return
    ends = _byte_ends(sizes, rows)
    start = 0
    for end in ends:
        yield batch.slice(start, end - start)
        start = end


def _byte_ends(sizes: list[int], rows: int) -> list[int]:
    """Where the slices of :func:`_slices` end (exclusive row indices)."""
    ends: list[int] = []
    start = total = 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= rows or total + size > MAX_SLICE_BYTES):
            ends.append(i)
            start, total = i, 0
        total += size
    if sizes:
        ends.append(len(sizes))
    return ends


def _columns(batch: pa.RecordBatch, names: list[str]) -> list[pa.Array]:
    return [batch.column(_field_index(batch.schema, name)) for name in names]


# --------------------------------------------------------------------------------------
# Reading files in tasks
# --------------------------------------------------------------------------------------


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


def _fetched_slices(
    batch: pa.RecordBatch, path_col: str, rows: int
) -> Iterator[tuple[pa.RecordBatch, pa.Array, pa.Array]]:
    """``(slice, content, read errors)``: the files of ``batch`` read a group at a time,
    a slice ending at ``rows`` rows or once it holds :data:`MAX_SLICE_BYTES` of bytes,
    so that memory stays bounded whatever the file sizes."""
    start, n = 0, batch.num_rows
    while start < n or (start == 0 and n == 0):
        contents: list[pa.Array] = []
        errors: list[pa.Array] = []
        end, total = start, 0
        while end < n and end - start < rows and total < MAX_SLICE_BYTES:
            done = end - start
            group = _FETCH_GROUP
            if done and total:  # as many more as should fit, by the mean size so far
                group = max(group, int((MAX_SLICE_BYTES - total) * done / total))
            group = min(group, n - end, rows - done)
            content, error = _fetch_content(batch.slice(end, group), path_col)
            contents.append(content)
            errors.append(error)
            total += sum(_value_sizes(content) or [0])
            end += group
        if n == 0:
            return
        yield (
            batch.slice(start, end - start),
            _concat(contents, pa.binary()),
            _concat(errors, pa.string()),
        )
        start = end


def _concat(arrays: list[pa.Array], type_: pa.DataType) -> pa.Array:
    if len(arrays) == 1:
        return arrays[0]
    return pa.chunked_array(arrays, type_).combine_chunks()


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
    embedder: Embedder, content: pa.Array, read_errors: pa.Array | None
) -> tuple[pa.Array, pa.Array]:
    """``(features, errors)`` of one slice's bytes (read errors win)."""
    out = embedder.embed(content)
    errors = out.column(1)
    if read_errors is not None and read_errors.null_count < len(read_errors):
        errors = _coalesce(read_errors, errors)
    return out.column(0), errors


def _input_slices(
    batches: Iterable[pa.RecordBatch], content_col: str, fetch_from: str | None, rows: int
) -> Iterator[tuple[pa.RecordBatch, pa.Array, pa.Array | None]]:
    """``(slice, content, read errors)`` of the input: ``content_col``, or the files
    named in ``fetch_from`` read here, next to the decoder; bounded in rows and bytes."""
    for big in batches:
        if fetch_from is not None:
            yield from _fetched_slices(big, fetch_from, rows)
            continue
        column = big.column(_field_index(big.schema, content_col))
        sizes = _value_sizes(column) if big.num_rows > 1 else None
        for batch in _slices(big, rows, sizes):
            yield batch, batch.column(_field_index(batch.schema, content_col)), None


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
    resize: str = "exact",
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` body of ``featurize`` (runs on executors)."""
    embedder = _embedder_soon(ref, _task_threads(threads), batch_size, resize)
    stats: PCAStats | None = None
    # Bound memory (decoded tensors) whatever spark.sql.execution.arrow.maxRecordsPerBatch is.
    chunk_rows = max(batch_size * 8, 256)
    for index, (batch, content, read_errors) in enumerate(
        _input_slices(batches, content_col, fetch_from, chunk_rows)
    ):
        _fault_point("featurize", index)
        features, errors = _embed_one(embedder.result(), content, read_errors)
        if stats_acc is not None and len(features) > features.null_count:
            if stats is None:
                stats = PCAStats(features.type.list_size)
            stats.update(features)
        arrays = [*_columns(batch, keep), _as_float_list(features), errors]
        yield pa.RecordBatch.from_arrays(arrays, names=[*keep, output_col, error_col])
    if stats_acc is not None:  # the whole partition went through: report it once
        blob = stats.to_bytes() if stats is not None else None
        stats_acc.add(StatsValue({_partition_id()}, blob))
