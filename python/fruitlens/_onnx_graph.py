"""MobileNetV2 (alpha=1.0, no top, average pooling) as an ONNX graph, op by op.

The architecture (:data:`LAYERS`, :data:`BLOCKS`, :func:`expected_shapes`) is that of
``keras.applications.MobileNetV2``; :func:`build_graph` turns checked Keras weights into
the feature-extractor model that fruitlens runs:

* input ``input``: float32 NHWC ``[N, S, S, 3]`` (dynamic batch ``N``), already
  preprocessed as ``x / 127.5 - 1``; the graph transposes to NCHW itself;
* output ``features``: float32 ``[N, 1280]`` (global-average-pooled ``out_relu``);
* every BatchNormalization (epsilon 1e-3) is folded into the convolution before it
  (computed in float64, stored as float32), ReLU6 is ``Clip(0, 6)``, and stride-2
  layers use TensorFlow "same" padding (``pad_before = total // 2``), exactly like
  Keras' ``padding="same"`` and ``ZeroPadding2D(correct_pad(...))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import FEATURE_DIM
from ._errors import ModelError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ARCH",
    "BLOCKS",
    "BN_WEIGHTS",
    "INPUT_NAME",
    "LAYERS",
    "META_INPUT_SIZE",
    "OUTPUT_NAME",
    "PREPROCESS",
    "Weights",
    "build_graph",
    "expected_shapes",
    "import_onnx",
    "metadata",
]

#: Value of the ``fruitlens.arch`` metadata entry.
ARCH = "mobilenet_v2_1.0"
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

META_INPUT_SIZE = "fruitlens.input_size"
_META_ARCH = "fruitlens.arch"
_META_SOURCE = "fruitlens.source"
_META_PREPROCESS = "fruitlens.preprocess"
_META_LAYOUT = "fruitlens.weights_layout"

BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")

# (output filters, stride, expansion) of the 17 inverted-residual blocks, as in
# keras.applications.MobileNetV2 with alpha=1.0 (_make_divisible is the identity).
_BLOCK_SPECS = (
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
class ConvLayer:
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
class Block:
    """Consecutive layers; ``residual`` adds the block input to its output."""

    layers: tuple[ConvLayer, ...]
    residual: bool = False


def _architecture() -> tuple[Block, ...]:
    """Return MobileNetV2 (alpha=1.0, no top) as blocks, layers in Keras order."""
    stem = ConvLayer("Conv1", "bn_Conv1", 3, _STEM_FILTERS, kernel_size=3, stride=2)
    blocks = [Block((stem,))]
    channels = _STEM_FILTERS
    for index, (filters, stride, expansion) in enumerate(_BLOCK_SPECS):
        p = f"block_{index}_" if index else "expanded_conv_"
        hidden = channels * expansion
        layers = []
        if expansion != 1:
            layers.append(ConvLayer(f"{p}expand", f"{p}expand_BN", channels, hidden))
        layers.append(
            ConvLayer(
                f"{p}depthwise",
                f"{p}depthwise_BN",
                hidden,
                hidden,
                kernel_size=3,
                stride=stride,
                depthwise=True,
            )
        )
        layers.append(ConvLayer(f"{p}project", f"{p}project_BN", hidden, filters, relu6=False))
        residual = stride == 1 and channels == filters
        blocks.append(Block(tuple(layers), residual=residual))
        channels = filters
    blocks.append(Block((ConvLayer("Conv_1", "Conv_1_bn", channels, FEATURE_DIM),)))
    return tuple(blocks)


#: MobileNetV2 as blocks of layers, in Keras order.
BLOCKS = _architecture()
#: Every convolution layer, in Keras order.
LAYERS: tuple[ConvLayer, ...] = tuple(layer for block in BLOCKS for layer in block.layers)


def expected_shapes() -> dict[tuple[str, str], tuple[int, ...]]:
    """Every weight MobileNetV2 needs: ``(layer, weight) -> shape``, in layer order."""
    shapes: dict[tuple[str, str], tuple[int, ...]] = {}
    for layer in LAYERS:
        shapes[(layer.name, "kernel")] = layer.kernel_shape
        for weight in BN_WEIGHTS:
            shapes[(layer.bn, weight)] = (layer.out_channels,)
    return shapes


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one spatial axis: ``(before, after)``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def metadata(input_size: int, source: str, layout: str) -> dict[str, str]:
    """The ``fruitlens.*`` metadata entries of a generated model."""
    return {
        META_INPUT_SIZE: str(input_size),
        _META_ARCH: ARCH,
        _META_SOURCE: source,
        _META_PREPROCESS: PREPROCESS,
        _META_LAYOUT: layout,
    }


# --------------------------------------------------------------------------------------
# Building the graph
# --------------------------------------------------------------------------------------


def import_onnx() -> Any:
    """The ``onnx`` package, imported lazily: it is the optional extra ``fruitlens[convert]``."""
    try:
        import onnx  # optional extra, and slow to import: only when building/inspecting
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise ModelError(
            "building or inspecting ONNX models needs the 'onnx' package: "
            "pip install 'fruitlens[convert]'"
        ) from exc
    return onnx


def fold_bn(layer: ConvLayer, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """Fold BatchNormalization into the convolution: ONNX ``(W, B)`` in float32."""
    kernel = weights[layer.name]["kernel"].astype(np.float64)
    bn = {k: weights[layer.bn][k].astype(np.float64) for k in BN_WEIGHTS}
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + BN_EPSILON)
    bias = bn["beta"] - bn["moving_mean"] * scale
    # Keras (kh, kw, in, out) -> ONNX (out, in, kh, kw);
    # depthwise (kh, kw, c, 1) -> (c, 1, kh, kw), one group per channel.
    onnx_kernel = kernel.transpose(2, 3, 0, 1) if layer.depthwise else kernel.transpose(3, 2, 0, 1)
    onnx_kernel = onnx_kernel * scale[:, None, None, None]
    return onnx_kernel.astype(np.float32), bias.astype(np.float32)


class _GraphBuilder:
    """The nodes and initializers of the graph, appended in order; ``x`` is the name of
    the current tensor and ``size`` its spatial side."""

    def __init__(self, onnx: Any, input_size: int) -> None:
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = [
            self.numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
            self.numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
        ]
        self.nodes.append(
            self.helper.make_node("Transpose", [INPUT_NAME], ["input_nchw"], perm=[0, 3, 1, 2])
        )
        self.x, self.size = "input_nchw", input_size

    def conv(self, layer: ConvLayer, weights: Weights) -> None:
        """One convolution with its folded BatchNormalization, then ReLU6 if it has one."""
        w, b = fold_bn(layer, weights)
        self.initializers += [
            self.numpy_helper.from_array(w, f"{layer.name}/W"),
            self.numpy_helper.from_array(b, f"{layer.name}/B"),
        ]
        before, after = same_pads(self.size, layer.kernel_size, layer.stride)
        out = f"{layer.name}/out"
        self.nodes.append(
            self.helper.make_node(
                "Conv",
                [self.x, f"{layer.name}/W", f"{layer.name}/B"],
                [out],
                name=layer.name,
                kernel_shape=[layer.kernel_size, layer.kernel_size],
                strides=[layer.stride, layer.stride],
                pads=[before, before, after, after],
                group=layer.in_channels if layer.depthwise else 1,
            )
        )
        self.x, self.size = out, math.ceil(self.size / layer.stride)
        if layer.relu6:
            out = "out_relu" if layer.name == "Conv_1" else f"{layer.name}/relu6"
            self.nodes.append(
                self.helper.make_node(
                    "Clip", [self.x, "relu6_min", "relu6_max"], [out], name=f"{layer.name}_relu"
                )
            )
            self.x = out

    def block(self, block: Block, weights: Weights) -> None:
        """The block's layers, then the residual ``Add`` if it has one."""
        block_input = self.x
        for layer in block.layers:
            self.conv(layer, weights)
        if block.residual:
            out = f"{block.layers[0].name.rsplit('_', 1)[0]}_add"
            self.nodes.append(self.helper.make_node("Add", [block_input, self.x], [out], name=out))
            self.x = out

    def pool(self) -> None:
        """Global average pooling, flattened to ``[N, 1280]``."""
        self.nodes.append(
            self.helper.make_node(
                "GlobalAveragePool", [self.x], ["pooled"], name="global_average_pool"
            )
        )
        self.nodes.append(
            self.helper.make_node("Flatten", ["pooled"], [OUTPUT_NAME], name="flatten", axis=1)
        )


def _make_model(
    onnx: Any, builder: _GraphBuilder, input_size: int, meta: dict[str, str]
) -> onnx.ModelProto:
    """The checked ONNX model around the builder's nodes and initializers."""
    helper = onnx.helper
    graph = helper.make_graph(
        builder.nodes,
        f"mobilenet_v2_1.0_{input_size}_features",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, onnx.TensorProto.FLOAT, ["N", input_size, input_size, 3]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", FEATURE_DIM])],
        initializer=builder.initializers,
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
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def build_graph(weights: Weights, input_size: int, meta: dict[str, str]) -> onnx.ModelProto:
    """Build the MobileNetV2 feature-extractor ONNX model from checked Keras weights."""
    onnx = import_onnx()
    builder = _GraphBuilder(onnx, input_size)
    for block in BLOCKS:
        builder.block(block, weights)
    builder.pool()
    return _make_model(onnx, builder, input_size, meta)
