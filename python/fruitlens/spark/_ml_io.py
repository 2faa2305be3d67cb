"""Saving and loading the fitted ``pyspark.ml`` models of fruitlens: the stage's params
(``DefaultParamsWriter``'s metadata file) plus the fitted state as one JSON string in
that metadata (the PCA of :class:`FeaturePCAModel`, the head of
:class:`FruitClassifierModel`)."""

from __future__ import annotations

from typing import Any, Callable

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from ._connect import is_connect

__all__ = ["JsonStateReader", "JsonStateWriter"]


def _context(rw: MLWriter | MLReader) -> Any:
    """What ``DefaultParamsWriter/Reader`` take: the SparkContext (classic; PySpark 3.5
    takes nothing else), or the session itself on Spark Connect (PySpark 4+)."""
    session = rw.sparkSession
    return session if is_connect(session) else rw.sc


class JsonStateWriter(MLWriter):
    """Writes ``instance``'s params and its JSON attribute ``attr`` under ``key``."""

    def __init__(self, instance: Any, key: str, attr: str) -> None:
        super().__init__()
        self.instance, self.key, self.attr = instance, key, attr

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance,
            path,
            _context(self),
            extraMetadata={self.key: getattr(self.instance, self.attr)},
        )


class JsonStateReader(MLReader):
    """Loads ``cls(metadata[key])`` with the saved params; ``missing(path)`` is raised
    when the metadata has no ``key``."""

    def __init__(self, cls: type, key: str, missing: Callable[[str], Exception]) -> None:
        super().__init__()
        self.cls, self.key, self.missing = cls, key, missing

    def load(self, path: str) -> Any:
        metadata = DefaultParamsReader.loadMetadata(path, _context(self))
        if self.key not in metadata:
            raise self.missing(path)
        model = self.cls(metadata[self.key])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model
