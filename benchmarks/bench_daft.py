"""Daft peer: a plain Daft pipeline vs ``fruitlens run`` (native and Spark engines).

    python benchmarks/bench_daft.py [--images DIR] [--rounds 2] [--warmup 1]
                                    [--engines native,spark] [--daft-python PY] [--model M]

Each tool runs as a fresh process on the same images, the same ONNX model file (the
default one, ``fruitlens model fetch``'s ``~/.cache/fruitlens/models/mobilenet_v2_224.onnx``)
and the same cores (all of the machine's); the time is the whole process's wall time
(interpreter start, imports, JVM if any, reading, decoding, inference, PCA, Parquet):

* **daft**: ``daft.from_glob_path`` → ``download`` → ``decode_image`` →
  ``resize(224, 224)`` → ``image_to_tensor`` → ONNX Runtime in a ``@daft.cls`` batch
  method (``max_concurrency=2`` processes × 1 intra-op thread, batch 32, ``x/127.5-1``)
  → collect → scikit-learn ``PCA(0.95, svd_solver="covariance_eigh")`` → ``write_parquet``;
* **fruitlens native / spark**: ``fruitlens run IN OUT --engine native|spark --overwrite``
  (without ``--engine`` when the installed CLI has none: then only "spark" runs).

Daft is installed only for the benchmark: ``--daft-python`` is an interpreter that can
import daft, onnxruntime, scikit-learn and pyarrow (default: this one if it has daft).
Daft 0.7 pins ``pyarrow<26``, so a separate venv keeps the project's pyarrow::

    python3.11 -m venv /tmp/daft-venv
    /tmp/daft-venv/bin/pip install daft onnxruntime==<same> scikit-learn

Rounds: ``--warmup`` unmeasured rounds of every tool (page cache, first-run costs),
then ``--rounds`` measured rounds, the order rotated each round so that no tool always
runs first. Each run is sampled (every 0.5 s, /proc) for the peak total RSS of its
process tree. Features are checked against the Keras golden features
(``../shared/golden/keras_mnv2_224.npz``, 64 images of fruits360-sample, matched by
path; cosine mean/min) and against each other (every row, matched by path). Prints
JSON lines, then a table. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
DEFAULT_IMAGES = SHARED / "data" / "fruits360-sample"
GOLDEN = SHARED / "golden" / "keras_mnv2_224.npz"

# ---------------------------------------------------------------------------- Daft side
# (runs in the Daft interpreter: daft, onnxruntime, scikit-learn, pyarrow, numpy only)


def daft_pipeline(images: str, out: str, model: str, pattern: str, procs: int, batch: int) -> dict:
    t0 = time.perf_counter()
    import daft
    import daft.functions as F
    import pyarrow as pa
    from daft import DataType, col
    from sklearn.decomposition import PCA

    t_imports = time.perf_counter() - t0

    @daft.cls(max_concurrency=procs, use_process=True)
    class Embed:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self.name = self.sess.get_inputs()[0].name

        @daft.method.batch(return_dtype=DataType.list(DataType.float32()), batch_size=batch)
        def __call__(self, tensors: Any) -> Any:
            x = np.asarray(tensors.to_arrow().to_numpy_ndarray(), np.float32) / 127.5 - 1.0
            return list(self.sess.run(None, {self.name: x})[0])

    t1 = time.perf_counter()
    df = daft.from_glob_path(str(Path(images) / pattern))
    df = df.with_column("label", F.regexp_extract(col("path"), r"([^/]+)/[^/]+$", 1))
    df = df.with_column("image", F.decode_image(F.download(col("path"))))
    df = df.with_column("tensor", F.image_to_tensor(F.resize(col("image"), 224, 224)))
    embed = Embed(model)
    df = df.select("path", "label", embed(col("tensor")).alias("features"))
    table = df.to_arrow()
    t_featurize = time.perf_counter() - t1
    t2 = time.perf_counter()
    feats = table.column("features").combine_chunks()
    x = np.asarray(feats.flatten(), np.float32).reshape(len(table), -1)
    # covariance_eigh: scikit-learn's fastest exact solver for tall data (n >> 1280)
    pca = PCA(n_components=0.95, svd_solver="covariance_eigh").fit(x)
    t_fit = time.perf_counter() - t2
    t3 = time.perf_counter()
    z = pca.transform(x).astype(np.float32)
    pca_col = pa.ListArray.from_arrays(
        pa.array(np.arange(0, z.size + 1, z.shape[1], dtype=np.int32)), pa.array(z.reshape(-1))
    )
    daft.from_arrow(table.append_column("pca", pca_col)).write_parquet(out, write_mode="overwrite")
    t_write = time.perf_counter() - t3
    return {
        "images": len(table),
        "k": int(pca.n_components_),
        "seconds_imports": round(t_imports, 3),
        "seconds_pipeline": round(time.perf_counter() - t1, 3),
        "stages": {
            "featurize": round(t_featurize, 3),
            "pca_fit": round(t_fit, 3),
            "transform_write": round(t_write, 3),
        },
        "daft": daft.__version__,
    }


# ---------------------------------------------------------------------------- runs


class TreeRss(threading.Thread):
    """Peak total RSS (MB) of a process tree, sampled every 0.5 s from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_mb = pid, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        from bench_scale import _rss_and_kind, _tree

        while not self.stop.is_set():
            total = sum(_rss_and_kind(p)[0] for p in _tree(self.pid))
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(0.5)


def has_engine_flag(fruitlens: str) -> bool:
    out = subprocess.run([fruitlens, "run", "--help"], capture_output=True, text=True)
    return "--engine" in out.stdout


def command(tool: str, args: argparse.Namespace, out: Path) -> list[str]:
    if tool == "daft":
        return [
            args.daft_python,
            str(Path(__file__).resolve()),
            "--daft-child",
            "--images",
            str(args.images),
            "--model",
            args.model,
            "--glob",
            args.glob,
            "--out",
            str(out),
        ]
    cmd = [args.fruitlens, "run", str(args.images), str(out), "--overwrite", "--model", args.model]
    if args.engine_flag:
        cmd += ["--engine", tool.split("-", 1)[1]]
    return cmd


def run_tool(tool: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = command(tool, args, out)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = TreeRss(proc.pid)
    rss.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    rss.stop.set()
    rss.join()
    if proc.returncode != 0:
        sys.stderr.write(stderr[-3000:])
        raise SystemExit(f"bench_daft: {tool} failed (exit {proc.returncode}): {' '.join(cmd)}")
    if tool == "daft":
        inner = json.loads(stdout.strip().splitlines()[-1])
    else:
        inner = json.loads((out / "_summary.json").read_text())
    return {
        "tool": tool,
        "seconds": round(seconds, 2),
        "seconds_pipeline": inner.get("seconds_pipeline"),
        "images": inner.get("images"),
        "images_per_s": round(inner["images"] / seconds, 1),
        "k": inner.get("k"),
        "stages": inner.get("stages"),
        "engine": inner.get("engine", "daft" if tool == "daft" else None),
        "peak_rss_mb_tree": round(rss.peak_mb),
    }


# ---------------------------------------------------------------------------- features


def _rel(path: str, root: Path) -> str:
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    return os.path.relpath(os.path.realpath(path), root)


def load_features(out: Path, root: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    files = [p for p in out.rglob("*.parquet") if not p.name.startswith((".", "_"))]
    table = pq.ParquetDataset(files).read(columns=["path", "features"])
    paths = table.column("path").to_pylist()
    feats = table.column("features").to_pylist()
    return {_rel(p, root): np.asarray(f, np.float32) for p, f in zip(paths, feats) if f}


def cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    if not common:
        return {"rows": 0}
    x = np.stack([a[p] for p in common])
    y = np.stack([b[p] for p in common])
    cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
    return {
        "rows": len(common),
        "cos_mean": round(float(cos.mean()), 5),
        "cos_min": round(float(cos.min()), 5),
        "max_abs_diff": float(np.abs(x - y).max()),
    }


def golden_features() -> dict[str, np.ndarray]:
    if not GOLDEN.is_file():
        return {}
    with np.load(GOLDEN) as g:
        return {str(p): f for p, f in zip(g["paths"], g["features"])}


# ---------------------------------------------------------------------------- driver


def _table(best: dict[str, dict[str, Any]], ref: str) -> str:
    head = (
        f"{'tool':<16} {'images':>7} {'wall s':>8} {'pipeline s':>10} {'images/s':>9} "
        f"{'k':>4} {'peak RSS MB':>11} {'vs ' + ref:>14}"
    )
    lines = [head, "-" * len(head)]
    for tool, r in best.items():
        ratio = best[ref]["seconds"] / r["seconds"] if ref in best else float("nan")
        pipe = r["seconds_pipeline"]
        lines.append(
            f"{tool:<16} {r['images']:>7} {r['seconds']:>8.2f} "
            f"{(f'{pipe:.2f}' if pipe is not None else '-'):>10} {r['images_per_s']:>9.1f} "
            f"{r['k']:>4} {r['peak_rss_mb_tree']:>11} {f'x{ratio:.2f} faster':>14}"
        )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--model", help="ONNX model (default: fruitlens model fetch's, size 224)")
    ap.add_argument("--engines", default="native,spark", help="fruitlens engines to run")
    ap.add_argument("--no-daft", dest="daft", action="store_false")
    ap.add_argument("--daft-python", help="interpreter with daft (default: this one)")
    ap.add_argument("--glob", default="**/*.jpg", help="Daft's glob under --images")
    ap.add_argument("--rounds", type=int, default=2, help="measured rounds (best kept)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first")
    ap.add_argument("--processes", type=int, default=2, help="Daft UDF processes")
    ap.add_argument("--batch", type=int, default=32, help="Daft UDF batch size")
    ap.add_argument("--workdir", type=Path, help="outputs (default: a temp dir, removed)")
    ap.add_argument("--daft-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.daft_child:  # inside the Daft interpreter: no fruitlens import
        res = daft_pipeline(
            str(args.images), args.out, args.model, args.glob, args.processes, args.batch
        )
        print(json.dumps(res), flush=True)
        return 0

    if args.model is None:
        from fruitlens._fetch import default_model_path

        args.model = str(default_model_path(224))
    args.images = args.images.resolve()
    args.fruitlens = str(Path(sys.executable).with_name("fruitlens"))
    args.engine_flag = has_engine_flag(args.fruitlens)
    engines = [e for e in args.engines.split(",") if e]
    if not args.engine_flag:
        print("# fruitlens run has no --engine here: running it as is (Spark)", file=sys.stderr)
        engines = ["spark"]
    tools = [f"fruitlens-{e}" for e in engines]
    if args.daft:
        args.daft_python = args.daft_python or sys.executable
        probe = subprocess.run([args.daft_python, "-c", "import daft"], capture_output=True)
        if probe.returncode != 0:
            raise SystemExit(f"bench_daft: {args.daft_python} cannot import daft (--daft-python)")
        tools.append("daft")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fruitlens-daft-"))
    work.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"images_dir": str(args.images), "model": args.model, "tools": tools,
                      "cpus": os.cpu_count(), "rounds": args.rounds, "warmup": args.warmup}),
          flush=True)  # fmt: skip

    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    for i in range(args.warmup + args.rounds):
        order = tools[i % len(tools) :] + tools[: i % len(tools)]  # rotate: no fixed first
        for tool in order:
            res = run_tool(tool, args, work / f"out_{tool}")
            res["round"] = i + 1 - args.warmup  # <= 0: warm-up
            print(json.dumps(res), flush=True)
            if res["round"] > 0 or not args.rounds:
                runs[tool].append(res)
    best = {t: min(r, key=lambda x: x["seconds"]) for t, r in runs.items() if r}

    golden = golden_features()
    feats = {t: load_features(work / f"out_{t}", args.images) for t in tools}
    checks = {}
    for t in tools:
        checks[f"{t} vs keras"] = cosines(feats[t], golden)
        for u in tools[: tools.index(t)]:
            checks[f"{t} vs {u}"] = cosines(feats[t], feats[u])
    print(json.dumps({"features": checks}), flush=True)
    for t in tools:
        print(json.dumps({"tool": t, "wall_s_per_round": [r["seconds"] for r in runs[t]]}))

    print()
    ref = "daft" if "daft" in best else tools[0]
    print(_table(best, ref))
    print()
    print(f"{'features':<36} {'rows':>6} {'cos mean':>9} {'cos min':>9} {'max |Δ|':>9}")
    for name, c in checks.items():
        if c["rows"]:
            print(
                f"{name:<36} {c['rows']:>6} {c['cos_mean']:>9.5f} {c['cos_min']:>9.5f} "
                f"{c['max_abs_diff']:>9.2e}"
            )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
