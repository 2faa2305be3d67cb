"""What ``fruitlens run`` reports: failed images by kind, the one-line error when every
image failed, and the summary it prints.

pyspark is imported only where a DataFrame is counted, so the CLI imports this without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from . import _uri
from ._manifest import PCA_FILE

__all__ = ["RunCounts", "all_failed", "error_kinds", "format_summary", "run_summary"]


def error_kinds(features: Any) -> tuple[dict[str, int], dict[str, str]]:
    """Failed images per error kind (the text before the first ``:``), and an example."""
    # pyspark: imported when Spark runs (see the module doc)
    from pyspark.sql import functions as F

    kinds = (
        features.where(F.col("error").isNotNull())
        .groupBy(F.split(F.col("error"), ":").getItem(0).alias("kind"))
        .agg(F.count(F.lit(1)).alias("count"), F.min("error").alias("sample"))
        .collect()
    )
    return (
        {r["kind"]: int(r["count"]) for r in kinds},
        {r["kind"]: str(r["sample"]) for r in kinds},
    )


def all_failed(n_images: int, kinds: dict[str, int], samples: dict[str, str]) -> str:
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
    """The summary as the few lines ``fruitlens run`` prints."""
    stages = summary["stages"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary["error_kinds"].items()))
    pca_file = _uri.join(summary["output"], PCA_FILE)
    start = summary.get("seconds_spark_start")
    engine = "native engine" if start is None else f"Spark start {start:.1f} s"
    lines = [
        f"images      {summary['images']} ({summary['errors']} errors"
        + (f": {kinds}" if kinds else "")
        + ")",
        f"pca         k={summary['k']}, explained variance {summary['explained_variance']:.4f}",
        f"time        {summary['seconds']:.1f} s total, {summary['seconds_pipeline']:.1f} s "
        f"pipeline ({summary['images_per_s']} images/s), {engine}",
        "stages      " + ", ".join(f"{name} {sec:.1f} s" for name, sec in stages.items()),
        f"output      {summary['output']} (PCA: {pca_file})",
    ]
    return "\n".join(lines)


def run_summary(
    config: Any,
    model: str,
    size: int | None,
    counts: Any,
    pca: Any,
    stages: dict[str, float],
    t_start: float,
    **engine: Any,
) -> dict[str, Any]:
    """``_summary.json`` of a run, for both engines: ``config`` is the run's
    ``RunConfig``, ``counts`` has ``images``, ``errors`` and ``error_kinds``,
    ``stages`` the seconds of each stage, ``t_start`` when the run started
    (``perf_counter``); ``engine`` gives ``pca_statistics``, ``seconds_spark_start``,
    ``master``, ``spark_connect`` (a Spark Connect session: False if not given),
    ``spark_version`` and ``engine`` (the keys are the same for both)."""
    pipeline = sum(stages.values())
    pca_summary = pca.summary()
    return {
        "input": config.input,
        "output": config.output,
        "model": model,
        "size": size,
        "images": counts.images,
        "errors": counts.errors,
        "error_kinds": counts.error_kinds,
        "k": pca_summary["k"],
        "k_rule": pca_summary["k_rule"],
        "explained_variance": pca_summary["explained_variance"],
        "pca_samples": pca_summary["n_samples"],
        "pca_statistics": engine["pca_statistics"],
        "seconds": round(time.perf_counter() - t_start, 3),
        "seconds_pipeline": round(pipeline, 3),
        "seconds_spark_start": engine["seconds_spark_start"],
        "images_per_s": round(counts.images / pipeline, 2) if pipeline > 0 else None,
        "stages": {name: round(sec, 3) for name, sec in stages.items()},
        "master": engine["master"],
        "spark_connect": engine.get("spark_connect", False),
        "spark_version": engine["spark_version"],
        "partitions": config.partitions,
        "batch_size": config.batch_size,
        "engine": engine["engine"],
        "resize": config.resize,
    }


@dataclass
class RunCounts:
    """What :func:`run_summary` counts over an incremental run's rows."""

    images: int
    errors: int
    features: int
    error_kinds: dict[str, int]
    samples: dict[str, str]

    @classmethod
    def of(cls, old_errors: Any, kept: list[int], fresh: Any) -> RunCounts:
        """The kept rows' (their errors from the old output's index) and the fresh
        rows' counts (``fresh``: a :class:`fruitlens._native_embed.Featurized` or None)."""
        errors = old_errors.take(pa.array(kept, pa.int64())).to_pylist()
        kinds = dict(fresh.error_kinds) if fresh else {}
        samples = dict(fresh.samples) if fresh else {}
        n_errors = fresh.errors if fresh else 0
        for error in errors:
            if error is None:
                continue
            n_errors += 1
            kind = error.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            samples[kind] = min(samples.get(kind, error), error)
        images = len(kept) + (fresh.images if fresh else 0)
        return cls(images, n_errors, images - n_errors, kinds, samples)
