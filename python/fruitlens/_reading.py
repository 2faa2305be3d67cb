"""Reading the bytes of listed files and objects, concurrently, one error per row:
what the executors run (:func:`fetch_batches` inside ``mapInArrow``). Imports only
pyarrow and the small fruitlens helpers (no commit protocol, no Spark)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs

from ._common import first_line
from ._files import read_local
from ._fs import filesystem_for

__all__ = ["fetch_batches", "read_bytes", "read_many"]

#: Content above this many bytes per output batch is split into more batches, so that
#: a ``binary`` column's 32-bit offsets never overflow.
_MAX_BATCH_BYTES = 1 << 30
_DEFAULT_MAX_BYTES = 256 * 1024 * 1024


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
        return None, f"unreadable: {uri}: {first_line(exc)}"


def read_many(
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
    return [content for content, _ in read_many(list(uris), max_workers, max_bytes)]


def _batch_ends(results: list[tuple[bytes | None, str | None]]) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive slices of ``results`` whose content stays under
    :data:`_MAX_BATCH_BYTES` (at least one row each; one empty slice for no rows)."""
    start = 0
    while start < len(results) or (start == 0 and not results):
        end, total = start, 0
        while end < len(results):
            size = len(results[end][0] or b"")
            if end > start and total + size > _MAX_BATCH_BYTES:
                break
            total += size
            end += 1
        yield start, end
        if not results:
            break
        start = end


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
        results = read_many(paths, max_workers, max_bytes)
        names = [*batch.schema.names, content_col, error_col]
        for start, end in _batch_ends(results):
            part = results[start:end]
            columns = list(batch.slice(start, end - start).columns)
            columns.append(pa.array([c for c, _ in part], type=pa.binary()))
            columns.append(pa.array([e for _, e in part], type=pa.string()))
            yield pa.RecordBatch.from_arrays(columns, names=names)
