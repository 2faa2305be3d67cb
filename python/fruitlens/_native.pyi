"""Type stubs for the native module ``fruitlens._native`` (Rust, pyo3).

Checked against the built module by ``python -m mypy.stubtest fruitlens._native``
(tests/test_stubs.py). A default written ``...`` is a Rust constant (the module
attribute of the same name), which pyo3 does not show as a literal.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any, Optional, Union, final

import pyarrow as pa

__all__ = [
    "decode",
    "init_runtime",
    "default_threads",
    "Embedder",
    "PcaStats",
    "PcaModel",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_BATCH_SIZE",
    "MAX_SIZE",
    "MAX_PCA_DIM",
    "MAX_THREADS",
    "MAX_THREADS_CAP",
    "__version__",
]

__version__: str
DEFAULT_MAX_PIXELS: int
DEFAULT_BATCH_SIZE: int
DEFAULT_MAX_BYTES: int
#: Largest model input side (size) accepted.
MAX_SIZE: int
#: Largest thread count accepted on this machine (4 per CPU, at least 8, at most 256).
MAX_THREADS: int
#: Largest thread count accepted anywhere.
MAX_THREADS_CAP: int
#: Largest PCA dimension accepted.
MAX_PCA_DIM: int

_Path = Union[str, PathLike[str]]
_ArrowArray = Any  # any object implementing __arrow_c_array__

def decode(
    images: _ArrowArray,
    size: int = 224,
    max_pixels: int = ...,
    max_bytes: int = ...,
    threads: Optional[int] = None,
    resize: str = "exact",
) -> pa.RecordBatch: ...
def init_runtime(path: Optional[_Path] = None) -> Path:
    """Load ONNX Runtime from ``path`` (or the environment); returns the loaded path."""

def default_threads() -> int:
    """Threads used when none is given: ``OMP_NUM_THREADS`` if set, else the CPU count
    (at most :data:`MAX_THREADS`)."""

@final
class Embedder:
    def __new__(
        cls,
        model_path: _Path,
        threads: Optional[int] = None,
        runtime_path: Optional[_Path] = None,
    ) -> Embedder: ...
    @property
    def input_size(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def threads(self) -> int: ...
    @property
    def metadata(self) -> dict[str, str]: ...
    @property
    def model_path(self) -> Path: ...
    def embed(
        self,
        images: _ArrowArray,
        max_pixels: int = ...,
        max_bytes: int = ...,
        batch_size: int = ...,
        resize: str = "exact",
    ) -> pa.RecordBatch: ...
    def embed_tensors(self, x: _ArrowArray, batch_size: int = ...) -> pa.FloatArray: ...

@final
class PcaStats:
    def __new__(cls, dim: int) -> PcaStats: ...
    @property
    def dim(self) -> int: ...
    @property
    def count(self) -> int: ...
    def update(self, rows: _ArrowArray) -> int: ...
    def merge(self, other: PcaStats) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> PcaStats: ...
    def fit(self, k: Optional[int] = None, variance: Optional[float] = None) -> PcaModel: ...

@final
class PcaModel:
    @property
    def k(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def total_variance(self) -> float: ...
    @property
    def k_rule(self) -> str: ...
    @property
    def mean(self) -> pa.DoubleArray: ...
    @property
    def components(self) -> pa.DoubleArray: ...
    @property
    def explained_variance(self) -> pa.DoubleArray: ...
    @property
    def explained_variance_ratio(self) -> pa.DoubleArray: ...
    def transform(self, rows: _ArrowArray) -> pa.FixedSizeListArray: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(text: str) -> PcaModel: ...
