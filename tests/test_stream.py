"""Streaming ingestion (issue 16 item 2): ``featurize``/``transform_pca`` on a Structured
Streaming DataFrame, and ``fruitlens stream``: each image exactly once across SIGKILLs,
a slowly written file taken only once complete, a broken file one error row."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import fruitlens
from fruitlens._args import duration_arg
from fruitlens._listing import ImageRef
from fruitlens._stream_run import settled

SAMPLE = "data/fruits360-sample/Test"
FRUITLENS = [sys.executable, "-m", "fruitlens.cli"]


def _images(shared_dir: Path, per_class: int, classes=("apple", "lemon", "mango")) -> list[Path]:
    return [p for c in classes for p in sorted((shared_dir / SAMPLE / c).iterdir())[:per_class]]


def _reference(model: Path, files: list[Path]) -> dict[str, np.ndarray]:
    batch = fruitlens.Embedder(model).embed(files)
    x = batch.column("features").flatten().to_numpy().reshape(len(files), -1)
    return {f.name: x[i] for i, f in enumerate(files)}


def _rows(output: Path) -> list[dict]:
    parts = sorted(output.glob("part-*.parquet"))
    return [r for p in parts for r in pq.read_table(p).to_pylist()]


def test_duration_and_settle_rule() -> None:
    assert duration_arg("10s") == 10.0 and duration_arg("500ms") == 0.5
    assert duration_arg("1m") == 60.0 and duration_arg("2") == 2.0
    from datetime import datetime, timezone

    t = datetime.fromtimestamp(100.0, tz=timezone.utc)
    ref = ImageRef("file:/a/b.jpg", "a", 10, t)
    assert not settled(ref, {}, 200.0, 2.0)  # first sight
    assert not settled(ref, {ref.path: (9, t)}, 200.0, 2.0)  # grew since
    assert not settled(ref, {ref.path: (10, t)}, 101.0, 2.0)  # too young
    assert settled(ref, {ref.path: (10, t)}, 102.0, 2.0)
    assert settled(ImageRef("file:/x.jpg", "a", 0, None, "dangling link"), {}, 0.0, 2.0)


def test_featurize_and_transform_pca_on_a_stream(spark, onnx_224, shared_dir, tmp_path) -> None:
    import fruitlens.spark as fs

    src = tmp_path / "in"
    files = _images(shared_dir, 2)
    for f in files:
        (src / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, src / f.parent.name / f.name.upper().replace("JPG", "JpG"))
    (src / "apple" / "broken.jpg").write_bytes(b"not an image")
    ref = _reference(onnx_224, files)
    pca = fruitlens.PCA(3).fit(np.stack(list(ref.values())))
    stream = fs.read_image_stream(spark, str(src), max_files_per_trigger=4)
    assert stream.isStreaming
    out = fs.transform_pca(fs.featurize(stream, model=onnx_224), pca)
    query = (
        out.select("path", "label", "features", "pca", "error")
        .writeStream.format("parquet")
        .option("checkpointLocation", str(tmp_path / "ck"))
        .trigger(availableNow=True)
        .start(str(tmp_path / "out"))
    )
    query.awaitTermination(120)
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert len(rows) == len(files) + 1
    by_name = {r["path"].rsplit("/", 1)[1].lower(): r for r in rows}
    assert by_name["broken.jpg"]["error"].startswith("unknown_format")
    assert by_name["broken.jpg"]["features"] is None
    for f in files:
        row = by_name[f.name.lower()]
        assert row["error"] is None and row["label"] == f.parent.name
        assert np.abs(np.array(row["features"], np.float32) - ref[f.name]).max() == 0
        expected = pca.transform(ref[f.name][None, :])[0]
        np.testing.assert_allclose(row["pca"], expected, rtol=1e-4, atol=1e-4)


def _start(args: list[str], log: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("FRUITLENS_TEST_KILL", None)
    if kill_at:
        env["FRUITLENS_TEST_KILL"] = kill_at
    with open(log, "ab") as f:
        return subprocess.Popen([*FRUITLENS, *args], stdout=f, stderr=f, env=env)


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def _copy(files: list[Path], root: Path) -> None:
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        tmp = root / f.parent.name / ("." + f.name)  # written hidden, then renamed
        shutil.copyfile(f, tmp)
        os.replace(tmp, root / f.parent.name / f.name)


def test_stream_exactly_once_across_kills(onnx_224, shared_dir, tmp_path) -> None:
    files = _images(shared_dir, 4)  # 12 images in three bursts
    slow_src = sorted((shared_dir / SAMPLE / "raspberry").iterdir())[0]
    ref = _reference(onnx_224, [*files, slow_src])
    pca = fruitlens.PCA(4).fit(np.stack(list(ref.values())))
    pca.save(tmp_path / "pca.json")
    inp, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "stream.log"
    inp.mkdir()
    args = [
        "stream",
        str(inp),
        str(out),
        "--pca",
        str(tmp_path / "pca.json"),
        "--model",
        str(onnx_224),
    ]
    args += ["--trigger", "1s", "--settle", "2s"]
    commits = out / "_checkpoint" / "commits"
    plans = out / "_checkpoint" / "plans"

    # 1. burst 1 + a broken file; killed after publishing batch 0, before its commit
    _copy(files[:4], inp)
    (inp / "lemon").mkdir(exist_ok=True)
    (inp / "lemon" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated JPEG")
    p = _start(args, log, kill_at="stream-published")
    assert p.wait(90) == -signal.SIGKILL
    assert list(out.glob("part-*.parquet")) and not list(commits.iterdir())

    # 2. restart: batch 0 again (same files), then burst 2 and a file written slowly
    p = _start(args, log)
    _copy(files[4:8], inp)
    (inp / "raspberry").mkdir()
    data = slow_src.read_bytes()
    with open(inp / "raspberry" / slow_src.name, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(1.6)  # longer than a trigger, shorter than --settle
        f.write(data[len(data) // 2 :])
    _wait(lambda: sum(1 for _ in commits.iterdir()) >= 2, 90, "batches 0 and 1")
    # 3. burst 3; SIGKILL while its batch is being processed (planned, not committed)
    n_plans = len(list(plans.iterdir()))
    _copy(files[8:], inp)
    _wait(lambda: len(list(plans.iterdir())) > n_plans or p.poll() is not None, 60, "a plan")
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    # killed mid-batch: planned, not committed (processing takes far longer than a poll)
    assert len(list(plans.iterdir())) > len(list(commits.iterdir()))
    with open(log, "a") as f:
        f.write("--- SIGKILL mid-batch\n")

    # 4. restart with --once: finishes the interrupted batch and whatever is left
    p = _start([*args, "--once"], log)
    assert p.wait(120) == 0, log.read_text()
    text = log.read_text()
    print(text)
    rows = _rows(out)
    names = [r["path"].rsplit("/", 1)[1] for r in rows]
    assert sorted(names) == sorted([f.name for f in files] + ["broken.jpg", slow_src.name]), text
    assert all(r["path"].startswith("file:/") for r in rows)
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in rows}
    assert by_name["broken.jpg"]["error"] and by_name["broken.jpg"]["features"] is None
    slow = by_name[slow_src.name]
    assert slow["error"] is None and slow["length"] == len(data), text
    for name, vec in ref.items():
        got = np.array(by_name[name]["features"], np.float32)
        assert np.abs(got - vec).max() == 0
        np.testing.assert_allclose(by_name[name]["pca"], pca.transform(vec[None])[0], atol=1e-4)
    assert "fruitlens: batch 0:" in text and "latency" in text
    assert len(list(commits.iterdir())) == len(list(plans.glob("*.json")))


def test_stream_refuses_bad_arguments_before_work(tmp_path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (tmp_path / "pca.json").write_text("{}")
    cases = [
        ([str(inp), str(tmp_path / "o"), "--pca", str(tmp_path / "pca.json")], "PCA"),
        ([str(inp), str(inp / "o"), "--pca", str(tmp_path / "pca.json")], "error"),
        ([str(tmp_path / "nope"), str(tmp_path / "o"), "--pca", "x"], "does not exist"),
        ([str(inp), str(tmp_path / "o"), "--pca", "x", "--trigger", "soon"], "duration"),
        (["hdfs://nn/in", str(tmp_path / "o"), "--pca", "x"], "local folder or an object store"),
        (
            [
                str(inp),
                str(tmp_path / "o"),
                "--pca",
                "x",
                "--master",
                "local[1]",
                "--remote",
                "sc://h",
            ],
            "either --master",
        ),
    ]
    for argv, word in cases:
        r = subprocess.run([*FRUITLENS, "stream", *argv], capture_output=True, text=True)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith(("fruitlens: error:", "fruitlens stream: error:")), r.stderr
        assert word in lines[-1], r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.spark
def test_stream_on_an_object_store(
    spark_s3, s3_server, s3_bucket, random_onnx, shared_dir, monkeypatch
) -> None:
    """``fruitlens stream s3://... s3://...``: INPUT, OUTPUT, checkpoint and PCA on S3
    (moto); a batch published but not committed (a crash) is run again with the same
    files; later images come in later batches; every image exactly once."""
    import pyarrow.dataset as ds

    from fruitlens import _stream_run, io
    from fruitlens._errors import CLIError

    client = s3_server.client()
    files = _images(shared_dir, 2, classes=("apple", "lemon"))
    base = f"s3://{s3_bucket}"

    def upload(paths: list[Path]) -> None:
        for f in paths:
            client.upload_file(str(f), s3_bucket, f"in/{f.parent.name}/{f.name}")

    upload(files[:3])
    client.put_object(Bucket=s3_bucket, Key="in/lemon/broken.jpg", Body=b"\xff\xd8\xff broken")
    ref = _reference(random_onnx, files)
    pca = fruitlens.PCA(2).fit(np.stack(list(ref.values())))
    io.write_text(f"{base}/pca.json", pca.to_json())
    config = _stream_run.StreamConfig(
        input=f"{base}/in",
        output=f"{base}/out",
        pca=f"{base}/pca.json",
        model=str(random_onnx),
        trigger=0.2,
        settle=0.0,
        once=True,
    )

    def rows() -> list[dict]:
        fs, path = io.filesystem_for(f"{base}/out")
        table = ds.dataset(path, filesystem=fs, format="parquet").to_table()
        return table.to_pylist()

    # 1. a crash after the part is published, before the commit marker
    real_commit = _stream_run.Checkpoint.commit

    def crash(self, bid: int, n: int) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(_stream_run.Checkpoint, "commit", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _stream_run.run_stream(config, spark=spark_s3)
    assert len(rows()) == 4  # published, not committed
    assert io.exists(f"{base}/out/_checkpoint/plans/0.json")
    assert not io.exists(f"{base}/out/_checkpoint/commits/0")

    # 2. restart: batch 0 again with the same files (its part replaced), then the rest
    monkeypatch.setattr(_stream_run.Checkpoint, "commit", real_commit)
    upload(files[3:])
    assert _stream_run.run_stream(config, spark=spark_s3) == 5
    got = rows()
    names = sorted(r["path"].rsplit("/", 1)[1] for r in got)
    assert names == sorted([f.name for f in files] + ["broken.jpg"])
    assert all(r["path"].startswith(f"{base}/in/") for r in got)
    for r in got:
        name = r["path"].rsplit("/", 1)[1]
        if name == "broken.jpg":
            assert r["error"] and r["features"] is None
            continue
        assert np.abs(np.array(r["features"], np.float32) - ref[name]).max() == 0
        np.testing.assert_allclose(r["pca"], pca.transform(ref[name][None])[0], atol=1e-4)
    assert io.exists(f"{base}/out/_checkpoint/commits/1")

    # 3. nothing new: nothing written; another PCA: refused, one line
    assert _stream_run.run_stream(config, spark=spark_s3) == 0
    other = fruitlens.PCA(1).fit(np.stack(list(ref.values())))
    io.write_text(f"{base}/pca2.json", other.to_json())
    with pytest.raises(CLIError, match="belongs to another stream"):
        _stream_run.prepare(
            _stream_run.StreamConfig(**{**config.__dict__, "pca": f"{base}/pca2.json"})
        )
