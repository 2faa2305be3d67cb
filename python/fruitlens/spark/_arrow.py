"""Arrow I/O between Spark and ``fruitlens.io``: who reads object stores, and results
streamed back to the driver for an atomic write.

For object stores without Hadoop jars (a ``pip install pyspark``), the driver lists
(``fruitlens.io``), the tasks fetch the bytes in ``mapInArrow``, and results come back
to the driver as Arrow batches for an atomic Parquet write.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from .. import io as fl_io
from .._fs import spark_can_read, use_arrow_io
from ._task_pca import ipc_batches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["collect_arrow_batches", "spark_can_read", "use_arrow_io", "write_parquet_arrow"]


def collect_arrow_batches(df: DataFrame) -> Iterator[pa.RecordBatch]:
    """Stream a DataFrame to the driver as Arrow batches, one partition at a time.

    Each partition's batches are serialised (Arrow IPC) by ``mapInArrow`` and brought
    back with ``toLocalIterator``, so the driver holds one partition at a time (unlike
    ``toArrow``/``toPandas``, which hold the whole result).
    """
    from pyspark.sql import types as T  # optional dependency

    blobs = df.mapInArrow(ipc_batches, T.StructType([T.StructField("ipc", T.BinaryType(), False)]))
    for row in blobs.toLocalIterator(prefetchPartitions=True):
        yield from pa.ipc.open_stream(row["ipc"])


def write_parquet_arrow(df: DataFrame, uri: str, *, overwrite: bool = False) -> list[str]:
    """Write ``df`` as Parquet at ``uri`` through ``fruitlens.io`` (atomic publish).

    See :func:`fruitlens.io.write_parquet_atomic` for the exact guarantee.
    """
    schema = None
    try:
        from pyspark.sql.pandas.types import to_arrow_schema  # optional dependency

        schema = to_arrow_schema(df.schema)
    except Exception:  # an empty result then has no part file, only _SUCCESS
        pass
    return fl_io.write_parquet_atomic(
        collect_arrow_batches(df), uri, schema=schema, overwrite=overwrite
    )
