"""Train a classifier head on Spark, and score with it.

* :func:`train_classifier` fits the head (optional PCA, then a multinomial
  ``pyspark.ml.classification.LogisticRegression``) on a DataFrame of features and
  class labels — what ``fruitlens run`` or :func:`featurize` produce;
* :func:`predict_features` scores features with a :class:`fruitlens.classify.Head`;
* :func:`classify` scores images with an exported ``classifier.onnx`` (decode +
  MobileNetV2 + head in the native core, like :func:`featurize`).

The ``mapInArrow`` bodies at the end run on the executors: they import only the core.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .._common import PathLike, sha256_bytes
from .._core import DEFAULT_BATCH_SIZE
from .._errors import ModelError
from .._pca import PCA
from ..classify import Classifier, Head, prediction_batch, resolve_model
from ._featurize import featurize
from ._pca import fit_pca, transform_pca

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "DEFAULT_MAX_ITER",
    "DEFAULT_REG_PARAM",
    "ON_CHOICES",
    "class_labels",
    "classify",
    "predict_features",
    "train_classifier",
]

#: What the head is trained on: the PCA projections or the 1280 features.
ON_CHOICES = ("pca", "features")
#: L2 regularisation of the logistic regression (on standardised inputs).
DEFAULT_REG_PARAM = 1e-3
DEFAULT_MAX_ITER = 100
_X, _Y = "_fruitlens_x", "_fruitlens_y"


def class_labels(df: DataFrame, label_col: str = "label") -> list[str]:
    """The distinct non-null values of ``label_col``, sorted: the classes, in output order."""
    rows = df.select(label_col).where(df[label_col].isNotNull()).distinct().collect()
    return sorted(str(r[0]) for r in rows)


def _usable_rows(df: DataFrame, features_col: str, label_col: str, error_col: str) -> DataFrame:
    """Rows with features and a label (failed images are left out)."""
    for column in (features_col, label_col):
        if column not in df.columns:
            raise ValueError(f"train_classifier: no column {column!r} in {df.columns}")
    rows = df.where(df[features_col].isNotNull() & df[label_col].isNotNull())
    if error_col in df.columns:
        rows = rows.where(df[error_col].isNull())
    return rows.select(label_col, features_col)


def _fit_logistic(
    rows: DataFrame, x_col: str, label_col: str, labels: list[str], reg_param: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(coef [C, m], intercept [C])`` of a multinomial logistic regression."""
    from pyspark.ml.classification import LogisticRegression  # optional dependency
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    index = F.array_position(F.array(*[F.lit(x) for x in labels]), F.col(label_col)) - 1
    data = rows.select(
        array_to_vector(F.col(x_col)).alias(_X), index.cast("double").alias(_Y)
    ).where(F.col(_Y) >= 0)
    lr = LogisticRegression(
        featuresCol=_X,
        labelCol=_Y,
        family="multinomial",
        regParam=reg_param,
        elasticNetParam=0.0,
        maxIter=max_iter,
        tol=1e-6,
        standardization=True,
    )
    model = lr.fit(data)
    coef = model.coefficientMatrix.toArray()
    intercept = model.interceptVector.toArray()
    if coef.shape[0] != len(labels):  # a class without rows: LR sized by the largest index
        raise ModelError(f"the regression has {coef.shape[0]} classes, expected {len(labels)}")
    return coef, intercept


def train_classifier(
    df: DataFrame,
    *,
    features_col: str = "features",
    label_col: str = "label",
    error_col: str = "error",
    on: str = "pca",
    k: int | float = 0.95,
    pca: PCA | None = None,
    labels: Sequence[str] | None = None,
    reg_param: float = DEFAULT_REG_PARAM,
    max_iter: int = DEFAULT_MAX_ITER,
) -> Head:
    """Fit a classifier head on ``features_col`` (``array<float>``) and ``label_col``
    (the class name of each row, e.g. the image's folder).

    ``on="pca"`` (default) first fits a PCA keeping ``k`` (a count, or the explained
    variance to reach; or give a fitted ``pca``) and trains on the projections;
    ``on="features"`` trains on the features themselves. The head is a multinomial
    logistic regression (``pyspark.ml``, L2 ``reg_param`` on standardised inputs,
    L-BFGS, ``max_iter`` iterations). Rows with a null feature or label, or an
    ``error``, are skipped. ``labels`` fixes the classes and their order (default: the
    sorted distinct labels); rows of other labels are skipped.

    Returns a :class:`fruitlens.classify.Head` (save it, export it with
    ``fruitlens train``'s exporter, or score with :func:`predict_features`).
    """
    from pyspark import StorageLevel  # optional dependency

    if on not in ON_CHOICES:
        raise ValueError(f"on must be one of {ON_CHOICES}, got {on!r}")
    rows = _usable_rows(df, features_col, label_col, error_col).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        classes = list(labels) if labels is not None else class_labels(rows, label_col)
        if len(classes) < 2:
            raise ModelError(
                f"training needs images of at least 2 classes, found {len(classes)} "
                f"({', '.join(classes) or 'no usable rows'})"
            )
        if on == "pca" and pca is None:
            pca = fit_pca(rows, k=k, input_col=features_col)
        use_pca = pca if on == "pca" else None
        data = (
            transform_pca(rows, use_pca, input_col=features_col, output_col=_X)
            if use_pca is not None
            else rows.withColumnRenamed(features_col, _X)
        )
        coef, intercept = _fit_logistic(data, _X, label_col, classes, reg_param, max_iter)
        return Head(classes, coef, intercept, use_pca)
    finally:
        rows.unpersist()


def _prediction_schema(df: DataFrame, keep: list[str], names: tuple[str, str, str]) -> Any:
    from pyspark.sql import types as T  # optional dependency

    top = T.ArrayType(
        T.StructType(
            [T.StructField("label", T.StringType()), T.StructField("score", T.FloatType())]
        )
    )
    return T.StructType(
        [
            *[f for f in df.schema.fields if f.name in keep],
            T.StructField(names[0], T.StringType()),
            T.StructField(names[1], T.FloatType()),
            T.StructField(names[2], top),
        ]
    )


def predict_features(
    df: DataFrame,
    head: Head,
    *,
    features_col: str = "features",
    prediction_col: str = "prediction",
    score_col: str = "score",
    top_col: str = "top",
    top: int = 5,
) -> DataFrame:
    """Score ``features_col`` with ``head``: adds ``prediction_col`` (the best class),
    ``score_col`` (its probability) and ``top_col`` (the ``top`` best as
    ``{label, score}``); null where the features are null."""
    if features_col not in df.columns:
        raise ValueError(f"predict: no column {features_col!r} in {df.columns}")
    names = (prediction_col, score_col, top_col)
    keep = [c for c in df.columns if c not in names]
    text = head.to_json()
    run = functools.partial(
        head_batches,
        text=text,
        digest=sha256_bytes(text.encode()),
        input_col=features_col,
        keep=keep,
        names=names,
        top=top,
    )
    return df.mapInArrow(run, _prediction_schema(df, keep, names))


def classify(
    df: DataFrame,
    model: PathLike,
    *,
    content_col: str = "content",
    fetch_from: str | None = None,
    prediction_col: str = "prediction",
    score_col: str = "score",
    top_col: str = "top",
    error_col: str = "error",
    top: int = 5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    ship_model: bool | None = None,
) -> DataFrame:
    """Batch-score images with an exported classifier (a MODEL_DIR of ``fruitlens
    train`` or a classifier ``.onnx``): decode, MobileNetV2 and head in one ONNX run.

    Takes images like :func:`featurize` (``content_col`` bytes, or paths in
    ``fetch_from``) and adds ``prediction_col``, ``score_col``, ``top_col`` (as
    :func:`predict_features`) and ``error_col`` (null when fine, else
    ``"<kind>: <detail>"``: a bad image is its row's error, never a failed job).
    """
    path = resolve_model(model)
    labels = Classifier(path, threads=1).labels
    probs_col = "_fruitlens_probabilities"
    scored = featurize(
        df,
        model=os.fspath(path),
        content_col=content_col,
        output_col=probs_col,
        error_col=error_col,
        output_dim=len(labels),
        batch_size=batch_size,
        threads=threads,
        ship_model=ship_model,
        fetch_from=fetch_from,
    )
    names = (prediction_col, score_col, top_col)
    keep = [c for c in scored.columns if c not in (probs_col, *names)]
    run = functools.partial(
        probability_batches, labels=labels, input_col=probs_col, keep=keep, names=names, top=top
    )
    return scored.mapInArrow(run, _prediction_schema(scored, keep, names))


# --------------------------------------------------------------------------------------
# mapInArrow bodies (executors)
# --------------------------------------------------------------------------------------

_HEADS: dict[str, Head] = {}


def _rows_matrix(column: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(valid mask [N], values [n_valid, width])`` of a list<float> column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    values = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
    if values.size != int(valid.sum()) * width:
        raise ValueError(f"expected {width} values per row")
    return valid, values.reshape(-1, width).astype(np.float32, copy=False)


def _scored(
    batch: pa.RecordBatch, probs: np.ndarray, valid: np.ndarray, labels: list[str], args: Any
) -> pa.RecordBatch:
    keep, names, top = args
    full = np.full((batch.num_rows, len(labels)), np.nan, dtype=np.float32)
    full[valid] = probs
    errors = [None if ok else "no features" for ok in valid]
    pred = prediction_batch(full, errors, labels, top)
    columns = [batch.column(batch.schema.get_field_index(c)) for c in keep]
    return pa.RecordBatch.from_arrays(
        [*columns, pred.column(0), pred.column(1), pred.column(2)], names=[*keep, *names]
    )


def head_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    text: str,
    digest: str,
    input_col: str,
    keep: list[str],
    names: tuple[str, str, str],
    top: int,
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` body of :func:`predict_features`."""
    head = _HEADS.get(digest)
    if head is None:
        _HEADS.clear()
        head = _HEADS[digest] = Head.from_json(text)
    for batch in batches:
        column = batch.column(batch.schema.get_field_index(input_col))
        valid, x = _rows_matrix(column, head.input_dim)
        probs = head.probabilities(x) if len(x) else np.zeros((0, len(head.labels)), np.float32)
        yield _scored(batch, probs, valid, head.labels, (keep, names, top))


def probability_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    labels: list[str],
    input_col: str,
    keep: list[str],
    names: tuple[str, str, str],
    top: int,
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` body of :func:`classify`: class probabilities → predictions."""
    for batch in batches:
        column = batch.column(batch.schema.get_field_index(input_col))
        valid, probs = _rows_matrix(column, len(labels))
        yield _scored(batch, probs, valid, labels, (keep, names, top))
