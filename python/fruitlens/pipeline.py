"""What ``fruitlens run`` does: read → featurize → PCA fit → transform → Parquet.

>>> from fruitlens.pipeline import RunConfig, run
>>> summary = run(RunConfig("images/", "out/", k=0.95, overwrite=True))

The steps, in order: :func:`check_inputs` (paths, output, model: everything that needs
no Spark), the Spark session, then three timed stages (:func:`stage`) — featurize
(read and embed once, cached, PCA statistics gathered on the way), PCA fit,
transform + write into the output's staging place — and the commit, which publishes
the output all at once (:mod:`fruitlens.output`) with its ``_summary.json``.

pyspark is imported only when the Spark stages run, so that ``fruitlens --help`` and the
early checks need no Spark. ``config.engine`` (``--engine``) picks the engine:
``native`` runs the same steps on this machine without Spark or Java
(:mod:`fruitlens._native_run`); ``auto`` takes it for local folders and object stores
when no ``--master`` or session is given (:func:`fruitlens._native_run.choose_engine`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from . import _session, _uri
from . import spark as fl_spark
from ._common import has_glob
from ._core import DEFAULT_BATCH_SIZE
from ._errors import CLIError
from ._faults import kill_point
from ._incremental import run_incremental
from ._incremental_spark import LazySession
from ._lineage import OUTPUT_COLUMNS
from ._logs import PROG, open_run_log
from ._native_run import choose_engine, run_native
from ._pca import PCA
from ._preflight import check_input, check_model, local_path, output_target
from ._progress import STAGES, spark_progress, stage
from ._report import all_failed, error_kinds, format_summary, run_summary
from ._session import TASKS_PER_CORE, SqlConf, file_splits
from .output import PCA_FILE, OutputTarget
from .spark import _connect as fl_connect

__all__ = [
    "OUTPUT_COLUMNS",
    "STAGES",
    "RunConfig",
    "check_inputs",
    "commit",
    "format_summary",
    "run",
    "run_pipeline",
    "stage",
]


@dataclass(frozen=True)
class RunConfig:
    """The options of one run: those of ``fruitlens run --help``."""

    input: str
    output: str
    model: str | None = None
    k: int | float = 0.95
    size: int | None = None
    master: str | None = None
    remote: str | None = None
    partitions: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    overwrite: bool = False
    io: str = "auto"
    progress: bool = True
    verbose: bool = False
    engine: str = "auto"
    resize: str = "exact"
    incremental: bool = False
    refit: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        """The options parsed by :func:`fruitlens._args.add_run_arguments`
        (``--no-progress`` → ``progress=False``)."""
        names = [f.name for f in fields(cls) if f.name != "progress" and hasattr(args, f.name)]
        return cls(**{n: getattr(args, n) for n in names}, progress=not args.no_progress)


# --------------------------------------------------------------------------------------
# Checks that run before Spark starts (fruitlens._preflight)
# --------------------------------------------------------------------------------------


def check_inputs(
    config: RunConfig, engine: str = "spark"
) -> tuple[OutputTarget | None, str, int | None]:
    """Every check that needs no Spark, in order: pyspark (Spark engine only), input and
    output paths, the output target, the model. Returns ``(target or None, model, size)``
    (the native engine writes object stores through pyarrow: its target is never None)."""
    if engine == "spark":
        _session._import_pyspark()
    check_input(config.input, config.output)
    io = "arrow" if engine == "native" or config.incremental else config.io
    # --incremental updates an existing output: it may replace it
    overwrite = config.overwrite or config.incremental
    target = output_target(config.output, io=io, overwrite=overwrite)
    model, size = check_model(config.model, config.size)
    return target, model, size


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _print_note(text: str) -> None:
    print(text, file=sys.stderr)


def run(
    config: RunConfig, spark: Any = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run read → featurize → PCA fit → transform → write; return the summary dict.

    ``spark``: the session to use (default: the active or spark-submit one, else a new
    local one, stopped at the end; a given session means the Spark engine unless
    ``config.engine`` is ``"native"``). ``log`` receives notes (default: stderr).

    Raises:
        FruitlensError: for every expected failure (message says what to do).
    """
    t_start = time.perf_counter()
    engine = choose_engine(config, spark)
    target, model, size = check_inputs(config, engine)
    log_file = open_run_log(config.verbose)
    if engine == "native":  # no Spark, no JVM (fruitlens._native_run)
        assert target is not None
        say = log or _print_note
        if config.incremental and os.environ.get("SPARK_REMOTE"):
            say(f"{PROG}: note: --incremental runs on this machine; SPARK_REMOTE is not used")
        return run_native(config, target, model, size, t_start, say=say)
    if config.incremental and target is not None and target.previous is not None:
        session = LazySession(
            spark,
            lambda: _session.get_session(
                config.master, log_file=log_file, remote=config.remote, progress=config.progress
            ),
        )  # started only if there is work
        try:
            say = log or _print_note
            return run_incremental(config, target, model, size, t_start, say=say, spark=session)
        finally:
            session.stop()
    created = False
    if spark is None:
        spark, created = _session.get_session(
            config.master, log_file=log_file, remote=config.remote, progress=config.progress
        )
    t_session = time.perf_counter()
    try:
        if target is None:  # Hadoop filesystems / auto object stores: checked now
            target = output_target(
                config.output, io=config.io, overwrite=config.overwrite, spark=spark
            )
        assert target is not None
        state = _Run(config, spark, target, model, size, say=log or _print_note)
        try:
            feats, pca, stats_source = _stages(state)
            summary = _summary(state, feats, pca, stats_source, (t_start, t_session))
            commit(target, summary)
            return summary
        except BaseException:
            target.abort()  # what this run wrote; never the previous output
            raise
    finally:
        if created:
            _session.stop_session(spark)


def run_pipeline(
    args: argparse.Namespace, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """:func:`run` with the options parsed by ``fruitlens run``'s argument parser."""
    return run(RunConfig.from_args(args), log=log)


@dataclass
class _Run:
    """One run's state, passed from stage to stage."""

    config: RunConfig
    spark: Any
    target: Any
    model: str
    size: int | None
    say: Callable[[str], None]
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def parallelism(self) -> int:
        return fl_connect.default_parallelism(self.spark)

    @property
    def connect(self) -> bool:
        """Whether the session is a Spark Connect one (no accumulators, no JVM)."""
        return fl_connect.is_connect(self.spark)


def _stages(r: _Run) -> tuple[_Featurized, PCA, str]:
    """The three Spark stages: what featurize counted, the PCA, where its statistics
    came from."""
    progress = spark_progress(r.spark, enabled=r.config.progress)
    with progress, contextlib.ExitStack() as done:
        with stage("featurize", progress, r.stages):
            feats = _featurize(r, done)
        if feats.errors == feats.images:
            raise CLIError(all_failed(feats.images, feats.error_kinds, feats.samples))
        with stage("pca_fit", progress, r.stages):
            pca, stats_source = _fit(r, feats)
        with stage("transform_write", progress, r.stages):
            _transform_and_write(r, feats.df, pca)
    return feats, pca, stats_source


@dataclass
class _Featurized:
    """The cached features and what the featurize pass counted."""

    df: Any
    collected: Any  # fruitlens.spark.FeatureStats
    images: int
    errors: int
    features: int
    error_kinds: dict[str, int]
    samples: dict[str, str]


def _featurize(r: _Run, cleanup: contextlib.ExitStack) -> _Featurized:
    """Read + featurize, cached (unpersisted by ``cleanup``) so that images are decoded
    and embedded once; the PCA statistics are gathered on the way."""
    # pyspark: imported when Spark runs (see the module doc)
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    kill_point("featurize")
    partitions = r.config.partitions or TASKS_PER_CORE * r.parallelism
    # Embedding costs per image, so a few tasks per core with equal image counts
    # balance the cores with no idle tail.
    # The split confs stay set until the featurize pass has been planned and run.
    with SqlConf(r.spark, file_splits(partitions)):
        images, source = _images(r, partitions)
        # PCA statistics gathered while embedding (classic sessions: an accumulator)
        collected = None if r.connect else fl_spark.FeatureStats(r.spark)
        features = fl_spark.featurize(
            images.select(
                "path",
                "label",
                "length",  # lineage (OUTPUT_COLUMNS)
                "modificationTime",
                *([] if source else ["content"]),
                # read_images' rows for dangling links, FIFOs, ... (helper C, issue 11)
                *[c for c in images.columns if c == fl_spark.READ_ERROR_COL],
            ),
            model=r.model,
            size=r.size,
            batch_size=r.config.batch_size,
            threads=r.config.threads,
            stats=collected if collected is not None else False,
            resize=r.config.resize,
            **source,
        ).persist(StorageLevel.MEMORY_AND_DISK)
        cleanup.callback(features.unpersist)
        row = features.agg(
            F.count(F.lit(1)).alias("n"),
            F.count("error").alias("e"),
            F.count("features").alias("f"),
        ).first()
    n_images, n_errors = int(row["n"]), int(row["e"])
    if n_images == 0:
        raise CLIError(
            f"no images found under {r.config.input} (looked for "
            f"{', '.join(fl_spark.DEFAULT_EXTENSIONS)} files, any case)"
        )
    kinds, samples = error_kinds(features) if n_errors else ({}, {})
    return _Featurized(features, collected, n_images, n_errors, int(row["f"]), kinds, samples)


def _fetch_in_tasks(spark: Any, uri: str, io: str) -> bool:
    """True when the input is listed on the driver and read by the featurize tasks
    (local folders, object stores through fruitlens.io); False for Spark's
    binaryFile (Hadoop filesystems, globs, ``--io spark``)."""
    if io == "spark":
        return False
    if io == "arrow":
        return True
    if _uri.is_local(uri):  # an existing path is literal, even with glob characters in it
        return not has_glob(uri) or os.path.lexists(local_path(uri))
    return fl_spark.use_arrow_io(spark, uri, io)


def _images(r: _Run, partitions: int) -> tuple[Any, dict[str, Any]]:
    """The images to featurize, and how featurize gets their bytes."""
    if _fetch_in_tasks(r.spark, r.config.input, r.config.io):
        # Listed on the driver; each task reads its files right before decoding
        # them, so the bytes never pass through the JVM.
        # (Spark 4+: a local relation, split by file_splits' leaf parallelism)
        images = fl_spark.list_images(
            r.spark, r.config.input, partitions=partitions, local_relation=True
        )
        return images, {"fetch_from": "path"}
    # Spark's binaryFile (Hadoop filesystems, globs, --io spark): its default
    # splits make a partition per ~32 small files or one for a small folder;
    # file_splits gets equal ones without a shuffle.
    return fl_spark.read_images(r.spark, r.config.input, io="spark"), {}


def _fit(r: _Run, feats: _Featurized) -> tuple[PCA, str]:
    """PCA fit: on the statistics gathered by the featurize tasks, or (when Spark ran
    a partition twice, or on Spark Connect) on statistics from a pass over the cache."""
    if feats.collected is None:  # Spark Connect: no accumulators
        return fl_spark.fit_pca(feats.df, k=r.config.k), "pass over the cached features"
    stats = feats.collected.get(rows=feats.features)
    if stats is not None:
        return PCA(r.config.k).fit_stats(stats), "featurize pass"
    r.say(f"{PROG}: note: computing PCA statistics in a second pass")
    return fl_spark.fit_pca(feats.df, k=r.config.k), "second pass"


def _transform_and_write(r: _Run, features: Any, pca: PCA) -> None:
    """Project the features and write them, and the PCA, into the target's staging
    folder (local, Hadoop) or under new names (object stores); published by
    :func:`commit`."""
    projected = features
    if not r.config.partitions:  # cheap rows: fewer tasks/files (no-op if fewer already)
        projected = features.coalesce(r.parallelism)
    out = fl_spark.transform_pca(projected, pca).select(*OUTPUT_COLUMNS)
    # Spark Connect: the server may be elsewhere; the rows come here and this process
    # writes and commits them (as for object stores)
    if r.target.store.kind == "object" or r.config.io == "arrow" or r.connect:
        with SqlConf(r.spark, {"spark.sql.session.timeZone": "UTC"}):  # as native writes it
            r.target.write_parquet(fl_spark.collect_arrow_batches(out), schema=_arrow_schema(out))
    else:
        writer = out.write.mode("errorifexists")
        for column in ("features", "pca"):  # floats: a dictionary never pays off
            writer = writer.option(f"parquet.enable.dictionary#{column}.list.element", "false")
        # modificationTime as the native engine writes it (INT64 micros, UTC; not INT96)
        with SqlConf(r.spark, {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}):
            writer.parquet(r.target.data_uri)
        kill_point("parts-written")
    r.target.write_text(PCA_FILE, pca.to_json())


def _arrow_schema(df: Any) -> Any:
    try:
        # pyspark: imported when Spark runs (see the module doc)
        from pyspark.sql.pandas.types import to_arrow_schema

        return to_arrow_schema(df.schema)
    except Exception:  # an empty result then has no part file
        return None


def _summary(
    r: _Run, feats: _Featurized, pca: PCA, stats_source: str, times: tuple[float, float]
) -> dict[str, Any]:
    """The run's ``_summary.json`` (``times``: when the run and its session started)."""
    t_start, t_session = times
    return run_summary(
        r.config,
        r.model,
        r.size,
        feats,
        pca,
        r.stages,
        t_start,
        pca_statistics=stats_source,
        seconds_spark_start=round(t_session - t_start, 3),
        master=fl_connect.master(r.spark),
        spark_connect=r.connect,
        spark_version=r.spark.version,
        engine="spark",
    )


def commit(target: OutputTarget, summary: dict[str, Any]) -> None:
    """Write ``_summary.json``, then the ``_SUCCESS`` manifest, last: OUTPUT switches
    to this run at once."""
    target.commit_run(summary)
