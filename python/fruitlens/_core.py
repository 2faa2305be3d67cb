"""Python façade over the native core: argument handling and Arrow/numpy conversion.

All heavy work runs in Rust with the GIL released; this module only adapts inputs
(lists of bytes or file paths, numpy arrays, chunked arrays, record batches) to Arrow
and outputs back.
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
from ._files import read_local
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

PathLike = Union[str, "os.PathLike[str]"]
ImagesLike = Union[
    pa.Array, pa.ChunkedArray, Sequence[Union[bytes, bytearray, memoryview, PathLike, None]]
]

_runtime_lock = threading.Lock()


def _ensure_runtime() -> Path:
    """Load ONNX Runtime once per process (lazily: never at import time)."""
    with _runtime_lock:
        return Path(_native.init_runtime(str(find_onnxruntime_library())))


def _as_binary_array(
    images: ImagesLike, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[pa.Array, dict[int, str]]:
    """Images as an Arrow binary array, plus the error of each row whose file could not be
    read (``{row: "unreadable: ..."}``; that row is null in the array)."""
    if isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks() if images.num_chunks != 1 else images.chunk(0)
    if isinstance(images, pa.Array):
        if pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type):
            return images, {}
        if pa.types.is_binary_view(images.type):
            return images.cast(pa.large_binary()), {}
        raise TypeError(
            f"images must be a binary or large_binary Arrow array, got {images.type} "
            "(to read files, pass a list of paths: str or os.PathLike)"
        )
    if isinstance(images, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise TypeError(
            "images must be a sequence of bytes objects or file paths (str/os.PathLike), "
            f"not a single {type(images).__name__}: wrap it in a list"
        )
    values: list[bytes | None] = []
    errors: dict[int, str] = {}
    for i, v in enumerate(images):
        if v is None:
            values.append(None)
        elif isinstance(v, (str, os.PathLike)):
            data, error = read_local(os.fsdecode(v), v, max_bytes)
            values.append(data)
            if error is not None:
                errors[i] = error
        else:
            values.append(bytes(v))
    total = sum(len(v) for v in values if v is not None)
    array = pa.array(values, type=pa.large_binary() if total >= 2**31 - 1 else pa.binary())
    return array, errors


def _with_errors(batch: pa.RecordBatch, errors: dict[int, str]) -> pa.RecordBatch:
    """``batch`` with the given rows' ``error`` replaced (files that could not be read)."""
    if not errors:
        return batch
    index = batch.schema.get_field_index("error")
    messages = batch.column(index).to_pylist()
    for row, message in errors.items():
        messages[row] = message
    columns = list(batch.columns)
    columns[index] = pa.array(messages, type=batch.schema.field(index).type)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _features_column(table: pa.RecordBatch | pa.Table) -> Any:
    """The ``features`` column of what :meth:`Embedder.embed` returns (or a table of it)."""
    if "features" not in table.schema.names:
        raise PCAError(
            "expected rows of features: this record batch/table has no 'features' column "
            f"(columns: {', '.join(table.schema.names) or 'none'})"
        )
    return table.column("features")


def _rows_array(x: Any, what: str = "x") -> pa.Array:
    """Rows of floats as an Arrow list-like array (zero-copy for float32 numpy).

    ``x``: numpy/array-like ``[N, D]``, an Arrow list array (null rows are failed images),
    or a record batch/table with a ``features`` column (what :meth:`Embedder.embed` returns).
    """
    if isinstance(x, (pa.RecordBatch, pa.Table)):
        x = _features_column(x)
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

    ``images``: encoded images (bytes-like) or paths of image files (``str``/
    ``os.PathLike``; a file that cannot be read is that row's ``unreadable`` error).

    Returns a :class:`pyarrow.RecordBatch` (one row per image, in order) with ``pixels``
    (``fixed_size_list<float32>[size·size·3]``: one image's NHWC values flattened, null for
    failed rows) and ``error`` (``utf8``, null when fine; otherwise ``"<kind>: <detail>"``).
    The ``[n, size, size, 3]`` tensors of the rows that decoded:
    ``batch.column("pixels").flatten().to_numpy().reshape(-1, size, size, 3)``.
    """
    array, errors = _as_binary_array(images, max_bytes)
    batch = _native.decode(
        array,
        size=size,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        threads=threads,
    )
    return _with_errors(batch, errors)


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
        """Embed images: encoded bytes, or paths of image files (``str``/``os.PathLike``).

        Returns a :class:`pyarrow.RecordBatch`, one row per image in order: ``features``
        (``fixed_size_list<float32>[D]``, null where the image failed) and ``error``
        (``utf8``: null when fine, else ``"<kind>: <detail>"``). A bad image never raises:
        it gets its own error and the other rows are the same as in a batch without it;
        a file that cannot be read (missing, a folder, a FIFO...) is an ``unreadable``
        error. The batch can be given as is to :func:`pca_stats`, :meth:`PCA.fit` and
        :meth:`PCA.transform_arrow` (they use its ``features``, skipping failed rows).
        """
        array, errors = _as_binary_array(images, self.max_bytes)
        batch = self._native.embed(
            array,
            max_pixels=self.max_pixels,
            max_bytes=self.max_bytes,
            batch_size=self.batch_size,
        )
        return _with_errors(batch, errors)

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
        """Add rows (numpy ``[N, D]``, an Arrow list array, or a record batch/table with a
        ``features`` column such as :meth:`Embedder.embed` returns; null rows are skipped).
        """
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
    """Partial PCA statistics of one batch of rows: numpy ``[N, D]``, an Arrow list array,
    or a record batch/table with a ``features`` column (what :meth:`Embedder.embed`
    returns). Null rows (failed images) are skipped."""
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
        """Fit on rows: numpy ``[N, D]``, an Arrow list array, or a record batch/table with
        a ``features`` column (what :meth:`Embedder.embed` returns); null rows skipped."""
        return self.fit_stats(pca_stats(x))

    def fit_stats(self, stats: PCAStats) -> PCA:
        """Fit from merged partial statistics (the distributed path)."""
        self._set_model(stats._native.fit(**_k_args(self.k_spec)))
        return self

    def transform_arrow(self, x: Any) -> pa.FixedSizeListArray:
        """Project rows (as :meth:`fit` takes them); returns ``fixed_size_list<float32>[k]``,
        one per row, null for null rows (failed images)."""
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
        """Load a saved PCA. Inside a ``fruitlens run`` output (``OUTPUT/_pca/pca.json``)
        the file is checked against the output's ``_SUCCESS`` manifest first
        (:class:`~fruitlens.OutputError` if it does not belong to the committed output)."""
        from .output import checked_read

        return cls.from_json(checked_read(path).decode("utf-8"))

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
        try:
            return float(json.loads(rule.split(">=", 1)[1]))
        except (TypeError, ValueError) as exc:  # a damaged or hand-edited model file
            raise PCAError(f"not a fruitlens PCA model file: bad k_rule {rule!r}") from exc
    return k
