"""Recognise the fruit: a classification head over MobileNetV2 features, and
:class:`Classifier`, which runs an exported ``classifier.onnx`` on images.

A *head* is the part trained on features: an optional PCA projection, then a linear
layer and a softmax::

    probabilities = softmax(((x - mean) @ components.T) @ coef.T + intercept)

``fruitlens train`` (or :func:`fruitlens.spark.train_classifier`) fits it on Spark and
exports MobileNetV2 + head as one ONNX graph (``MODEL_DIR/classifier.onnx``) whose
``metadata_props`` hold the class names; :class:`Classifier` reads that file only, so
it is what the app, ``fruitlens predict`` and ``fruitlens serve`` all run.

>>> clf = fruitlens.Classifier("models/fruits")
>>> clf.predict(["apple.jpg"], top=5).to_pylist()[0]["label"]
'Apple Red 1'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ._common import PathLike, write_atomic
from ._core import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Embedder, ImagesLike
from ._errors import ModelError
from ._pca import PCA

__all__ = [
    "CLASSIFIER_FILE",
    "CLASSIFIER_INT8_FILE",
    "CLASSIFIER_UINT8_FILE",
    "HEAD_FILE",
    "META_INPUT_SIZE",
    "META_KIND",
    "META_LABELS",
    "META_PREPROCESS",
    "META_PROVENANCE",
    "REPORT_FILE",
    "Classifier",
    "Head",
    "top_k",
]

#: Files of a MODEL_DIR written by ``fruitlens train``.
CLASSIFIER_FILE = "classifier.onnx"
CLASSIFIER_UINT8_FILE = "classifier_uint8.onnx"
CLASSIFIER_INT8_FILE = "classifier_int8.onnx"
HEAD_FILE = "head.json"
REPORT_FILE = "report.json"

#: ``metadata_props`` keys of an exported classifier.
META_LABELS = "labels"
META_INPUT_SIZE = "input_size"
META_PREPROCESS = "preprocess"
META_PROVENANCE = "provenance"
META_KIND = "fruitlens.kind"

_HEAD_FORMAT = "fruitlens.head"


class Head:
    """A linear softmax classifier over features, optionally after a PCA projection.

    ``coef`` is ``[C, m]`` and ``intercept`` ``[C]`` for ``C = len(labels)`` classes;
    ``m`` is ``pca.k`` when ``pca`` is given (the head sees PCA projections), else the
    feature length.
    """

    def __init__(
        self,
        labels: Sequence[str],
        coef: Any,
        intercept: Any,
        pca: PCA | None = None,
    ) -> None:
        self.labels = [str(label) for label in labels]
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
        self.pca = pca
        self._check()

    def _check(self) -> None:
        c = len(self.labels)
        if c < 2 or len(set(self.labels)) != c:
            raise ModelError(f"a classifier needs at least 2 distinct labels, got {self.labels!r}")
        if self.coef.ndim != 2 or self.coef.shape[0] != c or self.intercept.shape != (c,):
            raise ModelError(
                f"coef must be [{c}, m] and intercept [{c}], got {self.coef.shape} and "
                f"{self.intercept.shape}"
            )
        if self.pca is not None and self.coef.shape[1] != self.pca.k:
            raise ModelError(
                f"coef has {self.coef.shape[1]} columns but the PCA keeps {self.pca.k}"
            )
        if not (np.isfinite(self.coef).all() and np.isfinite(self.intercept).all()):
            raise ModelError("the head's coefficients are not all finite")

    @property
    def on(self) -> str:
        """``"pca"`` when the head sees PCA projections, ``"features"`` otherwise."""
        return "pca" if self.pca is not None else "features"

    @property
    def input_dim(self) -> int:
        """Length of the feature vectors the head takes (1280 for MobileNetV2)."""
        return self.pca.summary()["dim"] if self.pca is not None else int(self.coef.shape[1])

    @property
    def mean(self) -> np.ndarray | None:
        """The PCA mean ``[D]`` (float32), or None without PCA."""
        return None if self.pca is None else self._pca_arrays()[0]

    @property
    def components(self) -> np.ndarray | None:
        """The PCA components ``[k, D]`` (float32), or None without PCA."""
        return None if self.pca is None else self._pca_arrays()[1]

    def _pca_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.pca is not None
        data = json.loads(self.pca.to_json())
        mean = np.asarray(data["mean"], dtype=np.float32)
        components = np.asarray(data["components"], dtype=np.float32).reshape(data["k"], -1)
        return mean, components

    def logits(self, features: Any) -> np.ndarray:
        """``[N, C]`` scores before the softmax (float64)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"features must be [N, {self.input_dim}], got {x.shape}")
        z = self.pca.transform(x) if self.pca is not None else x
        return np.asarray(z, dtype=np.float64) @ self.coef.T + self.intercept

    def probabilities(self, features: Any) -> np.ndarray:
        """``[N, C]`` class probabilities (float32) of ``[N, D]`` features."""
        return softmax(self.logits(features)).astype(np.float32)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _HEAD_FORMAT,
                "version": 1,
                "labels": self.labels,
                "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(),
                "pca": None if self.pca is None else json.loads(self.pca.to_json()),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Head:
        try:
            data = json.loads(text)
            if data.get("format") != _HEAD_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {_HEAD_FORMAT!r}")
            pca = None if data["pca"] is None else PCA.from_json(json.dumps(data["pca"]))
            return cls(data["labels"], data["coef"], data["intercept"], pca)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"not a fruitlens classifier head: {exc}") from exc

    def save(self, path: PathLike) -> Path:
        """Write the head as JSON (atomically); returns the path."""
        path = Path(path)
        write_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: PathLike) -> Head:
        """Read a head written by :meth:`save` (a file, or a MODEL_DIR with ``head.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / HEAD_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"cannot read the classifier head {path}: {exc}") from exc
        return cls.from_json(text)

    def __repr__(self) -> str:
        return f"Head({len(self.labels)} classes, on={self.on}, m={self.coef.shape[1]})"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best classes of each row: ``(idx [N, k] int64, scores [N, k] float32)``,
    best first; equal scores rank the lower class index first."""
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be [N, C], got shape {p.shape}")
    k = max(0, min(int(k), p.shape[1]))
    idx = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int64)
    return idx, np.take_along_axis(p, idx, axis=1)


_TOP_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))
PREDICTION_SCHEMA = pa.schema(
    [("label", pa.string()), ("score", pa.float32()), ("top", _TOP_TYPE), ("error", pa.string())]
)


def prediction_batch(
    probs: np.ndarray, errors: Sequence[str | None], labels: Sequence[str], top: int
) -> pa.RecordBatch:
    """Predictions as Arrow: ``label``, ``score``, ``top`` (best ``top`` classes with
    their scores) and ``error``; rows with an error have null label, score and top."""
    n = len(errors)
    ok = np.array([e is None for e in errors], dtype=bool)
    clean = np.where(ok[:, None], probs, 0.0) if n else np.zeros((0, len(labels)), np.float32)
    idx, scores = top_k(clean, max(1, top))
    names = pa.array(list(labels), pa.string())
    k = idx.shape[1] if top > 0 else 0
    flat_idx = idx[ok, :k].reshape(-1)
    values = pa.StructArray.from_arrays(
        [names.take(pa.array(flat_idx)), pa.array(scores[ok, :k].reshape(-1), pa.float32())],
        names=["label", "score"],
    )
    counts = np.where(ok, k, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    offsets_arr = pa.array(offsets, pa.int32(), mask=np.concatenate([~ok, [False]]))
    return pa.RecordBatch.from_arrays(
        [
            names.take(pa.array(idx[:, 0], pa.int64(), mask=~ok)),  # null where failed
            pa.array(scores[:, 0], pa.float32(), mask=~ok),
            pa.ListArray.from_arrays(offsets_arr, values).cast(_TOP_TYPE),
            pa.array(list(errors), pa.string()),
        ],
        schema=PREDICTION_SCHEMA,
    )


def _labels_from_metadata(path: Path, metadata: dict[str, str], classes: int) -> list[str]:
    text = metadata.get(META_LABELS)
    if text is None:
        raise ModelError(
            f"{path} is not a fruitlens classifier (no '{META_LABELS}' metadata): train one "
            "with `fruitlens train`"
        )
    try:
        labels = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"{path}: the '{META_LABELS}' metadata is not JSON: {exc}") from exc
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"{path}: the '{META_LABELS}' metadata is not a list of strings")
    if len(labels) != classes:
        raise ModelError(f"{path}: {len(labels)} labels for {classes} model outputs")
    return labels


def resolve_model(model: PathLike) -> Path:
    """The classifier ONNX file of ``model``: a MODEL_DIR (its ``classifier.onnx``) or a file."""
    path = Path(model)
    if path.is_dir():
        path = path / CLASSIFIER_FILE
    if not path.is_file():
        raise ModelError(
            f"no classifier at {path}: pass a MODEL_DIR written by `fruitlens train` "
            f"(with {CLASSIFIER_FILE}) or a classifier .onnx file"
        )
    return path


class Classifier:
    """Run an exported classifier (MobileNetV2 + head, one ONNX file) on images.

    ``model``: a MODEL_DIR written by ``fruitlens train`` (its ``classifier.onnx`` is
    used) or the path of a classifier ``.onnx`` (e.g. ``classifier_int8.onnx``). Images
    are decoded exactly as :class:`fruitlens.Embedder` does, and a bad image is that
    row's error, never an exception. Safe to share between threads.
    """

    def __init__(
        self,
        model: PathLike,
        *,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = resolve_model(model)
        self._embedder = Embedder(
            self.path,
            threads=threads,
            batch_size=batch_size,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
        )
        self.metadata: dict[str, str] = dict(self._embedder._native.metadata)
        self.labels = _labels_from_metadata(self.path, self.metadata, self._embedder.output_dim)

    @property
    def input_size(self) -> int:
        """S of the S x S images the model takes."""
        return self._embedder.input_size

    @property
    def threads(self) -> int:
        return self._embedder.threads

    @property
    def max_bytes(self) -> int:
        """Encoded images larger than this are ``too_many_bytes`` errors."""
        return self._embedder.max_bytes

    @property
    def max_pixels(self) -> int:
        """Images with more pixels than this are refused (``too_many_pixels``)."""
        return self._embedder.max_pixels

    @property
    def provenance(self) -> dict[str, Any]:
        """Training provenance stored in the model (data, date, accuracy, version)."""
        try:
            value = json.loads(self.metadata.get(META_PROVENANCE, "{}"))
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def probabilities(self, images: ImagesLike) -> tuple[np.ndarray, list[str | None]]:
        """``(probs [N, C] float32, errors)``: rows that failed are NaN with their error."""
        batch = self._embedder.embed(images)
        errors = batch.column("error").to_pylist()
        column = batch.column("features")
        probs = np.full((len(errors), len(self.labels)), np.nan, dtype=np.float32)
        ok = np.array([e is None for e in errors], dtype=bool)
        if ok.any():
            values = column.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False)
            probs[ok] = values.reshape(-1, len(self.labels))
        return probs, errors

    def predict(self, images: ImagesLike, top: int = 5) -> pa.RecordBatch:
        """Predict the class of each image: a RecordBatch with ``label`` (best class),
        ``score`` (its probability), ``top`` (the ``top`` best, as ``{label, score}``)
        and ``error`` (null when fine, else ``"<kind>: <detail>"``), one row per image."""
        if top < 0:
            raise ValueError(f"top must be at least 0, got {top}")
        probs, errors = self.probabilities(images)
        return prediction_batch(probs, errors, self.labels, top)

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, {len(self.labels)} classes)"
