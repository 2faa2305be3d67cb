"""``fruitlens run`` on a real Spark standalone cluster (issue 15): a Master and two
1-core Workers started from the pyspark package on 127.0.0.1 (``tests/_cluster.py``).

* the cluster's output equals the local-mode run's (``--engine spark``, ``local[*]``):
  same rows, features to the bit, the same PCA, the same error rows; through
  ``fruitlens run --master`` and through ``spark-submit --deploy-mode client``;
* ``spark-submit --deploy-mode cluster``: Spark refuses it for Python applications on
  a standalone master, before anything is submitted;
* an executor JVM SIGKILLed while featurize runs, then a whole Worker (its JVM and its
  executor): the job still succeeds with exactly one row per image, features identical
  to the local run.

A small input (240 images and a broken file) keeps the module at a few minutes. Every
run uses ``--partitions 2``: one featurize task per executor, and the same partitions
(hence the same batches) as the local run on any machine. PySpark 4.x only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _cluster import (
    StandaloneCluster,
    free_port,
    get_json,
    standalone_cluster,  # noqa: F401 (the module's `cluster` fixture)
)

from fruitlens import _session

PER_CLASS = 60
CLASSES = ("apple", "lemon", "mango", "raspberry")
N_IMAGES = PER_CLASS * len(CLASSES) + 1  # and lemon/broken.jpg
RUN_ARGS = ["--partitions", "2", "--k", "0.95"]
JOB = Path(__file__).resolve().parents[1] / "python" / "fruitlens" / "job.py"

spark_slow = [pytest.mark.spark, pytest.mark.slow]


# --------------------------------------------------------------------------------------
# Item 3: Spark's console progress bar on clusters (no Spark needed)
# --------------------------------------------------------------------------------------


def test_cluster_sessions_hide_sparks_progress_bar_when_fruitlens_shows_its_own() -> None:
    assert _session.cluster_session_config(progress=True) == {
        "spark.ui.showConsoleProgress": "false"
    }
    assert _session.cluster_session_config(progress=False) == {
        "spark.ui.showConsoleProgress": "true"
    }
    # local sessions never show it (their own config, unchanged)
    assert _session.local_session_config()["spark.ui.showConsoleProgress"] == "false"


# --------------------------------------------------------------------------------------
# Fixtures: the input, the local reference run
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster_images")
    source = shared_dir / "data" / "fruits360-sample" / "Test"
    for label in CLASSES:
        (root / label).mkdir()
        for path in sorted((source / label).glob("*.jpg"))[:PER_CLASS]:
            shutil.copyfile(path, root / label / path.name)
    (root / "lemon" / "broken.jpg").write_bytes(b"not a JPEG\n" * 20)
    return root


def _env(cluster: StandaloneCluster | None, logs: Path, **extra: str) -> dict[str, str]:
    if cluster is not None:
        env = cluster.env(**extra)
    else:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        env.update(extra)
    env.pop("FRUITLENS_TEST_FAULT", None)
    env["FRUITLENS_LOG_DIR"] = str(logs)
    return env


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fruitlens.cli", "run", *args]


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])


@pytest.fixture(scope="module")
def local_out(images: Path, onnx_224: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same job in local mode (``--engine spark``, ``local[*]``)."""
    tmp = tmp_path_factory.mktemp("cluster_local")
    out = tmp / "out"
    args = [str(images), str(out), "--model", str(onnx_224), "--engine", "spark", *RUN_ARGS]
    result = subprocess.run(
        _cli([*args, "--no-progress"]),
        env=_env(None, tmp / "logs"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp,
    )
    _check(result)
    return out


# --------------------------------------------------------------------------------------
# Comparing two outputs
# --------------------------------------------------------------------------------------


def _rows(out: Path) -> tuple[list[str], dict[str, dict]]:
    table = pq.read_table(out, columns=["path", "features", "pca", "error"]).to_pylist()
    return [r["path"] for r in table], {r["path"]: r for r in table}


def _stats_source(out: Path) -> str:
    return json.loads((out / "_summary.json").read_text())["pca_statistics"]


def _pca_json(out: Path) -> dict:
    return json.loads((out / "_pca" / "pca.json").read_text())


def assert_same_output(out: Path, ref: Path) -> dict[str, float]:
    """``out`` has ``ref``'s rows (one per image), features to the bit, the same PCA
    (float64 statistics merged in task-completion order: equal to ~1e-12) and error rows.
    Returns the figures (max |Δ| of features, of projections and of the PCA JSON)."""
    paths, rows = _rows(out)
    ref_paths, ref_rows = _rows(ref)
    assert len(paths) == N_IMAGES, len(paths)
    assert len(set(paths)) == len(paths), "duplicate rows"
    assert set(paths) == set(ref_paths)
    errors = {p: r["error"] for p, r in rows.items() if r["error"] is not None}
    assert errors == {p: r["error"] for p, r in ref_rows.items() if r["error"] is not None}
    assert [Path(p).name for p in errors] == ["broken.jpg"]
    good = sorted(p for p in ref_paths if ref_rows[p]["error"] is None)
    feats = np.array([rows[p]["features"] for p in good], np.float32)
    ref_feats = np.array([ref_rows[p]["features"] for p in good], np.float32)
    d_features = float(np.abs(feats - ref_feats).max())
    pca = np.array([rows[p]["pca"] for p in good], np.float32)
    ref_pcas = np.array([ref_rows[p]["pca"] for p in good], np.float32)
    assert pca.shape == ref_pcas.shape
    d_pca = float(np.abs(pca - ref_pcas).max())
    model, ref_model = _pca_json(out), _pca_json(ref)
    assert model.keys() == ref_model.keys()
    d_json = 0.0
    for key, value in ref_model.items():
        if isinstance(value, list):
            d_json = max(d_json, float(np.abs(np.array(model[key]) - np.array(value)).max()))
        else:
            assert model[key] == value, key
    assert d_features == 0.0, f"features differ from the local run: max |Δ| {d_features}"
    assert d_pca <= 1e-5 and d_json <= 1e-9, (d_pca, d_json)
    return {"features": d_features, "pca": d_pca, "pca_json": d_json}


# --------------------------------------------------------------------------------------
# (a) fruitlens run --master, (b) spark-submit client mode, (c) cluster mode
# --------------------------------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.slow
def test_run_on_standalone_cluster_equals_local_mode(
    cluster: StandaloneCluster,
    images: Path,
    onnx_224: Path,
    local_out: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    ui = free_port()
    env = _env(cluster, tmp_path / "logs", PYSPARK_SUBMIT_ARGS=_ui_conf(ui))
    args = [str(images), str(out), "--model", str(onnx_224), "--master", cluster.master_url]
    proc = subprocess.Popen(
        _cli([*args, *RUN_ARGS]),  # with fruitlens's progress line
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    props: dict[str, str] = {}
    while not props and proc.poll() is None:
        try:
            props = dict(_app_ui(ui, "/environment")["sparkProperties"])
        except (OSError, ValueError, IndexError, KeyError):
            time.sleep(0.1)
    stdout, stderr = proc.communicate(timeout=600)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    # item 3: fruitlens shows its progress, so the session has Spark's bar off
    assert props.get("spark.ui.showConsoleProgress") == "false", props
    _check(result)
    assert "Traceback" not in result.stderr and "[Stage " not in result.stderr
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["master"] == cluster.master_url and summary["images"] == N_IMAGES
    print("fruitlens run --master:", assert_same_output(out, local_out))
    # the application really ran on the cluster, on both workers
    apps = [a for a in cluster.state()["completedapps"] if a["name"] == "fruitlens"]
    assert apps, cluster.state()
    assert {d.parent.parent.name for d in cluster.executor_dirs(apps[-1]["id"])} == {"w0", "w1"}


@pytest.mark.spark
@pytest.mark.slow
def test_spark_submit_client_mode_equals_local_mode(
    cluster: StandaloneCluster,
    images: Path,
    onnx_224: Path,
    local_out: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    cmd = [cluster.spark_submit(), "--master", cluster.master_url, "--deploy-mode", "client"]
    cmd += ["--conf", f"spark.ui.port={free_port()}", str(JOB)]
    cmd += [str(images), str(out), "--model", str(onnx_224), *RUN_ARGS, "--no-progress"]
    result = subprocess.run(
        cmd,
        env=_env(cluster, tmp_path / "logs"),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    _check(result)
    summary = json.loads(result.stdout.strip().splitlines()[-1])  # the job prints JSON
    assert summary["master"] == cluster.master_url and summary["images"] == N_IMAGES
    assert summary == json.loads((out / "_summary.json").read_text())
    print("spark-submit client mode:", assert_same_output(out, local_out))


@pytest.mark.spark
@pytest.mark.slow
def test_spark_submit_cluster_mode_is_refused_by_spark(
    cluster: StandaloneCluster, images: Path, onnx_224: Path, tmp_path: Path
) -> None:
    """Spark (SparkSubmit, checked on 4.x) refuses cluster deploy mode for Python
    applications on standalone masters, before submitting anything: the README says
    to use client mode there (or YARN/Kubernetes, which accept it)."""
    out = tmp_path / "out"
    cmd = [cluster.spark_submit(), "--master", cluster.master_url, "--deploy-mode", "cluster"]
    cmd += [str(JOB), str(images), str(out), "--model", str(onnx_224), *RUN_ARGS]
    before = cluster.state()
    result = subprocess.run(
        cmd,
        env=_env(cluster, tmp_path / "logs"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    if result.returncode == 0:
        pytest.fail(
            "Spark now accepts --deploy-mode cluster for Python on standalone: compare "
            f"its output with local mode and update the README\n{result.stderr[-2000:]}"
        )
    message = "Cluster deploy mode is currently not supported for python applications on "
    message += "standalone clusters"
    assert message in result.stderr, result.stderr[-3000:]
    assert "org.apache.spark.deploy.SparkSubmit" in result.stderr  # Spark's, not ours
    assert "fruitlens: error" not in result.stderr
    after = cluster.state()  # nothing reached the master
    for key in ("activedrivers", "completeddrivers", "activeapps"):
        assert after.get(key, []) == before.get(key, []), key
    assert not out.exists()


# --------------------------------------------------------------------------------------
# (d), (e) faults: an executor, then a whole worker, SIGKILLed while featurize runs
# --------------------------------------------------------------------------------------


def _app_ui(port: int, path: str = "") -> object:
    apps = get_json(f"http://127.0.0.1:{port}/api/v1/applications", timeout=2)
    return get_json(f"http://127.0.0.1:{port}/api/v1/applications/{apps[0]['id']}{path}", 2)


def _busy_executor(cluster: StandaloneCluster, ui: int) -> tuple[int, int, dict] | None:
    """(worker, executor pid, the active stage) when an executor runs a task of the
    application's first stage, else None: featurize's (the images are listed on the
    driver; stage 0 reads and embeds them, and gathers the PCA statistics)."""
    try:
        app = _app_ui(ui)
        stages = _app_ui(ui, "/stages?status=active")
        executors = _app_ui(ui, "/executors")
    except (OSError, ValueError, IndexError, KeyError):
        return None  # the driver's UI is not up yet
    running = [s for s in stages if s["numActiveTasks"] > 0 and s["stageId"] == 0]
    if not running:
        return None
    for ex in executors:
        if ex["id"] != "driver" and ex["activeTasks"] > 0:
            where = cluster.executor_location(app["id"], ex["id"])
            if where is not None:
                return (*where, running[0])
    return None


def _ui_conf(port: int) -> str:
    """``PYSPARK_SUBMIT_ARGS`` that put the driver's web UI (and REST API) on ``port``."""
    return f"--conf spark.ui.port={port} pyspark-shell"


def _run_and_kill(
    cluster: StandaloneCluster, images: Path, model: Path, tmp: Path, whole_worker: bool
) -> tuple[Path, dict]:
    """``fruitlens run`` on the cluster; while an executor runs a featurize task, SIGKILL
    that executor (or its whole worker). Returns the output and what was killed."""
    out = tmp / "out"
    ui = free_port()
    env = _env(cluster, tmp / "logs", PYSPARK_SUBMIT_ARGS=_ui_conf(ui))
    args = [str(images), str(out), "--model", str(model), "--master", cluster.master_url]
    proc = subprocess.Popen(
        _cli([*args, *RUN_ARGS, "--batch-size", "2", "--no-progress"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp,
    )
    killed: dict = {}
    try:
        deadline = time.monotonic() + 300
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            busy = _busy_executor(cluster, ui)
            if busy is None:
                time.sleep(0.05)
                continue
            worker, pid, stage = busy
            env_props = dict(_app_ui(ui, "/environment")["sparkProperties"])
            if whole_worker:
                pids = cluster.kill_worker(worker)
            else:
                pids = cluster.kill_executors(worker)
            killed = {
                "worker": worker,
                "executor": pid,
                "pids": pids,
                "stage": stage["name"],
                "stage_done": stage["numCompleteTasks"],
                "stage_tasks": stage["numTasks"],
                "console_progress": env_props.get("spark.ui.showConsoleProgress"),
            }
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (killed, stdout[-2000:], stderr[-4000:])
    assert killed, f"no executor ran a featurize task to kill\n{stderr[-3000:]}"
    assert pid in killed["pids"]
    # it was killed mid-featurize: that stage had not finished then
    assert killed["stage_done"] < killed["stage_tasks"], killed
    # --no-progress: Spark's own console progress bar stays on (item 3)
    assert killed["console_progress"] == "true", killed
    return out, killed


@pytest.mark.spark
@pytest.mark.slow
def test_executor_killed_mid_featurize_is_replaced_without_duplicates(
    cluster: StandaloneCluster,
    images: Path,
    onnx_224: Path,
    local_out: Path,
    tmp_path: Path,
) -> None:
    out, killed = _run_and_kill(cluster, images, onnx_224, tmp_path, whole_worker=False)
    figures = assert_same_output(out, local_out)  # one row per image, same features
    print("executor killed:", killed, figures, _stats_source(out))
    # the worker survived and launched a replacement executor for the application
    apps = [a["id"] for a in cluster.state()["completedapps"]]
    dirs = cluster.executor_dirs(apps[-1])
    assert len(dirs) >= 3, (killed, dirs)
    assert cluster.alive_workers() == 2


@pytest.mark.spark
@pytest.mark.slow
def test_worker_killed_mid_featurize_job_finishes_on_the_other(
    cluster: StandaloneCluster,
    images: Path,
    onnx_224: Path,
    local_out: Path,
    tmp_path: Path,
) -> None:
    try:
        out, killed = _run_and_kill(cluster, images, onnx_224, tmp_path, whole_worker=True)
        assert not cluster.workers[killed["worker"]].alive()
        assert cluster.alive_workers() == 1  # the master saw it go
        figures = assert_same_output(out, local_out)
        print("worker killed:", killed, figures, _stats_source(out))
    finally:
        for w in cluster.workers:  # later tests in the module get two workers again
            cluster.restart_worker(w.index)
