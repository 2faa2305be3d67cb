"""The Spark session of ``fruitlens run``: Java check, the embedded local session's
settings, the active/spark-submit session, and temporary SQL confs.

pyspark is imported only when a session is needed, so that ``fruitlens --help`` and
the checks that run before Spark start fast and work without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._common import first_line
from ._errors import CLIError
from ._logs import PROG, _stderr_to

__all__ = [
    "CONNECT_PORT",
    "CONNECT_TIMEOUT",
    "LOCAL_ARROW_BATCH",
    "LOCAL_JAVA_OPTIONS",
    "TASKS_PER_CORE",
    "SqlConf",
    "check_java",
    "check_master_remote",
    "connect_url",
    "cluster_session_config",
    "file_splits",
    "get_session",
    "local_session_config",
    "stop_session",
]

#: Arrow batch size for embedded local sessions (images are large rows).
LOCAL_ARROW_BATCH = 256
#: Without --partitions, images are split into this many equal tasks per core: two
#: keep a core busy while the other's task starts or ends, and fewer tasks cost less
#: (2,624 images on 2 cores: featurize 11.6 s with 2 per core, 12.0 s with 4, 13.5 s
#: with 1).
TASKS_PER_CORE = 2
#: JVM options of the embedded local Spark (FRUITLENS_DRIVER_JAVA_OPTIONS replaces them).
LOCAL_JAVA_OPTIONS = "-XX:+UseParallelGC"

_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
"""


def check_java() -> None:
    """Raise :class:`CLIError` if no Java runtime can be found for Spark."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / ("java.exe" if os.name == "nt" else "java")
        if not java.is_file():
            raise CLIError(
                f"JAVA_HOME={home} has no bin/java: point JAVA_HOME at a Java 17 JDK/JRE "
                "(Spark needs Java), or unset it to use `java` from PATH"
            )
        return
    if shutil.which("java") is None:
        raise CLIError(
            "Java not found: Spark needs a Java runtime (17 recommended). Install one "
            "(e.g. `apt-get install openjdk-17-jre-headless`, `brew install openjdk@17`) "
            "or set JAVA_HOME"
        )


def _import_pyspark() -> Any:
    try:
        import pyspark  # optional dependency (the `spark` extra): imported when needed
    except ImportError as exc:
        raise CLIError("pyspark is not installed: pip install 'fruitlens[spark]'") from exc
    return pyspark


def _pyspark_major() -> int:
    try:
        return int(_import_pyspark().__version__.split(".", 1)[0])
    except (CLIError, ValueError):
        return 0


def _quiet_log4j2() -> str:
    path = Path(tempfile.gettempdir()) / "fruitlens-log4j2.properties"
    try:
        if not path.is_file() or path.read_text() != _LOG4J2:
            path.write_text(_LOG4J2)
    except OSError:  # pragma: no cover - unwritable temp dir: keep Spark's default
        return ""
    return f"-Dlog4j2.configurationFile=file:{path}"


def local_session_config(master: str = "local[*]") -> dict[str, str]:
    """Spark settings of the embedded local session."""
    conf = {
        "spark.master": master,
        "spark.app.name": "fruitlens",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(LOCAL_ARROW_BATCH),
        "spark.sql.shuffle.partitions": str(max(2, 2 * (os.cpu_count() or 1))),
        "spark.driver.memory": os.environ.get("FRUITLENS_DRIVER_MEMORY", "2g"),
        "spark.python.worker.reuse": "true",
    }
    if _pyspark_major() >= 4:  # image bytes read by Spark: Arrow batches of 64 MiB at most
        conf["spark.sql.execution.arrow.maxBytesPerBatch"] = str(64 << 20)
    # The parallel (throughput) collector: the batch job needs no short pauses, and
    # G1's concurrent marking cost about a core-second per 2,600 images here.
    extra = os.environ.get("FRUITLENS_DRIVER_JAVA_OPTIONS", LOCAL_JAVA_OPTIONS)
    java_opts = " ".join(o for o in (_quiet_log4j2(), extra) if o)
    if java_opts:
        conf["spark.driver.extraJavaOptions"] = java_opts
    return conf


def cluster_session_config(progress: bool = True) -> dict[str, str]:
    """Spark settings of a new session on a non-local master (standalone, YARN, k8s).

    Spark's console progress bar is off while fruitlens shows its own progress line
    (the two would interleave on the terminal) and on with ``--no-progress``, where it
    is the only progress shown. Local sessions never show it
    (:func:`local_session_config`)."""
    return {"spark.ui.showConsoleProgress": "false" if progress else "true"}


def get_session(
    master: str | None = None,
    *,
    quiet: bool = True,
    log_file: Path | None = None,
    remote: str | None = None,
    progress: bool = True,
) -> tuple[Any, bool]:
    """Return ``(spark, created)``: the active session, the spark-submit one, or a new one.

    * an active session (notebook, tests, spark-submit driver) is used as is;
    * ``remote`` (or ``SPARK_REMOTE``, without ``master``): a Spark Connect session
      (``sc://host:port``; ``local[N]`` starts a local Connect server);
    * inside ``spark-submit`` (``PYSPARK_GATEWAY_PORT`` set) the configured one;
    * else a new session on ``master`` (default ``local[*]``), configured for local
      use when the master is ``local...``.

    ``progress``: fruitlens shows its own progress line (``--no-progress``: False);
    a new session on a cluster then gets :func:`cluster_session_config`.

    With ``log_file``, a new Spark's JVM (and the Python workers it starts) write their
    own stderr there instead of the terminal.
    """
    _import_pyspark()
    remote = connect_url(master, remote)
    if remote:
        return _connect_session(remote, master, log_file)
    # pyspark: optional, imported only once a session is needed (see the module doc)
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None and SparkContext._active_spark_context is not None:
        active = SparkSession.builder.getOrCreate()
    if active is not None:
        current = active.sparkContext.master
        if master and master != current:
            print(
                f"{PROG}: note: using the active Spark session (master {current}), "
                f"not --master {master}",
                file=sys.stderr,
            )
        return active, False
    if master is None and os.environ.get("PYSPARK_GATEWAY_PORT"):
        return SparkSession.builder.appName("fruitlens").getOrCreate(), True
    spark = _new_session(SparkSession.builder, master or "local[*]", log_file, progress)
    if quiet:
        spark.sparkContext.setLogLevel("ERROR")  # a classic session
    return spark, True


def check_master_remote(master: str | None, remote: str | None) -> None:
    """:class:`CLIError` when both a master and a Spark Connect URL are given."""
    if master and remote:
        raise CLIError(f"give either --master ({master}) or --remote ({remote}), not both")


def connect_url(master: str | None, remote: str | None) -> str | None:
    """The Spark Connect URL to use: ``remote``, else ``SPARK_REMOTE`` unless a
    ``master`` is given; None for a classic session."""
    return remote or (None if master else os.environ.get("SPARK_REMOTE") or None)


#: Spark Connect's default port, and how long to wait for a server to accept.
CONNECT_PORT = 15002
CONNECT_TIMEOUT = 10.0


def _check_reachable(remote: str) -> None:
    """:class:`CLIError` unless the Spark Connect server of ``sc://HOST[:PORT]/...``
    accepts a TCP connection within :data:`CONNECT_TIMEOUT` seconds (the client itself
    retries an unreachable server with backoff for minutes, silently)."""
    parts = urlsplit(remote)
    if parts.scheme != "sc" or not parts.hostname:
        raise CLIError(f"--remote must be sc://HOST[:PORT] or local[N], got {remote}")
    port = parts.port or CONNECT_PORT
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise CLIError(
            f"cannot reach the Spark Connect server at {parts.hostname}:{port} ({exc}); "
            "is it running (sbin/start-connect-server.sh) and is the address right?"
        ) from None


def _connect_session(remote: str, master: str | None, log_file: Path | None) -> tuple[Any, bool]:
    """``(spark, created)``: the active Spark Connect session of ``remote``, or a new one."""
    check_master_remote(master, remote)
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError as exc:  # the connect extra: grpcio, grpcio-status, protobuf, ...
        raise CLIError(
            f"Spark Connect ({remote}) needs pyspark's connect extra: "
            f"pip install 'pyspark[connect]' ({first_line(exc)})"
        ) from exc
    active = ConnectSession.getActiveSession()
    if active is not None:
        return active, False
    from pyspark.sql import SparkSession  # its builder starts local[N] Connect servers

    if not remote.startswith("local"):
        _check_reachable(remote)
    builder = SparkSession.builder.remote(remote)
    if remote.startswith("local"):  # a Connect server in a JVM of this process
        check_java()
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for key, value in local_session_config(remote).items():
            if key != "spark.master":  # the server's settings, as a local session's
                builder = builder.config(key, value)
    try:
        with _stderr_to(log_file), warnings.catch_warnings():
            # the local server's static confs, set again as session confs: refused, warned
            warnings.filterwarnings("ignore", "Failed to set", UserWarning)
            return builder.getOrCreate(), True
    except Exception as exc:
        why = first_line(exc)
        raise CLIError(f"could not connect to Spark Connect at {remote}: {why}") from exc


def _new_session(builder: Any, master: str, log_file: Path | None, progress: bool = True) -> Any:
    """A new session on ``master`` (local ones get :func:`local_session_config`)."""
    check_java()
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        for key, value in local_session_config(master).items():
            builder = builder.config(key, value)
    else:
        builder = builder.master(master).appName("fruitlens")
        for key, value in cluster_session_config(progress).items():
            builder = builder.config(key, value)
    try:
        with _stderr_to(log_file):
            return builder.getOrCreate()
    except Exception as exc:
        raise CLIError(
            f"could not start Spark ({master}): {first_line(exc)}; "
            "check JAVA_HOME / `java -version` (Spark needs Java 17)"
        ) from exc


def stop_session(spark: Any) -> None:
    """Stop a session this run created (not inside spark-submit, which owns it)."""
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return
    try:
        spark.stop()
    except Exception:  # an interrupted py4j connection: the run's own error counts
        pass


class SqlConf:
    """Set Spark SQL confs for the `with` block, then restore what was there."""

    def __init__(self, spark: Any, settings: dict[str, str]) -> None:
        self._spark = spark
        self._settings = settings
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> SqlConf:
        conf = self._spark.conf
        self._saved = {key: conf.get(key, None) for key in self._settings}
        for key, value in self._settings.items():
            conf.set(key, value)
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                self._spark.conf.unset(key)
            else:
                self._spark.conf.set(key, value)


def file_splits(partitions: int) -> dict[str, str]:
    """SQL confs that make a file source split a folder into about ``partitions``
    partitions of about equal file counts, and a local relation (the listing of
    :func:`fruitlens.spark.list_images`) into exactly that many of equal row counts.

    Spark packs files (largest first) into splits of at most
    ``max(openCost, Σ(size + openCost) / minPartitionNum)`` bytes, capped by
    ``maxPartitionBytes``. Lifting the cap leaves ``minPartitionNum`` splits; the
    4 MiB open cost per file weighs every small image about the same, while a
    multi-megabyte photo (slower to decode) weighs more. Planning happens when the
    query is cached or run, so these must be set until then.
    """
    return {
        "spark.sql.files.maxPartitionBytes": str(1 << 40),
        "spark.sql.files.openCostInBytes": str(4 << 20),
        "spark.sql.files.minPartitionNum": str(partitions),
        "spark.sql.leafNodeDefaultParallelism": str(partitions),
    }
