"""The native engine's featurize pass (``fruitlens run --engine native``): list the
images on this machine, read their bytes ahead with threads, embed them on one worker
thread per core (each with its own single-threaded :class:`fruitlens.Embedder`: the GIL
is released while it decodes and infers, so reading, decoding and inference overlap),
and gather the PCA statistics on the way.

The rows (``path, label, features, error, length, modificationTime``: the file's size
and modification time from the listing, kept as the output's lineage) are spilled,
chunk by chunk, to an Arrow IPC file in a temporary folder, so that memory stays bounded
whatever the number of images;
:func:`featurize` returns where they are, in listing order.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from . import _reading, _uri
from ._common import IMAGE_EXTENSIONS
from ._core import Embedder
from ._errors import FruitlensError
from ._lineage import LENGTH_TYPE, mtime_array
from ._listing import ImageRef, find_images
from ._pca import PCAStats
from ._progress import ProgressLine

__all__ = [
    "Featurized",
    "NativeProgress",
    "featurize",
    "list_input",
    "rows_per_part",
    "worker_layout",
]

#: Names of the spilled rows' columns.
ROW_NAMES = ["path", "label", "features", "error", "length", "modificationTime"]
#: A chunk (what a worker takes at a time) holds at most a batch of images and about
#: this many bytes of files, so that reading ahead stays bounded on large photos.
CHUNK_BYTES = 32 * 1024 * 1024


def list_input(uri: str) -> list[ImageRef]:
    """The images under ``uri`` as the Spark engine lists them (``fruitlens.spark.
    list_images``): same extensions and skips, local paths as ``file:`` URIs, dangling
    links and FIFOs listed (reading them gives their row's error)."""
    try:  # paths are literal: glob characters are part of names here
        refs = find_images(uri, IMAGE_EXTENSIONS)
    except FileNotFoundError as exc:
        raise FruitlensError(f"input path does not exist: {uri}") from exc
    except OSError as exc:
        raise FruitlensError(f"cannot list input {uri}: {exc}") from exc
    if _uri.scheme(uri) == "":  # the same path strings as Spark's: file: + the path
        # (listed paths are absolute and normalised already: _uri.to_uri's "file:" +
        # path, without parsing each again)
        refs = [r._replace(path="file:" + r.path) for r in refs]
    return refs


def worker_layout(threads: int | None) -> tuple[int, int]:
    """``(worker threads, native threads each)``: one single-threaded Embedder per core
    (measured faster than one Embedder with a thread per core; README Performance)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, int(threads or cores)), 1


def rows_per_part(images: int, partitions: int | None, threads: int | None) -> int:
    """Rows per Parquet part of a native run's ``images`` rows: ``partitions`` parts,
    else one per worker."""
    parts = partitions or worker_layout(threads)[0]
    return max(1, -(-images // parts))


class NativeProgress(ProgressLine):
    """``[featurize 12s] 1200/2624 images, 205 images/s`` on stderr while the featurize
    pass runs (:class:`fruitlens._progress.ProgressLine`)."""

    def __init__(self, total: int, *, enabled: bool, stream: TextIO | None = None) -> None:
        super().__init__(stream=stream, enabled=enabled)
        self.total = total
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n  # one writer at a time (under the pass's lock)

    def line(self) -> str:
        elapsed = time.monotonic() - self._phase_start
        rate = f", {self.done / elapsed:.0f} images/s" if elapsed > 0 and self.done else ""
        return f"[{self._phase} {elapsed:5.0f}s] {self.done}/{self.total} images{rate}"

    def _line(self) -> str | None:
        return self.line() if self._phase == "featurize" else None


@dataclass
class Featurized:
    """What the featurize pass counted, and where its rows are."""

    spill: str  # an Arrow IPC file of ROW_NAMES
    order: list[int]  # the IPC batch index of each chunk, in listing order
    images: int = 0
    errors: int = 0
    features: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    stats: PCAStats | None = None

    def count(self, batch: pa.RecordBatch) -> None:
        """Count the rows of ``batch`` (:data:`ROW_NAMES`): images, errors by kind."""
        errors = [e for e in batch.column(3).to_pylist() if e is not None]
        self.images += batch.num_rows
        self.errors += len(errors)
        self.features += batch.num_rows - batch.column(2).null_count
        for error in errors:
            kind = error.split(":", 1)[0]
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            self.samples[kind] = min(self.samples.get(kind, error), error)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, in listing order (memory-mapped)."""
        with pa.memory_map(self.spill) as source:
            reader = pa.ipc.open_file(source)
            for index in self.order:
                yield reader.get_batch(index)


class _Feeder:
    """Hands the chunks to the workers in order, their bytes read ahead by ``pool``."""

    def __init__(self, chunks: list[list[ImageRef]], pool: Any, ahead: int, io_threads: int):
        self.chunks, self.pool, self.ahead, self.io_threads = chunks, pool, ahead, io_threads
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._next = self._submitted = 0
        self._pending: dict[int, concurrent.futures.Future[list[pa.RecordBatch]]] = {}

    def _read(self, refs: list[ImageRef]) -> list[pa.RecordBatch]:
        """``path, label, content, read_error`` of the chunk (``fruitlens.io``: the same
        reads, limits and errors as the Spark tasks'); split if over 1 GiB."""
        listing = pa.record_batch(
            [
                pa.array([r.path for r in refs], pa.string()),
                pa.array([r.label for r in refs], pa.string()),
                pa.array([r.size for r in refs], LENGTH_TYPE),
                mtime_array([r.modified for r in refs]),
            ],
            names=["path", "label", "length", "modificationTime"],
        )
        fetched = _reading.fetch_batches(
            [listing], "path", error_col="read_error", max_workers=self.io_threads
        )
        return list(fetched)

    def take(self) -> tuple[int, list[pa.RecordBatch]] | None:
        with self._lock:
            if self.stop.is_set() or self._next >= len(self.chunks):
                return None
            index = self._next
            self._next += 1
            while self._submitted < min(len(self.chunks), index + 1 + self.ahead):
                chunk = self.chunks[self._submitted]
                self._pending[self._submitted] = self.pool.submit(self._read, chunk)
                self._submitted += 1
            future = self._pending.pop(index)
        return index, future.result()


class _Pass:
    """One featurize pass: workers embed chunks and spill them; counts under a lock."""

    def __init__(self, out: Featurized, feeder: _Feeder, progress: NativeProgress) -> None:
        self.out, self.feeder, self.progress = out, feeder, progress
        self.lock = threading.Lock()
        self.writer: Any = None
        self.where: dict[int, int] = {}

    def embed_chunk(self, emb: Embedder, parts: list[pa.RecordBatch]) -> pa.RecordBatch:
        rows = []
        for part in parts:
            col = part.column
            result = emb.embed(col("content"))
            features, errors = result.column(0), result.column(1)
            read_errors = col("read_error")
            if read_errors.null_count < len(read_errors):  # read errors win
                errors = pc.coalesce(read_errors, errors)
            columns = [col("path"), col("label"), features, errors]
            columns += [col("length"), col("modificationTime")]
            rows.append(pa.RecordBatch.from_arrays(columns, ROW_NAMES))
        if len(rows) == 1:
            return rows[0]
        return pa.Table.from_batches(rows).combine_chunks().to_batches()[0]

    def work(self, emb: Embedder) -> PCAStats | None:
        stats = None
        while (item := self.feeder.take()) is not None:
            index, parts = item
            batch = self.embed_chunk(emb, parts)
            features = batch.column(2)
            if len(features) > features.null_count:
                stats = stats if stats is not None else PCAStats(features.type.list_size)
                stats.update(features)
            self.record(index, batch)
        return stats

    def record(self, index: int, batch: pa.RecordBatch) -> None:
        with self.lock:
            if self.writer is None:
                self.writer = pa.ipc.new_file(self.out.spill, batch.schema)
            self.writer.write_batch(batch)
            self.where[index] = len(self.where)
            self.out.count(batch)
            self.progress.add(batch.num_rows)


def featurize(
    refs: list[ImageRef],
    spill: str,
    *,
    model: str,
    batch_size: int,
    threads: int | None,
    resize: str,
    progress: NativeProgress,
) -> Featurized:
    """Embed ``refs`` into the Arrow IPC file ``spill``; see the module doc."""
    workers, each = worker_layout(threads)
    chunks = _chunks(refs, max(batch_size, 16))
    remote = bool(refs) and not _uri.is_local(refs[0].path)
    out = Featurized(spill, [])
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="fruitlens-read") as io:
        feeder = _Feeder(chunks, io, ahead=2 * workers, io_threads=16 if remote else 1)
        one_pass = _Pass(out, feeder, progress)
        try:
            _run_workers(one_pass, workers, each, model, batch_size, resize)
        finally:
            feeder.stop.set()
            if one_pass.writer is not None:
                one_pass.writer.close()
    out.order = [one_pass.where[i] for i in range(len(chunks))]
    return out


def _chunks(refs: list[ImageRef], rows: int) -> list[list[ImageRef]]:
    """``refs`` in order, cut every ``rows`` images or :data:`CHUNK_BYTES` bytes."""
    chunks: list[list[ImageRef]] = []
    current: list[ImageRef] = []
    size = 0
    for ref in refs:
        if current and (len(current) >= rows or size + ref.size > CHUNK_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(ref)
        size += ref.size
    if current:
        chunks.append(current)
    return chunks


def _run_workers(
    one_pass: _Pass, workers: int, each: int, model: str, batch_size: int, resize: str
) -> None:
    """Run ``workers`` threads of :meth:`_Pass.work`, merge their statistics; the first
    failure stops the others and is raised."""

    def work() -> PCAStats | None:
        try:
            emb = Embedder(model, threads=each, batch_size=batch_size, resize=resize)
            return one_pass.work(emb)
        except BaseException:
            one_pass.feeder.stop.set()
            raise

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fruitlens-embed") as ex:
        futures = [ex.submit(work) for _ in range(workers)]
        try:
            for future in futures:
                stats = future.result()
                if stats is not None:
                    merged = one_pass.out.stats
                    one_pass.out.stats = stats if merged is None else merged.merge(stats)
        except BaseException:
            one_pass.feeder.stop.set()
            raise
