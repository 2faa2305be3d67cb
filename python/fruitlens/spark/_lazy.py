"""Listings as DataFrames (driver side): the rows of ``fruitlens.io`` listings split into
equal partitions without a Python worker, and the lazy ``content`` column of
:func:`fruitlens.spark.read_images` (bytes read by the tasks, only when asked for).

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ._connect import default_parallelism
from ._paths import spark_major
from ._task_pca import read_content

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "FETCH_FROM_KEY",
    "PARTITIONS_KEY",
    "TASKS_PER_CORE",
    "default_partitions",
    "fetch_source",
    "is_lazy",
    "known_partitions",
    "listing_frame",
    "listing_schema",
    "with_lazy_content",
    "with_partitions_hint",
]

#: Column metadata of :func:`read_images`' lazy ``content``: the column of paths the
#: bytes are read from. ``featurize`` reads that column in its own tasks instead.
FETCH_FROM_KEY = "fruitlens.fetch_from"
#: Column metadata of :func:`fruitlens.spark.read_images`' ``path``: its partitions, so
#: that ``featurize`` need not plan the query (a broadcast job) to learn it.
PARTITIONS_KEY = "fruitlens.partitions"
#: Default partitions per core of :func:`fruitlens.spark.read_images` (as ``fruitlens
#: run``): two keep a core busy while the other's task starts or ends.
TASKS_PER_CORE = 2
_ROW = "_fruitlens_row"


def listing_schema() -> StructType:
    """``path``, ``modificationTime``, ``length``, ``label``: a listing without bytes."""
    from pyspark.sql import types as T  # optional dependency

    return T.StructType(
        [
            T.StructField("path", T.StringType(), False),
            T.StructField("modificationTime", T.TimestampType(), True),
            T.StructField("length", T.LongType(), True),
            T.StructField("label", T.StringType(), True),
        ]
    )


def default_partitions(spark: SparkSession, rows: int) -> int:
    """:data:`TASKS_PER_CORE` per core of the session, at most one per row."""
    cores = default_parallelism(spark)
    return max(1, min(rows, TASKS_PER_CORE * cores))


def _arrow_listing(refs: Sequence[Any], row_ids: bool) -> pa.Table:
    columns = {
        "path": pa.array([r.path for r in refs], pa.string()),
        "modificationTime": pa.array([r.modified for r in refs], pa.timestamp("us", tz="UTC")),
        "length": pa.array([r.size for r in refs], pa.int64()),
        "label": pa.array([r.label for r in refs], pa.string()),
    }
    if row_ids:
        columns = {_ROW: pa.array(range(len(refs)), pa.int64()), **columns}
    return pa.table(columns)


def _local_rows(spark: SparkSession, refs: Sequence[Any], row_ids: bool) -> DataFrame:
    """The listing as a local relation (JVM only: its scan needs no Python worker)."""
    from pyspark.sql import types as T  # optional dependency

    schema = listing_schema()
    if row_ids:
        schema = T.StructType([T.StructField(_ROW, T.LongType(), False), *schema.fields])
    if spark_major(spark) >= 4:  # Arrow in, no pickling
        return spark.createDataFrame(_arrow_listing(refs, row_ids), schema)
    rows = [(r.path, r.modified, r.size, r.label) for r in refs]
    if row_ids:
        rows = [(i, *row) for i, row in enumerate(rows)]
    return spark.createDataFrame(rows, schema)


def listing_frame(
    spark: SparkSession, refs: Sequence[Any], partitions: int | None, local_relation: bool
) -> DataFrame:
    """A DataFrame of ``fruitlens.io.ImageRef`` s (:func:`listing_schema`).

    ``local_relation`` (Spark 4+): one local relation, split when it runs into
    ``spark.sql.leafNodeDefaultParallelism`` partitions. Otherwise exactly
    ``partitions`` partitions of equal row counts (default: about 512 rows each, at
    least one per core), still without a Python worker: a ``range`` of row numbers in
    that many partitions joined with the broadcast listing.
    """
    if not refs or (local_relation and spark_major(spark) >= 4):
        return _local_rows(spark, refs, False)
    from pyspark.sql import functions as F  # optional dependency

    wanted = max(default_parallelism(spark), -(-len(refs) // 512))
    n_parts = partitions or max(1, min(len(refs), wanted))
    ids = spark.range(0, len(refs), 1, n_parts).withColumnRenamed("id", _ROW)
    listing = F.broadcast(_local_rows(spark, refs, True))
    return ids.join(listing, _ROW).select(*listing_schema().names)


def with_partitions_hint(df: DataFrame, partitions: int) -> DataFrame:
    """``df`` with its partition count in ``path``'s metadata (:func:`known_partitions`)."""
    return df.withMetadata("path", {**df.schema["path"].metadata, PARTITIONS_KEY: partitions})


def known_partitions(df: DataFrame) -> int | None:
    """The partition count :func:`with_partitions_hint` recorded in ``df``'s metadata (it
    follows selections and filters; a repartition keeps it, so it is a hint), or None."""
    for f in df.schema.fields:
        value = f.metadata.get(PARTITIONS_KEY)
        if isinstance(value, int):
            return value
    return None


def with_lazy_content(df: DataFrame, error_col: str, path_col: str = "path") -> DataFrame:
    """``df`` plus ``content`` and ``error_col``: the bytes of ``path_col`` (null if
    unreadable) and why not (``"unreadable: ..."``), read by a task only if a query uses
    them (column pruning drops them otherwise). Their metadata names ``path_col``, so
    that ``featurize`` reads the files itself instead, next to the decoder."""
    from pyspark.sql import functions as F  # optional dependency
    from pyspark.sql import types as T

    result = T.StructType(
        [T.StructField("content", T.BinaryType()), T.StructField("error", T.StringType())]
    )
    meta = {FETCH_FROM_KEY: path_col}
    fetched = "_fruitlens_fetched"
    return df.select(
        "*", F.udf(read_content, result, useArrow=False)(F.col(path_col)).alias(fetched)
    ).select(
        *df.columns,
        F.col(f"{fetched}.content").alias("content", metadata=meta),
        F.col(f"{fetched}.error").alias(error_col, metadata=meta),
    )


def fetch_source(df: DataFrame, content_col: str) -> str | None:
    """The column ``featurize`` should read files from instead of ``content_col``: the
    ``path_col`` of a :func:`with_lazy_content` column, if ``df`` still has it."""
    if content_col not in df.columns:
        return None
    source = df.schema[content_col].metadata.get(FETCH_FROM_KEY)
    return source if isinstance(source, str) and source in df.columns else None


def is_lazy(df: DataFrame, column: str) -> bool:
    """Whether ``column`` of ``df`` is one of :func:`with_lazy_content`'s."""
    return column in df.columns and FETCH_FROM_KEY in df.schema[column].metadata
