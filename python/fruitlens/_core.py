"""Python façade over the native core: argument handling and Arrow/numpy conversion.

All heavy work runs in Rust with the GIL released; this module only adapts inputs
(lists of bytes, numpy arrays, chunked arrays) to Arrow and outputs back.
"""

from __future__ import annotations

import json
import numbers
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pyarrow as pa

from . import _native
from ._errors import PCAError
from ._runtime import find_onnxruntime_library

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_PIXELS",
    "PCA",
    "Embedder",
    "PCAStats",
    "decode",
    "pca_stats",
]

DEFAULT_MAX_PIXELS: int = _native.DEFAULT_MAX_PIXELS
#: Images per ONNX Runtime run (small batches keep activations in cache).
DEFAULT_BATCH_SIZE: int = _native.DEFAULT_BATCH_SIZE
DEFAULT_MAX_BYTES: int = _native.DEFAULT_MAX_BYTES

ImagesLike = Union[pa.Array, pa.ChunkedArray, Sequence[Union[bytes, bytearray, memoryview, None]]]
PathLike = Union[str, "os.PathLike[str]"]

_runtime_lock = threading.Lock()


def _ensure_runtime() -> Path:
    """Load ONNX Runtime once per process (lazily: never at import time)."""
    with _runtime_lock:
        return Path(_native.init_runtime(str(find_onnxruntime_library())))


def _as_binary_array(images: ImagesLike) -> pa.Array:
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks() if images.num_chunks != 1 else images.chunk(0)
    if isinstance(images, pa.Array):
        if pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type):
            return images
        if pa.types.is_binary_view(images.type):
            return images.cast(pa.large_binary())
        raise TypeError(f"images must be a binary or large_binary Arrow array, got {images.type}")
    if isinstance(images, (bytes, bytearray, memoryview, str)):
        raise TypeError("images must be a sequence of bytes objects, not a single bytes object")
    values = [None if v is None else bytes(v) for v in images]
    total = sum(len(v) for v in values if v is not None)
    return pa.array(values, type=pa.large_binary() if total >= 2**31 - 1 else pa.binary())


def _rows_array(x: Any, what: str = "x") -> pa.Array:
    """Rows of floats as an Arrow list-like array (zero-copy for float32 numpy)."""
    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks()
    if isinstance(x, pa.Array):
        return x
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows, features), got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def decode(
    images: ImagesLike,
    *,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
) -> pa.RecordBatch:
    """Decode, resize (bicubic, as Pillow) and normalise (``x/127.5 - 1``) images.

    Returns a record batch with ``pixels`` (``fixed_size_list<float32>[size·size·3]``,
    NHWC, null for failed rows) and ``error`` (``utf8``, null when fine; otherwise
    ``"<kind>: <detail>"``).
    """
    return _native.decode(
        _as_binary_array(images),
        size=size,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        threads=threads,
    )


class Embedder:
    """MobileNetV2 embeddings of encoded images with ONNX Runtime.

    ``model_path`` is an ONNX model with input ``[N, S, S, 3]`` float32 and output
    ``[N, D]`` (see :func:`fruitlens.convert_keras`). ``threads`` is the number of
    ONNX Runtime intra-op threads and decode threads (default: ``OMP_NUM_THREADS`` or
    the CPU count). Safe to share between threads (calls are serialised) and across
    ``fork`` (the native session is rebuilt in the child).
    """

    def __init__(
        self,
        model_path: PathLike,
        *,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        runtime = _ensure_runtime()
        self._native = _native.Embedder(str(model_path), threads=threads, runtime_path=str(runtime))
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes

    @property
    def input_size(self) -> int:
        """S, the side of the square model input."""
        return self._native.input_size

    @property
    def output_dim(self) -> int:
        """D, the length of a feature vector (1280 for MobileNetV2)."""
        return self._native.output_dim

    @property
    def threads(self) -> int:
        return self._native.threads

    @property
    def model_path(self) -> Path:
        return Path(self._native.model_path)

    def embed(self, images: ImagesLike) -> pa.RecordBatch:
        """Embed encoded images.

        Returns ``features`` (``fixed_size_list<float32>[D]``, null where the image
        failed) and ``error`` (``utf8``: null when fine, else ``"<kind>: <detail>"``).
        A bad image never raises: it gets its own error and the other rows are the
        same as in a batch without it.
        """
        return self._native.embed(
            _as_binary_array(images),
            max_pixels=self.max_pixels,
            max_bytes=self.max_bytes,
            batch_size=self.batch_size,
        )

    def embed_tensors(self, x: np.ndarray) -> np.ndarray:
        """Embed preprocessed NHWC tensors ``[N, S, S, 3]`` float32 → ``[N, D]``."""
        arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        s = self.input_size
        if arr.ndim != 4 or arr.shape[1:] != (s, s, 3):
            raise ValueError(f"x must have shape [N, {s}, {s}, 3], got {arr.shape}")
        out = self._native.embed_tensors(pa.array(arr.reshape(-1)), batch_size=self.batch_size)
        return out.to_numpy(zero_copy_only=True).reshape(arr.shape[0], self.output_dim)

    def __repr__(self) -> str:
        return (
            f"Embedder({str(self.model_path)!r}, input_size={self.input_size}, "
            f"output_dim={self.output_dim}, threads={self.threads})"
        )


class PCAStats:
    """Mergeable one-pass PCA statistics (n, Σx, XᵀX in float64).

    Compute one per partition with :func:`pca_stats`, ship them with
    :meth:`to_bytes`/:meth:`from_bytes`, :meth:`merge` them, then :meth:`fit`.
    """

    def __init__(self, dim: int) -> None:
        self._native = _native.PcaStats(dim)

    @classmethod
    def _wrap(cls, native: Any) -> PCAStats:
        obj = cls.__new__(cls)
        obj._native = native
        return obj

    @property
    def dim(self) -> int:
        return self._native.dim

    @property
    def count(self) -> int:
        return self._native.count

    def update(self, x: Any) -> int:
        """Add rows (numpy ``[N, D]`` or an Arrow list array; null rows are skipped)."""
        return self._native.update(_rows_array(x))

    def merge(self, other: PCAStats) -> PCAStats:
        """Fold ``other`` into these statistics (in place); returns ``self``."""
        self._native.merge(other._native)
        return self

    def to_bytes(self) -> bytes:
        return self._native.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> PCAStats:
        return cls._wrap(_native.PcaStats.from_bytes(data))

    def fit(self, k: int | float = 0.95) -> PCA:
        return PCA(k).fit_stats(self)


def pca_stats(batch: Any, dim: int | None = None) -> PCAStats:
    """Partial PCA statistics of one batch of rows (numpy ``[N, D]`` or Arrow list array)."""
    rows = _rows_array(batch)
    if dim is None:
        dim = _infer_dim(rows)
    stats = PCAStats(dim)
    stats.update(rows)
    return stats


def _infer_dim(rows: pa.Array) -> int:
    if pa.types.is_fixed_size_list(rows.type):
        return rows.type.list_size
    for value in rows:
        if value.is_valid:
            return len(value)
    raise PCAError("cannot infer the dimension: every row is null")


def check_k(k: Any) -> int | float:
    """Validate a PCA ``k``: an int ≥ 1 (components) or a float in (0, 1] (the
    explained-variance fraction to reach). Returns it as a plain ``int``/``float``;
    raises :class:`PCAError` (a ``ValueError``) otherwise. The one rule for the Python
    API, the pyspark.ml ``k`` Param and the CLI's ``--k``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise PCAError(
            f"k must be a number of components (int ≥ 1) or an explained-variance fraction "
            f"in (0, 1], got {k!r}"
        )
    if isinstance(k, numbers.Integral):
        if int(k) < 1:
            raise PCAError(f"k must be at least 1 component, got {k}")
        return int(k)
    if not 0.0 < float(k) <= 1.0:
        raise PCAError(f"a fractional k (explained-variance fraction) must be in (0, 1], got {k}")
    return float(k)


def _k_args(k: Any) -> dict[str, Any]:
    k = check_k(k)
    return {"k": k} if isinstance(k, int) else {"variance": k}


class PCA:
    """Centred PCA (like ``sklearn.decomposition.PCA``), fitted in Rust.

    ``k`` is a number of components (int) or the explained-variance fraction to reach
    (float in (0, 1], default 0.95: the smallest k whose cumulative ratio ≥ k).
    Components are sign-normalised (each one's largest-magnitude entry is positive).
    """

    def __init__(self, k: int | float = 0.95) -> None:
        _k_args(k)
        self.k_spec = k
        self._model: Any = None

    def _set_model(self, model: Any) -> None:
        self._model = model
        self.components_ = model.components.to_numpy().reshape(model.k, model.dim)
        self.mean_ = model.mean.to_numpy()
        self.explained_variance_ = model.explained_variance.to_numpy()
        self.explained_variance_ratio_ = model.explained_variance_ratio.to_numpy()

    def _require(self) -> Any:
        if self._model is None:
            raise PCAError("this PCA is not fitted yet: call fit() or PCA.load() first")
        return self._model

    @property
    def k(self) -> int:
        """Number of components kept."""
        return self._require().k

    @property
    def n_samples_(self) -> int:
        return self._require().n_samples

    def fit(self, x: Any) -> PCA:
        """Fit on rows (numpy ``[N, D]`` or an Arrow list array; null rows skipped)."""
        return self.fit_stats(pca_stats(x))

    def fit_stats(self, stats: PCAStats) -> PCA:
        """Fit from merged partial statistics (the distributed path)."""
        self._set_model(stats._native.fit(**_k_args(self.k_spec)))
        return self

    def transform_arrow(self, x: Any) -> pa.FixedSizeListArray:
        """Project rows; returns ``fixed_size_list<float32>[k]`` (null for null rows)."""
        return self._require().transform(_rows_array(x))

    def transform(self, x: Any) -> np.ndarray:
        """Project rows to ``[N, k]`` float32 scores: ``(x - mean_) @ components_.T``."""
        out = self.transform_arrow(x)
        if out.null_count:
            raise PCAError("some rows are null; use transform_arrow() to keep them as nulls")
        return out.values.to_numpy(zero_copy_only=False).reshape(len(out), self.k)

    def fit_transform(self, x: Any) -> np.ndarray:
        return self.fit(x).transform(x)

    def to_json(self) -> str:
        return self._require().to_json()

    @classmethod
    def from_json(cls, text: str) -> PCA:
        model = _native.PcaModel.from_json(text)
        pca = cls(_k_from_rule(model.k_rule, model.k))
        pca._set_model(model)
        return pca

    def save(self, path: PathLike) -> Path:
        """Write the fitted PCA as JSON (``format: fruitlens.pca``); atomic replace."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: PathLike) -> PCA:
        return cls.from_json(Path(path).read_text())

    def summary(self) -> dict[str, Any]:
        m = self._require()
        return {
            "k": m.k,
            "dim": m.dim,
            "n_samples": m.n_samples,
            "k_rule": m.k_rule,
            "explained_variance": float(np.sum(self.explained_variance_ratio_)),
        }

    def __repr__(self) -> str:
        if self._model is None:
            return f"PCA(k={self.k_spec!r})"
        return f"PCA(k={self.k}, dim={self._model.dim}, rule={self._model.k_rule!r})"


def _k_from_rule(rule: str, k: int) -> int | float:
    if rule.startswith("variance>="):
        return float(json.loads(rule.split(">=", 1)[1]))
    return k
