"""Out-of-range arguments are refused up front, never abort, hang or crash the process.

Each risky call runs in a child interpreter (a crash there cannot take pytest down) and
must end quickly with a ValueError that states the limit (issue 11, item 8).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import fruitlens
from fruitlens import _native

FRUITLENS_CLI = str(Path(sys.executable).with_name("fruitlens"))


def run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; it prints what it observed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 40)).save(buf, "JPEG")
    return buf.getvalue()


def test_limits_are_exposed_and_sane() -> None:
    assert fruitlens.MAX_SIZE == _native.MAX_SIZE == 4096
    assert fruitlens.MAX_PCA_DIM == _native.MAX_PCA_DIM == 16384
    assert 8 <= fruitlens.MAX_THREADS <= _native.MAX_THREADS_CAP == 256


@pytest.mark.parametrize("size", [100_000, 4097, 0])
def test_decode_refuses_a_huge_size(size: int) -> None:
    code = f"""
import fruitlens
try:
    fruitlens.decode([{_jpeg()!r}], size={size})
except ValueError as e:
    print("VALUEERROR", e)
"""
    r = run_child(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "VALUEERROR" in r.stdout and "between 1 and 4096" in r.stdout, r.stdout


def test_decode_at_the_largest_size_works() -> None:
    batch = fruitlens.decode([_jpeg()], size=fruitlens.MAX_SIZE)
    assert batch.column("error").null_count == 1


@pytest.mark.parametrize("threads", [100_000, 257])
def test_decode_refuses_too_many_threads(threads: int) -> None:
    with pytest.raises(ValueError, match=r"threads must be between 1 and \d+"):
        fruitlens.decode([_jpeg()], size=8, threads=threads)


def test_embedder_refuses_too_many_threads(random_onnx: Path) -> None:
    code = f"""
import fruitlens
try:
    fruitlens.Embedder({str(random_onnx)!r}, threads=100000)
except ValueError as e:
    print("VALUEERROR", e)
"""
    r = run_child(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "VALUEERROR" in r.stdout and "threads must be between 1 and" in r.stdout, r.stdout


def test_embedder_at_the_machine_limit_works(random_onnx: Path) -> None:
    emb = fruitlens.Embedder(random_onnx, threads=fruitlens.MAX_THREADS)
    assert emb.threads == fruitlens.MAX_THREADS
    assert emb.embed([_jpeg()]).column("error").null_count == 1


@pytest.mark.parametrize("dim", [10**7, 16385, 0])
def test_pca_stats_refuse_a_huge_dimension(dim: int) -> None:
    code = f"""
import fruitlens
from fruitlens import _native
for make in (fruitlens.PCAStats, _native.PcaStats):
    try:
        make({dim})
    except ValueError as e:
        print("VALUEERROR", e)
"""
    r = run_child(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("VALUEERROR") == 2, r.stdout + r.stderr[-2000:]
    assert "16384" in r.stdout or dim == 0, r.stdout


def test_pca_stats_from_hostile_bytes_is_a_clean_error() -> None:
    data = b"FLPCAST1" + (2**32 - 1).to_bytes(4, "little") + bytes(8)
    with pytest.raises(ValueError, match="not between 1 and 16384"):
        _native.PcaStats.from_bytes(data)


def test_merging_stats_with_themselves_counts_twice() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 6)
    native = _native.PcaStats(6)
    native.update(rows)
    twice = _native.PcaStats(6)
    twice.update(rows)
    twice.update(rows)
    native.merge(native)
    assert native.count == 40
    assert native.to_bytes() == twice.to_bytes()
    wrapped = fruitlens.PCAStats(6)
    wrapped.update(x)
    wrapped.merge(wrapped)
    assert wrapped.count == 40


def test_cli_refuses_absurd_threads_and_size_at_once(tmp_path: Path) -> None:
    for args, limit in ((["--threads", "100000"], "256"), (["--size", "100000"], "4096")):
        r = subprocess.run(
            [FRUITLENS_CLI, "run", str(tmp_path), str(tmp_path / "o"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (r.stdout, r.stderr[-2000:])
        assert f"must be at most {limit}" in r.stderr, r.stderr[-2000:]
