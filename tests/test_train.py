"""Issue 13: ``fruitlens train`` and the Spark classifier API on real images and real
Spark (local[2]): training, the held-out split, the report, the exported model agreeing
with the pipeline, MODEL_DIR safety, the pyspark.ml stages and batch scoring."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import fruitlens
from fruitlens._errors import CLIError
from fruitlens.classify import (
    CLASSIFIER_FILE,
    CLASSIFIER_UINT8_FILE,
    HEAD_FILE,
    REPORT_FILE,
    Classifier,
    Head,
)
from fruitlens.pipeline import RunConfig, run
from fruitlens.train_pipeline import TrainConfig, _test_mask, train

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

CLASSES = ("apple", "lemon", "mango", "raspberry")
TRAIN_PER_CLASS = 12
TEST_PER_CLASS = 6


@pytest.fixture(scope="module")
def dataset(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``Train/<class>/`` (12 real photos a class, plus one broken file) and
    ``Test/<class>/`` (6 a class), from fruits360-sample."""
    root = tmp_path_factory.mktemp("train_data")
    source = shared_dir / "data" / "fruits360-sample"
    for split, n in (("Train", TRAIN_PER_CLASS), ("Test", TEST_PER_CLASS)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            files = sorted((source / split / cls).iterdir())
            for path in files[:: len(files) // n][:n]:
                shutil.copyfile(path, root / split / cls / path.name)
    (root / "Train" / "apple" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture(scope="module")
def trained(spark, onnx_224: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(MODEL_DIR, report)`` of one training run with a test folder and --int8."""
    model_dir = tmp_path_factory.mktemp("trained") / "model"
    config = TrainConfig(
        input=str(dataset / "Train"),
        model_dir=str(model_dir),
        test=str(dataset / "Test"),
        model=str(onnx_224),
        int8=True,
        progress=False,
    )
    return model_dir, train(config, spark)


def test_train_writes_every_file_of_model_dir(trained) -> None:
    model_dir, report = trained
    assert report["top1"] == json.loads((model_dir / REPORT_FILE).read_text())["top1"]
    names = set(os.listdir(model_dir))
    assert {CLASSIFIER_FILE, CLASSIFIER_UINT8_FILE, HEAD_FILE, REPORT_FILE} <= names
    assert {"classifier_int8.onnx", "confusion.png", "per_class.png"} <= names
    assert not [n for n in os.listdir(model_dir.parent) if n.startswith(".")]  # no staging left
    on_disk = json.loads((model_dir / REPORT_FILE).read_text())
    assert on_disk["labels"] == list(CLASSES)
    assert on_disk["n"] == TEST_PER_CLASS * len(CLASSES)
    assert on_disk["top1"] >= 0.9 and on_disk["top5"] == 1.0
    assert set(on_disk["classes"]) == set(CLASSES)
    assert on_disk["counts"]["train_errors"] == 1  # the broken file: a row error, skipped
    assert on_disk["provenance"]["fruitlens_version"] == fruitlens.__version__
    assert 0.0 <= on_disk["int8"]["top1"] <= 1.0 and on_disk["int8"]["n"] == on_disk["n"]
    assert oct(os.stat(model_dir / CLASSIFIER_FILE).st_mode & 0o777) != oct(0o600)


def test_exported_model_agrees_with_the_pipeline_on_every_test_image(
    trained, dataset: Path, onnx_224: Path
) -> None:
    model_dir, _ = trained
    files = sorted((dataset / "Test").rglob("*.jpg"))
    head = Head.load(model_dir)
    features = fruitlens.Embedder(onnx_224).embed(files).column("features")
    x = features.flatten().to_numpy().reshape(len(files), -1)
    expected = np.array(head.labels)[head.probabilities(x).argmax(axis=1)]
    clf = Classifier(model_dir)
    got = clf.predict(files).column("label").to_pylist()
    assert got == expected.tolist()
    meta = clf.metadata
    assert json.loads(meta["labels"]) == list(CLASSES)
    assert json.loads(meta["provenance"])["top1"] >= 0.9


def test_test_fraction_split_is_a_hash_of_class_and_file_name(spark) -> None:
    paths = [f"file:/x/{c}/img_{i}.jpg" for c in CLASSES for i in range(50)]
    df = spark.createDataFrame([(p, p.split("/")[-2]) for p in paths], "path string, label string")
    held = {r.path for r in df.where(_test_mask(df, 0.25)).collect()}

    def expected(p: str) -> bool:
        key = "/".join(p.split("/")[-2:])
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < 0.25

    assert held == {p for p in paths if expected(p)}
    assert 0.15 < len(held) / len(paths) < 0.35


def test_train_from_features_with_a_test_fraction(
    spark, onnx_224: Path, dataset: Path, tmp_path: Path
) -> None:
    features = tmp_path / "features"
    run(
        RunConfig(str(dataset / "Train"), str(features), model=str(onnx_224), progress=False), spark
    )
    config = TrainConfig(
        input=str(features),
        model_dir=str(tmp_path / "m"),
        features=True,
        test_fraction=0.3,
        on="features",
        model=str(onnx_224),
        progress=False,
    )
    report = train(config, spark)
    assert report["provenance"]["on"] == "features"
    assert 0 < report["n"] < TRAIN_PER_CLASS * len(CLASSES)
    assert Classifier(tmp_path / "m").labels == list(CLASSES)


def test_model_dir_is_never_clobbered(
    spark, onnx_224: Path, dataset: Path, tmp_path: Path, trained
) -> None:
    """A non-empty MODEL_DIR needs --overwrite; one with foreign files is refused; a
    failed run leaves the previous model as it was and no staging folder."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    base = {"input": str(dataset / "Train"), "model": str(onnx_224), "progress": False}
    with pytest.raises(CLIError, match="not empty"):
        train(TrainConfig(model_dir=str(foreign), **base), spark)
    with pytest.raises(CLIError, match="did not write"):
        train(TrainConfig(model_dir=str(foreign), overwrite=True, **base), spark)
    assert (foreign / "notes.txt").read_text() == "mine"
    for inside in (dataset / "Train" / "model", dataset / "Train", dataset):
        with pytest.raises(CLIError, match="is inside or contains the input"):
            train(TrainConfig(model_dir=str(inside), **base), spark)
    assert not (dataset / "Train" / "model").exists()

    previous = tmp_path / "previous"
    shutil.copytree(trained[0], previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    one_class = tmp_path / "one_class"
    shutil.copytree(dataset / "Train" / "lemon", one_class / "lemon")
    config = TrainConfig(
        input=str(one_class), model_dir=str(previous), overwrite=True, model=str(onnx_224)
    )
    with pytest.raises(fruitlens.FruitlensError, match="at least 2 classes"):
        train(config, spark)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["foreign", "one_class", "previous"]


def test_pyspark_ml_pipeline_embedder_then_classifier(
    spark, onnx_224: Path, dataset: Path, tmp_path: Path
) -> None:
    from pyspark.ml import Pipeline, PipelineModel

    from fruitlens.spark import FruitClassifier, ImageEmbedder, read_images

    images = read_images(spark, str(dataset / "Train"))
    pipeline = Pipeline(
        stages=[ImageEmbedder(modelPath=str(onnx_224)), FruitClassifier(k=8, regParam=0.01)]
    )
    model = pipeline.fit(images)
    test = read_images(spark, str(dataset / "Test"))
    rows = model.transform(test).select("path", "label", "prediction", "score", "top").collect()
    assert len(rows) == TEST_PER_CLASS * len(CLASSES)
    assert np.mean([r.label == r.prediction for r in rows]) >= 0.9
    assert all(len(r.top) == 4 and r.top[0].label == r.prediction for r in rows)
    model.write().overwrite().save(str(tmp_path / "pm"))
    again = PipelineModel.load(str(tmp_path / "pm")).transform(test).select("path", "prediction")
    assert sorted(again.collect()) == sorted((r.path, r.prediction) for r in rows)


def test_spark_classify_scores_images_with_row_errors(
    spark, classifier_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    from fruitlens.spark import classify, read_images

    folder = tmp_path / "imgs"
    shutil.copytree(dataset / "Test", folder)
    (folder / "lemon" / "truncated.jpg").write_bytes(
        (dataset / "Test" / "lemon").glob("*.jpg").__next__().read_bytes()[:500]
    )
    out = classify(read_images(spark, str(folder)), classifier_dir, top=2)
    rows = {r.path: r for r in out.collect()}
    assert len(rows) == TEST_PER_CLASS * len(CLASSES) + 1
    bad = next(r for p, r in rows.items() if p.endswith("truncated.jpg"))
    assert bad.prediction is None and bad.error.startswith("truncated")
    files = sorted(folder.rglob("*.jpg"))
    local = Classifier(classifier_dir).predict(files, top=2).to_pylist()
    for path, expected in zip(files, local):
        row = rows[f"file:{path}"]
        assert row.prediction == expected["label"], (row, expected)
        assert [t.label for t in row.top or []] == [t["label"] for t in expected["top"] or []]


def test_readme_recognizer_spark_block_runs(
    spark, classifier_dir: Path, onnx_224: Path, dataset: Path
) -> None:
    from test_predict import _readme_blocks
    from test_readme import _replace, _run_block

    from fruitlens.spark import featurize, read_images

    ((code, line),) = [(c, n) for c, n in _readme_blocks() if "spark" in c]
    code = _replace(code, '"s3://bucket/new-photos/"', f'"{dataset / "Test"}"')
    code = _replace(code, '"models/fruits"', f'"{classifier_dir}"')
    features_df = featurize(read_images(spark, str(dataset / "Train")), model=onnx_224)
    namespace = {"spark": spark, "features_df": features_df}
    _run_block(code, line, namespace)
    rows = namespace["scored"].select("label", "prediction", "error").collect()
    assert len(rows) == TEST_PER_CLASS * len(CLASSES)
    assert np.mean([r.label == r.prediction for r in rows]) >= 0.9
    assert namespace["head"].labels == list(CLASSES)


def test_train_from_a_bucket(
    spark_s3, s3_bucket: str, onnx_224: Path, dataset: Path, tmp_path: Path
) -> None:
    """Training images in S3 (moto): listed and read through fruitlens.io, calibration
    images for --int8 copied locally; MODEL_DIR stays local."""
    from fruitlens import io as fl_io

    for path in sorted((dataset / "Train").rglob("*.jpg")):
        key = f"train/{path.parent.name}/{path.name}"
        fl_io.write_bytes(f"s3://{s3_bucket}/{key}", path.read_bytes())
    config = TrainConfig(
        input=f"s3://{s3_bucket}/train",
        model_dir=str(tmp_path / "m"),
        test_fraction=0.25,
        k=6,
        int8=True,
        model=str(onnx_224),
        progress=False,
    )
    report = train(config, spark_s3)
    assert report["counts"]["train_errors"] == 1
    assert report["int8"]["n"] == report["n"] > 0
    assert Classifier(tmp_path / "m" / "classifier_int8.onnx").labels == list(CLASSES)
