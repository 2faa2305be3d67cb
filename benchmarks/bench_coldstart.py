"""Cold start of ``fruitlens run --engine spark``: where the first seconds go.

Each part is measured in fresh processes (median of ``--rounds``), then one whole
``fruitlens run --engine spark`` on a tiny input (8 images) gives the total; "rest" is
what the parts do not explain (listing, planning, PCA, the Parquet write, commit)::

    python benchmarks/bench_coldstart.py [--rounds 3] [--images 8] [--model PATH]

Parts: interpreter start; ``import fruitlens.cli`` + ``fruitlens.pipeline`` (driver
imports); the JVM and SparkSession (``fruitlens._session.get_session``, local[2]); the
first Python task (daemon + worker fork + pyspark worker imports: a no-op
``mapInArrow``); the worker-side imports of fruitlens (``fruitlens.spark._tasks``); the
ONNX Runtime session (``Embedder``); the first inference (one image) and a warm one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "fruits360-sample" / "Test"
PY = sys.executable

_SESSION = """
import time, sys
t0 = time.perf_counter()
from fruitlens import _session
spark, _ = _session.get_session("local[2]")
t1 = time.perf_counter()
def noop(it):
    for b in it:
        yield b
spark.range(0, 2, 1, 2).mapInArrow(noop, "id long").count()
t2 = time.perf_counter()
def imports(it):
    import time, sys
    t = time.perf_counter()
    import fruitlens.spark._tasks  # what a featurize task imports
    import pyarrow as pa
    dt = time.perf_counter() - t
    for _ in it:
        pass
    yield pa.record_batch({"s": pa.array([dt], pa.float64())})
got = spark.range(0, 2, 1, 2).mapInArrow(imports, "s double").collect()
t3 = time.perf_counter()
print({"session": t1 - t0, "first_task": t2 - t1, "worker_imports": max(r[0] for r in got),
       "second_job": t3 - t2})
_session.stop_session(spark)
"""

_EMBED = """
import time, sys
t0 = time.perf_counter()
import fruitlens
t1 = time.perf_counter()
emb = fruitlens.Embedder(sys.argv[1], threads=1)
t2 = time.perf_counter()
data = [open(sys.argv[2], "rb").read()]
emb.embed(data)
t3 = time.perf_counter()
emb.embed(data)
t4 = time.perf_counter()
print({"import_fruitlens": t1 - t0, "onnx_session": t2 - t1, "first_inference": t3 - t2,
       "warm_inference": t4 - t3})
"""


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - t0, out.stdout


def _dict(stdout: str) -> dict[str, float]:
    line = [x for x in stdout.splitlines() if x.startswith("{")][-1]
    return {k: float(v) for k, v in eval(line).items()}  # our own printed dict


def _tiny_input(n: int, root: Path) -> Path:
    for label in ("apple", "lemon"):
        (root / label).mkdir(parents=True)
        for path in sorted((SAMPLE / label).glob("*.jpg"))[: n // 2]:
            shutil.copy(path, root / label / path.name)
    return root


def _run_once(tiny: Path, out: Path) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    help_text = subprocess.run(
        [PY, "-m", "fruitlens.cli", "run", "--help"], capture_output=True, text=True
    ).stdout
    engine = ["--engine", "spark"] if "--engine" in help_text else []
    argv = [PY, "-m", "fruitlens.cli", "run", str(tiny), str(out), "--master", "local[2]"]
    wall, _ = _timed([*argv, "--no-progress", *engine])
    return wall, json.loads((out / "_summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    default_model = Path.home() / ".cache" / "fruitlens" / "models" / "mobilenet_v2_224.onnx"
    parser.add_argument("--model", default=str(default_model))
    args = parser.parse_args()
    env = dict(os.environ, PYSPARK_PYTHON=PY, SPARK_LOCAL_IP="127.0.0.1")
    image = str(sorted((SAMPLE / "apple").glob("*.jpg"))[0])
    parts: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        parts.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory(prefix="fruitlens-coldstart-") as tmp:
        tiny = _tiny_input(args.images, Path(tmp) / "in")
        for _ in range(args.rounds):
            add("interpreter", _timed([PY, "-c", "pass"])[0])
            add("driver imports", _timed([PY, "-c", "import fruitlens.cli, fruitlens.pipeline"])[0])
            for name, value in _dict(_timed([PY, "-c", _SESSION], env)[1]).items():
                add(name, value)
            for name, value in _dict(_timed([PY, "-c", _EMBED, args.model, image])[1]).items():
                add(name, value)
            wall, summary = _run_once(tiny, Path(tmp) / "out")
            add("run: whole process", wall)
            add("run: spark start (summary)", summary["seconds_spark_start"])
            for name, sec in summary["stages"].items():
                add(f"run: {name}", sec)
    med = {name: statistics.median(values) for name, values in parts.items()}
    explained = sum(
        med.get(k, 0.0)
        for k in ("driver imports", "session", "first_task", "worker_imports", "onnx_session")
    ) + med.get("first_inference", 0.0)
    print(f"cold start, median of {args.rounds} (seconds; {args.images} images, local[2])")
    for name, value in med.items():
        print(f"  {name:<28} {value:7.3f}")
    print(f"  {'rest (run - parts above)':<28} {med['run: whole process'] - explained:7.3f}")


if __name__ == "__main__":
    main()
