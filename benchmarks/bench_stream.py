"""``fruitlens stream``: latency from a file landing to its row in OUTPUT, and rows
exactly once across forced restarts (issue 16 item 2).

    python benchmarks/bench_stream.py [--images DIR] [--bursts 6] [--per-burst 20]
                                      [--gap 4] [--trigger 2s] [--model M]

Starts ``fruitlens stream IN OUT --pca PCA --trigger T`` (a PCA fitted on a few
images first), copies ``--bursts`` bursts of ``--per-burst`` images (of ``--images``,
default ``../shared/data/fruits360-sample/Test``) into IN every ``--gap`` seconds
(each file written under a hidden name and renamed, its mtime = when it landed),
SIGKILLs the stream right after the second and the fourth burst landed and restarts it
at once (then, as at the start, waits for a warm-up image's row: the stream is up),
and polls OUTPUT's Parquet parts every 0.1 s. Prints the latency (first time a row is
readable in OUTPUT minus its file's mtime) p50/p95/max, for the bursts that landed
while the stream ran undisturbed and for all, and checks that every image has exactly
one row. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import fruitlens
from fruitlens._fetch import default_model_path

REPO = Path(__file__).resolve().parents[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "fruitlens.cli", "stream", *args], stdout=f, stderr=f
        )


def _poll(out: Path, seen: dict[str, float], counts: dict[str, int], read: set[str]) -> None:
    for part in sorted(out.glob("part-*.parquet")):
        key = f"{part.name}:{part.stat().st_mtime_ns}"
        if key in read:
            continue
        read.add(key)
        now = time.time()
        for path in pq.read_table(part, columns=["path"]).column("path").to_pylist():
            seen.setdefault(path, now)
            counts[path] = counts.get(path, 0) + (0 if f"{part.name}|{path}" in read else 1)
            read.add(f"{part.name}|{path}")


def _pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    a = np.array(values)
    return (
        f"p50 {np.percentile(a, 50):.2f} s, p95 {np.percentile(a, 95):.2f} s, max {a.max():.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", default=str(REPO.parent / "shared/data/fruits360-sample/Test"))
    ap.add_argument("--bursts", type=int, default=6)
    ap.add_argument("--per-burst", type=int, default=20)
    ap.add_argument("--gap", type=float, default=4.0)
    ap.add_argument("--trigger", default="2s")
    ap.add_argument("--model", default=str(default_model_path(224)))
    a = ap.parse_args()
    pool = sorted(Path(a.images).rglob("*.jpg"))[::3][: a.bursts * a.per_burst + 16]
    work = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    inp, out, log = work / "in", work / "out", work / "stream.log"
    inp.mkdir()
    emb = fruitlens.Embedder(a.model).embed(pool[-16:])
    x = emb.column("features").flatten().to_numpy().reshape(16, -1)
    fruitlens.PCA(8).fit(x).save(work / "pca.json")
    files = pool[: a.bursts * a.per_burst]
    args = [str(inp), str(out), "--pca", str(work / "pca.json"), "--model", a.model]
    args += ["--trigger", a.trigger]
    print(
        f"{len(files)} images in {a.bursts} bursts of {a.per_burst}, every {a.gap} s; "
        f"--trigger {a.trigger}; SIGKILL + restart after bursts 2 and 4"
    )
    mtimes: dict[str, float] = {}
    burst_of: dict[str, int] = {}
    seen: dict[str, float] = {}
    counts: dict[str, int] = {}
    read: set[str] = set()
    restarts = 0
    warm = pool[-1]

    def ready(tag: str) -> float:
        """Land a warm-up image, wait for its row: the stream is up (seconds taken)."""
        t0 = time.time()
        dest = inp / "warm" / f"{tag}_{warm.name}"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(warm, dest)
        uri = "file:" + str(dest)
        mtimes[uri], burst_of[uri] = dest.stat().st_mtime, -1
        while uri not in seen and time.time() < t0 + 120:
            _poll(out, seen, counts, read)
            time.sleep(0.1)
        return time.time() - t0

    proc = _start(args, log)
    print(f"start (Spark session, first batch): {ready('start'):.1f} s")
    for b in range(a.bursts):
        for i, f in enumerate(files[b * a.per_burst : (b + 1) * a.per_burst]):
            dest = inp / f.parent.name / f"b{b}_{i}_{f.name}"
            dest.parent.mkdir(exist_ok=True)
            tmp = dest.parent / ("." + dest.name)
            shutil.copyfile(f, tmp)
            os.replace(tmp, dest)
            uri = "file:" + str(dest)
            mtimes[uri], burst_of[uri] = dest.stat().st_mtime, b
        end = time.time() + a.gap
        while time.time() < end:
            _poll(out, seen, counts, read)
            time.sleep(0.1)
        if b in (1, 3):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            restarts += 1
            proc = _start(args, log)
            print(f"restart {restarts}: up again (a new row) after {ready(f'r{restarts}'):.1f} s")
    deadline = time.time() + 120
    while len(seen) < len(mtimes) and time.time() < deadline:
        _poll(out, seen, counts, read)
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    lat = {p: seen[p] - mtimes[p] for p in mtimes if p in seen}
    calm = [v for p, v in lat.items() if burst_of[p] not in (-1, 1, 3)]
    rows = [
        r for part in sorted(out.glob("part-*.parquet")) for r in pq.read_table(part).to_pylist()
    ]
    per_path: dict[str, int] = {}
    for r in rows:
        per_path[r["path"]] = per_path.get(r["path"], 0) + 1
    print(f"latency, bursts 1, 3, 5, 6 (stream running): {_pct(calm)}")
    restart = [v for p, v in lat.items() if burst_of[p] in (1, 3)]
    print(f"latency, bursts 2, 4 (landed just before a SIGKILL): {_pct(restart)}")
    print(f"forced restarts (SIGKILL): {restarts}")
    missing = len(set(mtimes) - set(per_path))
    duplicated = sum(1 for n in per_path.values() if n > 1)
    errors = sum(1 for r in rows if r["error"])
    print(f"rows {len(rows)} for {len(mtimes)} images: missing {missing}, ", end="")
    print(f"duplicated {duplicated}, errors {errors}")
    print("exactly once:", set(per_path) == set(mtimes) and all(n == 1 for n in per_path.values()))
    print("batches:", sum(1 for line in log.read_text().splitlines() if ": batch " in line))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
