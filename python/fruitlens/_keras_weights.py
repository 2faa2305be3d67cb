"""Reading MobileNetV2 weights from Keras files (``h5py``, imported lazily).

Four layouts are read (auto-detected):

* a Keras 2 / Keras 3 full-model legacy ``.h5`` (``model_weights/...``, the
  backbone possibly nested in a sub-model group such as ``mobilenetv2_1.00_160``);
* a legacy ``save_weights`` / keras-applications weights ``.h5`` such as
  ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5``
  (``Conv1/Conv1/kernel:0``);
* a Keras 3 ``.weights.h5`` (``layers/conv2d_3/vars/0``, possibly nested as
  ``layers/functional/layers/...``), mapped by the layer order of MobileNetV2;
* a Keras 3 ``.keras`` model (a zip holding such a ``model.weights.h5``).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import ModelError
from ._onnx_graph import BN_WEIGHTS, LAYERS, Weights, expected_shapes

if TYPE_CHECKING:
    import h5py

__all__ = ["import_h5py", "read_keras_weights"]

logger = logging.getLogger(__name__)

#: The weights inside a Keras 3 ``.keras`` (zip) model.
_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
#: Keras 2 names the DepthwiseConv2D kernel ``depthwise_kernel``; Keras 3 ``kernel``.
_WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}

_Missing = dict[tuple[str, str], str]
"""Missing weights: ``(layer, weight) -> where it was looked for`` (or "")."""


def import_h5py() -> Any:
    """The ``h5py`` package, imported lazily: it is the optional extra ``fruitlens[convert]``."""
    try:
        import h5py  # optional extra: only needed to read Keras weights
    except ImportError as exc:
        raise ModelError(
            "reading Keras .h5 weights needs the 'h5py' package: pip install 'fruitlens[convert]'"
        ) from exc
    return h5py


def _describe_missing(missing: _Missing, limit: int = 12) -> str:
    """Summarise missing weights by layer, e.g. ``block_3_expand_BN (gamma, beta)``."""
    expected = expected_shapes()
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
    wanted = expected_shapes()
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
    for layer in LAYERS:
        read(
            layer.name,
            next_name("depthwise_conv2d" if layer.depthwise else "conv2d"),
            ("kernel",),
        )
        read(layer.bn, next_name("batch_normalization"), BN_WEIGHTS)
    return weights, missing


def _h5_source(h5_path: Path) -> tuple[Any, bool]:
    """What ``h5py.File`` opens for ``h5_path``, and whether it is a ``.keras`` archive
    (whose weights are its ``model.weights.h5``)."""
    if not zipfile.is_zipfile(h5_path):
        return h5_path, False
    try:
        with zipfile.ZipFile(h5_path) as keras_zip:
            return io.BytesIO(keras_zip.read(_KERAS_ARCHIVE_WEIGHTS)), True
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"{h5_path} is a zip archive without {_KERAS_ARCHIVE_WEIGHTS}: "
            f"not a Keras 3 .keras model ({exc})"
        ) from exc


def _read_layout(h5py: Any, h5_path: Path) -> tuple[Weights, _Missing, str]:
    """Open the file, detect its layout and read the weights it holds."""
    h5_source, archive = _h5_source(h5_path)
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
    return weights, missing, layout


def _check_shapes(weights: Weights, h5_path: Path, layout: str) -> None:
    """Every weight has MobileNetV2's shape and a float dtype, else :class:`ModelError`."""
    problems = []
    for (layer, weight), shape in expected_shapes().items():
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


def read_keras_weights(h5_path: Path) -> tuple[Weights, str]:
    """Read and validate MobileNetV2 weights from any supported layout.

    Returns the weights (float arrays by Keras layer and weight name) and the name
    of the detected layout.
    """
    h5py = import_h5py()
    if not h5_path.is_file():
        raise ModelError(f"Keras weights file not found: {h5_path}")
    weights, missing, layout = _read_layout(h5py, h5_path)
    if missing:
        raise ModelError(
            f"{h5_path} ({layout} layout) is not a complete Keras MobileNetV2 "
            f"alpha=1.0: {_describe_missing(missing)}"
        )
    _check_shapes(weights, h5_path, layout)
    n_weights = len(expected_shapes())
    logger.debug("read %d MobileNetV2 weights from %s (%s)", n_weights, h5_path, layout)
    return weights, layout
