"""Deploy modes: the same ``fruitlens run`` job in local mode and on a Spark standalone
cluster, side by side (issue 15).

    python benchmarks/bench_deploy.py [--images ../shared/data/fruits360-sample]
                                      [--model PATH] [--workers 2] [--cores 1]

Modes (:data:`MODES`, run in that order; the first is the reference):

* ``local``: ``fruitlens run --engine spark`` (an embedded ``local[*]``);
* ``standalone run``: ``fruitlens run --master spark://...`` (client deploy mode);
* ``standalone submit client``: ``spark-submit --deploy-mode client job.py ...``;
* ``standalone submit cluster``: ``spark-submit --deploy-mode cluster job.py ...``
  (Spark refuses it for Python applications on standalone masters: the refusal is
  printed);
* ``spark connect``: ``fruitlens run --remote sc://...`` against a Spark Connect server
  (``local[workers x cores]``) started for it.

The standalone cluster (a Master and ``--workers`` Workers, from the installed pyspark,
on 127.0.0.1) is ``tests/_cluster.py``'s, started once for the modes that need it. For
each mode: rows, wall time of the whole command, featurize seconds, and max |Δ| of the
features, of the PCA projections and of ``_pca/pca.json`` against the reference.
Figures, not assertions. To add a mode (e.g. Spark Connect), append a :class:`Mode`
to :data:`MODES`: a name and a function ``(Context, output folder) -> Outcome``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "data"
JOB = REPO / "python" / "fruitlens" / "job.py"
sys.path.insert(0, str(REPO / "tests"))  # the standalone cluster helper

from _cluster import StandaloneCluster, free_port  # noqa: E402
from _connect_server import connect_available, connect_server  # noqa: E402


@dataclass
class Context:
    """What every mode gets: the input, the run options, the environment, the cluster."""

    images: Path
    run_args: list[str]  # after INPUT OUTPUT: --model, --partitions, ...
    tmp: Path
    workers: int = 2
    cores: int = 1
    _cluster: StandaloneCluster | None = None

    def env(self, **extra: str) -> dict[str, str]:
        base = self._cluster.env() if self._cluster else dict(os.environ)
        base.setdefault("PYSPARK_PYTHON", sys.executable)
        base.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        base["FRUITLENS_LOG_DIR"] = str(self.tmp / "logs")
        base.update(extra)
        return base

    def cluster(self) -> StandaloneCluster:
        """The standalone cluster, started on first use (stopped by :meth:`close`)."""
        if self._cluster is None:
            t0 = time.perf_counter()
            root = self.tmp / "cluster"
            self._cluster = StandaloneCluster(root, workers=self.workers, cores=self.cores)
            self._cluster.start()
            print(
                f"# standalone cluster {self._cluster.master_url}: {self.workers} workers x "
                f"{self.cores} core(s), up in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        return self._cluster

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None


@dataclass
class Outcome:
    """A mode's result: its wall time, and either an output or why there is none."""

    seconds: float
    output: Path | None
    note: str = ""
    summary: dict = field(default_factory=dict)


def _timed(
    cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd, timeout=3600)
    return time.perf_counter() - t0, result


def _outcome(seconds: float, result: subprocess.CompletedProcess, out: Path) -> Outcome:
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if "Exception" in ln or "error" in ln]
        return Outcome(seconds, None, f"failed ({result.returncode}): {(lines or [''])[-1]}")
    summary = json.loads((out / "_summary.json").read_text())
    return Outcome(seconds, out, summary=summary)


def run_local(ctx: Context, out: Path) -> Outcome:
    """``fruitlens run --engine spark`` in an embedded ``local[*]``."""
    cmd = [sys.executable, "-m", "fruitlens.cli", "run", str(ctx.images), str(out)]
    cmd += [*ctx.run_args, "--engine", "spark", "--no-progress"]
    return _outcome(*_timed(cmd, ctx.env(), ctx.tmp), out)


def run_standalone(ctx: Context, out: Path) -> Outcome:
    """``fruitlens run --master spark://...``: the driver here, executors on the workers."""
    cluster = ctx.cluster()
    cmd = [sys.executable, "-m", "fruitlens.cli", "run", str(ctx.images), str(out)]
    cmd += [*ctx.run_args, "--master", cluster.master_url, "--no-progress"]
    return _outcome(*_timed(cmd, ctx.env(), ctx.tmp), out)


def _spark_submit(ctx: Context, out: Path, deploy_mode: str) -> Outcome:
    cluster = ctx.cluster()
    cmd = [cluster.spark_submit(), "--master", cluster.master_url]
    cmd += ["--deploy-mode", deploy_mode, "--conf", f"spark.ui.port={free_port()}"]
    cmd += [str(JOB), str(ctx.images), str(out), *ctx.run_args, "--no-progress"]
    seconds, result = _timed(cmd, ctx.env(), ctx.tmp)
    refusal = "Cluster deploy mode is currently not supported for python applications"
    if result.returncode != 0 and refusal in result.stderr:
        line = next(ln for ln in result.stderr.splitlines() if refusal in ln)
        return Outcome(seconds, None, "refused by Spark: " + line.split(": ", 1)[-1])
    if result.returncode == 0 and deploy_mode == "cluster":  # accepted: it runs elsewhere
        return Outcome(seconds, None, "accepted by Spark (the driver runs on a worker)")
    return _outcome(seconds, result, out)


def run_submit_client(ctx: Context, out: Path) -> Outcome:
    """``spark-submit --deploy-mode client job.py``."""
    return _spark_submit(ctx, out, "client")


def run_submit_cluster(ctx: Context, out: Path) -> Outcome:
    """``spark-submit --deploy-mode cluster job.py`` (refused for Python on standalone)."""
    return _spark_submit(ctx, out, "cluster")


def run_connect(ctx: Context, out: Path) -> Outcome:
    """``fruitlens run --remote sc://...``: a Spark Connect server (``local[N]``, its own
    JVM, ``tests/_connect_server.py``) started for this mode; the server's start is
    not in the wall time (a Connect server is long-lived)."""
    why = connect_available()
    if why:
        return Outcome(0.0, None, f"skipped: {why}")
    with connect_server(f"local[{ctx.workers * ctx.cores}]") as url:
        cmd = [sys.executable, "-m", "fruitlens.cli", "run", str(ctx.images), str(out)]
        cmd += [*ctx.run_args, "--remote", url, "--no-progress"]
        return _outcome(*_timed(cmd, ctx.env(), ctx.tmp), out)


@dataclass(frozen=True)
class Mode:
    name: str
    run: Callable[[Context, Path], Outcome]


#: The modes, in order; the first one is the reference the others are compared with.
MODES: list[Mode] = [
    Mode("local", run_local),
    Mode("standalone run", run_standalone),
    Mode("standalone submit client", run_submit_client),
    Mode("standalone submit cluster", run_submit_cluster),
    Mode("spark connect", run_connect),
]


# --------------------------------------------------------------------------------------
# Comparing outputs
# --------------------------------------------------------------------------------------


def _load(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out, columns=["path", "features", "pca", "error"]).to_pylist()
    return {r["path"]: r for r in rows}


def compare(out: Path, ref: Path) -> dict[str, object]:
    """Rows, duplicates and max |Δ| (features, PCA projections, pca.json) vs ``ref``."""
    table = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    rows, ref_rows = _load(out), _load(ref)
    good = sorted(p for p, r in ref_rows.items() if r["error"] is None)
    same_paths = set(rows) == set(ref_rows)
    figures: dict[str, object] = {
        "rows": len(table),
        "duplicates": len(table) - len(set(table)),
        "same_paths": same_paths,
        "same_errors": {p: r["error"] for p, r in rows.items() if r["error"]}
        == {p: r["error"] for p, r in ref_rows.items() if r["error"]},
    }
    if not same_paths:
        return figures
    for column in ("features", "pca"):
        a = np.array([rows[p][column] for p in good], np.float32)
        b = np.array([ref_rows[p][column] for p in good], np.float32)
        figures[f"d_{column}"] = float(np.abs(a - b).max()) if a.shape == b.shape else "shape"
    pca = json.loads((out / "_pca" / "pca.json").read_text())
    ref_pca = json.loads((ref / "_pca" / "pca.json").read_text())
    d_json = 0.0
    for key, value in ref_pca.items():
        if isinstance(value, list):
            d_json = max(d_json, float(np.abs(np.array(pca[key]) - np.array(value)).max()))
        elif isinstance(value, float) and isinstance(pca.get(key), float):
            d_json = max(d_json, abs(pca[key] - value))  # e.g. total_variance
        elif pca.get(key) != value:
            d_json = float("inf")
    figures["d_pca_json"] = d_json
    return figures


def _print_table(results: list[dict]) -> None:
    print(
        "| mode | rows | dup | wall s | featurize s | PCA fit s | max Δ features | max Δ pca "
        "| Δ pca.json |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        r = {
            k: (f"{v:.3g}" if k.startswith("d_") and isinstance(v, float) else v)
            for k, v in r.items()
        }
        if r.get("note"):
            print(f"| {r['mode']} | | | {r['seconds']:.1f} | {r['note']} | | | | |")
            continue
        print(
            f"| {r['mode']} | {r.get('rows', '')} | {r.get('duplicates', '')} | "
            f"{r['seconds']:.1f} | {r.get('featurize', '')} | {r.get('pca_fit', '')} | "
            f"{r.get('d_features', '')} | "
            f"{r.get('d_pca', '')} | {r.get('d_pca_json', '')} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=SHARED / "fruits360-sample")
    ap.add_argument("--model", help="ONNX model (default: the one `fruitlens model fetch` cached)")
    ap.add_argument("--partitions", type=int, help="--partitions for every mode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cores", type=int, default=1, help="cores per worker")
    ap.add_argument("--modes", help="comma-separated mode names (default: all)")
    args = ap.parse_args(argv)

    run_args = ["--model", args.model] if args.model else []
    run_args += ["--partitions", str(args.partitions)] if args.partitions else []
    modes = MODES
    if args.modes:
        wanted = [m.strip() for m in args.modes.split(",")]
        modes = [m for m in MODES if m.name in wanted or m is MODES[0]]
    n = sum(1 for p in args.images.rglob("*") if p.is_file())
    print(f"# {n} files under {args.images}; modes: {[m.name for m in modes]}", file=sys.stderr)

    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_deploy-") as tmp:
        ctx = Context(Path(args.images).resolve(), run_args, Path(tmp), args.workers, args.cores)
        try:
            reference: Path | None = None
            for i, mode in enumerate(modes):
                outcome = mode.run(ctx, ctx.tmp / f"out{i}")
                row: dict = {"mode": mode.name, "seconds": round(outcome.seconds, 2)}
                if outcome.output is None:
                    row["note"] = outcome.note
                else:
                    row["featurize"] = round(outcome.summary["stages"]["featurize"], 2)
                    row["pca_fit"] = round(outcome.summary["stages"]["pca_fit"], 2)
                    row["master"] = outcome.summary.get("master")
                    if reference is None:
                        reference = outcome.output
                    row.update(compare(outcome.output, reference))
                print(json.dumps(row), file=sys.stderr)
                results.append(row)
        finally:
            ctx.close()
    _print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
