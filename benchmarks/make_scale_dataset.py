"""Make a Fruits-360-sized dataset (~90,000 100x100 JPEGs) by augmenting real photos.

    python benchmarks/make_scale_dataset.py OUT [--count 90000] [--workers 2]

Sources: every image under ``../shared/data`` (fruits360-sample and fruits360-mini).
Each output is a deterministic augmentation of one source: horizontal/vertical flip,
rotation by a multiple of 90° or a small angle (white fill, like the Fruits-360
background), a random crop resized back to 100x100, and colour jitter (brightness,
contrast, saturation). Files go to ``OUT/all/<class>/<n>.jpg``; ``OUT/<N>`` folders
(e.g. ``OUT/10000``) hold hard links to the first N files for runs at several sizes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def sources(root: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(root.rglob("*.jpg")):
        out.append((p.parent.name, p))
    return out


def augment(job: tuple[int, str, str, str]) -> str:
    from PIL import Image, ImageEnhance

    n, label, src, out_dir = job
    rng = random.Random(n)
    img = Image.open(src).convert("RGB")
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.2:
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if rng.random() < 0.5:
        img = img.rotate(rng.choice([90, 180, 270]))
    else:
        img = img.rotate(rng.uniform(-20, 20), fillcolor=(255, 255, 255))
    w, h = img.size
    c = rng.uniform(0.8, 1.0)
    cw, ch = int(w * c), int(h * c)
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((100, 100))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
    path = Path(out_dir) / label / f"{n:06d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=90_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--subsets", default="10000,30000,90000")
    ap.add_argument("--source", type=Path, default=SHARED)
    args = ap.parse_args(argv)

    src = sources(args.source)
    if not src:
        sys.exit(f"no source images under {args.source}")
    all_dir = args.out / "all"
    jobs = [(n, *map(str, src[n % len(src)]), str(all_dir)) for n in range(args.count)]
    jobs = [(n, label, path, out) for n, label, path, out in jobs]
    done: list[str] = []
    with ProcessPoolExecutor(args.workers) as pool:
        for i, path in enumerate(pool.map(augment, jobs, chunksize=256), 1):
            done.append(path)
            if i % 10_000 == 0:
                print(f"{i}/{args.count} images", file=sys.stderr, flush=True)
    for size in (int(s) for s in args.subsets.split(",") if s):
        subset = args.out / str(size)
        for path in done[:size]:
            p = Path(path)
            target = subset / p.parent.name / p.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(p, target)
        print(f"{subset}: {min(size, len(done))} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
