"""``fruitlens train``: images (one folder per class) → features → classifier head on
Spark → held-out evaluation → one ONNX model for the app, in MODEL_DIR.

Steps: featurize the training images (and the ``--test`` folder) with the same
one-pass pipeline as ``fruitlens run`` (:func:`fruitlens.pipeline.run`, into a staging
folder), or read an existing ``fruitlens run`` output (``--features``); split off a
deterministic test fraction by hash when there is no test folder; fit the head
(:func:`fruitlens.spark.train_classifier`); score the test rows; export
``classifier.onnx`` (+ a uint8-input variant, + int8 with ``--int8``); write the report;
then put MODEL_DIR in place at once (:class:`fruitlens._model_dir.ModelDir`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import _session, _uri
from . import spark as fl_spark
from ._common import write_atomic
from ._core import DEFAULT_BATCH_SIZE
from ._errors import CLIError
from ._evaluate import evaluate, summary_lines, write_report
from ._export import export_classifier, quantize_classifier
from ._logs import PROG, open_run_log
from ._model_dir import ModelDir
from ._native import __version__
from ._preflight import check_model
from ._reading import read_many
from .classify import (
    CLASSIFIER_FILE,
    CLASSIFIER_INT8_FILE,
    CLASSIFIER_UINT8_FILE,
    HEAD_FILE,
    Classifier,
    Head,
)
from .pipeline import RunConfig, run

__all__ = ["DEFAULT_TEST_FRACTION", "TrainConfig", "train", "train_from_args"]

#: Share of the images held out for evaluation when no ``--test`` folder is given.
DEFAULT_TEST_FRACTION = 0.2
_CALIBRATION_IMAGES = 64


@dataclass(frozen=True)
class TrainConfig:
    """The options of ``fruitlens train --help``."""

    input: str
    model_dir: str
    features: bool = False
    test: str | None = None
    test_fraction: float | None = None
    on: str = "pca"
    k: int | float = 0.95
    reg_param: float = fl_spark.DEFAULT_REG_PARAM
    max_iter: int = fl_spark.DEFAULT_MAX_ITER
    int8: bool = False
    model: str | None = None
    size: int | None = None
    master: str | None = None
    partitions: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int | None = None
    io: str = "auto"
    overwrite: bool = False
    progress: bool = True
    verbose: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        names = [f.name for f in fields(cls) if f.name != "progress" and hasattr(args, f.name)]
        return cls(**{n: getattr(args, n) for n in names}, progress=not args.no_progress)


@dataclass
class _Train:
    config: TrainConfig
    spark: Any
    staging: Path
    model: str
    size: int | None
    say: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def train(
    config: TrainConfig, spark: Any = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train, evaluate and export; returns the report (``MODEL_DIR/report.json``)."""
    t0 = time.perf_counter()
    _check(config)
    target = ModelDir(config.model_dir, overwrite=config.overwrite)
    model, size = check_model(config.model, config.size)
    created = False
    if spark is None:
        spark, created = _session.get_session(config.master, log_file=open_run_log(config.verbose))
    try:
        staging = target.start()
        try:
            state = _Train(config, spark, staging, model, size, log or _say)
            report = _train_in(state, t0)
            target.commit()
            return report
        except BaseException:
            target.abort()
            raise
    finally:
        if created:
            _session.stop_session(spark)


def train_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`train` with the options parsed by ``fruitlens train``'s parser."""
    return train(TrainConfig.from_args(args))


def _check(config: TrainConfig) -> None:
    if config.test is not None and config.test_fraction is not None:
        raise CLIError("give either --test DIR or --test-fraction, not both")
    if config.test_fraction is not None and not 0.0 < config.test_fraction < 1.0:
        raise CLIError(f"--test-fraction must be in (0, 1), got {config.test_fraction}")
    if config.on not in fl_spark.ON_CHOICES:
        raise CLIError(f"--on must be one of {', '.join(fl_spark.ON_CHOICES)}")
    for path in (config.input, config.test):
        if path is None or not _uri.is_local(path):
            continue
        if not os.path.exists(_uri.local_path(path)):
            raise CLIError(f"input path does not exist: {path}")
        _check_apart(path, config.model_dir)


def _check_apart(input_path: str, model_dir: str) -> None:
    """MODEL_DIR neither in nor around an input: its PNGs would become training images
    of the next run, and a run output would hold files its owner did not write."""
    if not _uri.is_local(model_dir):
        return
    src = os.path.realpath(_uri.local_path(input_path))
    dst = os.path.realpath(_uri.local_path(model_dir))
    if dst == src or dst.startswith(src.rstrip(os.sep) + os.sep) or src.startswith(dst + os.sep):
        raise CLIError(f"MODEL_DIR {model_dir} is, is inside or contains the input {input_path}")


#: What each step of :func:`_train_in` says when it starts (with progress on).
_STEP_NOTES = {
    "fit": "fitting the PCA and the logistic-regression head on Spark",
    "evaluate": "scoring the test images",
    "export": "exporting classifier.onnx",
    "int8_evaluate": "measuring the int8 model on the test images",
}


def _timed(state: _Train, name: str, fn: Callable[[], Any]) -> Any:
    if state.config.progress and name in _STEP_NOTES:
        state.say(f"{PROG}: {_STEP_NOTES[name]}")
    t = time.perf_counter()
    value = fn()
    state.timings[name] = round(time.perf_counter() - t, 3)
    return value


def _train_in(state: _Train, t0: float) -> dict[str, Any]:
    train_df, test_df = _timed(state, "features", lambda: _datasets(state))
    c = state.config
    head: Head = _timed(
        state,
        "fit",
        lambda: fl_spark.train_classifier(
            train_df, on=c.on, k=c.k, reg_param=c.reg_param, max_iter=c.max_iter
        ),
    )
    head.save(state.staging / HEAD_FILE)
    y_true, top_idx = _timed(state, "evaluate", lambda: _score(state, head, test_df))
    report = evaluate(y_true, top_idx, head.labels)
    provenance = _provenance(state, head, report)
    _timed(state, "export", lambda: _export(state, head, provenance, train_df))
    extra: dict[str, Any] = {"provenance": provenance}
    if state.config.int8:
        extra["int8"] = _timed(state, "int8_evaluate", lambda: _int8_accuracy(state, head, test_df))
    shutil.rmtree(state.staging / "_features", ignore_errors=True)  # the staged run outputs
    state.timings["total"] = round(time.perf_counter() - t0, 3)
    extra.update(timings_s=state.timings, counts=state.counts)
    write_report(report, state.staging, extra)
    report.update(extra)
    return report


# --------------------------------------------------------------------------------------
# Features and the train/test split
# --------------------------------------------------------------------------------------


def _featurized(state: _Train, source: str, name: str) -> Any:
    """A DataFrame of ``path, label, features, error`` for ``source``: read as is with
    ``--features``, else featurized by the run pipeline into the staging folder."""
    c = state.config
    if c.features:
        return state.spark.read.parquet(source)
    out = state.staging / "_features" / name
    config = RunConfig(
        input=source,
        output=str(out),
        model=state.model,
        k=c.k,
        size=state.size,
        partitions=c.partitions,
        batch_size=c.batch_size,
        threads=c.threads,
        io=c.io,
        progress=c.progress,
        verbose=c.verbose,
    )
    summary = run(config, state.spark, log=state.say)
    state.counts[f"{name}_images"] = summary.get("images")
    state.counts[f"{name}_errors"] = summary.get("errors")
    return state.spark.read.parquet(str(out))


def _test_mask(df: Any, fraction: float) -> Any:
    """True for the rows held out: the first 32 bits of sha256(label/file name) as a
    fraction of 2³² is below ``fraction`` — deterministic, and the same wherever the
    dataset lives."""
    from pyspark.sql import functions as F  # optional dependency

    name = F.element_at(F.split(F.col("path"), "/"), -1)
    key = F.concat_ws("/", F.col("label"), name)
    bits = F.conv(F.substring(F.sha2(key, 256), 1, 8), 16, 10).cast("double")
    return bits / float(2**32) < float(fraction)


def _datasets(state: _Train) -> tuple[Any, Any]:
    c = state.config
    train_df = _featurized(state, c.input, "train")
    if c.test is not None:
        return train_df, _featurized(state, c.test, "test")
    fraction = c.test_fraction if c.test_fraction is not None else DEFAULT_TEST_FRACTION
    held_out = _test_mask(train_df, fraction)
    state.counts["test_fraction"] = fraction
    return train_df.where(~held_out), train_df.where(held_out)


def _score(state: _Train, head: Head, test_df: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true [N], top_idx [N, 5])`` of the usable test rows of a known class."""
    usable = test_df.where(test_df["features"].isNotNull() & test_df["error"].isNull())
    scored = fl_spark.predict_features(usable.select("label", "features"), head, top=5)
    rows = scored.select("label", "top.label").collect()
    index = {label: i for i, label in enumerate(head.labels)}
    known = [r for r in rows if r[0] in index]
    state.counts["test_rows"] = len(known)
    state.counts["test_unknown_class"] = len(rows) - len(known)
    if not known:
        raise CLIError("no test images of the trained classes: nothing to evaluate on")
    y_true = np.array([index[r[0]] for r in known], dtype=np.int64)
    top_idx = np.array([[index[x] for x in r[1]] for r in known], dtype=np.int64)
    return y_true, top_idx


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _provenance(state: _Train, head: Head, report: dict[str, Any]) -> dict[str, Any]:
    c = state.config
    return {
        "data": c.input,
        "test": c.test,
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fruitlens_version": __version__,
        "base_model": os.path.basename(state.model),
        "on": head.on,
        "k": head.pca.k if head.pca is not None else None,
        "reg_param": c.reg_param,
        "classes": len(head.labels),
        "top1": report["top1"],
        "top5": report["top5"],
        "n_test": report["n"],
    }


def _calibration(train_df: Any, staging: Path) -> list[str]:
    """Up to 64 training images (ONNX Runtime's calibrator keeps every activation of every
    image: ~4.5 GB at 64), spread over the classes (ordered by a hash of the path);
    objects in a bucket are copied into the staging folder first."""
    from pyspark.sql import functions as F  # optional dependency

    usable = train_df.where(train_df["error"].isNull()).select("path")
    uris = [r[0] for r in usable.orderBy(F.sha2("path", 256)).limit(_CALIBRATION_IMAGES).collect()]
    paths = [_uri.local_path(u) for u in uris if _uri.is_local(u)]
    remote = [u for u in uris if not _uri.is_local(u)]
    folder = staging / "_features" / "calibration"
    for i, (data, _) in enumerate(read_many(remote, 16, None)):
        if data is not None:
            paths.append(str(write_atomic(folder / f"{i}.img", data)))
    if not paths:
        raise CLIError("--int8: no readable training image to calibrate on")
    return paths


def _export(state: _Train, head: Head, provenance: dict[str, Any], train_df: Any) -> None:
    out = state.staging
    export_classifier(state.model, head, out / CLASSIFIER_FILE, provenance=provenance)
    export_classifier(
        state.model, head, out / CLASSIFIER_UINT8_FILE, uint8_input=True, provenance=provenance
    )
    if state.config.int8:
        quantize_classifier(
            out / CLASSIFIER_FILE, out / CLASSIFIER_INT8_FILE, _calibration(train_df, out)
        )
    # The exported file must load as a classifier with the head's labels.
    if Classifier(out / CLASSIFIER_FILE, threads=1).labels != head.labels:
        raise CLIError("internal error: the exported classifier's labels differ from the head's")


def _int8_accuracy(state: _Train, head: Head, test_df: Any) -> dict[str, Any]:
    """Top-1/top-5 of ``classifier_int8.onnx`` on the test images (decoded again), and
    how often its top-1 agrees with the float model's."""
    usable = test_df.where(test_df["error"].isNull() & test_df["features"].isNotNull())
    scored = fl_spark.predict_features(usable.select("path", "label", "features"), head, top=1)
    scored = fl_spark.classify(
        scored.withColumnRenamed("prediction", "fp32"),
        state.staging / CLASSIFIER_INT8_FILE,
        fetch_from="path",
        threads=state.config.threads,
    )
    rows = scored.select("label", "fp32", "prediction", "top.label", "error").collect()
    ok = [r for r in rows if r["error"] is None and r[0] in head.labels]
    n = max(1, len(ok))
    return {
        "n": len(ok),
        "errors": len(rows) - len(ok),
        "top1": sum(r[0] == r["prediction"] for r in ok) / n,
        "top5": sum(r[0] in r[3] for r in ok) / n,
        "agreement_with_fp32": sum(r["fp32"] == r["prediction"] for r in ok) / n,
    }


def print_summary(report: dict[str, Any], model_dir: str) -> None:
    """The CLI's summary of a training run."""
    for line in summary_lines(report):
        print(line)
    t = report.get("timings_s", {})
    print(
        f"time        {t.get('total', 0):.1f} s total (features {t.get('features', 0):.1f} s, "
        f"fit {t.get('fit', 0):.1f} s, export {t.get('export', 0):.1f} s)"
    )
    print(f"model       {model_dir}/{CLASSIFIER_FILE} ({len(report['labels'])} classes)")
    int8 = report.get("int8")
    if int8:
        print(
            f"int8        {model_dir}/{CLASSIFIER_INT8_FILE}: top-1 {100 * int8['top1']:.1f} % "
            f"(float {100 * report['top1']:.1f} %), same top-1 as float on "
            f"{100 * int8['agreement_with_fp32']:.1f} % of {int8['n']} images"
        )
