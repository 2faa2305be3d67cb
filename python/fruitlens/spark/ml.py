"""``pyspark.ml`` stages over :mod:`fruitlens.spark`: usable in a ``Pipeline``.

* :class:`ImageEmbedder` — a ``Transformer`` adding MobileNetV2 features;
* :class:`FeaturePCA` — an ``Estimator`` (distributed native statistics), fitted into a
* :class:`FeaturePCAModel` — adding the PCA scores; saved and loaded with the pipeline;
* :class:`FruitClassifier` / :class:`FruitClassifierModel` — a classifier head over the
  features (from :mod:`fruitlens.spark._ml_classifier`).

They are also reachable as ``fruitlens.spark.ImageEmbedder`` etc. This module is
separate so that importing :mod:`fruitlens.spark` (on every Python worker) does
not import ``pyspark.ml``. ``FeaturePCA``/``FeaturePCAModel`` were ``PCA``/``PCAModel``
(which collided with :class:`fruitlens.PCA`); the old names still work, deprecated, and
stages saved under them (``fruitlens.ml.PCAModel`` in the metadata) still load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsWritable,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from .._common import deprecated
from .._core import DEFAULT_BATCH_SIZE
from .._errors import ModelError, PCAError
from .._k import check_k
from .._pca import PCA as LocalPCA  # fruitlens.PCA (not the deprecated stage name)
from ._featurize import featurize
from ._ml_classifier import FruitClassifier, FruitClassifierModel
from ._ml_io import JsonStateReader, JsonStateWriter
from ._pca import fit_pca, transform_pca

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "FeaturePCA",
    "FeaturePCAModel",
    "FruitClassifier",
    "FruitClassifierModel",
    "ImageEmbedder",
]

#: Deprecated names of this module -> their new names.
DEPRECATED = {"PCA": "FeaturePCA", "PCAModel": "FeaturePCAModel"}


class ImageEmbedder(
    Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """Transformer adding MobileNetV2 features (see :func:`fruitlens.spark.featurize`).

    Params: ``inputCol`` (binary image bytes, default ``content``), ``outputCol``
    (default ``features``), ``errorCol`` (default ``error``), ``modelPath``,
    ``batchSize`` (default 4), ``threads`` (0 = the task's CPUs),
    ``dropInputCol`` (default True) and ``resize`` (``"exact"``, default, or ``"fast"``).

    Transforming the same input again with the same params gives the same DataFrame
    when the first result is cached, as :class:`FeaturePCA` ``.fit`` does in a
    ``Pipeline``: ``PipelineModel.transform`` then reads the features embedded during
    the fit instead of embedding every image again.
    """

    errorCol: Param[str] = Param(
        Params._dummy(),
        "errorCol",
        "output column of per-image errors",
        typeConverter=TypeConverters.toString,
    )
    modelPath: Param[str] = Param(
        Params._dummy(),
        "modelPath",
        "path or URI of the ONNX model",
        typeConverter=TypeConverters.toString,
    )
    batchSize: Param[int] = Param(
        Params._dummy(),
        "batchSize",
        "images per inference run",
        typeConverter=TypeConverters.toInt,
    )
    threads: Param[int] = Param(
        Params._dummy(),
        "threads",
        "threads per task (0: the task's CPUs)",
        typeConverter=TypeConverters.toInt,
    )
    dropInputCol: Param[bool] = Param(
        Params._dummy(),
        "dropInputCol",
        "drop the image bytes column from the output",
        typeConverter=TypeConverters.toBoolean,
    )
    resize: Param[str] = Param(
        Params._dummy(),
        "resize",
        'how images are resized: "exact" (as Pillow/Keras) or "fast" (large images '
        "reduced cheaply first)",
        typeConverter=TypeConverters.toString,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        errorCol: str = "error",
        modelPath: str | None = None,
        batchSize: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
        dropInputCol: bool = True,
        resize: str = "exact",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="features",
            errorCol="error",
            batchSize=DEFAULT_BATCH_SIZE,
            threads=0,
            dropInputCol=True,
            resize="exact",
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        errorCol: str = "error",
        modelPath: str | None = None,
        batchSize: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
        dropInputCol: bool = True,
        resize: str = "exact",
    ) -> ImageEmbedder:
        return self._set(**self._input_kwargs)

    def setInputCol(self, value: str) -> ImageEmbedder:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> ImageEmbedder:
        return self._set(outputCol=value)

    def setErrorCol(self, value: str) -> ImageEmbedder:
        return self._set(errorCol=value)

    def setModelPath(self, value: str) -> ImageEmbedder:
        return self._set(modelPath=value)

    def setBatchSize(self, value: int) -> ImageEmbedder:
        return self._set(batchSize=value)

    def setThreads(self, value: int) -> ImageEmbedder:
        return self._set(threads=value)

    def setResize(self, value: str) -> ImageEmbedder:
        return self._set(resize=value)

    def getResize(self) -> str:
        return self.getOrDefault(self.resize)

    def getErrorCol(self) -> str:
        return self.getOrDefault(self.errorCol)

    def getModelPath(self) -> str:
        return self.getOrDefault(self.modelPath)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getThreads(self) -> int:
        return self.getOrDefault(self.threads)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if not self.isDefined(self.modelPath):
            raise ModelError("ImageEmbedder: set modelPath to an ONNX model file")
        params = tuple(sorted((p.name, repr(v)) for p, v in self.extractParamMap().items()))
        last = getattr(self, "_last", None)
        if last is not None and last[0] == params and _reusable(last[1], last[2], dataset):
            return last[2]
        out = featurize(
            dataset,
            model=self.getModelPath(),
            content_col=self.getInputCol(),
            output_col=self.getOutputCol(),
            error_col=self.getErrorCol(),
            batch_size=self.getBatchSize(),
            threads=self.getThreads() or None,
            keep_content=not self.getOrDefault(self.dropInputCol),
            resize=self.getResize(),
        )
        self._last = (params, dataset, out)
        return out


def _reusable(before: DataFrame, out: DataFrame, dataset: DataFrame) -> bool:
    """Whether ``out`` (the features of ``before``, cached) serves for ``dataset``."""
    level = out.storageLevel
    if not (level.useMemory or level.useDisk):
        return False
    try:
        return dataset is before or bool(dataset.sameSemantics(before))
    except Exception:  # another session, or a plan that cannot be compared
        return False


class _PCAParams(HasInputCol, HasOutputCol):
    k: Param[int | float] = Param(
        Params._dummy(),
        "k",
        "number of components (int) or explained-variance fraction in (0, 1] (float)",
        typeConverter=check_k,
    )

    def getK(self) -> int | float:
        return self.getOrDefault(self.k)


class FeaturePCA(Estimator, _PCAParams, DefaultParamsReadable, DefaultParamsWritable):
    """Distributed centred PCA (native statistics; see :func:`fruitlens.spark.fit_pca`).

    Params: ``k`` (int components or explained-variance fraction; default 0.95),
    ``inputCol`` (default ``features``), ``outputCol`` (default ``pca``).
    Rows with a null input are skipped by the fit and get a null output.
    """

    @keyword_only
    def __init__(
        self,
        *,
        k: int | float = 0.95,
        inputCol: str = "features",
        outputCol: str = "pca",
    ) -> None:
        super().__init__()
        self._setDefault(k=0.95, inputCol="features", outputCol="pca")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        k: int | float = 0.95,
        inputCol: str = "features",
        outputCol: str = "pca",
    ) -> FeaturePCA:
        return self._set(**self._input_kwargs)

    def setK(self, value: int | float) -> FeaturePCA:
        return self._set(k=value)

    def setInputCol(self, value: str) -> FeaturePCA:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> FeaturePCA:
        return self._set(outputCol=value)

    def _fit(self, dataset: DataFrame) -> FeaturePCAModel:
        fitted = fit_pca(dataset, k=self.getK(), input_col=self.getInputCol())
        model = FeaturePCAModel(fitted.to_json())
        self._copyValues(model)
        return model


class FeaturePCAModel(Model, _PCAParams, MLReadable, MLWritable):
    """A fitted :class:`FeaturePCA`: adds ``outputCol`` (``array<float>``, k).

    ``pca`` is the fitted :class:`fruitlens.PCA` (``pcaJson`` its JSON). Saved
    with the stage's params; the PCA JSON goes into the metadata file.
    """

    def __init__(self, pcaJson: str | None = None) -> None:
        super().__init__()
        self._setDefault(k=0.95, inputCol="features", outputCol="pca")
        self.pcaJson = pcaJson
        self._pca: LocalPCA | None = None

    @property
    def pca(self) -> LocalPCA:
        if self._pca is None:
            if not self.pcaJson:
                raise PCAError("this FeaturePCAModel holds no fitted PCA")
            self._pca = LocalPCA.from_json(self.pcaJson)
        return self._pca

    @property
    def explainedVariance(self) -> list[float]:
        return [float(v) for v in self.pca.explained_variance_ratio_]

    def setInputCol(self, value: str) -> FeaturePCAModel:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> FeaturePCAModel:
        return self._set(outputCol=value)

    def copy(self, extra: dict[Any, Any] | None = None) -> FeaturePCAModel:
        that = super().copy(extra)
        that.pcaJson = self.pcaJson
        that._pca = self._pca
        return that

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if not self.pcaJson:
            raise PCAError("this FeaturePCAModel holds no fitted PCA")
        return transform_pca(
            dataset, self.pcaJson, input_col=self.getInputCol(), output_col=self.getOutputCol()
        )

    def write(self) -> MLWriter:
        return JsonStateWriter(self, "pca", "pcaJson")

    @classmethod
    def read(cls) -> MLReader:
        return JsonStateReader(cls, "pca", _no_pca)

    def __repr__(self) -> str:
        k = self.pca.k if self.pcaJson else "?"
        return f"FeaturePCAModel(k={k}, inputCol={self.getInputCol()!r})"


def _no_pca(path: str) -> PCAError:
    return PCAError(f"{path}: no fitted PCA in the saved metadata")


def deprecated_stage(module: str, name: str) -> type:
    """The stage a deprecated name of ``module`` stands for, with a
    ``DeprecationWarning`` (raises ``AttributeError`` for other names)."""
    if name not in DEPRECATED:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = DEPRECATED[name]
    value = globals()[new]
    return deprecated(f"{module}.{name}", f"fruitlens.spark.{new} (the same class)", value, 4)


def __getattr__(name: str) -> Any:
    """``PCA``/``PCAModel``: deprecated aliases of :class:`FeaturePCA`/:class:`FeaturePCAModel`."""
    return deprecated_stage(__name__, name)
