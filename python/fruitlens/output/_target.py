"""One run's output: prepare (checks before any work), write, commit (or abort).

See :mod:`fruitlens.output` for the protocol.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .._common import sha256_bytes
from .._errors import OutputError
from .._faults import kill_point
from .._manifest import MANIFEST, PCA_FILE, SMALL, SUMMARY_FILE, Manifest, manifest_bytes
from ._existing import check_local_place, existing_output, probe_staging
from ._parts import dictionary_columns, write_parts
from ._read import verify
from ._recover import OLD_TAG, STAGING_TAG, parent_and_stem
from ._stores import store_for

__all__ = ["OutputTarget"]


class OutputTarget:
    """One run's output: :meth:`prepare`, write (parts, :meth:`write_text`), then
    :meth:`commit` (or :meth:`abort`). See :mod:`fruitlens.output` for the protocol."""

    def __init__(self, uri: str, *, spark: Any = None, io: str = "auto") -> None:
        self.uri = uri
        self.store, self.root = store_for(uri, spark, io)
        self.run_id = uuid.uuid4().hex
        self.staged = self.store.kind != "object"
        self._old: Manifest | None = None
        self._written: list[str] = []  # object stores: files this run wrote
        self._reused: list[str] = []  # object stores: the previous output's, kept
        self._aliases: dict[str, str] = {}
        self._committed = False  # object stores: the manifest PUT happened
        if self.staged:
            parent, name = self._parent_name()
            self.staging = self.store.join(parent, f".{name}{STAGING_TAG}{self.run_id}")
        else:
            self.staging = self.root

    def _parent_name(self) -> tuple[str, str]:
        """(parent, stem of the hidden sibling folders' names)."""
        return parent_and_stem(self.store, self.root)

    def _old_copy(self) -> str:
        """Where the two-rename fallback moves the old output: ``.NAME.fruitlens-old-<run>``."""
        parent, name = self._parent_name()
        return self.store.join(parent, f".{name}{OLD_TAG}{self.run_id}")

    # -- where the writers write ----------------------------------------------------

    @property
    def data_uri(self) -> str:
        """Where the Parquet parts go (a Spark/Hadoop URI for the staging folder, or
        OUTPUT itself on an object store)."""
        if self.store.kind == "local":
            return "file:" + self.staging
        if self.store.kind == "hadoop":
            return self.staging
        return self.uri

    def _path(self, rel: str) -> str:
        return self.store.join(self.staging, rel)

    def _at_root(self, rel: str) -> str:
        return self.store.join(self.root, rel)

    # -- checks and clean-up before any work -----------------------------------------

    def prepare(self, *, overwrite: bool) -> None:
        """Check that the output can be written (before any work); recover or clean up
        what an interrupted earlier run left. Raises :class:`OutputError`."""
        if self.store.kind == "local":
            check_local_place(self.uri, self.root)
        self._old = existing_output(self.store, self.root, self.uri, overwrite=overwrite)
        if self.store.kind == "local":
            probe_staging(self.uri, self.staging)

    @property
    def previous(self) -> Manifest | None:
        """The manifest of the output this run replaces (after :meth:`prepare`), or None."""
        return self._old

    # -- writing --------------------------------------------------------------------

    def part_name(self, index: int) -> str:
        return f"part-{index:05d}-{self.run_id}.parquet"

    def write_parquet(
        self,
        batches: Iterable[Any],
        *,
        schema: Any = None,
        rows_per_file: int = 1_000_000,
        compression: str = "zstd",
    ) -> list[str]:
        """Write Arrow batches as Parquet parts of this run (streamed); returns their
        relative paths."""
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
        fs = self._arrow_fs()
        names: list[str] = []

        def open_file(file_schema: Any) -> Any:
            name = self.part_name(len(names))
            names.append(name)
            self._written.append(name)
            return pq.ParquetWriter(
                self._path(name),
                file_schema,
                filesystem=fs,
                compression=compression,
                use_dictionary=dictionary_columns(file_schema),
            )

        if self.store.kind == "local":
            self.store.mkdirs(self.staging)
        write_parts(batches, open_file, schema=schema, rows_per_file=rows_per_file)
        kill_point("parts-written")
        return names

    def reuse(self, rel: str) -> None:
        """Make the previous output's file ``rel`` (a Parquet part, unchanged) a file of
        this run as it is, without rewriting it: a hard link in the staging folder (a
        copy where the filesystem has none); on object stores the object stays where it
        is, listed in this run's manifest (so the commit does not delete it; an abort
        never does)."""
        if self._old is None or rel not in self._old.files:
            raise OutputError(f"{self.uri}: {rel} is not a file of the previous output")
        if self.store.kind == "object":
            self._reused.append(rel)
            return
        if self.store.kind != "local":
            raise OutputError(f"{self.uri}: parts are reused on local folders and object stores")
        path = self._path(rel)
        self.store.mkdirs(os.path.dirname(path))
        self.store.link(self._at_root(rel), path)

    def _arrow_fs(self) -> Any:
        if self.store.kind == "object":
            return self.store.fs
        if self.store.kind == "local":
            return pafs.LocalFileSystem()
        raise OutputError("the arrow writer cannot write to a Hadoop filesystem: use Spark")

    def write_text(self, rel: str, text: str) -> None:
        """Write a small file of the output (``_pca/pca.json``, ``_summary.json``)."""
        if self.store.kind == "object" and rel in (PCA_FILE, SUMMARY_FILE):
            stem, ext = posixpath.splitext(rel)
            real = f"{stem}-{self.run_id}{ext}"
            self._aliases[rel] = real
            rel = real
        self._written.append(rel)
        self.store.write(self._path(rel), text.encode("utf-8"))

    # -- publishing -----------------------------------------------------------------

    def commit_run(self, summary: dict[str, Any]) -> Manifest:
        """Write a run's ``_summary.json``, then :meth:`commit`: OUTPUT switches to
        this run at once."""
        self.write_text(SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        return self.commit()

    def commit(self) -> Manifest:
        """Write the manifest (last), publish, delete the old output's files."""
        store = self.store
        entries = self._entries()
        alias_sha = {alias: entries[real]["sha256"] for alias, real in self._aliases.items()}
        kill_point("before-manifest")
        store.write(self._path(MANIFEST), manifest_bytes(self.run_id, entries, self._aliases))
        self._committed = not self.staged  # object stores: this run's files are OUTPUT now
        if self.staged:
            if store.kind == "local":
                store.sync_dir(self.staging)
            kill_point("before-swap")
            self._swap()
        else:
            kill_point("after-manifest")
            self._publish_objects(entries, alias_sha)
        return verify(self.uri, _store=(store, self.root))

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The manifest's ``files``: every file of this run, with its size (and sha256
        for the small JSON files)."""
        store = self.store
        if self.staged:
            for junk in (MANIFEST, "._SUCCESS.crc"):  # Spark's own empty marker
                if store.stat(self._path(junk)) != "missing":
                    store.delete_file(self._path(junk))
            files = store.files(self.staging) if store.stat(self.staging) == "dir" else {}
        else:
            every = store.files(self.root)
            ours = [*self._written, *self._reused]
            files = {rel: every[rel] for rel in ours if rel in every}
            missing = [rel for rel in ours if rel not in every]
            if missing:
                raise OutputError(f"{self.uri}: written files are missing: {missing[:3]}")
        entries: dict[str, dict[str, Any]] = {}
        for rel, size in files.items():
            entry: dict[str, Any] = {"size": size}
            if size <= SMALL and rel.endswith(".json"):
                entry["sha256"] = sha256_bytes(store.read(self._path(rel)))
            entries[rel] = entry
        return entries

    def _publish_objects(self, entries: dict[str, Any], alias_sha: dict[str, str]) -> None:
        """Object stores, after the manifest PUT: the fixed-name copies, then delete the
        old run's files."""
        store = self.store
        for alias, real in self._aliases.items():  # the fixed-name copies
            data = store.read(self._path(real))
            if sha256_bytes(data) == alias_sha[alias]:
                store.write(self._path(alias), data)
        kill_point("before-cleanup")
        if self._old is not None:
            keep = set(entries) | set(self._aliases) | {MANIFEST}
            for rel in sorted(set(self._old.files) | set(self._old.aliases)):
                if rel not in keep:
                    store.delete_file(self._at_root(rel))

    def _swap(self) -> None:
        store = self.store
        parent, _ = self._parent_name()
        if store.stat(self.root) == "missing":
            store.rename(self.staging, self.root)
            kill_point("after-swap")
            return
        if store.exchange(self.staging, self.root):
            if store.kind == "local":
                store.sync_dir(parent)
            kill_point("after-swap")
            store.delete_tree(self.staging)  # now the old output
            return
        old = self._old_copy()
        store.rename(self.root, old)
        kill_point("old-moved")
        store.rename(self.staging, self.root)
        kill_point("after-swap")
        store.delete_tree(old)

    def abort(self) -> None:
        """Remove what this run wrote (never anything else), unless it is already the
        committed output; put the old output back if this run had moved it away. Best
        effort."""
        try:
            if self.staged:
                if self.store.stat(self.staging) != "missing":
                    self.store.delete_tree(self.staging)
                old = self._old_copy()
                if self.store.stat(self.root) == "missing" and self.store.stat(old) != "missing":
                    self.store.rename(old, self.root)  # interrupted between the two renames
            elif not self._committed:
                for rel in self._written:
                    self.store.delete_file(self._path(rel))
        except Exception:  # clean-up must not hide the original error
            pass
