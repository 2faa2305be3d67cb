"""Issue 13: :class:`fruitlens.Classifier` and ``fruitlens predict`` (no Spark): the
prediction schema, the per-row error contract, files/folders/s3:// inputs, JSON lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

import fruitlens
from fruitlens.classify import PREDICTION_SCHEMA, Classifier, top_k
from fruitlens.cli import main

CLASSES = ["apple", "lemon", "mango", "raspberry"]


@pytest.fixture(scope="module")
def photos(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<class>/`` with 2 test photos each, and ``bad/`` with a broken and an empty file."""
    root = tmp_path_factory.mktemp("photos")
    for cls in CLASSES:
        (root / cls).mkdir()
        for path in sorted((shared_dir / "data" / "fruits360-sample" / "Test" / cls).iterdir())[:2]:
            shutil.copyfile(path, root / cls / path.name)
    (root / "bad").mkdir()
    (root / "bad" / "broken.jpg").write_bytes(b"not an image at all")
    (root / "bad" / "empty.png").write_bytes(b"")
    return root


def test_classifier_reads_labels_and_size_from_the_model(classifier_dir: Path) -> None:
    clf = fruitlens.Classifier(classifier_dir)
    assert clf.labels == CLASSES
    assert clf.input_size == 224
    assert clf.metadata["fruitlens.kind"] == "classifier"
    assert clf.path.name == "classifier.onnx"
    assert "4 classes" in repr(clf)


def test_predict_schema_labels_and_row_errors(classifier_dir: Path, photos: Path) -> None:
    clf = Classifier(classifier_dir)
    files = [*sorted(photos.glob("[!b]*/*.jpg")), photos / "bad" / "broken.jpg"]
    batch = clf.predict([*files, photos / "missing.jpg", None], top=3)
    assert batch.schema == PREDICTION_SCHEMA
    rows = batch.to_pylist()
    assert [r["label"] for r in rows[:8]] == [f.parent.name for f in files[:8]]
    for row in rows[:8]:
        assert row["error"] is None and len(row["top"]) == 3
        assert row["top"][0] == {"label": row["label"], "score": row["score"]}
        assert row["top"][0]["score"] >= row["top"][1]["score"] >= row["top"][2]["score"]
    assert rows[8]["error"].startswith(("corrupt", "unknown_format", "truncated"))
    assert rows[9]["error"].startswith("unreadable")
    assert rows[10]["error"] is not None
    assert all(r["label"] is None and r["top"] is None for r in rows[8:])
    # a bad image does not change the others
    again = clf.predict(files[:8], top=3).to_pylist()
    assert again == rows[:8]


def test_probabilities_sum_to_one_and_top_zero(classifier_dir: Path, photos: Path) -> None:
    clf = Classifier(classifier_dir)
    probs, errors = clf.probabilities(sorted(photos.glob("apple/*.jpg")))
    assert errors == [None, None]
    assert probs.shape == (2, 4) and abs(probs.sum(axis=1) - 1).max() < 1e-5
    batch = clf.predict(sorted(photos.glob("apple/*.jpg")), top=0)
    assert batch.column("top").to_pylist() == [[], []]
    with pytest.raises(ValueError):
        clf.predict([], top=-1)
    assert clf.predict([]).num_rows == 0


def test_top_k_ranks_ties_by_class_index() -> None:
    idx, scores = top_k([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]], 2)
    assert idx.tolist() == [[1, 0], [2, 1]]
    assert scores.dtype.name == "float32"


def test_a_features_model_is_not_a_classifier(onnx_224: Path, tmp_path: Path) -> None:
    with pytest.raises(fruitlens.ModelError, match="not a fruitlens classifier"):
        Classifier(onnx_224)
    with pytest.raises(fruitlens.ModelError, match="no classifier"):
        Classifier(tmp_path)


def test_cli_predict_json_lines(
    classifier_dir: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = sorted((photos / "mango").iterdir())[0]
    code = main(["predict", str(classifier_dir), str(one), str(photos), "--json", "--top", "2"])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1 + 8 + 2
    assert lines[0]["path"] == str(one) and lines[0]["label"] == "mango"
    for line in lines:
        assert set(line) == {"path", "label", "score", "top", "error"}
    good = [x for x in lines if x["error"] is None]
    assert len(good) == 9 and all(len(x["top"]) == 2 for x in good)
    assert all(Path(x["path"]).parent.name == x["label"] for x in good)
    bad = {Path(x["path"]).name: x["error"] for x in lines if x["error"]}
    assert set(bad) == {"broken.jpg", "empty.png"} and bad["empty.png"].startswith("empty")


def test_cli_predict_text_and_exit_codes(
    classifier_dir: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(classifier_dir), str(photos / "lemon")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("\tlemon\t" in line for line in out)
    assert main(["predict", str(classifier_dir), str(photos / "bad")]) == 1
    assert "error: " in capsys.readouterr().out
    assert main(["predict", str(classifier_dir), str(photos / "nothing-here")]) == 1
    assert main(["predict", str(photos), str(photos / "lemon")]) == 1  # not a MODEL_DIR
    assert "no classifier" in capsys.readouterr().err


def test_cli_predict_reads_s3(
    classifier_dir: Path, photos: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from fruitlens import io as fl_io

    for path in sorted(photos.glob("[!b]*/*.jpg"))[:3]:
        fl_io.write_bytes(f"s3://{s3_bucket}/in/{path.parent.name}/{path.name}", path.read_bytes())
    assert main(["predict", str(classifier_dir), f"s3://{s3_bucket}/in", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["path"].split("/")[-2] for x in lines] == [x["label"] for x in lines]
    assert all(x["path"].startswith(f"s3://{s3_bucket}/in/") for x in lines)
    assert isinstance(pa.array([x["score"] for x in lines]), pa.DoubleArray)


# --------------------------------------------------------------------------------------
# The README's "From features to a fruit recognizer" examples run as written
# --------------------------------------------------------------------------------------

RECOGNIZER = "From features to a fruit recognizer"


def _readme_blocks() -> list[tuple[str, int]]:
    from test_readme import _code_blocks  # tests/ is on sys.path (rootdir conftest)

    return _code_blocks(RECOGNIZER, ("python",))


def test_readme_recognizer_local_blocks_run(
    classifier_dir: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_readme import _replace, _run_block

    apple = sorted((photos / "apple").iterdir())[0]
    broken = photos / "bad" / "broken.jpg"
    local = [(code, line) for code, line in _readme_blocks() if "spark" not in code]
    assert len(local) == 2
    for code, line in local:
        code = _replace(code, '"models/fruits', f'"{classifier_dir}')
        code = _replace(code, '"apple.jpg"', f'"{apple}"')
        if "broken.jpg" in code:
            code = _replace(code, '"broken.jpg"', f'"{broken}"')
        namespace: dict = {}
        _run_block(code, line, namespace)
        if "batch" in namespace:
            rows = namespace["batch"].to_pylist()
            assert rows[0]["label"] == "apple" and rows[1]["error"] is not None
    assert capsys.readouterr().out.split()[0] == "apple"  # the plain onnxruntime block
