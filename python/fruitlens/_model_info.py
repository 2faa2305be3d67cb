"""Inspecting and checking an ONNX model file without running it: :func:`model_info` and
:func:`validate_model` (public through :mod:`fruitlens.models`).

A module of its own, below :mod:`fruitlens.models`, so that ``import fruitlens`` (and every
Spark Python worker) reaches it without importing the download code of
:mod:`fruitlens._fetch` (``urllib.request`` alone costs ~40 ms).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import FEATURE_DIM, PathLike, sha256_file
from ._errors import ModelError
from ._onnx_graph import META_INPUT_SIZE, import_onnx

if TYPE_CHECKING:
    import onnx

__all__ = ["model_info", "validate_model"]


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


def _load(onnx: Any, path: Path) -> onnx.ModelProto:
    """The ONNX model at ``path`` (without external data); :class:`ModelError` if missing
    or not an ONNX model."""
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path} is not a valid ONNX model: {exc}") from exc


def _single_io(model: onnx.ModelProto, path: Path) -> tuple[Any, Any]:
    """The one graph input (initializers aside) and the one output."""
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializer_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"{path}: expected exactly one input and one output, found inputs "
            f"{[v.name for v in inputs]} and outputs {[v.name for v in graph.output]}"
        )
    return inputs[0], graph.output[0]


def _input_size(input_shape: list[int | str | None], metadata: dict[str, str]) -> int | None:
    """S from a square NHWC input shape, else from the ``fruitlens.input_size`` metadata."""
    if (
        len(input_shape) == 4
        and isinstance(input_shape[1], int)
        and input_shape[1] == input_shape[2]
    ):
        return input_shape[1]
    if metadata.get(META_INPUT_SIZE, "").isdigit():
        return int(metadata[META_INPUT_SIZE])
    return None


def _dtype(onnx: Any, value_info: onnx.ValueInfoProto) -> str:
    """The numpy name of a tensor value's element type (else ONNX's, lower case)."""
    elem_type = value_info.type.tensor_type.elem_type
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


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
    onnx = import_onnx()
    path = Path(onnx_path)
    model = _load(onnx, path)
    inp, out = _single_io(model, path)
    metadata = {p.key: p.value for p in model.metadata_props}
    input_shape = _dims(inp)
    return {
        "path": str(path),
        "input_name": inp.name,
        "input_shape": input_shape,
        "input_dtype": _dtype(onnx, inp),
        "output_name": out.name,
        "output_shape": _dims(out),
        "output_dtype": _dtype(onnx, out),
        "input_size": _input_size(input_shape, metadata),
        "metadata": metadata,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": int(model.ir_version),
        "sha256": sha256_file(path),
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
    meta_size = info["metadata"].get(META_INPUT_SIZE)
    problems = []
    if info["input_dtype"] != "float32":
        problems.append(f"{inp} is {info['input_dtype']}, expected float32")
    height, width = (in_shape[1], in_shape[2]) if len(in_shape) == 4 else (0, 0)
    if len(in_shape) != 4 or in_shape[3] != 3 or height != width:
        problems.append(f"{inp} has shape {in_shape}, expected NHWC [N, S, S, 3]")
    elif info["input_size"] is None:
        problems.append(
            f"{inp} has shape {in_shape} and no '{META_INPUT_SIZE}' metadata: "
            "the image size S is unknown"
        )
    elif meta_size is not None and meta_size != str(info["input_size"]):
        problems.append(f"{inp} has shape {in_shape} but metadata {META_INPUT_SIZE}={meta_size}")
    if info["output_dtype"] != "float32":
        problems.append(f"{out} is {info['output_dtype']}, expected float32")
    features = out_shape[1] if len(out_shape) == 2 else -1
    if isinstance(features, int) and features != FEATURE_DIM:  # a name is dynamic: ok
        problems.append(f"{out} has shape {out_shape}, expected [N, {FEATURE_DIM}]")
    if problems:
        raise ModelError(f"{info['path']} is not a fruitlens feature model: " + "; ".join(problems))
    return info
