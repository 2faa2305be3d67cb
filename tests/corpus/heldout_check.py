"""Held-out check: many odd but legal images, fruitlens against Pillow's pipeline.

    python tests/corpus/heldout_check.py [--size 64] [--seed 0] [--keep DIR] [--only SUBSTR]
                                         [--details] [--no-subprocess]

Generates (seeded, deterministic) JPEG / PNG / GIF / WebP / BMP / TIFF files with
Pillow, numpy, hand-written containers and the Debian tools when installed (``cjpeg``,
``jpegtran`` from libjpeg-turbo-progs, ``tiffcp`` from libtiff-tools) into a temporary
folder (or ``--keep DIR``), then compares, per file, ``fruitlens.decode`` with the
classic pipeline (``make_corpus.pillow_reference`` through
``image_rs_table.pillow_pipeline``: exif_transpose, alpha on white, RGB, bicubic,
x/127.5-1; 16-bit grey clipped to 255 as Pillow's ``I;16 → RGB`` does).

Outcome of one file (levels are 8-bit levels, i.e. |Δ| · 127.5):

* ``identical``: max |Δ| < 0.01 level;
* ``small``: max |Δ| ≤ ``SMALL_MAX`` levels and mean |Δ| ≤ ``SMALL_MEAN``;
* ``disagree``: larger;
* ``fl_error``: fruitlens gives an error where Pillow decodes;
* ``pl_error``: Pillow fails where fruitlens decodes;
* ``both_error``: both refuse;
* ``crash``: the decode killed or hung a child process (found first, in a subprocess).

For every non-identical file the step is located by bisection: fruitlens is also fed
a plain 8-bit RGB PNG of Pillow's *pre-resize* image. Same result as on the original
file → decode, orientation, alpha and colour agree, the difference is in the resize
(``cause=resize``). Otherwise the eight transposes of Pillow's pre-resize image and
the variant without alpha compositing are tried (``cause=orientation:<op>`` /
``cause=alpha``); else ``cause=decode/colour``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
SMALL_MAX = 3.0
SMALL_MEAN = 0.5


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


image_rs_table = _load("image_rs_table")
mc = image_rs_table.make_corpus  # the shared Pillow-reference helpers

# --------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------


def enc(img: Image.Image, fmt: str, **kw) -> bytes:
    return mc.encode(img, fmt, **kw)


def tool(*args: str, data: bytes | None = None) -> bytes | None:
    if shutil.which(args[0]) is None:
        return None
    return subprocess.run(list(args), input=data, capture_output=True, check=True).stdout


def ppm(img: Image.Image) -> bytes:
    return enc(img, "PPM")


def cjpeg(img: Image.Image, *args: str) -> bytes | None:
    return tool("cjpeg", *args, data=ppm(img))


def insert_after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def strip_app(jpeg: bytes, marker: int) -> bytes:
    out = jpeg
    for m, start, length in reversed(mc.jpeg_segments(jpeg)):
        if m == marker:
            out = out[:start] + out[start + length :]
    return out


def tiff_exif(
    orient: int | None,
    little: bool = True,
    thumb: bytes | None = None,
    ifd1_orient: int | None = None,
    typ: int = 3,
) -> bytes:
    """A raw TIFF-structured EXIF block (no ``Exif\\0\\0`` prefix): IFD0 with the
    orientation tag (``typ``: 3 SHORT, 4 LONG), optionally IFD1 with a JPEG thumbnail
    (and its own orientation)."""
    e = "<" if little else ">"
    head = (b"II*\x00" if little else b"MM\x00*") + struct.pack(e + "I", 8)

    def entry(tag: int, t: int, value: int) -> bytes:
        if t == 3:
            return struct.pack(e + "HHIH", tag, 3, 1, value) + b"\0\0"
        return struct.pack(e + "HHII", tag, t, 1, value)

    ifd0 = [entry(0x0112, typ, orient)] if orient is not None else [entry(0x0131, 4, 0)]
    ifd0_len = 2 + 12 * len(ifd0) + 4
    body = bytearray()
    if thumb is None:
        body += struct.pack(e + "H", len(ifd0)) + b"".join(ifd0) + struct.pack(e + "I", 0)
        return head + bytes(body)
    ifd1_off = 8 + ifd0_len
    n1 = 3 + (ifd1_orient is not None)
    thumb_off = ifd1_off + 2 + 12 * n1 + 4
    ifd1 = [entry(0x0103, 3, 6), entry(0x0201, 4, thumb_off), entry(0x0202, 4, len(thumb))]
    if ifd1_orient is not None:
        ifd1.insert(1, entry(0x0112, 3, ifd1_orient))
    body += struct.pack(e + "H", len(ifd0)) + b"".join(ifd0) + struct.pack(e + "I", ifd1_off)
    body += struct.pack(e + "H", len(ifd1)) + b"".join(ifd1) + struct.pack(e + "I", 0)
    return head + bytes(body) + thumb


def tiff_set_tag(data: bytes, tag: int, value: int | None, typ: int | None = None) -> bytes:
    """Little-endian TIFF: set an existing IFD0 tag's inline value (and type), or drop
    the tag (``value=None``; the entry becomes a private tag 65000)."""
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[ifd : ifd + 2])[0]
    b = bytearray(data)
    for i in range(n):
        e = ifd + 2 + 12 * i
        t, ty = struct.unpack("<HH", b[e : e + 4])
        if t != tag:
            continue
        if value is None:
            b[e : e + 2] = struct.pack("<H", 65000)
            return bytes(b)
        ty = typ or ty
        b[e + 2 : e + 8] = struct.pack("<HI", ty, 1)
        b[e + 8 : e + 12] = (
            struct.pack("<I", value)
            if ty in (4, 9)
            else (struct.pack("<H", value) + b"\0\0" if ty in (3, 8) else bytes([value, 0, 0, 0]))
        )
        return bytes(b)
    raise ValueError(f"no tag {tag}")


def xmp_packet(orient: int, element: bool = False) -> bytes:
    inner = (
        f"<tiff:Orientation>{orient}</tiff:Orientation>"
        if element
        else f'tiff:Orientation="{orient}"'
    )
    desc = (
        f'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/">{inner}'
        "</rdf:Description>"
        if element
        else f'<rdf:Description rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" {inner}/>'
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'{desc}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i < len(data):
        n = struct.unpack(">I", data[i : i + 4])[0]
        out.append((data[i + 4 : i + 8], data[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def png_build(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(mc.png_chunk(k, d) for k, d in chunks)


def png_insert(data: bytes, before: bytes, *new: tuple[bytes, bytes]) -> bytes:
    """Insert chunks before the first chunk of type ``before``."""
    ch = png_chunks(data)
    i = next(j for j, (k, _) in enumerate(ch) if k == before)
    return png_build(ch[:i] + list(new) + ch[i:])


def _filter_rows(rows: list[bytes], bpp: int, rng: np.random.RandomState) -> bytes:
    """PNG-filter each row with a random filter type (0–4)."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for row in rows:
        ft = int(rng.randint(0, 5))
        r = np.frombuffer(row, np.uint8).astype(np.int32)
        p = np.frombuffer(prev, np.uint8).astype(np.int32)
        left = np.concatenate([np.zeros(bpp, np.int32), r[:-bpp]]) if len(r) else r
        upleft = np.concatenate([np.zeros(bpp, np.int32), p[:-bpp]]) if len(p) else p
        if ft == 0:
            f = r
        elif ft == 1:
            f = r - left
        elif ft == 2:
            f = r - p
        elif ft == 3:
            f = r - (left + p) // 2
        else:
            pa_, pb, pc = np.abs(p - upleft), np.abs(left - upleft), np.abs(left + p - 2 * upleft)
            pred = np.where((pa_ <= pb) & (pa_ <= pc), left, np.where(pb <= pc, p, upleft))
            f = r - pred
        out += bytes([ft]) + (f & 0xFF).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def _pack(arr: np.ndarray, bit_depth: int) -> bytes:
    """One row of samples (1-D, already interleaved) packed at ``bit_depth``."""
    if bit_depth == 16:
        return arr.astype(">u2").tobytes()
    if bit_depth == 8:
        return arr.astype(np.uint8).tobytes()
    per = 8 // bit_depth
    n = len(arr)
    padded = np.zeros(-(-n // per) * per, np.uint8)
    padded[:n] = arr
    padded = padded.reshape(-1, per)
    out = np.zeros(len(padded), np.uint8)
    for k in range(per):
        out |= (padded[:, k] << (8 - bit_depth * (k + 1))).astype(np.uint8)
    return out.tobytes()


ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png_write(
    arr: np.ndarray,
    bit_depth: int,
    colour: int,
    interlace: bool = False,
    seed: int = 0,
    plte: bytes | None = None,
    trns: bytes | None = None,
    extra: list | None = None,
) -> bytes:
    """A PNG written by hand: any bit depth / colour type, Adam7, random filters."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    bpp = max(1, c * bit_depth // 8)
    rng = np.random.RandomState(seed)
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows = [_pack(sub[y].reshape(-1), bit_depth) for y in range(sub.shape[0])]
        raw += _filter_rows(rows, bpp, rng)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 1 if interlace else 0)
    chunks = [(b"IHDR", ihdr)]
    chunks += extra or []
    if plte is not None:
        chunks.append((b"PLTE", plte))
    if trns is not None:
        chunks.append((b"tRNS", trns))
    chunks += [(b"IDAT", zlib.compress(raw, 6)), (b"IEND", b"")]
    return png_build(chunks)


# --- BMP ------------------------------------------------------------------------------


def bmp_write(
    w: int,
    h: int,
    bpp: int,
    rows: list[bytes],
    palette: list[tuple] | None = None,
    compression: int = 0,
    masks: tuple | None = None,
    header: int = 40,
    top_down: bool = False,
    pixel_data: bytes | None = None,
    clr_used: int | None = None,
) -> bytes:
    """A BMP written by hand. ``rows`` are top-to-bottom, unpadded; stored bottom-up
    unless ``top_down``. ``header``: 12 (OS/2 core), 40 (v3), 52/56 (v3 + masks),
    108 (v4), 124 (v5). ``pixel_data`` overrides the rows (RLE)."""
    if pixel_data is None:
        stride = (w * bpp + 31) // 32 * 4
        ordered = rows if top_down else rows[::-1]
        pixel_data = b"".join(r.ljust(stride, b"\0") for r in ordered)
    pal = b""
    if palette:
        if header == 12:
            pal = b"".join(bytes([b, g, r]) for r, g, b in palette)
        else:
            pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    extra_masks = b""
    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bpp)
    else:
        hh = -h if top_down else h
        used = clr_used if clr_used is not None else (len(palette) if palette else 0)
        info = struct.pack(
            "<IiiHHIIiiII", header, w, hh, 1, bpp, compression, len(pixel_data), 2835, 2835, used, 0
        )
        m = masks or (0, 0, 0, 0)
        if header >= 52:
            info += struct.pack("<III", *m[:3])
        if header >= 56:
            info += struct.pack("<I", m[3])
        if header >= 108:
            info += b"BGRs" + bytes(36) + struct.pack("<III", 0, 0, 0)  # sRGB, endpoints, gamma
        if header >= 124:
            info += struct.pack("<IIII", 4, 0, 0, 0)  # intent, profile data/size, reserved
        if header == 40 and compression == 3 and masks:
            extra_masks = struct.pack("<III", *m[:3])
        if header == 40 and compression == 6 and masks:
            extra_masks = struct.pack("<IIII", *m)
    off = 14 + len(info) + len(extra_masks) + len(pal)
    fh = struct.pack("<2sIHHI", b"BM", off + len(pixel_data), 0, 0, off)
    return fh + info + extra_masks + pal + pixel_data


def rle8(idx: np.ndarray, skips: bool = False) -> bytes:
    """RLE8 of an index image (top-to-bottom rows; written bottom-up). With ``skips``
    a delta escape jumps over part of some rows (those pixels are never written)."""
    w = idx.shape[1]
    out = bytearray()
    for yy, row in enumerate(idx[::-1]):
        x = 0
        while x < w:
            if skips and yy % 3 == 1 and x == w // 3:
                out += bytes([0, 2, min(5, w - x - 1) if w - x > 1 else 0, 0])
                x += min(5, w - x - 1) if w - x > 1 else 0
                if x >= w:
                    break
            v = row[x]
            n = 1
            while x + n < w and row[x + n] == v and n < 255:
                n += 1
            if n >= 3 or (x + n == w):
                out += bytes([n, int(v)])
                x += n
            else:
                # absolute run of up to 8 differing pixels
                m = min(8, w - x)
                if m < 3:
                    out += bytes([1, int(row[x])])
                    x += 1
                    continue
                vals = bytes(int(t) for t in row[x : x + m])
                out += bytes([0, m]) + vals + (b"\0" if m % 2 else b"")
                x += m
        out += b"\x00\x00"
    out += b"\x00\x01"
    return bytes(out)


def rle4(idx: np.ndarray) -> bytes:
    """RLE4: runs of alternating pairs (encoded mode) and absolute runs."""
    w = idx.shape[1]
    out = bytearray()
    for row in idx[::-1]:
        x = 0
        while x < w:
            if x + 4 <= w and row[x] == row[x + 1] == row[x + 2]:
                n = 1
                while x + n < w and row[x + n] == row[x] and n < 255:
                    n += 1
                out += bytes([n, (int(row[x]) << 4) | int(row[x])])
                x += n
            else:
                m = min(6, w - x)
                if m < 3:
                    out += bytes([m, (int(row[x]) << 4) | int(row[x + 1] if m > 1 else 0)])
                    x += m
                    continue
                vals = list(int(t) for t in row[x : x + m])
                if len(vals) % 2:
                    vals.append(0)
                packed = bytes((vals[i] << 4) | vals[i + 1] for i in range(0, len(vals), 2))
                if len(packed) % 2:
                    packed += b"\0"
                out += bytes([0, m]) + packed
                x += m
        out += b"\x00\x00"
    out += b"\x00\x01"
    return bytes(out)


# --- GIF ------------------------------------------------------------------------------


def lzw_gif(indices: bytes, min_code: int) -> bytes:
    """Uncompressed-style GIF LZW (a clear code every few codes): always valid."""
    clear, eoi = 1 << min_code, (1 << min_code) + 1
    size = min_code + 1
    bits, nbits, out = 0, 0, bytearray()

    def put(code: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    limit = (1 << size) - 2 - (1 << min_code) - 2
    limit = max(1, min(limit, 60))
    put(clear)
    count = 0
    for v in indices:
        if count == limit:
            put(clear)
            count = 0
        put(v)
        count += 1
    put(eoi)
    if nbits:
        out.append(bits & 0xFF)
    blocks = bytearray([min_code])
    for i in range(0, len(out), 255):
        chunk = out[i : i + 255]
        blocks += bytes([len(chunk)]) + chunk
    return bytes(blocks + b"\x00")


def gif_write(
    sw: int,
    sh: int,
    frames: list[dict],
    global_palette: list[tuple] | None,
    bg: int = 0,
) -> bytes:
    """A GIF written by hand. Each frame: idx (h×w uint8), x, y, palette (local or
    None), transparent (index or None), disposal, interlace, delay."""

    def pal_bytes(p: list[tuple]) -> tuple[bytes, int]:
        n = 1
        while (1 << n) < len(p):
            n += 1
        p = list(p) + [(0, 0, 0)] * ((1 << n) - len(p))
        return b"".join(bytes(c) for c in p), n

    out = bytearray(b"GIF89a")
    if global_palette:
        gp, gn = pal_bytes(global_palette)
        out += struct.pack("<HHBBB", sw, sh, 0x80 | (7 << 4) | (gn - 1), bg, 0) + gp
    else:
        out += struct.pack("<HHBBB", sw, sh, 0x70, 0, 0)
    if len(frames) > 1:
        out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for f in frames:
        t = f.get("transparent")
        packed = (f.get("disposal", 0) << 2) | (1 if t is not None else 0)
        out += b"\x21\xf9\x04" + struct.pack("<BHB", packed, f.get("delay", 10), t or 0) + b"\0"
        idx = f["idx"]
        h, w = idx.shape
        flags = 0
        lp = b""
        ln = 0
        if f.get("palette"):
            lp, ln = pal_bytes(f["palette"])
            flags |= 0x80 | (ln - 1)
        if f.get("interlace"):
            flags |= 0x40
            order = (
                list(range(0, h, 8))
                + list(range(4, h, 8))
                + list(range(2, h, 4))
                + list(range(1, h, 2))
            )
            idx = idx[order]
        out += b"\x2c" + struct.pack("<HHHHB", f.get("x", 0), f.get("y", 0), w, h, flags) + lp
        bits = max(ln, gn if global_palette else 0, 2)
        out += lzw_gif(idx.astype(np.uint8).tobytes(), bits)
    out += b"\x3b"
    return bytes(out)


# --------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------


def quantize(img: Image.Image, n: int) -> tuple[np.ndarray, list[tuple]]:
    p = img.convert("RGB").quantize(n, dither=Image.Dither.NONE)
    pal = p.getpalette()[: 3 * n]
    pal += [0] * (3 * n - len(pal))
    return np.asarray(p), [tuple(pal[i : i + 3]) for i in range(0, 3 * n, 3)]


def build(seed: int = 0) -> dict[str, tuple[str, bytes]]:
    """name → (format, bytes)."""
    rng = np.random.RandomState(seed)
    W, H = 45, 31  # odd, non-square, not a multiple of any MCU
    src = mc.photo(W, H, seed=seed)
    rgba = src.convert("RGBA")
    rgba.putalpha(mc.alpha_of(src))
    grey = src.convert("L")
    arr = np.asarray(src)
    cases: dict[str, tuple[str, bytes]] = {}
    skipped: list[str] = []

    def add(name: str, fmt: str, make) -> None:
        try:
            data = make()
        except Exception as e:  # a generator problem: say so, go on
            print(f"heldout_check: {name} not generated: {type(e).__name__}: {e}", file=sys.stderr)
            return
        if data is None:
            skipped.append(name)
            return
        cases[f"{fmt}/{name}"] = (fmt, data)

    sizes = {
        "1x1": (1, 1),
        "1x17": (1, 17),
        "17x1": (17, 1),
        "2x2": (2, 2),
        "3x500": (3, 500),
        "500x3": (500, 3),
        "5000x3": (5000, 3),
        "3x2000": (3, 2000),
        "64x64": (64, 64),
        "7x9": (7, 9),
    }
    odd = {k: mc.photo(w, h, seed=7) for k, (w, h) in sizes.items()}

    # ---------------------------------------------------------------- JPEG
    J = "jpeg"
    add("pil_420_q90", J, lambda: enc(src, "JPEG", quality=90))
    add("pil_444", J, lambda: enc(src, "JPEG", quality=95, subsampling=0))
    add("pil_422", J, lambda: enc(src, "JPEG", quality=90, subsampling=1))
    add("pil_q10", J, lambda: enc(src, "JPEG", quality=10))
    add("pil_q100", J, lambda: enc(src, "JPEG", quality=100, subsampling=0))
    add("pil_progressive", J, lambda: enc(src, "JPEG", progressive=True))
    add("pil_optimize", J, lambda: enc(src, "JPEG", optimize=True))
    add("pil_grey", J, lambda: enc(grey, "JPEG"))
    add("pil_grey_progressive", J, lambda: enc(grey, "JPEG", progressive=True))
    add("pil_cmyk_adobe", J, lambda: enc(src.convert("CMYK"), "JPEG", quality=95))
    add("pil_cmyk_no_adobe", J, lambda: mc.without_adobe(enc(src.convert("CMYK"), "JPEG")))
    add("pil_cmyk_progressive", J, lambda: enc(src.convert("CMYK"), "JPEG", progressive=True))
    add("ycck", J, lambda: mc.ycck_jpeg(src))
    add("pil_restart_blocks1", J, lambda: enc(src, "JPEG", restart_marker_blocks=1))
    add("pil_restart_rows1", J, lambda: enc(src, "JPEG", restart_marker_rows=1))
    add("cjpeg_restart_2B", J, lambda: cjpeg(src, "-restart", "2B"))
    add("cjpeg_restart_1row_prog", J, lambda: cjpeg(src, "-restart", "1", "-progressive"))
    add("cjpeg_411", J, lambda: cjpeg(src, "-sample", "4x1,1x1,1x1"))
    add("cjpeg_440", J, lambda: cjpeg(src, "-sample", "1x2,1x1,1x1"))
    add("cjpeg_410", J, lambda: cjpeg(src, "-sample", "4x2,1x1,1x1"))
    add("cjpeg_odd_sampling_2x1_1x2", J, lambda: cjpeg(src, "-sample", "2x2,2x1,1x2"))
    add("cjpeg_chroma_full_luma_half", J, lambda: cjpeg(src, "-sample", "1x1,2x2,2x2"))
    add("cjpeg_arith", J, lambda: cjpeg(src, "-arithmetic"))
    add("cjpeg_arith_prog", J, lambda: cjpeg(src, "-arithmetic", "-progressive"))
    add("cjpeg_arith_grey", J, lambda: cjpeg(src, "-arithmetic", "-grayscale"))
    add("cjpeg_grey", J, lambda: cjpeg(src, "-grayscale"))
    add("cjpeg_rgb_colourspace", J, lambda: cjpeg(src, "-rgb"))
    add("cjpeg_dct_float", J, lambda: cjpeg(src, "-dct", "float"))
    add("cjpeg_smooth", J, lambda: cjpeg(src, "-smooth", "30"))
    add("cjpeg_baseline_q5", J, lambda: cjpeg(src, "-quality", "5", "-baseline"))
    add("cjpeg_prog_411", J, lambda: cjpeg(src, "-progressive", "-sample", "4x1,1x1,1x1"))
    add("jpegtran_prog", J, lambda: tool("jpegtran", "-progressive", data=enc(src, "JPEG")))
    add(
        "jpegtran_arith_444",
        J,
        lambda: tool("jpegtran", "-arithmetic", data=enc(src, "JPEG", subsampling=0)),
    )
    add("jpegtran_restart", J, lambda: tool("jpegtran", "-restart", "1B", data=enc(src, "JPEG")))
    add(
        "jpegtran_grey_from_colour",
        J,
        lambda: tool("jpegtran", "-grayscale", data=enc(src, "JPEG")),
    )
    add(
        "jpegtran_crop_odd",
        J,
        lambda: tool("jpegtran", "-crop", "29x19+3+5", data=enc(src, "JPEG")),
    )
    add(
        "jpegtran_rot90_imperfect",
        J,
        lambda: tool("jpegtran", "-rotate", "90", data=enc(src, "JPEG")),
    )
    icc_srgb = None
    try:
        from PIL import ImageCms

        icc_srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        icc_lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    except Exception:
        icc_lab = None
    if icc_srgb:
        add("icc_srgb", J, lambda: enc(src, "JPEG", icc_profile=icc_srgb))
        add(
            "icc_big_multi_app2",
            J,
            lambda: enc(src, "JPEG", icc_profile=icc_srgb + rng.bytes(150000)),
        )
        add("icc_lab_on_rgb", J, lambda: enc(src, "JPEG", icc_profile=icc_lab))
        add("icc_cmyk", J, lambda: enc(src.convert("CMYK"), "JPEG", icc_profile=icc_srgb))
    for o in range(1, 9):
        add(f"exif_o{o}", J, lambda o=o: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(o)))
    thumb = enc(mc.photo(8, 6, seed=9), "JPEG")
    for o in (3, 6, 8):
        add(
            f"exif_o{o}_thumb",
            J,
            lambda o=o: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(o, thumb=thumb)),
        )
        add(
            f"exif_o{o}_bigendian",
            J,
            lambda o=o: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(o, little=False)),
        )
        add(
            f"exif_o{o}_long_type",
            J,
            lambda o=o: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(o, typ=4)),
        )
    add(
        "exif_o6_ifd1_o1_thumb",
        J,
        lambda: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(6, thumb=thumb, ifd1_orient=1)),
    )
    add(
        "exif_none_ifd1_o6_thumb",
        J,
        lambda: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(None, thumb=thumb, ifd1_orient=6)),
    )
    add("exif_o0", J, lambda: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(0)))
    add("exif_o9", J, lambda: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(9)))
    add("exif_o6_grey", J, lambda: enc(grey, "JPEG", exif=b"Exif\0\0" + tiff_exif(6)))
    add(
        "exif_o5_cmyk", J, lambda: enc(src.convert("CMYK"), "JPEG", exif=b"Exif\0\0" + tiff_exif(5))
    )
    add(
        "exif_o7_progressive",
        J,
        lambda: enc(src, "JPEG", progressive=True, exif=b"Exif\0\0" + tiff_exif(7)),
    )
    add(
        "exif_two_app1_o6_then_o3",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"Exif\0\0" + tiff_exif(6)),
            segment(0xE1, b"Exif\0\0" + tiff_exif(3)),
        ),
    )
    add(
        "exif_after_dqt",  # APP1 late in the header
        J,
        lambda: (
            lambda d: (
                d[: mc.find_segment(d, 0xC0)[0]]
                + segment(0xE1, b"Exif\0\0" + tiff_exif(6))
                + d[mc.find_segment(d, 0xC0)[0] :]
            )
        )(enc(src, "JPEG")),
    )
    add(
        "xmp_o6_attr_no_exif",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"), segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(6))
        ),
    )
    add(
        "xmp_o8_element_no_exif",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(8, element=True)),
        ),
    )
    add(
        "xmp_o6_exif_without_orientation",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"Exif\0\0" + tiff_exif(None)),
            segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(6)),
        ),
    )
    add(
        "xmp_o3_exif_o1",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"Exif\0\0" + tiff_exif(1)),
            segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(3)),
        ),
    )
    add(
        "comment_and_app15",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"), segment(0xFE, b"hello" * 50), segment(0xEF, rng.bytes(300))
        ),
    )
    add(
        "jfif_and_fill_bytes",
        J,
        lambda: (lambda d: d[:2] + b"\xff\xff\xff" + d[2:])(enc(src, "JPEG")),
    )
    add("cjpeg_q1", J, lambda: cjpeg(src, "-quality", "1"))
    for k, im in odd.items():
        if k in ("5000x3", "3x2000", "3x500", "500x3", "1x1", "1x17", "17x1", "7x9"):
            add(f"size_{k}", J, lambda im=im: enc(im, "JPEG", quality=90))
    add("size_1x1_grey_prog", J, lambda: enc(odd["1x1"].convert("L"), "JPEG", progressive=True))
    add("size_7x9_411", J, lambda: cjpeg(odd["7x9"], "-sample", "4x1,1x1,1x1"))
    add("size_17x1_exif6", J, lambda: enc(odd["17x1"], "JPEG", exif=b"Exif\0\0" + tiff_exif(6)))

    # ---------------------------------------------------------------- PNG
    P = "png"
    g8 = np.asarray(grey)
    for bd in (1, 2, 4):
        q = (g8 >> (8 - bd)).astype(np.uint8)
        add(f"grey{bd}", P, lambda q=q, bd=bd: png_write(q, bd, 0, seed=bd))
        add(
            f"grey{bd}_interlaced",
            P,
            lambda q=q, bd=bd: png_write(q, bd, 0, interlace=True, seed=bd),
        )
        n = 1 << bd
        idx, pal = quantize(src, n)
        plte = b"".join(bytes(c) for c in pal)
        add(
            f"palette{bd}",
            P,
            lambda idx=idx, bd=bd, plte=plte: png_write(idx, bd, 3, plte=plte, seed=bd),
        )
        trns = bytes(int(v) for v in np.linspace(0, 255, n).astype(np.uint8))
        add(
            f"palette{bd}_trns",
            P,
            lambda idx=idx, bd=bd, plte=plte, trns=trns: png_write(
                idx, bd, 3, plte=plte, trns=trns, seed=bd
            ),
        )
        add(
            f"palette{bd}_trns_interlaced",
            P,
            lambda idx=idx, bd=bd, plte=plte, trns=trns: png_write(
                idx, bd, 3, plte=plte, trns=trns, interlace=True
            ),
        )
        add(
            f"grey{bd}_trns_key",
            P,
            lambda q=q, bd=bd: png_write(q, bd, 0, trns=struct.pack(">H", int(q[0, 0])), seed=bd),
        )
    idx8, pal8 = quantize(src, 200)
    plte8 = b"".join(bytes(c) for c in pal8)
    add(
        "palette8_short_trns",
        P,
        lambda: png_write(idx8, 8, 3, plte=plte8, trns=bytes([0, 64, 128, 200, 255, 10])),
    )
    add(
        "palette8_trns_interlaced",
        P,
        lambda: png_write(idx8, 8, 3, plte=plte8, trns=bytes(range(0, 200)), interlace=True),
    )
    add(
        "palette8_short_plte_oob_index",
        P,
        lambda: png_write(
            np.where(idx8 > 150, 199, idx8).astype(np.uint8), 8, 3, plte=plte8[: 3 * 160]
        ),
    )
    add("grey8_filters", P, lambda: png_write(g8, 8, 0, seed=3))
    add("grey8_trns_key", P, lambda: png_write(g8, 8, 0, trns=struct.pack(">H", int(g8[5, 5]))))
    add("rgb8_filters_interlaced", P, lambda: png_write(arr, 8, 2, interlace=True, seed=5))
    add(
        "rgb8_trns_key",
        P,
        lambda: png_write(arr, 8, 2, trns=struct.pack(">HHH", *map(int, arr[3, 3]))),
    )
    ra = np.asarray(rgba)
    add("rgba8_interlaced", P, lambda: png_write(ra, 8, 6, interlace=True, seed=6))
    la = np.stack([g8, ra[..., 3]], -1)
    add("la8", P, lambda: png_write(la, 8, 4, seed=7))
    add("la8_interlaced", P, lambda: png_write(la, 8, 4, interlace=True))
    r16 = arr.astype(np.uint16) * 257 + rng.randint(0, 256, arr.shape).astype(np.uint16)
    a16 = ra[..., 3].astype(np.uint16) * 257
    add("rgb16", P, lambda: png_write(r16, 16, 2))
    add("rgb16_interlaced", P, lambda: png_write(r16, 16, 2, interlace=True))
    add("rgba16", P, lambda: png_write(np.concatenate([r16, a16[..., None]], -1), 16, 6))
    add(
        "rgba16_interlaced_lowbyte_alpha",
        P,
        lambda: png_write(
            np.concatenate([r16, (a16 + 100).clip(0, 65535)[..., None]], -1), 16, 6, interlace=True
        ),
    )
    add("la16", P, lambda: png_write(np.stack([g8.astype(np.uint16) * 257, a16], -1), 16, 4))
    add("grey16", P, lambda: png_write(g8.astype(np.uint16) * 257 + 3, 16, 0))
    add(
        "rgb16_trns_key",
        P,
        lambda: png_write(r16, 16, 2, trns=struct.pack(">HHH", *map(int, r16[0, 0]))),
    )
    add(
        "gama_chrm_iccp_srgb",
        P,
        lambda: png_write(
            arr,
            8,
            2,
            extra=[
                (b"gAMA", struct.pack(">I", 100000)),
                (b"cHRM", bytes(32)),
                (b"iCCP", b"x\0\0" + zlib.compress(icc_srgb or b"")),
            ],
        ),
    )
    add("sbit_grey5", P, lambda: png_write(g8 & 0xF8, 8, 0, extra=[(b"sBIT", b"\x05")]))
    exif6 = tiff_exif(6)
    for o in (2, 3, 5, 6, 7, 8):
        add(
            f"exif_chunk_o{o}",
            P,
            lambda o=o: png_insert(enc(src, "PNG"), b"IDAT", (b"eXIf", tiff_exif(o))),
        )
    add(
        "exif_chunk_o6_after_idat",
        P,
        lambda: png_insert(enc(src, "PNG"), b"IEND", (b"eXIf", exif6)),
    )
    add(
        "exif_chunk_o6_prefixed",
        P,
        lambda: png_insert(enc(src, "PNG"), b"IDAT", (b"eXIf", b"Exif\0\0" + exif6)),
    )
    raw_profile = "\nexif\n" + f"{len(exif6) + 6:8d}\n" + (b"Exif\0\0" + exif6).hex() + "\n"
    add(
        "raw_profile_exif_text_o6",
        P,
        lambda: png_insert(
            enc(src, "PNG"), b"IDAT", (b"tEXt", b"Raw profile type exif\0" + raw_profile.encode())
        ),
    )
    add(
        "raw_profile_exif_ztxt_o6",
        P,
        lambda: png_insert(
            enc(src, "PNG"),
            b"IDAT",
            (b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(raw_profile.encode())),
        ),
    )
    add(
        "xmp_itxt_o6",
        P,
        lambda: png_insert(
            enc(src, "PNG"), b"IDAT", (b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp_packet(6))
        ),
    )
    add(
        "xmp_itxt_o8_compressed",
        P,
        lambda: png_insert(
            enc(src, "PNG"),
            b"IDAT",
            (b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + zlib.compress(xmp_packet(8))),
        ),
    )
    add("exif_o6_rgba", P, lambda: png_insert(enc(rgba, "PNG"), b"IDAT", (b"eXIf", exif6)))
    add(
        "exif_o5_palette_trns",
        P,
        lambda: png_insert(
            png_write(idx8, 8, 3, plte=plte8, trns=bytes(range(0, 200))),
            b"IDAT",
            (b"eXIf", tiff_exif(5)),
        ),
    )
    frames = [mc.photo(W, H, seed=s) for s in (11, 12, 13)]
    add(
        "apng_3frames",
        P,
        lambda: enc(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
    )
    add(
        "apng_default_image_hidden",
        P,
        lambda: enc(frames[0], "PNG", save_all=True, append_images=frames[1:], default_image=True),
    )
    add(
        "apng_rgba_blend",
        P,
        lambda: enc(
            rgba,
            "PNG",
            save_all=True,
            append_images=[f.convert("RGBA") for f in frames],
            blend=1,
            disposal=1,
        ),
    )
    for k, im in odd.items():
        add(f"size_{k}_rgb", P, lambda im=im: enc(im, "PNG"))
    add("size_1x1_grey1", P, lambda: png_write(np.array([[1]], np.uint8), 1, 0))
    add(
        "size_3x1_palette2_interlaced",
        P,
        lambda: png_write(
            np.array([[0, 1, 2]], np.uint8),
            2,
            3,
            plte=bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]),
            interlace=True,
        ),
    )
    add(
        "size_5x5_rgba_interlaced",
        P,
        lambda: png_write(np.asarray(mc.photo(5, 5, 1).convert("RGBA")), 8, 6, interlace=True),
    )
    add(
        "multiple_idat_1byte",
        P,
        lambda: (
            lambda d: png_build(
                [c for c in png_chunks(d) if c[0] != b"IDAT"][:1]
                + [
                    (b"IDAT", bytes([b]))
                    for b in b"".join(c[1] for c in png_chunks(d) if c[0] == b"IDAT")
                ]
                + [(b"IEND", b"")]
            )
        )(enc(mc.photo(8, 8), "PNG")),
    )

    # ---------------------------------------------------------------- GIF
    G = "gif"
    gidx, gpal = quantize(src, 64)
    add("pil_rgb", G, lambda: enc(src, "GIF"))
    add("pil_grey", G, lambda: enc(grey, "GIF"))
    add("pil_transparent", G, lambda: enc(src.quantize(64), "GIF", transparency=3))
    add("pil_interlaced", G, lambda: enc(src, "GIF", interlace=True))
    add("pil_animated", G, lambda: enc(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    add("hand_global", G, lambda: gif_write(W, H, [{"idx": gidx}], gpal))
    add("hand_local_only", G, lambda: gif_write(W, H, [{"idx": gidx, "palette": gpal}], None))
    add(
        "hand_local_and_global",
        G,
        lambda: gif_write(W, H, [{"idx": gidx, "palette": gpal}], gpal[::-1]),
    )
    add("hand_interlaced", G, lambda: gif_write(W, H, [{"idx": gidx, "interlace": True}], gpal))
    add(
        "hand_transparent_idx0",
        G,
        lambda: gif_write(W, H, [{"idx": gidx, "transparent": int(gidx[0, 0])}], gpal),
    )
    add(
        "hand_frame_offset_smaller_bg0",
        G,
        lambda: gif_write(W + 10, H + 6, [{"idx": gidx, "x": 5, "y": 3}], gpal, bg=0),
    )
    add(
        "hand_frame_offset_smaller_bg7",
        G,
        lambda: gif_write(W + 10, H + 6, [{"idx": gidx, "x": 5, "y": 3}], gpal, bg=7),
    )
    add(
        "hand_frame_offset_transparent",
        G,
        lambda: gif_write(
            W + 10, H + 6, [{"idx": gidx, "x": 5, "y": 3, "transparent": 5}], gpal, bg=5
        ),
    )
    add(
        "hand_frame_past_screen",
        G,
        lambda: gif_write(W - 10, H - 6, [{"idx": gidx, "x": 4, "y": 2}], gpal),
    )
    greypal = [(v, v, v) for v in range(0, 256, 4)]
    add("hand_grey_palette", G, lambda: gif_write(W, H, [{"idx": (g8 >> 2)}], greypal))
    add(
        "hand_grey_palette_transparent",
        G,
        lambda: gif_write(W, H, [{"idx": (g8 >> 2), "transparent": int(g8[0, 0] >> 2)}], greypal),
    )
    add(
        "hand_2colour",
        G,
        lambda: gif_write(W, H, [{"idx": (g8 > 128).astype(np.uint8)}], [(255, 0, 0), (0, 0, 255)]),
    )
    idx_b, pal_b = quantize(frames[1], 32)
    add(
        "hand_animated_local_palettes",
        G,
        lambda: gif_write(
            W,
            H,
            [
                {"idx": gidx, "palette": gpal, "delay": 5},
                {"idx": idx_b, "palette": pal_b, "disposal": 2},
            ],
            None,
        ),
    )
    add(
        "hand_animated_first_frame_partial_transparent",
        G,
        lambda: gif_write(
            W,
            H,
            [
                {"idx": gidx[:10, :20], "x": 3, "y": 4, "transparent": 1, "disposal": 1},
                {"idx": idx_b},
            ],
            gpal,
        ),
    )
    add(
        "size_1x1",
        G,
        lambda: gif_write(1, 1, [{"idx": np.array([[1]], np.uint8)}], [(0, 0, 0), (200, 100, 50)]),
    )
    add("size_500x3", G, lambda: enc(odd["500x3"], "GIF"))
    add("size_3x2000", G, lambda: enc(odd["3x2000"], "GIF"))
    add("screen_0x0_frame_10x10", G, lambda: gif_write(0, 0, [{"idx": gidx[:10, :10]}], gpal))

    # ---------------------------------------------------------------- WebP
    Wb = "webp"
    add("lossy", Wb, lambda: enc(src, "WEBP", quality=80))
    add("lossy_q5", Wb, lambda: enc(src, "WEBP", quality=5))
    add("lossy_q100", Wb, lambda: enc(src, "WEBP", quality=100))
    add("lossless", Wb, lambda: enc(src, "WEBP", lossless=True))
    add("lossless_alpha", Wb, lambda: enc(rgba, "WEBP", lossless=True))
    add("lossy_alpha", Wb, lambda: enc(rgba, "WEBP", quality=80))
    add("lossless_alpha_exact", Wb, lambda: enc(rgba, "WEBP", lossless=True, exact=True))
    add("lossless_grey", Wb, lambda: enc(grey, "WEBP", lossless=True))
    add(
        "animated",
        Wb,
        lambda: enc(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
    )
    add(
        "animated_lossy_alpha",
        Wb,
        lambda: enc(
            rgba,
            "WEBP",
            save_all=True,
            append_images=[f.convert("RGBA") for f in frames],
            quality=70,
        ),
    )
    for o in range(1, 9):
        add(
            f"exif_o{o}_lossy",
            Wb,
            lambda o=o: enc(src, "WEBP", quality=90, exif=b"Exif\0\0" + tiff_exif(o)),
        )
    add("exif_o6_noprefix_lossless", Wb, lambda: enc(src, "WEBP", lossless=True, exif=tiff_exif(6)))
    add(
        "exif_o5_bigendian_alpha",
        Wb,
        lambda: enc(rgba, "WEBP", lossless=True, exif=tiff_exif(5, little=False)),
    )
    add(
        "exif_o8_animated",
        Wb,
        lambda: enc(
            frames[0],
            "WEBP",
            save_all=True,
            append_images=frames[1:],
            lossless=True,
            exif=tiff_exif(8),
        ),
    )
    add("xmp_o6", Wb, lambda: enc(src, "WEBP", lossless=True, xmp=xmp_packet(6)))
    add(
        "xmp_o3_exif_no_orient",
        Wb,
        lambda: enc(src, "WEBP", lossless=True, xmp=xmp_packet(3), exif=tiff_exif(None)),
    )
    add("icc", Wb, lambda: enc(src, "WEBP", lossless=True, icc_profile=icc_srgb or b""))
    for k in ("1x1", "1x17", "17x1", "500x3", "3x2000", "7x9"):
        add(f"size_{k}_lossy", Wb, lambda k=k: enc(odd[k], "WEBP", quality=80))
        add(f"size_{k}_lossless", Wb, lambda k=k: enc(odd[k], "WEBP", lossless=True))

    # ---------------------------------------------------------------- BMP
    B = "bmp"
    add("pil_rgb", B, lambda: enc(src, "BMP"))
    add("pil_1bit", B, lambda: enc(src.convert("1"), "BMP"))
    add("pil_grey", B, lambda: enc(grey, "BMP"))
    add("pil_palette", B, lambda: enc(src.quantize(100), "BMP"))
    add("pil_rgba", B, lambda: enc(rgba, "BMP"))
    rows24 = [arr[y][:, ::-1].tobytes() for y in range(H)]
    add("hand24_topdown", B, lambda: bmp_write(W, H, 24, rows24, top_down=True))
    add("hand24_v4", B, lambda: bmp_write(W, H, 24, rows24, header=108))
    add("hand24_v5", B, lambda: bmp_write(W, H, 24, rows24, header=124))
    add("hand24_os2core", B, lambda: bmp_write(W, H, 24, rows24, header=12))
    bgra = np.concatenate([arr[..., ::-1], ra[..., 3:]], -1)
    rows32 = [bgra[y].tobytes() for y in range(H)]
    add("hand32_bi_rgb_alpha_byte", B, lambda: bmp_write(W, H, 32, rows32))
    add(
        "hand32_bitfields_v3_no_alpha",
        B,
        lambda: bmp_write(W, H, 32, rows32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0)),
    )
    add(
        "hand32_bitfields_v4_alpha",
        B,
        lambda: bmp_write(
            W, H, 32, rows32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000), header=108
        ),
    )
    add(
        "hand32_bitfields_v5_alpha_topdown",
        B,
        lambda: bmp_write(
            W,
            H,
            32,
            rows32,
            compression=3,
            masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000),
            header=124,
            top_down=True,
        ),
    )
    add(
        "hand32_bitfields_v3_56_alpha",
        B,
        lambda: bmp_write(
            W, H, 32, rows32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000), header=56
        ),
    )
    add(
        "hand32_bitfields_swapped_rgb",
        B,
        lambda: bmp_write(
            W, H, 32, rows32, compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0), header=108
        ),
    )
    add(
        "hand32_v5_bi_rgb_alpha_mask",
        B,
        lambda: bmp_write(
            W, H, 32, rows32, compression=0, masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000), header=124
        ),
    )
    r5 = arr[..., 0].astype(np.uint16) >> 3
    g5 = arr[..., 1].astype(np.uint16) >> 3
    g6 = arr[..., 1].astype(np.uint16) >> 2
    b5 = arr[..., 2].astype(np.uint16) >> 3
    p555 = (r5 << 10) | (g5 << 5) | b5
    p565 = (r5 << 11) | (g6 << 5) | b5
    add(
        "hand16_555_bi_rgb",
        B,
        lambda: bmp_write(W, H, 16, [p555[y].astype("<u2").tobytes() for y in range(H)]),
    )
    add(
        "hand16_565_bitfields",
        B,
        lambda: bmp_write(
            W,
            H,
            16,
            [p565[y].astype("<u2").tobytes() for y in range(H)],
            compression=3,
            masks=(0xF800, 0x7E0, 0x1F, 0),
        ),
    )
    add(
        "hand16_555_bitfields_v4",
        B,
        lambda: bmp_write(
            W,
            H,
            16,
            [p555[y].astype("<u2").tobytes() for y in range(H)],
            compression=3,
            masks=(0x7C00, 0x3E0, 0x1F, 0),
            header=108,
        ),
    )
    idx16, pal16 = quantize(src, 16)
    idx256, pal256 = quantize(src, 256)
    idx2 = (g8 > 120).astype(np.uint8)
    add(
        "hand1",
        B,
        lambda: bmp_write(
            W, H, 1, [_pack(idx2[y], 1) for y in range(H)], palette=[(20, 40, 200), (250, 240, 10)]
        ),
    )
    add(
        "hand4",
        B,
        lambda: bmp_write(W, H, 4, [_pack(idx16[y], 4) for y in range(H)], palette=pal16),
    )
    add(
        "hand4_topdown_os2",
        B,
        lambda: bmp_write(
            W, H, 4, [_pack(idx16[y], 4) for y in range(H)], palette=pal16, header=12
        ),
    )
    add(
        "hand8",
        B,
        lambda: bmp_write(W, H, 8, [idx256[y].tobytes() for y in range(H)], palette=pal256),
    )
    add(
        "hand8_topdown_v5",
        B,
        lambda: bmp_write(
            W,
            H,
            8,
            [idx256[y].tobytes() for y in range(H)],
            palette=pal256,
            header=124,
            top_down=True,
        ),
    )
    idx_few = (idx256 % 20).astype(np.uint8)
    add(
        "hand8_clrused20",
        B,
        lambda: bmp_write(W, H, 8, [idx_few[y].tobytes() for y in range(H)], palette=pal256[:20]),
    )
    add(
        "hand8_rle",
        B,
        lambda: bmp_write(W, H, 8, [], palette=pal256, compression=1, pixel_data=rle8(idx256)),
    )
    add(
        "hand8_rle_delta_skips",
        B,
        lambda: bmp_write(
            W, H, 8, [], palette=pal256, compression=1, pixel_data=rle8(idx256, skips=True)
        ),
    )
    add(
        "hand8_rle_early_eof",
        B,
        lambda: bmp_write(
            W,
            H,
            8,
            [],
            palette=pal256,
            compression=1,
            pixel_data=rle8(idx256)[: len(rle8(idx256)) // 2] + b"\x00\x01",
        ),
    )
    add(
        "hand4_rle",
        B,
        lambda: bmp_write(W, H, 4, [], palette=pal16, compression=2, pixel_data=rle4(idx16)),
    )
    add("size_1x1_24", B, lambda: bmp_write(1, 1, 24, [b"\x10\x20\x30"]))
    add("size_5000x3_24", B, lambda: enc(odd["5000x3"], "BMP"))
    add("size_1x17_1bit", B, lambda: enc(odd["1x17"].convert("1"), "BMP"))

    # ---------------------------------------------------------------- TIFF
    T = "tiff"
    cmyk = src.convert("CMYK")
    pal_img = src.quantize(64)
    tiff_modes = {
        "rgb": src,
        "rgba": rgba,
        "grey": grey,
        "cmyk": cmyk,
        "palette": pal_img,
        "bilevel": src.convert("1"),
        "la": rgba.convert("LA"),
    }
    for mname, im in tiff_modes.items():
        comps = ["raw", "tiff_lzw", "tiff_deflate", "packbits"]
        if mname in ("rgb", "grey"):
            comps.append("jpeg")
        if mname == "bilevel":
            comps += ["group4", "group3"]
        for c in comps:
            add(f"{mname}_{c}", T, lambda im=im, c=c: enc(im, "TIFF", compression=c))
    for o in range(1, 9):
        add(f"rgb_orientation{o}", T, lambda o=o: enc(src, "TIFF", tiffinfo={274: o}))
    add(
        "rgba_orientation6_lzw",
        T,
        lambda: enc(rgba, "TIFF", compression="tiff_lzw", tiffinfo={274: 6}),
    )
    add("xmp_o6_no_orientation", T, lambda: enc(src, "TIFF", tiffinfo={700: xmp_packet(6)}))
    add(
        "multipage_first_small",
        T,
        lambda: enc(mc.photo(20, 10, 5), "TIFF", save_all=True, append_images=[src]),
    )
    add(
        "multipage_rgb_then_grey",
        T,
        lambda: enc(src, "TIFF", save_all=True, append_images=[grey, rgba]),
    )
    r16le = r16
    add("rgb16_hand", T, lambda: mc.tiff_rgb16(r16le))
    add("grey16_pil", T, lambda: enc(Image.fromarray(g8.astype(np.uint16) * 257 + 5), "TIFF"))

    def via_tiffcp(base: bytes, *args: str) -> bytes | None:
        if shutil.which("tiffcp") is None:
            return None
        with tempfile.TemporaryDirectory() as d:
            a, b = Path(d, "a.tif"), Path(d, "b.tif")
            a.write_bytes(base)
            subprocess.run(["tiffcp", *args, str(a), str(b)], capture_output=True, check=True)
            return b.read_bytes()

    bases = {
        "rgb": enc(src, "TIFF"),
        "rgba": enc(rgba, "TIFF"),
        "grey": enc(grey, "TIFF"),
        "cmyk": enc(cmyk, "TIFF"),
        "palette": enc(pal_img, "TIFF"),
        "rgb16": mc.tiff_rgb16(r16le),
    }
    variants = {
        "tiled_raw": ["-t", "-w", "16", "-l", "16"],
        "tiled_lzw": ["-t", "-w", "16", "-l", "16", "-c", "lzw"],
        "tiled_zip_planar": ["-t", "-w", "16", "-l", "16", "-c", "zip", "-p", "separate"],
        "strips_planar": ["-p", "separate", "-r", "7"],
        "strips_lzw_pred2": ["-c", "lzw:2", "-r", "5"],
        "strips_zip_pred2_planar": ["-c", "zip:2", "-p", "separate"],
        "strips_packbits_bigendian": ["-c", "packbits", "-B"],
        "tiled_planar_raw": ["-t", "-w", "32", "-l", "16", "-p", "separate"],
    }
    for bname, base in bases.items():
        for vname, args in variants.items():
            add(f"tiffcp_{bname}_{vname}", T, lambda base=base, args=args: via_tiffcp(base, *args))
    add("tiffcp_rgb_jpeg", T, lambda: via_tiffcp(bases["rgb"], "-c", "jpeg"))
    add("tiffcp_rgb_jpeg_rgbcolour", T, lambda: via_tiffcp(bases["rgb"], "-c", "jpeg:r"))
    add("tiffcp_grey_jpeg_tiled", T, lambda: via_tiffcp(bases["grey"], "-t", "-c", "jpeg"))
    add("tiffcp_rgb_float_pred3", T, lambda: via_tiffcp(bases["rgb"], "-c", "zip:3"))
    add("tiffcp_grey_minisblack_lsb2msb", T, lambda: via_tiffcp(bases["grey"], "-L"))
    add(
        "grey_miniswhite_hand",
        T,
        lambda: (
            lambda d: d.replace(
                struct.pack("<HHIHH", 262, 3, 1, 1, 0), struct.pack("<HHIHH", 262, 3, 1, 0, 0)
            )
        )(mc.tiff_raw(W, H, (8,), g8.tobytes())),
    )
    add(
        "grey4_hand",
        T,
        lambda: mc.tiff_raw(W, H, (4,), b"".join(_pack(g8[y] >> 4, 4) for y in range(H))),
    )
    add("size_1x1", T, lambda: enc(odd["1x1"], "TIFF"))
    add("size_5000x3_lzw", T, lambda: enc(odd["5000x3"], "TIFF", compression="tiff_lzw"))
    add(
        "size_3x2000_tiled",
        T,
        lambda: via_tiffcp(enc(odd["3x2000"], "TIFF"), "-t", "-w", "16", "-l", "16"),
    )

    # ---------------------------------------------------------------- round 2: metadata corners
    for typ, tname in ((1, "byte"), (8, "sshort"), (9, "slong")):
        add(
            f"exif_o6_{tname}_type",
            J,
            lambda typ=typ: enc(src, "JPEG", exif=b"Exif\0\0" + tiff_exif(6, typ=typ)),
        )
        add(
            f"exif_o6_{tname}_type",
            Wb,
            lambda typ=typ: enc(src, "WEBP", lossless=True, exif=tiff_exif(6, typ=typ)),
        )
        add(
            f"exif_chunk_o6_{tname}_type",
            P,
            lambda typ=typ: png_insert(enc(src, "PNG"), b"IDAT", (b"eXIf", tiff_exif(6, typ=typ))),
        )
    add(
        "exif_two_app1_first_without_orientation",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"Exif\0\0" + tiff_exif(None)),
            segment(0xE1, b"Exif\0\0" + tiff_exif(6)),
        ),
    )
    add(
        "exif_two_app1_first_o9_then_o6",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"Exif\0\0" + tiff_exif(9)),
            segment(0xE1, b"Exif\0\0" + tiff_exif(6)),
        ),
    )
    add(
        "xmp_two_segments_o6_then_o3",
        J,
        lambda: insert_after_soi(
            enc(src, "JPEG"),
            segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(6)),
            segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(3)),
        ),
    )
    tif = enc(src, "TIFF", tiffinfo={274: 6})
    add("orientation6_long_type", T, lambda: tiff_set_tag(tif, 274, 6, typ=4))
    add("orientation6_byte_type", T, lambda: tiff_set_tag(tif, 274, 6, typ=1))
    add("orientation9", T, lambda: tiff_set_tag(tif, 274, 9))
    add(
        "orientation6_multipage",
        T,
        lambda: enc(src, "TIFF", tiffinfo={274: 6}, save_all=True, append_images=[grey]),
    )
    rgba_tif = enc(rgba, "TIFF")
    add("rgba_extrasamples0_unspecified", T, lambda: tiff_set_tag(rgba_tif, 338, 0))
    add("rgba_extrasamples1_associated", T, lambda: tiff_set_tag(rgba_tif, 338, 1))
    add("rgba_no_extrasamples_tag", T, lambda: tiff_set_tag(rgba_tif, 338, None))
    add("rgb_lzw_rowsperstrip1", T, lambda: via_tiffcp(bases["rgb"], "-c", "lzw", "-r", "1"))
    add("palette16_colours", T, lambda: via_tiffcp(enc(src.quantize(16), "TIFF"), "-c", "none"))
    add(
        "grey16_bigendian",
        T,
        lambda: via_tiffcp(enc(Image.fromarray(g8.astype(np.uint16) * 257 + 5), "TIFF"), "-B"),
    )
    add("rgb16_tiled_lzw", T, lambda: via_tiffcp(bases["rgb16"], "-t", "-c", "lzw"))
    add(
        "grey_tiled_lzw_16x16",
        T,
        lambda: via_tiffcp(bases["grey"], "-t", "-w", "16", "-l", "16", "-c", "lzw"),
    )
    add(
        "grey_tiled_lzw_32x32",
        T,
        lambda: via_tiffcp(bases["grey"], "-t", "-w", "32", "-l", "32", "-c", "lzw"),
    )
    add("grey_strips_lzw_r5", T, lambda: via_tiffcp(bases["grey"], "-c", "lzw", "-r", "5"))
    add(
        "rgb_tiled_lzw_32",
        T,
        lambda: via_tiffcp(bases["rgb"], "-t", "-w", "32", "-l", "32", "-c", "lzw"),
    )
    add(
        "grey_64x64_tiled_lzw_16",
        T,
        lambda: via_tiffcp(
            enc(odd["64x64"].convert("L"), "TIFF"), "-t", "-w", "16", "-l", "16", "-c", "lzw"
        ),
    )
    # WebP: animation whose first frame the encoder may crop (transparent border)
    border = np.zeros((H, W, 4), np.uint8)
    border[8:20, 10:30] = np.asarray(rgba)[8:20, 10:30]
    border[8:20, 10:30, 3] = 255
    bimg = Image.fromarray(border, "RGBA")
    add(
        "animated_first_frame_transparent_border",
        Wb,
        lambda: enc(bimg, "WEBP", save_all=True, append_images=[rgba, bimg], lossless=True),
    )
    add(
        "animated_gif_first_frame_transparent_border",
        G,
        lambda: enc(bimg, "GIF", save_all=True, append_images=[rgba, bimg]),
    )
    add(
        "apng_first_frame_transparent_border",
        P,
        lambda: enc(bimg, "PNG", save_all=True, append_images=[rgba, bimg]),
    )
    # BMP extras
    add("hand24_with_palette", B, lambda: bmp_write(W, H, 24, rows24, palette=pal16))
    zero_alpha = [bytes(b if (i % 4) != 3 else 0 for i, b in enumerate(r)) for r in rows32]
    add("hand32_bi_rgb_zero_alpha", B, lambda: bmp_write(W, H, 32, zero_alpha))
    add(
        "hand32_v4_alpha_all_zero",
        B,
        lambda: bmp_write(
            W,
            H,
            32,
            zero_alpha,
            compression=3,
            masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000),
            header=108,
        ),
    )
    add(
        "hand16_v5_argb1555",
        B,
        lambda: bmp_write(
            W,
            H,
            16,
            [(p555[y] | 0x8000).astype("<u2").tobytes() for y in range(H)],
            compression=3,
            masks=(0x7C00, 0x3E0, 0x1F, 0x8000),
            header=124,
        ),
    )
    # extreme aspect ratios
    long_strip = mc.photo(30000, 1, seed=4)
    add("size_30000x1", P, lambda: enc(long_strip, "PNG"))
    add("size_1x30000", P, lambda: enc(long_strip.transpose(Image.Transpose.ROTATE_90), "PNG"))
    add("size_30000x1", J, lambda: enc(long_strip, "JPEG"))
    add("size_1x30000_exif6", J, lambda: enc(long_strip, "JPEG", exif=b"Exif\0\0" + tiff_exif(6)))
    add("size_16383x1", Wb, lambda: enc(mc.photo(16383, 1, seed=4), "WEBP", lossless=True))
    # ---------------------------------------------------------------- round 3
    exif_o6_count2 = bytearray(tiff_exif(6))
    struct.pack_into("<I", exif_o6_count2, 8 + 2 + 4, 2)  # SHORT count 2: values 6, 0 inline
    add(
        "exif_o6_short_count2",
        J,
        lambda: enc(src, "JPEG", exif=b"Exif\0\0" + bytes(exif_o6_count2)),
    )
    add(
        "exif_o6_short_count2",
        Wb,
        lambda: enc(src, "WEBP", lossless=True, exif=bytes(exif_o6_count2)),
    )
    add(
        "exif_chunk_o6_short_count2",
        P,
        lambda: png_insert(enc(src, "PNG"), b"IDAT", (b"eXIf", bytes(exif_o6_count2))),
    )
    add(
        "two_exif_chunks_o6_then_o3",
        P,
        lambda: png_insert(
            enc(src, "PNG"), b"IDAT", (b"eXIf", tiff_exif(6)), (b"eXIf", tiff_exif(3))
        ),
    )
    add(
        "exif_chunk_o1_and_raw_profile_o6",
        P,
        lambda: png_insert(
            enc(src, "PNG"),
            b"IDAT",
            (b"eXIf", tiff_exif(1)),
            (b"tEXt", b"Raw profile type exif\0" + raw_profile.encode()),
        ),
    )
    add("orientation6_sshort_type", T, lambda: tiff_set_tag(tif, 274, 6, typ=8))
    add(
        "exif_o6_in_jpeg_app1_of_tiff_like_tag",
        T,
        lambda: enc(src, "TIFF", tiffinfo={274: 3}, exif=b"Exif\0\0" + tiff_exif(6)),
    )
    # ---------------------------------------------------------------- round 4
    adobe0 = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00")
    adobe1 = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")
    add("adobe_transform0_on_ycbcr", J, lambda: insert_after_soi(enc(src, "JPEG"), adobe0))
    add(
        "adobe_transform1_on_rgb_ids",
        J,
        lambda: (
            insert_after_soi(strip_app(cjpeg(src, "-rgb"), 0xEE), adobe1)
            if cjpeg(src, "-rgb")
            else None
        ),
    )
    add(
        "no_jfif_rgb_component_ids",
        J,
        lambda: (
            strip_app(strip_app(cjpeg(src, "-rgb"), 0xE0), 0xEE) if cjpeg(src, "-rgb") else None
        ),
    )
    add("no_jfif_no_adobe_ycbcr", J, lambda: strip_app(enc(src, "JPEG"), 0xE0))
    add(
        "transparent_index_beyond_palette",
        G,
        lambda: gif_write(W, H, [{"idx": gidx, "transparent": 200}], gpal),
    )
    add(
        "zero_size_first_frame",
        G,
        lambda: gif_write(W, H, [{"idx": np.zeros((0, 0), np.uint8)}, {"idx": gidx}], gpal),
    )
    add(
        "lossless_palette16",
        Wb,
        lambda: enc(src.quantize(16).convert("RGB"), "WEBP", lossless=True),
    )
    add(
        "lossless_palette2_grey",
        Wb,
        lambda: enc(src.convert("1").convert("RGB"), "WEBP", lossless=True),
    )
    add(
        "lossy_alpha_q30_method6",
        Wb,
        lambda: enc(rgba, "WEBP", quality=60, alpha_quality=30, method=6),
    )
    add(
        "lossless_rgba_all_transparent",
        Wb,
        lambda: enc(Image.new("RGBA", (W, H), (10, 200, 30, 0)), "WEBP", lossless=True, exact=True),
    )
    add(
        "grey16_trns",
        P,
        lambda: png_write(
            g8.astype(np.uint16) * 257, 16, 0, trns=struct.pack(">H", int(g8[0, 0]) * 257)
        ),
    )
    add(
        "palette_1_entry",
        P,
        lambda: png_write(np.zeros((H, W), np.uint8), 1, 3, plte=bytes([12, 200, 99])),
    )
    add(
        "rgba8_all_transparent",
        P,
        lambda: png_write(
            np.zeros((H, W, 4), np.uint8) + np.array([200, 10, 10, 0], np.uint8), 8, 6
        ),
    )
    add("la8_exif_o7", P, lambda: png_insert(png_write(la, 8, 4), b"IDAT", (b"eXIf", tiff_exif(7))))
    add(
        "grey16_exif_o6",
        P,
        lambda: png_insert(
            png_write(g8.astype(np.uint16) * 257 + 3, 16, 0), b"IDAT", (b"eXIf", exif6)
        ),
    )
    if skipped:
        print(f"heldout_check: left out (tool missing): {', '.join(skipped)}", file=sys.stderr)
    return cases


# --------------------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------------------


def pillow_pre(data: bytes) -> tuple[Image.Image, Image.Image | None, bool]:
    """Pillow's pipeline up to the resize: (RGB image, RGB image without the alpha
    compositing or None, grey16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        grey16 = img.mode.startswith("I;16")
        no_alpha = None
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            no_alpha = img.convert("RGB")
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return img.convert("RGB"), no_alpha, grey16


def to_tensor(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.resize((size, size)), np.float32) / 127.5 - 1.0


TRANSPOSES = {
    "identity": None,
    "flip_lr": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip_tb": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}


@dataclass
class Row:
    name: str
    fmt: str
    outcome: str
    max_levels: float | None = None
    mean_levels: float | None = None
    cause: str = ""
    fl_error: str | None = None
    pl_error: str | None = None
    grey16: bool = False
    square: bool = True


def _decode(datas: list[bytes], size: int):
    import fruitlens

    b = fruitlens.decode(datas, size=size, threads=1)
    errs = b.column("error").to_pylist()
    col = b.column("pixels")
    out = []
    for i, e in enumerate(errs):
        out.append(
            (None, e)
            if e is not None
            else (np.asarray(col[i].values, np.float32).reshape(size, size, 3), None)
        )
    return out


def _levels(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.abs(a - b) * 127.5
    return float(d.max()), float(d.mean())


def _png(img: Image.Image) -> bytes:
    img = img.copy()
    img.info = {}  # e.g. a "transparency" that does not fit an RGB image
    return enc(img, "PNG", compress_level=1)


def find_crashes(paths: list[Path], size: int, timeout: float = 300) -> set[str]:
    """Names of the files that kill or hang a child process running fruitlens.decode
    (all at once first; on failure, one by one)."""
    code = (
        "import sys, fruitlens; from pathlib import Path;"
        "fruitlens.decode([Path(p).read_bytes() for p in sys.argv[2:]],"
        " size=int(sys.argv[1]), threads=1)"
    )

    def ok(ps: list[Path], t: float) -> bool:
        try:
            r = subprocess.run(
                [sys.executable, "-c", code, str(size), *map(str, ps)],
                capture_output=True,
                timeout=t,
            )
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0

    if ok(paths, timeout):
        return set()
    return {p.name for p in paths if not ok([p], 60)}


def classify(
    cases: dict[str, tuple[str, bytes]], size: int, folder: Path, subprocess_check: bool = True
) -> list[Row]:
    names = list(cases)
    paths = []
    for n in names:
        p = folder / n.replace("/", "__")
        p.write_bytes(cases[n][1])
        paths.append(p)
    crashed = find_crashes(paths, size) if subprocess_check else set()
    alive = [n for n, p in zip(names, paths) if p.name not in crashed]
    results = dict(zip(alive, _decode([cases[n][1] for n in alive], size)))
    rows = []
    for n in names:
        fmt, data = cases[n]
        if n not in results:
            rows.append(Row(n, fmt, "crash"))
            continue
        ours, ferr = results[n]
        try:
            pre, no_alpha, g16 = pillow_pre(data)
            ref = to_tensor(pre, size)
            perr = None
        except Exception as e:
            pre = no_alpha = ref = None
            g16 = False
            perr = f"{type(e).__name__}: {e}"[:200]
        row = Row(n, fmt, "", fl_error=ferr, pl_error=perr, grey16=g16)
        if ferr is not None and perr is not None:
            row.outcome = "both_error"
        elif ferr is not None:
            row.outcome = "internal" if ferr.startswith("internal") else "fl_error"
        elif perr is not None:
            row.outcome = "pl_error"
        else:
            row.square = pre.size[0] == pre.size[1]
            row.max_levels, row.mean_levels = _levels(ours, ref)
            if row.max_levels < 0.01:
                row.outcome = "identical"
            else:
                row.outcome = (
                    "small"
                    if row.max_levels <= SMALL_MAX and row.mean_levels <= SMALL_MEAN
                    else "disagree"
                )
                row.cause = locate(ours, pre, no_alpha, size)
        rows.append(row)
    return rows


def locate(ours: np.ndarray, pre: Image.Image, no_alpha: Image.Image | None, size: int) -> str:
    """Which step differs (see the module docstring)."""
    ((via_png, _),) = _decode([_png(pre)], size)
    if via_png is not None and _levels(ours, via_png)[0] < 0.01:
        return "resize"
    tries = []
    for tname, op in TRANSPOSES.items():
        if op is None:
            continue
        tries.append((f"orientation:{tname}", pre.transpose(op)))
    if no_alpha is not None:
        tries.append(("alpha:not-composited", no_alpha))
    best = None
    for label, im in tries:
        ((t, _),) = _decode([_png(im)], size)
        if t is None:
            continue
        m, mean = _levels(ours, t)
        if m <= SMALL_MAX and mean <= SMALL_MEAN:
            return f"{label} (max {m:.1f})"
        if best is None or mean < best[1]:
            best = (label, mean)
    extra = ""
    if via_png is not None:
        m, mean = _levels(ours, via_png)
        extra = f" pre-resize differs: via-PNG max {m:.1f} mean {mean:.2f}"
    return "decode/colour" + extra


OUTCOMES = [
    "identical",
    "small",
    "disagree",
    "fl_error",
    "pl_error",
    "both_error",
    "internal",
    "crash",
]


#: Disagreements with Pillow that are known, each with its reason (the pytest in
#: tests/test_corpus.py refuses any other).
KNOWN_DISAGREEMENTS: dict[str, str] = {}

#: The specific error kinds (everything but ``internal``).
SPECIFIC_KINDS = (
    "empty",
    "too_many_bytes",
    "unknown_format",
    "too_many_pixels",
    "unsupported",
    "truncated",
    "corrupt",
)


def problems(rows: list[Row]) -> list[str]:
    """What the pytest refuses: crashes, internal errors, disagreements not in
    ``KNOWN_DISAGREEMENTS``, and fruitlens errors without a specific kind where
    Pillow decodes."""
    out = []
    for r in rows:
        if r.outcome in ("crash", "internal"):
            out.append(f"{r.name}: {r.outcome} {r.fl_error or ''}")
        elif r.outcome == "disagree" and r.name not in KNOWN_DISAGREEMENTS:
            out.append(f"{r.name}: disagree (max {r.max_levels:.1f} levels, {r.cause})")
        elif r.outcome == "fl_error" and (r.fl_error or "").split(":")[0] not in SPECIFIC_KINDS:
            out.append(f"{r.name}: unspecific error where Pillow decodes: {r.fl_error}")
    return out


def table(rows: list[Row]) -> str:
    per: dict[str, Counter] = {}
    for r in rows:
        per.setdefault(r.fmt, Counter())[r.outcome] += 1
        per[r.fmt]["files"] += 1
    total = sum(per.values(), Counter())
    cols = ["files", *OUTCOMES]
    lines = ["| format | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for f in [*sorted(per), "all"]:
        c = total if f == "all" else per[f]
        lines.append(f"| {f} | " + " | ".join(str(c[k]) for k in cols) + " |")
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    out = []
    for r in rows:
        if r.outcome == "identical":
            continue
        lv = f"max {r.max_levels:.2f} mean {r.mean_levels:.3f}" if r.max_levels is not None else ""
        tags = []
        if r.grey16:
            tags.append("grey16")
        if not r.square:
            tags.append("non-square")
        out.append(
            f"- {r.name}: {r.outcome} {lv} {r.cause} {' '.join(tags)}"
            + (f" | fruitlens: {r.fl_error}" if r.fl_error else "")
            + (f" | Pillow: {r.pl_error}" if r.pl_error else "")
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the files here (kept)")
    ap.add_argument("--only", help="only cases whose name contains this")
    ap.add_argument("--details", action="store_true")
    ap.add_argument("--no-subprocess", action="store_true", help="skip the crash pre-check")
    args = ap.parse_args(argv)
    Image.MAX_IMAGE_PIXELS = None
    cases = build(args.seed)
    if args.only:
        cases = {k: v for k, v in cases.items() if args.only in k}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = classify(cases, args.size, folder, not args.no_subprocess)
    print(table(rows))
    if args.details:
        print()
        print(details(rows))
    bad = [
        r for r in rows if r.outcome in ("disagree", "internal", "crash", "fl_error", "pl_error")
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
