"""``fruitlens run INPUT OUTPUT --incremental``: update an existing output.

INPUT is listed again and diffed against the rows of the committed output at OUTPUT by
path, ``length`` and ``modificationTime`` (the lineage columns every run writes):

* **new** (a path the output does not have) and **changed** (another size or
  modification time) images are featurized, and projected with the saved PCA
  (``OUTPUT/_pca/pca.json``, kept byte for byte);
* **deleted** images (in the output, no longer listed) get no row in the new output;
* **kept** rows (unchanged) are copied as they are, failed ones included, except rows
  whose error is ``unreadable:`` (a transient I/O failure), which are **retried**;
* ``--refit``: the PCA is refitted on every row's features (the stored ones, not
  re-embedded, plus the new ones) and every row is re-projected.

The union is written and committed like a full run (:class:`fruitlens.output.OutputTarget`:
staging + one atomic switch), in listing order. Nothing new, changed, deleted or to retry
(and no ``--refit``): nothing is written, and :func:`run_incremental` returns a summary
with ``up_to_date`` and a one-line ``message``. Incremental runs use the native engine.

The diff and the merge are pure functions on Arrow tables (:func:`diff`, :func:`merge`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._common import IMAGE_EXTENSIONS
from ._errors import CLIError
from ._faults import kill_point
from ._listing import ImageRef
from ._native_embed import (
    LENGTH_TYPE,
    MTIME_TYPE,
    NativeProgress,
    featurize,
    list_input,
    worker_layout,
)
from ._native_run import OUTPUT_SCHEMA, _stage
from ._pca import PCA, PCAStats
from ._report import all_failed, run_summary
from .output import PCA_FILE, SUMMARY_FILE, OutputTarget

if TYPE_CHECKING:
    from .pipeline import RunConfig

__all__ = ["LINEAGE", "Diff", "diff", "listing_table", "merge", "run_incremental"]

#: The output's lineage columns: the source file's size and modification time.
LINEAGE = ("length", "modificationTime")
#: Columns of the old output read to diff against (its "index").
INDEX_COLUMNS = ["path", *LINEAGE, "error"]
#: Errors of this kind are retried (transient I/O); other failed rows are kept.
RETRIED_ERROR = "unreadable:"


# --------------------------------------------------------------------------------------
# The diff and the merge (pure)
# --------------------------------------------------------------------------------------


def listing_table(refs: list[ImageRef]) -> pa.Table:
    """``path, length, modificationTime`` of a listing, in its order."""
    return pa.table(
        {
            "path": pa.array([r.path for r in refs], pa.string()),
            "length": pa.array([r.size for r in refs], LENGTH_TYPE),
            "modificationTime": pa.array([r.modified for r in refs], MTIME_TYPE),
        }
    )


@dataclass
class Diff:
    """What an incremental run does with each listed image and each old row."""

    todo: list[int]  # listing positions to featurize: new, changed, retried (in order)
    kept: list[int]  # old row indices kept as they are
    kept_at: list[int]  # the listing position of each kept row
    new: int = 0
    changed: int = 0
    retried: int = 0
    deleted: int = 0

    @property
    def up_to_date(self) -> bool:
        """Nothing new, changed, deleted or to retry."""
        return not (self.todo or self.deleted)

    def counts(self, refit: bool) -> dict[str, Any]:
        """The summary's ``incremental`` object."""
        return {
            "new": self.new,
            "changed": self.changed,
            "deleted": self.deleted,
            "kept": len(self.kept),
            "retried": self.retried,
            "refit": refit,
        }


def diff(listing: pa.Table, old: pa.Table) -> Diff:
    """Diff a listing (``path, length, modificationTime``) against an output's index
    (``path, length, modificationTime, error``): an old row is kept when its path is
    listed with the same size and modification time and its error is not
    :data:`RETRIED_ERROR`; every other listed image is to featurize."""
    old_rows: dict[str, tuple[Any, Any, Any, int]] = {}
    for i, row in enumerate(zip(*(old.column(c).to_pylist() for c in INDEX_COLUMNS))):
        path, length, mtime, error = row
        old_rows[path] = (length, _micros(mtime), error, i)
    out = Diff([], [], [])
    seen = 0
    paths = listing.column("path").to_pylist()
    lengths = listing.column("length").to_pylist()
    mtimes = listing.column("modificationTime").cast(pa.int64()).to_pylist()
    for pos, (path, length, mtime) in enumerate(zip(paths, lengths, mtimes)):
        was = old_rows.get(path)
        if was is None:
            out.new += 1
            out.todo.append(pos)
            continue
        seen += 1
        old_length, old_mtime, error, index = was
        if (old_length, old_mtime) != (length, mtime):
            out.changed += 1
            out.todo.append(pos)
        elif error is not None and error.startswith(RETRIED_ERROR):
            out.retried += 1
            out.todo.append(pos)
        else:
            out.kept.append(index)
            out.kept_at.append(pos)
    out.deleted = len(old_rows) - seen
    return out


def _micros(value: Any) -> int | None:
    """A timestamp as integer microseconds since the epoch (None stays None)."""
    if value is None:
        return None
    return pa.scalar(value, MTIME_TYPE).cast(pa.int64()).as_py()


def merge(kept: pa.Table, kept_at: list[int], fresh: pa.Table, fresh_at: list[int]) -> pa.Table:
    """The kept rows and the freshly featurized ones (same schema), in listing order
    (``kept_at``/``fresh_at``: each row's listing position)."""
    table = pa.concat_tables([kept, fresh])
    positions = np.asarray([*kept_at, *fresh_at], dtype=np.int64)
    return table.take(pa.array(np.argsort(positions, kind="stable")))


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


class _Old:
    """The committed output an incremental run starts from."""

    def __init__(self, target: OutputTarget) -> None:
        manifest = target.previous
        assert manifest is not None
        self.store, self.root, self.uri = target.store, target.root, target.uri
        self.manifest = manifest
        self.fs = self.store.fs if self.store.kind == "object" else None

    def _read(self, rel: str) -> bytes:
        return self.store.read(self.store.join(self.root, rel))

    def summary(self) -> dict[str, Any]:
        try:
            summary = json.loads(self._read(self.manifest.summary_path).decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return summary if isinstance(summary, dict) else {}

    def pca_text(self) -> str:
        return self._read(self.manifest.pca_path).decode("utf-8")

    def parts(self) -> list[str]:
        return [self.store.join(self.root, rel) for rel in self.manifest.parts]

    def schema(self) -> pa.Schema | None:
        parts = self.parts()
        return pq.read_schema(parts[0], filesystem=self.fs) if parts else None

    def table(self, columns: list[str] | None = None) -> pa.Table:
        tables = [pq.read_table(p, columns=columns, filesystem=self.fs) for p in self.parts()]
        return pa.concat_tables(tables)


def _check_old(old: _Old, config: RunConfig, model: str, size: int | None) -> dict[str, Any]:
    """One-line errors before any work: an output without the lineage columns, or made
    with another model, size or resize mode. Returns its summary."""
    schema = old.schema()
    if schema is None or any(c not in schema.names for c in LINEAGE):
        raise CLIError(
            f"--incremental needs an output written by this version of fruitlens ({old.uri} "
            "has no length/modificationTime columns): run once without --incremental "
            "(--overwrite)"
        )
    summary = old.summary()
    for key, now in (("model", model), ("size", size), ("resize", config.resize)):
        then = summary.get(key)
        if then is not None and then != now:
            raise CLIError(
                f"--incremental: {old.uri} was made with {key} {then}, this run's {key} is "
                f"{now}: its features would not match; run without --incremental (--overwrite)"
            )
    return summary


def run_incremental(
    config: RunConfig,
    target: OutputTarget,
    model: str,
    size: int | None,
    t_start: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The incremental run (``target`` prepared over an existing output); returns the
    summary, or ``{"up_to_date": True, "message": ..., ...}`` when there is nothing to
    do (nothing written). On any failure what this run wrote is removed and the
    previous output stays."""
    stages: dict[str, float] = {}
    spill_dir = tempfile.mkdtemp(prefix="fruitlens-incremental-")
    try:
        old = _Old(target)
        _check_old(old, config, model, size)
        refs = list_input(config.input)
        if not refs:
            exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
            raise CLIError(
                f"no images found under {config.input} (looked for {exts} files, any case)"
            )
        changes = diff(listing_table(refs), old.table(INDEX_COLUMNS))
        if changes.up_to_date and not config.refit:
            target.abort()  # nothing was written; nothing is
            return _up_to_date(config, len(refs))
        todo = [refs[i] for i in changes.todo]
        with NativeProgress(len(todo), enabled=config.progress) as progress:
            with _stage("featurize", progress, stages):
                kill_point("featurize")
                fresh = _featurize(config, todo, spill_dir, model, progress)
            with _stage("pca_fit", progress, stages):
                kept = old.table().take(pa.array(changes.kept, pa.int64()))
                kept = kept.select(fresh.schema.names).cast(fresh.schema)
                pca, pca_text = _pca(config, old, kept, fresh)
            with _stage("transform_write", progress, stages):
                if config.refit:  # every row, with the refitted PCA
                    rows = _project(merge(kept, changes.kept_at, fresh, changes.todo), pca)
                else:  # the new rows only, with the saved PCA
                    fresh = _project(fresh, pca) if fresh.num_rows else fresh
                    rows = merge(kept, changes.kept_at, fresh, changes.todo)
                counts = _Counts.of(rows)
                if counts.errors == counts.images:
                    raise CLIError(all_failed(counts.images, counts.error_kinds, counts.samples))
                _write(config, target, rows, pca_text)
        summary = run_summary(
            config,
            model,
            size,
            counts,
            pca,
            stages,
            t_start,
            pca_statistics="stored features (refit)" if config.refit else "saved PCA",
            seconds_spark_start=None,
            master=None,
            spark_version=None,
            engine="native",
        )
        summary["incremental"] = changes.counts(config.refit)
        target.write_text(SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        target.commit()
        return summary
    except BaseException:
        target.abort()  # what this run wrote; never the previous output
        raise
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def _up_to_date(config: RunConfig, images: int) -> dict[str, Any]:
    message = (
        f"fruitlens: {config.output} is up to date ({images} images; nothing new, changed "
        f"or deleted under {config.input}): nothing written"
    )
    return {"up_to_date": True, "message": message, "images": images, "output": config.output}


def _featurize(
    config: RunConfig, todo: list[ImageRef], spill_dir: str, model: str, progress: Any
) -> pa.Table:
    """The new rows (``OUTPUT_SCHEMA``, ``pca`` null until projected) of ``todo``."""
    if not todo:
        return OUTPUT_SCHEMA.empty_table()
    feats = featurize(
        todo,
        os.path.join(spill_dir, "rows.arrow"),
        model=model,
        batch_size=config.batch_size,
        threads=config.threads,
        resize=config.resize,
        progress=progress,
    )
    batches = []
    for batch in feats.batches():
        path, label, features, error, length, mtime = batch.columns
        pca = pa.nulls(len(batch), OUTPUT_SCHEMA.field("pca").type)
        columns = [path, label, features.cast(OUTPUT_SCHEMA.field("features").type), pca]
        batches.append(
            pa.RecordBatch.from_arrays([*columns, error, length, mtime], schema=OUTPUT_SCHEMA)
        )
    return pa.Table.from_batches(batches, schema=OUTPUT_SCHEMA)


def _pca(config: RunConfig, old: _Old, kept: pa.Table, fresh: pa.Table) -> tuple[PCA, str]:
    """The saved PCA (its JSON kept byte for byte), or with ``--refit`` one fitted on
    the kept rows' stored features and the fresh ones."""
    if not config.refit:
        text = old.pca_text()
        return PCA.from_json(text), text
    stats: PCAStats | None = None
    for table in (kept, fresh):
        features = table.column("features").combine_chunks()
        if len(features) > features.null_count:
            dim = next(len(v) for v in features.to_pylist() if v is not None)
            stats = stats or PCAStats(dim)
            stats.update(features)
    if stats is None:
        raise CLIError(all_failed(kept.num_rows + fresh.num_rows, {}, {}))
    pca = PCA(config.k).fit_stats(stats)
    return pca, pca.to_json()


def _project(rows: pa.Table, pca: PCA) -> pa.Table:
    """``rows`` with ``pca`` = their features projected by ``pca`` (null for failed)."""
    index = rows.schema.get_field_index("pca")
    features = rows.column("features").combine_chunks()
    projected = pca.transform_arrow(features).cast(rows.schema.field("pca").type)
    return rows.set_column(index, rows.schema.field("pca"), projected)


@dataclass
class _Counts:
    """What ``run_summary`` counts over the new output's rows."""

    images: int
    errors: int
    features: int
    error_kinds: dict[str, int]
    samples: dict[str, str]

    @classmethod
    def of(cls, rows: pa.Table) -> _Counts:
        errors = [e for e in rows.column("error").to_pylist() if e is not None]
        kinds: dict[str, int] = {}
        samples: dict[str, str] = {}
        for error in errors:
            kind = error.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            samples[kind] = min(samples.get(kind, error), error)
        n = rows.num_rows
        return cls(n, len(errors), n - rows.column("features").null_count, kinds, samples)


def _write(config: RunConfig, target: OutputTarget, rows: pa.Table, pca_text: str) -> None:
    """The rows as a few Parquet parts (as a full native run), then the PCA."""
    parts = config.partitions or worker_layout(config.threads)[0]
    rows_per_file = max(1, -(-rows.num_rows // parts))
    target.write_parquet(
        rows.to_batches(max_chunksize=4096), schema=OUTPUT_SCHEMA, rows_per_file=rows_per_file
    )
    target.write_text(PCA_FILE, pca_text)
