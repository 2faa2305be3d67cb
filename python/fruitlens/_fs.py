"""Which filesystem serves a URI: pyarrow's (local, S3, GCS), or Spark's Hadoop layer.

``filesystem_for`` gives a cached ``pyarrow.fs`` filesystem and path for a URI;
``use_arrow_io`` decides, for a Spark session, whether a URI goes through pyarrow
(:mod:`fruitlens.io`) or through Spark's own Hadoop filesystems (``--io``). Nothing here
imports pyspark: the session is only used through its py4j gateway.

Credentials come from the standard AWS chain (environment, ``~/.aws`` files, instance
profile). ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000``
for MinIO or moto) overrides the endpoint; the region is ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, else it is looked up for the bucket.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from . import _uri
from ._common import IO_MODES, is_spark_connect

__all__ = [
    "ARROW_SCHEMES",
    "filesystem_for",
    "is_arrow_uri",
    "spark_can_read",
    "uri_prefix",
    "use_arrow_io",
]

#: URI schemes served by ``pyarrow.fs`` here (a local Spark cannot read them itself).
ARROW_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})

_fs_cache: dict[tuple[Any, ...], pafs.FileSystem] = {}
_fs_lock = threading.Lock()
#: (Spark application id, scheme) → whether its Hadoop layer has a filesystem for it.
_HADOOP_FS: dict[tuple[str, str], bool] = {}


def is_arrow_uri(uri: str, force: bool = False) -> bool:
    """True if ``uri`` is an object-store URI (``s3://``, ``s3a://``, ``gs://``, ``gcs://``).

    Local paths and ``file:`` URIs give ``force`` (False by default): with ``force`` the
    caller asks for the pyarrow path even for local data (``--io arrow``).
    """
    return _uri.scheme(uri) in ARROW_SCHEMES or bool(force)


def _first_env(*names: str) -> str | None:
    """The first of the environment variables ``names`` that is set and not blank."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _s3_options(bucket: str) -> dict[str, Any]:
    """``S3FileSystem`` options: the endpoint and region from the environment, else the
    bucket's own region."""
    endpoint = _first_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = _first_env("AWS_REGION", "AWS_DEFAULT_REGION")
    kwargs: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        kwargs["scheme"] = parts.scheme or "https"
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["region"] = region or "us-east-1"
    elif region:
        kwargs["region"] = region
    else:
        try:  # the bucket's own region (an unauthenticated HEAD request)
            kwargs["region"] = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError):
            pass  # leave it to the SDK (profile, instance metadata, us-east-1)
    return kwargs


def _cached(key: tuple[Any, ...], make: Any) -> pafs.FileSystem:
    # The key holds the process id, so a forked Python worker never reuses a client
    # created before the fork.
    with _fs_lock:
        fs = _fs_cache.get(key)
        if fs is None:
            fs = make()
            _fs_cache[key] = fs
    return fs


def _s3_filesystem(bucket: str) -> pafs.S3FileSystem:
    kwargs = _s3_options(bucket)
    key = ("s3", os.getpid(), tuple(sorted(kwargs.items())))
    return _cached(key, lambda: pafs.S3FileSystem(**kwargs))  # type: ignore[return-value]


def _gcs_filesystem() -> pafs.FileSystem:
    return _cached(("gs", os.getpid()), pafs.GcsFileSystem)


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a URI or a local path.

    ``s3://bucket/key`` (and ``s3a://``) → a cached :class:`pyarrow.fs.S3FileSystem`
    and ``"bucket/key"``; ``gs://`` / ``gcs://`` → ``GcsFileSystem``; a local path or
    ``file:`` URI → ``LocalFileSystem`` and an absolute path.
    """
    uri = os.fspath(uri)
    scheme = _uri.scheme(uri)
    if scheme in ARROW_SCHEMES:
        _, bucket, key = _uri.split_uri(uri)
        if not bucket:
            raise ValueError(f"{uri!r} has no bucket name (expected {scheme}://BUCKET/KEY)")
        path = (bucket + "/" + key.lstrip("/")).rstrip("/")
        if scheme in ("s3", "s3a"):
            return _s3_filesystem(bucket), path
        return _gcs_filesystem(), path
    if scheme and scheme != "file":
        raise ValueError(
            f"unsupported URI scheme {scheme!r} in {uri!r}: use s3://, s3a://, gs://, "
            "gcs://, file: or a local path (hdfs:// and others need Spark's own I/O, --io spark)"
        )
    return pafs.LocalFileSystem(), _uri.local_path(uri)


def uri_prefix(uri: str) -> str:
    """What to put before a filesystem path to make a full URI of the same kind
    (``file:`` + an absolute path for ``file:`` URIs, as Hadoop writes them)."""
    scheme = _uri.scheme(uri)
    if scheme in ARROW_SCHEMES:
        return scheme + "://"
    if scheme == "file":
        return "file:"
    return ""


def spark_can_read(spark: Any, uri: str) -> bool:
    """True if Spark's Hadoop layer has a filesystem for ``uri``'s scheme.

    Asks Hadoop's ``FileSystem.getFileSystemClass`` (which honours ``fs.<scheme>.impl``,
    e.g. ``spark.hadoop.fs.s3.impl``, and fails when the class, such as ``hadoop-aws``'s
    ``S3AFileSystem`` or EMRFS's ``EmrFileSystem``, is not on the classpath).
    """
    scheme = _uri.scheme(os.fspath(uri)) or "file"  # literal: "a:b.jpg" is a local name
    if is_spark_connect(spark):  # no JVM to ask (Spark Connect): object stores via pyarrow
        return scheme == "file"
    key = (spark.sparkContext.applicationId, scheme)
    if key not in _HADOOP_FS:
        try:
            sc = spark.sparkContext
            conf = sc._jsc.hadoopConfiguration()
            sc._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, conf)
            _HADOOP_FS[key] = True
        except Exception:  # Py4JJavaError: UnsupportedFileSystemException, ClassNotFound
            _HADOOP_FS[key] = False
    return _HADOOP_FS[key]


def use_arrow_io(spark: Any, uri: str, io: str = "auto") -> bool:
    """Whether ``uri`` is read/written through ``fruitlens.io`` (pyarrow) or by Spark.

    ``"arrow"``: always; ``"spark"``: never; ``"auto"``: for ``s3://``, ``s3a://``,
    ``gs://`` and ``gcs://`` when Spark has no Hadoop filesystem for the scheme (a
    ``pip install pyspark``), never on EMR (EMRFS) or with ``hadoop-aws``.
    """
    if io not in IO_MODES:
        raise ValueError(f"io must be one of {', '.join(IO_MODES)}, got {io!r}")
    if io != "auto":
        return io == "arrow"
    return is_arrow_uri(uri) and not spark_can_read(spark, uri)
