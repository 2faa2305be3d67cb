"""Python façade over the native core: decoding and embedding images.

All heavy work runs in Rust with the GIL released; this module only adapts inputs
(lists of bytes or file paths, numpy arrays, chunked arrays) to Arrow and outputs back.
PCA lives in :mod:`fruitlens._pca`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa

from . import _native
from ._common import PathLike
from ._files import read_local
from ._runtime import find_onnxruntime_library

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_PIXELS",
    "Embedder",
    "RESIZE_MODES",
    "decode",
]

DEFAULT_MAX_PIXELS: int = _native.DEFAULT_MAX_PIXELS
#: Images per ONNX Runtime run (small batches keep activations in cache).
DEFAULT_BATCH_SIZE: int = _native.DEFAULT_BATCH_SIZE
DEFAULT_MAX_BYTES: int = _native.DEFAULT_MAX_BYTES

ImagesLike = Union[
    pa.Array, pa.ChunkedArray, Sequence[Union[bytes, bytearray, memoryview, PathLike, None]]
]

_runtime_lock = threading.Lock()

#: Accepted values of ``resize``: ``"exact"`` (bit-identical to Pillow, the default) and
#: ``"fast"`` (large images reduced by libjpeg DCT scaling / an integer box reduce first).
RESIZE_MODES: tuple[str, ...] = ("exact", "fast")


def _check_resize(resize: str) -> str:
    if not isinstance(resize, str) or resize not in RESIZE_MODES:
        raise ValueError(f'resize must be "exact" or "fast", got {resize!r}')
    return resize


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


def decode(
    images: ImagesLike,
    *,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int | None = None,
    resize: str = "exact",
) -> pa.RecordBatch:
    """Decode, resize (bicubic, as Pillow) and normalise (``x/127.5 - 1``) images.

    ``images``: encoded images (bytes-like) or paths of image files (``str``/
    ``os.PathLike``; a file that cannot be read is that row's ``unreadable`` error).

    Returns a :class:`pyarrow.RecordBatch` (one row per image, in order) with ``pixels``
    (``fixed_size_list<float32>[size·size·3]``: one image's NHWC values flattened, null for
    failed rows) and ``error`` (``utf8``, null when fine; otherwise ``"<kind>: <detail>"``).
    The ``[n, size, size, 3]`` tensors of the rows that decoded:
    ``batch.column("pixels").flatten().to_numpy().reshape(-1, size, size, 3)``.

    ``resize``: ``"exact"`` (default) is bit-identical to Pillow's
    ``open → convert("RGB") → resize((size, size))``; ``"fast"`` first reduces large
    images cheaply (JPEG: libjpeg DCT scaling, as Pillow's ``draft``; other formats: an
    integer box reduce), keeping at least twice ``size`` on both axes, then resizes the
    same way (see :data:`RESIZE_MODES`).
    """
    resize = _check_resize(resize)
    array, errors = _as_binary_array(images, max_bytes)
    batch = _native.decode(
        array,
        size=size,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
        threads=threads,
        resize=resize,
    )
    return _with_errors(batch, errors)


class Embedder:
    """MobileNetV2 embeddings of encoded images with ONNX Runtime.

    ``model_path`` is an ONNX model with input ``[N, S, S, 3]`` float32 and output
    ``[N, D]`` (see :func:`fruitlens.convert_keras`). ``threads`` is the number of
    ONNX Runtime intra-op threads and decode threads (default: ``OMP_NUM_THREADS`` or
    the CPU count). ``resize``: ``"exact"`` (default, bit-identical to Pillow) or
    ``"fast"`` (large images reduced cheaply before the bicubic resize; see
    :func:`decode`). Safe to share between threads (calls are serialised) and across
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
        resize: str = "exact",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.resize = _check_resize(resize)
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
            resize=self.resize,
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
            f"output_dim={self.output_dim}, threads={self.threads}, resize={self.resize!r})"
        )
