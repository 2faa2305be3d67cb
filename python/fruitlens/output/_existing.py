"""Before any work: can OUTPUT be written, and what is there already?

A previous fruitlens output (recognised by its manifest, or by the layout of a fruitlens
before manifests) may be replaced with ``overwrite``; anything else is refused, and
nothing that fruitlens did not write is ever deleted.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from .._common import first_line
from .._errors import OutputError
from .._manifest import MANIFEST, PCA_FILE, SUMMARY_FILE, Manifest, parse_manifest
from ._checks import is_mount_point
from ._recover import RUN, recover
from ._stores import raise_error

__all__ = ["check_local_place", "existing_output", "probe_staging"]

#: Names fruitlens gives the files of an object-store output (relative to OUTPUT).
_OWN_OBJECT = re.compile(
    rf"(part-\d{{5}}-(?P<a>{RUN})\.parquet|_pca/pca-(?P<b>{RUN})\.json"
    rf"|_summary-(?P<c>{RUN})\.json)"
)
#: What an output of fruitlens before manifests holds: Spark's or fruitlens's parts (and
#: Hadoop's hidden checksums), the PCA, the summary and an empty ``_SUCCESS``.
_LEGACY_FILE = re.compile(
    r"(\.?part-[^/]*\.parquet(\.crc)?|\._SUCCESS\.crc|_SUCCESS|_summary\.json"
    r"|_pca/\.?pca\.json(\.crc)?|_pca/pca\.json\.tmp)"
)
_LEGACY_SUMMARY_KEYS = {"input", "output", "images", "k", "stages"}


def check_local_place(uri: str, root: str) -> None:
    """Refuse a local OUTPUT that is a filesystem root or a mount point."""
    if os.path.dirname(root) == root:
        raise OutputError(f"output {uri} is a filesystem root: choose a new folder for the output")
    if is_mount_point(root):
        raise OutputError(
            f"output {uri} is a mount point: fruitlens replaces its output folder "
            "as a whole, so it writes a folder inside it, e.g. "
            f"{uri.rstrip('/')}/fruitlens-output"
        )


def probe_staging(uri: str, staging: str) -> None:
    """Local outputs: create (and remove) the staging folder now, so that a read-only
    or missing parent, a file in the way or a name too long fail before any work."""
    parent = os.path.dirname(staging)
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(staging)
        os.rmdir(staging)
    except OSError as exc:
        where = exc.filename or parent
        why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        message = f"cannot write the output {uri}: {why or exc} ({where})"
        raise OutputError(message) from exc


def _first_file(root: str) -> dict[str, int]:
    """Local OUTPUT without a manifest at its top: the first file found in it, if
    any (so that a big folder that is not an output, e.g. ``~``, is refused at
    once instead of after listing all of it)."""
    for folder, dirs, names in os.walk(root, onerror=raise_error):
        found = names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        if found:
            rel = os.path.relpath(os.path.join(folder, found[0]), root)
            return {rel.replace(os.sep, "/"): 0}
    return {}


def existing_output(store: Any, root: str, uri: str, *, overwrite: bool) -> Manifest | None:
    """The manifest of the fruitlens output at OUTPUT that this run replaces, None if
    there is nothing there; recovers (local/Hadoop) or cleans (object stores) what an
    interrupted run left first. Raises :class:`OutputError` when OUTPUT may not be
    written."""
    files = _present_files(store, root, uri)
    if not files:
        return None  # nothing there (or an empty folder): nothing to replace
    if MANIFEST not in files:
        raise OutputError(
            f"output {uri} exists and is not a fruitlens output (no _SUCCESS "
            "manifest): fruitlens replaces only its own outputs; choose a new output "
            "folder, or delete it yourself"
        )
    manifest = parse_manifest(store.read(store.join(root, MANIFEST)), uri)
    if manifest is None:
        manifest = _legacy_manifest(store, root, uri, files)
    if manifest is None:
        raise OutputError(
            f"output {uri} has a _SUCCESS that is not a fruitlens manifest (an "
            "older fruitlens or another tool wrote it): choose a new output folder, "
            "or delete it yourself"
        )
    known = set(manifest.files) | set(manifest.aliases) | {MANIFEST}
    foreign = sorted(f for f in files if f not in known)
    if foreign:
        raise OutputError(
            f"output {uri} holds files fruitlens did not write (e.g. "
            f"{foreign[0]!r}): move them away first, or choose a new output folder"
        )
    if not overwrite:
        raise OutputError(
            f"output {uri} exists (a fruitlens output of run {manifest.run_id}): "
            "pass --overwrite to replace it, or choose a new output folder"
        )
    return manifest


def _present_files(store: Any, root: str, uri: str) -> dict[str, int]:
    """What OUTPUT holds (relative path → size), after recovery or orphan clean-up; for
    a local folder without a manifest, only its first file."""
    if store.kind == "object":
        _check_bucket(store, root, uri)
    else:
        recover(uri, _store=(store, root))
    kind = store.stat(root)
    if kind == "file":
        raise OutputError(f"output {uri} is a file, not a folder: choose a folder")
    if kind == "dir" and store.kind == "local" and MANIFEST not in store.listdir(root):
        files = _first_file(root)
    else:
        files = store.files(root) if kind == "dir" else {}
    if store.kind == "object":
        files = _clean_orphans(store, root, uri, files)
    return files


def _legacy_manifest(store: Any, root: str, uri: str, files: dict[str, int]) -> Manifest | None:
    """An output of fruitlens before manifests (empty ``_SUCCESS``), recognised by its
    ``_summary.json`` and a layout of only the files fruitlens/Spark wrote there;
    None for anything else."""
    if SUMMARY_FILE not in files or files.get(MANIFEST, 0) != 0:
        return None
    try:
        summary = json.loads(store.read(store.join(root, SUMMARY_FILE)).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(summary, dict) or not _LEGACY_SUMMARY_KEYS <= set(summary):
        return None
    if not all(_LEGACY_FILE.fullmatch(rel) for rel in files):
        return None
    listed = {rel: {"size": size} for rel, size in files.items() if rel != MANIFEST}
    return Manifest(uri=uri, run_id="legacy", created="", files=listed, aliases={})


def _check_bucket(store: Any, root: str, uri: str) -> None:
    bucket = root.split("/", 1)[0]
    if "/" not in root:
        raise OutputError(
            f"output {uri} is a whole bucket: fruitlens writes into a folder inside "
            f"it, e.g. {uri.rstrip('/')}/fruitlens-output"
        )
    try:
        kind = store.stat(bucket)
    except OSError as exc:
        raise OutputError(f"cannot access the output bucket {bucket!r}: {first_line(exc)}") from exc
    if kind == "missing":
        raise OutputError(
            f"the output bucket {bucket!r} does not exist (or is not visible with these "
            f"credentials): create it first, e.g. `aws s3 mb s3://{bucket}`"
        )


def _clean_orphans(store: Any, root: str, uri: str, files: dict[str, int]) -> dict[str, int]:
    """Object stores: delete files of fruitlens's naming that no manifest lists
    (left by a killed run), but only when nothing foreign is there; return the rest."""
    listed: set[str] = set()
    if MANIFEST in files:
        manifest = parse_manifest(store.read(store.join(root, MANIFEST)), uri)
        if manifest is None:
            return files
        listed = set(manifest.files) | set(manifest.aliases) | {MANIFEST}
    own = set(listed and (PCA_FILE, SUMMARY_FILE))  # an earlier run's fixed-name copies
    orphans = [
        rel for rel in files if rel not in listed and (_OWN_OBJECT.fullmatch(rel) or rel in own)
    ]
    if any(rel not in listed and rel not in orphans for rel in files):
        return files  # foreign files: prepare() refuses, nothing is deleted
    for rel in orphans:
        store.delete_file(store.join(root, rel))
    return {rel: size for rel, size in files.items() if rel in listed}
