"""Smoke test of an installed fruitlens: embed a few real images, compare with a reference.

Run by scripts/smoke-wheel.sh inside a clean venv with the wheel under test; run it with
the dev build's interpreter to make the reference:

    .venv/bin/python scripts/smoke_wheel.py --model M.onnx --images DIR --save ref.npz
    python scripts/smoke_wheel.py --model M.onnx --images DIR --reference ref.npz

Images: the first N JPEG/PNG files under DIR in sorted order, taken round-robin over the
folders that hold them (classes), so every class is represented. Their paths relative to
DIR key the comparison. Prints one ``smoke:`` line per fact; exits 1 when an image fails,
or when a reference is given and a cosine similarity is below --min-cosine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def pick_images(root: Path, n: int) -> list[Path]:
    by_dir: dict[Path, list[Path]] = defaultdict(list)
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file():
            by_dir[p.parent].append(p)
    queues = [by_dir[d] for d in sorted(by_dir)]
    picked: list[Path] = []
    i = 0
    while len(picked) < n and any(i < len(q) for q in queues):
        picked.extend(q[i] for q in queues if i < len(q))
        i += 1
    return picked[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="ONNX model (fruitlens model fetch)")
    ap.add_argument("--images", required=True, help="folder of images (searched recursively)")
    ap.add_argument("-n", type=int, default=8, help="number of images (8)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save", help="write names and features to this .npz")
    ap.add_argument("--reference", help="compare with the features in this .npz")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import fruitlens
    from fruitlens import _native

    t_import = time.perf_counter() - t0
    print(f"smoke: python {platform.python_version()} on {platform.machine()}")
    print(f"smoke: fruitlens {fruitlens.__version__} from {Path(fruitlens.__file__).parent}")
    print(f"smoke: native module {Path(_native.__file__).name}; import {t_import:.2f} s")

    root = Path(args.images)
    paths = pick_images(root, args.n)
    if not paths:
        print(f"smoke: no images under {root}", file=sys.stderr)
        return 1
    names = [p.relative_to(root).as_posix() for p in paths]
    data = [p.read_bytes() for p in paths]

    t0 = time.perf_counter()
    emb = fruitlens.Embedder(args.model, threads=args.threads)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = emb.embed(data)
    t_embed = time.perf_counter() - t0
    errors = [e for e in batch.column("error").to_pylist() if e is not None]
    print(f"smoke: {emb!r}")
    print(f"smoke: {len(data)} images embedded in {t_embed:.2f} s (model load {t_load:.2f} s)")
    if errors:
        print(f"smoke: FAIL {len(errors)} image(s) failed: {errors[:3]}")
        return 1
    rows = batch.column("features").to_pylist()
    feats = np.stack([np.asarray(f, dtype=np.float32) for f in rows])
    finite = bool(np.isfinite(feats).all())
    print(f"smoke: features {feats.shape}, mean {feats.mean():.6f}, all finite {finite}")

    if args.save:
        np.savez(args.save, names=np.array(names), features=feats)
        print(f"smoke: saved {args.save}")
    if args.reference:
        ref = np.load(args.reference)
        index = {str(n): i for i, n in enumerate(ref["names"])}
        missing = [n for n in names if n not in index]
        if missing:
            print(f"smoke: FAIL images not in the reference: {missing[:3]}")
            return 1
        r = ref["features"][[index[n] for n in names]].astype(np.float64)
        f = feats.astype(np.float64)
        delta = np.abs(f - r).max()
        cos = (f * r).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(r, axis=1))
        ok = bool(cos.min() >= args.min_cosine)
        print(
            f"smoke: vs reference: max |delta| {delta:.3g}, max |ref| {np.abs(r).max():.3g}, "
            f"cosine min {cos.min():.12f} mean {cos.mean():.12f}, "
            f"bit-identical {int((f == r).all(axis=1).sum())}/{len(names)}"
        )
        print(f"smoke: {'PASS' if ok else 'FAIL'} (min cosine {args.min_cosine})")
        return 0 if ok else 1
    print("smoke: PASS (no reference given)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
