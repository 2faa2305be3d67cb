"""Writing the fruitlens ONNX feature model: from Keras weights (:func:`convert_keras`) or
from seeded random weights (:func:`build_random_model`, for tests).

Public through :mod:`fruitlens.models`; a module of its own so that weight fetching
(:mod:`fruitlens._fetch`, which converts what it downloads) and :mod:`fruitlens.models`
(which re-exports the fetchers) both import it without importing each other.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ._common import PathLike, sha256_file, write_atomic
from ._errors import ModelError
from ._keras_weights import read_keras_weights
from ._onnx_graph import LAYERS, Weights, build_graph, metadata

__all__ = ["MIN_INPUT_SIZE", "build_random_model", "convert_keras"]

logger = logging.getLogger(__name__)

#: Smallest input size ``keras.applications.MobileNetV2`` accepts.
MIN_INPUT_SIZE = 32


def _check_input_size(input_size: int) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise ModelError(f"input_size must be an int, got {input_size!r}")
    if input_size < MIN_INPUT_SIZE:
        raise ModelError(f"input_size must be at least {MIN_INPUT_SIZE}, got {input_size}")
    return int(input_size)


def convert_keras(h5_path: PathLike, onnx_path: PathLike, *, input_size: int = 224) -> Path:
    """Convert Keras MobileNetV2 weights to the fruitlens ONNX feature extractor.

    Args:
        h5_path: a Keras MobileNetV2 (alpha=1.0) weights file: full-model ``.h5``,
            ``save_weights``/keras-applications ``.h5``, Keras 3 ``.weights.h5`` or
            ``.keras``. Any top (classifier) layers are ignored.
        onnx_path: where to write the model (atomically; parent dirs are created).
        input_size: the square input side ``S`` of the model (the same weights work
            at any size; Keras' pretrained sizes are 96, 128, 160, 192, 224).

    Returns:
        ``onnx_path`` as a :class:`~pathlib.Path`.

    Raises:
        ModelError: the file is missing, unreadable, lacks MobileNetV2 layers or has
            a weight of the wrong shape, or ``onnx``/``h5py`` are not installed.
    """
    size = _check_input_size(input_size)
    source = Path(h5_path)
    weights, layout = read_keras_weights(source)
    meta = metadata(size, f"{source.name} sha256:{sha256_file(source)}", layout)
    model = build_graph(weights, size, meta)
    path = write_atomic(onnx_path, model.SerializeToString())
    logger.info("converted %s (%s) to %s at %dx%d", source, layout, path, size, size)
    return path


def _random_weights(seed: int) -> Weights:
    """Seeded MobileNetV2 weights with He-normal kernels and near-identity BN."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for layer in LAYERS:
        kh, kw, fan_in, _ = layer.kernel_shape
        if not layer.depthwise:
            fan_in *= kh * kw
        else:
            fan_in = kh * kw
        std = math.sqrt(2.0 / fan_in)
        n = layer.out_channels
        weights[layer.name] = {
            "kernel": rng.normal(0.0, std, layer.kernel_shape).astype(np.float32)
        }
        # Project layers feed residual sums without an activation: keep them smaller.
        gain = 1.0 if layer.relu6 else 0.5
        weights[layer.bn] = {
            "gamma": (gain * rng.uniform(0.8, 1.2, n)).astype(np.float32),
            "beta": rng.normal(0.0, 0.1, n).astype(np.float32),
            "moving_mean": rng.normal(0.0, 0.1, n).astype(np.float32),
            "moving_variance": rng.uniform(0.8, 1.2, n).astype(np.float32),
        }
    return weights


def build_random_model(onnx_path: PathLike, *, input_size: int = 96, seed: int = 0) -> Path:
    """Write the same MobileNetV2 graph with seeded random weights (for fast tests).

    The weights are He-normal with near-identity BatchNormalization, so activations
    stay in a realistic range and the features are finite, non-trivial numbers in
    ``[0, 6]``. The same ``seed`` and ``input_size`` give a byte-identical file.
    """
    size = _check_input_size(input_size)
    meta = metadata(size, f"random(seed={seed})", "random")
    model = build_graph(_random_weights(seed), size, meta)
    path = write_atomic(onnx_path, model.SerializeToString())
    logger.info("built random MobileNetV2 (seed=%d) at %dx%d: %s", seed, size, size, path)
    return path
