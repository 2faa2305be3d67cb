"""Phone photos: bytes→features speed and the accuracy cost of ``resize="fast"``.

    python benchmarks/bench_photos.py [--photos /tmp/fruitlens-photos] [--threads 2]
                                      [--per-class 4] [--speed 64] [--model M]

Photos are made once (cached in ``--photos``) from ``../shared/data/fruits360-mini``:
per class, the first ``--per-class`` files (sorted names), each upscaled (bicubic) to
4032×3024 (12 Mpx, ``jpeg12/``), with mild Gaussian noise (σ=5), saved as JPEG q90; one
in three is stored rotated with EXIF orientation 6 or 8 (pixels turned so that the fruit
is upright once the orientation is applied, as a phone does). ``jpeg24/`` (5664×4248,
24 Mpx) and ``png12/`` (12 Mpx PNG) hold ``--speed`` photos for the speed figures.

Figures, on ``--speed`` photos of each set (best of ``--repeat`` passes):

* ``Embedder.embed`` bytes→features with ``--threads`` threads, ``resize="exact"`` and
  ``resize="fast"`` (skipped when the installed fruitlens has no ``resize``);
* ``fruitlens.decode`` (decode + resize + scale, no model) on one thread, exact and fast;
* Pillow on one thread: ``open → exif_transpose → convert("RGB") → resize((224, 224))``
  (bicubic) → ``x/127.5-1``, and the same after ``Image.draft("RGB", (448, 448))``
  (libjpeg DCT scaling, JPEG only);
* inference alone: ``Embedder.embed_tensors`` on tensors made beforehand, same threads.

Accuracy of ``fast`` against ``exact`` on all the 12-Mpx JPEGs: cosine of the features
(mean / min), and a linear probe (PCA(0.95) + logistic regression, as in
``bench_modes.py``: per class, sorted files, even positions train, odd positions test),
its accuracy for each and the Δ in points, with the count of test predictions that
differ. Prints JSON lines, then tables. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
MINI = HERE.parent.parent / "shared" / "data" / "fruits360-mini"
SIZES = {"jpeg12": (4032, 3024), "jpeg24": (5664, 4248), "png12": (4032, 3024)}
ORIENTATION = 0x0112

# ---------------------------------------------------------------------------- photos


def _orientation(n: int) -> int:
    """1 (none) for two photos in three, else 6 and 8 in turn."""
    if n % 3:
        return 1
    return 6 if (n // 3) % 2 == 0 else 8


def make_photo(job: tuple[int, str, str, str]) -> str:
    """Upscale one source to a phone-sized photo with noise (and EXIF orientation)."""
    from PIL import Image

    n, src, dest, kind = job
    if Path(dest).exists():
        return dest
    size = SIZES[kind]
    rng = np.random.default_rng(n)
    img = Image.open(src).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    tile = rng.normal(0.0, 5.0, (521, 521, 3)).astype(np.float32)
    reps = (size[1] // 521 + 2, size[0] // 521 + 2, 1)
    dy, dx = rng.integers(0, 521, 2)
    noise = np.tile(tile, reps)[dy : dy + size[1], dx : dx + size[0]]
    pixels = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    tmp = dest + ".tmp"
    if kind == "png12":
        img.save(tmp, "PNG", compress_level=3)
    else:
        orient = _orientation(n)
        exif = Image.Exif()
        if orient != 1:
            # exif_transpose turns 6 by ROTATE_270 and 8 by ROTATE_90: store the inverse
            img = img.transpose(
                Image.Transpose.ROTATE_90 if orient == 6 else Image.Transpose.ROTATE_270
            )
            exif[ORIENTATION] = orient
        img.save(tmp, "JPEG", quality=90, exif=exif.tobytes())
    os.replace(tmp, dest)
    return dest


def photo_sets(
    root: Path, source: Path, per_class: int, speed: int, classes: int | None = None
) -> dict[str, list[tuple[int, str, str, str]]]:
    """The jobs (n, source, photo path, kind) of each set; ``jpeg12`` covers the probe."""
    folders = sorted(d for d in source.iterdir() if d.is_dir())[:classes]
    picked = []
    for c in folders:
        for j, f in enumerate(sorted(c.glob("*.jpg"))[:per_class]):
            picked.append((c.name, j, f))
    sets: dict[str, list[tuple[int, str, str, str]]] = {}
    step = max(1, len(picked) // speed)
    for kind in SIZES:
        chosen = picked if kind == "jpeg12" else picked[::step][:speed]
        ext = "png" if kind == "png12" else "jpg"
        sets[kind] = [
            (n, str(f), str(root / kind / label / f"{j:02d}_{f.stem}.{ext}"), kind)
            for n, (label, j, f) in enumerate(chosen)
        ]
    return sets


def ensure_photos(args: argparse.Namespace) -> dict[str, list[tuple[int, str, str, str]]]:
    sets = photo_sets(args.photos, args.source, args.per_class, args.speed, args.classes)
    todo = [job for jobs in sets.values() for job in jobs if not Path(job[2]).exists()]
    if todo:
        print(f"# making {len(todo)} photos in {args.photos}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            for i, _ in enumerate(pool.map(make_photo, todo, chunksize=1), 1):
                if i % 50 == 0:
                    print(f"# {i}/{len(todo)} photos", file=sys.stderr, flush=True)
        print(f"# made in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return sets


# ---------------------------------------------------------------------------- speed


def pillow_tensor(data: bytes, size: int = 224, draft: bool = False) -> np.ndarray:
    """Pillow as a ``pandas_udf`` would do it (EXIF applied, as fruitlens does)."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        if draft:
            img.draft("RGB", (2 * size, 2 * size))  # JPEG only: libjpeg DCT scaling
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        small = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(small, np.float32) / 127.5 - 1.0


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Fastest of ``repeat`` calls (other load only slows down) and the last result."""
    seconds, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds = min(seconds, time.perf_counter() - t0)
    return seconds, out


def features(batch: Any) -> np.ndarray:
    col = batch.column("features")
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)


def make_embedder(model: str, threads: int, resize: str) -> Any:
    """An Embedder with ``resize``, or None when this fruitlens has no such mode."""
    import fruitlens

    try:
        return fruitlens.Embedder(model, threads=threads, resize=resize)
    except (TypeError, ValueError):
        return None


def speed_rows(
    kind: str, data: list[bytes], args: argparse.Namespace, seen: dict[tuple[str, str], Any]
) -> list[dict[str, Any]]:
    """Speed figures of one set; ``seen[(kind, mode)]`` gets the features embedded."""
    import fruitlens

    n, rows = len(data), []

    def row(what: str, threads: int, seconds: float) -> None:
        r = {"set": kind, "what": what, "threads": threads, "images": n,
             "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 2)}  # fmt: skip
        rows.append(r)
        print(json.dumps(r), flush=True)

    for mode in ("exact", "fast"):
        emb = make_embedder(args.model, args.threads, mode)
        if emb is None:
            print(f"# resize={mode!r} not available: skipped", file=sys.stderr)
            continue
        emb.embed(data[:2])  # warm-up (session, threads)
        seconds, out = best_of(lambda e=emb: e.embed(data), args.repeat)
        row(f"embed {mode}", args.threads, seconds)
        seen[(kind, mode)] = features(out)
        decode = lambda m=mode: fruitlens.decode(data, size=224, threads=1, resize=m)  # noqa: E731
        row(f"decode {mode}", 1, best_of(decode, args.repeat)[0])
    full = lambda: [pillow_tensor(d) for d in data]  # noqa: E731
    seconds, tensors = best_of(full, args.repeat)
    row("pillow full", 1, seconds)
    if kind.startswith("jpeg"):
        draft = lambda: [pillow_tensor(d, draft=True) for d in data]  # noqa: E731
        row("pillow draft", 1, best_of(draft, args.repeat)[0])
    if kind == "jpeg12":
        emb = fruitlens.Embedder(args.model, threads=args.threads)
        x = np.stack(tensors)
        emb.embed_tensors(x[:4])
        row("inference only", args.threads, best_of(lambda: emb.embed_tensors(x), args.repeat)[0])
    return rows


# ---------------------------------------------------------------------------- accuracy


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def probe(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> tuple[float, np.ndarray]:
    """PCA(0.95) + logistic regression, as bench_modes: accuracy and test predictions."""
    from sklearn.linear_model import LogisticRegression

    import fruitlens

    pca = fruitlens.PCA(0.95).fit(x[train])
    clf = LogisticRegression(max_iter=3000, C=1.0).fit(pca.transform(x[train]), y[train])
    pred = clf.predict(pca.transform(x[~train]))
    return float((pred == y[~train]).mean()), pred


def accuracy_rows(
    sets: dict[str, list], args: argparse.Namespace, seen: dict[tuple[str, str], Any]
) -> list[dict[str, Any]]:
    """fast vs exact: cosine per set (the speed photos' features where already made, all
    photos for ``jpeg12``) and the linear probe on ``jpeg12``."""
    import fruitlens

    exact = make_embedder(args.model, args.threads, "exact")
    fast = make_embedder(args.model, args.threads, "fast")
    if fast is None:
        print("# resize='fast' not available: no accuracy figures", file=sys.stderr)
        return []
    rows = []
    for kind, jobs in sets.items():
        paths = [job[2] for job in jobs]
        if kind != "jpeg12" and (kind, "exact") in seen and (kind, "fast") in seen:
            fx, ff = seen[(kind, "exact")], seen[(kind, "fast")]
        else:
            fx, ff = features(exact.embed(paths)), features(fast.embed(paths))
        cos = cosine(fx, ff)
        r: dict[str, Any] = {"set": kind, "images": len(fx),
                             "cos_mean": round(float(cos.mean()), 5),
                             "cos_min": round(float(cos.min()), 5)}  # fmt: skip
        if kind == "jpeg12":
            labels = [Path(p).parent.name for p in paths]
            y = np.asarray([sorted(set(labels)).index(c) for c in labels])
            train = np.asarray([int(Path(p).name[:2]) % 2 == 0 for p in paths])
            acc_x, pred_x = probe(fx, y, train)
            acc_f, pred_f = probe(ff, y, train)
            # the original 100x100 files, for reference: what the probe gets at source size
            src = features(fruitlens.Embedder(args.model, threads=args.threads).embed(
                [job[1] for job in jobs]))  # fmt: skip
            acc_s, _ = probe(src, y, train)
            r.update({"classes": len(set(labels)), "train": int(train.sum()),
                      "test": int((~train).sum()), "probe_exact": round(acc_x, 4),
                      "probe_fast": round(acc_f, 4),
                      "delta_points": round(100 * (acc_f - acc_x), 2),
                      "predictions_changed": int((pred_x != pred_f).sum()),
                      "probe_source_100px": round(acc_s, 4)})  # fmt: skip
        rows.append(r)
        print(json.dumps(r), flush=True)
    return rows


# ---------------------------------------------------------------------------- driver


def _tables(
    speed: list[dict[str, Any]], acc: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    print("\n| set | what | threads | images/s | vs pillow full (1 thread) |")
    print("|---|---|---:|---:|---:|")
    for r in speed:
        ref = next(s for s in speed if s["set"] == r["set"] and s["what"] == "pillow full")
        print(
            f"| {r['set']} | {r['what']} | {r['threads']} | {r['images_per_s']:.1f} | "
            f"{r['images_per_s'] / ref['images_per_s']:.2f}× |"
        )
    if acc:
        print("\n| set | images | fast vs exact cos mean | cos min |")
        print("|---|---:|---:|---:|")
        for r in acc:
            print(f"| {r['set']} | {r['images']} | {r['cos_mean']:.5f} | {r['cos_min']:.5f} |")
        p = next((r for r in acc if "probe_exact" in r), None)
        if p:
            print(
                f"\nlinear probe, {p['classes']} classes, {p['train']} train / {p['test']} test "
                f"12-Mpx photos: exact {100 * p['probe_exact']:.2f} %, fast "
                f"{100 * p['probe_fast']:.2f} % (Δ {p['delta_points']:+.2f} pt, "
                f"{p['predictions_changed']} test predictions differ); the 100x100 sources: "
                f"{100 * p['probe_source_100px']:.2f} %"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=Path("/tmp/fruitlens-photos"))
    ap.add_argument("--source", type=Path, default=MINI)
    ap.add_argument("--model", help="ONNX model (default: fruitlens model fetch's, size 224)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=4, help="12-Mpx photos per class")
    ap.add_argument("--speed", type=int, default=64, help="photos per set for the speed figures")
    ap.add_argument("--classes", type=int, help="the first N classes only (smoke runs)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes (best kept)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="to make photos")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.model is None:
        from fruitlens._fetch import default_model_path

        args.model = str(default_model_path(224))
    sets = ensure_photos(args)
    print(json.dumps({"photos": str(args.photos), "model": args.model, "threads": args.threads,
                      "sets": {k: len(v) for k, v in sets.items()}}), flush=True)  # fmt: skip
    speed: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Any] = {}
    if not args.skip_speed:
        for kind, jobs in sets.items():
            step = max(1, len(jobs) // args.speed)
            data = [Path(j[2]).read_bytes() for j in jobs[::step][: args.speed]]
            speed += speed_rows(kind, data, args, seen)
    acc = [] if args.skip_accuracy else accuracy_rows(sets, args, seen)
    _tables(speed, acc, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
