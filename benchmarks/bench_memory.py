"""Peak memory (RSS) of decoding/embedding batches with bombs and huge images.

    python benchmarks/bench_memory.py [--size 224] [--count 8] [--threads 2]

Each case runs in a fresh subprocess, which reads its inputs from files and reports
its peak RSS (``VmHWM`` from ``/proc/self/status``, else ``ru_maxrss``) before and
after the work:

* ``clean``:  ``count`` ordinary 640×480 JPEGs
* ``bombs``:  the same count, two replaced by a PNG decompression bomb (header claims
  50 000 × 50 000) and an 8000 × 8000 JPEG (64 Mpx, exactly the default budget)
* ``huge4``:  the same count, four of them 8000 × 8000 JPEGs (large images are decoded
  one at a time, so the peak should stay near that of ``bombs``)

for ``fruitlens.decode`` at ``--size`` and for ``Embedder.embed`` with a random-weight
MobileNetV2 (``fruitlens.models.build_random_model``, built once into a temp dir).
Prints one JSON line per case, then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("clean", "bombs", "huge4")


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_batch(case: str, count: int) -> list:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)

    def jpeg(w: int, h: int, seed: int) -> bytes:
        small = rng.randint(0, 256, (h // 40 + 1, w // 40 + 1, 3)).astype(np.uint8)
        img = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    sys.path.insert(0, str(HERE.parent / "tests" / "corpus"))
    import make_corpus

    ordinary = [jpeg(640, 480, i) for i in range(count)]
    if case == "clean":
        return ordinary
    huge = jpeg(8000, 8000, 99)
    if case == "bombs":
        bomb = make_corpus.png_raw(50_000, 50_000, 8, 2, __import__("zlib").compress(b"\0" * 4096))
        return [*ordinary[: count - 2], bomb, huge]
    if case == "huge4":
        return ordinary[: count - 4] + [huge] * 4
    raise ValueError(case)


def child(args: argparse.Namespace) -> None:
    """Run one case in this (fresh) process and print a JSON line."""
    import time

    import fruitlens

    files = sorted(Path(args.inputs).iterdir())
    batch = [f.read_bytes() for f in files]
    before = peak_rss_mib()
    t0 = time.perf_counter()
    if args.mode == "decode":
        out = fruitlens.decode(batch, size=args.size, threads=args.threads)
    else:
        emb = fruitlens.Embedder(args.model, threads=args.threads, batch_size=args.count)
        out = emb.embed(batch)
    elapsed = time.perf_counter() - t0
    errors = [e.split(":")[0] for e in out.column("error").to_pylist() if e]
    print(
        json.dumps(
            {
                "mode": args.mode,
                "case": args.case,
                "count": len(batch),
                "size": args.size if args.mode == "decode" else "model",
                "threads": args.threads,
                "errors": errors,
                "rss_before_mib": round(before, 1),
                "peak_rss_mib": round(peak_rss_mib(), 1),
                "seconds": round(elapsed, 2),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="ONNX model for embed (default: random weights)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("decode", "embed"), help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        # Inputs are made here and read from files by the children, so that making
        # them (Pillow holds a 192 MB image for the 8000x8000 JPEG) does not count.
        for case in CASES:
            d = Path(tmp) / case
            d.mkdir()
            for i, data in enumerate(make_batch(case, args.count)):
                (d / f"{i:03d}.img").write_bytes(data)
        model = args.model
        if model is None:
            from fruitlens.models import build_random_model

            model = str(build_random_model(Path(tmp) / "random.onnx", input_size=96, seed=0))
        results = []
        for mode in ("decode", "embed"):
            for case in CASES:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    f"--mode={mode}",
                    f"--case={case}",
                    f"--size={args.size}",
                    f"--count={args.count}",
                    f"--threads={args.threads}",
                    f"--model={model}",
                    f"--inputs={Path(tmp) / case}",
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    raise SystemExit(f"{mode}/{case} failed with exit code {out.returncode}")
                line = out.stdout.strip().splitlines()[-1]
                print(line, flush=True)
                results.append(json.loads(line))

    print()
    print(
        f"{'mode':7s} {'case':6s} {'n':>3s} {'before MiB':>11s} {'peak MiB':>9s} {'Δ MiB':>7s} "
        f"{'s':>6s}  errors"
    )
    for r in results:
        delta = r["peak_rss_mib"] - r["rss_before_mib"]
        errors = ",".join(r["errors"]) or "-"
        print(
            f"{r['mode']:7s} {r['case']:6s} {r['count']:3d} {r['rss_before_mib']:11.1f} "
            f"{r['peak_rss_mib']:9.1f} {delta:7.1f} {r['seconds']:6.2f}  {errors}"
        )


if __name__ == "__main__":
    main()
