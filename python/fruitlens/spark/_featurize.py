"""``featurize`` on the driver: check the model, ship it to the executors, and wrap the
executor-side embedding (:mod:`fruitlens.spark._tasks`) in ``mapInArrow``.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

import functools
import os
import posixpath
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _uri
from .._common import FEATURE_DIM, PathLike
from .._core import DEFAULT_BATCH_SIZE, RESIZE_MODES, Embedder
from .._errors import ModelError
from . import _connect
from ._lazy import fetch_source, is_lazy, listing_frame
from ._paths import local_path_or_none, spark_major
from ._pca import FeatureStats, auto_stats, register_features
from ._read import READ_ERROR_COL
from ._tasks import embed_batches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

__all__ = [
    "ARROW_MAX_BYTES",
    "ARROW_MAX_BYTES_KEY",
    "ModelShape",
    "bound_arrow_batches",
    "featurize",
    "featurize_refs",
    "model_shape",
]

#: Spark 4's byte cap of the Arrow batches sent to Python tasks, and fruitlens's value.
ARROW_MAX_BYTES_KEY = "spark.sql.execution.arrow.maxBytesPerBatch"
ARROW_MAX_BYTES = 64 << 20

#: The driver's view of models: path -> (mtime, size, input size, output dim).
_MODEL_INFO: dict[str, tuple[float, int, int, int]] = {}
#: Files this driver has shipped: (session, path) -> SparkFiles name.
_SHIPPED: dict[tuple[str, str], str] = {}


class ModelShape(NamedTuple):
    """What a model takes and gives: ``input_size`` (S of its S x S images) and
    ``output_dim`` (features per image)."""

    input_size: int
    output_dim: int


def model_shape(model: PathLike, output_dim: int | None = FEATURE_DIM) -> ModelShape:
    """The :class:`ModelShape` of a local ONNX model, checked by loading it once
    (and that it outputs ``output_dim`` values per image, unless None).

    Raises:
        ModelError: the file is missing or is not a usable fruitlens model.
    """
    path = os.path.abspath(os.fspath(model))
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {model}")
    st = os.stat(path)
    cached = _MODEL_INFO.get(path)
    if cached is None or cached[:2] != (st.st_mtime, st.st_size):
        emb = Embedder(path, threads=1)
        cached = _MODEL_INFO[path] = (st.st_mtime, st.st_size, emb.input_size, emb.output_dim)
    shape = ModelShape(cached[2], cached[3])
    if output_dim is not None and shape.output_dim != output_dim:
        raise ModelError(
            f"{model}: the model outputs {shape.output_dim} values per image, expected "
            f"{output_dim}" + (" (MobileNetV2 features)" if output_dim == FEATURE_DIM else "")
        )
    return shape


def _model_ref(spark: SparkSession, model: PathLike, ship: bool | None) -> tuple[str, str]:
    """How executors find the model: a path they can open, or a SparkFiles name
    (shipped with ``SparkContext.addFile``, or ``addArtifacts`` on Spark Connect)."""
    model = os.fspath(model)
    local = local_path_or_none(model)
    if ship is None:  # Connect: the server may be anywhere, ship it
        ship = local is None or _connect.is_connect(spark)
        ship = ship or not _connect.master(spark).startswith("local")
    if not ship:
        return ("path", os.path.abspath(local if local is not None else model))
    source = os.path.abspath(local) if local is not None else model
    key = (_connect.session_key(spark), source)
    if key not in _SHIPPED:
        _connect.ship_file(spark, source, local is not None)
        if local is not None:
            _SHIPPED[key] = os.path.basename(source)
        else:
            _SHIPPED[key] = posixpath.basename(_uri.split_uri(source)[2]) or source
    return ("sparkfile", _SHIPPED[key])


def _check_inputs(df: DataFrame, content_col: str, fetch_from: str | None, batch_size: int) -> None:
    """``batch_size`` is positive and the column to embed (or to read files from) exists."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    column = fetch_from if fetch_from is not None else content_col
    if column not in df.columns:
        raise ValueError(f"featurize: no column {column!r} in {df.columns}")


def _check_model_size(model: str, size: int | None, output_dim: int | None) -> None:
    """Load a local model once on the driver: usable, and of input size ``size`` if set."""
    local = local_path_or_none(model)
    if local is None:
        return
    input_size = model_shape(local, output_dim).input_size
    if size is not None and int(size) != input_size:
        raise ModelError(
            f"{model} takes {input_size}x{input_size} images but size={size} was asked; "
            f"use a model converted at {size} (fruitlens model fetch --size {size}) "
            f"or size={input_size}"
        )


def _select_inputs(
    df: DataFrame,
    content_col: str,
    output_col: str,
    error_col: str,
    keep_content: bool,
    fetch_from: str | None,
) -> tuple[list[str], DataFrame]:
    """``(columns passed through, df reduced to them plus the column to embed)``."""
    drop = {output_col, error_col}
    if not keep_content or fetch_from is not None:
        drop.add(content_col)
        if fetch_from is not None and is_lazy(df, READ_ERROR_COL):
            drop.add(READ_ERROR_COL)  # read_images' lazy bytes: the tasks read them instead
    keep = [f.name for f in df.schema.fields if f.name not in drop]
    source = fetch_from if fetch_from is not None else content_col
    return keep, (df.select(*keep, source) if source not in keep else df.select(*keep))


def _output_schema(df: DataFrame, keep: list[str], output_col: str, error_col: str) -> StructType:
    """The columns ``keep`` of ``df``, then the features and the errors."""
    from pyspark.sql import types as T  # optional dependency

    fields = [f for f in df.schema.fields if f.name in keep]
    return T.StructType(
        [
            *fields,
            T.StructField(output_col, T.ArrayType(T.FloatType(), True), True),
            T.StructField(error_col, T.StringType(), True),
        ]
    )


def _fold_read_errors(out: DataFrame, error_col: str) -> DataFrame:
    """Fetch failures of ``read_images_arrow`` (``_read_error``) win over ``error_col``."""
    if READ_ERROR_COL not in out.columns:
        return out
    from pyspark.sql import functions as F  # optional dependency

    folded = F.coalesce(F.col(READ_ERROR_COL), F.col(error_col))
    return out.withColumn(error_col, folded).drop(READ_ERROR_COL)


def featurize(
    df: DataFrame,
    *,
    model: PathLike,
    content_col: str = "content",
    output_col: str = "features",
    error_col: str = "error",
    size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    keep_content: bool = False,
    ship_model: bool | None = None,
    stats: FeatureStats | bool | None = None,
    fetch_from: str | None = None,
    output_dim: int | None = FEATURE_DIM,
    resize: str = "exact",
) -> DataFrame:
    """Add MobileNetV2 features to a DataFrame of encoded images.

    Adds ``output_col`` (``array<float>``, 1280 values; null when the image failed) and
    ``error_col`` (``string``: null when fine, else ``"<kind>: <detail>"``). Other columns
    pass through (``content_col`` only with ``keep_content``; same-named ones replaced).

    Args:
        model: ONNX model file (see ``fruitlens model fetch``), used as is by local
            Spark, shipped with ``SparkContext.addFile`` to cluster executors (a URI
            such as ``s3://...`` always is); ``ship_model`` forces or prevents that.
        size: the expected model input size; raises if the model's differs.
        batch_size, threads: images per ONNX Runtime run; threads per task (default:
            the task's CPUs).
        stats: PCA statistics gathered while embedding: by default (None) for 1280
            features on a classic session, up to ``AUTO_STATS_PARTITIONS`` partitions
            (:func:`fit_pca`/``FeaturePCA`` use them, no second pass); ``False``: not.
        fetch_from: a column of paths/URIs the tasks read, instead of ``content_col``
            (the bytes never pass through the JVM; ``unreadable: ...`` errors), as for
            ``read_images``' lazy ``content`` (unless ``keep_content``).
        output_dim: values per image the model must output; None: any (a classifier).
        resize: ``"exact"`` (default: bit-identical to Pillow/Keras) or ``"fast"``.

    Raises ModelError if the model is missing, invalid, or its input size is not ``size``.
    """
    _check_inputs(df, content_col, fetch_from, batch_size)
    if resize not in RESIZE_MODES:
        raise ValueError(f'resize must be "exact" or "fast", got {resize!r}')
    if fetch_from is None and not keep_content:
        fetch_from = fetch_source(df, content_col)  # read_images' lazy content
    model = os.fspath(model)
    _check_model_size(model, size, output_dim)
    keep, df_in = _input_frame(df, content_col, fetch_from, (output_col, error_col, keep_content))
    collected = _stats_for(df_in, stats, output_dim)
    task = dict(threads=threads, batch_size=batch_size, content_col=content_col, keep=keep)
    task.update(output_col=output_col, error_col=error_col, fetch_from=fetch_from, resize=resize)
    run = functools.partial(  # the mapInArrow body, run by the executors
        embed_batches,
        ref=_model_ref(df.sparkSession, model, ship_model),
        stats_acc=collected._accumulator if collected is not None else None,
        **task,
    )
    out = df_in.mapInArrow(run, _output_schema(df, keep, output_col, error_col))
    return _finish(out, output_col, error_col, collected, _wants_stats(stats, output_dim))


def _finish(
    out: DataFrame, output_col: str, error_col: str, collected: FeatureStats | None, wanted: bool
) -> DataFrame:
    """Read errors folded in; registered for ``fit_pca`` when statistics are gathered
    (Spark Connect: none in the pass, but ``fit_pca`` caches the result first)."""
    out = _fold_read_errors(out, error_col)
    if collected is not None or (wanted and _connect.is_connect(out)):
        return register_features(out, output_col, collected)
    return out


def bound_arrow_batches(spark: SparkSession) -> None:
    """Spark 4+: cap the Arrow batches sent to the Python tasks at
    :data:`ARROW_MAX_BYTES` when ``spark.sql.execution.arrow.maxBytesPerBatch`` is at
    its default (no limit): image bytes read by Spark (``binaryFile``) would otherwise
    come in batches of ``maxRecordsPerBatch`` (10,000) images at once."""
    try:
        if spark_major(spark) >= 4 and spark.conf.get(ARROW_MAX_BYTES_KEY, None) in (
            None,
            str(2**31 - 1),
        ):
            spark.conf.set(ARROW_MAX_BYTES_KEY, str(ARROW_MAX_BYTES))
    except Exception:  # a conf this Spark does not have, or cannot change
        pass


def _stats_for(
    df_in: DataFrame, stats: FeatureStats | bool | None, output_dim: int | None
) -> FeatureStats | None:
    """The :class:`FeatureStats` featurize gathers into (see its ``stats``)."""
    if isinstance(stats, FeatureStats):
        return stats
    if not _wants_stats(stats, output_dim) or df_in.isStreaming:
        return None  # a stream: no single pass for the statistics to describe
    return auto_stats(df_in, limit=stats is None)


def _wants_stats(stats: FeatureStats | bool | None, output_dim: int | None) -> bool:
    """Whether ``featurize``'s ``stats`` asks for PCA statistics (by default: for
    MobileNetV2 features)."""
    return stats is True or (stats is None and output_dim == FEATURE_DIM)


def _input_frame(
    df: DataFrame, content_col: str, fetch_from: str | None, columns: tuple[str, str, bool]
) -> tuple[list[str], DataFrame]:
    """:func:`_select_inputs`; bytes read by Spark: Arrow batches bounded in bytes."""
    output_col, error_col, keep_content = columns
    if fetch_from is None:
        bound_arrow_batches(df.sparkSession)
    return _select_inputs(df, content_col, output_col, error_col, keep_content, fetch_from)


def featurize_refs(
    spark: SparkSession,
    refs: list[Any],
    *,
    model: PathLike,
    size: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    resize: str = "exact",
    partitions: int | None = None,
) -> DataFrame:
    """:func:`featurize` over images listed on the driver (``fruitlens.io.ImageRef`` s,
    :func:`fruitlens.spark._lazy.listing_frame`), each file read by the task that embeds
    it (``fetch_from="path"``), no PCA statistics: ``path, label, length,
    modificationTime, features, error``."""
    return featurize(
        listing_frame(spark, refs, partitions, False),
        model=model,
        size=size,
        batch_size=batch_size,
        threads=threads,
        stats=False,
        fetch_from="path",
        resize=resize,
    )
