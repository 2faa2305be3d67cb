"""Issue 11, data safety of outputs: never write over the input, never delete data that
fruitlens did not write, all-or-nothing commits (the ``_SUCCESS`` manifest written last),
and SIGKILL at every commit point leaves OUTPUT as the complete old or new output.

The commit-level kill tests run :class:`fruitlens.output.OutputTarget` in a child process
(fast: no Spark); ``tests/test_faults.py`` kills whole ``fruitlens run`` processes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruitlens import PCA, OutputError, _args, _session, cli, io, output
from fruitlens.output import _checks, _recover, _stores, _target

# --------------------------------------------------------------------------------------
# 1. OUTPUT must not be, contain or lie inside INPUT; never a bucket or filesystem root
# --------------------------------------------------------------------------------------


def _images(root: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        path = root / "apple" / f"a{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8 not really a jpeg " + bytes([i]))
        out.append(path)
    return out


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI gets as far as starting Spark."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Spark was started before the check")

    monkeypatch.setattr(_session, "get_session", refuse)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["run", *argv, "--no-progress", "--model", "/nonexistent.onnx"])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "layout",
    [
        ("p1", "p1"),  # the same folder
        ("p1", "p1/"),  # trailing slash
        ("p1", "./x/../p1"),  # ..
        ("p1", "file:{tmp}/p1"),  # file: URI
        ("p1", "link"),  # a symlink to the input
        ("p2/images", "p2"),  # OUTPUT contains INPUT
        ("p1", "p1/out"),  # OUTPUT inside INPUT
        ("p1", "linkdir/out"),  # inside INPUT through a symlink
        ("p1/*", "p1"),  # a glob
    ],
)
def test_output_overlapping_input_is_refused(
    layout: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_spark: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "p1")
    _images(tmp_path / "p2" / "images")
    (tmp_path / "p2" / "notes.txt").write_text("mine")
    (tmp_path / "x").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "p1")
    (tmp_path / "linkdir").symlink_to(tmp_path / "p1")
    before = _snapshot(tmp_path)
    source, dest = layout
    code, err = _run([source, dest.format(tmp=tmp_path), "--overwrite"], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "input" in lines[0] and "outside the input" in lines[0], err
    assert _snapshot(tmp_path) == before


def test_filesystem_root_output_is_refused(
    capsys: pytest.CaptureFixture[str], no_spark: None, tmp_path: Path
) -> None:
    _images(tmp_path / "in")
    code, err = _run([str(tmp_path / "in"), "/", "--overwrite"], capsys)
    assert code == 1 and "filesystem root" in err


@pytest.mark.parametrize(
    ("source", "dest", "what"),
    [
        ("s3://bkt/images", "s3://bkt", "whole bucket"),
        ("s3://bkt/images", "s3://bkt/", "whole bucket"),
        ("s3://bkt/images", "s3a://bkt/images", "is the input"),
        ("s3://bkt/images/", "s3://bkt/images/out", "inside the input"),
        ("s3://bkt/data/images", "s3://bkt/data", "contains the input"),
        ("s3://bkt", "s3://bkt/out", "inside the input"),
    ],
)
def test_object_store_overlap_is_refused(
    source: str, dest: str, what: str, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    code, err = _run([source, dest, "--overwrite"], capsys)
    assert code == 1 and what in err, err
    assert len(err.strip().splitlines()) == 1


def test_object_store_neighbours_are_not_overlaps() -> None:
    output.check_paths("s3://bkt/images", "s3://bkt/images-out")
    output.check_paths("s3://bkt/images", "s3://other/images")
    output.check_paths("/data/images", "/data/images2")


def _overwrite_is_refused(tmp_path: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``tmp_path/in`` into ``out`` with --overwrite: exit 1, nothing under
    ``tmp_path`` changed; returns stderr."""
    before = _snapshot(tmp_path)
    code, err = _run([str(tmp_path / "in"), str(out), "--overwrite"], capsys)
    assert code == 1, err
    assert _snapshot(tmp_path) == before
    return err


def test_overwrite_refuses_a_folder_that_is_not_a_fruitlens_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    _images(tmp_path / "in")
    out = tmp_path / "docs"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    (out / "sub" / "_SUCCESS").write_text("")
    err = _overwrite_is_refused(tmp_path, out, capsys)
    assert "not a fruitlens output" in err and "delete it yourself" in err


def test_overwrite_refuses_foreign_files_inside_a_fruitlens_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    _images(tmp_path / "in")
    out = tmp_path / "out"
    io.write_parquet_atomic(_table("old", 3), str(out))
    (out / "notes.txt").write_text("mine")
    err = _overwrite_is_refused(tmp_path, out, capsys)
    assert "did not write" in err and "notes.txt" in err


def _legacy_output(out: Path) -> None:
    """What fruitlens wrote before manifests: Spark parts with hidden checksums, an empty
    _SUCCESS, the PCA and the summary."""
    (out / "_pca").mkdir(parents=True)
    pq.write_table(_table("old", 3), out / "part-00000-1234-c000.snappy.parquet")
    (out / ".part-00000-1234-c000.snappy.parquet.crc").write_bytes(b"crc")
    (out / "_SUCCESS").write_text("")
    (out / "._SUCCESS.crc").write_bytes(b"crc")
    (out / "_pca" / "pca.json").write_text(_pca_json())
    summary = {"input": "in", "output": str(out), "images": 3, "k": 3, "stages": {}}
    (out / "_summary.json").write_text(json.dumps(summary))


def test_overwrite_replaces_an_output_of_an_older_fruitlens(tmp_path: Path) -> None:
    out = tmp_path / "legacy"
    _legacy_output(out)
    target = output.OutputTarget(str(out))
    with pytest.raises(OutputError, match="--overwrite"):
        target.prepare(overwrite=False)
    target.prepare(overwrite=True)  # recognised: no error, nothing deleted yet
    assert (out / "part-00000-1234-c000.snappy.parquet").is_file()
    io.write_parquet_atomic(_table("new", 2), str(out), overwrite=True)
    assert sorted(pq.read_table(out).column("path").to_pylist()) == ["new-0", "new-1"]
    assert not (out / "._SUCCESS.crc").exists()


def test_an_older_output_with_a_foreign_file_is_not_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    _images(tmp_path / "in")
    out = tmp_path / "legacy"
    _legacy_output(out)
    (out / "notes.txt").write_text("mine")
    err = _overwrite_is_refused(tmp_path, out, capsys)
    assert "not a fruitlens manifest" in err


def test_existing_output_without_overwrite_is_refused_before_spark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    _images(tmp_path / "in")
    out = tmp_path / "out"
    io.write_parquet_atomic(_table("old", 3), str(out))
    code, err = _run([str(tmp_path / "in"), str(out)], capsys)
    assert code == 1 and "--overwrite" in err


def test_empty_output_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    io.write_parquet_atomic(_table("new", 2), str(tmp_path / "out"))
    assert output.verify(str(tmp_path / "out")).parts


def test_output_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match="is a file"):
        io.write_parquet_atomic(_table("new", 2), str(tmp_path / "out"), overwrite=True)
    assert (tmp_path / "out").read_text() == "a file"


def test_s3_bucket_root_and_overlap_never_touch_the_bucket(s3_server, s3_bucket: str) -> None:
    client = s3_server.client()
    for key in ("images/apple/a.jpg", "notes.txt", "other/x.bin"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"data")
    for dest in (f"s3://{s3_bucket}", f"s3://{s3_bucket}/"):
        with pytest.raises(OutputError, match="whole bucket"):
            io.write_parquet_atomic(_table("x", 2), dest, overwrite=True)
    with pytest.raises(OutputError, match="not a fruitlens output"):
        io.write_parquet_atomic(_table("x", 2), f"s3://{s3_bucket}/other", overwrite=True)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == ["images/apple/a.jpg", "notes.txt", "other/x.bin"]


def test_missing_output_bucket_is_reported_before_spark(
    s3_server, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    _images(tmp_path / "in")
    argv = [str(tmp_path / "in"), "s3://no-such-bucket-fruitlens/out", "--io", "arrow"]
    code, err = _run(argv, capsys)
    assert code == 1 and "does not exist" in err and "no-such-bucket-fruitlens" in err


def test_k_above_the_feature_dimension_is_refused_up_front(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "in", "out", "--k", "5000"])
    assert info.value.code == 2
    assert "1280" in capsys.readouterr().err
    assert _args.k_arg("1280") == 1280


# --------------------------------------------------------------------------------------
# 5. The manifest: written last, covers every file; readers check it
# --------------------------------------------------------------------------------------


def _table(tag: str, n: int) -> pa.Table:
    return pa.table({"path": [f"{tag}-{i}" for i in range(n)], "x": list(range(n))})


def _pca_json() -> str:
    import numpy as np

    rng = np.random.default_rng(0)
    return PCA(3).fit(rng.normal(size=(20, 1280)).astype("float32")).to_json()


def _staged_output(
    uri: str, tag: str, n: int, *, overwrite: bool = True, rows_per_file: int | None = None
) -> output.OutputTarget:
    """An output of ``n`` rows tagged ``tag``, prepared and written but not committed."""
    target = output.OutputTarget(uri)
    target.prepare(overwrite=overwrite)
    target.write_parquet(_table(tag, n), rows_per_file=rows_per_file or max(1, n // 3))
    target.write_text(output.PCA_FILE, _pca_json())
    target.write_text(output.SUMMARY_FILE, json.dumps({"tag": tag}))
    return target


def _write_output(uri: str, tag: str, n: int, *, overwrite: bool = True) -> output.Manifest:
    return _staged_output(uri, tag, n, overwrite=overwrite).commit()


@pytest.fixture(params=["local", "s3"])
def out_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/runs/out"


def test_manifest_lists_every_file_and_is_verified(out_uri: str) -> None:
    manifest = _write_output(out_uri, "a", 9)
    doc = json.loads(io.read_text(out_uri + "/_SUCCESS"))
    assert doc["format"] == "fruitlens.output" and doc["version"] == 1
    listed = {f["path"] for f in doc["files"]}
    assert set(manifest.parts) <= listed and len(manifest.parts) == 3
    assert manifest.pca_path in listed and manifest.summary_path in listed
    table, pca, summary = output.read_output(out_uri)
    assert table.num_rows == 9 and pca.k == 3 and summary == {"tag": "a"}
    assert output.part_uris(out_uri) == manifest.part_uris()


def test_second_output_replaces_the_first_completely(out_uri: str) -> None:
    first = _write_output(out_uri, "a", 9)
    second = _write_output(out_uri, "b", 4)
    assert first.run_id != second.run_id
    table, _, summary = output.read_output(out_uri)
    assert sorted(table.column("path").to_pylist()) == [f"b-{i}" for i in range(4)]
    assert summary == {"tag": "b"}
    again = output.verify(out_uri)
    assert not again.unlisted_parts and not again.stale_aliases


def test_overwrite_without_pca_leaves_no_stale_copies(out_uri: str) -> None:
    # a run output (with _pca/pca.json, _summary.json) replaced by a bare Parquet write
    _write_output(out_uri, "a", 6)
    io.write_parquet_atomic(_table("b", 2), out_uri, overwrite=True)
    manifest = output.verify(out_uri)
    assert not io.exists(out_uri + "/_pca/pca.json") and not io.exists(out_uri + "/_summary.json")
    assert set(manifest.files) == set(manifest.parts)
    _write_output(out_uri, "c", 3)  # and it can be replaced again
    assert output.read_output(out_uri)[2] == {"tag": "c"}


def test_verify_detects_missing_or_changed_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "out")
    manifest = _write_output(uri, "a", 6)
    (tmp_path / "out" / manifest.parts[0]).unlink()
    with pytest.raises(OutputError, match="incomplete"):
        output.verify(uri)
    with pytest.raises(OutputError, match="no _SUCCESS"):
        output.verify(str(tmp_path))


def test_pca_load_checks_the_manifest(tmp_path: Path) -> None:
    # issue 11 item 5: a pca.json that is not the committed one is refused
    uri = str(tmp_path / "out")
    _write_output(uri, "a", 6)
    path = tmp_path / "out" / "_pca" / "pca.json"
    assert PCA.load(path).k == 3
    other = PCA(2).fit(__import__("numpy").random.default_rng(1).normal(size=(20, 1280)))
    path.write_text(other.to_json())
    with pytest.raises(OutputError, match="does not match"):
        PCA.load(path)
    # a pca.json outside any output loads as before
    other.save(tmp_path / "elsewhere" / "pca.json")
    assert PCA.load(tmp_path / "elsewhere" / "pca.json").k == 2


def test_pca_load_ignores_legacy_empty_success(tmp_path: Path) -> None:
    out = tmp_path / "legacy"
    (out / "_pca").mkdir(parents=True)
    (out / "_SUCCESS").write_text("")
    (out / "_pca" / "pca.json").write_text(_pca_json())
    assert PCA.load(out / "_pca" / "pca.json").k == 3


# --------------------------------------------------------------------------------------
# 4. SIGKILL at every commit point: OUTPUT is the complete old or the complete new output
# --------------------------------------------------------------------------------------

_CHILD = r"""
import json, sys
import pyarrow as pa
from fruitlens import output
uri, tag, n, per_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
target = output.OutputTarget(uri)
target.prepare(overwrite=True)
print("go", flush=True)
table = pa.table({"path": [f"{tag}-{i}" for i in range(n)], "x": list(range(n))})
target.write_parquet(table, rows_per_file=per_file)
target.write_text(output.PCA_FILE, json.dumps({"tag": tag}))
target.write_text(output.SUMMARY_FILE, json.dumps({"tag": tag}))
target.commit()
"""

OLD_ROWS, NEW_ROWS = 8, 12


def _child(uri: str, tag: str, n: int, env: dict[str, str], per_file: int = 3) -> subprocess.Popen:
    """The commit above in a new process; returns once it has printed "go" (imports
    done, output checked), so that kills land in the commit itself."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, uri, tag, str(n), str(per_file)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    child.stdout.readline()
    return child


def _write_in_process(uri: str, tag: str, n: int) -> None:
    target = output.OutputTarget(uri)
    target.prepare(overwrite=True)
    target.write_parquet(_table(tag, n), rows_per_file=3)
    target.write_text(output.PCA_FILE, json.dumps({"tag": tag}))
    target.write_text(output.SUMMARY_FILE, json.dumps({"tag": tag}))
    target.commit()


def _read_small(uri: str, rel: str) -> dict:
    return json.loads(io.read_text(uri.rstrip("/") + "/" + rel))


def output_state(uri: str, local: Path | None) -> str:
    """'old' or 'new' if OUTPUT is exactly one complete output, else fail."""
    manifest = output.verify(uri)
    fs, root = io.filesystem_for(uri)
    tables = [pq.read_table(f"{root}/{p}", filesystem=fs) for p in manifest.parts]
    paths = pa.concat_tables(tables).column("path").to_pylist()
    tags = {p.split("-")[0] for p in paths}
    assert len(tags) == 1, tags
    (tag,) = tags
    assert len(paths) == {"old": OLD_ROWS, "new": NEW_ROWS}[tag]
    assert _read_small(uri, manifest.pca_path) == {"tag": tag}
    assert _read_small(uri, manifest.summary_path) == {"tag": tag}
    if local is not None:  # a reader that ignores the manifest sees the same locally
        direct = pq.read_table(local).column("path").to_pylist()
        assert sorted(direct) == sorted(paths)
        assert _read_small(uri, output.PCA_FILE) == {"tag": tag}
    return tag


LOCAL_POINTS = {  # point -> the state it must leave
    "parts-written": "old",
    "before-manifest": "old",
    "before-swap": "old",
    "after-swap": "new",
}
FALLBACK_POINTS = {**LOCAL_POINTS, "old-moved": "old (restored by the next run)"}
OBJECT_POINTS = {
    "parts-written": "old",
    "before-manifest": "old",
    "after-manifest": "new",
    "before-cleanup": "new",
}
REPEATS = 2
RANDOM_KILLS = 6


def _kill_matrix(
    uri: str, local: Path | None, points: dict[str, str], env: dict[str, str]
) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for point, expected in points.items():
        counts[point] = Counter()
        for _ in range(REPEATS):
            _write_in_process(uri, "old", OLD_ROWS)
            child = _child(uri, "new", NEW_ROWS, {**env, output.KILL_ENV: point})
            _, err = child.communicate(timeout=120)
            assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
            if point == "old-moved":  # between the two renames: OUTPUT is missing...
                assert not os.path.exists(local)
                assert output.recover(uri)  # ...until the next run (or recover) restores it
            state = output_state(uri, local)
            assert expected.startswith(state), (point, state)
            counts[point][state] += 1
            _check_next_run_cleans_up(uri, local, env)
    return counts


def _check_next_run_cleans_up(uri: str, local: Path | None, env: dict[str, str]) -> None:
    _write_in_process(uri, "old", OLD_ROWS)
    assert output_state(uri, local) == "old"
    if local is not None:
        leftovers = [n for n in os.listdir(local.parent) if n.startswith(f".{local.name}.")]
        assert leftovers == []
    else:
        fs, root = io.filesystem_for(uri)
        manifest = output.verify(uri)
        present = set(_stores.ArrowStore(fs).files(root))
        assert present == set(manifest.files) | set(manifest.aliases) | {"_SUCCESS"}


def _random_kills(uri: str, local: Path | None, env: dict[str, str]) -> Counter:
    """SIGKILL at random moments of a commit (one part per row), uniformly over its
    measured duration."""
    _write_in_process(uri, "old", OLD_ROWS)
    t0 = time.monotonic()
    child = _child(uri, "new", NEW_ROWS, env, per_file=1)
    t1 = time.monotonic()
    child.communicate(timeout=120)
    duration = time.monotonic() - t1
    assert child.returncode == 0 and output_state(uri, local) == "new", t1 - t0
    rng = random.Random(11)
    counts: Counter = Counter()
    for _ in range(RANDOM_KILLS):
        _write_in_process(uri, "old", OLD_ROWS)
        child = _child(uri, "new", NEW_ROWS, env, per_file=1)
        time.sleep(rng.uniform(0, 1.1 * duration))
        child.kill()
        child.communicate(timeout=120)
        if local is not None and not local.exists():
            output.recover(uri)
        counts[output_state(uri, local)] += 1
        counts["finished first" if child.returncode == 0 else "killed"] += 1
    return counts


def _report(name: str, counts: dict[str, Counter]) -> None:
    lines = [f"{name}: " + ", ".join(f"{p} {dict(c)}" for p, c in counts.items())]
    report = os.environ.get("FRUITLENS_KILL_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write("\n".join(lines) + "\n")
    print(*lines, sep="\n")


@pytest.mark.slow
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_sigkill_at_every_local_commit_point(tmp_path: Path, exchange: bool) -> None:
    local = tmp_path / "out"
    env = {} if exchange else {output.NO_EXCHANGE_ENV: "1"}
    points = LOCAL_POINTS if exchange else FALLBACK_POINTS
    counts = _kill_matrix(str(local), local, points, env)
    counts["random"] = _random_kills(str(local), local, env)
    _report(f"local ({'renameat2' if exchange else 'two renames'})", counts)


@pytest.mark.slow
def test_sigkill_at_every_object_store_commit_point(s3_server, s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/runs/out"
    env = s3_server.env()
    counts = _kill_matrix(uri, None, OBJECT_POINTS, env)
    counts["random"] = _random_kills(uri, None, env)
    _report("s3 (moto)", counts)


# --------------------------------------------------------------------------------------
# Hadoop filesystems (--io spark: HDFS, EMRFS): the same protocol through py4j, with two
# renames (no atomic exchange); tried on Hadoop's local filesystem
# --------------------------------------------------------------------------------------


def _hadoop_target(spark, out: Path) -> output.OutputTarget:
    target = output.OutputTarget(str(out))
    target.store = _stores.HadoopStore(spark, "file:" + str(out))
    target.root = "file:" + str(out)
    target.staging = f"file:{out.parent}/.{out.name}{output.STAGING_TAG}{target.run_id}"
    return target


@pytest.mark.spark
def test_hadoop_filesystem_commit_and_overwrite(spark, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for n in (5, 3):
        target = _hadoop_target(spark, out)
        target.prepare(overwrite=True)
        spark.range(n).selectExpr("cast(id as string) as path").write.parquet(target.data_uri)
        target.write_text(output.PCA_FILE, _pca_json())
        target.write_text(output.SUMMARY_FILE, json.dumps({"n": n}))
        manifest = target.commit()
        assert manifest.parts
        assert spark.read.parquet(*manifest.part_uris()).count() == n
        assert json.loads((out / "_summary.json").read_text()) == {"n": n}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.")]
    # not a fruitlens output: refused, untouched
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("x")
    with pytest.raises(OutputError, match="not a fruitlens output"):
        _hadoop_target(spark, tmp_path / "docs").prepare(overwrite=True)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "x"


# --------------------------------------------------------------------------------------
# Adversarial review (held-out inputs): aliases, globs, mount points, unwritable
# places, long names, tampered manifests, foreign object-store files
# --------------------------------------------------------------------------------------


def _fake_bind_mount(monkeypatch: pytest.MonkeyPatch, source: Path, point: Path) -> None:
    """Make ``point`` look like a bind mount of ``source`` (as /proc/self/mountinfo would
    show it), without mounting anything."""
    real = _checks.mounts() or [((), "dev0", ())]
    monkeypatch.setattr(_checks, "mounts", lambda: real)
    device, inner = _checks.on_device(tuple(p for p in str(source).split(os.sep) if p))
    fake = (tuple(p for p in str(point).split(os.sep) if p), device, inner)
    monkeypatch.setattr(_checks, "mounts", lambda: [*real, fake])


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ("img", "alias/out"),  # inside INPUT through a bind mount of it
        ("alias", "img/out"),
        ("data", "alias/out"),  # the bind mount is a folder inside INPUT
        ("img", "alias"),  # the bind mount itself (also a mount point)
    ],
)
def test_bind_mount_alias_of_input_is_refused(
    source: str, dest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _images(data / "img")
    (tmp_path / "alias").mkdir()
    _fake_bind_mount(monkeypatch, data / "img", tmp_path / "alias")
    where = {"img": data / "img", "alias": tmp_path / "alias", "data": data}
    head, _, rest = dest.partition("/")
    out = where[head] / rest if rest else where[head]
    with pytest.raises(OutputError, match=r"input|mount point"):
        output.check_paths(str(where[source]), str(out))
    output.check_paths(str(data / "img"), str(tmp_path / "elsewhere"))  # still fine


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ("s3://bkt/images/*.jpg", "s3://bkt/images/out"),  # Spark expands object globs
        ("s3://bkt/images/*", "s3://bkt/images/out"),
        ("s3://bkt/im*", "s3://bkt/images/out"),
        ("s3://bkt/images/{a,b}", "s3://bkt/images/out"),
        ("hdfs://nn/images", "hdfs://nn:8020/images/out"),  # one namenode, two spellings
        ("hdfs:///images", "hdfs://nn/images/out"),
    ],
)
def test_object_store_globs_and_hadoop_authorities_are_overlaps(source: str, dest: str) -> None:
    with pytest.raises(OutputError, match="input"):
        output.check_paths(source, dest)


def test_mount_point_output_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a mount point (e.g. a container volume) cannot be renamed or swapped: found out
    # only after the whole run before
    point = tmp_path / "volume"
    point.mkdir()
    real = _checks.mounts()
    parts = tuple(p for p in str(point).split(os.sep) if p)
    monkeypatch.setattr(_checks, "mounts", lambda: [*real, (parts, "dev9", ("host", "v"))])
    with pytest.raises(OutputError, match="mount point"):
        output.check_paths(str(tmp_path / "in"), str(point))
    with pytest.raises(OutputError, match=r"mount point.*volume/fruitlens-output"):
        io.write_parquet_atomic(_table("x", 2), str(point))
    io.write_parquet_atomic(_table("x", 2), str(point / "fruitlens-output"))
    assert output.verify(str(point / "fruitlens-output")).parts


def test_unwritable_output_place_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_spark: None
) -> None:
    # a file where OUTPUT's parent should be (or a read-only parent): refused before
    # Spark starts, one line, nothing created
    _images(tmp_path / "in")
    (tmp_path / "afile").write_text("mine")
    before = _snapshot(tmp_path)
    for dest in ("afile/out", "afile/deeper/out"):
        code, err = _run([str(tmp_path / "in"), str(tmp_path / dest)], capsys)
        assert code == 1 and "cannot write the output" in err, err
        assert len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            code, err = _run([str(tmp_path / "in"), str(ro / "out")], capsys)
            assert code == 1 and "cannot write the output" in err, err
        finally:
            ro.chmod(0o700)


def test_filesystem_root_is_refused_by_the_python_api(tmp_path: Path) -> None:
    # OutputTarget/write_parquet_atomic check it themselves (they used to walk "/")
    for dest in ("/", "file:/", "file:///"):
        with pytest.raises(OutputError, match="filesystem root"):
            io.write_parquet_atomic(_table("x", 2), dest, overwrite=True)


def test_very_long_output_name_stages_under_a_short_name(tmp_path: Path) -> None:
    # .NAME.fruitlens-staging-<run> must stay within 255 bytes for any legal NAME
    out = tmp_path / ("n" * 250)
    for tag in ("old", "new"):
        io.write_parquet_atomic(_table(tag, 2), str(out), overwrite=True)
    assert pq.read_table(out).column("path").to_pylist() == ["new-0", "new-1"]
    assert sorted(os.listdir(tmp_path)) == [out.name]
    stem = _recover.sibling_stem(out.name)
    leftover = tmp_path / f".{stem}{output.STAGING_TAG}{'a' * 32}"
    leftover.mkdir()
    io.write_parquet_atomic(_table("again", 1), str(out), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == [out.name]  # the next run cleaned it up


def test_staging_lookalikes_of_another_naming_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    keep = [
        ".out.fruitlens-staging-mine",
        ".out.fruitlens-staging-" + "A" * 32,  # not lower-case hex
        ".out.fruitlens-staging-" + "a" * 31,
        ".out.fruitlens-old-" + "0" * 33,
        ".out.fruitlens-staging-" + "b" * 32 + "\n",
        ".other.fruitlens-staging-" + "c" * 32,  # another output's
    ]
    for name in keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").write_text("mine")
    io.write_parquet_atomic(_table("x", 2), str(out))
    assert sorted(os.listdir(tmp_path)) == sorted([*keep, "out"])


@pytest.mark.parametrize("bad", ["/victim/precious.csv", "../keep/precious.csv", "a//b"])
def test_manifest_paths_outside_the_output_are_refused(out_uri: str, bad: str) -> None:
    # a tampered _SUCCESS must never make fruitlens delete or read outside OUTPUT
    _write_output(out_uri, "a", 3)
    doc = json.loads(io.read_text(out_uri + "/_SUCCESS"))
    doc["files"].append({"path": bad, "size": 1})
    io.write_text(out_uri + "/_SUCCESS", json.dumps(doc))
    with pytest.raises(OutputError, match="outside the output"):
        _write_output(out_uri, "b", 3)
    with pytest.raises(OutputError, match="outside the output"):
        output.verify(out_uri)


def test_foreign_temporary_files_on_an_object_store_are_kept(s3_server, s3_bucket: str) -> None:
    # another Spark job's _temporary/ under OUTPUT is not fruitlens's: refused, kept
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="out/_temporary/0/task/part-x.parquet", Body=b"x")
    with pytest.raises(OutputError, match="not a fruitlens output"):
        io.write_parquet_atomic(_table("x", 2), f"s3://{s3_bucket}/out")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert "out/_temporary/0/task/part-x.parquet" in keys


def test_pca_file_with_a_damaged_k_rule_is_a_pca_error() -> None:
    import numpy as np

    from fruitlens import PCAError

    doc = json.loads(PCA(0.9).fit(np.random.default_rng(0).normal(size=(20, 8))).to_json())
    doc["k_rule"] = "variance>=abc"
    with pytest.raises(PCAError, match="k_rule"):
        PCA.from_json(json.dumps(doc))


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def kill_point(name: str) -> None:
        if name == point:
            raise KeyboardInterrupt

    monkeypatch.setattr(_target, "kill_point", kill_point)


def test_interrupt_after_the_manifest_put_keeps_the_new_output(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C (or a failed alias PUT) after the commit must not let abort() delete the
    # files the committed manifest lists: that left neither the old nor the new output
    uri = f"s3://{s3_bucket}/runs/out"
    _write_output(uri, "old", 4)
    _interrupt_at(monkeypatch, "after-manifest")
    target = _staged_output(uri, "new", 5, rows_per_file=2)
    with pytest.raises(KeyboardInterrupt):
        target.commit()
    target.abort()  # what run_pipeline does on any error
    table, _, summary = output.read_output(uri)
    assert table.num_rows == 5 and summary == {"tag": "new"}


def test_interrupt_between_the_two_renames_puts_the_old_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without renameat2 (other systems, Hadoop): OUTPUT -> .old, then staging -> OUTPUT;
    # Ctrl-C in between must not leave OUTPUT missing until the next run
    uri = str(tmp_path / "out")
    _write_output(uri, "old", 4)
    monkeypatch.setenv(output.NO_EXCHANGE_ENV, "1")
    _interrupt_at(monkeypatch, "old-moved")
    target = _staged_output(uri, "new", 5, rows_per_file=2)
    with pytest.raises(KeyboardInterrupt):
        target.commit()
    assert not (tmp_path / "out").exists()
    target.abort()
    table, _, summary = output.read_output(uri)
    assert table.num_rows == 4 and summary == {"tag": "old"}
    assert os.listdir(tmp_path) == ["out"]


def test_glob_characters_in_output_are_names(tmp_path: Path) -> None:
    # only INPUT is a pattern: an OUTPUT named out* beside the input is fine
    _images(tmp_path / "in")
    output.check_paths(str(tmp_path / "in"), str(tmp_path / "out*[1]{a}?"))
    output.check_paths("s3://bkt/images", "s3://bkt/out*")
    output.check_paths(str(tmp_path / "in"), f"hdfs://nn{tmp_path}/in/out")  # another filesystem
    output.check_paths(f"hdfs://nn{tmp_path}/in", str(tmp_path / "in" / "out"))
    with pytest.raises(OutputError, match="input"):
        output.check_paths(str(tmp_path / "in*"), str(tmp_path / "in2" / "out"))


def test_big_folder_that_is_no_output_is_refused_without_listing_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fruitlens run in ~ (or /usr, only folders at the top) used to walk every file first
    home = tmp_path / "home"
    (home / "a" / "b").mkdir(parents=True)
    (home / "a" / "b" / "thesis.tex").write_text("years of work")
    (home / "empty").mkdir()

    def walked(*args: object) -> None:
        raise AssertionError("listed the whole folder")

    monkeypatch.setattr(_stores.LocalStore, "files", walked)
    with pytest.raises(OutputError, match="not a fruitlens output"):
        io.write_parquet_atomic(_table("x", 2), str(home), overwrite=True)
    assert (home / "a" / "b" / "thesis.tex").read_text() == "years of work"
    monkeypatch.undo()
    (tmp_path / "only-folders" / "sub").mkdir(parents=True)  # no file anywhere: fine
    io.write_parquet_atomic(_table("x", 2), str(tmp_path / "only-folders"))
    assert output.verify(str(tmp_path / "only-folders")).parts


@pytest.mark.parametrize(
    "files", [[{}], "abc", None, [{"path": "x", "size": 1}, 5], {"a": 1}, [["path"]]]
)
def test_damaged_manifest_is_an_output_error(tmp_path: Path, files: object) -> None:
    uri = str(tmp_path / "out")
    _write_output(uri, "a", 3)
    doc = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    doc["files"] = files
    (tmp_path / "out" / "_SUCCESS").write_text(json.dumps(doc))
    for call in (
        lambda: output.verify(uri),
        lambda: PCA.load(tmp_path / "out" / "_pca" / "pca.json"),
        lambda: io.write_parquet_atomic(_table("b", 2), uri, overwrite=True),
    ):
        with pytest.raises(OutputError):
            call()
    assert (tmp_path / "out" / "_SUCCESS").is_file()
