"""Scale: `fruitlens run` at 10k, 30k and 90k images — time, images/s, peak memory.

    python benchmarks/make_scale_dataset.py /tmp/fruits-scale          # once
    python benchmarks/bench_scale.py /tmp/fruits-scale [--sizes 10000,30000,90000]

Runs ``fruitlens run DATA/<N> OUT --master local[2]`` in a subprocess per size and
samples (every 0.5 s, from /proc) the resident memory of every process in its tree:
the driver's Python, the JVM, and each PySpark Python worker. Reports wall time,
images/s, and peak RSS of the driver Python, the JVM and the largest Python worker, to
show that cost grows linearly with the images and memory stays flat.
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


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _rss_and_kind(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return 0, ""
    if "java" in cmd.split(" ")[0]:
        kind = "jvm"
    elif "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
        kind = "python_worker"
    elif "python" in cmd:
        kind = "driver_python"
    else:
        kind = "other"
    return rss * 1024, kind


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in _tree(self.pid):
                rss, kind = _rss_and_kind(p)
                if kind and rss > self.peak.get(kind, 0):
                    self.peak[kind] = rss
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--sizes", default="10000,30000,90000")
    ap.add_argument("--model", default=None)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fruitlens-scale-out"))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)

    exe = Path(sys.executable).with_name("fruitlens")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [
            str(exe),
            "run",
            str(args.data / str(n)),
            str(args.out / str(n)),
            "--master",
            args.master,
            "--overwrite",
            "--size",
            str(args.size),
        ]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        sampler = Sampler(proc.pid)
        sampler.start()
        stdout, _ = proc.communicate()
        seconds = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        if proc.returncode != 0:
            print(stdout, file=sys.stderr)
            raise SystemExit(f"fruitlens run failed for {n} images")
        mb = {k: round(v / 2**20) for k, v in sampler.peak.items()}
        row = {
            "images": n,
            "seconds": round(seconds, 1),
            "images_per_s": round(n / seconds, 1),
            "peak_rss_mb_python_worker": mb.get("python_worker"),
            "peak_rss_mb_driver_python": mb.get("driver_python"),
            "peak_rss_mb_jvm": mb.get("jvm"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    print("\n| images | wall s | images/s | peak RSS worker MB | driver py MB | JVM MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['images']} | {r['seconds']} | {r['images_per_s']} | "
            f"{r['peak_rss_mb_python_worker']} | {r['peak_rss_mb_driver_python']} | "
            f"{r['peak_rss_mb_jvm']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
