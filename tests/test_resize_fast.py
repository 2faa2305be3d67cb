"""``resize="fast"`` (issue 14): large images reduced cheaply before the bicubic resize.

JPEGs are decoded with libjpeg's DCT scaling (1/2, 1/4, 1/8, keeping at least twice the
model input on both axes, as Pillow's ``draft``), other formats get an integer box
reduce first. ``exact`` stays bit-identical to Pillow; ``fast`` gives features close to
``exact`` on phone-sized photos, and exactly the same result when no reduction applies.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import fruitlens
from fruitlens import Embedder

SIZE = 224
PHOTOS = ["apple/71_100.jpg", "lemon/147_100.jpg", "mango/0_100.jpg"]


def pixels(batch, size: int = SIZE) -> np.ndarray:
    col = batch.column("pixels")
    assert col.null_count == 0, batch.column("error").to_pylist()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), size, size, 3)


def as_u8(x: np.ndarray) -> np.ndarray:
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def pillow_reference(data: bytes, size: int = SIZE) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return np.asarray(im.convert("RGB").resize((size, size)))


def big_photo(src: Path, w: int, h: int, seed: int) -> Image.Image:
    """A Fruits-360 photo upscaled to ``w × h`` with sensor-like noise."""
    im = Image.open(src).convert("RGB").resize((w, h), Image.BICUBIC)
    noise = np.random.default_rng(seed).integers(-6, 7, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(im, np.int16) + noise, 0, 255).astype(np.uint8))


def encode(im: Image.Image, fmt: str, orientation: int | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> list[bytes]:
    """12-Mpx JPEGs (q90): landscape, portrait, and landscape with EXIF orientation 6."""
    root = shared_dir / "data/fruits360-sample/Test"
    a = big_photo(root / PHOTOS[0], 4032, 3024, 0)
    b = big_photo(root / PHOTOS[1], 3024, 4032, 1)
    c = big_photo(root / PHOTOS[2], 4032, 3024, 2)
    return [
        encode(a, "JPEG", quality=90),
        encode(b, "JPEG", quality=90),
        encode(c, "JPEG", orientation=6, quality=90),
    ]


def test_exact_is_still_bit_identical_to_pillow_on_phone_photos(photos: list[bytes]) -> None:
    got = as_u8(pixels(fruitlens.decode(photos, threads=2)))
    for g, data in zip(got, photos):
        np.testing.assert_array_equal(g, pillow_reference(data))


def test_fast_is_close_to_exact_and_respects_orientation(photos: list[bytes]) -> None:
    exact = pixels(fruitlens.decode(photos, threads=2))
    fast = pixels(fruitlens.decode(photos, threads=2, resize="fast"))
    assert not np.array_equal(exact, fast)
    mad = np.abs(as_u8(exact).astype(int) - as_u8(fast)).mean(axis=(1, 2, 3))
    assert (mad < 2.0).all(), mad
    # The rotated photo is upright in fast mode too: far from its unrotated self.
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(photos[2])))
    sideways = np.asarray(Image.open(io.BytesIO(photos[2])).convert("RGB").resize((224, 224)))
    assert np.asarray(upright).shape[:2] == (4032, 3024)
    assert np.abs(sideways.astype(int) - as_u8(fast[2])).mean() > 4 * mad[2]


def test_fast_features_match_exact_features(photos: list[bytes], onnx_224: Path) -> None:
    exact = Embedder(onnx_224, threads=2).embed(photos).column("features")
    fast = Embedder(onnx_224, threads=2, resize="fast").embed(photos).column("features")
    e = exact.values.to_numpy().reshape(len(photos), -1)
    f = fast.values.to_numpy().reshape(len(photos), -1)
    cos = (e * f).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(f, axis=1)
    assert (cos > 0.98).all(), cos


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_fast_leaves_images_without_reduction_unchanged(shared_dir: Path, fmt: str) -> None:
    src = shared_dir / "data/fruits360-sample/Test" / PHOTOS[0]
    # Below 4x the input on an axis: no DCT scaling, no box reduce.
    datas = [
        (shared_dir / "data/fruits360-sample/Test" / PHOTOS[1]).read_bytes(),
        encode(big_photo(src, 890, 600, 3), fmt, orientation=8),
        encode(big_photo(src, 600, 890, 4), fmt),
    ]
    exact = pixels(fruitlens.decode(datas))
    fast = pixels(fruitlens.decode(datas, resize="fast"))
    np.testing.assert_array_equal(exact, fast)


def test_png_fast_box_reduces_and_stays_close(shared_dir: Path) -> None:
    src = shared_dir / "data/fruits360-sample/Test" / PHOTOS[2]
    big = big_photo(src, 2000, 1500, 5)
    datas = [encode(big, "PNG", compress_level=1), encode(big, "PNG", orientation=3)]
    exact = pixels(fruitlens.decode(datas))
    fast = pixels(fruitlens.decode(datas, resize="fast"))
    np.testing.assert_array_equal(as_u8(exact[0]), pillow_reference(datas[0]))
    np.testing.assert_array_equal(as_u8(exact[1]), pillow_reference(datas[1]))
    assert not np.array_equal(exact, fast)
    mad = np.abs(as_u8(exact).astype(int) - as_u8(fast)).mean()
    assert mad < 2.0, mad


def test_fast_keeps_limits_and_per_row_errors(photos: list[bytes]) -> None:
    data = photos[0]
    batch = fruitlens.decode(
        [data, data[: len(data) // 2], b"junk", None], resize="fast", max_pixels=13_000_000
    )
    errors = batch.column("error").to_pylist()
    assert errors[0] is None
    assert errors[1].startswith("truncated: "), errors[1]
    assert errors[2].startswith("unknown_format: "), errors[2]
    assert errors[3].startswith("null: "), errors[3]
    # The pixel budget is checked on the header's full size, not the reduced one.
    refused = fruitlens.decode([data], resize="fast", max_pixels=12_000_000)
    assert refused.column("error")[0].as_py().startswith("too_many_pixels: ")


def test_resize_must_be_exact_or_fast(random_onnx: Path) -> None:
    with pytest.raises(ValueError, match='resize must be "exact" or "fast"'):
        fruitlens.decode([b"x"], resize="Fast")
    with pytest.raises(ValueError, match='resize must be "exact" or "fast"'):
        Embedder(random_onnx, resize="bilinear")
    emb = Embedder(random_onnx, threads=1, resize="fast")
    assert emb.resize == "fast" and "resize='fast'" in repr(emb)
