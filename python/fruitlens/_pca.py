"""PCA over feature rows, fitted in Rust: mergeable statistics (:class:`PCAStats`,
:func:`pca_stats`) and the fitted projection (:class:`PCA`).

The rows are numpy ``[N, D]``, Arrow list arrays or what :meth:`fruitlens.Embedder.embed`
returns (a record batch with a ``features`` column); null rows (failed images) are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import _native
from ._common import PathLike, write_atomic
from ._errors import PCAError
from ._k import k_from_rule, native_k_args
from ._manifest import checked_read

__all__ = ["PCA", "PCAStats", "pca_stats"]


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


def _infer_dim(rows: pa.Array) -> int:
    if pa.types.is_fixed_size_list(rows.type):
        return rows.type.list_size
    for value in rows:
        if value.is_valid:
            return len(value)
    raise PCAError("cannot infer the dimension: every row is null")


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


class PCA:
    """Centred PCA (like ``sklearn.decomposition.PCA``), fitted in Rust.

    ``k`` is a number of components (int) or the explained-variance fraction to reach
    (float in (0, 1], default 0.95: the smallest k whose cumulative ratio ≥ k).
    Components are sign-normalised (each one's largest-magnitude entry is positive).
    """

    def __init__(self, k: int | float = 0.95) -> None:
        native_k_args(k)
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
        self._set_model(stats._native.fit(**native_k_args(self.k_spec)))
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
        pca = cls(k_from_rule(model.k_rule, model.k))
        pca._set_model(model)
        return pca

    def save(self, path: PathLike) -> Path:
        """Write the fitted PCA as JSON (``format: fruitlens.pca``); atomic replace."""
        return write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: PathLike) -> PCA:
        """Load a saved PCA. Inside a ``fruitlens run`` output (``OUTPUT/_pca/pca.json``)
        the file is checked against the output's ``_SUCCESS`` manifest first
        (:class:`~fruitlens.OutputError` if it does not belong to the committed output)."""
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
