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
staging + one atomic switch). Old parts whose rows are all kept stay as they are
(``OutputTarget.reuse``: a hard link, or the same object; ``parts_reused`` in the
summary) unless ``--refit`` or smaller than half a full run's part; the other kept rows
and the new ones are written as new parts, in listing order. Nothing new, changed,
deleted or to retry (and no ``--refit``): nothing is written, and
:func:`run_incremental` returns the output's summary with ``up_to_date`` and a
one-line ``message``. The new images are embedded on this machine (the native
engine's featurize pass) or, given a classic Spark session, by its tasks
(:func:`fruitlens._incremental_spark.featurize_on_spark`); listing, diff, merge and
commit run here either way.

The diff and the merge are pure functions (:mod:`fruitlens._lineage`); the old output
is streamed and the new rows spilled, so memory stays bounded as in a full run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._common import IMAGE_EXTENSIONS
from ._errors import CLIError
from ._faults import kill_point
from ._incremental_spark import LazySession, featurize_on_spark
from ._lineage import (
    INDEX_COLUMNS,
    LINEAGE,
    OUTPUT_SCHEMA,
    Diff,
    Positioned,
    diff,
    gather,
    listing_table,
    merge,
)
from ._listing import ImageRef
from ._native_embed import (
    Featurized,
    NativeProgress,
    featurize,
    list_input,
    rows_per_part,
)
from ._pca import PCA, PCAStats
from ._progress import stage
from ._report import RunCounts, all_failed, run_summary
from .output import PCA_FILE, OutputTarget
from .spark import _connect as fl_connect

if TYPE_CHECKING:
    from .pipeline import RunConfig

__all__ = ["run_incremental"]

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
        #: Rows and Arrow schema of each part, in :meth:`parts` order (set by :meth:`table`).
        self.part_rows: list[int] = []
        self.part_schemas: list[pa.Schema] = []

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

    def _open(self, part: str) -> pq.ParquetFile:
        # (not pq.read_table: it imports pyarrow.dataset, and pandas, 0.4 s)
        return pq.ParquetFile(self.fs.open_input_file(part) if self.fs is not None else part)

    def table(self, columns: list[str]) -> pa.Table:
        """``columns`` of every row, in the parts' order (and :attr:`part_rows`)."""
        tables, self.part_schemas = [], []
        for part in self.parts():
            with self._open(part) as parquet:
                tables.append(parquet.read(columns=columns))
                self.part_schemas.append(parquet.schema_arrow)
        self.part_rows = [len(t) for t in tables]
        return pa.concat_tables(tables)

    def part_batches(self, index: int) -> Iterator[pa.RecordBatch]:
        """The rows of part ``index``, in order."""
        with self._open(self.parts()[index]) as parquet:  # row groups hold <= 32 MB
            for group in range(parquet.metadata.num_row_groups):
                yield from parquet.read_row_group(group).to_batches()


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
        if key == "model" and isinstance(then, str) and _same_file(then, model):
            continue
        if then is not None and then != now:
            raise CLIError(
                f"--incremental: {old.uri} was made with {key} {then}, this run's {key} is "
                f"{now}: its features would not match; run without --incremental (--overwrite)"
            )
    return summary


def _same_file(a: str, b: str) -> bool:
    """The same model file under two names (a link, a relative path), or the same name."""
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def run_incremental(
    config: RunConfig,
    target: OutputTarget,
    model: str,
    size: int | None,
    t_start: float,
    say: Callable[[str], None],
    spark: LazySession | None = None,
) -> dict[str, Any]:
    """The incremental run (``target`` prepared over an existing output; given
    ``spark``, the new images are featurized by its tasks, its session started only
    then); returns the summary,
    or when there is nothing to do (nothing written) the committed output's summary
    with ``"up_to_date": True`` and a one-line ``"message"``. Memory stays bounded (old
    parts streamed, new rows spilled). On any failure what this run wrote is removed
    and the previous output stays."""
    stages: dict[str, float] = {}
    spill_dir = tempfile.mkdtemp(prefix="fruitlens-incremental-")
    try:
        old = _Old(target)
        previous = _check_old(old, config, model, size)
        refs, index, changes = _changes(config, old)
        if changes.up_to_date and not config.refit:
            target.abort()  # nothing was written; nothing is
            return _up_to_date(config, changes, previous)
        todo = [refs[i] for i in changes.todo]
        kept_at = np.full(index.num_rows, -1, np.int64)  # old row -> listing position
        kept_at[np.asarray(changes.kept, np.int64)] = np.asarray(changes.kept_at, np.int64)
        with NativeProgress(len(todo), enabled=config.progress) as progress:
            with stage("featurize", progress, stages):
                kill_point("featurize")
                spill = os.path.join(spill_dir, "rows.arrow")
                fresh = _featurize(config, todo, spill, model, progress, spark)
            counts = RunCounts.of(index.column("error"), changes.kept, fresh)
            if counts.errors == counts.images:
                raise CLIError(all_failed(counts.images, counts.error_kinds, counts.samples))
            with stage("pca_fit", progress, stages):
                pca, pca_text = _pca(config, old, kept_at, fresh)
            with stage("transform_write", progress, stages):
                rows_per_file = rows_per_part(counts.images, config.partitions, config.threads)
                reused = _reusable(config, old, kept_at, rows_per_file)
                for index in reused:  # whole parts, unchanged: not rewritten
                    target.reuse(old.manifest.parts[index])
                kept_rows = _kept(old, kept_at, skip=set(reused))
                if config.refit:  # every row, with the refitted PCA
                    kept_rows = _projected(kept_rows, pca)
                fresh_rows = _projected(_fresh(fresh, changes.todo), pca)
                target.write_parquet(
                    merge(kept_rows, fresh_rows), schema=OUTPUT_SCHEMA, rows_per_file=rows_per_file
                )
                target.write_text(PCA_FILE, pca_text)
        summary = _summary(config, model, size, counts, pca, stages, t_start, spark)
        summary["incremental"] = {**changes.counts(config.refit), "parts_reused": len(reused)}
        target.commit_run(summary)
        return summary
    except BaseException:
        target.abort()  # what this run wrote; never the previous output
        raise
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def _changes(config: RunConfig, old: _Old) -> tuple[list[ImageRef], pa.Table, Diff]:
    """The listing, the old output's index and the diff of the two."""
    refs = list_input(config.input)
    if not refs:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise CLIError(f"no images found under {config.input} (looked for {exts} files, any case)")
    index = old.table(INDEX_COLUMNS)
    return refs, index, diff(listing_table(refs), index)


def _summary(
    config: RunConfig,
    model: str,
    size: int | None,
    counts: RunCounts,
    pca: PCA,
    stages: dict[str, float],
    t_start: float,
    spark: LazySession | None = None,
) -> dict[str, Any]:
    """A full run's ``_summary.json`` keys (the caller adds ``incremental``)."""
    session = spark.spark if spark is not None else None  # None: never started
    return run_summary(
        config,
        model,
        size,
        counts,
        pca,
        stages,
        t_start,
        pca_statistics="stored features (refit)" if config.refit else "saved PCA",
        seconds_spark_start=None,
        master=None if session is None else fl_connect.master(session),
        spark_version=None if session is None else session.version,
        spark_connect=session is not None and fl_connect.is_connect(session),
        engine="native" if spark is None else "spark",
    )


def _up_to_date(config: RunConfig, changes: Diff, previous: dict[str, Any]) -> dict[str, Any]:
    """The committed output's summary (it is this run's result), with ``up_to_date``,
    a one-line ``message`` and this run's ``incremental`` counts."""
    images = len(changes.kept)  # nothing new, changed, retried or deleted: every row
    message = (
        f"fruitlens: {config.output} is up to date ({images} images; nothing new, changed "
        f"or deleted under {config.input}): nothing written"
    )
    return {
        **previous,
        "up_to_date": True,
        "message": message,
        "images": images,
        "output": config.output,
        "incremental": changes.counts(refit=False),
    }


def _featurize(
    config: RunConfig,
    todo: list[ImageRef],
    spill: str,
    model: str,
    progress: Any,
    spark: LazySession | None,
) -> Featurized | None:
    """The featurize pass over ``todo`` (spilled, PCA statistics gathered), or None;
    on Spark's tasks given a session."""
    if not todo:
        return None
    if spark is not None:
        return featurize_on_spark(spark(), config, todo, spill, model, progress)
    return featurize(
        todo,
        spill,
        model=model,
        batch_size=config.batch_size,
        threads=config.threads,
        resize=config.resize,
        progress=progress,
    )


_PCA_TYPE = OUTPUT_SCHEMA.field("pca").type
_FEATURES_TYPE = OUTPUT_SCHEMA.field("features").type


def _fresh(fresh: Featurized | None, todo: list[int]) -> Positioned:
    """The featurized rows as ``OUTPUT_SCHEMA`` (``pca`` null until projected), with
    their listing positions."""
    if fresh is None:
        return
    offset = 0
    for batch in fresh.batches():
        path, label, features, error, length, mtime = batch.columns
        columns = [path, label, features.cast(_FEATURES_TYPE), pa.nulls(len(batch), _PCA_TYPE)]
        columns += [error, length, mtime]
        rows = pa.RecordBatch.from_arrays(columns, schema=OUTPUT_SCHEMA)
        yield rows, np.asarray(todo[offset : offset + len(batch)], np.int64)
        offset += len(batch)


def _kept(old: _Old, kept_at: np.ndarray, skip: set[int] | None = None) -> Positioned:
    """The old output's kept rows, as stored (``OUTPUT_SCHEMA``), part by part (but the
    parts in ``skip``), with their listing positions."""
    offset = 0
    for index, rows_in_part in enumerate(old.part_rows):
        if skip and index in skip:
            offset += rows_in_part
            continue
        for batch in old.part_batches(index):
            positions = kept_at[offset : offset + len(batch)]
            offset += len(batch)
            keep = np.flatnonzero(positions >= 0)
            batch = batch.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
            start = 0
            for rows in gather(batch, keep):  # slices: a few dropped rows copy nothing
                yield rows, positions[keep[start : start + len(rows)]]
                start += len(rows)


def _reusable(config: RunConfig, old: _Old, kept_at: np.ndarray, rows_per_file: int) -> list[int]:
    """The old parts kept as they are: every row kept (none deleted, changed or
    retried), no ``--refit``, the schema this run writes, and at least half a full
    part (smaller ones are rewritten with the new rows, so that a folder that grows
    run after run does not end up in many small parts)."""
    if config.refit:
        return []
    reused, offset = [], 0
    for index, rows_in_part in enumerate(old.part_rows):
        whole = bool((kept_at[offset : offset + rows_in_part] >= 0).all())
        offset += rows_in_part
        schema = old.part_schemas[index]
        if whole and 2 * rows_in_part >= rows_per_file:
            if schema.equals(OUTPUT_SCHEMA, check_metadata=False):
                reused.append(index)
    return reused


def _projected(rows: Positioned, pca: PCA) -> Positioned:
    """``rows`` with ``pca`` = their features projected by ``pca`` (null for failed)."""
    index = OUTPUT_SCHEMA.get_field_index("pca")
    for batch, positions in rows:
        projected = pca.transform_arrow(batch.column("features")).cast(_PCA_TYPE)
        yield batch.set_column(index, OUTPUT_SCHEMA.field("pca"), projected), positions


def _pca(
    config: RunConfig, old: _Old, kept_at: np.ndarray, fresh: Featurized | None
) -> tuple[PCA, str]:
    """The saved PCA (its JSON kept byte for byte), or with ``--refit`` one fitted on
    the kept rows' stored features (a pass over the old output) and the fresh ones
    (gathered while featurizing)."""
    if not config.refit:
        text = old.pca_text()
        return PCA.from_json(text), text
    stats = fresh.stats if fresh is not None else None
    for batch, _ in _kept(old, kept_at):
        features = batch.column("features")
        if len(features) > features.null_count:
            if stats is None:
                stats = PCAStats(len(features.drop_null()[0]))
            stats.update(features)
    assert stats is not None  # not every row failed (checked before)
    pca = PCA(config.k).fit_stats(stats)
    return pca, pca.to_json()
