"""``pyspark.ml`` stages of the fruit classifier: :class:`FruitClassifier` (an
``Estimator`` over features, e.g. after :class:`~fruitlens.spark.ml.ImageEmbedder`)
fitted into :class:`FruitClassifierModel` (adds the predicted class, its score and the
top classes). Re-exported by :mod:`fruitlens.spark.ml`; saved and loaded with a
``Pipeline`` (the head's JSON goes into the stage's metadata).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasLabelCol,
    HasMaxIter,
    HasPredictionCol,
    HasRegParam,
)
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsWritable,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from .._errors import ModelError
from .._k import check_k
from ..classify import Head
from ._ml_io import JsonStateReader, JsonStateWriter
from ._train import (
    DEFAULT_MAX_ITER,
    DEFAULT_REG_PARAM,
    ON_CHOICES,
    predict_features,
    train_classifier,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["FruitClassifier", "FruitClassifierModel"]

_DEFAULTS: dict[str, Any] = {
    "featuresCol": "features",
    "labelCol": "label",
    "predictionCol": "prediction",
    "scoreCol": "score",
    "topCol": "top",
    "top": 5,
}


def _check_on(value: Any) -> str:
    value = TypeConverters.toString(value)
    if value not in ON_CHOICES:
        raise TypeError(f"on must be one of {ON_CHOICES}, got {value!r}")
    return value


class _ClassifierParams(HasFeaturesCol, HasLabelCol, HasPredictionCol):
    scoreCol: Param[str] = Param(
        Params._dummy(), "scoreCol", "probability of the predicted class", TypeConverters.toString
    )
    topCol: Param[str] = Param(
        Params._dummy(), "topCol", "the best classes, as {label, score}", TypeConverters.toString
    )
    top: Param[int] = Param(Params._dummy(), "top", "classes in topCol", TypeConverters.toInt)

    def getScoreCol(self) -> str:
        return self.getOrDefault(self.scoreCol)

    def getTopCol(self) -> str:
        return self.getOrDefault(self.topCol)

    def getTop(self) -> int:
        return self.getOrDefault(self.top)


class FruitClassifier(
    Estimator,
    _ClassifierParams,
    HasRegParam,
    HasMaxIter,
    DefaultParamsReadable,
    DefaultParamsWritable,
):
    """Train a classifier head on features (see :func:`fruitlens.spark.train_classifier`).

    Params: ``featuresCol`` (``array<float>``, default ``features``), ``labelCol``
    (class names, default ``label``), ``on`` (``pca`` or ``features``), ``k`` (PCA
    components or variance), ``regParam``, ``maxIter``; the fitted model adds
    ``predictionCol``, ``scoreCol`` and ``topCol`` (``top`` classes).
    """

    on: Param[str] = Param(Params._dummy(), "on", "train on 'pca' or 'features'", _check_on)
    k: Param[int | float] = Param(
        Params._dummy(), "k", "PCA components (int) or explained variance (float)", check_k
    )

    @keyword_only
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._setDefault(
            on="pca", k=0.95, regParam=DEFAULT_REG_PARAM, maxIter=DEFAULT_MAX_ITER, **_DEFAULTS
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs: Any) -> FruitClassifier:
        return self._set(**self._input_kwargs)

    def _fit(self, dataset: DataFrame) -> FruitClassifierModel:
        head = train_classifier(
            dataset,
            features_col=self.getFeaturesCol(),
            label_col=self.getLabelCol(),
            on=self.getOrDefault(self.on),
            k=self.getOrDefault(self.k),
            reg_param=self.getRegParam(),
            max_iter=self.getMaxIter(),
        )
        model = FruitClassifierModel(head.to_json())
        for name in ("featuresCol", "labelCol", "predictionCol", "scoreCol", "topCol", "top"):
            model._set(**{name: self.getOrDefault(name)})
        return model


def _no_head(path: str) -> ModelError:
    return ModelError(f"{path}: no fitted classifier head in the saved metadata")


class FruitClassifierModel(Model, _ClassifierParams, MLReadable, MLWritable):
    """A fitted :class:`FruitClassifier`: ``head`` (a :class:`fruitlens.classify.Head`)
    scores ``featuresCol`` into ``predictionCol`` (class name), ``scoreCol`` and
    ``topCol``."""

    def __init__(self, headJson: str | None = None) -> None:
        super().__init__()
        self._setDefault(**_DEFAULTS)
        self.headJson = headJson
        self._head: Head | None = None

    @property
    def head(self) -> Head:
        if self._head is None:
            if not self.headJson:
                raise ModelError("this FruitClassifierModel holds no fitted head")
            self._head = Head.from_json(self.headJson)
        return self._head

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    def copy(self, extra: dict[Any, Any] | None = None) -> FruitClassifierModel:
        that = super().copy(extra)
        that.headJson, that._head = self.headJson, self._head
        return that

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return predict_features(
            dataset,
            self.head,
            features_col=self.getFeaturesCol(),
            prediction_col=self.getPredictionCol(),
            score_col=self.getScoreCol(),
            top_col=self.getTopCol(),
            top=self.getTop(),
        )

    def write(self) -> MLWriter:
        return JsonStateWriter(self, "head", "headJson")

    @classmethod
    def read(cls) -> MLReader:
        return JsonStateReader(cls, "head", _no_head)

    def __repr__(self) -> str:
        n = len(self.head.labels) if self.headJson else "?"
        return f"FruitClassifierModel({n} classes)"
