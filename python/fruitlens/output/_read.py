"""Reading committed outputs: :func:`verify` a manifest against what is there, and read
the parts it lists (:func:`read_output`, :func:`part_uris`)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._common import sha256_bytes
from .._errors import OutputError
from .._manifest import MANIFEST, Manifest, is_part, parse_manifest
from .._pca import PCA
from ._stores import store_for

__all__ = ["part_uris", "read_output", "verify"]


def verify(uri: str, *, _store: tuple[Any, str] | None = None) -> Manifest:
    """Check that ``uri`` is a complete fruitlens output; return its manifest.

    Every file the ``_SUCCESS`` manifest lists must exist with its size (and sha256 for
    the JSON files). Works on local folders, ``file:``, ``s3://`` and ``gs://``.

    Raises:
        OutputError: no manifest, not a fruitlens manifest, or a listed file missing or
            different (an interrupted or concurrent run).
    """
    store, root = _store or store_for(uri)
    if store.stat(store.join(root, MANIFEST)) == "missing":
        raise OutputError(f"{uri} is not a committed fruitlens output: no {MANIFEST} manifest")
    manifest = parse_manifest(store.read(store.join(root, MANIFEST)), uri)
    if manifest is None:
        raise OutputError(f"{uri}: {MANIFEST} is not a fruitlens manifest")
    present = store.files(root)
    _check_listed(store, root, uri, manifest, present)
    for alias, real in manifest.aliases.items():
        if real not in manifest.files:
            raise OutputError(f"{uri}: manifest alias {alias} names an unlisted file")
        sha = manifest.files[real].get("sha256")
        if alias not in present or _sha(store, root, alias) != sha:
            manifest.stale_aliases.append(alias)
    manifest.unlisted_parts = sorted(p for p in present if is_part(p) and p not in manifest.files)
    return manifest


def _sha(store: Any, root: str, rel: str) -> str:
    return sha256_bytes(store.read(store.join(root, rel)))


def _check_listed(
    store: Any, root: str, uri: str, manifest: Manifest, present: dict[str, int]
) -> None:
    """Every listed file is present with its size (and sha256)."""
    for rel, entry in manifest.files.items():
        if rel not in present:
            raise OutputError(f"{uri} is incomplete: {rel} is missing")
        if present[rel] != entry.get("size"):
            raise OutputError(
                f"{uri} is inconsistent: {rel} has {present[rel]} bytes, the manifest "
                f"says {entry.get('size')}"
            )
        if "sha256" in entry and _sha(store, root, rel) != entry["sha256"]:
            raise OutputError(f"{uri} is inconsistent: {rel} does not match its manifest")


def part_uris(uri: str) -> list[str]:
    """URIs of the Parquet parts of the committed output at ``uri`` (verified), e.g. for
    ``spark.read.parquet(*fruitlens.output.part_uris(out))``."""
    return verify(uri).part_uris()


def read_output(uri: str, columns: list[str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Read a committed output: ``(table, pca, summary)`` — a ``pyarrow.Table`` of the
    parts the manifest lists, the fitted :class:`fruitlens.PCA` and the summary dict."""
    store, root = store_for(uri)
    manifest = verify(uri, _store=(store, root))
    fs = store.fs if store.kind == "object" else None
    tables = [
        pq.read_table(store.join(root, rel), columns=columns, filesystem=fs)
        for rel in manifest.parts
    ]
    table = pa.concat_tables(tables) if tables else None
    pca = PCA.from_json(store.read(store.join(root, manifest.pca_path)).decode("utf-8"))
    summary = json.loads(store.read(store.join(root, manifest.summary_path)).decode("utf-8"))
    return table, pca, summary
