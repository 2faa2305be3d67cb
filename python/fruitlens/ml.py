"""``pyspark.ml`` stages over :mod:`fruitlens.spark`: usable in a ``Pipeline``.

* :class:`ImageEmbedder` — a ``Transformer`` adding MobileNetV2 features;
* :class:`PCA` — an ``Estimator`` (distributed native statistics), fitted into a
* :class:`PCAModel` — adding the PCA scores; saved and loaded with the pipeline.

They are also reachable as ``fruitlens.spark.ImageEmbedder`` etc. This module is
separate so that importing :mod:`fruitlens.spark` (on every Python worker) does
not import ``pyspark.ml``.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from ._core import DEFAULT_BATCH_SIZE
from ._errors import ModelError, PCAError
from .spark import featurize, fit_pca, transform_pca

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    import fruitlens

__all__ = ["PCA", "ImageEmbedder", "PCAModel"]


def _to_k(value: Any) -> int | float:
    """Param converter of ``k``: an int ≥ 1 or a float fraction in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"k must be an int or a float, got {value!r}")
    from ._core import check_k

    return check_k(value)


class ImageEmbedder(
    Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """Transformer adding MobileNetV2 features (see :func:`featurize`).

    Params: ``inputCol`` (binary image bytes, default ``content``), ``outputCol``
    (default ``features``), ``errorCol`` (default ``error``), ``modelPath``,
    ``batchSize`` (default 4), ``threads`` (0 = the task's CPUs) and
    ``dropInputCol`` (default True).
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
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="features",
            errorCol="error",
            batchSize=DEFAULT_BATCH_SIZE,
            threads=0,
            dropInputCol=True,
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
        return featurize(
            dataset,
            model=self.getModelPath(),
            content_col=self.getInputCol(),
            output_col=self.getOutputCol(),
            error_col=self.getErrorCol(),
            batch_size=self.getBatchSize(),
            threads=self.getThreads() or None,
            keep_content=not self.getOrDefault(self.dropInputCol),
        )


class _PCAParams(HasInputCol, HasOutputCol):
    k: Param[int | float] = Param(
        Params._dummy(),
        "k",
        "number of components (int) or explained-variance fraction in (0, 1] (float)",
        typeConverter=_to_k,
    )

    def getK(self) -> int | float:
        return self.getOrDefault(self.k)


class PCA(Estimator, _PCAParams, DefaultParamsReadable, DefaultParamsWritable):
    """Distributed centred PCA (native statistics; see :func:`fit_pca`).

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
    ) -> PCA:
        return self._set(**self._input_kwargs)

    def setK(self, value: int | float) -> PCA:
        return self._set(k=value)

    def setInputCol(self, value: str) -> PCA:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> PCA:
        return self._set(outputCol=value)

    def _fit(self, dataset: DataFrame) -> PCAModel:
        fitted = fit_pca(dataset, k=self.getK(), input_col=self.getInputCol())
        model = PCAModel(fitted.to_json())
        self._copyValues(model)
        return model


class _PCAModelWriter(MLWriter):
    def __init__(self, instance: PCAModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sc, extraMetadata={"pca": self.instance.pcaJson}
        )


class _PCAModelReader(MLReader):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> PCAModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        if "pca" not in metadata:
            raise PCAError(f"{path}: no fitted PCA in the saved metadata")
        model = self.cls(metadata["pca"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


class PCAModel(Model, _PCAParams, MLReadable, MLWritable):
    """A fitted :class:`PCA`: adds ``outputCol`` (``array<float>``, k).

    ``pca`` is the fitted :class:`fruitlens.PCA` (``pcaJson`` its JSON). Saved
    with the stage's params; the PCA JSON goes into the metadata file.
    """

    def __init__(self, pcaJson: str | None = None) -> None:
        super().__init__()
        self._setDefault(k=0.95, inputCol="features", outputCol="pca")
        self.pcaJson = pcaJson
        self._pca: fruitlens.PCA | None = None

    @property
    def pca(self) -> fruitlens.PCA:
        if self._pca is None:
            if not self.pcaJson:
                raise PCAError("this PCAModel holds no fitted PCA")
            from ._core import PCA as _PCA

            self._pca = _PCA.from_json(self.pcaJson)
        return self._pca

    @property
    def explainedVariance(self) -> list[float]:
        return [float(v) for v in self.pca.explained_variance_ratio_]

    def setInputCol(self, value: str) -> PCAModel:
        return self._set(inputCol=value)

    def setOutputCol(self, value: str) -> PCAModel:
        return self._set(outputCol=value)

    def copy(self, extra: dict[Any, Any] | None = None) -> PCAModel:
        that = super().copy(extra)
        that.pcaJson = self.pcaJson
        that._pca = self._pca
        return that

    def _transform(self, dataset: DataFrame) -> DataFrame:
        if not self.pcaJson:
            raise PCAError("this PCAModel holds no fitted PCA")
        return transform_pca(
            dataset, self.pcaJson, input_col=self.getInputCol(), output_col=self.getOutputCol()
        )

    def write(self) -> MLWriter:
        return _PCAModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _PCAModelReader(cls)

    def __repr__(self) -> str:
        k = self.pca.k if self.pcaJson else "?"
        return f"PCAModel(k={k}, inputCol={self.getInputCol()!r})"
