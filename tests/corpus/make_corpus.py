"""Generate fruitlens' bad-input corpus: deterministic, nothing committed but this file.

    python tests/corpus/make_corpus.py OUT_DIR [--small]

Writes one file per case into ``OUT_DIR`` (``<name>.<ext>``) and ``OUT_DIR/index.json``
(case name → file name). ``tests/test_corpus.py`` holds the expected outcome of every
case; ``fuzz/`` uses the files as its seed corpus (``--small`` leaves out the cases
larger than 1 MiB, which only slow a fuzzer down).

The images come from Pillow and from hand-crafted bytes (bombs, truncations, YCCK,
…). Cases needing ``jpegtran`` (Debian ``libjpeg-turbo-progs``: the arithmetic-coded
JPEG) are left out, with a note on stderr, when it is not installed. Runs on Python
3.9+.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

#: Cases bigger than this are left out with ``--small``.
SMALL_LIMIT = 1 << 20

#: The size of the "too many bytes" case, just above the limit the test sets.
TOO_MANY_BYTES_LIMIT = 16 * 1024 * 1024


# --------------------------------------------------------------------------------------
# source images
# --------------------------------------------------------------------------------------


def photo(w: int = 120, h: int = 90, seed: int = 0) -> Image.Image:
    """A deterministic photo-like RGB image: gradients, a disc and mild noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    disc = ((x - w * 0.6) ** 2 + (y - h * 0.4) ** 2) < (min(w, h) * 0.25) ** 2
    arr = np.stack([r, g, b], -1)
    arr[disc] = [230, 40, 60]
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def alpha_of(img: Image.Image) -> Image.Image:
    """A horizontal alpha ramp with a fully transparent and a fully opaque band."""
    w, h = img.size
    ramp = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    ramp[:, : w // 8] = 0
    ramp[:, -w // 8 :] = 255
    return Image.fromarray(ramp, "L")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# hand-made containers
# --------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_raw(w: int, h: int, bit_depth: int, colour: int, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by channel count) written by hand."""
    arr = arr.astype(">u2")
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    return png_raw(w, h, 16, colour, zlib.compress(raw))


def tiff_rgb16(arr: np.ndarray) -> bytes:
    """A baseline uncompressed 16-bit RGB TIFF (little-endian) written by hand."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    return tiff_raw(w, h, (16, 16, 16), data)


def tiff_raw(w: int, h: int, bits: tuple, data: bytes) -> bytes:
    """A one-strip uncompressed TIFF with the given width, height and bits per sample."""
    spp = len(bits)
    entries = [
        (256, 4, 1, w),  # ImageWidth
        (257, 4, 1, h),  # ImageLength
        (258, 3, spp, None),  # BitsPerSample (-> offset when spp > 2)
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 2 if spp >= 3 else 1),  # RGB or BlackIsZero
        (273, 4, 1, None),  # StripOffsets
        (277, 3, 1, spp),  # SamplesPerPixel
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, len(data)),  # StripByteCounts
        (284, 3, 1, 1),  # PlanarConfiguration: contiguous
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bps_offset = ifd_offset + ifd_size
    data_offset = bps_offset + 2 * spp
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            if spp <= 2:
                vals = list(bits) + [0] * (2 - spp)
                out += struct.pack("<HHIHH", tag, typ, count, *vals)
                continue
            value = bps_offset
        elif tag == 273:
            value = data_offset
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += b"".join(struct.pack("<H", b) for b in bits)
    out += data
    return bytes(out)


def jpeg_segments(data: bytes) -> list[tuple]:
    """(marker, start offset, total length) of each segment up to the first SOS."""
    out = []
    i = 2
    while i < len(data) - 4:
        assert data[i] == 0xFF, i
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, i, 2 + length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def find_segment(data: bytes, marker: int) -> tuple:
    for m, start, length in jpeg_segments(data):
        if m == marker:
            return start, length
    raise ValueError(f"no marker {marker:#x}")


def scan_start(data: bytes) -> int:
    start, length = find_segment(data, 0xDA)
    return start + length


def with_sof_size(data: bytes, w: int, h: int) -> bytes:
    """Patch the frame header (SOF0/SOF2) to declare w x h."""
    for m, start, _ in jpeg_segments(data):
        if m in (0xC0, 0xC1, 0xC2):
            b = bytearray(data)
            b[start + 5 : start + 9] = struct.pack(">HH", h, w)
            return bytes(b)
    raise ValueError("no SOF")


def ycck_jpeg(src: Image.Image) -> bytes:
    """A YCCK JPEG (Adobe APP14 transform = 2) whose colours, decoded as Pillow does
    (libjpeg YCCK → inverted CMYK → RGB), come out close to ``src``.

    libjpeg turns stored (Y, Cb, Cr, K) into (255 − R, 255 − G, 255 − B, K), which
    Pillow reads as ``CMYK;I``: RGB = K/255 · (255 − R', …) with (R', G', B') the RGB of
    (Y, Cb, Cr). So we store the YCbCr of the *negative* of ``src`` and K ≈ 255.
    Pillow writes CMYK JPEGs without colour transform (Adobe transform 0), storing
    255 − value; handing it 255 − (Y, Cb, Cr, K) stores exactly (Y, Cb, Cr, K); then
    the transform byte is patched to 2.
    """
    neg = Image.eval(src, lambda v: 255 - v)
    y, cb, cr = neg.convert("YCbCr").split()
    w, h = src.size
    k = Image.fromarray(
        np.tile(np.linspace(255, 215, w).astype(np.uint8), (h, 1)), "L"
    )  # a little black ink, more to the right
    stored = [y, cb, cr, k]
    handed = Image.merge("CMYK", [Image.eval(c, lambda v: 255 - v) for c in stored])
    data = bytearray(encode(handed, "JPEG", quality=95))
    start, _ = find_segment(bytes(data), 0xEE)
    assert data[start + 4 : start + 9] == b"Adobe"
    assert data[start + 15] == 0, "Pillow wrote an Adobe transform other than 0"
    data[start + 15] = 2
    out = bytes(data)
    # Sanity: Pillow's decode is close to src (not inverted).
    back = np.asarray(Image.open(io.BytesIO(out)).convert("RGB"), np.float32)
    diff = np.abs(back - np.asarray(src, np.float32)).mean()
    assert diff < 25, f"YCCK crafting went wrong (mean |diff| {diff})"
    return out


def without_adobe(data: bytes) -> bytes:
    start, length = find_segment(data, 0xEE)
    return data[:start] + data[start + length :]


def gif_header_only(w: int, h: int, fw: int, fh: int) -> bytes:
    """A GIF with a w x h logical screen and one fw x fh frame with almost no data."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", w, h) + b"\x80\x00\x00")
    out += b"\x00\x00\x00\xff\xff\xff"  # 2-colour global palette
    out += b"\x2c" + struct.pack("<HHHH", 0, 0, fw, fh) + b"\x00"
    out += b"\x02\x02\x44\x01\x00"  # LZW min size 2, one tiny sub-block, terminator
    out += b"\x3b"
    return bytes(out)


def bmp_header_only(w: int, h: int) -> bytes:
    """A 24-bit BMP whose header claims w x h, with 64 bytes of pixel data."""
    pixels = b"\x80" * 64
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def webp_vp8x_bomb(w: int, h: int) -> bytes:
    """A WebP whose VP8X canvas claims w x h, followed by a tiny 1x1 lossless frame."""
    small = encode(Image.new("RGB", (1, 1), (1, 2, 3)), "WEBP", lossless=True)
    vp8l = small[12:]  # the VP8L chunk of the simple file
    flags = 0
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0])
    vp8x += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pillow_reference(data: bytes, size: int) -> np.ndarray:
    """The classic pipeline's model input for ``data`` (16-bit grey included: Pillow's
    ``I;16 → RGB`` clips to 255, and so does fruitlens)."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    img = img.convert("RGB").resize((size, size))
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def exif_with_orientation(o: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = o
    return exif


#: Stored transform that the EXIF orientation tag ``o`` undoes.
STORED = {
    1: lambda im: im,
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
}


def idat_bomb(w: int, h: int, inflated: int) -> bytes:
    """A w x h RGB PNG whose IDAT stream inflates to ``inflated`` bytes (the image
    needs only h·(3w+1)): the rest is zero rows past the end of the image."""
    img = np.asarray(photo(w, h, seed=3))
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    comp = zlib.compressobj(9)
    parts = [comp.compress(raw)]
    block = b"\x00" * (1 << 20)
    left = inflated - len(raw)
    while left > 0:
        n = min(left, len(block))
        parts.append(comp.compress(block[:n]))
        left -= n
    parts.append(comp.flush())
    return png_raw(w, h, 8, 2, b"".join(parts))


def jpegtran(data: bytes, *args: str) -> bytes | None:
    exe = shutil.which("jpegtran")
    if exe is None:
        return None
    return subprocess.run([exe, *args], input=data, capture_output=True, check=True).stdout


# --------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------


def build(small: bool = False) -> dict[str, tuple]:
    """name → (extension, bytes). ``small`` leaves out the big cases."""
    src = photo()
    rgba = src.convert("RGBA")
    rgba.putalpha(alpha_of(src))
    jpeg = encode(src, "JPEG", quality=90)
    png = encode(src, "PNG")
    sos = scan_start(jpeg)
    rng = np.random.RandomState(42)
    cases: dict[str, tuple] = {}

    def add(name: str, ext: str, make: Callable[[], bytes | None], big: bool = False) -> None:
        if big and small:
            return
        data = make()
        if data is None:
            print(f"make_corpus: {name} left out (jpegtran not installed)", file=sys.stderr)
            return
        cases[name] = (ext, data)

    # --- not images at all
    add("empty", "jpg", lambda: b"")
    add("random_bytes", "bin", lambda: b"\x13\x37" + rng.bytes(4094))
    add("text_named_jpg", "jpg", lambda: b"This is not a JPEG, just text.\n" * 20)

    # --- truncations
    dqt_start, _ = find_segment(jpeg, 0xDB)
    add("jpeg_trunc_in_header", "jpg", lambda: jpeg[: dqt_start + 20])
    add("jpeg_trunc_after_sof", "jpg", lambda: jpeg[: find_segment(jpeg, 0xC0)[0] + 19])
    add("jpeg_trunc_early_scan", "jpg", lambda: jpeg[: sos + 40])
    add("jpeg_trunc_mid_scan", "jpg", lambda: jpeg[: (sos + len(jpeg)) // 2])
    add("jpeg_trunc_near_end", "jpg", lambda: jpeg[:-40])
    add("jpeg_missing_eoi", "jpg", lambda: jpeg[:-2])
    add("png_trunc_in_ihdr", "png", lambda: png[:20])
    add("png_trunc_mid_idat", "png", lambda: png[: len(png) // 2])
    add("png_missing_iend", "png", lambda: png[:-12])

    # --- corrupt data
    mid = (sos + len(jpeg)) // 2
    add(
        "jpeg_corrupt_entropy",
        "jpg",
        lambda: jpeg[:mid] + bytes(range(256)) * 2 + jpeg[mid + 512 :],
    )
    add("jpeg_corrupt_huffman", "jpg", lambda: jpeg[:mid] + b"\xff\x00" * 100 + jpeg[mid + 200 :])
    add("png_bad_crc", "png", lambda: png[:29] + bytes([png[29] ^ 0xFF]) + png[30:])
    add(
        "png_corrupt_zlib",
        "png",
        lambda: png[:41] + b"\x00" * 64 + png[105:],
    )
    add("gif_garbage_after_header", "gif", lambda: b"GIF89a" + rng.bytes(200))

    # --- JPEG variants that must decode exactly as Pillow
    add("jpeg_baseline_420", "jpg", lambda: jpeg)
    add("jpeg_444", "jpg", lambda: encode(src, "JPEG", quality=90, subsampling=0))
    add("jpeg_422", "jpg", lambda: encode(src, "JPEG", quality=90, subsampling=1))
    add("jpeg_progressive", "jpg", lambda: encode(src, "JPEG", quality=90, progressive=True))
    add("jpeg_restart_markers", "jpg", lambda: encode(src, "JPEG", restart_marker_blocks=3))
    add("jpeg_grey", "jpg", lambda: encode(src.convert("L"), "JPEG"))
    add("jpeg_cmyk_adobe", "jpg", lambda: encode(src.convert("CMYK"), "JPEG", quality=95))
    add(
        "jpeg_cmyk_no_adobe",
        "jpg",
        lambda: without_adobe(encode(src.convert("CMYK"), "JPEG", quality=95)),
    )
    add("jpeg_ycck", "jpg", lambda: ycck_jpeg(src))
    add("jpeg_trailing_garbage", "jpg", lambda: jpeg + b"\x00garbage after EOI\xff\xd8" * 50)
    add(
        "jpeg_extraneous_bytes",
        "jpg",
        lambda: jpeg[:dqt_start] + b"\x00\x13\x37" + jpeg[dqt_start:],
    )
    add("jpeg_arithmetic", "jpg", lambda: jpegtran(jpeg, "-arithmetic"))

    # --- other formats and modes
    add("png_rgb", "png", lambda: png)
    add("png_grey", "png", lambda: encode(src.convert("L"), "PNG"))
    add("png_grey_alpha", "png", lambda: encode(rgba.convert("LA"), "PNG"))
    add("png_rgba", "png", lambda: encode(rgba, "PNG"))
    add("png_1bit", "png", lambda: encode(src.convert("1"), "PNG"))

    def palette_trns() -> bytes:
        pal = src.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        pal.info["transparency"] = 0
        return encode(pal, "PNG")

    add("png_palette_transparency", "png", palette_trns)
    # Low bytes that vary, so that "keep the high byte" and "round v/257" differ.
    low = (np.arange(src.width, dtype=np.uint16) * 37 % 256)[None, :, None]
    arr16 = (np.asarray(src, np.uint16) * 256 + low).astype(np.uint16)
    add("png_16bit_rgb", "png", lambda: png16(arr16))
    add("png_16bit_grey", "png", lambda: png16(arr16[..., 1]))
    a16 = (np.asarray(alpha_of(src), np.uint16) * 257).astype(np.uint16)
    add("png_16bit_rgba", "png", lambda: png16(np.dstack([arr16, a16])))
    add("tiff_rgb", "tif", lambda: encode(src, "TIFF"))
    add("tiff_lzw", "tif", lambda: encode(src, "TIFF", compression="tiff_lzw"))
    add("tiff_16bit_rgb", "tif", lambda: tiff_rgb16(arr16))

    def gif_animated() -> bytes:
        frames = [src, src.rotate(90), src.rotate(180)]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return buf.getvalue()

    add("gif_animated", "gif", gif_animated)
    add("webp_lossy", "webp", lambda: encode(src, "WEBP", quality=90))
    add("webp_lossless", "webp", lambda: encode(src, "WEBP", lossless=True))
    add("webp_lossless_alpha", "webp", lambda: encode(rgba, "WEBP", lossless=True))
    add("bmp_rgb", "bmp", lambda: encode(src, "BMP"))
    add("bmp_palette", "bmp", lambda: encode(src.convert("P"), "BMP"))

    # --- EXIF orientations (stored transformed; the tag makes them upright again)
    upright = photo(100, 60, seed=1)
    add("upright_png", "png", lambda: encode(upright, "PNG"))
    add("upright_jpeg", "jpg", lambda: encode(upright, "JPEG", quality=95))
    for o in range(1, 9):
        stored = STORED[o](upright)
        add(
            f"exif{o}_png",
            "png",
            lambda s=stored, o=o: encode(s, "PNG", exif=exif_with_orientation(o)),
        )
        add(
            f"exif{o}_jpeg",
            "jpg",
            lambda s=stored, o=o: encode(s, "JPEG", quality=95, exif=exif_with_orientation(o)),
        )

    # --- extreme shapes and sizes
    add("tiny_1x1", "png", lambda: encode(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"))
    add("tiny_1x1_jpeg", "jpg", lambda: encode(Image.new("RGB", (1, 1), (200, 30, 90)), "JPEG"))
    add("wide_10000x1", "png", lambda: encode(photo(10000, 1, seed=2), "PNG"))
    add("tall_1x10000", "jpg", lambda: encode(photo(1, 10000, seed=2), "JPEG"))

    def huge_jpeg() -> bytes:
        # 8000 x 8000 = 64 Mpx, exactly the default pixel budget: accepted.
        g = Image.linear_gradient("L").resize((8000, 8000))
        img = Image.merge("RGB", [g, g.transpose(Image.Transpose.ROTATE_90), g.rotate(45)])
        return encode(img, "JPEG", quality=75)

    add("jpeg_8000x8000", "jpg", huge_jpeg, big=True)

    # --- decompression bombs and lying headers
    add(
        "png_bomb_header_50000",
        "png",
        lambda: png_raw(50_000, 50_000, 8, 2, zlib.compress(b"\x00" * 4096)),
    )
    add("jpeg_bomb_header_50000", "jpg", lambda: with_sof_size(jpeg, 50_000, 50_000))
    add(
        "jpeg_progressive_bomb_header",
        "jpg",
        lambda: with_sof_size(encode(src, "JPEG", progressive=True), 65_000, 65_000),
    )
    add("png_idat_bomb_200mb", "png", lambda: idat_bomb(64, 48, 200 << 20), big=False)
    add(
        "tiff_bomb_header_60000", "tif", lambda: tiff_raw(60_000, 60_000, (8, 8, 8), b"\x80" * 4096)
    )
    add("gif_bomb_screen_65535", "gif", lambda: gif_header_only(65_535, 65_535, 1, 1))
    add("gif_bomb_frame_65535", "gif", lambda: gif_header_only(1, 1, 65_535, 65_535))
    add("bmp_bomb_header_50000", "bmp", lambda: bmp_header_only(50_000, 50_000))
    add("bmp_bomb_negative_height", "bmp", lambda: bmp_header_only(50_000, -50_000))
    add("webp_bomb_canvas_16384", "webp", lambda: webp_vp8x_bomb(16_384, 16_384))

    def too_many_bytes() -> bytes:
        # A valid PNG made larger than the limit by a private ancillary chunk.
        pad = png_chunk(b"prVt", b"\x00" * (TOO_MANY_BYTES_LIMIT + 1024))
        return png[:33] + pad + png[33:]

    add("png_too_many_bytes", "png", too_many_bytes, big=True)
    return cases


def write(out: Path, small: bool = False) -> dict[str, Path]:
    """Generate the corpus into ``out``; returns case name → path."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (ext, data) in build(small).items():
        if small and len(data) > SMALL_LIMIT:
            continue
        path = out / f"{name}.{ext}"
        path.write_bytes(data)
        paths[name] = path
    (out / "index.json").write_text(
        json.dumps({k: v.name for k, v in paths.items()}, indent=1) + "\n"
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write the corpus into")
    parser.add_argument("--small", action="store_true", help="leave out cases > 1 MiB")
    args = parser.parse_args(argv)
    paths = write(args.out, args.small)
    total = sum(p.stat().st_size for p in paths.values())
    print(f"wrote {len(paths)} cases ({total / 1e6:.1f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
