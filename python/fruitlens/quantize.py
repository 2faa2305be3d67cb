"""Static int8 quantization (QDQ) of a fruitlens ONNX model, calibrated on real images.

A fast mode, off by default: on CPUs with AVX-512 VNNI / AVX-VNNI ONNX Runtime runs the
int8 convolutions markedly faster, at a small accuracy cost that
``benchmarks/bench_modes.py`` measures as linear-probe accuracy.

Needs ``onnxruntime`` (its ``quantization`` tools) and ``onnx`` (``fruitlens[convert]``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import IMAGE_EXTENSIONS, PathLike
from ._core import decode
from ._errors import ModelError
from ._model_info import model_info

__all__ = ["calibration_images", "quantize_model"]

logger = logging.getLogger(__name__)

#: ``method`` → the name of its ``onnxruntime.quantization.CalibrationMethod``.
_METHODS = {"percentile": "Percentile", "minmax": "MinMax", "entropy": "Entropy"}


def calibration_images(folder: PathLike, limit: int = 256, seed: int = 0) -> list[Path]:
    """A deterministic, class-balanced-ish sample of image files under ``folder``."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ModelError(f"no images found under {folder} to calibrate the quantized model")
    rng = np.random.default_rng(seed)
    if len(files) > limit:
        idx = np.sort(rng.choice(len(files), size=limit, replace=False))
        files = [files[i] for i in idx]
    return files


def _quantization_tools() -> Any:
    """``onnxruntime.quantization``, imported lazily: it needs ``onnx`` (the optional extra
    ``fruitlens[convert]``) and is slow to import."""
    try:
        import onnxruntime.quantization as quantization
        import onnxruntime.quantization.shape_inference  # noqa: F401  (quant_pre_process)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(
            "quantization needs onnxruntime's quantization tools and onnx: "
            "pip install 'fruitlens[convert]'"
        ) from exc
    return quantization


def _calibration_batches(
    paths: list[Path], size: int, input_name: str, batch_size: int
) -> Iterator[dict[str, Any]]:
    """The model inputs for the images, decoded exactly as at inference (failed images
    are left out), in batches of exactly ``batch_size`` images: ONNX Runtime's histogram
    calibrators stack the batches, so a short last batch is dropped (unless it is the
    only one)."""
    pending: list[np.ndarray] = []
    sent = False
    for i in range(0, len(paths), batch_size):
        chunk = [p.read_bytes() for p in paths[i : i + batch_size]]
        batch = decode(chunk, size=size)
        px = batch.column("pixels").flatten().to_numpy(zero_copy_only=False)  # decoded rows
        pending.extend(px.reshape(-1, size, size, 3))
        while len(pending) >= batch_size:
            x, pending = np.stack(pending[:batch_size]), pending[batch_size:]
            sent = True
            yield {input_name: np.ascontiguousarray(x, dtype=np.float32)}
    if pending and not sent:
        yield {input_name: np.ascontiguousarray(np.stack(pending), dtype=np.float32)}


def _reader(quantization: Any, batches: Iterator[dict[str, Any]]) -> Any:
    """A ``CalibrationDataReader`` over ``batches`` (its class is only known once
    onnxruntime.quantization is imported)."""

    class Reader(quantization.CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, Any] | None:
            return next(batches, None)

    return Reader()


def quantize_model(
    model_path: PathLike,
    out_path: PathLike,
    images: Sequence[PathLike],
    *,
    batch_size: int = 16,
    per_channel: bool = True,
    method: str = "percentile",
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Write a static int8 QDQ version of ``model_path`` to ``out_path``.

    Activations are calibrated on ``images`` decoded exactly as at inference
    (``fruitlens.decode``), so the int8 ranges fit real photos. ``method`` is
    ``"percentile"`` (99.999th, the default: on the golden images it keeps features
    closest to fp32, mean cosine 0.929 vs 0.914 for min-max), ``"minmax"`` or
    ``"entropy"``. Weights are quantized
    per channel (signed int8), activations as unsigned int8 — the combination ONNX
    Runtime's VNNI kernels run fastest. ``nodes_to_exclude``: names of nodes kept in
    float32 (e.g. ``"Conv1"``, the stem convolution, the most sensitive layer).
    """
    quantization = _quantization_tools()
    if method not in _METHODS:
        raise ModelError(f"unknown calibration method {method!r}: use one of {sorted(_METHODS)}")
    info = model_info(model_path)
    paths = [Path(p) for p in images]
    if not paths:
        raise ModelError("quantization needs at least one calibration image")
    batches = _calibration_batches(paths, int(info["input_size"]), info["input_name"], batch_size)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quantization.shape_inference.quant_pre_process(
            str(model_path), str(pre), skip_symbolic_shape=True
        )
        staged = Path(tmp) / "int8.onnx"
        logger.info("calibrating int8 ranges on %d images", len(paths))
        quantization.quantize_static(
            str(pre),
            str(staged),
            _reader(quantization, batches),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=getattr(quantization.CalibrationMethod, _METHODS[method]),
            nodes_to_exclude=list(nodes_to_exclude),
        )
        _tag(staged, len(paths))
        os.replace(staged, out)
    return out


def _tag(path: Path, n_images: int) -> None:
    """Record the quantization in the model's ``fruitlens.*`` metadata."""
    import onnx  # optional extra (fruitlens[convert]); already loaded by the quantizer

    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    for key, value in {
        "fruitlens.quantization": "int8 static QDQ (u8 activations, s8 per-channel weights)",
        "fruitlens.calibration_images": str(n_images),
    }.items():
        if key in props:
            props[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
