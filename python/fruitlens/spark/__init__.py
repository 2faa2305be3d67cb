"""PySpark integration: read image folders, embed them, fit and apply PCA.

Everything heavy runs in the native core inside ``mapInArrow`` (Arrow batches in,
Arrow batches out; no pandas, no per-image Python):

* :func:`read_images` lists images with Spark's ``binaryFile`` source (plus, for
  local paths, the zero-byte files that ``binaryFile`` silently skips);
* :func:`featurize` adds ``features`` (``array<float>``, 1280) and ``error``
  (``string``) with one :class:`fruitlens.Embedder` per Python worker process;
* :func:`fit_pca` reduces per-partition native PCA statistics (:func:`pca_stats`) on
  the driver, and :func:`transform_pca` adds ``pca`` (``array<float>``, k);
* :class:`ImageEmbedder`, :class:`FeaturePCA` and :class:`FeaturePCAModel` are
  ``pyspark.ml`` stages (usable in a ``Pipeline``, savable with ``Pipeline.write()``);
  they live in :mod:`fruitlens.spark.ml` and are imported from there on first use;
* :func:`train_classifier` fits a classifier head on the features (``pyspark.ml``
  logistic regression), :func:`classify` scores images with an exported classifier.

Works with PySpark 3.5 and 4.x. The package's modules, one concern each:

* ``_read``: reading and listing images; ``_featurize``: featurize on the driver;
* ``_stream``: :func:`read_image_stream` (Structured Streaming input);
* ``_pca``: PCA statistics, fit and projection; ``_arrow``: Arrow I/O;
* ``_tasks``: the code the executors run (imports only pyarrow and the core);
* ``_train``: the classifier: :func:`train_classifier`, :func:`predict_features`,
  :func:`classify` (``_ml_classifier``: its ``pyspark.ml`` stages);
* ``ml``: the ``pyspark.ml`` stages.

Deprecated names (a ``DeprecationWarning``, same objects): ``pca_statistics`` (now
:func:`pca_stats`), ``model_input_size`` (now :func:`model_shape`, which returns a
:class:`ModelShape`), ``PCA`` and ``PCAModel`` (now :class:`FeaturePCA` and
:class:`FeaturePCAModel`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._common import FEATURE_DIM, IO_MODES, deprecated
from ._tasks import FAULT_ENV

if TYPE_CHECKING:
    from .._common import PathLike
    from ._arrow import collect_arrow_batches, spark_can_read, use_arrow_io, write_parquet_arrow
    from ._featurize import ModelShape, featurize, model_shape
    from ._pca import DRIVER_MERGE_PARTITIONS, FeatureStats, fit_pca, pca_stats, transform_pca
    from ._read import (
        ARROW_ROWS_PER_PARTITION,
        DEFAULT_EXTENSIONS,
        READ_ERROR_COL,
        list_images,
        read_images,
        read_images_arrow,
    )
    from ._stream import read_image_stream
    from ._train import (
        DEFAULT_MAX_ITER,
        DEFAULT_REG_PARAM,
        ON_CHOICES,
        class_labels,
        classify,
        predict_features,
        train_classifier,
    )
    from .ml import (
        FeaturePCA,
        FeaturePCAModel,
        FruitClassifier,
        FruitClassifierModel,
        ImageEmbedder,
    )

__all__ = [
    "ARROW_ROWS_PER_PARTITION",
    "DEFAULT_EXTENSIONS",
    "DEFAULT_MAX_ITER",
    "DEFAULT_REG_PARAM",
    "DRIVER_MERGE_PARTITIONS",
    "FAULT_ENV",
    "FEATURE_DIM",
    "IO_MODES",
    "ON_CHOICES",
    "READ_ERROR_COL",
    "FeaturePCA",
    "FeaturePCAModel",
    "FeatureStats",
    "FruitClassifier",
    "FruitClassifierModel",
    "ImageEmbedder",
    "ModelShape",
    "class_labels",
    "classify",
    "collect_arrow_batches",
    "featurize",
    "fit_pca",
    "list_images",
    "model_shape",
    "pca_stats",
    "predict_features",
    "read_image_stream",
    "read_images",
    "read_images_arrow",
    "spark_can_read",
    "train_classifier",
    "transform_pca",
    "use_arrow_io",
    "write_parquet_arrow",
]

#: Where each public name lives, imported on first use: a Python worker imports this
#: package for :mod:`fruitlens.spark._tasks` and needs none of the driver-side modules.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("collect_arrow_batches", "spark_can_read", "use_arrow_io", "write_parquet_arrow"),
        "_arrow",
    ),
    **dict.fromkeys(("ModelShape", "featurize", "model_shape"), "_featurize"),
    **dict.fromkeys(
        ("DRIVER_MERGE_PARTITIONS", "FeatureStats", "fit_pca", "pca_stats", "transform_pca"),
        "_pca",
    ),
    **dict.fromkeys(
        (
            "ARROW_ROWS_PER_PARTITION",
            "DEFAULT_EXTENSIONS",
            "READ_ERROR_COL",
            "list_images",
            "read_images",
            "read_images_arrow",
        ),
        "_read",
    ),
    "read_image_stream": "_stream",
    **dict.fromkeys(
        (
            "DEFAULT_MAX_ITER",
            "DEFAULT_REG_PARAM",
            "ON_CHOICES",
            "class_labels",
            "classify",
            "predict_features",
            "train_classifier",
        ),
        "_train",
    ),
}

#: The ``pyspark.ml`` stages, imported from :mod:`fruitlens.spark.ml` on first use.
_ML_STAGES = (
    "ImageEmbedder",
    "FeaturePCA",
    "FeaturePCAModel",
    "FruitClassifier",
    "FruitClassifierModel",
)


def _model_input_size(model: PathLike) -> tuple[int, int]:
    """``(input size, output dim)`` of a local ONNX model (see :func:`model_shape`)."""
    return tuple(__getattr__("model_shape")(model))  # type: ignore[no-any-return]


#: Deprecated names of this module -> (new name, its object's getter).
_DEPRECATED: dict[str, tuple[str, Any]] = {
    "pca_statistics": ("pca_stats", lambda: __getattr__("pca_stats")),
    "model_input_size": ("model_shape", lambda: _model_input_size),
}


def __getattr__(name: str) -> Any:
    """Every public name, imported on first use (see :data:`_LAZY`), the ``pyspark.ml``
    stages and the deprecated names.

    ``pyspark.ml`` pulls in pandas and scipy (~0.5 s), the driver-side modules pyarrow's
    compute functions, ``fruitlens.io`` and more (~1 s in all): Python workers, which
    only need :mod:`fruitlens.spark._tasks`, never pay for them.
    """
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once
        return value
    if name in _DEPRECATED:
        new, get = _DEPRECATED[name]
        return deprecated(f"fruitlens.spark.{name}", f"fruitlens.spark.{new}", get())
    if name in _ML_STAGES or name in ("PCA", "PCAModel"):
        from . import ml  # pyspark.ml is heavy and optional: only when a stage is used

        return getattr(ml, name) if name in _ML_STAGES else ml.deprecated_stage(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
