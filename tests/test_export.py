"""The exported classifier (issue 13, item 3): one ONNX file MobileNetV2 → PCA → linear
head → softmax, checked with plain onnxruntime + Pillow (no fruitlens in the check path)
against the pipeline (fruitlens.Embedder features → Head.probabilities) on EVERY Test
image of fruits360-sample; the uint8-input variant; the metadata; the int8 variant.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fruitlens
from fruitlens._errors import ModelError
from fruitlens._export import export_classifier, quantize_classifier
from fruitlens.classify import (
    CLASSIFIER_FILE,
    CLASSIFIER_INT8_FILE,
    CLASSIFIER_UINT8_FILE,
    HEAD_FILE,
    META_INPUT_SIZE,
    META_KIND,
    META_LABELS,
    META_PREPROCESS,
    META_PROVENANCE,
    Head,
)
from fruitlens.quantize import calibration_images

ort = pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

SIZE = 224
CHUNK = 32
#: Stated bound for the int8 variant on the sample's Test split: top-1 accuracy at most
#: this many points below float32, and top-1 agreement with float32 at least AGREE_INT8.
MAX_INT8_DROP = 0.02
MIN_INT8_AGREEMENT = 0.97
CALIBRATION_IMAGES = 32


# --- the check path: Pillow + numpy + onnxruntime only ---------------------------------


def pillow_uint8(paths: list[Path], size: int) -> np.ndarray:
    """``[N, S, S, 3]`` uint8 RGB: Pillow decode, then resize to S x S with BICUBIC."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(rgb)
    return out


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_chunked(sess: ort.InferenceSession, pixels: np.ndarray, as_float: bool) -> np.ndarray:
    """``probabilities`` of all images, CHUNK at a time (x/127.5-1 for the float input)."""
    out = []
    for i in range(0, len(pixels), CHUNK):
        x = pixels[i : i + CHUNK]
        x = x.astype(np.float32) / np.float32(127.5) - np.float32(1.0) if as_float else x
        out.append(sess.run(["probabilities"], {"input": x})[0])
    return np.concatenate(out)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_test(shared_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Every Test image of fruits360-sample: (paths, class index, class names)."""
    root = shared_dir / "data" / "fruits360-sample" / "Test"
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, y = [], []
    for i, name in enumerate(classes):
        files = sorted((root / name).iterdir())
        paths += files
        y += [i] * len(files)
    return paths, np.array(y), classes


@pytest.fixture(scope="module")
def head(classifier_dir: Path) -> Head:
    return Head.load(classifier_dir / HEAD_FILE)


@pytest.fixture(scope="module")
def pipeline_probs(onnx_224: Path, head: Head, sample_test) -> np.ndarray:
    """The pipeline's probabilities: fruitlens.Embedder features → Head.probabilities."""
    paths = sample_test[0]
    batch = fruitlens.Embedder(onnx_224).embed(paths)
    assert batch.column("error").null_count == len(paths)
    features = batch.column("features").flatten().to_numpy().reshape(len(paths), -1)
    return head.probabilities(features)


@pytest.fixture(scope="module")
def sample_pixels(sample_test) -> np.ndarray:
    return pillow_uint8(sample_test[0], SIZE)


@pytest.fixture(scope="module")
def onnx_probs(classifier_dir: Path, sample_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Plain onnxruntime on Pillow-decoded images: the float32 and the uint8 variants."""
    return {
        "fp32": run_chunked(session(classifier_dir / CLASSIFIER_FILE), sample_pixels, True),
        "uint8": run_chunked(session(classifier_dir / CLASSIFIER_UINT8_FILE), sample_pixels, False),
    }


# --- tests ----------------------------------------------------------------------------


def test_classifier_dir_holds_the_files_and_io(classifier_dir: Path, head: Head) -> None:
    for name, dtype in (
        (CLASSIFIER_FILE, "tensor(float)"),
        (CLASSIFIER_UINT8_FILE, "tensor(uint8)"),
    ):
        sess = session(classifier_dir / name)
        (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
        assert (inp.name, inp.type, inp.shape[1:]) == ("input", dtype, [SIZE, SIZE, 3])
        assert (out.name, out.type, out.shape[1]) == ("probabilities", "tensor(float)", 4)
    assert head.labels == ["apple", "lemon", "mango", "raspberry"]
    assert head.on == "pca"


@pytest.mark.parametrize("name", [CLASSIFIER_FILE, CLASSIFIER_UINT8_FILE])
def test_metadata_is_present_and_parseable(classifier_dir: Path, head: Head, name: str) -> None:
    meta = session(classifier_dir / name).get_modelmeta().custom_metadata_map
    assert json.loads(meta[META_LABELS]) == head.labels
    assert meta[META_INPUT_SIZE] == str(SIZE)
    assert meta[META_KIND] == "classifier"
    assert "x/127.5-1" in meta[META_PREPROCESS]
    assert ("uint8" in meta[META_PREPROCESS]) == (name == CLASSIFIER_UINT8_FILE)
    provenance = json.loads(meta[META_PROVENANCE])
    assert provenance["fruitlens_version"] == fruitlens.__version__
    assert provenance["data"].startswith("fruits360-sample/Train")
    assert provenance["exported_at"].endswith("Z") and len(provenance["base_model_sha256"]) == 64
    assert meta["fruitlens.arch"] == "mobilenet_v2_1.0"  # the base model's own entries
    assert json.loads(meta["fruitlens.head"]) == {
        "on": "pca",
        "m": head.coef.shape[1],
        "classes": 4,
    }


@pytest.mark.slow
def test_onnxruntime_gives_the_pipeline_top1_on_every_test_image(
    onnx_probs: dict[str, np.ndarray], pipeline_probs: np.ndarray, sample_test
) -> None:
    probs, y = onnx_probs["fp32"], sample_test[1]
    assert probs.shape == pipeline_probs.shape == (662, 4)
    disagree = np.flatnonzero(probs.argmax(1) != pipeline_probs.argmax(1))
    assert disagree.size == 0, [str(sample_test[0][i]) for i in disagree]
    np.testing.assert_allclose(probs, pipeline_probs, atol=1e-4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == y).mean() > 0.9  # a real classifier, not a constant


@pytest.mark.slow
def test_uint8_variant_gives_the_same_probabilities(onnx_probs: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(onnx_probs["uint8"], onnx_probs["fp32"], rtol=0, atol=1e-5)
    assert (onnx_probs["uint8"].argmax(1) == onnx_probs["fp32"].argmax(1)).all()


def test_classifier_loads_in_embedder(
    classifier_dir: Path, onnx_224: Path, head: Head, sample_test
) -> None:
    """fruitlens.Embedder takes any float32 [N,S,S,3] → [N,D] model: the classifier too."""
    paths = sample_test[0][::40]
    embedder = fruitlens.Embedder(classifier_dir / CLASSIFIER_FILE)
    assert (embedder.input_size, embedder.output_dim) == (SIZE, 4)
    probs = embedder.embed(paths).column("features").flatten().to_numpy().reshape(-1, 4)
    features = fruitlens.Embedder(onnx_224).embed(paths).column("features").flatten()
    ref = head.probabilities(features.to_numpy().reshape(len(paths), -1))
    np.testing.assert_allclose(probs, ref, atol=1e-4)


def test_head_without_pca_exports_gemm_and_softmax_only(random_onnx: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    head = Head(["a", "b", "c"], rng.normal(0, 0.05, (3, 1280)), rng.normal(0, 1, 3))
    out = export_classifier(random_onnx, head, tmp_path / "new" / "clf.onnx", provenance={"x": 1})
    added = [n.op_type for n in onnx.load(str(out)).graph.node if n.name.startswith("fruitlens_")]
    assert added == ["Gemm", "Softmax"]
    x = rng.uniform(-1, 1, (5, 96, 96, 3)).astype(np.float32)
    features = fruitlens.Embedder(random_onnx).embed_tensors(x)
    probs = session(out).run(["probabilities"], {"input": x})[0]
    np.testing.assert_allclose(probs, head.probabilities(features), atol=1e-5)
    assert json.loads(session(out).get_modelmeta().custom_metadata_map[META_PROVENANCE])["x"] == 1
    assert [p.name for p in tmp_path.joinpath("new").iterdir()] == ["clf.onnx"]  # no temp left


def test_bad_inputs_are_model_errors(
    random_onnx: Path, classifier_dir: Path, head: Head, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="already a classifier"):
        export_classifier(classifier_dir / CLASSIFIER_FILE, head, tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="already a classifier"):
        export_classifier(classifier_dir / CLASSIFIER_UINT8_FILE, head, tmp_path / "x.onnx")
    small = Head(["a", "b"], np.zeros((2, 100)), np.zeros(2))
    with pytest.raises(ModelError, match="gives 1280 features but the head takes 100"):
        export_classifier(random_onnx, small, tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="float32-input classifier"):
        quantize_classifier(classifier_dir / CLASSIFIER_UINT8_FILE, tmp_path / "q.onnx", [])
    with pytest.raises(ModelError, match="float32-input classifier"):
        quantize_classifier(random_onnx, tmp_path / "q.onnx", [])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_int8_variant_accuracy_within_the_stated_bound(
    classifier_dir: Path,
    shared_dir: Path,
    tmp_path: Path,
    sample_pixels: np.ndarray,
    onnx_probs: dict[str, np.ndarray],
    sample_test,
) -> None:
    train = shared_dir / "data" / "fruits360-sample" / "Train"
    out = quantize_classifier(
        classifier_dir / CLASSIFIER_FILE,
        tmp_path / CLASSIFIER_INT8_FILE,
        calibration_images(train, limit=CALIBRATION_IMAGES),
    )
    sess = session(out)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta[META_LABELS]) == ["apple", "lemon", "mango", "raspberry"]
    assert meta[META_KIND] == "classifier" and "int8" in meta["fruitlens.quantization"]
    assert meta["fruitlens.calibration_images"] == str(CALIBRATION_IMAGES)
    assert json.loads(meta["fruitlens.quantization_float_nodes"]) == ["Conv1"]
    assert meta["fruitlens.int8_bias_correction"].endswith(
        f"{CALIBRATION_IMAGES} calibration images"
    )
    with pytest.raises(ModelError, match="not already quantized"):
        quantize_classifier(out, tmp_path / "twice.onnx", [])
    int8 = run_chunked(sess, sample_pixels, True)
    y, fp32 = sample_test[1], onnx_probs["fp32"]
    acc32, acc8 = (fp32.argmax(1) == y).mean(), (int8.argmax(1) == y).mean()
    agreement = (int8.argmax(1) == fp32.argmax(1)).mean()
    print(f"int8: top-1 {acc8:.4f} vs fp32 {acc32:.4f}, agreement {agreement:.4f}")
    assert acc8 >= acc32 - MAX_INT8_DROP
    assert agreement >= MIN_INT8_AGREEMENT
    np.testing.assert_allclose(int8.sum(1), 1.0, atol=1e-5)  # the softmax stayed float32
    some = sample_test[0][::60]  # and fruitlens.Classifier runs it like the float32 file
    predicted = fruitlens.Classifier(out, threads=2).predict(some).column("label").to_pylist()
    assert predicted == [sample_test[2][i] for i in int8[::60].argmax(1)]
