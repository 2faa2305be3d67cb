"""What differs between a classic SparkSession and a Spark Connect one (driver side).

Spark Connect sessions (``SparkSession.builder.remote(...)``, ``SPARK_REMOTE``,
``pyspark-client``, Databricks shared/serverless compute) have no ``sparkContext``: no
``addFile``, accumulators, ``statusTracker``, RDDs or JVM access. Every place fruitlens
needs one of those asks this module instead, which answers from the ``SparkContext`` on
a classic session and from what Connect offers otherwise:

* :func:`default_parallelism`: ``sc.defaultParallelism``, or the partitions of a
  ``spark.range`` (the same default) on Connect, asked once per session;
* :func:`ship_file`: ``SparkContext.addFile``, or ``SparkSession.addArtifacts(...,
  file=True)``; tasks find both with ``SparkFiles.get(name)``;
* :func:`master`: the server's ``spark.master`` when it tells.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

from .._common import is_spark_connect as is_connect

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "default_parallelism",
    "is_connect",
    "master",
    "num_partitions",
    "session_key",
    "ship_file",
]

#: Default parallelism of Connect sessions, by session id (asked once: a small job).
_PARALLELISM: dict[str, int] = {}


def session_key(spark: SparkSession) -> str:
    """A key that names this session's cluster connection (application id or
    Connect session id)."""
    if is_connect(spark):
        return "connect:" + str(spark.session_id)  # type: ignore[attr-defined]
    return str(spark.sparkContext.applicationId)


def master(spark: SparkSession) -> str:
    """The master URL (on Connect: the server's ``spark.master`` if it tells, else
    ``"connect"``)."""
    if not is_connect(spark):
        return str(spark.sparkContext.master)
    try:
        value = spark.conf.get("spark.master", None)
    except Exception:  # a server that hides its SparkConf
        value = None
    return str(value) if value else "connect"


def default_parallelism(spark: SparkSession) -> int:
    """The session's default parallelism (cores of the cluster, as Spark counts them)."""
    if not is_connect(spark):
        return max(1, int(spark.sparkContext.defaultParallelism))
    key = session_key(spark)
    if key not in _PARALLELISM:
        from pyspark.sql import functions as F  # optional dependency

        # spark.range's default partitions are the scheduler's default parallelism
        # (unless spark.sql.leafNodeDefaultParallelism says otherwise): counted by the
        # server, a JVM-only job of a few hundred ms
        row = (
            spark.range(0, 1 << 20)
            .select(F.spark_partition_id().alias("p"))
            .agg(F.countDistinct("p").alias("n"))
            .first()
        )
        _PARALLELISM[key] = max(1, int(row["n"])) if row is not None else 1
    return _PARALLELISM[key]


def num_partitions(df: DataFrame) -> int | None:
    """``df``'s partition count on a classic session; None on Connect (planning it
    would need the RDD)."""
    if is_connect(df):
        return None
    return int(df.rdd.getNumPartitions())


def ship_file(spark: SparkSession, source: str, local: bool) -> None:
    """Send a file (a local path, or a URI Spark can read when not ``local``) to every
    executor; a task finds it with ``SparkFiles.get(basename)``."""
    if is_connect(spark):
        if not local:
            raise ValueError(
                f"Spark Connect ships local files only (SparkSession.addArtifacts): {source} "
                "is a URI; give the executors a path they can open (ship_model=False) or "
                "a local copy"
            )
        spark.addArtifacts(source, file=True)  # type: ignore[attr-defined]
        return
    sc = spark.sparkContext
    # a local file as a percent-encoded file URI: Spark reads '#' as a fragment
    sc.addFile(pathlib.Path(source).as_uri() if local else source)
