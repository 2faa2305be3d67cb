"""``fruitlens serve``: the classifier behind HTTP, for the app and for people.

``POST /v1/predict`` with an image (the request body, or a multipart field ``file`` /
``image``) answers ``{"label", "score", "top": [{"label", "score"}...], "info": {...},
"timings_ms": {...}}``; ``GET /healthz``, ``GET /readyz`` (503 while the model loads),
``GET /metrics`` (Prometheus) and ``GET /`` (a page to take or upload a photo).
Concurrent requests are micro-batched into one inference call. Bad requests get a 4xx
JSON error ``{"error": {"kind", "message"}}``.

Needs the ``serve`` extra (Starlette, uvicorn, python-multipart, prometheus_client),
imported only when an app is created, so ``import fruitlens.serve`` works without it.

>>> from fruitlens.serve import create_app, ServerThread
>>> with ServerThread(create_app("models/fruits", info="fruits.csv")) as server:
...     httpx.post(server.url + "/v1/predict", content=open("apple.jpg", "rb").read()).json()
"""

from __future__ import annotations

from ._app import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_TOP,
    create_app,
)
from ._http import STATUS_BY_KIND
from ._info import load_info
from ._server import ServerThread, add_serve_arguments, cmd_serve, serve

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WAIT_MS",
    "DEFAULT_TOP",
    "STATUS_BY_KIND",
    "ServerThread",
    "add_serve_arguments",
    "cmd_serve",
    "create_app",
    "load_info",
    "serve",
]
