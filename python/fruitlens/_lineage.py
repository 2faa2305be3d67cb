"""The rows ``fruitlens run`` writes (:data:`OUTPUT_SCHEMA`, both engines) and their
lineage: each row's source ``length`` and ``modificationTime`` as listed, and what
``fruitlens run --incremental`` does with them (:mod:`fruitlens._incremental`):
:func:`diff` a new listing against an output's rows, :func:`merge` kept and new rows
back into listing order. Pure functions on Arrow data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from ._listing import ImageRef

__all__ = [
    "FLOAT_LIST",
    "INDEX_COLUMNS",
    "LENGTH_TYPE",
    "LINEAGE",
    "MTIME_TYPE",
    "OUTPUT_COLUMNS",
    "OUTPUT_SCHEMA",
    "RETRIED_ERROR",
    "Diff",
    "Positioned",
    "diff",
    "from_micros",
    "gather",
    "listing_table",
    "merge",
    "mtime_array",
    "to_micros",
]

#: Types of ``length`` and ``modificationTime`` (as Spark's ``binaryFile`` lists them).
LENGTH_TYPE = pa.int64()
MTIME_TYPE = pa.timestamp("us", tz="UTC")
FLOAT_LIST = pa.list_(pa.field("element", pa.float32(), nullable=True))
#: The Arrow schema of the Parquet that ``fruitlens run`` writes (both engines).
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("features", FLOAT_LIST),
        pa.field("pca", FLOAT_LIST),
        pa.field("error", pa.string()),
        # lineage: the source file's size (bytes) and modification time, as listed
        # (``fruitlens run --incremental`` diffs a new listing against them)
        pa.field("length", LENGTH_TYPE),
        pa.field("modificationTime", MTIME_TYPE),
    ]
)
#: Its column names, in order.
OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)


def to_micros(t: datetime | None) -> int | None:
    """A time-zone-aware time as exact microseconds since the epoch (None stays None)."""
    return None if t is None else (t - _EPOCH) // _MICRO


def from_micros(micros: int | None) -> datetime | None:
    """The UTC time of :func:`to_micros`' microseconds (None stays None)."""
    return None if micros is None else _EPOCH + micros * _MICRO


def mtime_array(times: list[datetime | None]) -> pa.Array:
    """Modification times as ``MTIME_TYPE`` (exact microseconds; converted here because
    pyarrow imports pandas to convert time-zone-aware datetimes, 0.2 s)."""
    return pa.array([to_micros(t) for t in times], pa.int64()).cast(MTIME_TYPE)


#: The output's lineage columns: the source file's size and modification time.
LINEAGE = ("length", "modificationTime")
#: Columns of the old output read to diff against (its "index").
INDEX_COLUMNS = ["path", *LINEAGE, "error"]
#: Errors of this kind are retried (transient I/O); other failed rows are kept.
RETRIED_ERROR = "unreadable:"


# --------------------------------------------------------------------------------------
# The diff and the merge (pure)
# --------------------------------------------------------------------------------------


def listing_table(refs: list[ImageRef]) -> pa.Table:
    """``path, length, modificationTime`` of a listing, in its order."""
    columns = [
        pa.array([r.path for r in refs], pa.string()),
        pa.array([r.size for r in refs], LENGTH_TYPE),
        mtime_array([r.modified for r in refs]),
    ]  # (not pa.table({...}): it imports pandas, 0.2 s)
    return pa.Table.from_arrays(columns, names=["path", "length", "modificationTime"])


@dataclass
class Diff:
    """What an incremental run does with each listed image and each old row."""

    todo: list[int]  # listing positions to featurize: new, changed, retried (in order)
    kept: list[int]  # old row indices kept as they are
    kept_at: list[int]  # the listing position of each kept row
    new: int = 0
    changed: int = 0
    retried: int = 0
    deleted: int = 0

    @property
    def up_to_date(self) -> bool:
        """Nothing new, changed, deleted or to retry."""
        return not (self.todo or self.deleted)

    def counts(self, refit: bool) -> dict[str, Any]:
        """The summary's ``incremental`` object."""
        return {
            "new": self.new,
            "changed": self.changed,
            "deleted": self.deleted,
            "kept": len(self.kept),
            "retried": self.retried,
            "refit": refit,
        }


def diff(listing: pa.Table, old: pa.Table) -> Diff:
    """Diff a listing (``path, length, modificationTime``) against an output's index
    (``path, length, modificationTime, error``): an old row is kept when its path is
    listed with the same size and modification time and its error is not
    :data:`RETRIED_ERROR`; every other listed image is to featurize."""
    old_rows: dict[str, tuple[Any, Any, Any, int]] = {}
    columns = [old.column(c) for c in INDEX_COLUMNS]
    columns[2] = columns[2].cast(MTIME_TYPE).cast(pa.int64())  # microseconds
    for i, row in enumerate(zip(*(c.to_pylist() for c in columns))):
        path, length, mtime, error = row
        old_rows[path] = (length, mtime, error, i)
    out = Diff([], [], [])
    seen = 0
    paths = listing.column("path").to_pylist()
    lengths = listing.column("length").to_pylist()
    mtimes = listing.column("modificationTime").cast(MTIME_TYPE).cast(pa.int64()).to_pylist()
    for pos, (path, length, mtime) in enumerate(zip(paths, lengths, mtimes)):
        was = old_rows.get(path)
        if was is None:
            out.new += 1
            out.todo.append(pos)
            continue
        seen += 1
        old_length, old_mtime, error, index = was
        if (old_length, old_mtime) != (length, mtime):
            out.changed += 1
            out.todo.append(pos)
        elif error is not None and error.startswith(RETRIED_ERROR):
            out.retried += 1
            out.todo.append(pos)
        else:
            out.kept.append(index)
            out.kept_at.append(pos)
    out.deleted = len(old_rows) - seen
    return out


#: A stream of rows with the listing position of each: ``(batch, positions)``.
Positioned = Iterator[tuple[pa.RecordBatch, np.ndarray]]


def gather(data: pa.Table | pa.RecordBatch, rows: np.ndarray) -> list[pa.RecordBatch]:
    """The ``rows`` (indices) of ``data``, in that order, as record batches: zero-copy
    slices of its runs of consecutive rows when there are few (dropping a few rows of a
    part, or interleaving runs of new rows, copies no features), a copy (``take``)
    otherwise."""
    if len(rows) == 0:
        return []
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    if len(breaks) + 1 > max(4, len(rows) // 64):  # many short runs: one copy
        return table.take(pa.array(rows)).to_batches()
    out: list[pa.RecordBatch] = []
    for run in np.split(rows, breaks):
        out.extend(b for b in table.slice(int(run[0]), len(run)).to_batches() if len(b))
    return out


def merge(*streams: Positioned) -> Iterator[pa.RecordBatch]:
    """Merge streams of rows, each in ascending listing position, into one in listing
    order, holding a batch of each stream and the other streams' rows that fall in its
    span of positions (a stream out of order still gives every row once, only not in
    order). The batches share one schema; none is empty."""
    its = [iter(s) for s in streams]
    heads = [next(it, None) for it in its]
    held: list[tuple[pa.RecordBatch, np.ndarray]] = []
    while True:
        live = [i for i, h in enumerate(heads) if h is not None]
        if live:  # take the head that ends first
            i = min(live, key=lambda j: heads[j][1][-1])  # type: ignore[index]
            held.append(heads[i])  # type: ignore[arg-type]
            heads[i] = next(its[i], None)
        # rows before every stream's next position are final
        bound = min((h[1][0] for h in heads if h is not None), default=None)
        if not held:
            if bound is None:
                return
            continue
        table = pa.Table.from_batches([b for b, _ in held])
        positions = np.concatenate([p for _, p in held])
        ready = np.ones(len(positions), bool) if bound is None else positions < bound
        if ready.all() and (np.diff(positions) > 0).all():  # in order already: no copy
            yield from (b for b, _ in held)
            held = []
        elif ready.any():
            now = np.flatnonzero(ready)
            now = now[np.argsort(positions[now], kind="stable")]
            yield from gather(table, now)
            later = np.flatnonzero(~ready)
            rest = table.take(pa.array(later)).combine_chunks()
            held = [(b, positions[later]) for b in rest.to_batches()[:1] if len(b)]
