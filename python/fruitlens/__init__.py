"""fruitlens: fast MobileNetV2 image embeddings and PCA for PySpark, with a Rust core.

>>> import fruitlens
>>> emb = fruitlens.Embedder("mobilenet_v2_224.onnx")
>>> batch = emb.embed([open("apple.jpg", "rb").read()])   # features + error columns
>>> pca = fruitlens.PCA(0.95).fit(features)
>>> clf = fruitlens.Classifier("models/fruits")        # written by `fruitlens train`
>>> clf.predict(["apple.jpg"]).column("label")
"""

from __future__ import annotations

import importlib
from typing import Any

from ._convert import build_random_model, convert_keras
from ._core import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Embedder, decode
from ._errors import (
    DecodeError,
    FetchError,
    FruitlensError,
    InferenceError,
    InternalError,
    ModelError,
    OutputError,
    PCAError,
    RuntimeNotFoundError,
)
from ._model_info import model_info
from ._native import MAX_PCA_DIM, MAX_SIZE, MAX_THREADS, __version__
from ._pca import PCA, PCAStats, pca_stats
from ._runtime import find_onnxruntime_library
from .classify import Classifier

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_PCA_DIM",
    "MAX_SIZE",
    "MAX_THREADS",
    "PCA",
    "DecodeError",
    "Embedder",
    "FetchError",
    "FruitlensError",
    "InferenceError",
    "InternalError",
    "ModelError",
    "OutputError",
    "PCAError",
    "PCAStats",
    "Classifier",
    "RuntimeNotFoundError",
    "__version__",
    "build_random_model",
    "convert_keras",
    "decode",
    "find_onnxruntime_library",
    "model_info",
    "pca_stats",
]

#: Public submodules, imported on first attribute access (PEP 562) so that
#: ``import fruitlens`` stays light (no pyspark, no downloads code) and
#: ``fruitlens.models.model_info(...)`` works without its own import.
_SUBMODULES = (
    "io",
    "ml",
    "models",
    "output",
    "pipeline",
    "predict",
    "quantize",
    "serve",
    "spark",
    "train_pipeline",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
