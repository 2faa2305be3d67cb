"""The image crate's public decoder test images through fruitlens and Pillow's pipeline.

    python tests/corpus/image_rs_table.py [FOLDER] [--size 96] [--details]

FOLDER defaults to ``../shared/data/image-rs-tests`` beside the repository. Every image
goes through ``fruitlens.decode`` as one batch and through the classic pipeline
(Pillow decode, ``ImageOps.exif_transpose``, alpha on white, RGB, bicubic resize,
``x/127.5 - 1``: ``make_corpus.pillow_reference``); both tensors go through the same
seeded random MobileNetV2 and the features are compared.

Outcome of one file:

* ``agree``: fruitlens gives features and the cosine to Pillow's pipeline is
  ≥ :data:`AGREE_COSINE` (the level difference of the tensors is reported too);
* ``error``: fruitlens gives a specific per-row error (never ``internal``) — split
  into files Pillow cannot decode either and files Pillow decodes (each of those must
  be listed in :data:`EXPLAINED`);
* ``only``: fruitlens decodes a file Pillow refuses (listed in :data:`EXPLAINED`);
* ``disagree``: fruitlens gives features that differ from Pillow's (never allowed).

16-bit grey images are compared like the others: Pillow's ``I;16 → RGB`` clips every
value above 255 to 255, and fruitlens does the same.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_FOLDER = HERE.parents[2] / "shared" / "data" / "image-rs-tests"

#: Cosine of the embedded features at or above which fruitlens agrees with Pillow.
AGREE_COSINE = 0.9999

EXTENSIONS = {
    ".bmp": "bmp",
    ".gif": "gif",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".webp": "webp",
}

#: Files where fruitlens and Pillow's pipeline do not both give the same features:
#: path (relative to the folder) → (fruitlens outcome: an error kind or "features",
#: why).
_PILLOW_BMP_LAYOUT = (
    "Pillow refuses this BMP bitfields layout / bit depth; fruitlens decodes it per the "
    "BMP specification (image crate)"
)
_YCBCR = (
    "YCbCr TIFF (PhotometricInterpretation 6): the image crate's TIFF decoder does not "
    "convert YCbCr, so fruitlens says `unsupported` instead of guessing"
)
EXPLAINED: dict[str, tuple[str, str]] = {
    **{
        f"bmp/images/{name}.bmp": ("features", _PILLOW_BMP_LAYOUT)
        for name in (
            "V3_A4_R4_G4_B4",
            "V3_A4_R4_G4_B4_Top_Down",
            "V3_X4_R4_G4_B4",
            "V3_X4_R4_G4_B4_Top_Down",
            "pal2",
            "pal2color",
            "rgb16-231",
            "rgb32-111110",
            "rgb32bf",
            "rgba16-1924",
            "rgba32-61754",
        )
    },
    **{
        f"tiff/testsuite/rgb32f_{name}.tiff": (
            "features",
            "32-bit float RGB TIFF: Pillow cannot identify it; fruitlens clamps to [0, 1] "
            "and scales to 8 bits",
        )
        for name in ("bw", "color")
    },
    **{
        f"tiff/testsuite/{name}.tif": ("unsupported", _YCBCR)
        for name in ("ycbcr_jpeg_8bit", "ycbcr_lzw_broken", "ycbcr_lzw_bt709")
    },
}

_spec = importlib.util.spec_from_file_location("make_corpus", HERE / "make_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
_spec.loader.exec_module(make_corpus)


@dataclass
class Row:
    path: str
    format: str
    outcome: str  # agree | error | only | disagree | internal
    fruitlens_error: str | None
    pillow_error: str | None
    cosine: float | None
    max_levels: float | None


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)


def pillow_pipeline(data: bytes, size: int) -> np.ndarray:
    """``make_corpus.pillow_reference``, warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_corpus.pillow_reference(data, size)


def classify(folder: Path, size: int = 96, model: Path | None = None) -> list[Row]:
    """Every image of ``folder`` through fruitlens (one batch) and Pillow."""
    import fruitlens

    files = image_files(folder)
    datas = [p.read_bytes() for p in files]
    batch = fruitlens.decode(datas, size=size)
    errors = batch.column("error").to_pylist()
    col = batch.column("pixels")
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            model = fruitlens.build_random_model(Path(tmp) / "random.onnx", input_size=size)
        emb = fruitlens.Embedder(model, threads=1)
        # The whole folder through embed as one batch too: no row may take it down.
        embedded = emb.embed(datas)
        assert embedded.num_rows == len(datas)
        rows = []
        for i, (path, data) in enumerate(zip(files, datas)):
            rel = path.relative_to(folder).as_posix()
            fmt = EXTENSIONS[path.suffix.lower()]
            try:
                ref = pillow_pipeline(data, size)
                perr = None
            except Exception as e:  # any Pillow failure is an outcome
                ref, perr = None, f"{type(e).__name__}: {e}"
            ferr = errors[i]
            cos = levels = None
            if ferr is not None:
                outcome = "internal" if ferr.startswith("internal") else "error"
            elif ref is None:
                outcome = "only"
            else:
                ours = np.asarray(col[i].values, np.float32).reshape(size, size, 3)
                levels = float(np.abs(ours - ref).max() * 127.5)
                a, b = (
                    emb.embed_tensors(np.stack([ours, ref]).astype(np.float32))
                    .reshape(2, -1)
                    .astype(np.float64)
                )
                cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
                outcome = "disagree"
                if cos >= AGREE_COSINE:
                    outcome = "agree"
            rows.append(Row(rel, fmt, outcome, ferr, perr, cos, levels))
    return rows


def problems(rows: list[Row]) -> list[str]:
    """What the test refuses: disagreements, internal errors, unexplained differences."""
    out = []
    for r in rows:
        if r.outcome in ("disagree", "internal"):
            out.append(f"{r.path}: {r.outcome} (cosine {r.cosine}, error {r.fruitlens_error})")
        differs = r.outcome == "only" or (r.outcome == "error" and r.pillow_error is None)
        if differs:
            want = EXPLAINED.get(r.path)
            got = "features" if r.outcome == "only" else (r.fruitlens_error or "").split(":")[0]
            if want is None or want[0] != got:
                pillow = "fails" if r.pillow_error else "decodes"
                out.append(f"{r.path}: {got} where Pillow {pillow}, not explained")
    return out


def table(rows: list[Row]) -> str:
    cols = [
        "files",
        "agree",
        "error (Pillow fails too)",
        "error (Pillow decodes)",
        "only fruitlens decodes",
        "disagree",
        "internal",
    ]
    per: dict[str, Counter] = {}
    for r in rows:
        c = per.setdefault(r.format, Counter())
        c["files"] += 1
        key = {
            "agree": "agree",
            "only": "only fruitlens decodes",
            "disagree": "disagree",
            "internal": "internal",
        }.get(r.outcome)
        if key is None:
            key = "error (Pillow fails too)" if r.pillow_error else "error (Pillow decodes)"
        c[key] += 1
    total = sum(per.values(), Counter())
    lines = ["| format | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for fmt in [*sorted(per), "all"]:
        c = total if fmt == "all" else per[fmt]
        lines.append(f"| {fmt} | " + " | ".join(str(c[k]) for k in cols) + " |")
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        if r.outcome == "agree":
            continue
        why = EXPLAINED.get(r.path, ("", ""))[1]
        lines.append(
            f"- {r.path}: {r.outcome}; fruitlens: {r.fruitlens_error or 'features'}; "
            f"Pillow: {r.pillow_error or 'decodes'}" + (f" — {why}" if why else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--details", action="store_true", help="list every file that does not agree")
    ap.add_argument("--all", action="store_true", help="list every file with its cosine")
    args = ap.parse_args(argv)
    rows = classify(args.folder, args.size)
    print(table(rows))
    if args.details or args.all:
        print()
        print(details(rows))
    if args.all:
        for r in rows:
            print(
                f"{r.path}\t{r.outcome}\t{r.cosine}\t{r.max_levels}\t{r.fruitlens_error}\t{r.pillow_error}"
            )
    bad = problems(rows)
    if bad:
        print("\nPROBLEMS:\n" + "\n".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
