"""fruitlens.io against a local S3 endpoint (moto) and local folders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from fruitlens import OutputError, _reading, io
from fruitlens.output import _parts, _target

# --------------------------------------------------------------------------------------
# A store: the same tests on a local folder and on S3
# --------------------------------------------------------------------------------------


class Store:
    def __init__(self, base: str, put: Callable[[str, bytes], None], keys: Callable[[], list]):
        self.base = base.rstrip("/")
        self._put = put
        self._keys = keys

    def uri(self, rel: str = "") -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def put(self, rel: str, data: bytes = b"x") -> str:
        self._put(rel, data)
        return self.uri(rel)

    def keys(self, rel: str = "") -> list[str]:
        """Relative names of every file under ``rel`` (directory markers left out)."""
        return sorted(k for k in self._keys() if k.startswith(rel) and not k.endswith("/"))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()

        def put(rel: str, data: bytes) -> None:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        def keys() -> list[str]:
            return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]

        return Store(str(root), put, keys)

    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    client = server.client()

    def put_s3(rel: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"root/{rel}", Body=data)

    def keys_s3() -> list[str]:
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.extend(o["Key"][len("root/") :] for o in page.get("Contents", []))
        return out

    return Store(f"s3://{bucket}/root", put_s3, keys_s3)


def _tree(store: Store) -> None:
    store.put("images/apple/a1.jpg", b"apple-1")
    store.put("images/apple/a2.JPEG", b"apple-2")
    store.put("images/lemon/l1.Png", b"lemon-1")
    store.put("images/lemon/empty.jpg", b"")
    store.put("images/lemon/deeper/x.webp", b"deep")
    store.put("images/lemon/notes.txt", b"not an image")
    store.put("images/_temporary/0/part.jpg", b"hidden")
    store.put("images/.cache/h.jpg", b"hidden")
    store.put("images/apple/_SUCCESS.jpg", b"hidden")


# --------------------------------------------------------------------------------------
# URIs and filesystems
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key", True),
        ("s3a://bucket/key", True),
        ("S3://bucket/key", True),
        ("gs://bucket/key", True),
        ("gcs://bucket/key", True),
        ("/local/path", False),
        ("relative/path", False),
        ("file:///tmp/x", False),
        ("file:/tmp/x", False),
        ("hdfs://nn/x", False),
    ],
)
def test_is_arrow_uri(uri: str, expected: bool) -> None:
    assert io.is_arrow_uri(uri) is expected


def test_is_arrow_uri_forced_for_local_paths() -> None:
    assert io.is_arrow_uri("/local/path", force=True)
    assert io.is_arrow_uri("file:///tmp/x", force=True)


def test_filesystem_for_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = io.filesystem_for(str(tmp_path))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    fs, path = io.filesystem_for(f"file://{tmp_path}")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    fs, path = io.filesystem_for(f"file:{tmp_path}")
    assert path == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert io.filesystem_for("sub/dir")[1] == str(tmp_path / "sub" / "dir")


def test_filesystem_for_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="--io spark"):
        io.filesystem_for("hdfs://namenode/data")
    with pytest.raises(ValueError, match="no bucket"):
        io.filesystem_for("s3:///key")


def test_filesystem_for_s3_uses_endpoint_and_region(s3_bucket: str) -> None:
    fs, path = io.filesystem_for(f"s3://{s3_bucket}/a/b/")
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == f"{s3_bucket}/a/b"
    assert fs.region == "us-east-1"
    # s3a is the same store; the filesystem object is cached and shared.
    fs2, path2 = io.filesystem_for(f"s3a://{s3_bucket}/a/b")
    assert fs2 is fs and path2 == path
    # The bucket is reachable through AWS_ENDPOINT_URL (the moto server).
    assert fs.get_file_info(s3_bucket).type == pafs.FileType.Directory


def test_endpoint_url_s3_takes_precedence(
    s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    fs, _ = io.filesystem_for(f"s3://{s3_bucket}/x")
    assert fs.region == "eu-west-3"
    assert io.exists(f"s3://{s3_bucket}")


# --------------------------------------------------------------------------------------
# Listing and reading
# --------------------------------------------------------------------------------------


def test_find_images(store: Store) -> None:
    _tree(store)
    refs = io.find_images(store.uri("images"))
    base = store.uri("images")
    assert [r.path for r in refs] == [
        f"{base}/apple/a1.jpg",
        f"{base}/apple/a2.JPEG",
        f"{base}/lemon/deeper/x.webp",
        f"{base}/lemon/empty.jpg",
        f"{base}/lemon/l1.Png",
    ]
    assert [r.label for r in refs] == ["apple", "apple", "deeper", "lemon", "lemon"]
    assert [r.size for r in refs] == [7, 7, 4, 0, 7]
    # A trailing slash changes nothing.
    assert io.find_images(base + "/") == refs


def test_list_images_is_a_deprecated_alias_of_find_images() -> None:
    with pytest.warns(DeprecationWarning, match="find_images"):
        assert io.list_images is io.find_images


def test_find_images_extensions_and_single_file(store: Store) -> None:
    _tree(store)
    base = store.uri("images")
    assert [r.path for r in io.find_images(base, [".TXT"])] == [f"{base}/lemon/notes.txt"]
    assert len(io.find_images(base, None)) == 6
    one = io.find_images(f"{base}/lemon/notes.txt")
    assert [(r.path, r.label) for r in one] == [(f"{base}/lemon/notes.txt", "lemon")]


def test_find_images_missing_prefix(store: Store) -> None:
    store.put("images/apple/a.jpg")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        io.find_images(store.uri("nothing-here"))


def test_find_images_keeps_s3a_scheme(s3_server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="p/kiwi/1.jpg", Body=b"1")
    refs = io.find_images(f"s3a://{s3_bucket}/p")
    assert [r[:3] for r in refs] == [(f"s3a://{s3_bucket}/p/kiwi/1.jpg", "kiwi", 1)]
    assert refs[0].modified is not None and refs[0].modified.year >= 2024


def test_find_images_many_objects_paginates(s3_server, s3_bucket: str) -> None:
    client = s3_server.client()
    for i in range(1100):  # more than one page of ListObjectsV2 (1000 keys)
        client.put_object(Bucket=s3_bucket, Key=f"many/c{i % 3}/{i:05d}.jpg", Body=b"")
    refs = io.find_images(f"s3://{s3_bucket}/many")
    assert len(refs) == 1100
    assert refs == sorted(refs, key=lambda r: r.path)


def test_read_bytes(store: Store) -> None:
    uris = [store.put(f"r/{i}.jpg", f"data-{i}".encode()) for i in range(40)]
    missing = store.uri("r/missing.jpg")
    got = io.read_bytes([*uris, missing, uris[0]])
    assert got == [f"data-{i}".encode() for i in range(40)] + [None, b"data-0"]
    assert io.read_bytes([]) == []
    assert io.read_bytes(uris[:3], max_workers=1) == [b"data-0", b"data-1", b"data-2"]


def test_fetch_batches(store: Store) -> None:
    good = store.put("f/apple/a.jpg", b"jpeg-bytes")
    empty = store.put("f/apple/e.jpg", b"")
    big = store.put("f/apple/big.jpg", b"0123456789" * 10)
    missing = store.uri("f/apple/missing.jpg")
    batch = pa.record_batch(
        {"path": [good, missing, empty, None, big], "label": ["a", "b", "c", "d", "e"]}
    )
    out = list(io.fetch_batches([batch], max_bytes=50))
    assert len(out) == 1
    result = out[0]
    assert result.schema.names == ["path", "label", "content", "error"]
    assert result.schema.field("content").type == pa.binary()
    assert result.schema.field("error").type == pa.string()
    assert result.column("label").to_pylist() == ["a", "b", "c", "d", "e"]
    assert result.column("content").to_pylist() == [b"jpeg-bytes", None, b"", None, None]
    errors = result.column("error").to_pylist()
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith(f"unreadable: {missing}: ")
    assert errors[3] == "unreadable: the path is null"
    assert errors[4].startswith("too_many_bytes: ") and "100 bytes" in errors[4]


def test_fetch_batches_many_batches_and_names(store: Store) -> None:
    uris = [store.put(f"m/{i}.jpg", bytes([i])) for i in range(10)]
    batches = [pa.record_batch({"p": uris[:4]}), pa.record_batch({"p": uris[4:]})]
    out = list(io.fetch_batches(iter(batches), "p", content_col="bytes", error_col="why"))
    assert [b.num_rows for b in out] == [4, 6]
    table = pa.Table.from_batches(out)
    assert table.column("bytes").to_pylist() == [bytes([i]) for i in range(10)]
    assert table.column("why").null_count == 10


def test_fetch_batches_empty_batch_keeps_schema() -> None:
    empty = pa.record_batch({"path": pa.array([], pa.string())})
    out = list(io.fetch_batches([empty]))
    assert len(out) == 1 and out[0].num_rows == 0
    assert out[0].schema.names == ["path", "content", "error"]


def test_fetch_batches_refuses_column_clash() -> None:
    batch = pa.record_batch({"path": ["x"], "content": [b"y"]})
    with pytest.raises(ValueError, match="already has"):
        list(io.fetch_batches([batch]))


def test_fetch_batches_splits_large_content(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_reading, "_MAX_BATCH_BYTES", 25)
    uris = [store.put(f"s/{i}.jpg", b"0123456789") for i in range(7)]
    out = list(io.fetch_batches([pa.record_batch({"path": uris})]))
    assert [b.num_rows for b in out] == [2, 2, 2, 1]
    assert pa.Table.from_batches(out).column("path").to_pylist() == uris


# --------------------------------------------------------------------------------------
# Text files, exists, remove
# --------------------------------------------------------------------------------------


def test_text_exists_remove(store: Store) -> None:
    uri = store.uri("out/_pca/pca.json")
    assert not io.exists(uri)
    io.write_text(uri, '{"format": "fruitlens.pca", "é": 1}')
    assert io.read_text(uri) == '{"format": "fruitlens.pca", "é": 1}'
    io.write_text(uri, "second")
    assert io.read_text(uri) == "second"
    assert io.exists(uri) and io.exists(store.uri("out")) and io.exists(store.uri("out/_pca"))
    assert store.keys("out") == ["out/_pca/pca.json"]
    assert io.remove(store.uri("out"))
    assert not io.exists(store.uri("out")) and not io.exists(uri)
    assert io.remove(store.uri("out")) is False
    with pytest.raises(FileNotFoundError):
        io.read_text(uri)


def test_write_bytes(store: Store) -> None:
    uri = store.uri("plots/pca.png")
    io.write_bytes(uri, b"\x89PNG\r\n")
    assert io.read_bytes([uri]) == [b"\x89PNG\r\n"]
    assert store.keys("plots") == ["plots/pca.png"]  # no temporary file left


def test_remove_a_single_file(store: Store) -> None:
    a = store.put("d/a.jpg")
    store.put("d/b.jpg")
    assert io.remove(a)
    assert store.keys("d") == ["d/b.jpg"]


def test_remove_refuses_a_bucket_or_root(s3_bucket: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        io.remove(f"s3://{s3_bucket}")
    with pytest.raises(ValueError, match="refusing"):
        io.remove("/")


# --------------------------------------------------------------------------------------
# Atomic Parquet output
# --------------------------------------------------------------------------------------


def _read_dataset(uri: str) -> pa.Table:
    fs, path = io.filesystem_for(uri)
    return ds.dataset(path, filesystem=fs, format="parquet").to_table()


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "path": [f"img-{i}" for i in range(start, start + n)],
            "features": pa.FixedSizeListArray.from_arrays(
                pa.array(
                    [float(i) for i in range(start, start + n) for _ in range(4)], pa.float32()
                ),
                4,
            ),
        }
    )


def test_write_parquet_atomic_table(store: Store) -> None:
    uri = store.uri("out")
    parts = io.write_parquet_atomic(_table(10), uri, rows_per_file=4)
    assert len(parts) == 3 and all(p.startswith(uri + "/part-0000") for p in parts)
    keys = store.keys("out")
    assert "out/_SUCCESS" in keys
    assert not [k for k in keys if "_temporary" in k]
    assert len([k for k in keys if k.endswith(".parquet")]) == 3
    assert _read_dataset(uri).sort_by("path").equals(_table(10).sort_by("path"))


def test_write_parquet_atomic_streams_batches(store: Store) -> None:
    uri = store.uri("stream")

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(5):
            yield from _table(3, start=3 * i).to_batches()

    parts = io.write_parquet_atomic(batches(), uri)
    assert len(parts) == 1
    assert _read_dataset(uri).num_rows == 15


def test_write_parquet_atomic_gathers_small_batches_into_row_groups(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches (a native run writes 16-32 rows at a time) become one row group
    per file, not one per batch; a row group holds up to ROW_GROUP_BYTES."""

    def batches() -> Iterator[pa.RecordBatch]:
        for i in range(20):
            yield from _table(3, start=3 * i).to_batches()

    def row_groups(uri: str) -> list[list[int]]:
        fs, _ = io.filesystem_for(uri)
        out = []
        for part in sorted(io.write_parquet_atomic(batches(), uri, rows_per_file=25)):
            with fs.open_input_file(io.filesystem_for(part)[1]) as f:
                meta = pq.ParquetFile(f).metadata
            out.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        return out

    assert row_groups(store.uri("rg")) == [[25], [25], [10]]
    monkeypatch.setattr(_parts, "ROW_GROUP_BYTES", 1)  # each batch its own row group
    assert row_groups(store.uri("rg1")) == [[3] * 8 + [1], [2] + [3] * 7 + [2], [1] + [3] * 3]
    assert _read_dataset(store.uri("rg1")).sort_by("path").equals(_table(60).sort_by("path"))


def test_write_parquet_atomic_empty_input(store: Store) -> None:
    uri = store.uri("empty")
    schema = _table(1).schema
    parts = io.write_parquet_atomic(iter([]), uri, schema=schema)
    assert len(parts) == 1
    table = _read_dataset(uri)
    assert table.num_rows == 0 and table.schema.names == ["path", "features"]
    assert "empty/_SUCCESS" in store.keys("empty")


def test_write_parquet_atomic_refuses_existing_output(store: Store) -> None:
    uri = store.uri("out")
    io.write_parquet_atomic(_table(2), uri)
    with pytest.raises(OutputError, match="--overwrite"):
        io.write_parquet_atomic(_table(3), uri)
    assert _read_dataset(uri).num_rows == 2


def test_write_parquet_atomic_overwrite(store: Store) -> None:
    uri = store.uri("out")
    io.write_parquet_atomic(_table(5), uri, overwrite=True)
    io.write_parquet_atomic(_table(3, start=100), uri, overwrite=True)
    keys = store.keys("out")
    assert len([k for k in keys if k.endswith(".parquet")]) == 1
    assert _read_dataset(uri).column("path").to_pylist() == ["img-100", "img-101", "img-102"]


@pytest.mark.parametrize("foreign", ["old-file.txt", "_pca/pca.json", "_SUCCESS"])
def test_write_parquet_atomic_never_replaces_foreign_data(store: Store, foreign: str) -> None:
    # issue 11: only a fruitlens output (its _SUCCESS manifest) is ever replaced
    uri = store.uri("out")
    store.put(f"out/{foreign}", b"user data")
    with pytest.raises(OutputError, match=r"not a fruitlens (output|manifest)"):
        io.write_parquet_atomic(_table(2), uri, overwrite=True)
    assert store.keys("out") == [f"out/{foreign}"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_write_parquet_atomic_failure_leaves_nothing_visible(store: Store, overwrite: bool) -> None:
    uri = store.uri("out")
    if overwrite:
        io.write_parquet_atomic(_table(2), uri)
    before = store.keys("out")

    def failing() -> Iterator[pa.RecordBatch]:
        yield from _table(5).to_batches()
        yield from _table(5, start=5).to_batches()
        raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError, match="executor lost"):
        io.write_parquet_atomic(failing(), uri, rows_per_file=3, overwrite=overwrite)
    assert store.keys("out") == before  # no new part, no _SUCCESS, no _temporary
    if overwrite:
        assert _read_dataset(uri).num_rows == 2


def test_write_parquet_atomic_failure_during_commit(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = store.uri("out")
    io.write_parquet_atomic(_table(2), uri)
    before = store.keys("out")

    class Boom(OSError):
        pass

    def manifest(*args: object) -> bytes:
        raise Boom("network down")

    monkeypatch.setattr(_target, "manifest_bytes", manifest)
    with pytest.raises(Boom):
        io.write_parquet_atomic(_table(6), uri, rows_per_file=2, overwrite=True)
    assert store.keys("out") == before  # the new parts were removed, the old output kept
    assert _read_dataset(uri).num_rows == 2


def test_write_parquet_atomic_casts_later_batches(store: Store) -> None:
    strict = pa.schema([pa.field("x", pa.int64(), nullable=False)])
    loose = pa.schema([pa.field("x", pa.int64())])
    batches = [
        pa.record_batch([pa.array([1, 2])], schema=strict),
        pa.record_batch([pa.array([], pa.int64())], schema=loose),
        pa.record_batch([pa.array([3])], schema=loose),
    ]
    uri = store.uri("cast")
    io.write_parquet_atomic(batches, uri, schema=loose)
    table = _read_dataset(uri)
    assert sorted(table.column("x").to_pylist()) == [1, 2, 3]


def test_write_parquet_atomic_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows_per_file"):
        io.write_parquet_atomic(_table(1), str(tmp_path / "o"), rows_per_file=0)


def test_local_write_creates_parent_folders(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/a/b/out"
    io.write_parquet_atomic(_table(3), uri)
    assert sorted(os.listdir(tmp_path / "a" / "b" / "out"))[0].startswith("_SUCCESS")
    assert _read_dataset(uri).num_rows == 3


# --------------------------------------------------------------------------------------
# Spark integration: --io auto|spark|arrow (a pip-installed Spark has no S3 filesystem)
# --------------------------------------------------------------------------------------


def _upload_images(server, bucket: str, shared_dir: Path, per_class: int = 3) -> list[str]:
    client = server.client()
    keys = []
    source = shared_dir / "data" / "fruits360-sample" / "Test"
    for label in ("apple", "lemon"):
        for image in sorted((source / label).glob("*.jpg"))[:per_class]:
            key = f"images/{label}/{image.name}"
            client.upload_file(str(image), bucket, key)
            keys.append(key)
    return keys


@pytest.mark.spark
def test_use_arrow_io(spark) -> None:
    from fruitlens import spark as fs

    assert fs.spark_can_read(spark, "file:/tmp/x") and fs.spark_can_read(spark, "/tmp/x")
    assert not fs.spark_can_read(spark, "s3://bucket/x")  # no hadoop-aws in pip's pyspark
    assert fs.use_arrow_io(spark, "s3://bucket/x")
    assert fs.use_arrow_io(spark, "s3a://bucket/x")
    assert fs.use_arrow_io(spark, "gs://bucket/x")
    assert not fs.use_arrow_io(spark, "/local/images")
    assert not fs.use_arrow_io(spark, "hdfs://namenode/images")
    assert not fs.use_arrow_io(spark, "s3://bucket/x", "spark")
    assert fs.use_arrow_io(spark, "/local/images", "arrow")
    with pytest.raises(ValueError, match="auto, spark, arrow"):
        fs.use_arrow_io(spark, "s3://bucket/x", "hadoop")


@pytest.mark.spark
def test_read_images_arrow_featurize(
    spark_s3, s3_server, s3_bucket: str, shared_dir: Path, random_onnx: Path
) -> None:
    from fruitlens import spark as fs

    keys = _upload_images(s3_server, s3_bucket, shared_dir)
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="images/lemon/zero.jpg", Body=b"")
    client.put_object(Bucket=s3_bucket, Key="images/lemon/gone.jpg", Body=b"soon deleted")
    images = fs.read_images(spark_s3, f"s3://{s3_bucket}/images")  # lists now
    assert images.columns == [
        "path",
        "modificationTime",
        "length",
        "label",
        "content",
        fs.READ_ERROR_COL,
    ]
    client.delete_object(Bucket=s3_bucket, Key="images/lemon/gone.jpg")  # before the fetch
    features = fs.featurize(
        images.select("path", "label", "content", fs.READ_ERROR_COL), model=str(random_onnx)
    )
    assert features.columns == ["path", "label", "features", "error"]
    rows = {r["path"].split("/", 3)[-1]: r for r in features.collect()}
    assert set(rows) == {*keys, "images/lemon/zero.jpg", "images/lemon/gone.jpg"}
    gone = rows.pop("images/lemon/gone.jpg")
    assert gone["features"] is None
    assert gone["error"].startswith(f"unreadable: s3://{s3_bucket}/images/lemon/gone.jpg: ")
    zero = rows.pop("images/lemon/zero.jpg")
    assert zero["features"] is None and zero["error"].startswith("empty: ")
    for key, row in rows.items():
        assert row["error"] is None and len(row["features"]) == 1280, key
        assert row["label"] == key.split("/")[1]


@pytest.mark.spark
def test_read_images_arrow_missing_input(spark_s3, s3_bucket: str) -> None:
    from fruitlens import FruitlensError
    from fruitlens import spark as fs

    with pytest.raises(FruitlensError, match="does not exist"):
        fs.read_images(spark_s3, f"s3://{s3_bucket}/nothing")
    with pytest.raises(FruitlensError, match="glob"):
        fs.read_images(spark_s3, f"s3://{s3_bucket}/images/*/x.jpg")


@pytest.mark.spark
def test_collect_and_write_parquet_arrow(spark_s3, s3_bucket: str) -> None:
    from fruitlens import spark as fs

    df = spark_s3.range(0, 1000, numPartitions=5).selectExpr(
        "id", "cast(id as string) as name", "array(cast(id as float), 1.5f) as v"
    )
    batches = list(fs.collect_arrow_batches(df))
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == list(range(1000))
    assert table.column("v").to_pylist()[3] == [3.0, 1.5]

    uri = f"s3://{s3_bucket}/arrow-out"
    parts = fs.write_parquet_arrow(df, uri)
    assert parts and io.exists(uri + "/_SUCCESS")
    assert _read_dataset(uri).sort_by("id").equals(table)
    with pytest.raises(OutputError):
        fs.write_parquet_arrow(df, uri)
    fs.write_parquet_arrow(df.limit(0), uri, overwrite=True)
    empty = _read_dataset(uri)
    assert empty.num_rows == 0 and empty.schema.names == ["id", "name", "v"]


@pytest.mark.spark
@pytest.mark.slow
def test_cli_run_s3_to_s3(
    spark_s3, s3_server, s3_bucket: str, shared_dir: Path, random_onnx: Path, capsys
) -> None:
    import json

    from fruitlens import cli

    keys = _upload_images(s3_server, s3_bucket, shared_dir, per_class=4)
    output = f"s3://{s3_bucket}/features"
    argv = ["run", f"s3://{s3_bucket}/images", output, "--model", str(random_onnx)]
    argv += ["--k", "2", "--no-progress"]
    assert cli.main(argv) == 0
    table = _read_dataset(output)
    assert table.num_rows == len(keys)
    assert table.schema.names == [*"path label features pca error length modificationTime".split()]
    assert str(table.schema.field("modificationTime").type) == "timestamp[us, tz=UTC]"
    assert {len(v) for v in table.column("pca").to_pylist()} == {2}
    pca = json.loads(io.read_text(output + "/_pca/pca.json"))
    assert pca["format"] == "fruitlens.pca"
    assert io.exists(output + "/_SUCCESS") and io.exists(output + "/_summary.json")

    assert cli.main(argv) == 1  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite", "--io", "auto"]) == 0
    assert _read_dataset(output).num_rows == len(keys)


@pytest.mark.spark
@pytest.mark.slow
def test_cli_io_arrow_on_local_paths(
    spark, tmp_path: Path, shared_dir: Path, random_onnx: Path
) -> None:
    from fruitlens import cli

    source = shared_dir / "data" / "fruits360-sample" / "Test"
    for label in ("mango", "raspberry"):
        (tmp_path / "in" / label).mkdir(parents=True)
        for image in sorted((source / label).glob("*.jpg"))[:3]:
            (tmp_path / "in" / label / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), str(out), "--model", str(random_onnx), "--io", "arrow"]
    assert cli.main([*argv, "--k", "2", "--no-progress"]) == 0
    assert (out / "_SUCCESS").is_file() and (out / "_pca" / "pca.json").is_file()
    assert _read_dataset(str(out)).num_rows == 6
