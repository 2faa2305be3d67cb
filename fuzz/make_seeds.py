"""Write the seed corpora of the fuzz targets (deterministic; nothing else is kept).

    python fuzz/make_seeds.py [--images DIR] [--out fuzz/corpus]

* ``<out>/<format>/`` (jpeg, png, gif, webp, bmp, tiff): the files of ``--images``
  (default ``../shared/data/image-rs-tests``, the ``image`` crate's 136 test images),
  sorted by their first bytes (not their extension), and copied to ``<out>/decode/``.
* ``<out>/tiff/gen-*.tif``: generated TIFF variants, small (37×23, so that strips and
  tiles are partial at the edges): grey / RGB / RGBA × uint8 / uint16 / uint32 /
  float32 × striped (7 rows per strip, little-endian) / tiled (16×16, big-endian) ×
  chunky / planar (``PlanarConfiguration=2``; not for grey) × none / LZW / Deflate /
  PackBits / LZW with a predictor (2, or 3 for floats). A plain striped TIFF is
  written here (chunky and planar), then ``tiffcp`` (Debian ``libtiff-tools``) makes each layout.
* ``<out>/exif/``: inputs of the ``exif`` target (first byte: container 0 JPEG,
  1 PNG, 2 WebP; the rest: a TIFF-structured EXIF block), every orientation 0–9 in
  both byte orders, plus odd ones (IFD loops, bad offsets and types, a huge count).

Standard library only (plus ``tiffcp``); Python 3.9+.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "image-rs-tests"

SIGNATURES = {
    "jpeg": [b"\xff\xd8\xff"],
    "png": [b"\x89PNG\r\n\x1a\n"],
    "gif": [b"GIF87a", b"GIF89a"],
    "bmp": [b"BM"],
    "tiff": [b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"],
}

W, H = 37, 23


def sniff(data: bytes) -> str | None:
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for fmt, sigs in SIGNATURES.items():
        if any(data.startswith(s) for s in sigs):
            return fmt
    return None


def sort_images(images: Path, out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in sorted(p for p in images.rglob("*") if p.is_file()):
        data = path.read_bytes()
        fmt = sniff(data)
        if fmt is None:
            continue
        name = "rs-" + "_".join(path.relative_to(images).parts)
        for target in (fmt, "decode"):
            (out / target).mkdir(parents=True, exist_ok=True)
            (out / target / name).write_bytes(data)
        counts[fmt] = counts.get(fmt, 0) + 1
    return counts


# --------------------------------------------------------------------------------------
# TIFF


def sample(kind: str, x: int, y: int, c: int) -> bytes:
    """One deterministic sample: a gradient per channel, alpha varying too."""
    t = ((x * 7 + y * 11 + c * 53) % 256) / 255.0
    if kind == "f32":
        return struct.pack("<f", t)
    bits = {"u8": 8, "u16": 16, "u32": 32}[kind]
    v = round(t * ((1 << bits) - 1))
    return v.to_bytes(bits // 8, "little")


def plain_tiff(kind: str, spp: int, planar: bool) -> bytes:
    """A little-endian, uncompressed TIFF: one strip, or one strip per plane (planar)."""
    bits = {"u8": 8, "u16": 16, "u32": 32, "f32": 32}[kind]
    if planar:
        strips = [
            b"".join(sample(kind, x, y, c) for y in range(H) for x in range(W)) for c in range(spp)
        ]
    else:
        strips = [b"".join(sample(kind, x, y, c) for y in range(H) for x in range(W) for c in range(spp))]
    SHORT, LONG = 3, 4
    entries: list[tuple[int, int, list[int]]] = [  # tag, type, values
        (256, SHORT, [W]),
        (257, SHORT, [H]),
        (258, SHORT, [bits] * spp),
        (259, SHORT, [1]),
        (262, SHORT, [1 if spp == 1 else 2]),
        (273, LONG, [0] * len(strips)),  # strip offsets, filled in below
        (277, SHORT, [spp]),
        (278, SHORT, [H]),
        (279, LONG, [len(s) for s in strips]),
        (284, SHORT, [2 if planar else 1]),
    ]
    if spp == 4:
        entries.append((338, SHORT, [2]))  # unassociated alpha
    entries.append((339, SHORT, [3 if kind == "f32" else 1] * spp))

    def packed(typ: int, values: list[int]) -> bytes:
        return struct.pack(f"<{len(values)}{'H' if typ == SHORT else 'I'}", *values)

    ifd_size = 2 + 12 * len(entries) + 4
    extra_size = sum(len(packed(t, v)) for _, t, v in entries if len(packed(t, v)) > 4)
    offset = 8 + ifd_size + extra_size
    offsets = []
    for strip in strips:
        offsets.append(offset)
        offset += len(strip)
    entries[5] = (273, LONG, offsets)
    ifd = bytearray(struct.pack("<H", len(entries)))
    extra = bytearray()
    for tag, typ, values in entries:
        data = packed(typ, values)
        if len(data) <= 4:
            ifd += struct.pack("<HHI", tag, typ, len(values)) + data.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, len(values), 8 + ifd_size + len(extra))
            extra += data
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + bytes(ifd) + bytes(extra) + b"".join(strips)


def tiff_variants(out: Path, tmp: Path) -> int:
    if shutil.which("tiffcp") is None:
        print("tiffcp not found (apt-get install libtiff-tools): no TIFF variants", file=sys.stderr)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    n = 0
    for spp, mode in [(1, "grey"), (3, "rgb"), (4, "rgba")]:
        for kind in ["u8", "u16", "u32", "f32"]:
            sources = {}
            for planar in ["contig"] if spp == 1 else ["contig", "separate"]:
                # tiffcp only changes the planar configuration of 8-bit images: write both.
                sources[planar] = tmp / f"{mode}-{kind}-{planar}.tif"
                sources[planar].write_bytes(plain_tiff(kind, spp, planar == "separate"))
            predictor = "3" if kind == "f32" else "2"
            comps = ["none", "lzw", "zip", "packbits", f"lzw:{predictor}"]
            for layout, layout_args in [
                ("strip", ["-s", "-r", "7", "-L"]),
                ("tile", ["-t", "-w", "16", "-l", "16", "-B"]),
            ]:
                for planar, src in sources.items():
                    for comp in comps:
                        name = f"gen-{mode}-{kind}-{layout}-{planar}-{comp.replace(':', 'p')}.tif"
                        cmd = ["tiffcp", "-c", comp, *layout_args, "-p", planar, str(src), str(out / name)]
                        subprocess.run(cmd, check=True, capture_output=True)
                        n += 1
    return n


# --------------------------------------------------------------------------------------
# EXIF


def exif_block(order: str, entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """A TIFF-structured EXIF block with one IFD at offset 8 (values inline, ≤ 4 bytes)."""
    e = "<" if order == "II" else ">"
    head = (b"II*\x00" if order == "II" else b"MM\x00*") + struct.pack(e + "I", 8)
    ifd = struct.pack(e + "H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack(e + "HHI", tag, typ, count) + value.ljust(4, b"\0")[:4]
    return head + ifd + struct.pack(e + "I", next_ifd)


def exif_seeds(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    n = 0

    def put(name: str, payload: bytes) -> None:
        nonlocal n
        for container in range(3):
            (out / f"{name}-c{container}").write_bytes(bytes([container]) + payload)
            n += 1

    for order in ["II", "MM"]:
        e = "<" if order == "II" else ">"
        for o in range(10):
            put(f"orient{o}-{order}", exif_block(order, [(0x0112, 3, 1, struct.pack(e + "H", o))]))
        # Orientation as a LONG, a count of 2, an IFD pointing at itself, a wild offset.
        put(f"orient-long-{order}", exif_block(order, [(0x0112, 4, 1, struct.pack(e + "I", 6))]))
        put(f"orient-count2-{order}", exif_block(order, [(0x0112, 3, 2, struct.pack(e + "HH", 3, 6))]))
        put(f"ifd-loop-{order}", exif_block(order, [(0x0112, 3, 1, struct.pack(e + "H", 8))], next_ifd=8))
        put(
            f"exif-ifd-{order}",
            exif_block(order, [(0x0112, 3, 1, struct.pack(e + "H", 5)), (0x8769, 4, 1, struct.pack(e + "I", 0x7FFFFFF0))]),
        )
        put(f"huge-count-{order}", exif_block(order, [(0x0112, 3, 0xFFFFFFFF, struct.pack(e + "I", 8))]))
    put("empty", b"")
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--out", type=Path, default=HERE / "corpus")
    args = ap.parse_args()
    counts = sort_images(args.images, args.out) if args.images.is_dir() else {}
    if not counts:
        print(f"no images under {args.images}: only generated seeds", file=sys.stderr)
    tmp = args.out / ".tmp-tiff"
    n_tiff = tiff_variants(args.out / "tiff", tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    n_exif = exif_seeds(args.out / "exif")
    print(f"image-rs-tests by format: {counts}; TIFF variants: {n_tiff}; EXIF seeds: {n_exif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
