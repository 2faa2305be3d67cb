"""Paths as Spark reads them (driver side): input-path lists, literal local paths,
Hadoop globs (escaping a literal name, expanding a pattern, case-insensitive extension
filters) and the Spark version rule they depend on.

pyspark is only used through the session a caller passes in.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import _uri
from .._common import is_spark_connect
from .._errors import FruitlensError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "case_insensitive_glob",
    "dotted",
    "hadoop_glob",
    "hadoop_literal",
    "input_paths",
    "local_path_or_none",
    "spark_major",
]

_HADOOP_GLOB_CHARS = frozenset("{}[]*?\\")


def case_insensitive_glob(extensions: Sequence[str]) -> str:
    """``("jpg", "png")`` -> ``*.{[jJ][pP][gG],[pP][nN][gG]}`` (a Hadoop glob)."""
    parts = []
    for ext in extensions:
        ext = ext.lstrip(".")
        if not ext or any(c in ext for c in "{}[]*?,\\/"):
            raise ValueError(f"invalid file extension {ext!r}")
        parts.append(
            "".join(f"[{c.lower()}{c.upper()}]" if c.lower() != c.upper() else c for c in ext)
        )
    return "*.{" + ",".join(parts) + "}"


def dotted(extensions: Sequence[str]) -> list[str]:
    """Extensions as ``fruitlens.io`` takes them: with the dot."""
    return ["." + e.lstrip(".") for e in extensions]


def input_paths(path: str | os.PathLike[str] | Sequence[str], caller: str) -> list[str]:
    """One path or several, as a non-empty list of strings."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise FruitlensError(f"{caller}: no input path given")
    return [os.fspath(p) for p in paths]


def local_path_or_none(path: str) -> str | None:
    """The absolute local path of ``path`` if it is local (no scheme or ``file:``),
    taken literally (never percent-decoded; see :mod:`fruitlens._uri`)."""
    return _uri.local_path(path) if _uri.is_local(path) else None


def hadoop_literal(uri: str) -> str:
    """``uri`` escaped so that Hadoop's glob expansion (which Spark applies to every
    input path) matches exactly that name: ``{}[]*?\\`` get a backslash."""
    return "".join("\\" + c if c in _HADOOP_GLOB_CHARS else c for c in uri)


def hadoop_glob(spark: SparkSession, pattern: str) -> list[str]:
    """The local paths that match the Hadoop glob ``pattern`` (a ``file:`` URI), sorted
    (Spark Connect: no JVM to ask; Python's ``glob``, without Hadoop's ``{a,b}``)."""
    if is_spark_connect(spark):
        local = _uri.local_path(pattern)
        if "{" in local:
            raise FruitlensError(
                f"{pattern}: {{a,b}} patterns need a classic Spark session (Hadoop's glob); "
                "on Spark Connect use *, ? and [...]"
            )
        return sorted(glob.glob(local))  # Python's glob: no JVM on Connect
    sc = spark.sparkContext
    path = sc._jvm.org.apache.hadoop.fs.Path(pattern)
    statuses = path.getFileSystem(sc._jsc.hadoopConfiguration()).globStatus(path)
    if statuses is None:
        return []
    return sorted(_uri.local_path(str(st.getPath().toString())) for st in statuses)


def spark_major(spark: SparkSession) -> int:
    try:
        return int(spark.version.split(".", 1)[0])
    except ValueError:  # pragma: no cover - unusual version strings
        return 0
