"""Issue 11, items 2 and 3: any legal file name round-trips exactly; links, FIFOs,
devices and unreadable folders never hang, duplicate or vanish.

Names are taken literally everywhere (``fruitlens._uri``): ``a.bmp#x.bmp`` and
``a.bmp?v=2.bmp`` beside ``a.bmp`` are three files with their own features, on every
input route (local folder listed on the driver, ``--io arrow``, S3 through pyarrow,
Spark's ``binaryFile`` with ``--io spark``).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fruitlens
from fruitlens import _preflight, _uri, cli
from fruitlens import io as fl_io
from fruitlens.spark._paths import local_path_or_none

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _bmp(seed: int, size: int = 8) -> bytes:
    """A small 24-bit BMP of random pixels: each seed is a different image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    row = size * 3
    pad = (-row) % 4
    data = b"".join(pixels[y].tobytes() + b"\0" * pad for y in range(size))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, size, size, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    return header + info + data


#: Pieces of generated names: everything a file or object name may legally hold.
PIECES = [
    "#", "?", "%", "%20", "%2523", "%zz", " ", "  ", "\n", "\t", "é", "果", "🍋", ":", "\\",
    "-", "--", "=", "&", "+", ";", "'", '"', "*", "[", "]", "{", "}", ",", "!", "$", "@",
    "a", "b", "~", "(", ")", "a.bmp",
]  # fmt: skip

#: Names that collided before: a.bmp's features went to the two after it.
FIXED = [
    "a.bmp", "a.bmp#lemon.bmp", "a.bmp?v=2.bmp", "a b.bmp", "a%20b.bmp", "-x.bmp",
    "--rm.bmp", "c:d.bmp", "line\nbreak.bmp", "back\\slash.bmp", "pct%.bmp", "x#y?z%41.bmp",
]  # fmt: skip


def _names(seed: int, extra: int) -> list[str]:
    """``FIXED`` plus ``extra`` random names (a property test over generated names)."""
    rng = random.Random(seed)
    names = set(FIXED)
    while len(names) < len(FIXED) + extra:
        stem = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))
        names.add(stem + rng.choice([".bmp", ".BMP", ".bmp#.bmp", ".bmp?.bmp"]))
    return sorted(names)


def _s3_names(seed: int, extra: int) -> list[str]:
    """``_names`` without newlines: moto's server answers 404 to a key with one (real S3
    takes them; fruitlens passes keys to pyarrow as they are)."""
    return sorted({name.replace("\n", "\t") for name in _names(seed, extra)})


def _plain_names(seed: int, extra: int) -> list[str]:
    """``_names`` without ``:``, which Hadoop's local filesystem cannot open: a tree
    of these is read by ``binaryFile`` itself."""
    return sorted({name.replace(":", "=") for name in _names(seed, extra)})


#: Class folders: their names (the label column) must round-trip too.
LABELS = ["fruit#1", "fr?uit %20 é"]


def _tree(root: Path, names: list[str]) -> dict[str, bytes]:
    """Write each name as a different image under one of ``LABELS``: {abs path: bytes}."""
    files = {}
    for i, name in enumerate(names):
        folder = root / LABELS[i % len(LABELS)]
        folder.mkdir(parents=True, exist_ok=True)
        data = _bmp(i)
        (folder / name).write_bytes(data)
        files[str(folder / name)] = data
    return files


def _fetch(paths: list[str]) -> list[tuple[bytes | None, str | None]]:
    batch = pa.record_batch([pa.array(paths, pa.string())], names=["path"])
    (out,) = list(fl_io.fetch_batches([batch]))
    return list(zip(out.column(1).to_pylist(), out.column(2).to_pylist()))


def _in_thread(fn: Callable[[], Any], timeout: float = 30) -> Any:
    """Run ``fn`` and fail (instead of hanging the suite) if it takes too long."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} did not finish in {timeout}s (a hang)"
    if "error" in result:
        raise result["error"]
    return result["value"]


# --------------------------------------------------------------------------------------
# fruitlens._uri: literal parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/d/a.jpg#lemon.jpg", ("file", "", "/d/a.jpg#lemon.jpg")),
        ("/d/a.jpg?v=2.jpg", ("file", "", "/d/a.jpg?v=2.jpg")),
        ("file:/d/a%20b.jpg", ("file", "", "/d/a%20b.jpg")),
        ("file:///d/x#1", ("file", "", "/d/x#1")),
        ("file://localhost/d/x?", ("file", "", "/d/x?")),
        ("FILE:/d/x", ("file", "", "/d/x")),
        ("/d/c:d.jpg", ("file", "", "/d/c:d.jpg")),
        ("s3://bkt/p/a#b?c%20.jpg", ("s3", "bkt", "p/a#b?c%20.jpg")),
        ("S3A://bkt/p/", ("s3a", "bkt", "p/")),
        ("gs://bkt", ("gs", "bkt", "")),
        ("hdfs://nn:8020/p/x#y", ("hdfs", "nn:8020", "/p/x#y")),
        ("hdfs:/p/x", ("hdfs", "", "/p/x")),
    ],
)
def test_split_uri_is_literal(uri: str, expected: tuple[str, str, str]) -> None:
    assert _uri.split_uri(uri) == expected


def test_local_paths_and_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ["a:b.jpg", "12:30/x.jpg", "C:/x", "-rf", "%41", "a#b", "a?b", "x\ny"]:
        assert _uri.is_local(name) and _uri.scheme(name) == ""
        assert _uri.local_path(name) == str(tmp_path / name)
        assert _uri.to_uri(name) == "file:" + str(tmp_path / name)
        assert _uri.local_path(_uri.to_uri(name)) == str(tmp_path / name)
    assert _uri.local_path("./photos:/x") == str(tmp_path / "photos:" / "x")
    assert _uri.local_path("~") == os.path.expanduser("~")
    assert not _uri.is_local("s3://b/k") and _uri.is_local("file:/x")
    assert _uri.to_uri("s3://b/k#1") == "s3://b/k#1"
    assert _uri.join("s3://b", "p#1", "x?.jpg") == "s3://b/p#1/x?.jpg"
    assert _uri.join("file:/", "a") == "file:/a"
    with pytest.raises(ValueError, match="host"):
        _uri.local_path("file://server/share/x")
    with pytest.raises(ValueError, match="absolute"):
        _uri.local_path("file:relative/x")
    # the modules that parse paths all use it
    assert fl_io.filesystem_for("file:/d/a%20b#c.jpg")[1] == "/d/a%20b#c.jpg"
    assert fl_io.filesystem_for("s3://bkt/a#b?c")[1] == "bkt/a#b?c"
    assert _preflight.local_path("file:/d/a%20b#c.jpg") == "/d/a%20b#c.jpg"
    assert local_path_or_none("file:/d/x?.jpg") == "/d/x?.jpg"
    assert local_path_or_none("s3://b/x") is None


# --------------------------------------------------------------------------------------
# Item 2: names round-trip through listing and reading (local and S3)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_local_names_round_trip(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "in put#1?%20"  # file:/...%20 names this folder: never decoded
    files = _tree(root, _names(seed, 40))
    for uri, prefix in [
        (str(root), ""),
        ("file:" + str(root), "file:"),
        (f"file://{root}", "file:"),
    ]:
        refs = fl_io.find_images(uri)
        assert [r.path for r in refs] == sorted(prefix + p for p in files)
        assert [r.label for r in refs] == [Path(p).parent.name for p in sorted(files)]
        assert all(r.error is None for r in refs)
        fetched = _fetch([r.path for r in refs])
        assert fetched == [(files[p], None) for p in sorted(files)]


def test_s3_names_round_trip(s3_server, s3_bucket: str) -> None:
    client = s3_server.client()
    names = _s3_names(2, 30)
    expected = {}
    for i, name in enumerate(names):
        key = f"in put#1?/{LABELS[i % 2]}/{name}"
        client.put_object(Bucket=s3_bucket, Key=key, Body=_bmp(i))
        expected[f"s3://{s3_bucket}/{key}"] = _bmp(i)
    refs = fl_io.find_images(f"s3://{s3_bucket}/in put#1?")
    assert [r.path for r in refs] == sorted(expected)
    assert [r.label for r in refs] == [p.rsplit("/", 2)[1] for p in sorted(expected)]
    assert _fetch([r.path for r in refs]) == [(expected[p], None) for p in sorted(expected)]


# --------------------------------------------------------------------------------------
# Item 3: links, loops, FIFOs, devices, unreadable folders
# --------------------------------------------------------------------------------------


def test_symlink_loops_end_and_list_each_image_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.bmp").write_bytes(_bmp(1))
    (root / "b.bmp").write_bytes(_bmp(2))
    os.symlink("..", root / "a" / "loop")  # one link: every image appeared 41 times
    os.symlink("..", root / "a" / "loop2")  # two links: the listing never ended
    os.symlink(".", root / "self")
    refs = _in_thread(lambda: fl_io.find_images(str(root)))
    assert [r.path for r in refs] == [str(root / "a" / "x.bmp"), str(root / "b.bmp")]


def test_symlinked_files_and_folders_are_followed_once(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.bmp").write_bytes(_bmp(3))
    root = tmp_path / "root"
    (root / "apple").mkdir(parents=True)
    (root / "apple" / "x.bmp").write_bytes(_bmp(1))
    (root / "lemon").mkdir()
    os.symlink("../apple/x.bmp", root / "lemon" / "link.bmp")  # the same file again
    os.symlink(str(outside), root / "kiwi")  # a linked folder outside the root
    os.symlink(str(outside), root / "kiwi2")  # ... twice
    os.symlink(str(outside / "o.bmp"), root / "apple" / "y.bmp")
    refs = fl_io.find_images(str(root))
    # each file once, by its first path in sorted order
    assert [(r.path, r.label) for r in refs] == [
        (str(root / "apple" / "x.bmp"), "apple"),
        (str(root / "apple" / "y.bmp"), "apple"),
    ]
    os.remove(root / "apple" / "y.bmp")
    refs = fl_io.find_images(str(root))
    assert [(r.path, r.label) for r in refs] == [
        (str(root / "apple" / "x.bmp"), "apple"),
        (str(root / "kiwi" / "o.bmp"), "kiwi"),
    ]
    assert _fetch([r.path for r in refs]) == [(_bmp(1), None), (_bmp(3), None)]


def _special_files(root: Path) -> dict[str, str]:
    """Entries named like images that are not regular files: {path: expected error}."""
    root.mkdir(parents=True, exist_ok=True)
    os.symlink(str(root / "missing.bmp"), root / "dangling.bmp")
    os.symlink("loop.bmp", root / "loop.bmp")
    os.mkfifo(root / "fifo.bmp")
    os.symlink("/dev/zero", root / "zero.bmp")  # a device: reading it never ends
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock.bmp"))
    finally:
        sock.close()
    return {
        str(root / "dangling.bmp"): "dangling symbolic link",
        str(root / "fifo.bmp"): "not a regular file (a FIFO)",
        str(root / "loop.bmp"): "symbolic link loop",
        str(root / "sock.bmp"): "not a regular file (a socket)",
        str(root / "zero.bmp"): "not a regular file (a character device)",
    }


def test_dangling_links_fifos_sockets_devices_are_error_rows(tmp_path: Path) -> None:
    root = tmp_path / "root"
    special = _special_files(root / "odd")
    (root / "odd" / "ok.bmp").write_bytes(_bmp(1))
    refs = _in_thread(lambda: fl_io.find_images(str(root)))
    listed = {r.path: r.error for r in refs}
    assert listed == {**special, str(root / "odd" / "ok.bmp"): None}
    # reading them never blocks (the FIFO has no writer) and says why
    fetched = _in_thread(lambda: _fetch(sorted(listed)))
    for path, (content, error) in zip(sorted(listed), fetched):
        if listed[path] is None:
            assert content == _bmp(1) and error is None
        else:
            assert content is None and error == f"unreadable: {path}: {special[path]}"
    # a single special file given as the input
    (ref,) = fl_io.find_images(str(root / "odd" / "fifo.bmp"))
    assert ref.error == "not a regular file (a FIFO)"


def _as_nobody(code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` without the power to bypass file permissions (root loses
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH through ``setpriv``)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        import shutil

        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be tested")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    return subprocess.run(
        [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )


def test_unreadable_folder_is_an_error_row() -> None:
    """A folder that cannot be listed (permission denied) is an error row with its own
    path, "folder not listed: permission denied", never a silent skip or a crash."""
    base = Path(tempfile.mkdtemp(prefix="fruitlens-perm-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        (base / "ok").mkdir()
        (base / "ok" / "a.bmp").write_bytes(_bmp(1))
        (base / "secret").mkdir()
        (base / "secret" / "b.bmp").write_bytes(_bmp(2))
        os.chmod(base / "secret", 0o300)  # no read: cannot be listed
        for p in (base / "ok", base / "ok" / "a.bmp"):
            os.chmod(p, 0o755)
        code = (
            "import json, sys; from fruitlens import io\n"
            f"refs = io.find_images({str(base)!r})\n"
            "fetched = list(io.fetch_batches([__import__('pyarrow').record_batch("
            "[__import__('pyarrow').array([r.path for r in refs])], names=['path'])]))[0]\n"
            "print(json.dumps([[r.path, r.error] for r in refs]))\n"
            "print(json.dumps(fetched.column(2).to_pylist()))\n"
        )
        result = _as_nobody(code)
        assert result.returncode == 0, result.stderr
        listed, read_errors = (__import__("json").loads(x) for x in result.stdout.splitlines())
        secret = str(base / "secret")
        assert listed == [
            [str(base / "ok" / "a.bmp"), None],
            [secret, "folder not listed: permission denied"],
        ]
        assert read_errors == [None, f"unreadable: {secret}: folder not listed: permission denied"]
    finally:
        os.chmod(base / "secret", 0o700)
        import shutil

        shutil.rmtree(base)


# --------------------------------------------------------------------------------------
# Spark routes: binaryFile (--io spark), the driver listing, fruitlens run end to end
# --------------------------------------------------------------------------------------


@pytest.mark.spark
def test_binary_file_route_names_links_and_specials(spark, tmp_path: Path) -> None:
    """read_images (Spark's binaryFile): path column = file: + the literal path, the
    bytes of that very file; loops end, each file once, specials are error rows."""
    from fruitlens import spark as fs

    root = tmp_path / "in#1 ?"
    files = _tree(root, _plain_names(3, 12))
    # a glob (Hadoop's syntax) is expanded by Hadoop; each match, a plain folder, is
    # then read by binaryFile itself (its name escaped: "?" is a glob character)
    df = fs.read_images(spark, str(root / "fr{u,?}*"))
    assert fs.READ_ERROR_COL not in df.columns  # binaryFile read it all
    rows = df.collect()
    assert sorted((r["path"], bytes(r["content"])) for r in rows) == sorted(
        ("file:" + p, data) for p, data in files.items()
    )
    assert all(r["label"] == Path(r["path"]).parent.name for r in rows)

    # ":" in a name (Hadoop fails the job on it), links, a loop, specials and an empty
    # file: listed by fruitlens, then read by the tasks, each file once
    (root / LABELS[0] / "c:d.bmp").write_bytes(_bmp(99))
    files[str(root / LABELS[0] / "c:d.bmp")] = _bmp(99)
    os.symlink("..", root / LABELS[0] / "loop")
    os.symlink("..", root / LABELS[0] / "loop2")
    os.symlink(sorted(files)[0], root / LABELS[1] / "same.bmp")
    special = _special_files(root / "odd")
    (root / "odd" / "empty.bmp").write_bytes(b"")
    df = _in_thread(lambda: fs.read_images(spark, "file:" + str(root)))
    rows = _in_thread(lambda: df.collect(), timeout=120)
    got = {r["path"]: r for r in rows}
    same = str(root / LABELS[1] / "same.bmp")
    expected = {"file:" + p for p in files} | {"file:" + p for p in special}
    expected |= {"file:" + str(root / "odd" / "empty.bmp")}
    if same < sorted(files)[0]:  # listed once, by its first path in sorted order
        expected = (expected - {"file:" + sorted(files)[0]}) | {"file:" + same}
    assert sorted(got) == sorted(expected) and len(rows) == len(got)
    for path, error in special.items():
        row = got["file:" + path]
        assert row["content"] is None
        assert row[fs.READ_ERROR_COL] == f"unreadable: file:{path}: {error}"
    assert bytes(got["file:" + str(root / "odd" / "empty.bmp")]["content"]) == b""
    for path, data in files.items():
        if "file:" + path in got:
            assert bytes(got["file:" + path]["content"]) == data


def _run(argv: list[str], capsys) -> None:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err


def _check_run(out: Path, expected: dict[str, bytes], model: Path, errors: dict[str, str]) -> None:
    """Every expected path once, with the features of that very file's bytes."""
    rows = pq.read_table(out).to_pylist()
    got = {r["path"]: r for r in rows}
    assert len(got) == len(rows), "a path appears twice"
    assert sorted(got) == sorted([*expected, *errors])
    paths = sorted(expected)
    embedded = fruitlens.Embedder(model).embed([expected[p] for p in paths])
    features = embedded.column(0).to_pylist()
    for path, feats in zip(paths, features):
        row = got[path]
        assert row["error"] is None, (path, row["error"])
        assert row["label"] == path.rsplit("/", 2)[1]
        np.testing.assert_allclose(row["features"], feats, rtol=1e-4, atol=1e-5, err_msg=path)
    for path, error in errors.items():
        assert got[path]["features"] is None and got[path]["error"] == error


@pytest.mark.spark
def test_run_local_routes_round_trip_names(
    spark, random_onnx: Path, tmp_path: Path, capsys
) -> None:
    """fruitlens run on a folder of hostile names, a link loop and a FIFO: each file
    once with its own features, on the default route; and through binaryFile."""
    root = tmp_path / "in put#1?"
    files = _tree(root, _names(4, 10))
    os.symlink("..", root / LABELS[0] / "loop")
    os.mkfifo(root / LABELS[1] / "fifo#1.bmp")
    expected = {"file:" + p: data for p, data in files.items()}
    fifo = "file:" + str(root / LABELS[1] / "fifo#1.bmp")
    errors = {fifo: f"unreadable: {fifo}: not a regular file (a FIFO)"}
    out = tmp_path / "out-auto"
    # (--io arrow on a local folder takes this route too: the same listing and reads)
    _run(["run", str(root), str(out), "--model", str(random_onnx), "--k", "2"], capsys)
    _check_run(out, expected, random_onnx, errors)

    # --io spark on a plain tree: Spark's binaryFile lists and reads it
    plain = tmp_path / "plain #2?"
    expected = {"file:" + p: data for p, data in _tree(plain, _plain_names(5, 10)).items()}
    out = tmp_path / "out-spark"
    argv = ["run", str(plain), str(out), "--model", str(random_onnx), "--io", "spark"]
    _run([*argv, "--k", "2"], capsys)
    _check_run(out, expected, random_onnx, {})


@pytest.mark.spark
def test_run_s3_round_trip_names(
    spark_s3, s3_server, s3_bucket: str, random_onnx: Path, tmp_path: Path, capsys
) -> None:
    client = s3_server.client()
    expected = {}
    for i, name in enumerate(_s3_names(5, 10)):
        key = f"in put#1?/{LABELS[i % 2]}/{name}"
        client.put_object(Bucket=s3_bucket, Key=key, Body=_bmp(i))
        expected[f"s3://{s3_bucket}/{key}"] = _bmp(i)
    out = tmp_path / "out"
    argv = ["run", f"s3://{s3_bucket}/in put#1?", str(out), "--model", str(random_onnx)]
    _run([*argv, "--k", "2"], capsys)
    _check_run(out, expected, random_onnx, {})
