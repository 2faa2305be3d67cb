"""The arguments of ``fruitlens run`` and ``python -m fruitlens.job`` (one definition for
both entry points), and the argparse types that check them before anything starts."""

from __future__ import annotations

import argparse

from ._common import IO_MODES
from ._core import DEFAULT_BATCH_SIZE, RESIZE_MODES
from ._errors import PCAError
from ._k import parse_k
from ._native import MAX_SIZE, MAX_THREADS_CAP
from ._native_run import ENGINES
from .spark._train import DEFAULT_MAX_ITER, DEFAULT_REG_PARAM

__all__ = [
    "add_run_arguments",
    "add_stream_arguments",
    "add_train_arguments",
    "duration_arg",
    "fraction_arg",
    "k_arg",
    "positive_int",
    "size_arg",
    "threads_arg",
]


def k_arg(text: str) -> int | float:
    """``--k``: a number of components (at most the feature length) or a variance
    fraction (:func:`fruitlens._k.parse_k`)."""
    try:
        return parse_k(text)
    except PCAError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _limited_int(text: str, limit: int, why: str) -> int:
    """A positive integer up to ``limit`` (a bound of the native core, explained by ``why``)."""
    value = positive_int(text)
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be at most {limit} ({why}), got {value}")
    return value


def threads_arg(text: str) -> int:
    """``--threads``: 1 … 256 (``_native.MAX_THREADS_CAP``). The executors' CPUs are not
    known here; each task's machine also refuses more than 4 threads per CPU."""
    return _limited_int(text, MAX_THREADS_CAP, "and at most 4 per CPU of the executors")


def size_arg(text: str) -> int:
    """``--size``: 1 … ``fruitlens.MAX_SIZE``."""
    return _limited_int(text, MAX_SIZE, "fruitlens.MAX_SIZE")


def fraction_arg(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens run`` / ``python -m fruitlens.job``."""
    parser.add_argument("input", metavar="INPUT", help="folder/URI of images (label = folder)")
    parser.add_argument("output", metavar="OUTPUT", help="Parquet output folder/URI")
    _add_compute_arguments(parser)
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="native = this machine, no Spark or Java; spark = a Spark session (clusters, "
        "spark-submit, Hadoop URIs, globs); auto (default) = native for a local folder or "
        "an s3:// / gs:// prefix without --master/--remote outside a Spark application, "
        "else spark",
    )
    parser.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default="exact",
        help="exact (default) = Pillow/Keras bit for bit; fast = large images reduced "
        "cheaply first (JPEG DCT scaling), much faster on photos, features slightly differ",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="update OUTPUT (a fruitlens output): featurize only new or changed images (by "
        "path, size and modification time), drop deleted ones, project with the saved PCA; "
        "a full run if OUTPUT does not exist (local folders, s3://, gs://; with --engine "
        "spark or --master the new images are embedded by Spark's tasks)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="with --incremental: refit the PCA on all rows' stored features and re-project",
    )
    _add_run_flags(parser)
    return parser


def duration_arg(text: str) -> float:
    """A duration: seconds (``10``, ``2.5``, ``10s``), ``500ms`` or ``1m``; >= 0, finite."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    stripped = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m") if stripped.endswith(u)), "")
    try:
        value = float(stripped[: len(stripped) - len(unit)]) * units.get(unit, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (e.g. 10s, 500ms, 1m)"
        ) from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite duration >= 0, got {text}")
    return value


def add_stream_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens stream``."""
    where = "local folder or s3://, gs:// prefix"
    parser.add_argument("input", metavar="INPUT", help=f"{where} to watch (label = folder)")
    parser.add_argument("output", metavar="OUTPUT", help=f"{where} of the Parquet parts")
    parser.add_argument(
        "--pca",
        required=True,
        metavar="PCA.json",
        help="a fruitlens PCA (OUTPUT/_pca/pca.json of a run; local or on an object store)",
    )
    parser.add_argument("--model", metavar="PATH", help="ONNX model (default: the cached one)")
    parser.add_argument("--size", type=size_arg, help="model input size (default: the model's)")
    parser.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="where the stream records its batches (default OUTPUT/_checkpoint; never in INPUT)",
    )
    parser.add_argument(
        "--trigger",
        type=duration_arg,
        default=10.0,
        help="list INPUT every this long (default 10s)",
    )
    parser.add_argument(
        "--settle",
        type=duration_arg,
        default=2.0,
        help="take a file once its size and mtime are unchanged between two listings and "
        "its mtime is this old (default 2s)",
    )
    parser.add_argument(
        "--max-files-per-trigger", type=positive_int, metavar="N", help="at most N files a batch"
    )
    parser.add_argument(
        "--once",
        "--available-now",
        dest="once",
        action="store_true",
        help="process what INPUT holds (once settled), then exit",
    )
    parser.add_argument("--master", help="Spark master (default: local[*])")
    parser.add_argument(
        "--remote",
        metavar="URL",
        help="Spark Connect server (sc://HOST:PORT; local[N] starts one; default: "
        "$SPARK_REMOTE); its executors read INPUT's files",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="images per inference run",
    )
    parser.add_argument("--threads", type=threads_arg, help="threads per task")
    parser.add_argument(
        "--verbose", action="store_true", help="show Spark's and Java's own messages"
    )
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens train``."""
    parser.add_argument(
        "input",
        metavar="INPUT",
        help="folder/URI of training images, one subfolder per class (the folder name is "
        "the class), or with --features a `fruitlens run` output",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="local folder for the model")
    parser.add_argument(
        "--features", action="store_true", help="INPUT (and --test) are `fruitlens run` outputs"
    )
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--test", metavar="DIR", help="held-out images for the evaluation")
    split.add_argument(
        "--test-fraction",
        type=fraction_arg,
        help="hold out this fraction of INPUT, chosen by a hash of class/file name "
        "(default 0.2 without --test)",
    )
    parser.add_argument(
        "--on",
        choices=("pca", "features"),
        default="pca",
        help="train the head on the PCA projections (default) or on the 1280 features",
    )
    parser.add_argument(
        "--reg-param",
        type=_non_negative_float,
        default=DEFAULT_REG_PARAM,
        help=f"L2 regularisation of the logistic regression (default {DEFAULT_REG_PARAM})",
    )
    parser.add_argument(
        "--max-iter",
        type=positive_int,
        default=DEFAULT_MAX_ITER,
        help=f"L-BFGS iterations (default {DEFAULT_MAX_ITER})",
    )
    parser.add_argument(
        "--int8", action="store_true", help="also export classifier_int8.onnx (calibrated int8)"
    )
    _add_compute_arguments(parser)
    _add_run_flags(parser)
    return parser


def _add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="ONNX model (default: the one `fruitlens model fetch` cached for --size)",
    )
    parser.add_argument(
        "--k",
        type=k_arg,
        default=0.95,
        help="PCA components (int) or explained-variance fraction (float; default 0.95)",
    )
    parser.add_argument(
        "--size",
        type=size_arg,
        default=None,
        help="model input size; must match the model (default: the model's, or 224)",
    )
    parser.add_argument(
        "--master",
        help="Spark master (default: the active/spark-submit session, else local[*])",
    )
    parser.add_argument(
        "--remote",
        metavar="URL",
        help="Spark Connect server (sc://HOST:PORT; local[N] starts one; default: "
        "$SPARK_REMOTE). INPUT and OUTPUT must then be paths or URIs the server's "
        "executors can read",
    )
    parser.add_argument(
        "--partitions", type=positive_int, help="repartition the images into N partitions"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"images per inference run (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--threads",
        type=threads_arg,
        help="threads per task (default: the task's CPUs); native engine: embedding "
        "threads in all (default: one per core)",
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT (train: MODEL_DIR) if fruitlens wrote it (never anything else; "
        "the old one stays complete until the new one replaces it at once)",
    )
    parser.add_argument(
        "--io",
        choices=IO_MODES,
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
