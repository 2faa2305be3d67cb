"""PCA on DataFrames (driver side): statistics gathered while embedding
(:class:`FeatureStats`), distributed statistics (:func:`pca_stats`), :func:`fit_pca` and
:func:`transform_pca`. The per-partition work is in :mod:`fruitlens.spark._tasks`.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

import functools
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING

from .._common import FEATURE_DIM, sha256_bytes
from .._errors import PCAError
from .._pca import PCA, PCAStats
from . import _connect
from ._lazy import known_partitions
from ._task_pca import merge_stats_batches, merge_stats_bytes, project_batches, stats_batches
from ._tasks import StatsParam, StatsValue

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "AUTO_STATS_PARTITIONS",
    "DRIVER_MERGE_PARTITIONS",
    "STATS_KEY",
    "FeatureStats",
    "auto_stats",
    "fit_pca",
    "gathered_stats",
    "pca_stats",
    "register_features",
    "transform_pca",
]

#: Up to this many partial PCA statistics (dim² / 2 float64 each) are merged on the
#: driver; more are merged by a tree reduction on the executors first.
DRIVER_MERGE_PARTITIONS = 8
#: ``featurize`` gathers PCA statistics by default for inputs of up to this many
#: partitions (each task sends dim² / 2 float64 to the driver: 6.5 MB at 1280).
AUTO_STATS_PARTITIONS = 128
#: Metadata key of a ``featurize`` output column whose statistics were gathered.
STATS_KEY = "fruitlens.stats"
#: The last featurize results with gathered statistics: token -> (DataFrame, stats).
_GATHERED: OrderedDict[str, tuple[DataFrame, FeatureStats | None]] = OrderedDict()
_GATHERED_MAX = 16


class FeatureStats:
    """PCA statistics gathered by ``featurize`` while it embeds (``stats=``).

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
        if _connect.is_connect(spark):
            raise PCAError(
                "FeatureStats needs a classic SparkSession (Spark accumulators); on Spark "
                "Connect, fit_pca(featurize(...)) caches the features and computes the "
                "statistics in a pass over the cache"
            )
        self._accumulator = spark.sparkContext.accumulator(StatsValue(), StatsParam())

    @property
    def partitions(self) -> int:
        """Partitions that have reported so far."""
        return len(self._accumulator.value.parts)

    @property
    def repeated(self) -> bool:
        """Whether a partition reported twice (Spark computed it again: the statistics
        are then unusable, and the images of that partition were embedded again)."""
        return bool(self._accumulator.value.duplicate)

    def get(self, *, rows: int) -> PCAStats | None:
        """The merged statistics if they cover exactly ``rows`` non-null rows, each
        partition once; else ``None``."""
        value = self._accumulator.value
        stats = None if value.duplicate else value.native()
        return stats if stats is not None and stats.count == rows else None


def auto_stats(df_in: DataFrame, *, limit: bool = True) -> FeatureStats | None:
    """A :class:`FeatureStats` for ``featurize`` to fill by default: None on Spark
    Connect (no accumulators) and, with ``limit``, above :data:`AUTO_STATS_PARTITIONS`."""
    if _connect.is_connect(df_in):
        return None
    try:
        jdf = df_in._jdf  # classic PySpark only
        # read_images' listing records its partitions: planning it would run a job
        parts = known_partitions(df_in) if limit else None
        if limit and parts is None:
            parts = jdf.rdd().getNumPartitions()
        if limit and parts is not None and parts > AUTO_STATS_PARTITIONS:
            return None
        return FeatureStats(df_in.sparkSession)
    except Exception:  # Spark Connect: no SparkContext, no accumulators
        return None


def register_features(out: DataFrame, column: str, collected: FeatureStats | None) -> DataFrame:
    """``out`` with a token in ``column``'s metadata that finds ``collected`` again
    (:func:`gathered_stats`; the metadata follows selections, filters and caching).
    ``collected`` None (Spark Connect): no statistics, but :func:`gathered_stats` still
    caches ``out`` so that the statistics pass is the only embedding pass."""
    token = uuid.uuid4().hex
    out = out.withMetadata(column, {**out.schema[column].metadata, STATS_KEY: token})
    _GATHERED[token] = (out, collected)
    while len(_GATHERED) > _GATHERED_MAX:
        _GATHERED.popitem(last=False)
    return out


def _is_cached(df: DataFrame) -> bool:
    level = df.storageLevel
    return bool(level.useMemory or level.useDisk)


def gathered_stats(df: DataFrame, input_col: str) -> PCAStats | None:
    """The statistics ``featurize`` gathered for ``df`` (its result, or a selection or
    null filter of it), if they can be trusted; else None.

    They are checked against the number of non-null rows of ``df``. When neither
    ``df`` nor the featurize result is cached and the featurize tasks have not run
    yet, the result is cached first (``MEMORY_AND_DISK``; ``unpersist()`` frees it),
    so that this count is the only embedding pass and the projection that follows
    reads the cache. If they already ran uncached, None: counting would embed again.
    """
    from pyspark import StorageLevel  # optional dependency
    from pyspark.sql import functions as F

    token = df.schema[input_col].metadata.get(STATS_KEY) if input_col in df.columns else None
    entry = _GATHERED.get(token) if isinstance(token, str) else None
    if entry is None:
        return None
    out, collected = entry
    value = collected._accumulator.value if collected is not None else None
    if value is not None and value.duplicate:
        return None
    if not (_is_cached(df) or _is_cached(out)):
        if value is not None and value.parts:
            return None
        if any(f.dataType.typeName() == "binary" for f in out.schema.fields):
            return None  # image bytes kept (keep_content): not worth caching
        out.persist(StorageLevel.MEMORY_AND_DISK)
    if collected is None:  # Spark Connect: the caller's pass reads the cache
        return None
    rows = df.where(F.col(input_col).isNotNull()).count()
    return collected.get(rows=rows)


def _collect_binary(df: DataFrame) -> list[bytes]:
    """The values of a one-column binary DataFrame, on the driver.

    Spark 4's ``toArrow`` moves them as Arrow buffers; ``collect`` pickles each row,
    which costs about 0.1 s more for two 6.5 MB PCA partials.
    """
    if hasattr(df, "toArrow"):
        return [bytes(v) for v in df.toArrow().column(0).to_pylist()]
    return [bytes(row[0]) for row in df.collect()]


def _merge_on_driver(per_partition: DataFrame, no_rows: PCAError) -> PCAStats:
    """A few partial results: straight to the driver, merged natively there."""
    merged: PCAStats | None = None
    for blob in _collect_binary(per_partition):
        part = PCAStats.from_bytes(blob)
        merged = part if merged is None else merged.merge(part)
    if merged is None:
        raise no_rows
    return merged


def _merge_by_tree(per_partition: DataFrame, no_rows: PCAError) -> PCAStats:
    """Many partial results: merged by a tree reduction on the executors first."""
    partials = per_partition.rdd.map(lambda row: bytes(row[0]))
    try:
        return PCAStats.from_bytes(partials.treeReduce(merge_stats_bytes, depth=2))
    except ValueError as exc:  # "Cannot reduce empty RDD"
        if "empty" in str(exc).lower():
            raise no_rows from exc
        raise


def pca_stats(df: DataFrame, *, input_col: str = "features", dim: int = FEATURE_DIM) -> PCAStats:
    """Merged native PCA statistics (n, Σx, XᵀX) of ``input_col`` (null rows skipped).

    One partial result per partition is computed on the executors and they are
    merged with a tree reduction (Spark Connect: a shuffle into a few merge tasks);
    the partitions are first coalesced to the default parallelism so that few
    (dim x dim) partial results travel.
    (``fruitlens.pca_stats`` is the same for local rows; this was ``pca_statistics``.)
    """
    from pyspark.sql import types as T  # optional dependency

    if input_col not in df.columns:
        raise ValueError(f"PCA: no column {input_col!r} in {df.columns}")
    source = df.select(input_col)
    run = functools.partial(stats_batches, input_col=input_col, dim=dim)
    schema = T.StructType([T.StructField("stats", T.BinaryType(), False)])
    no_rows = PCAError(
        f"cannot fit PCA: column {input_col!r} has no non-null rows "
        "(did every image fail? look at the error column)"
    )
    target = _connect.default_parallelism(df.sparkSession)
    n_parts = _connect.num_partitions(source)  # None on Spark Connect (no RDD)
    if n_parts is None or n_parts > target:
        source = source.coalesce(target)  # a no-op if it has fewer
    per_partition = source.mapInArrow(run, schema)
    if min(n_parts or target, target) <= DRIVER_MERGE_PARTITIONS:
        return _merge_on_driver(per_partition, no_rows)
    if n_parts is None:  # Spark Connect: no treeReduce; a shuffle into a few merges
        merged = per_partition.repartition(DRIVER_MERGE_PARTITIONS)
        return _merge_on_driver(merged.mapInArrow(merge_stats_batches, schema), no_rows)
    return _merge_by_tree(per_partition, no_rows)


def fit_pca(
    df: DataFrame,
    *,
    k: int | float = 0.95,
    input_col: str = "features",
    dim: int = FEATURE_DIM,
) -> PCA:
    """Fit a centred PCA on ``input_col`` with distributed native statistics.

    ``k`` is a number of components (int) or the explained-variance fraction to
    reach (float in (0, 1]; default 0.95). Null rows (failed images) are skipped.

    Given the result of ``featurize`` (or a selection or null filter of it), it uses
    the statistics gathered while embedding (see :func:`gathered_stats`: an uncached
    result is cached, so the images are embedded once for the fit and the projection
    that follows); else :func:`pca_stats` computes them in a pass over ``df``.
    """
    pca = PCA(k)
    stats = gathered_stats(df, input_col)
    if stats is None:
        stats = pca_stats(df, input_col=input_col, dim=dim)
    return pca.fit_stats(stats)


def transform_pca(
    df: DataFrame,
    pca: PCA | str,
    *,
    input_col: str = "features",
    output_col: str = "pca",
) -> DataFrame:
    """Add ``output_col`` (``array<float>``, k): the PCA scores of ``input_col``.

    ``pca`` is a fitted :class:`fruitlens.PCA` or its JSON. Rows whose input is null
    (failed images) are kept, with a null ``output_col``.
    """
    from pyspark.sql import types as T  # optional dependency

    if input_col not in df.columns:
        raise ValueError(f"PCA: no column {input_col!r} in {df.columns}")
    text = pca if isinstance(pca, str) else pca.to_json()
    fields = [f for f in df.schema.fields if f.name != output_col]
    schema = T.StructType(
        [*fields, T.StructField(output_col, T.ArrayType(T.FloatType(), True), True)]
    )
    run = functools.partial(
        project_batches,
        text=text,
        digest=sha256_bytes(text.encode()),
        input_col=input_col,
        keep=[f.name for f in fields],
        output_col=output_col,
    )
    return df.mapInArrow(run, schema)
