"""Worker failures: a Python worker that dies mid-job is retried by Spark, and the output
has exactly one row per image; a job that keeps failing leaves no dataset behind.

Faults are injected with ``FRUITLENS_TEST_FAULT`` (see ``fruitlens.spark.FAULT_ENV``):
the worker running partition 0 calls ``os._exit`` before emitting a given batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _run(args: list[str], fault: str | None, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    env.pop("FRUITLENS_TEST_FAULT", None)
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
