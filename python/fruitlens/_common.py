"""Constants and small helpers shared across fruitlens: each one is written here, once.

Nothing here imports pyspark, pyarrow or the native module, so every other module
(including the code that runs in Spark's Python workers) may import it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Union

__all__ = [
    "FEATURE_DIM",
    "GLOB_CHARS",
    "IMAGE_EXTENSIONS",
    "IO_MODES",
    "PathLike",
    "cache_dir",
    "deprecated",
    "first_line",
    "has_glob",
    "is_hidden",
    "is_spark_connect",
    "sha256_bytes",
    "sha256_file",
    "umask",
    "write_atomic",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions read as images by default (lower case, with the dot; matched in
#: any case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
)

#: Length of a MobileNetV2 feature vector (the pooled output of ``Conv_1``).
FEATURE_DIM = 1280

#: The ``--io`` / ``io=`` choices: how image bytes are read (see ``fruitlens.spark``).
IO_MODES: tuple[str, ...] = ("auto", "spark", "arrow")

#: Characters that make a path a glob pattern (Hadoop's and Python's).
GLOB_CHARS = "*?[{"


def has_glob(text: str) -> bool:
    """Whether ``text`` holds a glob character (:data:`GLOB_CHARS`)."""
    return any(c in text for c in GLOB_CHARS)


def is_hidden(relative: str) -> bool:
    """Hadoop's and Spark's rule for files that are not data: a path component that
    starts with ``_`` or ``.``, or a name ending in ``._COPYING_`` (a ``hadoop fs -put``
    in progress). ``relative`` is a ``/``-separated path below the listed root."""
    parts = [part for part in relative.split("/") if part]
    if parts and parts[-1].endswith("._COPYING_"):
        return True
    return any(part.startswith(("_", ".")) for part in parts)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``str(exc)``, else the exception's type name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    """fruitlens's cache folder: ``$FRUITLENS_CACHE`` if set, else
    ``$XDG_CACHE_HOME/fruitlens``, else ``~/.cache/fruitlens``."""
    env = os.environ.get("FRUITLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fruitlens"


def umask() -> int:
    """The process's file-mode creation mask (read without changing it where possible)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: PathLike, data: bytes | str) -> Path:
    """Write ``data`` (``str`` as UTF-8) to the local file ``path``, all or nothing: a
    temporary file in the same folder, flushed to disk, then ``os.replace``. Creates the
    parent folders; a failure leaves no temporary file behind. The file gets the usual
    mode of a new file (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``."""
    target = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def deprecated(old: str, new: str, value: Any, stacklevel: int = 3) -> Any:
    """``value`` (what the deprecated name ``old`` stands for), after a
    ``DeprecationWarning`` pointing at the caller of the module ``__getattr__`` that
    asks: ``use {new}``. The one way fruitlens keeps a renamed public name working."""
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)
    return value


def is_spark_connect(spark_or_df: Any) -> bool:
    """Whether a SparkSession (or a DataFrame) is a Spark Connect one (pyspark is not
    imported: the class's module tells)."""
    return type(spark_or_df).__module__.startswith("pyspark.sql.connect")
