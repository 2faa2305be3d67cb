"""A real Spark standalone cluster for tests: one Master and N Workers started from the
installed pyspark package (``$SPARK_HOME/bin/spark-class``), on 127.0.0.1 only.

    with StandaloneCluster(tmp_path, workers=2) as cluster:
        subprocess.run([..., "--master", cluster.master_url], env=cluster.env(), ...)
        cluster.executor_pids(0)   # CoarseGrainedExecutorBackend JVMs of worker 0
        cluster.kill_worker(1)     # SIGKILL worker 1's JVM and its executors

Every process it starts logs to ``<root>/logs``; :meth:`StandaloneCluster.stop` kills
them by pid: the Workers and the Master, and every process whose working directory
lies under ``<root>`` (the executors, started by the Workers in ``<work-dir>/<app>/<id>``,
and their Python daemons and workers, which inherit it), even if a Worker died first.

``standalone_cluster``: the same as a module-scoped pytest fixture named ``cluster``
(import it into a test module; skipped without pyspark 4.x or Java).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "StandaloneCluster",
    "Worker",
    "free_port",
    "get_json",
    "spark_home",
    "standalone_cluster",
]

HOST = "127.0.0.1"
EXECUTOR_CLASS = "CoarseGrainedExecutorBackend"


def spark_home() -> Path:
    """``SPARK_HOME`` of the installed pyspark package (the folder of ``pyspark``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> dict:
    """GET a JSON document (the web UIs on 127.0.0.1)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def _proc_info(pid: int) -> tuple[str, str] | None:
    """(cwd, cmdline) of a live process, None if it is gone or unreadable."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return cwd, cmdline


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def _kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


@dataclass
class Worker:
    """One Worker JVM of the cluster."""

    index: int
    proc: subprocess.Popen
    work_dir: Path
    webui_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


class StandaloneCluster:
    """Master + ``workers`` Workers (``cores`` cores, ``memory`` each) under ``root``."""

    def __init__(
        self,
        root: Path,
        workers: int = 2,
        cores: int = 1,
        memory: str = "2g",
        python: str = sys.executable,
        start_timeout: float = 90.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.n_workers = workers
        self.cores = cores
        self.memory = memory
        self.python = python
        self.start_timeout = start_timeout
        self.home = spark_home()
        self.port = free_port()
        self.webui_port = free_port()
        self.master: subprocess.Popen | None = None
        self.workers: list[Worker] = []

    # -- addresses, environment ---------------------------------------------------------

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{HOST}:{self.webui_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for the cluster's JVMs and for drivers that use it."""
        env = dict(os.environ)
        env.update(
            SPARK_HOME=str(self.home),
            PYSPARK_PYTHON=self.python,
            PYSPARK_DRIVER_PYTHON=self.python,
            SPARK_LOCAL_IP=HOST,
            SPARK_LOCAL_HOSTNAME=HOST,
        )
        env.pop("PYSPARK_GATEWAY_PORT", None)
        env.pop("PYSPARK_GATEWAY_SECRET", None)
        env.update(extra)
        return env

    def spark_submit(self) -> str:
        return str(self.home / "bin" / "spark-submit")

    # -- start / stop ---------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        cmd = [str(self.home / "bin" / "spark-class"), *args]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not reach them first
            )
        return proc, log

    def start(self) -> StandaloneCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        master_args = ["org.apache.spark.deploy.master.Master", "--host", HOST]
        master_args += ["--port", str(self.port), "--webui-port", str(self.webui_port)]
        self.master, self.master_log = self._spawn("master", master_args, self.root)
        self._wait(lambda s: True, "the master's web UI")
        for i in range(self.n_workers):
            work_dir = self.root / f"w{i}"
            work_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            args = ["org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST]
            args += ["--cores", str(self.cores), "--memory", self.memory]
            args += ["--work-dir", str(work_dir), "--webui-port", str(port)]
            proc, log = self._spawn(f"worker{i}", args, work_dir)
            self.workers.append(Worker(i, proc, work_dir, port, log))
        self._wait(
            lambda s: self._alive_count(s) >= self.n_workers, f"{self.n_workers} ALIVE workers"
        )

    def _wait(self, ready, what: str) -> dict:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, proc in [("master", self.master)] + [
                (f"worker{w.index}", w.proc) for w in self.workers
            ]:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            try:
                state = self.state()
            except OSError:
                state = None
            if state is not None and ready(state):
                return state
            time.sleep(0.25)
        raise TimeoutError(f"standalone cluster: no {what} after {self.start_timeout} s")

    def stop(self) -> None:
        """Kill every process the cluster started (by pid), executors included."""
        for w in self.workers:
            _kill(w.pid, signal.SIGTERM)
        if self.master is not None:
            _kill(self.master.pid, signal.SIGTERM)
        procs = [w.proc for w in self.workers] + ([self.master] if self.master else [])
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc.pid)
                proc.wait(timeout=10)
        # executors and their Python workers: their cwd is under root (stopped Workers
        # kill them, but not a SIGKILLed Worker)
        for _ in range(3):
            left = self.pids_under(self.root)
            if not left:
                break
            for pid in left:
                _kill(pid)
            time.sleep(0.2)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------

    def state(self) -> dict:
        """The master's ``/json/``: workers, activeapps, completedapps, ..."""
        return get_json(f"{self.webui_url}/json/")

    def alive_workers(self) -> int:
        return self._alive_count(self.state())

    def active_apps(self) -> list[dict]:
        return list(self.state().get("activeapps", []))

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # -- processes ------------------------------------------------------------------

    def pids_under(self, root: Path) -> list[int]:
        """Live processes (not this one) whose working directory lies under ``root``."""
        me = os.getpid()
        found = []
        for pid in _pids():
            info = _proc_info(pid)
            if pid != me and info is not None and _under(info[0], Path(root)):
                found.append(pid)
        return found

    def executor_pids(self, worker: int, app_id: str | None = None) -> list[int]:
        """The executor JVMs (``CoarseGrainedExecutorBackend``) worker ``worker`` runs
        (for ``app_id`` only when given): their cwd is ``<work-dir>/<app>/<id>``."""
        root = self.workers[worker].work_dir
        pids = []
        for pid in _pids():
            info = _proc_info(pid)
            if info is None or EXECUTOR_CLASS not in info[1] or not _under(info[0], root):
                continue
            if app_id is None or app_id in info[1]:
                pids.append(pid)
        return pids

    def python_pids(self, worker: int) -> list[int]:
        """Python processes (pyspark daemon, workers) under worker ``worker``'s executors."""
        root = self.workers[worker].work_dir
        return [
            pid
            for pid in self.pids_under(root)
            if (info := _proc_info(pid)) and EXECUTOR_CLASS not in info[1] and "java" not in info[1]
        ]

    def executor_dirs(self, app_id: str | None = None) -> list[Path]:
        """``<work-dir>/<app>/<executor id>`` of every executor launched so far."""
        dirs = []
        for w in self.workers:
            for app in w.work_dir.glob("app-*"):
                if app_id is None or app.name == app_id:
                    dirs += [d for d in app.iterdir() if d.is_dir()]
        return sorted(dirs)

    def executor_location(self, app_id: str, executor_id: str) -> tuple[int, int] | None:
        """(worker index, pid) of executor ``executor_id`` of ``app_id``, None if not
        running (found by its working directory, ``<work-dir>/<app>/<id>``)."""
        for w in self.workers:
            cwd = w.work_dir / app_id / str(executor_id)
            for pid in self.executor_pids(w.index, app_id):
                info = _proc_info(pid)
                if info is not None and info[0] == str(cwd):
                    return w.index, pid
        return None

    def kill_executors(self, worker: int, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to worker ``worker``'s executor JVMs; return their pids."""
        pids = self.executor_pids(worker)
        return [pid for pid in pids if _kill(pid, sig)]

    def kill_worker(self, worker: int) -> list[int]:
        """SIGKILL worker ``worker`` as a machine would die: its JVM and its executors
        (their Python workers exit when their executor does). Returns the pids."""
        w = self.workers[worker]
        pids = [w.pid, *self.executor_pids(worker)]
        killed = [pid for pid in pids if _kill(pid)]
        w.proc.wait(timeout=10)
        return killed

    def restart_worker(self, worker: int) -> None:
        """Start worker ``worker`` again (after :meth:`kill_worker`), same work dir."""
        w = self.workers[worker]
        if w.alive():
            return
        w.webui_port = free_port()
        args = ["org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST]
        args += ["--cores", str(self.cores), "--memory", self.memory]
        args += ["--work-dir", str(w.work_dir), "--webui-port", str(w.webui_port)]
        w.proc, w.log = self._spawn(f"worker{worker}", args, w.work_dir)
        self._wait(lambda s: self._alive_count(s) >= self.n_workers, "restarted worker")

    @staticmethod
    def _alive_count(state: dict) -> int:
        return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))


def _java_ok() -> bool:
    return bool(os.environ.get("JAVA_HOME") or shutil.which("java"))


@pytest.fixture(scope="module", name="cluster")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 2-worker standalone cluster (1 core, 2g each) for the module; pyspark 4.x."""
    pyspark = pytest.importorskip("pyspark")
    if int(pyspark.__version__.split(".")[0]) < 4:
        pytest.skip(f"the standalone cluster tests run on PySpark 4.x ({pyspark.__version__})")
    if not _java_ok():
        pytest.skip("no Java runtime")
    if not (spark_home() / "bin" / "spark-class").exists():
        pytest.skip("this pyspark has no bin/spark-class")
    with StandaloneCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster
