"""``fruitlens stream INPUT OUTPUT --pca PCA.json``: featurize images as they arrive,
exactly once across restarts.

A micro-batch loop on the driver, with its own source and sink, on local folders or
object stores (``s3://``, ``gs://``: INPUT, OUTPUT and the checkpoint each either):

* source: every trigger INPUT is listed (as ``fruitlens run`` lists it); a file
  is taken once it has *settled*: listed twice with the same size and modification
  time, that time at least ``--settle`` seconds old. A file being written is left for a
  later trigger instead of being read truncated (Spark's file source would take it
  once, half-written, and never again);
* plan: the batch's files (path, label, size, mtime) are written to
  ``CHECKPOINT/plans/<id>.json`` (atomically) before any work: a file is in at most
  one plan, ever;
* work: Spark featurizes them (``fetch_from="path"``) and projects with the PCA;
* sink: the rows are written to ``OUTPUT/part-<id>.parquet`` all or nothing (locally a
  hidden temporary file renamed into place; on object stores one PUT), then
  ``CHECKPOINT/commits/<id>`` is written. A plan without a commit (a crash) is run
  again first, with the same files, and its part replaces the one a crash may have
  published: each file gives one row, once.

Checkpoint files and parts are written whole (:meth:`LocalStore.write`,
:meth:`ArrowStore.write`), so an object store needs no rename.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _session, _uri
from . import spark as fl_spark
from ._common import sha256_bytes
from ._errors import CLIError, FruitlensError
from ._faults import kill_point
from ._lineage import OUTPUT_COLUMNS, OUTPUT_SCHEMA, from_micros, to_micros
from ._listing import ImageRef
from ._logs import PROG, open_run_log
from ._native_embed import list_input
from ._pca import PCA
from ._preflight import check_input, check_model, local_path
from ._session import SqlConf, check_master_remote
from .output import check_paths
from .output._stores import store_for
from .spark._featurize import featurize_refs

__all__ = ["CHECKPOINT_DIR", "Checkpoint", "StreamConfig", "run_stream", "settled"]

#: The default checkpoint folder, inside OUTPUT (``_``: Parquet readers skip it).
CHECKPOINT_DIR = "_checkpoint"


@dataclass(frozen=True)
class StreamConfig:
    """The options of ``fruitlens stream``."""

    input: str
    output: str
    pca: str
    model: str | None = None
    size: int | None = None
    checkpoint: str | None = None
    trigger: float = 10.0
    settle: float = 2.0
    max_files_per_trigger: int | None = None
    once: bool = False
    master: str | None = None
    remote: str | None = None
    batch_size: int = 32
    threads: int | None = None
    verbose: bool = False


def _ref_json(r: ImageRef) -> list[Any]:
    return [r.path, r.label, r.size, to_micros(r.modified)]


def _ref_of(row: list[Any]) -> ImageRef:
    path, label, size, micros = row
    return ImageRef(path, label, size, from_micros(micros))


class Checkpoint:
    """``plans/<id>.json`` (the files of batch ``id``), ``commits/<id>`` (its part is
    published) and ``stream.json`` (INPUT, OUTPUT, PCA: a restart must match them),
    under ``root`` in ``store`` (a local folder or an object store prefix)."""

    def __init__(self, store: Any, root: str, meta: dict[str, str]) -> None:
        self.store, self.root = store, root
        if store.kind == "local":
            for sub in ("plans", "commits"):
                os.makedirs(os.path.join(root, sub), exist_ok=True)
        meta_path = store.join(root, "stream.json")
        if store.stat(meta_path) == "file":
            old = json.loads(store.read(meta_path).decode("utf-8"))
            if old != meta:
                diff = ", ".join(k for k in meta if old.get(k) != meta[k])
                raise CLIError(
                    f"checkpoint {root} belongs to another stream (different {diff}); "
                    "use another --checkpoint (and OUTPUT) for it"
                )
        else:
            store.write(meta_path, json.dumps(meta, indent=1).encode())
        self.plans = self._ids("plans", ".json")
        self.commits = self._ids("commits", "")
        self.planned: set[str] = set()
        for bid in self.plans:
            self.planned.update(r.path for r in self.files(bid))

    def _ids(self, sub: str, suffix: str) -> set[int]:
        names = self.store.files(self.store.join(self.root, sub))
        return {
            int(n[: len(n) - len(suffix)])
            for n in names
            if n.endswith(suffix) and n[: len(n) - len(suffix)].isdigit()
        }

    def _path(self, sub: str, name: str) -> str:
        return self.store.join(self.store.join(self.root, sub), name)

    def files(self, bid: int) -> list[ImageRef]:
        body = json.loads(self.store.read(self._path("plans", f"{bid}.json")).decode("utf-8"))
        return [_ref_of(row) for row in body["files"]]

    def pending(self) -> list[int]:
        """Planned batches without a commit (a crash interrupted them), in order."""
        return sorted(self.plans - self.commits)

    def plan(self, refs: list[ImageRef]) -> int:
        bid = max(self.plans, default=-1) + 1
        body = {"batch": bid, "files": [_ref_json(r) for r in refs]}
        self.store.write(self._path("plans", f"{bid}.json"), json.dumps(body).encode())
        self.plans.add(bid)
        self.planned.update(r.path for r in refs)
        return bid

    def commit(self, bid: int, rows: int) -> None:
        self.store.write(self._path("commits", str(bid)), f"{rows}\n".encode())
        self.commits.add(bid)


def settled(ref: ImageRef, before: dict[str, tuple[int, Any]], now: float, settle: float) -> bool:
    """Whether a listed file can be taken: listed before with the same size and mtime,
    and that mtime at least ``settle`` seconds before ``now`` (unlistable entries, with
    an ``error``, at once: they become error rows)."""
    if ref.error is not None:
        return True
    if ref.modified is None or before.get(ref.path) != (ref.size, ref.modified):
        return False
    return now - ref.modified.timestamp() >= settle


def _part_name(bid: int) -> str:
    return f"part-{bid:06d}.parquet"


def _featurize_batch(
    spark: Any, config: StreamConfig, model: str, pca_text: str, refs: list[ImageRef]
) -> pa.Table:
    """The output rows of ``refs`` (featurized and projected by Spark), in their order."""
    feats = featurize_refs(
        spark,
        refs,
        model=model,
        size=config.size,
        batch_size=config.batch_size,
        threads=config.threads,
    )
    out = fl_spark.transform_pca(feats, pca_text).select(*OUTPUT_COLUMNS)
    with SqlConf(spark, {"spark.sql.session.timeZone": "UTC"}):
        batches = list(fl_spark.collect_arrow_batches(out))
    table = pa.Table.from_batches(batches) if batches else OUTPUT_SCHEMA.empty_table()
    order = {r.path: i for i, r in enumerate(refs)}
    paths = table.column("path").to_pylist()
    if sorted(paths) != sorted(order):  # never publish a batch that lost or repeated a row
        raise FruitlensError(f"a batch of {len(refs)} files gave {len(paths)} rows; not committed")
    keys = pa.array([order[p] for p in paths])
    return table.take(pc.sort_indices(keys)).cast(OUTPUT_SCHEMA)


def _publish(store: Any, output: str, bid: int, table: pa.Table) -> None:
    """Write batch ``bid``'s part all or nothing (a re-run of the batch replaces it):
    locally under a hidden name renamed into place, on object stores one PUT."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    store.write(store.join(output, _part_name(bid)), sink.getvalue().to_pybytes())


class _Stream:
    """The loop's state: the checkpoint, the previous listing, the session."""

    def __init__(
        self, config: StreamConfig, spark: Any, model: str, pca_text: str, ckpt: Checkpoint
    ) -> None:
        self.config, self.spark, self.model, self.pca_text = config, spark, model, pca_text
        self.ckpt = ckpt
        self.before: dict[str, tuple[int, Any]] = {}
        self.store, self.output = store_for(config.output)
        self.input = _listable(config.input)

    def run_batch(self, bid: int, refs: list[ImageRef]) -> None:
        t0 = time.time()
        kill_point("stream-batch")
        table = _featurize_batch(self.spark, self.config, self.model, self.pca_text, refs)
        _publish(self.store, self.output, bid, table)
        kill_point("stream-published")
        self.ckpt.commit(bid, table.num_rows)
        done = time.time()
        errors = table.num_rows - table.column("error").null_count
        oldest = min((r.modified.timestamp() for r in refs if r.modified), default=done)
        print(
            f"{PROG}: batch {bid}: {table.num_rows} rows, {errors} errors, latency "
            f"{done - oldest:.2f} s (oldest file's mtime -> commit), {done - t0:.2f} s processing",
            file=sys.stderr,
            flush=True,
        )

    def poll(self) -> tuple[list[ImageRef], int]:
        """``(files to take now, files seen but not settled yet)``."""
        now = time.time()
        try:  # local paths as file: URIs, as `fruitlens run` writes them
            listed = list_input(self.input)
        except (OSError, FruitlensError) as exc:
            print(f"{PROG}: warning: cannot list {self.config.input}: {exc}", file=sys.stderr)
            return [], 1
        new = [r for r in listed if r.path not in self.ckpt.planned]
        ready = [r for r in new if settled(r, self.before, now, self.config.settle)]
        self.before = {r.path: (r.size, r.modified) for r in new}
        limit = self.config.max_files_per_trigger
        taken = ready[:limit] if limit else ready
        return taken, len(new) - len(taken)

    def loop(self) -> int:
        rows = 0
        for bid in self.ckpt.pending():  # interrupted batches first, same files
            refs = self.ckpt.files(bid)
            self.run_batch(bid, refs)
            rows += len(refs)
        while True:
            start = time.monotonic()
            refs, waiting = self.poll()
            if refs:
                self.run_batch(self.ckpt.plan(refs), refs)
                rows += len(refs)
            if self.config.once and not refs and not waiting:
                return rows
            pause = self.config.trigger
            if self.config.once:  # nothing to wait for but files to settle
                pause = min(pause, max(self.config.settle, 0.5))
            time.sleep(max(0.0, pause - (time.monotonic() - start)))


def _listable(uri: str) -> str:
    """What :func:`list_input` lists: a local folder's absolute path, or the URI (no
    trailing ``/``: ``s3://b/in/`` is ``s3://b/in``)."""
    return local_path(uri) if _uri.is_local(uri) else uri.rstrip("/")


def _load_pca(path: str) -> str:
    """The JSON of the fruitlens PCA file ``path`` (local, or on an object store;
    checked: 1280 features)."""
    try:
        if _uri.is_local(path):
            pca = PCA.load(local_path(path))
        else:
            store, key = store_for(path)
            pca = PCA.from_json(store.read(key).decode("utf-8"))
    except (OSError, ValueError, KeyError, FruitlensError) as exc:
        raise CLIError(f"cannot read the PCA {path}: {exc}") from None
    dim = pca.components_.shape[1]
    if dim != fl_spark.FEATURE_DIM:
        raise CLIError(f"the PCA {path} is for {dim} features, not {fl_spark.FEATURE_DIM}")
    return pca.to_json()


def _check_output(store: Any, output: str, checkpoint: str) -> None:
    """OUTPUT holds only this stream's parts (and its checkpoint), or is new."""
    kind = store.stat(output)
    if kind == "missing":
        return
    if kind != "dir":
        raise CLIError(f"output exists and is not a folder: {output}")
    names = {rel.split("/", 1)[0] for rel in store.files(output)}
    if store.kind == "local":  # empty folders too
        names.update(os.listdir(output))
    names = {n for n in names if not n.startswith(".")}
    foreign = [n for n in names if not (n.startswith("part-") and n.endswith(".parquet"))]
    foreign = [n for n in foreign if store.join(output, n) != checkpoint]
    started = store.stat(store.join(checkpoint, "stream.json")) == "file"
    if foreign or (names and not started):
        raise CLIError(
            f"output exists and is not this stream's output: {output} (a stream writes a "
            "new folder, or the one it wrote with the same --checkpoint)"
        )


def prepare(config: StreamConfig) -> tuple[str, str, Checkpoint]:
    """The checks that need no Spark: ``(model, PCA JSON, checkpoint)``."""
    check_master_remote(config.master, config.remote)
    for name, uri in (("INPUT", config.input), ("OUTPUT", config.output)):
        if not (_uri.is_local(uri) or _uri.scheme(uri) in _uri.OBJECT_SCHEMES):
            where = "a local folder or an object store prefix (s3://, gs://)"
            raise CLIError(f"{name} must be {where}, got {uri}")
    if _uri.is_local(config.input) and not os.path.isdir(local_path(config.input)):
        raise CLIError(f"input folder does not exist: {config.input}")
    check_input(config.input, config.output)
    store, output = store_for(config.output)
    checkpoint_uri = config.checkpoint or _uri.join(config.output, CHECKPOINT_DIR)
    check_paths(config.input, checkpoint_uri)  # never inside INPUT
    ckpt_store, checkpoint = store_for(checkpoint_uri)
    _check_output(store, output, checkpoint)
    pca_text = _load_pca(config.pca)
    model, _size = check_model(config.model, config.size)
    if store.kind == "local":
        os.makedirs(output, exist_ok=True)
        for name in os.listdir(output):  # what a crash left half-written
            if name.startswith(".part-") and name.endswith(".tmp"):
                os.remove(os.path.join(output, name))
    pca_sha = sha256_bytes(pca_text.encode())
    out_id = local_path(config.output) if store.kind == "local" else config.output.rstrip("/")
    meta = {"input": _listable(config.input), "output": out_id, "pca_sha256": pca_sha}
    return model, pca_text, Checkpoint(ckpt_store, checkpoint, meta)


def run_stream(config: StreamConfig, spark: Any = None) -> int:
    """Run the stream until interrupted (``once``: until INPUT has nothing new);
    returns the rows written by this process."""
    model, pca_text, ckpt = prepare(config)
    log_file = open_run_log(config.verbose)
    created = False
    if spark is None:
        spark, created = _session.get_session(
            config.master, log_file=log_file, remote=config.remote, progress=False
        )
    try:
        return _Stream(config, spark, model, pca_text, ckpt).loop()
    finally:
        if created:
            _session.stop_session(spark)
