"""``featurize`` on the driver: check the model, ship it to the executors, and wrap the
executor-side embedding (:mod:`fruitlens.spark._tasks`) in ``mapInArrow``.

pyspark is an optional dependency of fruitlens: this module imports it inside the
functions that need it, so that ``import fruitlens.spark`` works without it.
"""

from __future__ import annotations

import functools
import os
import pathlib
import posixpath
from typing import TYPE_CHECKING, NamedTuple

from .. import _uri
from .._common import FEATURE_DIM, PathLike
from .._core import DEFAULT_BATCH_SIZE, Embedder
from .._errors import ModelError
from ._paths import local_path_or_none
from ._read import READ_ERROR_COL
from ._tasks import embed_batches

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from ._pca import FeatureStats

__all__ = ["ModelShape", "featurize", "model_shape"]

#: The driver's view of models: path -> (mtime, size, input size, output dim).
_MODEL_INFO: dict[str, tuple[float, int, int, int]] = {}
#: Files this driver has registered with SparkContext.addFile: path -> SparkFiles name.
_SHIPPED: dict[tuple[int, str], str] = {}


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
    """How executors find the model: a path they can open, or a SparkFiles name."""
    model = os.fspath(model)
    local = local_path_or_none(model)
    sc = spark.sparkContext
    if ship is None:
        ship = local is None or not sc.master.startswith("local")
    if not ship:
        return ("path", os.path.abspath(local if local is not None else model))
    source = os.path.abspath(local) if local is not None else model
    key = (id(sc), source)
    if key not in _SHIPPED:
        if local is not None:  # a percent-encoded file URI: Spark reads '#' as a fragment
            sc.addFile(pathlib.Path(source).as_uri())
            _SHIPPED[key] = os.path.basename(source)
        else:
            sc.addFile(source)
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
    stats: FeatureStats | None = None,
    fetch_from: str | None = None,
    output_dim: int | None = FEATURE_DIM,
) -> DataFrame:
    """Add MobileNetV2 features to a DataFrame of encoded images.

    Adds ``output_col`` (``array<float>``, 1280 values; null when the image failed) and
    ``error_col`` (``string``: null when fine, else ``"<kind>: <detail>"``). Other columns
    pass through (``content_col`` only with ``keep_content``; same-named ones replaced).

    Args:
        model: ONNX model file (see ``fruitlens model fetch``). A local path is used
            as is by local Spark and shipped with ``SparkContext.addFile`` to cluster
            executors; a URI (``s3://...``) is always shipped that way.
        size: the expected model input size; raises if the model's differs.
        batch_size: images per ONNX Runtime run.
        threads: ONNX Runtime/decoder threads per task (default: the task's CPUs).
        ship_model: force (True) or prevent (False) shipping the model.
        stats: a :class:`FeatureStats` that gathers the PCA statistics of the
            features while they are computed, so that a PCA can be fitted without
            another pass over them (see :class:`FeatureStats`).
        fetch_from: instead of ``content_col``, a column of file paths or URIs
            (local, ``file:``, ``s3://``, ``gs://``) that the executors read
            themselves, right before decoding (see ``list_images``). The bytes
            then never pass through the JVM. An unreadable file gets
            ``error = "unreadable: ..."``.
        output_dim: values per image the model must output; None: any (a classifier).

    Raises ModelError if the model is missing, invalid, or its input size is not ``size``.
    """
    _check_inputs(df, content_col, fetch_from, batch_size)
    model = os.fspath(model)
    _check_model_size(model, size, output_dim)
    keep, df_in = _select_inputs(df, content_col, output_col, error_col, keep_content, fetch_from)
    run = functools.partial(  # the mapInArrow body, run by the executors
        embed_batches,
        ref=_model_ref(df.sparkSession, model, ship_model),
        threads=threads,
        batch_size=batch_size,
        content_col=content_col,
        keep=keep,
        output_col=output_col,
        error_col=error_col,
        stats_acc=stats._accumulator if stats is not None else None,
        fetch_from=fetch_from,
    )
    out = df_in.mapInArrow(run, _output_schema(df, keep, output_col, error_col))
    return _fold_read_errors(out, error_col)
