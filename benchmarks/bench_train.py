"""Classifier accuracy and training time: the Spark head (``--on pca`` / ``--on features``)
vs the same head fitted by scikit-learn on the same features.

    python benchmarks/bench_train.py [--master local[2]] [--model PATH]
                                     [--datasets mini sample] [--on pca features]
                                     [--k 0.95] [--reg-param 1e-3] [--max-iter 100] [--e2e]

Datasets (``../shared/data``):

* ``mini``: ``fruits360-mini``, 131 classes x 20 images; per class folder, the files in
  sorted name order: even positions (0, 2, ...) train, odd positions test;
* ``sample``: ``fruits360-sample``, 4 classes, ``Train`` → ``Test``.

Each dataset is featurized once (``fruitlens.spark.featurize``, persisted; its time is
reported apart); one unmeasured small fit warms the JVM up first. Then for each
``--on``, on Spark (``--master``, default ``local[2]``):
``fruitlens.spark.train_classifier`` (PCA fit when ``on=pca`` + ``pyspark.ml``
multinomial ``LogisticRegression``), timed; the head scores the test features
(``Head.probabilities``) and ``fruitlens._evaluate.evaluate`` gives top-1 / top-5 /
macro F1. The reference is scikit-learn's ``LogisticRegression`` (lbfgs) on the same
inputs (the features, or their projection by the same fitted PCA), standardised, with
the same L2 penalty: Spark minimises mean log-loss + regParam/2·‖w‖² on standardised
inputs, i.e. ``C = 1 / (regParam · n_train)``.

``--e2e`` also times ``fruitlens train sample/Train MODEL_DIR --test sample/Test --on X``
(X: the first ``--on``) end to end (features, fit, evaluation, export, report) in the
same session.

Prints JSON lines and a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--model", default=None, help="base ONNX model (default: the cached one)")
    ap.add_argument("--mini", type=Path, default=SHARED / "fruits360-mini")
    ap.add_argument("--sample", type=Path, default=SHARED / "fruits360-sample")
    ap.add_argument("--datasets", nargs="*", choices=("mini", "sample"), default=["mini", "sample"])
    ap.add_argument("--on", nargs="+", choices=("pca", "features"), default=["pca", "features"])
    ap.add_argument("--k", type=float, default=0.95, help="PCA: variance to keep (<1) or count")
    ap.add_argument("--reg-param", type=float, default=None, help="default: train's default")
    ap.add_argument("--max-iter", type=int, default=None, help="default: train's default")
    ap.add_argument("--sk-max-iter", type=int, default=2000, help="scikit-learn lbfgs iterations")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--e2e", action="store_true", help="also time `fruitlens train` on sample")
    ap.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="no unmeasured first fit"
    )
    return ap.parse_args(argv)


# --------------------------------------------------------------------------------------
# Data: featurize once, split
# --------------------------------------------------------------------------------------


def _mini_train_names(root: Path) -> list[tuple[str, str]]:
    """(label, file name) of the training half: even positions in sorted order."""
    out = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(f.name for f in folder.iterdir() if f.is_file())
        out += [(folder.name, name) for i, name in enumerate(files) if i % 2 == 0]
    return out


def _featurized(spark: Any, path: Path, model: str, partitions: int) -> tuple[Any, float]:
    from pyspark import StorageLevel

    from fruitlens.spark import featurize, read_images

    t0 = time.perf_counter()
    images = read_images(spark, str(path)).repartition(partitions)
    df = featurize(images, model=model).select("path", "label", "features", "error")
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    n = df.count()
    seconds = time.perf_counter() - t0
    print(f"# featurized {n} images of {path} in {seconds:.1f} s", file=sys.stderr)
    return df, seconds


def _split(spark: Any, name: str, df: Any, root: Path) -> tuple[Any, Any]:
    from pyspark.sql import functions as F

    file_name = F.element_at(F.split(F.col("path"), "/"), -1)
    usable = df.where(F.col("error").isNull() & F.col("features").isNotNull())
    if name == "sample":
        is_train = F.col("path").contains("/Train/")
        return usable.where(is_train), usable.where(~is_train & F.col("path").contains("/Test/"))
    keys = spark.createDataFrame(_mini_train_names(root), "label string, _name string")
    keyed = usable.withColumn("_name", file_name)
    train = keyed.join(F.broadcast(keys), ["label", "_name"], "left_semi").drop("_name")
    test = keyed.join(F.broadcast(keys), ["label", "_name"], "left_anti").drop("_name")
    return train, test


def _collect(df: Any) -> tuple[Any, list[str]]:
    import numpy as np

    rows = df.select("label", "features").orderBy("path").collect()
    x = np.array([r[1] for r in rows], dtype=np.float32)
    return x, [r[0] for r in rows]


# --------------------------------------------------------------------------------------
# Fits
# --------------------------------------------------------------------------------------


def _scores(labels: list[str], probs: Any, y_names: list[str]) -> dict[str, Any]:
    import numpy as np

    from fruitlens._evaluate import evaluate
    from fruitlens.classify import top_k

    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[v] for v in y_names], dtype=np.int64)
    idx, _ = top_k(probs, min(5, len(labels)))
    report = evaluate(y, idx, labels)
    return {
        "top1": round(report["top1"], 4),
        "top5": round(report["top5"], 4),
        "macro_f1": round(report["macro"]["f1"], 4),
        "_pred": idx[:, 0],
    }


def _spark_fit(train: Any, on: str, args: argparse.Namespace) -> tuple[Any, float]:
    from fruitlens.spark import train_classifier

    options: dict[str, Any] = {"on": on, "k": int(args.k) if args.k >= 1 else args.k}
    if args.reg_param is not None:
        options["reg_param"] = args.reg_param
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    t0 = time.perf_counter()
    head = train_classifier(train, **options)
    return head, time.perf_counter() - t0


def _sklearn_fit(
    head: Any, x_train: Any, y_train: list[str], x_test: Any, reg: float, max_iter: int
) -> tuple[Any, float, int]:
    """Probabilities on the test rows of the same head fitted by scikit-learn."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if head.pca is not None:
        x_train, x_test = head.pca.transform(x_train), head.pca.transform(x_test)
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0 / (reg * len(y_train)), max_iter=max_iter, tol=1e-6),
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    lr = model[-1]
    order = [list(lr.classes_).index(label) for label in head.labels]
    return model.predict_proba(x_test)[:, order], seconds, int(lr.n_iter_.max())


def _bench_dataset(spark: Any, name: str, model: str, args: argparse.Namespace) -> list[dict]:
    import numpy as np

    from fruitlens.spark import DEFAULT_REG_PARAM, train_classifier

    root = args.mini if name == "mini" else args.sample
    df, feat_s = _featurized(spark, root, model, args.partitions)
    train, test = _split(spark, name, df, root)
    train = train.persist()
    x_train, y_train = _collect(train)
    x_test, y_test = _collect(test)
    reg = args.reg_param if args.reg_param is not None else DEFAULT_REG_PARAM
    if args.warmup:  # JVM code paths (PCA, L-BFGS, Arrow) compiled before the timed fits
        args.warmup = False
        t0 = time.perf_counter()
        train_classifier(train.limit(200), on="pca", k=0.9, max_iter=5)
        print(f"# warm-up fit: {time.perf_counter() - t0:.1f} s (not counted)", file=sys.stderr)
    rows = []
    for on in args.on:
        head, fit_s = _spark_fit(train, on, args)
        spark_scores = _scores(head.labels, head.probabilities(x_test), y_test)
        probs, sk_s, sk_iter = _sklearn_fit(head, x_train, y_train, x_test, reg, args.sk_max_iter)
        sk_scores = _scores(head.labels, probs, y_test)
        agree = float(np.mean(spark_scores.pop("_pred") == sk_scores.pop("_pred")))
        row = {
            "data": name,
            "classes": len(head.labels),
            "train": len(y_train),
            "test": len(y_test),
            "on": on,
            "dims": head.input_dim if head.pca is None else head.pca.k,
            "featurize_s": round(feat_s, 1),
            "spark_fit_s": round(fit_s, 1),
            **{f"spark_{k}": v for k, v in spark_scores.items()},
            "sklearn_fit_s": round(sk_s, 1),
            "sklearn_iter": sk_iter,
            **{f"sklearn_{k}": v for k, v in sk_scores.items()},
            "top1_agreement": round(agree, 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    train.unpersist()
    df.unpersist()
    return rows


def _e2e(spark: Any, model: str, args: argparse.Namespace) -> list[dict]:
    from fruitlens.train_pipeline import TrainConfig, train

    rows = []
    for on in args.on[:1]:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            config = TrainConfig(
                input=str(args.sample / "Train"),
                model_dir=str(Path(tmp) / "model"),
                test=str(args.sample / "Test"),
                on=on,
                k=int(args.k) if args.k >= 1 else args.k,
                model=model,
                partitions=args.partitions,
                progress=False,
            )
            t0 = time.perf_counter()
            report = train(config, spark, log=lambda _text: None)
            seconds = time.perf_counter() - t0
        row = {
            "command": f"fruitlens train sample/Train MODEL_DIR --test sample/Test --on {on}",
            "seconds": round(seconds, 1),
            "timings_s": report.get("timings_s"),
            "top1": round(report["top1"], 4),
            "top5": round(report["top5"], 4),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _table(rows: list[dict]) -> None:
    print(
        "\n| data | classes | train/test | on | dims | Spark fit s | top-1 | top-5 | macro F1 "
        "| sklearn fit s | sklearn top-1 | sklearn top-5 | top-1 agreement |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['classes']} | {r['train']}/{r['test']} | {r['on']} | "
            f"{r['dims']} | {r['spark_fit_s']:.1f} | {r['spark_top1']:.2%} | "
            f"{r['spark_top5']:.2%} | {r['spark_macro_f1']:.3f} | {r['sklearn_fit_s']:.1f} | "
            f"{r['sklearn_top1']:.2%} | {r['sklearn_top5']:.2%} | {r['top1_agreement']:.2%} |"
        )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    threads = args.master.removeprefix("local[").removesuffix("]")
    if threads.isdigit():  # the scikit-learn reference gets the same cores as Spark
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", threads)

    from fruitlens import _session
    from fruitlens._preflight import check_model

    model, _size = check_model(args.model, None)
    spark, created = _session.get_session(args.master)
    print(f"# Spark {spark.version} on {spark.sparkContext.master}, model {model}", file=sys.stderr)
    try:
        rows = [r for name in args.datasets for r in _bench_dataset(spark, name, model, args)]
        e2e = _e2e(spark, model, args) if args.e2e else []
    finally:
        if created:
            _session.stop_session(spark)
    if rows:
        _table(rows)
    for r in e2e:
        print(f"\n`{r['command']}`: {r['seconds']:.1f} s, top-1 {r['top1']:.2%}, "
              f"top-5 {r['top5']:.2%}, stages {r['timings_s']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
