"""``fruitlens run --incremental`` vs a full run (issue 16 item 1).

    python benchmarks/bench_incremental.py [--images DIR] [--new-from DIR] [--new 0.10]
                                           [--changed 10] [--deleted 10] [--rounds 3]
                                           [--model M] [--engine native|spark]

Copies the sample (default ``../shared/data/fruits360-sample``, 2,624 images) to a
temporary folder, runs ``fruitlens run IN OUT`` once, then updates the
folder: ``--new`` × images new ones (copies, under new names, of ``--new-from``'s images,
default ``../shared/data/fruits360-mini``: other files, so new content), ``--changed``
images rewritten with another image's bytes, ``--deleted`` removed. Then, each as a fresh
process (whole-process wall time: interpreter, imports, model load, listing, reading,
featurize, PCA, Parquet, commit), all on ``--engine`` (``native``, default; ``spark``: a
local Spark session in each process, its start included), ``--rounds`` times, alternated
(the median is reported):

* ``fruitlens run IN OUT --incremental`` (from the same first output every round),
* ``fruitlens run IN FULL`` (a full run of the final folder);

then ``fruitlens run IN OUT --incremental`` once more (a no-op: nothing to do).
``--changed 0 --deleted 0``: photos only added, the old parts are kept as they are
(``parts_reused`` in the printed ``incremental`` counts). Prints
the rows, the times, incremental / full, where the incremental run's time goes (its
``_summary.json`` stages; the rest of ``run()`` is the listing, reading the old output,
the diff and the commit), and checks that both outputs hold the same paths and the same
features, bit for bit. Figures, not assertions (the goal: ≤ 15 % of the full run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
FRUITLENS = str(Path(sys.executable).with_name("fruitlens"))


def _run(*args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [FRUITLENS, "run", *args, "--no-progress"], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"fruitlens run {' '.join(args)} failed:\n{proc.stderr}")
    return seconds, proc.stdout.strip()


def _table(out: Path) -> pa.Table:
    manifest = json.loads((out / "_SUCCESS").read_text())
    parts = sorted(f["path"] for f in manifest["files"] if f["path"].endswith(".parquet"))
    return pa.concat_tables([pq.read_table(out / p) for p in parts])


def _update(src: Path, new_from: Path, new: int, changed: int, deleted: int) -> None:
    """Add ``new`` images, rewrite ``changed``, delete ``deleted`` (spread over classes)."""
    extra = sorted(new_from.rglob("*.jpg"))
    step = max(1, len(extra) // max(new, 1))
    for path in extra[::step][:new]:
        dest = src / "Train" / f"new-{path.parent.name}" / f"new-{path.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    images = sorted(p for p in src.rglob("*.jpg") if not p.name.startswith("new-"))
    spread = images[:: len(images) // max(1, changed + deleted)]
    for i, path in enumerate(spread[:changed]):
        path.write_bytes(images[-1 - i].read_bytes())
        later = path.stat().st_mtime + 60
        os.utime(path, (later, later))
    for path in spread[changed : changed + deleted]:
        path.unlink()


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=SHARED / "data" / "fruits360-sample")
    ap.add_argument("--new-from", type=Path, default=SHARED / "data" / "fruits360-mini")
    ap.add_argument("--new", type=float, default=0.10, help="fraction of new images")
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--deleted", type=int, default=10)
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="median of this many")
    ap.add_argument(
        "--engine",
        choices=["native", "spark"],
        default="native",
        help="the engine of every run (spark: local[*], the new images embedded by its tasks)",
    )
    args = ap.parse_args()
    model = ["--model", args.model] if args.model else []
    model += ["--engine", args.engine]
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        base = Path(tmp)
        src, out, full = base / "images", base / "out", base / "full"
        shutil.copytree(args.images, src)
        first = len(list(src.rglob("*.jpg")))
        t_first, _ = _run(str(src), str(out), *model)
        _update(src, args.new_from, round(args.new * first), args.changed, args.deleted)
        shutil.copytree(out, base / "before")
        incs, fulls = [], []
        for _ in range(args.rounds):  # alternated, each from the same first output
            shutil.rmtree(out)
            shutil.copytree(base / "before", out)
            incs.append(_run(str(src), str(out), "--incremental", *model)[0])
            shutil.rmtree(full, ignore_errors=True)
            fulls.append(_run(str(src), str(full), *model)[0])
        t_inc, t_full = float(np.median(incs)), float(np.median(fulls))
        summary = json.loads((out / "_summary.json").read_text())
        t_noop, noop_line = _run(str(src), str(out), "--incremental", *model)
        a, b = _table(out), _table(full)
        rows_a = dict(zip(a.column("path").to_pylist(), a.column("features").to_pylist()))
        rows_b = dict(zip(b.column("path").to_pylist(), b.column("features").to_pylist()))
        same_paths = sorted(rows_a) == sorted(rows_b)
        diffs = [
            float(np.abs(np.array(rows_a[p]) - np.array(rows_b[p])).max())
            for p in rows_b
            if p in rows_a and rows_b[p] is not None
        ]
    stages = summary["stages"]
    inside = summary["seconds"]
    print(f"images            first run {first}, final folder {len(rows_b)}")
    print(f"incremental       {json.dumps(summary['incremental'])}")
    print(f"first full run    {t_first:6.2f} s (whole process)")
    print(f"incremental run   {t_inc:6.2f} s (whole process; median of {_fmt(incs)})")
    print(f"full run (final)  {t_full:6.2f} s (whole process; median of {_fmt(fulls)})")
    print(f"incremental/full  {t_inc / t_full:6.1%}")
    print(f"no-op re-run      {t_noop:6.2f} s: {noop_line}")
    print(
        "incremental time  (last round) "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
        + f"; run() {inside:.2f} s (listing, reading the old output, diff, commit included);"
        + f" process start + imports {t_inc - inside:.2f} s"
    )
    print(
        f"check             same paths: {same_paths}; features max |diff| over "
        f"{len(diffs)} rows: {max(diffs) if diffs else float('nan')}"
    )


if __name__ == "__main__":
    main()
