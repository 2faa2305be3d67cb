"""The ASGI app of ``fruitlens serve`` (Starlette, imported when an app is created).

Endpoints: ``POST /v1/predict`` (the image as the body, or a multipart field ``file`` /
``image``; ``?top=K``, default 5) → ``{"label", "score", "top": [{"label", "score"}...],
"info": {...}, "timings_ms": {...}}``; ``GET /healthz`` (the process answers),
``GET /readyz`` (503 until the model is loaded and warmed up), ``GET /metrics``
(Prometheus text) and ``GET /`` (the web page). Every error is JSON
``{"error": {"kind", "message"}}`` with a 4xx status for a bad request or image
(:data:`fruitlens.serve._http.STATUS_BY_KIND`) and 503 while the model loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Callable

from .._common import PathLike
from .._core import DEFAULT_MAX_PIXELS
from .._errors import ModelError
from ..classify import Classifier, resolve_model
from ._batcher import Batcher, BatchInfo
from ._http import ApiError, error_of_row, image_of_body, read_body
from ._info import InfoLike, join_info, load_info
from ._metrics import Metrics, MetricsMiddleware
from ._page import PAGE_HTML

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_TOP",
    "ServeState",
    "create_app",
]

#: Largest request body (bytes): a 12-Mpx phone JPEG is 3-8 MB.
DEFAULT_MAX_BODY = 32 * 1024 * 1024
#: Most images in one inference call.
DEFAULT_MAX_BATCH = 32
#: Longest wait for more requests before an inference call (only while some are arriving).
DEFAULT_MAX_WAIT_MS = 5.0
#: Most images waiting for an inference call; more requests get 503 ``overloaded``.
DEFAULT_MAX_QUEUE = 256
#: Classes in ``top`` unless ``?top=`` says otherwise.
DEFAULT_TOP = 5

log = logging.getLogger("fruitlens.serve")


def _warmup_image() -> bytes:
    """An 8x8 24-bit BMP (orange), built here so that warming up needs no file."""
    w = h = 8
    pixels = bytes([40, 120, 200] * w) * h  # BGR rows, 24 bytes: no padding needed
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + dib + pixels


class ServeState:
    """What the app's endpoints share: the classifier (once loaded), the batcher, the
    metrics, the info table and the limits."""

    def __init__(
        self,
        loader: Callable[[], Any],
        *,
        info: dict[str, dict[str, Any]],
        max_body: int,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.loader = loader
        self.max_queue = max_queue
        self.info = info
        self.label_info: dict[str, dict[str, Any]] = {}
        self.max_body = max_body
        self.classifier: Any = None
        self.load_error: str | None = None
        self.on_load_error: Callable[[str], None] | None = None
        self.metrics = Metrics(queue_depth=lambda: self.batcher.queued)
        self.batcher = Batcher(
            self._run,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            on_batch=self.metrics.observe_batch,
        )
        self._load_task: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.classifier is not None

    def not_ready(self) -> ApiError:
        if self.load_error is not None:
            return ApiError("load_failed", f"the model could not be loaded: {self.load_error}")
        return ApiError("loading", "the model is loading; retry in a moment")

    def _run(self, items: list[tuple[bytes, int]]) -> list[dict[str, Any]]:
        top = max(k for _, k in items)
        batch = self.classifier.predict([image for image, _ in items], top=top)
        return batch.to_pylist()

    async def start(self) -> None:
        self.batcher.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        start = time.perf_counter()
        try:
            classifier = await asyncio.to_thread(self._load_and_warm_up)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("fruitlens serve: %s", self.not_ready().message)
            if self.on_load_error is not None:
                self.on_load_error(self.load_error)
            return
        self.label_info, unknown = join_info(self.info, classifier.labels)
        self.classifier = classifier
        self.metrics.ready.set(1)
        missing = [label for label, fields in self.label_info.items() if not fields]
        if self.info and (missing or unknown):
            log.warning(
                "info: %d of the model's %d labels have no info; %d info labels match no "
                "model label (e.g. %s)",
                len(missing),
                len(classifier.labels),
                len(unknown),
                unknown[:3],
            )
        log.info(
            "model ready in %.1f s: %d classes", time.perf_counter() - start, len(classifier.labels)
        )

    def _load_and_warm_up(self) -> Any:
        classifier = self.loader()
        result = classifier.predict([_warmup_image()], top=1).column("error")[0].as_py()
        if result is not None:
            raise ModelError(f"the model failed on a warm-up image: {result}")
        return classifier

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        await self.batcher.stop()

    def error(self, err: ApiError, headers: dict[str, str] | None = None) -> Any:
        from starlette.responses import JSONResponse

        self.metrics.errors.labels(kind=err.kind).inc()
        return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _top_param(request: Any, classes: int) -> int | ApiError:
    text = request.query_params.get("top")
    if text is None:
        return min(DEFAULT_TOP, classes)
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        return ApiError("bad_request", f"top must be a whole number ≥ 0, got {text!r}")
    return min(value, classes)


async def _read_image(state: ServeState, request: Any) -> bytes | ApiError:
    with state.batcher.incoming():
        body = await read_body(request, state.max_body)
        if isinstance(body, ApiError):
            return body
        return image_of_body(body, request.headers.get("content-type"))


def _prediction(state: ServeState, row: dict[str, Any], top: int) -> dict[str, Any]:
    return {
        "label": row["label"],
        "score": float(row["score"]),
        "top": [{"label": t["label"], "score": float(t["score"])} for t in row["top"][:top]],
        "info": dict(state.label_info.get(row["label"], {})),
    }


def _timings(start: float, read: float, batch: BatchInfo) -> dict[str, float]:
    return {
        "read": round((read - start) * 1000.0, 3),
        "queue": round(batch.queue_ms, 3),
        "inference": round(batch.inference_ms, 3),
        "total": round((time.perf_counter() - start) * 1000.0, 3),
    }


async def _predict(request: Any) -> Any:
    from starlette.responses import JSONResponse

    start = time.perf_counter()
    state: ServeState = request.app.state.fruitlens
    if not state.ready:
        return state.error(state.not_ready(), headers={"Retry-After": "1"})
    top = _top_param(request, len(state.classifier.labels))
    if isinstance(top, ApiError):
        return state.error(top)
    image = await _read_image(state, request)
    if isinstance(image, ApiError):
        return state.error(image)
    read = time.perf_counter()
    if state.batcher.queued >= state.max_queue:
        err = ApiError("overloaded", f"{state.batcher.queued} images are waiting; retry later")
        return state.error(err, headers={"Retry-After": "1"})
    try:
        row, batch = await state.batcher.submit((image, top))
    except Exception as exc:
        log.exception("inference failed")
        return state.error(ApiError("inference", f"inference failed: {exc}"))
    if row["error"] is not None:
        state.metrics.images.labels(outcome="error").inc()
        return state.error(error_of_row(row["error"]))
    state.metrics.images.labels(outcome="ok").inc()
    body = _prediction(state, row, top)
    body["timings_ms"] = _timings(start, read, batch)
    return JSONResponse(body, headers={"X-Batch-Size": str(batch.size)})


async def _healthz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state: ServeState = request.app.state.fruitlens
    return JSONResponse({"status": "ok", "ready": state.ready})


async def _readyz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state: ServeState = request.app.state.fruitlens
    if not state.ready:
        return state.error(state.not_ready(), headers={"Retry-After": "1"})
    clf = state.classifier
    path = getattr(clf, "path", None)
    return JSONResponse(
        {"status": "ready", "model": str(path) if path else None, "classes": len(clf.labels)}
    )


async def _metrics(request: Any) -> Any:
    from starlette.responses import Response

    text, content_type = request.app.state.fruitlens.metrics.render()
    return Response(text, media_type=content_type)


async def _page(request: Any) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse(PAGE_HTML, headers={"Cache-Control": "no-cache"})


async def _http_error(request: Any, exc: Any) -> Any:
    state: ServeState = request.app.state.fruitlens
    kinds = {404: "not_found", 405: "method_not_allowed"}
    kind = kinds.get(exc.status_code, "bad_request")
    err = ApiError(kind, f"{request.method} {request.url.path}: {exc.detail}")
    response = state.error(err, headers=getattr(exc, "headers", None))
    response.status_code = exc.status_code
    return response


def _middleware(state: ServeState, cors_origins: Sequence[str]) -> list[Any]:
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    middleware = [Middleware(MetricsMiddleware, metrics=state.metrics)]
    if cors_origins:  # a web app on another origin may call the API
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type"],
            )
        )
    return middleware


def _routes() -> list[Any]:
    from starlette.routing import Route

    return [
        Route("/v1/predict", _predict, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/", _page, methods=["GET"]),
    ]


def _loader(model: Any, threads: int | None, max_pixels: int, max_body: int) -> Callable[[], Any]:
    if isinstance(model, Classifier):
        return lambda: model
    path = resolve_model(model)  # a missing model fails now, not after the server starts
    return lambda: Classifier(path, threads=threads, max_pixels=max_pixels, max_bytes=max_body)


def create_app(
    model_dir: PathLike | Classifier,
    *,
    info: InfoLike | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    threads: int | None = None,
    cors_origins: Sequence[str] = (),
    loader: Callable[[], Any] | None = None,
) -> Any:
    """The Starlette app serving the classifier of ``model_dir`` (a MODEL_DIR, a classifier
    ``.onnx`` or a :class:`fruitlens.Classifier`).

    The model loads in the background when the app starts (``/readyz`` and
    ``/v1/predict`` answer 503 meanwhile). ``info``: a ``.csv``/``.json`` file or a mapping
    label → fields, joined into each prediction's ``info``. Limits: ``max_body`` bytes per
    request (413), ``max_pixels`` per image (413). Concurrent requests are run together,
    up to ``max_batch`` images, waiting at most ``max_wait_ms`` for more; beyond
    ``max_queue`` images waiting, requests get 503 (``overloaded``). ``cors_origins``: web
    origins allowed to call the API from a browser (the page at ``/`` needs none).
    ``loader`` (a callable returning a classifier) replaces the loading of ``model_dir``.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException

    if max_body < 1:
        raise ValueError(f"max_body must be at least 1, got {max_body}")
    load = loader or _loader(model_dir, threads, max_pixels, max_body)
    state = ServeState(
        load,
        info=load_info(info),
        max_body=max_body,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=_routes(),
        middleware=_middleware(state, cors_origins),
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.fruitlens = state
    return app
