"""The documented library path gets what ``fruitlens run`` does by default: a driver
listing whose bytes the featurize tasks read themselves, PCA statistics gathered in the
featurize pass and used by ``fit_pca`` / ``FeaturePCA``, one embedding pass (local[2])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("pyspark")

import fruitlens
from fruitlens import spark as fs
from fruitlens.spark import _pca, _tasks

N_ROWS = 43  # the fruit_images fixture: 41 images + corrupt.jpg + empty.jpg
N_GOOD = 41


def _gathered(df, column: str = "features"):
    """The FeatureStats featurize attached to ``df`` (through its column metadata)."""
    token = df.schema[column].metadata[_pca.STATS_KEY]
    return _pca._GATHERED[token][1]


def _plan(df) -> str:
    return str(df._jdf.queryExecution().executedPlan().toString())


def _local(path: str) -> str:
    assert path.startswith("file:"), path
    return path[len("file:") :]


@pytest.mark.spark
@pytest.mark.slow
def test_read_images_is_a_listing_with_lazy_content(
    spark, fruit_images: Path, onnx_224: Path
) -> None:
    images = fs.read_images(spark, str(fruit_images))
    assert images.columns == [
        "path",
        "modificationTime",
        "length",
        "label",
        "content",
        fs.READ_ERROR_COL,
    ]
    assert images.rdd.getNumPartitions() == 2 * spark.sparkContext.defaultParallelism
    listing = images.select("path", "label", "length")
    assert "BatchEvalPython" not in _plan(listing)  # no file is read for the listing
    rows = images.select("path", "content", fs.READ_ERROR_COL).collect()
    assert len(rows) == N_ROWS
    for r in rows:  # the bytes of that very file, read by a task when asked for
        assert bytes(r["content"]) == Path(_local(r["path"])).read_bytes()
        assert r[fs.READ_ERROR_COL] is None
    # featurize reads the files in its own tasks: the content UDF never runs
    features = fs.featurize(images, model=str(onnx_224), stats=False)
    assert "BatchEvalPython" not in _plan(features.select("path"))


@pytest.mark.spark
@pytest.mark.slow
def test_read_images_io_spark_keeps_binary_file(spark, fruit_images: Path) -> None:
    images = fs.read_images(spark, str(fruit_images), io="spark")
    assert fs.READ_ERROR_COL not in images.columns
    assert "BinaryFile" in _plan(images) or "binaryFile" in _plan(images)
    assert images.count() == N_ROWS


@pytest.mark.spark
@pytest.mark.slow
def test_readme_path_embeds_once(spark, fruit_images: Path, onnx_224: Path) -> None:
    images = fs.read_images(spark, str(fruit_images))
    feats = fs.featurize(images, model=str(onnx_224))
    collected = _gathered(feats)
    try:
        pca = fs.fit_pca(feats, k=0.95)  # caches feats, counts: the only embedding pass
        assert feats.storageLevel.useMemory or feats.storageLevel.useDisk
        assert collected.partitions == feats.rdd.getNumPartitions() and not collected.repeated
        out = fs.transform_pca(feats, pca)
        rows = sorted(out.select("path", "features", "pca", "error").collect())
        assert not collected.repeated  # the projection read the cache
        assert len(rows) == N_ROWS and sum(r["error"] is None for r in rows) == N_GOOD
        good = np.array([r["features"] for r in rows if r["error"] is None], np.float32)
        local = fruitlens.PCA(0.95).fit(good)
        assert pca.k == local.k and pca.n_samples_ == N_GOOD
        np.testing.assert_allclose(pca.mean_, local.mean_, atol=1e-5)
        np.testing.assert_allclose(
            pca.explained_variance_ratio_, local.explained_variance_ratio_, atol=1e-6
        )
        # a null filter of the featurize result uses the same statistics (cached: no pass)
        again = fs.fit_pca(feats.filter("error IS NULL"), k=0.95)
        assert again.k == pca.k and not collected.repeated
    finally:
        feats.unpersist()


@pytest.mark.spark
@pytest.mark.slow
def test_fit_pca_after_an_uncached_run_falls_back(spark, fruit_images: Path, onnx_224) -> None:
    feats = fs.featurize(fs.read_images(spark, str(fruit_images)), model=str(onnx_224))
    assert feats.where("features IS NOT NULL").count() == N_GOOD  # ran once, uncached
    assert _pca.gathered_stats(feats, "features") is None  # a count would embed again
    assert not feats.storageLevel.useMemory
    pca = fs.fit_pca(feats, k=3)  # a pass of its own, as before
    assert pca.k == 3 and pca.n_samples_ == N_GOOD
    # a subset of the rows: the gathered statistics do not cover it
    subset = fs.featurize(fs.read_images(spark, str(fruit_images)), model=str(onnx_224)).cache()
    try:
        lemons = subset.where("label = 'lemon'")
        assert _pca.gathered_stats(lemons, "features") is None
        assert fs.fit_pca(lemons, k=2).n_samples_ == 10
    finally:
        subset.unpersist()


@pytest.mark.spark
@pytest.mark.slow
def test_pipeline_fit_and_transform_embed_once(spark, fruit_images: Path, onnx_224) -> None:
    from pyspark.ml import Pipeline

    images = fs.read_images(spark, str(fruit_images))
    embedder = fs.ImageEmbedder(modelPath=str(onnx_224))
    model = Pipeline(stages=[embedder, fs.FeaturePCA(k=4)]).fit(images)
    out = model.transform(images)
    feats = embedder._last[2]
    collected = _gathered(feats)
    try:
        rows = out.select("path", "pca", "error").collect()
        assert len(rows) == N_ROWS and sum(r["pca"] is not None for r in rows) == N_GOOD
        assert collected.partitions == feats.rdd.getNumPartitions()
        assert not collected.repeated  # fit's pass was the only one
        # another input is embedded anew
        lemons = images.where("label = 'lemon'")
        assert model.transform(lemons).where("pca IS NOT NULL").count() == 10
    finally:
        feats.unpersist()


def test_resize_param_and_embedder_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict] = []

    class FakeEmbedder:
        def __init__(self, path, **kwargs) -> None:
            made.append(kwargs)

    monkeypatch.setattr(_tasks, "Embedder", FakeEmbedder)
    monkeypatch.setattr(_tasks, "_EMBEDDERS", {})
    exact = _tasks._get_embedder(("path", "/m.onnx"), 1, 4)
    assert _tasks._get_embedder(("path", "/m.onnx"), 1, 4, "exact") is exact
    fast = _tasks._get_embedder(("path", "/m.onnx"), 1, 4, "fast")
    assert fast is not exact
    assert made == [
        {"threads": 1, "batch_size": 4, "resize": "exact"},
        {"threads": 1, "batch_size": 4, "resize": "fast"},
    ]


@pytest.mark.spark
def test_resize_is_checked_and_saved(spark, tmp_path: Path) -> None:
    df = spark.createDataFrame([(b"",)], "content binary")
    with pytest.raises(ValueError, match="resize"):
        fs.featurize(df, model="m.onnx", resize="quick")
    stage = fs.ImageEmbedder(modelPath="/m.onnx", resize="fast")
    assert stage.getResize() == "fast" and fs.ImageEmbedder().getResize() == "exact"
    stage.save(str(tmp_path / "stage"))
    assert fs.ImageEmbedder.load(str(tmp_path / "stage")).getResize() == "fast"


def test_slices_are_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tasks, "MAX_SLICE_BYTES", 25)
    assert _tasks._byte_ends([10] * 5, 3) == [2, 4, 5]
    assert _tasks._byte_ends([100, 1, 1], 8) == [1, 3]  # a big row alone
    assert _tasks._byte_ends([], 8) == []
    content = pa.array([b"x" * 10] * 5, pa.binary())
    batch = pa.record_batch([content], names=["content"])
    sizes = [len(s) for s in _tasks._slices(batch, 3, _tasks._value_sizes(content))]
    assert sizes == [2, 2, 1]
    mixed = pa.array([b"ab", None, b"cde", b""], pa.binary()).slice(1, 3)
    assert _tasks._value_sizes(mixed) == [0, 3, 0]
    assert _tasks._value_sizes(mixed.cast(pa.large_binary())) == [0, 3, 0]
    assert _tasks._coalesce(pa.array([None, "r"]), pa.array(["e", None])).to_pylist() == ["e", "r"]


def test_fetched_slices_read_a_group_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tasks, "MAX_SLICE_BYTES", 3000)
    monkeypatch.setattr(_tasks, "_FETCH_GROUP", 2)
    paths = []
    for i in range(9):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(bytes([i]) * 1000)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.jpg"))
    batch = pa.record_batch([pa.array(paths)], names=["path"])
    got = list(_tasks._fetched_slices(batch, "path", 256))
    assert sum(len(s) for s, _, _ in got) == 10
    assert all(sum(len(c or b"") for c in content.to_pylist()) <= 4000 for _, content, _ in got)
    assert len(got) > 2
    flat = [c for _, content, _ in got for c in content.to_pylist()]
    assert flat[:9] == [bytes([i]) * 1000 for i in range(9)] and flat[9] is None
    errors = [e for _, _, err in got for e in err.to_pylist()]
    assert errors[:9] == [None] * 9 and errors[9].startswith("unreadable: ")
