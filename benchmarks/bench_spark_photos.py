"""Spark on phone photos: ``featurize`` on 500 12-Mpx JPEGs, images/s and worker memory.

    python benchmarks/bench_spark_photos.py [--photos /tmp/fruitlens-photos] [--count 500]
                                            [--master local[2]] [--resize exact,fast]

The photos are ``bench_photos.py``'s 12-Mpx JPEGs (4032×3024, q90, noise, one in three
with EXIF orientation 6/8; made by it when missing). The first ``--count`` (sorted) are
hard-linked into ``PHOTOS/spark<count>/<class>/``. For each ``--resize`` mode, a fresh
process starts a Spark session (``fruitlens run``'s local configuration; start-up not
timed), then, as ``fruitlens run`` does, lists the files on the driver
(``fs.list_images``, 2 partitions per core) and runs ``fs.featurize(...,
fetch_from="path")`` (the bytes are read in the tasks), after an unmeasured warm-up on
a few photos (Python workers, ONNX Runtime sessions). The measured job writes every
column to Spark's ``noop`` sink.

Memory: a thread samples ``/proc`` every 0.2 s for the PySpark Python workers (forked by
``pyspark.daemon``) and keeps each one's ``VmHWM`` (the kernel's peak RSS of the
process); after the job, a task in each worker also reports its own ``VmHWM``. The
figure is the largest. Prints JSON lines, then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _status(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _python_workers() -> list[int]:
    """PySpark Python workers: processes forked by a ``pyspark.daemon`` process."""
    procs: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"pyspark.daemon" in cmd or b"pyspark.worker" in cmd:
            procs[int(name)] = ppid
    daemons = {p for p, ppid in procs.items() if ppid not in procs}
    return [p for p, ppid in procs.items() if p not in daemons]


class WorkerPeaks(threading.Thread):
    """Peak RSS (VmHWM, kB) of each Python worker seen while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in _python_workers():
                self.peaks[pid] = max(self.peaks.get(pid, 0), _status(pid, "VmHWM"))
            time.sleep(0.2)


def _in_worker_hwm(spark: Any, tasks: int) -> dict[int, int]:
    """Each reused Python worker's own VmHWM (kB), reported from a task."""

    def hwm(_: Any) -> Any:
        import os as _os

        with open("/proc/self/status") as f:
            kb = next(int(v.split()[1]) for v in f if v.startswith("VmHWM"))
        yield (_os.getpid(), kb)

    rows = spark.sparkContext.parallelize(range(tasks), tasks).mapPartitions(hwm).collect()
    return dict(rows)


def subset(photos: Path, count: int) -> Path:
    """Hard links to the first ``count`` 12-Mpx JPEGs (sorted) in ``photos/spark<count>``."""
    dest = photos / f"spark{count}"
    files = sorted((photos / "jpeg12").rglob("*.jpg"))[:count]
    for f in files:
        target = dest / f.parent.name / f.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
    return dest


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One resize mode in this (fresh) process."""
    from fruitlens import _session
    from fruitlens import spark as fs

    spark, _ = _session.get_session(args.master)
    parallelism = max(1, int(spark.sparkContext.defaultParallelism))
    extra = {} if args.resize == "default" else {"resize": args.resize}

    def job(folder: Path) -> None:
        listing = fs.list_images(
            spark, str(folder), partitions=_session.TASKS_PER_CORE * parallelism
        )
        feats = fs.featurize(listing, model=args.model, fetch_from="path", **extra)
        feats.write.format("noop").mode("overwrite").save()

    warm = args.folder.parent / "spark_warmup"
    for f in sorted(args.folder.rglob("*.jpg"))[: 2 * parallelism]:
        (warm / f.parent.name).mkdir(parents=True, exist_ok=True)
        if not (warm / f.parent.name / f.name).exists():
            os.link(f, warm / f.parent.name / f.name)
    job(warm)
    sampler = WorkerPeaks()
    sampler.start()
    n = sum(1 for _ in args.folder.rglob("*.jpg"))
    t0 = time.perf_counter()
    job(args.folder)
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    inside = _in_worker_hwm(spark, 4 * parallelism)
    spark.stop()
    peaks = {**sampler.peaks}
    for pid, kb in inside.items():
        peaks[pid] = max(peaks.get(pid, 0), kb)
    return {
        "resize": args.resize,
        "master": args.master,
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 2),
        "python_workers": len(peaks),
        "peak_rss_mb_per_worker": sorted((round(v / 1024) for v in peaks.values()), reverse=True),
        "peak_rss_mb_max_worker": round(max(peaks.values(), default=0) / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=Path("/tmp/fruitlens-photos"))
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--model", help="ONNX model (default: fruitlens model fetch's, size 224)")
    ap.add_argument(
        "--resize",
        default="exact,fast",
        help="modes, one fresh process each ('default': featurize without resize=)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    if args.model is None:
        from fruitlens._fetch import default_model_path

        args.model = str(default_model_path(224))
    if len(list((args.photos / "jpeg12").rglob("*.jpg"))) < args.count:
        import bench_photos

        bench_photos.main(["--photos", str(args.photos), "--skip-speed", "--skip-accuracy"])
    folder = subset(args.photos, args.count)
    rows = []
    for mode in args.resize.split(","):
        cmd = [sys.executable, __file__, "--child", "--resize", mode, "--folder", str(folder),
               "--master", args.master, "--model", args.model]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            print(json.dumps({"resize": mode, "failed": out.returncode}), flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| resize | images | s | images/s | Python workers | peak RSS per worker MB |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        peaks = ", ".join(str(v) for v in r["peak_rss_mb_per_worker"])
        print(
            f"| {r['resize']} | {r['images']} | {r['seconds']} | {r['images_per_s']} | "
            f"{r['python_workers']} | {peaks} |"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    raise SystemExit(main())
