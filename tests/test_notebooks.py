"""The notebooks: clean in git, and executed end to end (nbclient, local Spark).

``fruits_emr.ipynb`` runs with ``s3://`` parameters pointing at the local S3 endpoint
(moto), so it exercises the object-store path a laptop uses (pyarrow, no Hadoop jars);
``quickstart_local.ipynb`` runs on a local folder; ``train_classifier.ipynb`` trains,
evaluates and exports a classifier on a small copy of the sample. Parameters are
injected the way papermill does: a new cell right after the cell tagged ``parameters``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("explained_variance.png", "pca_scatter.png", "nearest_neighbours.png")

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed for the notebook tests")


def test_notebooks_exist() -> None:
    assert {p.name for p in ALL} >= {
        "fruits_emr.ipynb",
        "quickstart_local.ipynb",
        "train_classifier.ipynb",
    }


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_clean_and_valid(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: outputs must be cleared before commit"
            assert cell.execution_count is None, f"{path.name}: execution counts left"
    tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    for name in ("INPUT", "MODEL", "OUTPUT_DIR", "K"):
        assert f"\n{name} = " in "\n" + tagged[0].source


def _execute(path: Path, params: dict[str, object], cwd: Path, timeout: int = 600):
    """Run a notebook with injected parameters in a python3 kernel; raise on a cell error."""
    pytest.importorskip("nbclient", reason="nbclient is needed to execute notebooks")
    pytest.importorskip("ipykernel", reason="ipykernel is needed to execute notebooks")
    pytest.importorskip("matplotlib", reason="matplotlib is needed by the notebooks")
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    source = "# Parameters injected by the test\n" + "\n".join(
        f"{name} = {value!r}" for name, value in params.items()
    )
    injected = nbformat.v4.new_code_cell(source)
    injected.metadata["tags"] = ["injected-parameters"]
    book.cells.insert(index + 1, injected)
    client = NotebookClient(
        book,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return book


def _text_outputs(book) -> str:
    out = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", ""))
            out.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def _copy_sample(shared_dir: Path, dest: Path, per_class: int = 10, split: str = "Test") -> Path:
    source = shared_dir / "data" / "fruits360-sample" / split
    for label in ("apple", "lemon", "mango", "raspberry"):
        (dest / label).mkdir(parents=True)
        for image in sorted((source / label).glob("*.jpg"))[:per_class]:
            shutil.copy(image, dest / label / image.name)
    return dest


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel (and Spark's Python workers) use this interpreter."""
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.delenv("PYSPARK_DRIVER_PYTHON", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


@pytest.mark.slow
@pytest.mark.spark
def test_quickstart_local_runs(
    tmp_path: Path, shared_dir: Path, random_onnx: Path, kernel_env: None
) -> None:
    images = _copy_sample(shared_dir, tmp_path / "images")
    plots = tmp_path / "plots"
    book = _execute(
        NOTEBOOKS / "quickstart_local.ipynb",
        {
            "INPUT": str(images),
            "MODEL": str(random_onnx),
            "OUTPUT_DIR": str(plots),
            "MASTER": "local[2]",
            "K": 10,
            "PARTITIONS": 2,
        },
        cwd=NOTEBOOKS,
    )
    for name in PLOTS:
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    text = _text_outputs(book)
    assert "40 images, 0 could not be used" in text


@pytest.mark.slow
@pytest.mark.spark
def test_train_classifier_runs(
    tmp_path: Path, shared_dir: Path, random_onnx: Path, kernel_env: None
) -> None:
    train = _copy_sample(shared_dir, tmp_path / "train", per_class=12, split="Train")
    test = _copy_sample(shared_dir, tmp_path / "test", per_class=5)
    model_dir = tmp_path / "model"
    book = _execute(
        NOTEBOOKS / "train_classifier.ipynb",
        {
            "INPUT": str(train),
            "TEST": str(test),
            "MODEL": str(random_onnx),
            "OUTPUT_DIR": str(model_dir),
            "MASTER": "local[2]",
            "K": 10,
            "PARTITIONS": 2,
            "N_SHOW": 4,
        },
        cwd=NOTEBOOKS,
    )
    for name in ("confusion.png", "per_class.png"):
        data = (model_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    report = json.loads((model_dir / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 20 and report["labels"] == ["apple", "lemon", "mango", "raspberry"]
    assert (model_dir / "classifier.onnx").is_file()
    text = _text_outputs(book)
    assert "test        20 images, top-1 " in text
    assert "of 4 shown images right" in text
    shown = [
        o for c in book.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(shown) >= 3  # the report's two plots and the predictions


@pytest.mark.slow
@pytest.mark.spark
def test_fruits_emr_runs_against_s3(
    tmp_path: Path,
    shared_dir: Path,
    random_onnx: Path,
    s3_server,
    s3_bucket: str,
    kernel_env: None,
) -> None:
    images = _copy_sample(shared_dir, tmp_path / "images", per_class=8)
    s3_server.upload_dir(images, s3_bucket, "fruits/Test")
    book = _execute(
        NOTEBOOKS / "fruits_emr.ipynb",
        {
            "INPUT": f"s3://{s3_bucket}/fruits/Test",
            "MODEL": str(random_onnx),
            "OUTPUT_DIR": f"s3://{s3_bucket}/plots",
            "K": 10,
            "PARTITIONS": 2,
        },
        cwd=tmp_path,
    )
    client = s3_server.client()
    for name in PLOTS:
        data = client.get_object(Bucket=s3_bucket, Key=f"plots/{name}")["Body"].read()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    text = _text_outputs(book)
    assert "32 images, 0 could not be used" in text
    assert "executor" in text and os.path.basename(str(random_onnx)) in text
