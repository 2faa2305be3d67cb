"""The ``_SUCCESS`` manifest of a fruitlens output: its format, parsing, writing, and
:func:`checked_read` (a local file checked against the manifest of the output it lies in).

This is the layer below :mod:`fruitlens.output` (which writes and verifies outputs) and
``fruitlens.PCA.load`` (which reads ``OUTPUT/_pca/pca.json``): it imports neither.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import _uri
from ._common import is_hidden, sha256_bytes
from ._errors import OutputError

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "PCA_FILE",
    "SMALL",
    "SUMMARY_FILE",
    "Manifest",
    "checked_read",
    "is_part",
    "manifest_bytes",
    "parse_manifest",
]

#: The commit marker: the JSON manifest, written last.
MANIFEST = "_SUCCESS"
MANIFEST_FORMAT = "fruitlens.output"
MANIFEST_VERSION = 1
PCA_FILE = "_pca/pca.json"
SUMMARY_FILE = "_summary.json"
#: Files up to this size get a sha256 in the manifest (the small JSON files).
SMALL = 1 << 20


@dataclass
class Manifest:
    """A parsed ``_SUCCESS`` manifest, plus what :func:`fruitlens.output.verify` found."""

    uri: str
    run_id: str
    created: str
    files: dict[str, dict[str, Any]]
    aliases: dict[str, str] = field(default_factory=dict)
    #: Fixed-name copies (aliases) whose content is not yet the manifest's (object
    #: stores, a run killed just after its commit); readers use the listed original.
    stale_aliases: list[str] = field(default_factory=list)
    #: Visible Parquet files present but not listed (object stores: an unfinished or
    #: interrupted publish); readers that honour the manifest skip them.
    unlisted_parts: list[str] = field(default_factory=list)

    @property
    def parts(self) -> list[str]:
        """Relative paths of the Parquet parts, sorted."""
        return sorted(p for p in self.files if is_part(p))

    def part_uris(self) -> list[str]:
        return [_uri.join(self.uri, p) for p in self.parts]

    @property
    def pca_path(self) -> str:
        return self.aliases.get(PCA_FILE, PCA_FILE)

    @property
    def summary_path(self) -> str:
        return self.aliases.get(SUMMARY_FILE, SUMMARY_FILE)


def is_part(rel: str) -> bool:
    """A visible Parquet file (no hidden path component): a part of the output."""
    return rel.endswith(".parquet") and not is_hidden(rel)


def parse_manifest(data: bytes, uri: str) -> Manifest | None:
    """The manifest in ``data``, or None if it is not a fruitlens manifest.

    Raises:
        OutputError: a fruitlens manifest of another version, damaged, or listing a
            path outside the output.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        return None
    if doc.get("version") != MANIFEST_VERSION:
        raise OutputError(
            f"{uri}: manifest version {doc.get('version')!r} is not supported by this "
            f"fruitlens (expects {MANIFEST_VERSION}): upgrade fruitlens"
        )
    try:
        files = {str(f["path"]): dict(f) for f in doc.get("files", [])}
        aliases = {str(k): str(v) for k, v in (doc.get("aliases") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OutputError(f"{uri}: {MANIFEST} is a damaged fruitlens manifest ({exc!r})") from exc
    unsafe = [p for p in [*files, *aliases, *aliases.values()] if not _safe_rel(p)]
    if unsafe:  # fruitlens never reads or deletes outside the output on its word
        raise OutputError(f"{uri}: {MANIFEST} lists a path outside the output: {unsafe[0]!r}")
    return Manifest(
        uri=uri,
        run_id=str(doc.get("run_id", "")),
        created=str(doc.get("created", "")),
        files=files,
        aliases=aliases,
    )


def _safe_rel(rel: str) -> bool:
    """A relative path inside an output: no leading ``/``, ``\\``, empty, ``.`` or ``..`` part."""
    return bool(rel) and "\\" not in rel and all(p not in ("", ".", "..") for p in rel.split("/"))


def manifest_bytes(run_id: str, files: dict[str, dict[str, Any]], aliases: dict[str, str]) -> bytes:
    """The manifest of run ``run_id`` listing ``files`` (relative path → entry)."""
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [{"path": p, **files[p]} for p in sorted(files)],
        "aliases": aliases,
    }
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def checked_read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a local file; if it lies inside a fruitlens output whose manifest
    lists it (or it is a fixed-name copy of a listed file), checked against the manifest
    (the listed original is read when the copy is stale).

    Raises:
        OutputError: the file belongs to an output but does not match its manifest.
    """
    path = os.fspath(path)
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    candidates = [(folder, os.path.basename(real))]
    if os.path.basename(folder) == "_pca":
        candidates.insert(0, (os.path.dirname(folder), "_pca/" + os.path.basename(real)))
    for root, rel in candidates:
        marker = os.path.join(root, MANIFEST)
        if not os.path.isfile(marker):
            continue
        manifest = parse_manifest(_read(marker), root)
        if manifest is None:
            break  # an older fruitlens or Spark's empty marker: nothing to check against
        return _checked_entry(path, root, rel, manifest)
    return _read(path)


def _checked_entry(path: str, root: str, rel: str, manifest: Manifest) -> bytes:
    """The bytes of ``rel`` (or of the file its alias names) in the output ``root``,
    checked against ``manifest``."""
    listed = manifest.aliases.get(rel, rel)
    entry = manifest.files.get(listed)
    if entry is None:
        raise OutputError(
            f"{path} is not part of the committed output {root} (its {MANIFEST} "
            "manifest does not list it): the output is incomplete or being replaced"
        )
    data = _read(os.path.join(root, *listed.split("/")))
    if "sha256" in entry and sha256_bytes(data) != entry["sha256"]:
        raise OutputError(
            f"{path} does not match the {MANIFEST} manifest of {root}: the output is "
            "incomplete or being replaced; run fruitlens again"
        )
    return data
