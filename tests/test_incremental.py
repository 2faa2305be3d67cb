"""``fruitlens run --incremental`` (issue 16 item 1): featurize only new or changed
images, drop deleted ones, keep the rest byte for byte, project with the saved PCA (or
``--refit`` on the stored features), commit all at once; a re-run with nothing to do
writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruitlens import _lineage, io, output
from fruitlens._errors import CLIError
from fruitlens._native_run import OUTPUT_SCHEMA
from fruitlens.pipeline import OUTPUT_COLUMNS, RunConfig, run

CLASSES = ("apple", "lemon", "mango", "raspberry")
#: Images per class in the first version of the folder, and added to it later.
FIRST, ADDED = 12, 3


def _config(src: Path | str, out: Path | str, model: Path, **kw) -> RunConfig:
    kw.setdefault("engine", "native")  # (the Spark engine if a test left a SparkContext)
    kw.setdefault("partitions", 2)  # parts as on a 2-core machine, whatever this one has
    return RunConfig(str(src), str(out), model=str(model), k=5, progress=False, **kw)


def _rows(out: Path | str) -> dict[str, dict]:
    table, _, _ = output.read_output(str(out))
    return {row["path"]: row for row in table.to_pylist()}


def _files(shared: Path, split: str, cls: str) -> list[Path]:
    return sorted((shared / "data" / "fruits360-sample" / split / cls).iterdir())


def _first_folder(shared: Path, root: Path) -> Path:
    """FIRST sample images per class (Test)."""
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for path in _files(shared, "Test", cls)[:FIRST]:
            shutil.copyfile(path, root / cls / path.name)
    return root


def _update_folder(shared: Path, root: Path) -> dict[str, list[str]]:
    """Add ADDED new images per class (Train), change 3 (other bytes, later mtime),
    delete 3; returns the file: URIs of each kind."""
    kinds: dict[str, list[str]] = {"new": [], "changed": [], "deleted": []}
    for cls in CLASSES:
        for path in _files(shared, "Train", cls)[:ADDED]:
            shutil.copyfile(path, root / cls / f"new-{path.name}")
            kinds["new"].append(f"file:{root / cls / f'new-{path.name}'}")
    for i, cls in enumerate(CLASSES[:3]):
        victim = sorted((root / cls).iterdir())[1]
        victim.write_bytes(_files(shared, "Train", CLASSES[i + 1])[-1].read_bytes())
        os.utime(victim, (2_000_000_000, 2_000_000_000))
        kinds["changed"].append(f"file:{victim}")
        gone = sorted((root / cls).iterdir())[2]
        gone.unlink()
        kinds["deleted"].append(f"file:{gone}")
    return kinds


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "fruitlens.cli", "run", *args, "--no-progress"],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


# --------------------------------------------------------------------------------------
# diff / merge (pure)
# --------------------------------------------------------------------------------------


def _t(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc)


def test_diff_new_changed_deleted_kept_retried() -> None:
    listing = pa.table(
        {
            "path": ["a", "b", "c", "d", "e", "f"],
            "length": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "modificationTime": pa.array([_t(i) for i in range(6)], OUTPUT_SCHEMA[6].type),
        }
    )
    old = pa.table(
        {
            "path": ["z", "f", "e", "d", "c", "b"],  # z deleted, a new
            "length": pa.array([9, 6, 5, 4, 30, 2], pa.int64()),  # c: another size
            "modificationTime": pa.array(
                [_t(0), _t(5), _t(4), _t(99), _t(2), _t(1)], OUTPUT_SCHEMA[6].type
            ),  # d: another mtime
            "error": [None, "unreadable: f: EIO", "empty: e", None, None, None],
        }
    )
    d = _lineage.diff(listing, old)
    assert (d.new, d.changed, d.deleted, d.retried) == (1, 2, 1, 1)
    assert d.todo == [0, 2, 3, 5]  # a (new), c, d (changed), f (retried), listing order
    assert d.kept == [5, 2] and d.kept_at == [1, 4]  # b, e (a failed row is kept)
    assert d.counts(False) == {
        "new": 1,
        "changed": 2,
        "deleted": 1,
        "kept": 2,
        "retried": 1,
        "refit": False,
    }
    assert not d.up_to_date
    assert _lineage.diff(listing, listing.append_column("error", pa.nulls(6))).up_to_date


def _stream(rows: list[tuple[str, int]], size: int):
    """``(batch of path, position)`` chunks of ``size`` rows."""
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        batch = pa.record_batch({"path": [p for p, _ in chunk]})
        yield batch, np.array([pos for _, pos in chunk], np.int64)


def test_gather_slices_runs_and_copies_scattered_rows() -> None:
    values = pa.array([[float(i)] * 4 for i in range(1000)], pa.list_(pa.float32()))
    table = pa.Table.from_batches(
        [
            pa.record_batch({"i": pa.array(range(n, n + 500)), "f": values[n : n + 500]})
            for n in (0, 500)
        ]
    )
    few = np.delete(np.arange(1000), [3, 250, 700])  # a part with three rows dropped
    out = _lineage.gather(table, few)
    assert pa.Table.from_batches(out).column("i").to_pylist() == few.tolist()
    assert len(out) == 5  # four runs, one across the two chunks: slices, no copy
    base = table.column("f").chunk(0).values.buffers()[1].address
    assert out[0].column(1).values.buffers()[1].address == base
    scattered = np.arange(0, 1000, 2)[::-1]  # many short runs: one take
    out = _lineage.gather(table, scattered)
    assert pa.Table.from_batches(out).column("i").to_pylist() == scattered.tolist()
    assert _lineage.gather(table, np.array([], np.int64)) == []


@pytest.mark.parametrize("sizes", [(1, 1), (2, 3), (100, 1), (3, 100)])
def test_merge_streams_rows_in_listing_order(sizes) -> None:
    kept = [(f"k{i}", i) for i in range(0, 50, 3)] + [(f"k{i}", i) for i in range(60, 70)]
    fresh = [(f"f{i}", i) for i in range(50) if i % 3] + [(f"f{i}", i) for i in range(50, 60)]
    merged = list(_lineage.merge(_stream(kept, sizes[0]), _stream(fresh, sizes[1])))
    got = pa.Table.from_batches(merged).column("path").to_pylist()
    assert got == [p for p, _ in sorted(kept + fresh, key=lambda r: r[1])]
    assert list(_lineage.merge(_stream([], 1), _stream([], 1))) == []
    shuffled = list(_lineage.merge(_stream(kept[::-1], 4), _stream(fresh, 5)))
    assert sorted(pa.Table.from_batches(shuffled).column("path").to_pylist()) == sorted(
        p for p, _ in kept + fresh
    )  # out of order: every row once all the same


# --------------------------------------------------------------------------------------
# A run on a changed folder
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def updated(shared_dir: Path, onnx_224: Path, tmp_path_factory: pytest.TempPathFactory):
    """A full run of the first folder, then the folder updated, an incremental run of
    it, an incremental --refit run (on a copy of the first output) and a full run."""
    base = tmp_path_factory.mktemp("incremental")
    src = _first_folder(shared_dir, base / "src")
    out, refit_out = base / "out", base / "refit"
    first = run(_config(src, out, onnx_224))
    before = _rows(out)
    pca_before = (out / "_pca" / "pca.json").read_bytes()
    shutil.copytree(out, refit_out)
    shutil.copytree(out, base / "first")  # (test_incremental_on_spark starts from it)
    kinds = _update_folder(shared_dir, src)
    inc = run(_config(src, out, onnx_224, incremental=True))
    refit = run(_config(src, refit_out, onnx_224, incremental=True, refit=True))
    full = run(_config(src, base / "full", onnx_224))
    return {
        "base": base,
        "src": src,
        "out": out,
        "first": first,
        "before": before,
        "pca_before": pca_before,
        "kinds": kinds,
        "inc": inc,
        "refit": refit,
        "full": full,
    }


def test_incremental_rows(updated) -> None:
    u = updated
    rows, full = _rows(u["out"]), _rows(u["base"] / "full")
    kinds, before = u["kinds"], u["before"]
    listed = sorted(f"file:{p}" for p in u["src"].rglob("*.jpg"))
    table, _, _ = output.read_output(str(u["out"]))
    assert table.column("path").to_pylist() == listed  # one row each, in listing order
    assert table.schema.names == list(OUTPUT_COLUMNS)
    assert table.schema == pq.read_schema(next((u["base"] / "full").glob("part-*")))
    assert not set(kinds["deleted"]) & set(rows)
    assert u["inc"]["incremental"] == {
        "new": ADDED * len(CLASSES),
        "changed": 3,
        "deleted": 3,
        "kept": FIRST * len(CLASSES) - 6,
        "retried": 0,
        "refit": False,
        "parts_reused": 0,  # each old part had a changed or deleted image
    }
    assert u["inc"]["images"] == len(listed) == u["full"]["images"]
    for path in kinds["new"] + kinds["changed"]:  # the same features as a full run
        a, b = np.array(rows[path]["features"]), np.array(full[path]["features"])
        assert np.abs(a - b).max() == 0, path
        assert rows[path]["length"] == full[path]["length"] == os.path.getsize(path[5:])
        assert rows[path]["modificationTime"] == full[path]["modificationTime"]
    for path in kinds["changed"]:
        assert rows[path]["features"] != before[path]["features"]
    kept = set(rows) - set(kinds["new"]) - set(kinds["changed"])
    assert len(kept) == u["inc"]["incremental"]["kept"]
    for path in kept:  # byte for byte, PCA scores included
        assert rows[path] == before[path], path


@pytest.mark.spark
def test_incremental_on_spark(updated, spark, onnx_224: Path) -> None:
    """With a (classic) Spark session the new and changed images are featurized by
    Spark's tasks: the same rows, features, PCA file and counts as on this machine;
    with --refit the same refitted PCA."""
    u = updated
    out, refit_out = u["base"] / "spark-out", u["base"] / "spark-refit"
    shutil.copytree(u["base"] / "first", out)
    shutil.copytree(u["base"] / "first", refit_out)
    summary = run(_config(u["src"], out, onnx_224, incremental=True, engine="spark"), spark)
    assert summary["engine"] == "spark" and summary["incremental"] == u["inc"]["incremental"]
    native, rows = output.read_output(str(u["out"]))[0], output.read_output(str(out))[0]
    assert rows.equals(native)  # every row, bit for bit, in the same order
    assert (out / "_pca" / "pca.json").read_bytes() == u["pca_before"]
    refit = run(
        _config(u["src"], refit_out, onnx_224, incremental=True, refit=True, engine="spark"),
        spark,
    )
    assert refit["incremental"]["refit"] is True and refit["images"] == u["full"]["images"]
    assert refit["engine"] == "spark"
    a = json.loads((refit_out / "_pca" / "pca.json").read_text())
    b = json.loads((u["base"] / "refit" / "_pca" / "pca.json").read_text())
    assert a["n_samples"] == b["n_samples"] and a["k"] == b["k"]
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a["explained_variance"], b["explained_variance"], rtol=1e-9)


def test_incremental_on_spark_with_nothing_to_do_starts_no_spark(
    updated, onnx_224: Path, monkeypatch
) -> None:
    from fruitlens import _session

    def no_spark(*args, **kwargs):
        raise AssertionError("a Spark session was started for nothing")

    monkeypatch.setattr(_session, "get_session", no_spark)
    again = run(_config(updated["src"], updated["out"], onnx_224, incremental=True, engine="spark"))
    assert again["up_to_date"] is True and again["images"] == updated["full"]["images"]


@pytest.mark.spark
def test_incremental_on_spark_puts_rows_back_in_listing_order(
    updated, spark, onnx_224: Path, monkeypatch
) -> None:
    """Rows that come back from Spark in another order (here: every batch and the
    batches reversed) are written in listing order all the same."""
    from fruitlens import _incremental_spark

    u = updated
    out = u["base"] / "spark-reversed"
    shutil.copytree(u["base"] / "first", out)
    collect = _incremental_spark.fl_spark.collect_arrow_batches

    def reversed_batches(df):
        batches = list(collect(df))
        return [b.take(pa.array(range(len(b) - 1, -1, -1))) for b in reversed(batches)]

    monkeypatch.setattr(_incremental_spark.fl_spark, "collect_arrow_batches", reversed_batches)
    run(_config(u["src"], out, onnx_224, incremental=True, engine="spark"), spark)
    assert output.read_output(str(out))[0].equals(output.read_output(str(u["out"]))[0])


def test_incremental_keeps_the_saved_pca(updated) -> None:
    u = updated
    out = u["out"]
    assert (out / "_pca" / "pca.json").read_bytes() == u["pca_before"]
    pca = output.read_output(str(out))[1]
    rows = _rows(out)
    for path in u["kinds"]["new"]:
        projected = pca.transform(np.array([rows[path]["features"]], np.float32))[0]
        np.testing.assert_array_equal(projected, np.array(rows[path]["pca"], np.float32))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary == u["inc"] and summary["pca_samples"] == u["first"]["pca_samples"]


def test_refit_equals_a_full_run(updated) -> None:
    u = updated
    refit_out, full_out = u["base"] / "refit", u["base"] / "full"
    assert u["refit"]["incremental"]["refit"] is True
    a = json.loads((refit_out / "_pca" / "pca.json").read_text())
    b = json.loads((full_out / "_pca" / "pca.json").read_text())
    assert a["n_samples"] == b["n_samples"] == u["full"]["images"]
    for key in ("mean", "explained_variance", "explained_variance_ratio"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)
    ca, cb = (np.array(x["components"]).reshape(a["k"], -1) for x in (a, b))
    signs = np.sign((ca * cb).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(ca, cb * signs, atol=1e-6)
    rows, full = _rows(refit_out), _rows(full_out)
    assert sorted(rows) == sorted(full)
    for path, row in rows.items():
        assert row["features"] == full[path]["features"], path
        got, want = np.array(row["pca"]), np.array(full[path]["pca"]) * signs[:, 0]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_noop_rerun_commits_nothing(updated) -> None:
    u = updated
    out = u["out"]
    manifest = (out / "_SUCCESS").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    proc = _cli(str(u["src"]), str(out), "--incremental", "--model", str(u["inc"]["model"]))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "up to date" in lines[0] and "nothing written" in lines[0]
    assert proc.stderr == ""
    assert (out / "_SUCCESS").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    assert not list(out.parent.glob(".out.fruitlens-*"))
    summary = run(_config(u["src"], out, u["inc"]["model"], incremental=True))  # library
    assert summary["up_to_date"] is True and "nothing written" in summary["message"]
    assert summary["k"] == u["inc"]["k"] and summary["incremental"]["new"] == 0


def test_appended_images_leave_the_old_parts_as_they_are(
    shared_dir: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """Only new images: the old parts are the new output's as they are (hard links, no
    rewrite), the new rows a new part; rows as a full run's; small parts do not pile up
    over many runs; a kill before the switch leaves the old output whole."""
    src = _first_folder(shared_dir, tmp_path / "src")
    out = tmp_path / "out"
    run(_config(src, out, onnx_224))
    before, old_parts = _rows(out), output.verify(str(out)).parts
    inodes = {p: (out / p).stat().st_ino for p in old_parts}
    added = []
    for cls in CLASSES:
        for path in _files(shared_dir, "Train", cls)[:ADDED]:
            shutil.copyfile(path, src / cls / f"new-{path.name}")
            added.append(f"file:{src / cls / f'new-{path.name}'}")
    args = [str(src), str(out), "--model", str(onnx_224), "--k", "5", "--partitions", "2"]
    proc = _cli(*args, "--incremental", env={output.KILL_ENV: "before-swap"})
    assert proc.returncode == -signal.SIGKILL
    assert _rows(out) == before and output.verify(str(out)).parts == old_parts
    summary = run(_config(src, out, onnx_224, incremental=True))
    assert summary["incremental"]["new"] == len(added) and summary["incremental"]["deleted"] == 0
    assert summary["incremental"]["parts_reused"] == len(old_parts) == 2
    parts = output.verify(str(out)).parts
    assert set(old_parts) < set(parts) and len(parts) == 3
    assert {p: (out / p).stat().st_ino for p in old_parts} == inodes  # not rewritten
    rows = _rows(out)
    full = _rows(run(_config(src, tmp_path / "full", onnx_224))["output"])
    assert sorted(rows) == sorted(full) == sorted([*before, *added])
    for path, row in rows.items():
        assert row["features"] == full[path]["features"], path
        if path in before:
            assert row == before[path]
    pca = output.read_output(str(out))[1]
    for path in added:  # projected with the saved PCA
        want = pca.transform(np.array([rows[path]["features"]], np.float32))[0]
        np.testing.assert_array_equal(np.array(rows[path]["pca"], np.float32), want)
    for round_ in range(4):  # small appends: small parts are merged, not piled up
        for cls in CLASSES[:2]:
            path = _files(shared_dir, "Train", cls)[ADDED + round_]
            shutil.copyfile(path, src / cls / f"more-{path.name}")
        summary = run(_config(src, out, onnx_224, incremental=True))
        assert summary["incremental"]["new"] == 2
        assert len(output.verify(str(out)).parts) <= 4
    rows = _rows(out)
    assert sorted(rows) == sorted(f"file:{p}" for p in src.rglob("*.jpg"))
    assert not list(tmp_path.glob(".out.fruitlens-*"))


# --------------------------------------------------------------------------------------
# Failed rows, first runs, one-line errors
# --------------------------------------------------------------------------------------


def test_unreadable_rows_are_retried_other_errors_kept(
    shared_dir: Path, onnx_224: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "apple").mkdir(parents=True)
    for path in _files(shared_dir, "Test", "apple")[:4]:
        shutil.copyfile(path, src / "apple" / path.name)
    (src / "apple" / "empty.jpg").write_bytes(b"")
    (src / "apple" / "later.jpg").symlink_to(src / "nowhere.jpg")  # unreadable for now
    out = tmp_path / "out"
    first = run(_config(src, out, onnx_224, incremental=True))  # no output yet: a full run
    assert "incremental" not in first and first["errors"] == 2
    rows = _rows(out)
    assert rows[f"file:{src}/apple/later.jpg"]["error"].startswith("unreadable:")
    second = run(_config(src, out, onnx_224, incremental=True))  # still dangling
    assert second["incremental"]["retried"] == 1 and second["incremental"]["kept"] == 5
    assert _rows(out)[f"file:{src}/apple/later.jpg"]["error"].startswith("unreadable:")
    shutil.copyfile(_files(shared_dir, "Test", "apple")[5], src / "nowhere.jpg")
    third = run(_config(src, out, onnx_224, incremental=True))  # a size now: changed
    assert third["incremental"]["changed"] == 1 and third["incremental"]["kept"] == 5
    now = _rows(out)
    assert now[f"file:{src}/apple/later.jpg"]["error"] is None
    assert now[f"file:{src}/apple/empty.jpg"] == rows[f"file:{src}/apple/empty.jpg"]


def test_one_line_errors_before_any_work(
    shared_dir: Path, onnx_224: Path, random_onnx: Path, tmp_path: Path, monkeypatch
) -> None:
    src = _first_folder(shared_dir, tmp_path / "src")
    with pytest.raises(CLIError, match="drop --io spark"):
        run(_config(src, tmp_path / "o", onnx_224, incremental=True, io="spark"))
    with pytest.raises(CLIError, match="not hdfs://nn/out"):
        run(_config(src, "hdfs://nn/out", onnx_224, incremental=True, engine="spark"))
    with pytest.raises(CLIError, match="--refit goes with --incremental"):
        run(_config(src, tmp_path / "o", onnx_224, refit=True))
    assert not (tmp_path / "o").exists()
    old = tmp_path / "old"  # an output without the lineage columns
    io.write_parquet_atomic(pa.table({"path": ["x"], "features": [[1.0]]}), str(old))
    proc = _cli(str(src), str(old), "--incremental", "--model", str(onnx_224))
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("fruitlens: error: --incremental needs an output")
    assert len(proc.stderr.strip().splitlines()) == 1
    out = tmp_path / "out"
    run(_config(src, out, onnx_224))
    with pytest.raises(CLIError, match="was made with model"):
        run(_config(src, out, random_onnx, incremental=True))
    link = tmp_path / "same-model.onnx"  # the same file under another name: fine
    link.symlink_to(onnx_224)
    assert run(_config(src, out, link, incremental=True))["up_to_date"] is True
    notes: list[str] = []  # SPARK_REMOTE set (for other jobs): said, not silently ignored
    monkeypatch.setenv("SPARK_REMOTE", "sc://localhost:1")
    assert run(_config(src, out, link, incremental=True), log=notes.append)["up_to_date"]
    assert notes == [
        "fruitlens: note: --incremental runs on this machine; SPARK_REMOTE is not used"
    ]


# --------------------------------------------------------------------------------------
# Killed runs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["featurize", "parts-written", "before-swap", "after-swap"])
def test_killed_incremental_run_leaves_old_or_new(
    shared_dir: Path, onnx_224: Path, tmp_path: Path, point: str
) -> None:
    src = _first_folder(shared_dir, tmp_path / "src")
    out = tmp_path / "out"
    args = [str(src), str(out), "--model", str(onnx_224), "--k", "5"]
    assert _cli(*args).returncode == 0
    old_rows, old_id = _rows(out), output.verify(str(out)).run_id
    _update_folder(shared_dir, src)
    proc = _cli(*args, "--incremental", env={output.KILL_ENV: point})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rows = _rows(out)  # readable: the old output or the new one, whole
    if point == "after-swap":
        assert output.verify(str(out)).run_id != old_id
        new_rows = rows
    else:
        assert output.verify(str(out)).run_id == old_id and rows == old_rows
        new_rows = None
    proc = _cli(*args, "--incremental")
    assert proc.returncode == 0, proc.stderr
    final = _rows(out)
    listed = sorted(f"file:{p}" for p in src.rglob("*.jpg"))
    assert sorted(final) == listed
    if new_rows is not None:  # the killed run had committed: nothing left to do
        assert "up to date" in proc.stdout and final == new_rows
    assert not list(tmp_path.glob(".out.fruitlens-*"))


# --------------------------------------------------------------------------------------
# Object stores (moto)
# --------------------------------------------------------------------------------------


def test_incremental_on_s3(
    s3_server, s3_bucket: str, shared_dir: Path, onnx_224: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "apple").mkdir(parents=True)
    files = _files(shared_dir, "Test", "apple")
    for path in files[:6]:
        shutil.copyfile(path, src / "apple" / path.name)
    s3_server.upload_dir(src, s3_bucket, "images")
    images, uri = f"s3://{s3_bucket}/images", f"s3://{s3_bucket}/features"
    run(_config(images, uri, onnx_224))
    before = _rows(uri)
    old_parts = output.verify(uri).parts
    client = s3_server.client()
    new_key = "images/apple/new.jpg"
    client.put_object(Bucket=s3_bucket, Key=new_key, Body=files[7].read_bytes())
    changed_key = f"images/apple/{files[0].name}"
    client.put_object(Bucket=s3_bucket, Key=changed_key, Body=files[8].read_bytes())
    client.delete_object(Bucket=s3_bucket, Key=f"images/apple/{files[1].name}")
    summary = run(_config(images, uri, onnx_224, incremental=True))
    assert summary["incremental"] == {
        "new": 1,
        "changed": 1,
        "deleted": 1,
        "kept": 4,
        "retried": 0,
        "refit": False,
        "parts_reused": 1,  # the second part (none of its images changed): the same object
    }
    rows = _rows(uri)
    assert len(rows) == 6 and f"s3://{s3_bucket}/images/apple/{files[1].name}" not in rows
    for path in {f"s3://{s3_bucket}/{k}" for k in (new_key, changed_key)}:
        assert rows[path]["features"] != before.get(path, {}).get("features")
    for path in set(rows) - {f"s3://{s3_bucket}/{k}" for k in (new_key, changed_key)}:
        assert rows[path] == before[path]
    manifest = output.verify(uri)
    assert old_parts[1] in manifest.parts and old_parts[0] not in manifest.parts
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert f"features/{old_parts[0]}" not in keys  # the old output's other files: deleted
    again = run(_config(images, uri, onnx_224, incremental=True))
    assert again.get("up_to_date") is True
