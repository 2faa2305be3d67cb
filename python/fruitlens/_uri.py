"""Literal URIs: local paths, ``file:`` URIs and object-store URIs, without decoding.

Every path string in fruitlens goes through this module, so that any legal file or
object name round-trips exactly: ``#``, ``?``, ``%`` (and ``%20`` literally), spaces,
newlines, backslashes, ``:``, leading dashes and any Unicode stay what they are.

Rules (the same as Hadoop's ``Path(String)``, which Spark uses for its input paths):

* A string is a URI when it starts with ``SCHEME:/`` (a scheme of two or more letters,
  digits, ``+``, ``-`` or ``.``, starting with a letter), or with ``file:``. Anything else
  is a local path: ``a:b.jpg``, ``12:30/x.jpg`` or ``C:/x`` are local. A relative local
  folder whose name looks like a scheme (``photos:/...``) must be written ``./photos:/...``.
* Nothing is ever percent-decoded and ``#``/``?`` are never a fragment or a query:
  ``file:/data/a%20b.jpg`` names the file ``a%20b.jpg``, ``s3://bkt/a.jpg#2`` the key
  ``a.jpg#2``. (Hadoop's ``Path`` does not decode ``%`` either.)
* ``file:`` URIs: ``file:/abs/path``, ``file:///abs/path`` and
  ``file://localhost/abs/path`` name ``/abs/path``; another host, or a relative path
  (``file:rel``), is a ``ValueError``.
* fruitlens writes local files as ``file:`` + the absolute path (``file:/data/a b.jpg``),
  which is what Hadoop's ``Path.toString()`` and so Spark's ``binaryFile`` give.
* Local paths are made absolute (``os.path.abspath``: ``..`` and repeated ``/`` are
  folded, symbolic links are kept); a leading ``~`` or ``~/`` is the home folder.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "OBJECT_SCHEMES",
    "is_local",
    "join",
    "local_path",
    "scheme",
    "split_uri",
    "to_uri",
]

#: Object-store schemes whose URIs are ``SCHEME://BUCKET/KEY``.
OBJECT_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+):/")


def scheme(uri: str | os.PathLike[str]) -> str:
    """The lower-case scheme of ``uri``: ``""`` for a local path, ``"file"``, ``"s3"``, …"""
    uri = os.fspath(uri)
    if uri[:5].lower() == "file:":
        return "file"
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_local(uri: str | os.PathLike[str]) -> bool:
    """True for a local path or a ``file:`` URI."""
    return scheme(uri) in ("", "file")


def _expand(path: str) -> str:
    if path == "~" or path.startswith("~/"):
        return os.path.expanduser("~") + path[1:]
    return path


def local_path(uri: str | os.PathLike[str]) -> str:
    """The absolute local path of a local path or ``file:`` URI (never decoded).

    Raises:
        ValueError: ``uri`` is not local, or is a ``file:`` URI with a host or a relative path.
    """
    uri = os.fspath(uri)
    kind = scheme(uri)
    if kind == "":
        return os.path.abspath(_expand(uri)) if uri else os.path.abspath(".")
    if kind != "file":
        raise ValueError(f"not a local path or file: URI: {uri!r}")
    rest = uri[5:]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise ValueError(f"{uri!r}: file: URIs with a host are not supported")
        rest = slash + path
    if not rest.startswith("/"):
        raise ValueError(f"{uri!r}: a file: URI needs an absolute path (file:/...)")
    return os.path.abspath(rest)


def split_uri(uri: str | os.PathLike[str]) -> tuple[str, str, str]:
    """``(scheme, authority, path)`` of ``uri``, literally.

    ``s3://bkt/a/b#c.jpg`` → ``("s3", "bkt", "a/b#c.jpg")`` (for object stores the key,
    without a leading ``/``; trailing ``/`` kept); a local path or ``file:`` URI →
    ``("file", "", "/absolute/path")``; another ``scheme://host/path`` →
    ``(scheme, "host", "/path")``, and ``scheme:/path`` → ``(scheme, "", "/path")``.
    """
    uri = os.fspath(uri)
    kind = scheme(uri)
    if kind in ("", "file"):
        return "file", "", local_path(uri)
    rest = uri[len(kind) + 1 :]
    if not rest.startswith("//"):
        return kind, "", rest
    authority, slash, path = rest[2:].partition("/")
    if kind in OBJECT_SCHEMES:
        return kind, authority, path
    return kind, authority, slash + path


def to_uri(path: str | os.PathLike[str]) -> str:
    """A full URI: ``file:`` + the absolute path for local paths and ``file:`` URIs
    (``file:///x`` → ``file:/x``), other URIs unchanged."""
    path = os.fspath(path)
    if is_local(path):
        return "file:" + local_path(path)
    return path


def join(uri: str | os.PathLike[str], *names: str) -> str:
    """``uri`` + ``/`` + each name, literally (``join("s3://b/p/", "x#1.jpg")`` →
    ``"s3://b/p/x#1.jpg"``). Names are not checked: one may hold ``/``."""
    out = os.fspath(uri)
    for name in names:
        out = (out if out.endswith("/") else out + "/") + name
    return out
