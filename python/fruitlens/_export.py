"""Export a trained :class:`~fruitlens.classify.Head` with its MobileNetV2 as ONE ONNX file.

:func:`export_classifier` appends the head to the feature-extractor graph of
:mod:`fruitlens._onnx_graph`::

    input ─ MobileNetV2 ─ features [N, 1280]
            ─ Sub(mean) ─ MatMul(componentsᵀ)        (only when the head has a PCA)
            ─ Gemm(coef, intercept, transB=1) ─ Softmax(axis=1) ─ probabilities [N, C]

* ``input``: float32 NHWC ``[N, S, S, 3]`` preprocessed as :class:`fruitlens.Embedder`
  does (RGB, bicubic resize to S x S, ``x/127.5 - 1``), so the file also loads in
  ``Embedder`` (as a ``[N, S, S, 3] → [N, C]`` model) and in plain ``onnxruntime``;
* or, with ``uint8_input=True``, uint8 RGB ``[N, S, S, 3]`` (what a phone app has):
  ``Cast → Div(127.5) → Sub(1)`` run inside the graph;
* ``metadata_props``: the base model's ``fruitlens.*`` entries plus ``labels`` (JSON
  list, output order), ``input_size``, ``preprocess``, ``provenance`` (JSON) and
  ``fruitlens.kind = "classifier"`` (keys from :mod:`fruitlens.classify`).

:func:`quantize_classifier` writes the int8 variant: the MobileNetV2 part is quantized
(static QDQ, calibrated on real images by :func:`fruitlens.quantize.quantize_model`),
the small head stays float32 so the probabilities keep their full resolution.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import PathLike, sha256_file, write_atomic
from ._core import Embedder
from ._errors import ModelError
from ._model_info import model_info, validate_model
from ._native import __version__
from ._onnx_graph import INPUT_NAME, OUTPUT_NAME, PREPROCESS, import_onnx
from .classify import (
    META_INPUT_SIZE,
    META_KIND,
    META_LABELS,
    META_PREPROCESS,
    META_PROVENANCE,
    Head,
)
from .quantize import quantize_model

if TYPE_CHECKING:
    import onnx

__all__ = [
    "INT8_FLOAT_NODES",
    "KIND",
    "PROBABILITIES",
    "export_classifier",
    "quantize_classifier",
]

#: Name of the classifier's output (float32 ``[N, C]``).
PROBABILITIES = "probabilities"
#: Value of the ``fruitlens.kind`` metadata entry of an exported classifier.
KIND = "classifier"
#: Prefix of every node and initializer the export adds (how the head is found again).
_HEAD = "fruitlens_head/"
_PRE = "fruitlens_uint8/"
_FEATURES_INPUT = f"{_PRE}normalised"

_META_INPUT_DTYPE = "fruitlens.input_dtype"
_META_HEAD = "fruitlens.head"
_META_BASE_PREPROCESS = "fruitlens.preprocess"
#: Metadata entries :func:`fruitlens.quantize.quantize_model` adds.
_QUANT_KEYS = ("fruitlens.quantization", "fruitlens.calibration_images")
_META_FLOAT_NODES = "fruitlens.quantization_float_nodes"
_META_CORRECTION = "fruitlens.int8_bias_correction"
_CORRECTED = f"{_HEAD}features_corrected"
#: Nodes :func:`quantize_classifier` keeps in float32 by default: the stem convolution
#: (quantizing it alone costs ~30 points of top-1 on fruits360-mini).
INT8_FLOAT_NODES = ("Conv1",)


def _preprocess_text(size: int, uint8_input: bool) -> str:
    resize = f"RGB, resized to {size}x{size} (bicubic, as Pillow), NHWC"
    if uint8_input:
        return f"{resize} uint8 0-255; {PREPROCESS} is applied inside the graph"
    return f"{resize} float32 {PREPROCESS}"


def _head_nodes(onnx: Any, head: Head) -> tuple[list[Any], list[Any]]:
    """Nodes and initializers of ``features → [PCA] → Gemm → Softmax → probabilities``."""
    helper, nh = onnx.helper, onnx.numpy_helper
    nodes, inits, x = [], [], OUTPUT_NAME
    if head.pca is not None:
        mean, components = head.mean, head.components
        assert mean is not None and components is not None
        inits += [
            nh.from_array(mean.astype(np.float32), f"{_HEAD}mean"),
            nh.from_array(np.ascontiguousarray(components.T, np.float32), f"{_HEAD}components_T"),
        ]
        nodes += [
            helper.make_node("Sub", [x, f"{_HEAD}mean"], [f"{_HEAD}centred"], name=f"{_HEAD}sub"),
            helper.make_node(
                "MatMul",
                [f"{_HEAD}centred", f"{_HEAD}components_T"],
                [f"{_HEAD}projected"],
                name=f"{_HEAD}pca",
            ),
        ]
        x = f"{_HEAD}projected"
    inits += [
        nh.from_array(head.coef.astype(np.float32), f"{_HEAD}coef"),
        nh.from_array(head.intercept.astype(np.float32), f"{_HEAD}intercept"),
    ]
    nodes += [
        helper.make_node(
            "Gemm",
            [x, f"{_HEAD}coef", f"{_HEAD}intercept"],
            [f"{_HEAD}logits"],
            name=f"{_HEAD}linear",
            transB=1,
        ),
        helper.make_node(
            "Softmax", [f"{_HEAD}logits"], [PROBABILITIES], name=f"{_HEAD}softmax", axis=1
        ),
    ]
    return nodes, inits


def _uint8_nodes(onnx: Any) -> tuple[list[Any], list[Any]]:
    """``input`` uint8 → Cast → Div(127.5) → Sub(1) → the float input of the base graph."""
    helper, nh = onnx.helper, onnx.numpy_helper
    inits = [
        nh.from_array(np.array(127.5, np.float32), f"{_PRE}scale"),
        nh.from_array(np.array(1.0, np.float32), f"{_PRE}one"),
    ]
    nodes = [
        helper.make_node(
            "Cast", [INPUT_NAME], [f"{_PRE}float"], name=f"{_PRE}cast", to=onnx.TensorProto.FLOAT
        ),
        helper.make_node(
            "Div", [f"{_PRE}float", f"{_PRE}scale"], [f"{_PRE}scaled"], name=f"{_PRE}div"
        ),
        helper.make_node(
            "Sub", [f"{_PRE}scaled", f"{_PRE}one"], [_FEATURES_INPUT], name=f"{_PRE}sub"
        ),
    ]
    return nodes, inits


def _provenance(base: Path, provenance: Mapping[str, Any] | None) -> str:
    """The provenance JSON: what the caller gives, over fruitlens's own defaults."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    defaults: dict[str, Any] = {
        "fruitlens_version": __version__,
        "exported_at": now.isoformat().replace("+00:00", "Z"),
        "base_model": base.name,
        "base_model_sha256": sha256_file(base),
    }
    return json.dumps({**defaults, **dict(provenance or {})}, sort_keys=True, default=str)


def _metadata(
    base_meta: Mapping[str, str], head: Head, size: int, uint8_input: bool, provenance: str
) -> dict[str, str]:
    meta = {k: v for k, v in base_meta.items() if k.startswith("fruitlens.")}
    if uint8_input:
        meta[_META_BASE_PREPROCESS] = f"none (uint8 RGB; {PREPROCESS} inside the graph)"
    meta.update(
        {
            META_LABELS: json.dumps(head.labels),
            META_INPUT_SIZE: str(size),
            META_PREPROCESS: _preprocess_text(size, uint8_input),
            META_PROVENANCE: provenance,
            META_KIND: KIND,
            _META_INPUT_DTYPE: "uint8" if uint8_input else "float32",
            _META_HEAD: json.dumps(
                {"on": head.on, "m": int(head.coef.shape[1]), "classes": len(head.labels)}
            ),
        }
    )
    return meta


def _check_base(base: Path, head: Head) -> tuple[int, dict[str, str]]:
    """``(S, metadata)`` of a usable feature model whose output length fits the head."""
    if model_info(base)["metadata"].get(META_KIND) == KIND:
        raise ModelError(f"{base} is already a classifier: pass the MobileNetV2 feature model")
    info = validate_model(base)
    if info["input_name"] != INPUT_NAME or info["output_name"] != OUTPUT_NAME:
        raise ModelError(
            f"{base}: expected input '{INPUT_NAME}' and output '{OUTPUT_NAME}', found "
            f"'{info['input_name']}' and '{info['output_name']}'"
        )
    dim = info["output_shape"][1]
    if isinstance(dim, int) and dim != head.input_dim:
        raise ModelError(f"{base} gives {dim} features but the head takes {head.input_dim}")
    return int(info["input_size"]), dict(info["metadata"])


def _finish(onnx: Any, model: onnx.ModelProto, meta: Mapping[str, str], out: Path) -> Path:
    """Set the metadata, check the model and write it atomically."""
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(meta))
    onnx.checker.check_model(model, full_check=True)
    return write_atomic(out, model.SerializeToString())


def _set_output(onnx: Any, graph: Any, classes: int) -> None:
    del graph.output[:]
    graph.output.append(
        onnx.helper.make_tensor_value_info(PROBABILITIES, onnx.TensorProto.FLOAT, ["N", classes])
    )


def export_classifier(
    base_model: PathLike,
    head: Head,
    out: PathLike,
    *,
    uint8_input: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write MobileNetV2 (``base_model``, a fruitlens feature ONNX) + ``head`` as one ONNX
    classifier at ``out`` (atomically); returns ``out``.

    Output ``probabilities`` float32 ``[N, C]`` in ``head.labels`` order. Input ``input``:
    float32 ``[N, S, S, 3]`` preprocessed like :class:`fruitlens.Embedder`, or with
    ``uint8_input`` uint8 RGB ``[N, S, S, 3]`` normalised inside the graph.
    ``provenance`` (data, accuracy, ...) is stored as JSON in the ``provenance`` metadata,
    with ``fruitlens_version``, ``exported_at`` and the base model's name and sha256 added
    unless given.

    Raises:
        ModelError: the base model is not a fruitlens feature model fitting the head.
    """
    onnx = import_onnx()
    base = Path(base_model)
    size, base_meta = _check_base(base, head)
    model = onnx.load(str(base))
    graph = model.graph
    nodes, inits = _head_nodes(onnx, head)
    if uint8_input:
        for node in graph.node:
            node.input[:] = [_FEATURES_INPUT if n == INPUT_NAME else n for n in node.input]
        pre_nodes, pre_inits = _uint8_nodes(onnx)
        for i, node in enumerate(pre_nodes):
            graph.node.insert(i, node)
        inits += pre_inits
        graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    _set_output(onnx, graph, len(head.labels))
    graph.name = f"fruitlens_classifier_{size}_{len(head.labels)}"
    model.doc_string = (
        f"fruitlens classifier: MobileNetV2 features → {head.on} head → softmax over "
        f"{len(head.labels)} classes; {_preprocess_text(size, uint8_input)}"
    )
    meta = _metadata(base_meta, head, size, uint8_input, _provenance(base, provenance))
    return _finish(onnx, model, meta, Path(out))


def _split(onnx: Any, model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Any], list[Any]]:
    """The classifier cut at ``features``: (the feature model, head nodes, head initializers)."""
    graph = model.graph
    head_nodes = [n for n in graph.node if n.name.startswith(_HEAD)]
    head_inits = [t for t in graph.initializer if t.name.startswith(_HEAD)]
    quantized = any(p.key == _QUANT_KEYS[0] for p in model.metadata_props)
    if (
        not head_nodes
        or quantized
        or graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
    ):
        raise ModelError(
            "quantize_classifier needs a float32-input classifier written by export_classifier "
            "(not already quantized)"
        )
    backbone = onnx.ModelProto()
    backbone.CopyFrom(model)
    g = backbone.graph
    del g.node[:], g.initializer[:]
    g.node.extend(n for n in graph.node if not n.name.startswith(_HEAD))
    g.initializer.extend(t for t in graph.initializer if not t.name.startswith(_HEAD))
    del g.output[:]
    g.output.append(
        onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", None])
    )
    return backbone, head_nodes, head_inits


def _mean_features(model: Path, images: Sequence[PathLike]) -> tuple[np.ndarray, int]:
    """Mean feature vector of the images that decode (and how many did)."""
    batch = Embedder(model).embed(list(images))
    ok = np.array([e is None for e in batch.column("error").to_pylist()], dtype=bool)
    if not ok.any():
        raise ModelError("none of the calibration images could be decoded")
    values = batch.column("features").filter(ok).flatten().to_numpy(zero_copy_only=False)
    return values.reshape(int(ok.sum()), -1).astype(np.float64).mean(axis=0), int(ok.sum())


def _bias_correction(
    onnx: Any, fp32: Path, int8: Path, images: Sequence[PathLike]
) -> tuple[Any, Any, int]:
    """Bias correction of the int8 features: an ``Add`` of (fp32 − int8) mean features on
    the calibration images, as a node and initializer to put before the head."""
    want, n = _mean_features(fp32, images)
    got, _ = _mean_features(int8, images)
    shift = onnx.numpy_helper.from_array((want - got).astype(np.float32), f"{_HEAD}int8_shift")
    node = onnx.helper.make_node(
        "Add", [OUTPUT_NAME, shift.name], [_CORRECTED], name=f"{_HEAD}int8_bias_correction"
    )
    return node, shift, n


def quantize_classifier(
    model: PathLike,
    out: PathLike,
    calibration_images: Sequence[PathLike],
    *,
    nodes_to_exclude: Sequence[str] = INT8_FLOAT_NODES,
    bias_correction: bool = True,
    **options: Any,
) -> Path:
    """Write an int8 version of the float32 classifier ``model`` at ``out``; returns ``out``.

    The MobileNetV2 part is quantized by :func:`fruitlens.quantize.quantize_model`
    (static QDQ, activation ranges calibrated on ``calibration_images``, decoded exactly
    as at inference; ``options`` go to it: ``batch_size``, ``per_channel``, ``method``),
    but for ``nodes_to_exclude`` (default: the stem convolution ``Conv1``, by far the most
    sensitive layer); the head (PCA, linear layer, softmax) stays float32. With
    ``bias_correction``, the mean shift int8 quantization gives the features on the
    calibration images is added back before the head (the head was trained on float32
    features: on fruits360-mini this takes the int8 top-1 from ~0.5 to ~0.93). Metadata
    is that of ``model`` plus the ``fruitlens.quantization`` entries.
    """
    onnx = import_onnx()
    source = onnx.load(str(model))
    backbone, head_nodes, head_inits = _split(onnx, source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize.") as tmp:
        fp32 = Path(tmp) / "features.onnx"
        fp32.write_bytes(backbone.SerializeToString())
        int8 = quantize_model(
            fp32,
            Path(tmp) / "features_int8.onnx",
            calibration_images,
            nodes_to_exclude=nodes_to_exclude,
            **options,
        )
        if bias_correction:
            correction = _bias_correction(onnx, fp32, int8, calibration_images)
        quantized = onnx.load(str(int8))
    meta = {p.key: p.value for p in source.metadata_props}
    meta.update({p.key: p.value for p in quantized.metadata_props if p.key in _QUANT_KEYS})
    if nodes_to_exclude:
        meta[_META_FLOAT_NODES] = json.dumps(list(nodes_to_exclude))
    if bias_correction:
        node, shift, n = correction
        for head_node in head_nodes:
            head_node.input[:] = [_CORRECTED if i == OUTPUT_NAME else i for i in head_node.input]
        head_nodes.insert(0, node)
        head_inits.append(shift)
        meta[_META_CORRECTION] = f"mean feature shift over {n} calibration images"
    quantized.graph.node.extend(head_nodes)
    quantized.graph.initializer.extend(head_inits)
    classes = source.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    _set_output(onnx, quantized.graph, int(classes))
    return _finish(onnx, quantized, meta, out)
