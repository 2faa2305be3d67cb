"""Progress lines on stderr while a run works: one base (:class:`ProgressLine`) that a
daemon thread redraws, and its two sources — Spark's status tracker
(:class:`SparkProgress`: ``[phase] stage N: done/total tasks``), what a Spark Connect
server reports (:class:`ConnectProgress`, the same line) and the native engine's image
count (``fruitlens._native_embed.NativeProgress``).

On a terminal the line is rewritten in place; otherwise (logs, CI) one line is written
every ``every`` seconds.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ._common import is_spark_connect

__all__ = ["STAGES", "ConnectProgress", "ProgressLine", "SparkProgress", "spark_progress", "stage"]

#: The timed stages of a run (the keys of the summary's ``stages``) and their
#: progress-line names, for both engines.
STAGES = {"featurize": "featurize", "pca_fit": "PCA fit", "transform_write": "transform+write"}


class ProgressLine:
    """A progress line redrawn by a daemon thread while a ``with`` block runs.

    Subclasses give :meth:`_line` (the text now, or None for nothing to show)."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        interval: float = 0.5,
        every: float = 10.0,
        enabled: bool = True,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._every = every
        self._enabled = enabled
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._phase = ""
        self._phase_start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_len = 0
        self._last_print = 0.0
        self._lock = threading.Lock()

    def phase(self, name: str) -> None:
        """Name what runs now (shown in the progress line)."""
        with self._lock:
            self._clear()
            self._phase = name
            self._phase_start = time.monotonic()

    def __enter__(self) -> Any:
        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="fruitlens-progress")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self._tty and self._last_len:
            self._stream.write("\r" + " " * self._last_len + "\r")
            self._stream.flush()
            self._last_len = 0

    def _line(self) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                line = self._line()
            except Exception:  # the context is stopping, py4j went away, ...
                return
            if line is None:
                continue
            with self._lock:
                if self._tty:
                    pad = max(0, self._last_len - len(line))
                    self._stream.write("\r" + line + " " * pad)
                    self._last_len = len(line)
                    self._stream.flush()
                elif time.monotonic() - self._last_print >= self._every:
                    self._stream.write(line + "\n")
                    self._stream.flush()
                    self._last_print = time.monotonic()


class SparkProgress(ProgressLine):
    """Report the progress of the active Spark stages while a block runs.

    >>> with SparkProgress(spark.sparkContext) as progress:
    ...     progress.phase("featurize")
    ...     df.count()
    """

    def __init__(self, sc: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sc = sc

    def phase(self, name: str) -> None:
        """Name what runs now (shown in the progress line and as the job description)."""
        super().phase(name)
        if self._sc is None:
            return
        try:
            self._sc.setJobDescription(f"fruitlens: {name}")
        except Exception:  # pragma: no cover - best effort
            pass

    def _line(self) -> str | None:
        tracker = self._sc.statusTracker()
        parts = []
        for stage_id in sorted(tracker.getActiveStageIds()):
            info = tracker.getStageInfo(stage_id)
            if info is None:
                continue
            running = f", {info.numActiveTasks} running" if info.numActiveTasks else ""
            parts.append(
                f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks{running}"
            )
        return self._stages_line(parts)

    def _stages_line(self, parts: list[str]) -> str | None:
        if not parts:
            return None
        elapsed = time.monotonic() - self._phase_start
        return f"[{self._phase or 'spark'} {elapsed:5.0f}s] " + "; ".join(parts)


class ConnectProgress(SparkProgress):
    """:class:`SparkProgress` for a Spark Connect session: the stages come from the
    progress the server streams with each result (``registerProgressHandler``, Spark
    4+). Older clients get the phase names only (no task counts)."""

    def __init__(self, spark: Any, **kwargs: Any) -> None:
        super().__init__(None, **kwargs)
        self._spark = spark
        self._stages: dict[int, tuple[int, int, bool]] = {}
        self._inflight = 0

    def phase(self, name: str) -> None:
        ProgressLine.phase(self, name)
        with self._lock:
            self._stages.clear()

    def __call__(self, stages: Any, inflight_tasks: int, operation_id: Any, done: bool) -> None:
        """The handler the Connect client calls with each progress message."""
        with self._lock:
            for st in stages or ():
                self._stages[st.stage_id] = (st.num_completed_tasks, st.num_tasks, st.done)
            self._inflight = inflight_tasks

    def __enter__(self) -> Any:
        register = getattr(self._spark, "registerProgressHandler", None)
        if self._enabled and register is not None:
            register(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        remove = getattr(self._spark, "removeProgressHandler", None)
        if self._enabled and remove is not None:
            try:
                remove(self)
            except Exception:  # pragma: no cover - the session went away
                pass
        super().__exit__(*exc)

    def _line(self) -> str | None:
        with self._lock:
            active = sorted((i, s) for i, s in self._stages.items() if not s[2])
            running = self._inflight
        parts = [f"stage {i}: {done}/{total} tasks" for i, (done, total, _) in active]
        if parts and running:
            parts[-1] += f", {running} running"
        return self._stages_line(parts)


def spark_progress(spark: Any, **kwargs: Any) -> SparkProgress:
    """The progress line of ``spark``'s jobs: :class:`SparkProgress` on a classic
    session, :class:`ConnectProgress` on a Spark Connect one."""
    if is_spark_connect(spark):
        return ConnectProgress(spark, **kwargs)
    return SparkProgress(spark.sparkContext, **kwargs)


@contextlib.contextmanager
def stage(name: str, progress: ProgressLine, stages: dict[str, float]) -> Iterator[None]:
    """One timed stage of a run: its name (:data:`STAGES`) in the progress line while
    it runs, then ``stages[name]`` = its seconds (not set if it fails)."""
    progress.phase(STAGES.get(name, name))
    t0 = time.perf_counter()
    yield
    stages[name] = time.perf_counter() - t0
