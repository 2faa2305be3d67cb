"""Alias of :mod:`fruitlens.spark.ml` (the ``pyspark.ml`` stages), kept importable.

The stages used to live here; pipelines saved then name them ``fruitlens.ml.ImageEmbedder``,
``fruitlens.ml.PCA`` and ``fruitlens.ml.PCAModel`` in their metadata, and still load
through this module. New code imports :mod:`fruitlens.spark.ml` (or ``fruitlens.spark``).
``PCA``/``PCAModel`` are deprecated names of ``FeaturePCA``/``FeaturePCAModel``.
"""

from __future__ import annotations

from typing import Any

from .spark.ml import FeaturePCA, FeaturePCAModel, ImageEmbedder, deprecated_stage

__all__ = ["FeaturePCA", "FeaturePCAModel", "ImageEmbedder"]


def __getattr__(name: str) -> Any:
    """``PCA``/``PCAModel``: deprecated aliases of ``FeaturePCA``/``FeaturePCAModel``."""
    return deprecated_stage(__name__, name)
