"""A Spark Connect server for tests and benchmarks: the pyspark package's
``sbin/start-connect-server.sh --wait`` (its own JVM, ``local[N]``) on a free port of
127.0.0.1, stopped (the whole process group) on exit.

>>> with connect_server() as url:   # "sc://127.0.0.1:PORT"
...     spark = SparkSession.builder.remote(url).getOrCreate()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["connect_available", "connect_server"]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def connect_available() -> str | None:
    """Why a Spark Connect server cannot run here (None if it can): PySpark 4+ ships
    the server jar; the client needs ``pyspark[connect]``'s dependencies."""
    try:
        import pyspark
    except ImportError:
        return "pyspark is not installed"
    if int(pyspark.__version__.split(".")[0]) < 4:
        return f"PySpark {pyspark.__version__} has no bundled Spark Connect server (4+ has)"
    try:
        import grpc  # noqa: F401
        import zstandard  # noqa: F401
        from google.rpc import status_pb2  # noqa: F401
    except ImportError as exc:
        return f"pyspark[connect] dependencies missing: {exc}"
    if not list((_spark_home() / "jars").glob("spark-connect_*.jar")):
        return "no spark-connect jar in the pyspark package"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark Connect server exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise RuntimeError(f"Spark Connect server not up in {timeout}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def connect_server(
    master: str = "local[2]", *, conf: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[str]:
    """Run a Spark Connect server while the block runs; yields its ``sc://`` URL."""
    port = _free_port()
    home = _spark_home()
    work = Path(tempfile.mkdtemp(prefix="fruitlens-connect-"))
    log = work / "server.log"
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
        "spark.driver.memory": "2g",
        **(conf or {}),
    }
    args = [str(home / "sbin" / "start-connect-server.sh"), "--wait", "--master", master]
    for key, value in settings.items():
        args += ["--conf", f"{key}={value}"]
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "SPARK_LOG_DIR": str(work),
        "SPARK_PID_DIR": str(work),
    }
    env.pop("SPARK_REMOTE", None)
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_for(port, proc, log, timeout)
        yield f"sc://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
