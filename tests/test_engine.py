"""``fruitlens run --engine native|spark|auto`` (issue 14 item 1): the single-machine
engine writes what the Spark engine writes (every output file compared on the same
images), needs no Java and never imports pyspark; ``auto`` picks it where it applies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fruitlens
from fruitlens import _native_run, io, output
from fruitlens._errors import CLIError
from fruitlens.pipeline import RunConfig, run

#: Sample images per class (4 classes) in ``engine_images``.
PER_CLASS = 25


def _odd_files(shared: Path) -> list[Path]:
    """Every third decodable-looking file of image-rs's test images (all formats)."""
    root = shared / "data" / "image-rs-tests"
    exts = {".jpg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    return files[::3]


@pytest.fixture(scope="module")
def engine_images(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~100 sample JPEGs in 4 class folders, ~45 odd images of every format under
    ``odd/<format>/``, a zero-byte file, a truncated JPEG, a dangling link, and files
    that must be skipped (``notes.txt``, ``.hidden.jpg``, ``_tmp/``)."""
    root = tmp_path_factory.mktemp("engine_images")
    source = shared_dir / "data" / "fruits360-sample" / "Test"
    for cls in ("apple", "lemon", "mango", "raspberry"):
        (root / cls).mkdir()
        for path in sorted((source / cls).iterdir())[:PER_CLASS]:
            shutil.copyfile(path, root / cls / path.name)
    for path in _odd_files(shared_dir):
        fmt = path.relative_to(shared_dir / "data" / "image-rs-tests").parts[0]
        (root / "odd" / fmt).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / "odd" / fmt / f"{path.parent.name}-{path.name}")
    jpeg = sorted((source / "lemon").iterdir())[-1].read_bytes()
    (root / "lemon" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "mango" / "empty.jpg").write_bytes(b"")
    (root / "apple" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "raspberry" / "notes.txt").write_text("not an image")
    shutil.copyfile(root / "lemon" / "truncated.jpg", root / "raspberry" / ".hidden.jpg")
    (root / "_tmp").mkdir()
    shutil.copyfile(root / "lemon" / "truncated.jpg", root / "_tmp" / "skipped.jpg")
    return root


def _config(src: Path | str, out: Path | str, model: Path, engine: str, **kw) -> RunConfig:
    return RunConfig(
        str(src), str(out), model=str(model), k=0.9, engine=engine, progress=False, **kw
    )


def _rows(out: Path) -> dict[str, dict]:
    manifest = output.verify(str(out))
    table = pa.concat_tables([pq.read_table(out / p) for p in manifest.parts])
    return {row["path"]: row for row in table.to_pylist()}


def _schema(out: Path) -> list[tuple[str, str, bool]]:
    part = output.verify(str(out)).parts[0]
    return [(f.name, str(f.type), f.nullable) for f in pq.read_schema(out / part)]


def _aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` with each column's sign flipped to match ``a`` (PCA axes have no sign)."""
    signs = np.sign((a * b).sum(axis=0))
    signs[signs == 0] = 1
    return b * signs


@pytest.fixture(scope="module")
def both_outputs(
    spark, engine_images: Path, random_onnx: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict, dict]:
    base = tmp_path_factory.mktemp("engines")
    native_out, spark_out = base / "native", base / "spark"
    native = run(_config(engine_images, native_out, random_onnx, "native"))
    spark_summary = run(_config(engine_images, spark_out, random_onnx, "spark"), spark)
    return native_out, spark_out, native, spark_summary


@pytest.mark.spark
@pytest.mark.slow
def test_both_engines_write_the_same_output(both_outputs) -> None:
    native_out, spark_out, native, spark_summary = both_outputs
    assert _schema(native_out) == _schema(spark_out)
    a, b = _rows(native_out), _rows(spark_out)
    assert sorted(a) == sorted(b) and len(a) > 4 * PER_CLASS + 30
    for path, row in a.items():
        other = b[path]
        assert row["label"] == other["label"], path
        assert row["error"] == other["error"], path  # the same text, not only the kind
        assert row["features"] == other["features"], path  # bit for bit
        for lineage in ("length", "modificationTime"):  # the listing's, as Spark's
            assert row[lineage] == other[lineage], (path, lineage)
        assert (row["pca"] is None) == (other["pca"] is None), path
    names = {Path(p).name: r["error"] for p, r in a.items()}
    assert names["empty.jpg"].startswith("empty:")
    assert names["dangling.jpg"].startswith("unreadable:")
    assert names["truncated.jpg"] is not None
    assert "notes.txt" not in names and ".hidden.jpg" not in names
    assert "skipped.jpg" not in names

    good = sorted(p for p, r in a.items() if r["pca"] is not None)
    pa_, pb = (np.array([rows[p]["pca"] for p in good], np.float32) for rows in (a, b))
    np.testing.assert_allclose(pa_, _aligned(pa_, pb), atol=1e-5)

    pca_a = fruitlens.PCA.load(native_out / "_pca" / "pca.json")
    pca_b = fruitlens.PCA.load(spark_out / "_pca" / "pca.json")
    assert (pca_a.k, pca_a.n_samples_) == (pca_b.k, pca_b.n_samples_)
    np.testing.assert_allclose(pca_a.mean_, pca_b.mean_, atol=1e-6)
    np.testing.assert_allclose(
        pca_a.explained_variance_ratio_, pca_b.explained_variance_ratio_, atol=1e-6
    )
    ca, cb = pca_a.components_.T, pca_b.components_.T
    np.testing.assert_allclose(ca, _aligned(ca, cb), atol=1e-5)

    for summary, out in ((native, native_out), (spark_summary, spark_out)):
        assert json.loads((out / "_summary.json").read_text()) == summary
    assert set(native) == set(spark_summary)
    assert (native["engine"], spark_summary["engine"]) == ("native", "spark")
    assert native["master"] is None and native["spark_version"] is None
    same = ("images", "errors", "error_kinds", "k", "k_rule", "pca_samples", "pca_statistics")
    assert {k: native[k] for k in same} == {k: spark_summary[k] for k in same}
    assert set(native["stages"]) == set(spark_summary["stages"])
    manifest_a, manifest_b = output.verify(str(native_out)), output.verify(str(spark_out))

    def non_parts(files: dict) -> set[str]:  # (Spark also lists its .crc checksums)
        return {f for f in files if not f.endswith((".parquet", ".crc"))}

    assert non_parts(manifest_a.files) == non_parts(manifest_b.files)
    assert 1 <= len(manifest_a.parts) <= os.cpu_count()


@pytest.mark.spark
@pytest.mark.slow
def test_incremental_run_over_a_spark_output(
    both_outputs, engine_images: Path, random_onnx: Path, tmp_path: Path
) -> None:
    """``--incremental`` (native) updates what the Spark engine wrote: nothing changed,
    so every row is kept as it is, but the dangling link's ``unreadable:`` row, retried."""
    _, spark_out, _, _ = both_outputs
    out = tmp_path / "out"
    shutil.copytree(spark_out, out)
    before = _rows(out)
    summary = run(_config(engine_images, out, random_onnx, "auto", incremental=True))
    assert summary["incremental"].pop("parts_reused") >= 0  # parts without that row
    assert summary["incremental"] == {
        "new": 0,
        "changed": 0,
        "deleted": 0,
        "kept": len(before) - 1,
        "retried": 1,
        "refit": False,
    }
    after = _rows(out)
    assert after == before  # the retried link is still dangling: the same row again
    assert (out / "_pca" / "pca.json").read_bytes() == (
        spark_out / "_pca" / "pca.json"
    ).read_bytes()


# --------------------------------------------------------------------------------------
# No Java, no pyspark
# --------------------------------------------------------------------------------------

_NO_PYSPARK = """
import sys
from fruitlens import cli
code = cli.main(sys.argv[1:])
print("CODE", code, "PYSPARK", any(m.split(".")[0] in ("pyspark", "py4j") for m in sys.modules))
print("PANDAS", "pandas" in sys.modules)
"""


def _no_java_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK"))}
    env.update(PATH=str(tmp_path), JAVA_HOME=str(tmp_path / "no-jdk"), **extra)
    return env


def _run_no_java(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _NO_PYSPARK, "run", *args],
        capture_output=True,
        text=True,
        env=_no_java_env(tmp_path, **env),
        timeout=600,
        cwd=tmp_path,
    )


def test_native_needs_no_java_and_never_imports_pyspark(
    engine_images: Path, random_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _run_no_java(tmp_path, str(engine_images), str(out), "--model", str(random_onnx))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CODE 0 PYSPARK False" in result.stdout, result.stdout + result.stderr
    assert "PANDAS False" in result.stdout  # (skip_pandas_probe: 0.2-0.6 s less)
    assert "native engine" in result.stdout
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["engine"] == "native" and summary["images"] == len(_rows(out))

    # the output exists: refused without --overwrite, as with Spark, untouched
    run_id = output.verify(str(out)).run_id
    again = _run_no_java(tmp_path, str(engine_images), str(out), "--model", str(random_onnx))
    assert "CODE 1" in again.stdout
    assert again.stderr.strip() == (
        f"fruitlens: error: output {out} exists (a fruitlens output of run {run_id}): "
        "pass --overwrite to replace it, or choose a new output folder"
    )
    assert output.verify(str(out)).run_id == run_id
    args = [str(engine_images), str(out), "--model", str(random_onnx), "--overwrite"]
    replaced = _run_no_java(tmp_path, *args, "--k", "3", "--engine", "native", "--no-progress")
    assert "CODE 0 PYSPARK False" in replaced.stdout, replaced.stderr[-3000:]
    assert output.verify(str(out)).run_id != run_id
    assert fruitlens.PCA.load(out / "_pca" / "pca.json").k == 3
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.fruitlens-")]

    # asking for Spark there fails on Java, as before
    spark_try = _run_no_java(tmp_path, *args, "--engine", "spark")
    assert "CODE 1" in spark_try.stdout and "bin/java" in spark_try.stderr


_AFTER_THE_PROBE = """
import sys
import pyarrow as pa
from fruitlens._native_run import skip_pandas_probe
skip_pandas_probe()
pa.array([1, 2]); pa.scalar("x")
assert "pandas" not in sys.modules
import pandas as pd
df = pd.DataFrame({"a": [1.5, None], "t": pd.to_datetime(["2020-01-01", None])})
assert pa.table({"x": [1, 2]}).to_pandas()["x"].tolist() == [1, 2]
table = pa.Table.from_pandas(df)
assert table.column("a").to_pylist() == [1.5, None] and table.column("t").null_count == 1
assert pa.array(df["a"]).to_pylist() == [1.5, None]  # (to_pandas ran: a Series again)
print("OK")
"""


def test_skip_pandas_probe_keeps_pandas_working() -> None:
    """After the skipped probe pyarrow does not import pandas for Python objects, and
    pandas and pyarrow's pandas conversions work as before once pandas is imported."""
    result = subprocess.run(
        [sys.executable, "-c", _AFTER_THE_PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-3000:]


def test_native_one_line_errors(tmp_path: Path, random_onnx: Path, capsys) -> None:
    from fruitlens import cli

    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "a" / "notes.txt").write_text("x")
    argv = ["run", str(tmp_path / "none"), str(tmp_path / "o1"), "--model", str(random_onnx)]
    assert cli.main([*argv, "--engine", "native", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"fruitlens: error: no images found under {tmp_path / 'none'}")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "bad" / "a" / f"{i}.jpg").write_bytes(b"not a jpeg")
    argv = ["run", str(tmp_path / "bad"), str(tmp_path / "o2"), "--model", str(random_onnx)]
    assert cli.main([*argv, "--engine", "native", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fruitlens: error: all 3 images failed, e.g. unknown_format: ")
    assert "(and 2 more like it)" in err and "\n" not in err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert not [p for p in os.listdir(tmp_path) if ".fruitlens-staging-" in p]


def test_native_ctrl_c_prints_one_line_and_leaves_nothing(
    engine_images: Path, random_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "FRUITLENS_TEST_KILL": "featurize:SIGINT:0.3"}
    env["FRUITLENS_LOG_DIR"] = str(tmp_path / "logs")
    args = [str(engine_images), str(out), "--model", str(random_onnx), "--engine", "native"]
    proc = subprocess.run(
        [sys.executable, "-m", "fruitlens.cli", "run", *args, "--no-progress", "--batch-size", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 130), proc.stderr[-3000:]
    if proc.returncode == 130:  # (the run may finish first on a fast machine)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fruitlens: interrupted"), proc.stderr
        assert not out.exists() and not list(tmp_path.glob(".out.fruitlens-*"))


def test_native_sigkill_before_the_swap_keeps_the_old_output(
    engine_images: Path, random_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    io.write_parquet_atomic(pa.table({"path": ["old"]}), str(out))
    old = output.verify(str(out)).run_id
    args = [str(engine_images), str(out), "--model", str(random_onnx), "--engine", "native"]
    for point, survivor in (("before-swap", "old"), ("after-swap", "new")):
        env = {**os.environ, output.KILL_ENV: point}
        proc = subprocess.run(
            [sys.executable, "-m", "fruitlens.cli", "run", *args, "--overwrite", "--no-progress"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        now = output.verify(str(out)).run_id
        assert (now == old) == (survivor == "old")
        old = now


# --------------------------------------------------------------------------------------
# --engine auto
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dest", "extra", "engine"),
    [
        ("{tmp}/in", "{tmp}/out", {}, "native"),
        ("file:{tmp}/in", "{tmp}/out", {}, "native"),
        ("s3://bucket/images", "s3://bucket/out", {}, "native"),
        ("gs://bucket/images", "{tmp}/out", {}, "native"),
        ("{tmp}/in", "{tmp}/out", {"master": "local[2]"}, "spark"),
        ("{tmp}/in", "{tmp}/out", {"io": "spark"}, "spark"),
        ("{tmp}/in/*", "{tmp}/out", {}, "spark"),  # a glob (nothing of that name)
        ("hdfs://nn/images", "{tmp}/out", {}, "spark"),
        ("s3a://bucket/images", "{tmp}/out", {}, "spark"),
        ("{tmp}/in", "hdfs://nn/out", {}, "spark"),
        ("{tmp}/in", "{tmp}/out", {"engine": "spark"}, "spark"),
        ("hdfs://nn/images", "{tmp}/out", {"engine": "native"}, "error"),
        ("{tmp}/in/*", "{tmp}/out", {"engine": "native"}, "error"),
        ("{tmp}/in", "hdfs://nn/out", {"engine": "native"}, "error"),
    ],
)
def test_auto_engine(tmp_path: Path, monkeypatch, src, dest, extra, engine) -> None:
    monkeypatch.delenv("SPARK_ENV_LOADED", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setattr(_native_run, "in_spark_application", lambda: False)
    (tmp_path / "in").mkdir()
    config = RunConfig(src.format(tmp=tmp_path), dest.format(tmp=tmp_path), **extra)
    if engine == "error":
        with pytest.raises(CLIError, match="--engine spark"):
            _native_run.choose_engine(config)
    else:
        assert _native_run.choose_engine(config) == engine
    if engine == "native":
        assert _native_run.choose_engine(config, spark=object()) == "spark"
        monkeypatch.setattr(_native_run, "in_spark_application", lambda: True)
        assert _native_run.choose_engine(config) == "spark"


def test_inside_a_spark_application(monkeypatch) -> None:
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("SPARK_ENV_LOADED", "1")
    assert _native_run.in_spark_application()
    monkeypatch.delenv("SPARK_ENV_LOADED")
    context = sys.modules.get("pyspark.context")
    active = getattr(getattr(context, "SparkContext", None), "_active_spark_context", None)
    assert _native_run.in_spark_application() == (active is not None)


# --------------------------------------------------------------------------------------
# Object stores (moto)
# --------------------------------------------------------------------------------------


def test_native_reads_and_writes_s3(
    s3_server, s3_bucket: str, engine_images: Path, random_onnx: Path, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    for cls in ("apple", "mango"):
        shutil.copytree(engine_images / cls, source / cls, symlinks=True)
    (source / "apple" / "dangling.jpg").unlink()
    s3_server.upload_dir(source, s3_bucket, "images")
    uri = f"s3://{s3_bucket}/features"
    summary = run(_config(f"s3://{s3_bucket}/images", uri, random_onnx, "native"))
    assert summary["engine"] == "native"
    local = run(_config(source, tmp_path / "local", random_onnx, "native"))
    assert (summary["images"], summary["error_kinds"]) == (local["images"], local["error_kinds"])
    table, pca, stored = output.read_output(uri)
    assert stored == summary and pca.k == summary["k"]
    rows = {r["path"]: r for r in table.to_pylist()}
    local_rows = _rows(tmp_path / "local")
    assert len(rows) == len(local_rows) == summary["images"]
    for path, row in local_rows.items():
        remote = rows[path.replace(f"file:{source}", f"s3://{s3_bucket}/images")]
        assert remote["features"] == row["features"] and remote["label"] == row["label"]
        assert (remote["error"] is None) == (row["error"] is None)


def test_chunks_are_bounded_by_rows_and_bytes() -> None:
    from fruitlens._listing import ImageRef
    from fruitlens._native_embed import CHUNK_BYTES, _chunks

    refs = [ImageRef(f"/a/{i}.jpg", "a", 1000) for i in range(70)]
    assert [len(c) for c in _chunks(refs, 32)] == [32, 32, 6]
    big = [ImageRef(f"/b/{i}.jpg", "b", CHUNK_BYTES // 3 + 1) for i in range(7)]
    chunks = _chunks(big, 32)
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    assert [r for c in chunks for r in c] == big
    assert _chunks([], 32) == []
