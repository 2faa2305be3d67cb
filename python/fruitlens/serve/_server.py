"""Running the app: :func:`serve` (uvicorn, in the foreground), :class:`ServerThread`
(uvicorn in a background thread on 127.0.0.1, for tests, benchmarks and notebooks) and the
``fruitlens serve`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import socket
import sys
import threading
import time
from typing import Any

from .._args import positive_int, threads_arg
from .._common import PathLike
from .._core import DEFAULT_MAX_PIXELS
from .._errors import CLIError
from ._app import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_WAIT_MS,
    create_app,
)
from ._info import InfoLike

__all__ = ["ServerThread", "add_serve_arguments", "cmd_serve", "require_serve_extra", "serve"]

_EXTRA = ("starlette", "uvicorn", "python_multipart", "prometheus_client")


def require_serve_extra() -> None:
    """Raise :class:`CLIError` naming the missing packages unless the ``serve`` extra is
    installed."""
    missing = []
    for name in _EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise CLIError(
            f"fruitlens serve needs {', '.join(missing)}: pip install 'fruitlens[serve]'"
        )


def _config(app: Any, host: str, port: int, log_level: str, access_log: bool) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )


def serve(
    model_dir: PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    info: InfoLike | None = None,
    *,
    log_level: str = "info",
    access_log: bool = False,
    **options: Any,
) -> int:
    """Serve the classifier of ``model_dir`` on ``host:port`` until interrupted (Ctrl-C,
    SIGTERM). ``options`` are those of :func:`create_app`. Returns the exit status: 0, or 1
    when the model could not be loaded (the server stops then)."""
    require_serve_extra()
    import uvicorn

    app = create_app(model_dir, info=info, **options)
    server = uvicorn.Server(_config(app, host, port, log_level, access_log))
    state = app.state.fruitlens

    def stop(_message: str) -> None:
        server.should_exit = True

    state.on_load_error = stop
    server.run()
    if state.load_error is not None:
        return 1
    return 0 if server.started else 1


class ServerThread:
    """An app served by uvicorn in a daemon thread on ``host`` and a free port::

        with ServerThread(create_app(model_dir)) as server:
            httpx.post(server.url + "/v1/predict", content=jpeg)

    ``wait_ready`` (default) waits until ``/readyz`` would answer 200.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 120.0) -> ServerThread:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(
            _config(self.app, self.host, self.port, self.log_level, False)
        )
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fruitlens-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        state = getattr(self.app.state, "fruitlens", None)
        while not self._server.started or (wait_ready and state is not None and not state.ready):
            if wait_ready and state is not None and state.load_error is not None:
                self.stop()
                raise CLIError(f"the model could not be loaded: {state.load_error}")
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise CLIError(f"the server did not start on {self.url} within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> ServerThread:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens serve``."""
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a MODEL_DIR from `fruitlens train` or a .onnx"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    parser.add_argument(
        "--info",
        metavar="FILE",
        help="CSV/JSON of facts per label (display_name, description, ...) joined into "
        "each prediction's `info`",
    )
    _add_limit_arguments(parser)
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from this origin (e.g. https://app.example.com; repeatable)",
    )
    parser.add_argument(
        "--threads", type=threads_arg, metavar="N", help="inference threads (default: CPUs)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-body",
        metavar="BYTES",
        type=positive_int,
        default=DEFAULT_MAX_BODY,
        help=f"largest request body in bytes (413 above; default {DEFAULT_MAX_BODY})",
    )
    parser.add_argument(
        "--max-pixels",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image in pixels (413 above; default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--max-batch",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"most images per inference call (default {DEFAULT_MAX_BATCH})",
    )
    parser.add_argument(
        "--max-wait-ms",
        metavar="MS",
        type=float,
        default=DEFAULT_MAX_WAIT_MS,
        help="longest wait for concurrent requests to batch together "
        f"(default {DEFAULT_MAX_WAIT_MS:g})",
    )
    parser.add_argument(
        "--max-queue",
        metavar="N",
        type=positive_int,
        default=DEFAULT_MAX_QUEUE,
        help=f"most images waiting for inference (503 above; default {DEFAULT_MAX_QUEUE})",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """``fruitlens serve``: the exit status."""
    require_serve_extra()
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {args.port}")
    if not 0 <= args.max_wait_ms <= 1000:
        raise CLIError(f"--max-wait-ms must be between 0 and 1000, got {args.max_wait_ms}")
    logging.getLogger("fruitlens.serve").setLevel(args.log_level.upper())
    if not logging.getLogger().handlers:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s: %(message)s")
    return serve(
        args.model_dir,
        host=args.host,
        port=args.port,
        info=args.info,
        log_level=args.log_level,
        access_log=args.access_log,
        max_body=args.max_body,
        max_pixels=args.max_pixels,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        threads=args.threads,
        cors_origins=args.cors_origin,
    )
