"""Worker failures: a Python worker that dies mid-job is retried by Spark, and the output
has exactly one row per image; a job that keeps failing leaves no dataset behind.

Faults are injected with ``FRUITLENS_TEST_FAULT`` (see ``fruitlens.spark.FAULT_ENV``):
the worker running partition 0 calls ``os._exit`` before emitting a given batch.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruitlens import io, output

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _run(args: list[str], fault: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("FRUITLENS_TEST_FAULT", None)
    env["FRUITLENS_LOG_DIR"] = str(tmp_path / "logs")
    if fault:
        env["FRUITLENS_TEST_FAULT"] = fault
        env["FRUITLENS_TEST_FAULT_MARKER"] = str(tmp_path / "faults.log")
    return subprocess.run(
        [sys.executable, "-m", "fruitlens.cli", "run", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )


@pytest.fixture(scope="module")
def images(shared_dir: Path) -> tuple[Path, int]:
    root = shared_dir / "data" / "fruits360-sample" / "Test"
    return root, sum(1 for p in root.rglob("*.jpg"))


def test_worker_killed_mid_featurize_is_retried_without_duplicates(
    images: tuple[Path, int], onnx_160: Path, tmp_path: Path
) -> None:
    root, n = images
    out = tmp_path / "out"
    # local[2,4]: 2 cores, a task may fail up to 4 times (local mode defaults to 1).
    # Partition 0 holds > 256 rows, so its worker dies after emitting a first batch.
    args = [str(root), str(out), "--model", str(onnx_160), "--master", "local[2,4]"]
    args += ["--partitions", "2", "--k", "5"]
    result = _run(args, "featurize:1", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pq.read_table(out, columns=["path", "features", "error"])
    paths = table.column("path").to_pylist()
    assert len(paths) == n
    assert len(set(paths)) == n, "duplicate rows after the retry"
    assert table.column("error").null_count == n
    assert table.column("features").null_count == 0
    # the worker really died (once: the retry succeeded)
    assert (tmp_path / "faults.log").read_text().splitlines() == ["featurize:1 attempt 0"]


def test_job_that_keeps_failing_leaves_no_dataset(
    images: tuple[Path, int], onnx_160: Path, tmp_path: Path
) -> None:
    root, _ = images
    out = tmp_path / "out"
    args = [str(root), str(out), "--model", str(onnx_160), "--master", "local[2,2]"]
    args += ["--partitions", "2", "--k", "5"]
    result = _run(args, "transform:0:always", tmp_path)
    assert result.returncode != 0
    assert "fruitlens: error:" in result.stderr
    assert len((tmp_path / "faults.log").read_text().splitlines()) == 2  # both attempts died
    leftovers = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not [p for p in leftovers if p.endswith(".parquet") or p == "_SUCCESS"], leftovers
    assert not list(tmp_path.glob(".out.fruitlens-*"))  # the staging folder was removed


def test_failed_write_prints_one_line(
    images: tuple[Path, int], onnx_160: Path, tmp_path: Path
) -> None:
    # issue 11 item 10: no py4j/Java trace on the terminal; the detail is in the log file
    # ... and (item 4) a previous output survives a run that fails while writing
    root, _ = images
    out = tmp_path / "out2"
    old_run = _old_output(str(out))
    args = [str(root), str(out), "--model", str(onnx_160), "--master", "local[2,2]"]
    args += ["--partitions", "2", "--k", "5", "--overwrite"]
    result = _run(args, "transform:0:always", tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("fruitlens: error: ")
    assert "Py4JJavaError" not in lines[0] and "o1" not in lines[0].split("(details")[0]
    log = Path(lines[0].rsplit("(details: ", 1)[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()
    assert _state(str(out), 0) == "old" and output.verify(str(out)).run_id == old_run
    assert not list(tmp_path.glob(".out2.fruitlens-*"))


# --------------------------------------------------------------------------------------
# Issue 11: kill the driver (SIGKILL, Ctrl-C) during `fruitlens run --overwrite`
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_images(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("kill_images")
    source = shared_dir / "data" / "fruits360-sample" / "Test"
    n = 0
    for label in ("apple", "lemon", "mango"):
        (root / label).mkdir()
        for path in sorted((source / label).glob("*.jpg"))[:8]:
            shutil.copyfile(path, root / label / path.name)
            n += 1
    return root, n


def _popen(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.update(env_extra)
    env["FRUITLENS_LOG_DIR"] = str(cwd / "logs")
    return subprocess.Popen(
        [sys.executable, "-m", "fruitlens.cli", "run", *args, "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def _old_output(uri: str) -> str:
    table = pa.table({"path": [f"old-{i}" for i in range(5)], "label": ["old"] * 5})
    io.write_parquet_atomic(table, uri, overwrite=True)
    target_summary = output.verify(uri)  # an output with a manifest, like a real one
    return target_summary.run_id


def _state(uri: str, n_images: int) -> str:
    manifest = output.verify(uri)
    fs, root = io.filesystem_for(uri)
    table = pa.concat_tables([pq.read_table(f"{root}/{p}", filesystem=fs) for p in manifest.parts])
    paths = table.column("path").to_pylist()
    if all(p.startswith("old-") for p in paths) and len(paths) == 5:
        return "old"
    assert len(paths) == n_images == len(set(paths)), len(paths)
    assert table.column("pca").null_count == 0
    summary = json.loads(io.read_text(f"{uri}/{manifest.summary_path}"))
    pca = json.loads(io.read_text(f"{uri}/{manifest.pca_path}"))
    assert summary["images"] == n_images and summary["k"] == 3 and pca["k"] == 3
    return "new"


def _kill_runs(uri: str, n: int, args: list[str], points: list[str], env: dict, tmp: Path):
    counts: dict[str, dict[str, int]] = {}
    # a complete run first: its duration bounds the random kills
    _old_output(uri)
    t0 = time.monotonic()
    done = _popen(args, env, tmp)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err[-3000:]
    duration = time.monotonic() - t0
    assert _state(uri, n) == "new"
    rng = random.Random(7)
    for point in points:
        _old_output(uri)
        if point == "random":
            proc = _popen(args, env, tmp)
            time.sleep(rng.uniform(0.4 * duration, 1.05 * duration))
            proc.send_signal(signal.SIGKILL)
        else:
            proc = _popen(args, {**env, output.KILL_ENV: point}, tmp)
        _, err = proc.communicate(timeout=600)
        if point != "random":
            assert proc.returncode == -signal.SIGKILL, err[-3000:]
        if uri.startswith("/") and not Path(uri).exists():
            output.recover(uri)  # (two-rename fallback only; never with renameat2)
        state = _state(uri, n)
        counts.setdefault(point, {}).setdefault(state, 0)
        counts[point][state] += 1
    # the next run cleans up whatever the killed ones left, and succeeds
    proc = _popen(args, env, tmp)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert _state(uri, n) == "new"
    return counts


def _report(name: str, counts: dict) -> None:
    line = f"{name} (CLI): " + ", ".join(f"{p} {c}" for p, c in counts.items())
    report = os.environ.get("FRUITLENS_KILL_REPORT")
    if report:
        with open(report, "a") as handle:
            handle.write(line + "\n")
    print(line)


def test_sigkill_during_overwrite_run_local(
    small_images: tuple[Path, int], random_onnx: Path, tmp_path: Path
) -> None:
    root, n = small_images
    out = tmp_path / "out"
    args = [str(root), str(out), "--model", str(random_onnx), "--master", "local[1]"]
    args += ["--k", "3", "--overwrite"]
    # every commit point and random kills run at the commit level (test_output_safety.py,
    # no Spark); here the whole CLI is killed once on each side of the swap
    points = ["before-swap", "after-swap"]
    counts = _kill_runs(str(out), n, args, points, {}, tmp_path)
    assert counts["before-swap"] == {"old": 1} and counts["after-swap"] == {"new": 1}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out.fruitlens-")]
    _report("local", counts)


def test_sigkill_during_overwrite_run_s3(
    small_images: tuple[Path, int], random_onnx: Path, tmp_path: Path, s3_server, s3_bucket: str
) -> None:
    root, n = small_images
    uri = f"s3://{s3_bucket}/features"
    args = [str(root), uri, "--model", str(random_onnx), "--master", "local[1]"]
    args += ["--k", "3", "--overwrite", "--io", "arrow"]
    points = ["parts-written", "after-manifest"]
    counts = _kill_runs(uri, n, args, points, s3_server.env(), tmp_path)
    assert counts["parts-written"] == {"old": 1} and counts["after-manifest"] == {"new": 1}
    _report("s3", counts)


def test_ctrl_c_prints_one_line(
    small_images: tuple[Path, int], random_onnx: Path, tmp_path: Path
) -> None:
    # issue 11 item 10: SIGINT while the featurize job runs
    root, _ = small_images
    out = tmp_path / "out"
    args = [str(root), str(out), "--model", str(random_onnx), "--master", "local[1]", "--k", "3"]
    proc = _popen(args, {"FRUITLENS_TEST_KILL": "featurize:SIGINT:0.5"}, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fruitlens: interrupted"), err[-3000:]
    assert not out.exists() and not list(tmp_path.glob(".out.fruitlens-*"))
