"""Spark Connect: ``fruitlens run --remote`` / ``SPARK_REMOTE`` and every public function
of ``fruitlens.spark`` (and the pyspark.ml stages) against a real Spark Connect server
(``start-connect-server.sh`` from the pyspark package, its own JVM), compared with a
classic local session on the same images.

The Connect client runs in subprocesses: a Connect session in this process would turn
pyspark's functions to Connect mode for the classic tests that follow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _connect_server import connect_available, connect_server

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FRUITLENS = str(Path(sys.executable).with_name("fruitlens"))


@pytest.fixture(scope="module")
def connect_url() -> str:
    why = connect_available()
    if why:
        pytest.skip(why)
    with connect_server() as url:
        yield url


def _table(output: Path) -> dict[str, dict]:
    rows = pq.read_table(output).to_pylist()
    return {r["path"]: r for r in rows}


def _max_delta(a: list[float] | None, b: list[float] | None) -> float:
    if a is None or b is None:
        assert a is None and b is None
        return 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYSPARK_PYTHON": sys.executable, **env}
    return subprocess.run(
        [FRUITLENS, "run", *args], capture_output=True, text=True, env=full_env, timeout=600
    )


def test_run_remote_matches_classic(
    connect_url: str, fruit_images: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """``fruitlens run`` over Spark Connect (SPARK_REMOTE) writes the same output as on a
    classic local session: same rows and errors, identical features, the same PCA."""
    common = ["--model", str(onnx_224), "--k", "5", "--no-progress"]
    classic = _run(str(fruit_images), str(tmp_path / "classic"), "--engine", "spark", *common)
    assert classic.returncode == 0, classic.stderr
    remote = _run(str(fruit_images), str(tmp_path / "connect"), *common, SPARK_REMOTE=connect_url)
    assert remote.returncode == 0, remote.stderr
    summary = json.loads((tmp_path / "connect" / "_summary.json").read_text())
    assert summary["spark_connect"] is True and summary["engine"] == "spark"
    assert summary["pca_statistics"] == "pass over the cached features"
    assert summary["images"] == 43 and summary["errors"] == 2
    classic_summary = json.loads((tmp_path / "classic" / "_summary.json").read_text())
    assert classic_summary["spark_connect"] is False

    a, b = _table(tmp_path / "classic"), _table(tmp_path / "connect")
    assert sorted(a) == sorted(b) and len(b) == 43
    for path, row in a.items():
        assert row["label"] == b[path]["label"] and row["error"] == b[path]["error"]
        assert row["features"] == b[path]["features"]  # bit-identical
        assert _max_delta(row["pca"], b[path]["pca"]) < 1e-3
    pca_a = json.loads((tmp_path / "classic" / "_pca" / "pca.json").read_text())
    pca_b = json.loads((tmp_path / "connect" / "_pca" / "pca.json").read_text())
    assert pca_a["k"] == pca_b["k"] == 5
    assert pca_a["n_samples"] == pca_b["n_samples"] == 41


def test_run_remote_flag_and_master_conflict(connect_url: str, fruit_images: Path) -> None:
    """``--remote`` with ``--master`` is a one-line error before any work."""
    never = "/tmp/never-written"
    out = _run(str(fruit_images), never, "--remote", connect_url, "--master", "local[1]")
    assert out.returncode != 0
    assert "either --master" in out.stderr and "Traceback" not in out.stderr
    assert not os.path.exists(never)


_LIBRARY = textwrap.dedent(
    """
    import json, sys
    import pyarrow.parquet as pq
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.sql import SparkSession
    import fruitlens.spark as fs
    from fruitlens import PCAError

    url, images, model, out = sys.argv[1:5]
    spark = SparkSession.builder.remote(url).getOrCreate()
    assert type(spark).__module__.startswith("pyspark.sql.connect")
    report = {}

    # read_images (lazy content, read by the featurize tasks) -> featurize -> PCA
    feats = fs.featurize(fs.read_images(spark, images), model=model)
    pca = fs.fit_pca(feats, k=5)
    scored = fs.transform_pca(feats, pca).select("path", "features", "pca", "error")
    pq.write_table(scored.toArrow(), out + "/read_images.parquet")
    report["pca"] = pca.to_json()

    # list_images + featurize(fetch_from=...), Spark's binaryFile (io="spark")
    listed = fs.featurize(fs.list_images(spark, images), model=model, fetch_from="path")
    report["listed"] = listed.where("features IS NOT NULL").count()
    spark_io = fs.featurize(fs.read_images(spark, images, io="spark"), model=model)
    report["binary_file"] = spark_io.where("features IS NOT NULL").count()

    # pca_stats with more partitions than the driver merges (shuffle + merge tasks)
    stats = fs.pca_stats(feats.repartition(12))
    report["stats_count"] = stats.count

    # FeatureStats needs accumulators: a clear error
    try:
        fs.FeatureStats(spark)
        report["feature_stats"] = "no error"
    except PCAError as exc:
        report["feature_stats"] = str(exc)

    # pyspark.ml stages in a Pipeline, saved and loaded
    from fruitlens.spark.ml import FeaturePCA, ImageEmbedder

    pipe = Pipeline(stages=[ImageEmbedder(modelPath=model), FeaturePCA(k=5, outputCol="pca")])
    fitted = pipe.fit(fs.read_images(spark, images))
    fitted.write().overwrite().save(out + "/pipeline")
    loaded = PipelineModel.load(out + "/pipeline")
    ml = loaded.transform(fs.read_images(spark, images)).select("path", "pca")
    pq.write_table(ml.toArrow(), out + "/ml.parquet")

    # a classifier head (pyspark.ml's LogisticRegression on Connect), scored on Spark
    head = fs.train_classifier(feats, k=5, max_iter=20)
    scored = fs.predict_features(feats, head).where("prediction IS NOT NULL")
    report["labels"] = list(head.labels)
    report["accuracy"] = scored.where("prediction = label").count() / scored.count()
    print(json.dumps(report))
    """
)


def test_library_over_connect(
    connect_url: str, spark, fruit_images: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """read_images, list_images, featurize (lazy content, fetch_from, binaryFile),
    fit_pca, pca_stats, transform_pca and the ml stages work over Connect, with the
    features a classic session computes."""
    import fruitlens.spark as fs

    script = tmp_path / "library.py"
    script.write_text(_LIBRARY)
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env["PYSPARK_PYTHON"] = sys.executable
    done = subprocess.run(
        [sys.executable, str(script), connect_url, str(fruit_images), str(onnx_224), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["listed"] == report["binary_file"] == report["stats_count"] == 41
    assert "classic SparkSession" in report["feature_stats"]
    assert report["labels"] == ["apple", "lemon", "mango", "raspberry"]
    assert report["accuracy"] >= 0.9  # trained and scored on the same 41 images

    # the classic session's answers on the same images
    feats = fs.featurize(fs.read_images(spark, str(fruit_images)), model=onnx_224)
    pca = fs.fit_pca(feats, k=5)
    classic = {r["path"]: r for r in fs.transform_pca(feats, pca).collect()}
    remote = _table(tmp_path / "read_images.parquet")
    assert sorted(classic) == sorted(remote)
    for path, row in remote.items():
        assert row["error"] == classic[path]["error"]
        assert row["features"] == (list(classic[path]["features"]) if row["features"] else None)
        assert _max_delta(row["pca"], classic[path]["pca"]) < 1e-3
    ml = _table(tmp_path / "ml.parquet")
    assert sorted(ml) == sorted(classic)
    for path, row in ml.items():
        assert _max_delta(row["pca"], classic[path]["pca"]) < 1e-3


def test_connect_progress_line_from_the_server_progress() -> None:
    """The progress line on Connect: the stages the server reports (done/total tasks,
    running tasks), finished stages dropped; registered and removed with the block."""
    import io
    from types import SimpleNamespace

    from fruitlens._progress import ConnectProgress

    class Session:  # what ConnectProgress uses of a Connect SparkSession
        def __init__(self) -> None:
            self.handlers: list = []

        def registerProgressHandler(self, handler) -> None:
            self.handlers.append(handler)

        def removeProgressHandler(self, handler) -> None:
            self.handlers.remove(handler)

    session = Session()
    progress = ConnectProgress(session, stream=io.StringIO(), interval=60)
    with progress:
        assert session.handlers == [progress]
        progress.phase("featurize")
        assert progress._line() is None
        stage = SimpleNamespace(stage_id=3, num_tasks=4, num_completed_tasks=1, done=False)
        old = SimpleNamespace(stage_id=2, num_tasks=1, num_completed_tasks=1, done=True)
        progress([old, stage], 2, "op", False)
        line = progress._line()
        assert line is not None and line.startswith("[featurize")
        assert line.endswith("stage 3: 1/4 tasks, 2 running")
    assert session.handlers == []


def test_hadoop_outputs_are_refused_on_connect() -> None:
    """A Hadoop-filesystem OUTPUT needs the JVM a Connect client does not have: a clear
    OutputError, not an attribute error from deep inside."""
    from fruitlens import OutputError
    from fruitlens.output._stores import store_for

    class ConnectSession:  # what the check looks at: the session's class's module
        pass

    ConnectSession.__module__ = "pyspark.sql.connect.session"
    with pytest.raises(OutputError, match="on Spark Connect, outputs go to local folders"):
        store_for("hdfs://namenode/out", ConnectSession(), "auto")


def test_an_unreachable_connect_server_is_a_one_line_error(
    fruit_images: Path, tmp_path: Path
) -> None:
    """The Connect client would retry a dead address for minutes: fruitlens checks that
    the server accepts a connection first, and refuses malformed URLs, before any work."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    dead = _run(str(fruit_images), str(out), "--remote", f"sc://127.0.0.1:{port}")
    assert dead.returncode == 1 and "cannot reach the Spark Connect server" in dead.stderr
    bad = _run(str(fruit_images), str(out), "--remote", "sc:/nohost")
    assert bad.returncode == 1 and "--remote must be sc://HOST[:PORT]" in bad.stderr
    for result in (dead, bad):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_stream_over_connect_matches_classic(
    connect_url: str, fruit_images: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """``fruitlens stream --remote``: the same rows (errors included) and bit-identical
    features as the stream on a classic local session; a restart has nothing to redo."""
    import fruitlens

    rng = np.random.default_rng(0)
    fruitlens.PCA(3).fit(rng.normal(size=(20, 1280)).astype(np.float32)).save(tmp_path / "pca.json")
    common = ["--pca", str(tmp_path / "pca.json"), "--model", str(onnx_224)]
    common += ["--once", "--settle", "0s", "--trigger", "500ms"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}

    def stream(out: Path, *extra: str) -> subprocess.CompletedProcess:
        argv = [FRUITLENS, "stream", str(fruit_images), str(out), *common, *extra]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)

    classic = stream(tmp_path / "classic", "--master", "local[2]")
    assert classic.returncode == 0, classic.stderr
    remote = stream(tmp_path / "connect", "--remote", connect_url)
    assert remote.returncode == 0, remote.stderr
    assert "43 new rows" in remote.stdout
    a = {p.name: p for p in (tmp_path / "classic").glob("part-*.parquet")}
    assert a and sorted(a) == sorted(p.name for p in (tmp_path / "connect").glob("part-*"))
    rows_a = {r["path"]: r for p in sorted(a.values()) for r in pq.read_table(p).to_pylist()}
    rows_b = {
        r["path"]: r
        for p in sorted((tmp_path / "connect").glob("part-*.parquet"))
        for r in pq.read_table(p).to_pylist()
    }
    assert sorted(rows_a) == sorted(rows_b) and len(rows_b) == 43
    for path, row in rows_a.items():
        assert row["error"] == rows_b[path]["error"] and row["label"] == rows_b[path]["label"]
        assert row["features"] == rows_b[path]["features"]  # bit-identical
        assert _max_delta(row["pca"], rows_b[path]["pca"]) < 1e-4
    again = stream(tmp_path / "connect", "--remote", connect_url)
    assert again.returncode == 0 and "0 new rows" in again.stdout, again.stderr


def test_incremental_run_over_connect_matches_native(
    connect_url: str, fruit_images: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """``fruitlens run --incremental --remote``: the new images embedded by the Connect
    server's tasks; the output equals the native incremental run's, row for row."""
    import shutil

    from fruitlens import output

    src = tmp_path / "src"
    shutil.copytree(fruit_images, src)
    common = ["--model", str(onnx_224), "--k", "5", "--no-progress", "--partitions", "2"]
    first = _run(str(src), str(tmp_path / "native"), "--engine", "native", *common)
    assert first.returncode == 0, first.stderr
    shutil.copytree(tmp_path / "native", tmp_path / "connect")
    extra = sorted((fruit_images / "apple").glob("*.jpg"))[:2]
    for i, path in enumerate(extra):
        shutil.copyfile(path, src / "lemon" / f"new-{i}.jpg")
    (src / "mango" / "empty.jpg").unlink()
    native = _run(str(src), str(tmp_path / "native"), "--incremental", *common)
    assert native.returncode == 0, native.stderr
    remote = _run(
        str(src), str(tmp_path / "connect"), "--incremental", "--remote", connect_url, *common
    )
    assert remote.returncode == 0, remote.stderr
    summary = json.loads((tmp_path / "connect" / "_summary.json").read_text())
    assert summary["engine"] == "spark" and summary["spark_connect"] is True
    assert summary["incremental"]["new"] == 2 and summary["incremental"]["deleted"] == 1
    a = output.read_output(str(tmp_path / "native"))[0]
    b = output.read_output(str(tmp_path / "connect"))[0]
    assert a.num_rows == 44 and a.equals(b)
