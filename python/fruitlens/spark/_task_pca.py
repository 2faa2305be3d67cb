"""Executor-side task code besides ``featurize``: the ``mapInArrow`` bodies of
``pca_stats``, ``transform_pca`` (and the tree-reduction step), ``collect_arrow_batches``
and the reads of ``read_images``' listings. Like :mod:`fruitlens.spark._tasks`, it
imports only the standard library, pyarrow and the fruitlens core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from .. import _reading
from .._pca import PCA, PCAStats
from ._tasks import _MAX_FILE_BYTES, _as_float_list, _columns, _fault_point, _field_index

__all__ = [
    "fetch_batches",
    "ipc_batches",
    "merge_stats_batches",
    "merge_stats_bytes",
    "project_batches",
    "read_content",
    "stats_batches",
]

#: Fitted PCA models deserialised in this process, by the digest of their JSON.
_PCA_MODELS: dict[str, PCA] = {}


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


def merge_stats_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body merging rows of serialised statistics (column 0) into one
    (the reduction step where there is no RDD ``treeReduce``: Spark Connect)."""
    merged: PCAStats | None = None
    for batch in batches:
        for blob in batch.column(0).to_pylist():
            part = PCAStats.from_bytes(blob)
            merged = part if merged is None else merged.merge(part)
    if merged is not None:
        yield pa.RecordBatch.from_arrays([pa.array([merged.to_bytes()], pa.binary())], ["stats"])


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


def ipc_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of ``collect_arrow_batches``: each batch as one row of
    Arrow IPC bytes (column ``ipc``)."""
    for batch in batches:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield pa.record_batch({"ipc": pa.array([sink.getvalue().to_pybytes()], pa.binary())})


def fetch_batches(
    batches: Iterable[pa.RecordBatch], *, error_col: str, max_workers: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of a listing: adds ``content`` and ``error_col`` (the bytes
    of each row's ``path``, read here; see :func:`fruitlens.io.fetch_batches`)."""
    return _reading.fetch_batches(batches, "path", error_col=error_col, max_workers=max_workers)


def read_content(uri: str | None) -> tuple[bytes | None, str | None]:
    """``(bytes, None)`` of one file or object, or ``(None, "unreadable: ...")``: the UDF
    behind ``read_images``' lazy ``content`` and ``_read_error`` columns."""
    return _reading.read_many([uri], 1, _MAX_FILE_BYTES)[0]
