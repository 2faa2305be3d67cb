"""``fruitlens run`` without Spark (``--engine native``): one machine, no JVM.

The same run as the Spark engine (:mod:`fruitlens.pipeline`): list → featurize (PCA
statistics on the way; :mod:`fruitlens._native_embed`) → PCA fit → transform + write
Parquet through the same :class:`fruitlens.output.OutputTarget` (staging + atomic
commit), with the same Arrow schema, ``_pca/pca.json`` and ``_summary.json`` (plus
``"engine": "native"``), the same per-row errors and one-line failures. pyspark is never
imported and no Java is needed.

``--engine auto`` (:func:`choose_engine`) takes this engine for local folders and
``s3://``/``gs://`` object stores when no ``--master`` is given and the process is not
a Spark application (spark-submit, a notebook's active session).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa

from . import _uri
from ._common import IMAGE_EXTENSIONS, has_glob
from ._errors import CLIError
from ._faults import kill_point
from ._incremental import run_incremental
from ._lineage import FLOAT_LIST as _FLOAT_LIST
from ._lineage import OUTPUT_SCHEMA as OUTPUT_SCHEMA
from ._native_embed import Featurized, NativeProgress, featurize, list_input, rows_per_part
from ._pca import PCA
from ._preflight import local_path
from ._progress import stage
from ._report import all_failed, run_summary
from ._session import check_master_remote, connect_url
from .output import PCA_FILE, OutputTarget

if TYPE_CHECKING:
    from .pipeline import RunConfig

__all__ = [
    "ENGINES",
    "OUTPUT_SCHEMA",
    "choose_engine",
    "in_spark_application",
    "run_native",
    "skip_pandas_probe",
]

#: The ``--engine`` choices.
ENGINES: tuple[str, ...] = ("auto", "native", "spark")
#: Object-store schemes the native engine reads and writes (through pyarrow); ``s3a://``
#: and Hadoop URIs are Spark's.
_NATIVE_SCHEMES = ("s3", "gs", "gcs")
#: What ``--engine native`` accepts when asked for explicitly.
_EXPLICIT_SCHEMES = (*_NATIVE_SCHEMES, "s3a")


# --------------------------------------------------------------------------------------
# Which engine
# --------------------------------------------------------------------------------------


def in_spark_application() -> bool:
    """True inside spark-submit / a pyspark shell, or when this process already has an
    active SparkContext (pyspark is only looked at if it is imported already)."""
    if os.environ.get("SPARK_ENV_LOADED") or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return True
    context = sys.modules.get("pyspark.context")
    active = getattr(getattr(context, "SparkContext", None), "_active_spark_context", None)
    return active is not None


def _native_input(uri: str) -> bool:
    """A local folder/file (not a glob pattern) or an object store pyarrow reads."""
    if _uri.is_local(uri):
        return not has_glob(uri) or os.path.lexists(local_path(uri))
    return _uri.scheme(uri) in _NATIVE_SCHEMES


def _native_output(uri: str) -> bool:
    return _uri.is_local(uri) or _uri.scheme(uri) in _NATIVE_SCHEMES


def choose_engine(config: RunConfig, spark: Any = None) -> str:
    """``"native"`` or ``"spark"`` for ``config.engine`` (``auto``: see the module doc;
    a given ``spark`` session, ``--master``, ``--remote`` or ``SPARK_REMOTE``, ``--io spark``,
    globs and Hadoop URIs mean
    Spark). :class:`CLIError` if ``--engine native`` cannot do the run."""
    engine = config.engine
    check_master_remote(config.master, config.remote)
    if config.refit and not config.incremental:
        raise CLIError("--refit goes with --incremental (a full run always fits the PCA)")
    if config.incremental:
        return _incremental_engine(config, engine, spark)
    if engine not in ENGINES:
        raise CLIError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "native":
        for what, uri in (("reads", config.input), ("writes", config.output)):
            glob = what == "reads" and not _native_input(uri) and _uri.is_local(uri)
            if glob or not (_uri.is_local(uri) or _uri.scheme(uri) in _EXPLICIT_SCHEMES):
                raise CLIError(
                    f"--engine native {what} local folders and s3:// or gs:// object "
                    f"stores, not {uri} (globs and Hadoop URIs need --engine spark)"
                )
        return "native"
    remote = connect_url(config.master, config.remote)
    if engine == "spark" or spark is not None or config.master or remote or config.io == "spark":
        return "spark"
    if not (_native_input(config.input) and _native_output(config.output)):
        return "spark"
    return "spark" if in_spark_application() else "native"


def _incremental_engine(config: RunConfig, engine: str, spark: Any) -> str:
    """The engine of an incremental run: Spark (the new images are featurized by its
    tasks) with ``--engine spark``, ``--master``, ``--remote`` or a given session, else
    native (``SPARK_REMOTE`` alone does not make it Spark). Either way INPUT is listed
    and OUTPUT read and updated by this process through pyarrow: local folders and
    s3:// or gs:// only."""
    for what, uri, ok in (
        ("lists", config.input, _native_input(config.input)),
        ("reads and updates", config.output, _native_output(config.output)),
    ):
        if not (ok and (_uri.is_local(uri) or _uri.scheme(uri) in _EXPLICIT_SCHEMES)):
            raise CLIError(
                f"--incremental {what} local folders and s3:// or gs:// object stores, "
                f"not {uri} (globs and Hadoop URIs: run without --incremental)"
            )
    if config.io == "spark":
        raise CLIError("--incremental reads and writes through pyarrow: drop --io spark")
    if engine not in ENGINES:
        raise CLIError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "native":  # as a full run with --engine native
        return "native"
    if engine == "spark" or spark is not None or config.master or config.remote:
        return "spark"
    return "native"


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def skip_pandas_probe() -> None:
    """Spare this process pyarrow's import of pandas (0.2-0.6 s): on its first
    conversion of Python objects (``pa.array``, ``pa.scalar``...) pyarrow imports pandas,
    if installed, to recognise pandas objects, which a native run never has.

    Here that one probe is answered "no pandas" (``import pandas`` fails while it runs),
    so pyarrow does not import it. ``import pandas`` works as before, and so do
    pyarrow's pandas functions (``to_pandas``, ``from_pandas``: they import pandas
    themselves); but until one of them has run, ``pa.array`` takes a pandas object for
    a plain sequence (NaN not read as null). Hence only for the process of
    ``fruitlens run`` on the native engine, where no pandas object reaches pyarrow; a
    no-op once pandas is imported."""
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)  # import pandas -> ImportError, for this call only
    try:
        pa.scalar(0)  # pyarrow's one probe (its pandas_api._check_import) happens here
    finally:
        sys.meta_path.remove(finder)


class _NoPandas:
    """A meta path finder under which ``import pandas`` fails (see skip_pandas_probe)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not imported by fruitlens run", name=name)


def run_native(
    config: RunConfig,
    target: OutputTarget,
    model: str,
    size: int | None,
    t_start: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The run on this machine (checks done: ``target`` prepared, ``model`` checked);
    returns the summary. On any failure what this run wrote is removed and the
    previous output stays."""
    if config.incremental and target.previous is not None:  # else: a full run
        return run_incremental(config, target, model, size, t_start, say=say)
    stages: dict[str, float] = {}
    spill_dir = tempfile.mkdtemp(prefix="fruitlens-native-")
    try:
        refs = list_input(config.input)
        with NativeProgress(len(refs), enabled=config.progress) as progress:
            with stage("featurize", progress, stages):
                kill_point("featurize")
                feats = featurize(
                    refs,
                    os.path.join(spill_dir, "rows.arrow"),
                    model=model,
                    batch_size=config.batch_size,
                    threads=config.threads,
                    resize=config.resize,
                    progress=progress,
                )
            _check_counts(config, feats)
            with stage("pca_fit", progress, stages):
                assert feats.stats is not None
                pca = PCA(config.k).fit_stats(feats.stats)
            with stage("transform_write", progress, stages):
                _transform_and_write(config, target, feats, pca)
        summary = _summary(config, model, size, feats, pca, stages, t_start)
        target.commit_run(summary)
        return summary
    except BaseException:
        target.abort()  # what this run wrote; never the previous output
        raise
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def _check_counts(config: RunConfig, feats: Featurized) -> None:
    """The one-line errors of the Spark engine: no images, every image failed."""
    if feats.images == 0:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise CLIError(f"no images found under {config.input} (looked for {exts} files, any case)")
    if feats.errors == feats.images:
        raise CLIError(all_failed(feats.images, feats.error_kinds, feats.samples))


def _output_batches(feats: Featurized, pca: PCA) -> Iterator[pa.RecordBatch]:
    for batch in feats.batches():
        features = batch.column(2)
        projected = pca.transform_arrow(features).cast(_FLOAT_LIST)
        columns = [batch.column(0), batch.column(1), features.cast(_FLOAT_LIST), projected]
        lineage = [batch.column(3), batch.column(4), batch.column(5)]  # error, length, mtime
        yield pa.RecordBatch.from_arrays([*columns, *lineage], schema=OUTPUT_SCHEMA)


def _transform_and_write(
    config: RunConfig, target: OutputTarget, feats: Featurized, pca: PCA
) -> None:
    """Project and write the rows as a few Parquet parts (one per worker, or
    ``--partitions``), then the PCA, into the target's staging place."""
    rows_per_file = rows_per_part(feats.images, config.partitions, config.threads)
    target.write_parquet(
        _output_batches(feats, pca), schema=OUTPUT_SCHEMA, rows_per_file=rows_per_file
    )
    target.write_text(PCA_FILE, pca.to_json())


def _summary(
    config: RunConfig,
    model: str,
    size: int | None,
    feats: Featurized,
    pca: PCA,
    stages: dict[str, float],
    t_start: float,
) -> dict[str, Any]:
    """The ``_summary.json`` of a native run: the Spark engine's keys (``master``,
    ``spark_version`` and ``seconds_spark_start`` null)."""
    return run_summary(
        config,
        model,
        size,
        feats,
        pca,
        stages,
        t_start,
        pca_statistics="featurize pass",
        seconds_spark_start=None,
        master=None,
        spark_version=None,
        engine="native",
    )
