"""Structured Streaming input: :func:`read_image_stream` (Spark's ``binaryFile`` file
source over a folder, ``label`` = the parent folder, as :func:`read_images`).

``featurize`` and ``transform_pca`` take its result (or any streaming DataFrame of
encoded images) as they take a batch one: both are ``mapInArrow`` stages; ``featurize``
gathers no PCA statistics for a streaming input (``df.isStreaming``: no accumulator
pass to rely on; fit the PCA on a batch DataFrame and pass it to ``transform_pca``).

Spark's file source takes each file once, by path, when a micro-batch lists it: a file
still being written at that moment is read truncated (an error row, or features of a
partial image) and never again. Write files into the watched folder under a name that
starts with ``.`` or ``_`` (skipped) and rename them when complete, or use
``fruitlens stream``, which only takes files that have settled.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._read import DEFAULT_EXTENSIONS, image_files, with_folder_label

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["read_image_stream"]


def read_image_stream(
    spark: SparkSession,
    path: str,
    *,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    max_files_per_trigger: int | None = None,
    latest_first: bool = False,
) -> DataFrame:
    """A streaming DataFrame of the image files arriving below the folder ``path``
    (recursively): ``path``, ``modificationTime``, ``length``, ``content`` (binary) and
    ``label`` (the parent folder's name), as :func:`read_images` with ``io="spark"``.

    Only files with one of ``extensions`` (any case) are read; names starting with
    ``_`` or ``.`` are skipped. ``max_files_per_trigger``: at most that many files per
    micro-batch (Spark's ``maxFilesPerTrigger``); ``latest_first``: newest files first.
    Pass the result to ``featurize`` (then ``transform_pca``) and start it with
    ``writeStream`` (a checkpoint and Spark's file sink give exactly-once output).
    See the module documentation about files still being written.
    """
    from pyspark.sql import types as T  # optional dependency

    schema = T.StructType(
        [
            T.StructField("path", T.StringType(), False),
            T.StructField("modificationTime", T.TimestampType(), True),
            T.StructField("length", T.LongType(), True),
            T.StructField("content", T.BinaryType(), True),
        ]
    )
    reader = image_files(spark.readStream.schema(schema), extensions).option(
        "latestFirst", "true" if latest_first else "false"
    )
    if max_files_per_trigger is not None:
        if max_files_per_trigger < 1:
            raise ValueError(
                f"max_files_per_trigger must be at least 1, got {max_files_per_trigger}"
            )
        reader = reader.option("maxFilesPerTrigger", str(int(max_files_per_trigger)))
    return with_folder_label(reader.load(path))
