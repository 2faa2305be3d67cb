//! Encoded image bytes → normalised MobileNetV2 input tensors.
//!
//! One image goes through: limits on the encoded size → format sniffing → header
//! (dimensions checked against the pixel budget *before* any pixel buffer is
//! allocated) → decode → RGB8 (alpha composited on white, 16-bit reduced, palette and
//! grey expanded) → EXIF orientation → bicubic resize to `size × size` with Pillow's
//! exact algorithm → `x / 127.5 - 1` into an NHWC `f32` slice. JPEGs are decoded by
//! libjpeg-turbo (see [`crate::jpeg`]), the other formats by the `image` crate.
//!
//! Every failure is a [`DecodeFailure`] for that image only; [`decode_batch`] fills
//! the other rows and reports one optional failure per row.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use rayon::prelude::*;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};
use crate::resize;

/// Default pixel budget: images whose header declares more pixels are refused.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;
/// Default limit on the encoded size of one image (bytes).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Options for turning encoded bytes into a model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Output side length S (the tensor is S×S×3).
    pub size: u32,
    /// Largest accepted width × height, checked on the header before decoding.
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
}

impl DecodeOptions {
    pub fn new(size: u32) -> Self {
        Self {
            size,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Number of `f32` values one decoded image occupies.
    pub fn tensor_len(&self) -> usize {
        let s = self.size as usize;
        s * s * 3
    }
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self::new(224)
    }
}

fn fail(kind: Kind, detail: impl Into<String>) -> DecodeFailure {
    DecodeFailure::new(kind, detail)
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Tiff => "TIFF",
        _ => "image",
    }
}

/// Map an `image` crate error to a per-image failure with a specific kind.
fn classify(format: ImageFormat, err: image::ImageError) -> DecodeFailure {
    use image::ImageError as E;
    let name = format_name(format);
    match err {
        E::Limits(e) => fail(
            Kind::TooManyPixels,
            format!("{name} decoder refused to allocate the image ({e})"),
        ),
        E::Unsupported(e) => fail(Kind::Unsupported, format!("{name}: {e}")),
        E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => fail(
            Kind::Truncated,
            format!("{name} data ends before the image is complete ({e})"),
        ),
        E::IoError(e) => fail(Kind::Corrupt, format!("{name}: {e}")),
        E::Decoding(e) => {
            let msg = e.to_string();
            let lower = msg.to_ascii_lowercase();
            let truncated = [
                "eof",
                "end of file",
                "unexpected end",
                "truncat",
                "no more bytes",
                "not enough",
            ]
            .iter()
            .any(|w| lower.contains(w));
            if truncated {
                fail(
                    Kind::Truncated,
                    format!("{name} data ends before the image is complete ({msg})"),
                )
            } else {
                fail(Kind::Corrupt, format!("{name} data is damaged ({msg})"))
            }
        }
        other => fail(Kind::Corrupt, format!("{name}: {other}")),
    }
}

/// Decode encoded bytes into an upright RGB8 image, enforcing the limits.
pub fn decode_rgb8(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage, DecodeFailure> {
    if bytes.is_empty() {
        return Err(fail(Kind::Empty, "the image has 0 bytes"));
    }
    if bytes.len() > opts.max_bytes {
        return Err(fail(
            Kind::TooManyBytes,
            format!(
                "encoded image is {} bytes, above the limit of {} bytes (raise max_bytes to accept it)",
                bytes.len(),
                opts.max_bytes
            ),
        ));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        fail(
            Kind::UnknownFormat,
            format!(
                "not a JPEG, PNG, WebP, BMP, GIF or TIFF image (first bytes: {})",
                head.join(" ")
            ),
        )
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif
            | ImageFormat::Tiff
    ) {
        return Err(fail(
            Kind::UnknownFormat,
            format!("{format:?} images are not supported (JPEG, PNG, WebP, BMP, GIF, TIFF are)"),
        ));
    }
    if format == ImageFormat::Jpeg {
        return crate::jpeg::decode(bytes, opts.max_pixels);
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(|e| classify(format, e))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 {
        return Err(fail(
            Kind::Corrupt,
            format!(
                "{} header declares an empty {w}×{h} image",
                format_name(format)
            ),
        ));
    }
    if pixels > opts.max_pixels {
        return Err(fail(
            Kind::TooManyPixels,
            format!(
                "{} header declares {w}×{h} = {pixels} pixels, above the budget of {} (raise max_pixels to accept it)",
                format_name(format),
                opts.max_pixels
            ),
        ));
    }
    // The decoded buffer is at most 8 bytes per pixel (RGBA16); leave room for the
    // decoder's own working memory.
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(pixels.saturating_mul(16).saturating_add(64 << 20));
    decoder
        .set_limits(limits)
        .map_err(|e| classify(format, e))?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(format, e))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(to_rgb8_on_white(img))
}

/// Composite `c` over white with straight alpha `a` (both 8-bit), rounded.
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// Convert any decoded image to RGB8; transparent pixels become white (the background
/// of the product photos this is made for), 16-bit and float samples are scaled down.
pub fn to_rgb8_on_white(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageRgb32F(_) => img.to_rgb8(),
        other if other.color().has_alpha() => {
            let rgba = other.to_rgba8();
            let (w, h) = rgba.dimensions();
            let mut out = RgbImage::new(w, h);
            for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
                let [r, g, b, a] = src.0;
                dst.0 = [over_white(r, a), over_white(g, a), over_white(b, a)];
            }
            out
        }
        other => other.to_rgb8(),
    }
}

/// Write `x / 127.5 - 1` of an RGB8 buffer into `out` (same length).
pub fn normalize_into(rgb: &[u8], out: &mut [f32]) {
    debug_assert_eq!(rgb.len(), out.len());
    for (o, &v) in out.iter_mut().zip(rgb) {
        *o = f32::from(v) / 127.5 - 1.0;
    }
}

/// Decode, resize and normalise one image into `out` (`opts.tensor_len()` floats).
pub fn preprocess_into(
    bytes: &[u8],
    opts: &DecodeOptions,
    out: &mut [f32],
) -> Result<(), DecodeFailure> {
    assert_eq!(
        out.len(),
        opts.tensor_len(),
        "output slice has the wrong length"
    );
    let rgb = decode_rgb8(bytes, opts)?;
    let resized = resize::resize_rgb8(&rgb, opts.size, opts.size);
    normalize_into(resized.as_raw(), out);
    Ok(())
}

/// Decode a batch in parallel (on the current rayon pool) into `out`, which holds
/// `inputs.len() * opts.tensor_len()` floats. Rows that fail are zero-filled and get
/// `Some(failure)` in the returned vector; the others get `None`.
pub fn decode_batch(
    inputs: &[Option<&[u8]>],
    opts: &DecodeOptions,
    out: &mut [f32],
) -> Vec<Option<DecodeFailure>> {
    let len = opts.tensor_len();
    assert_eq!(
        out.len(),
        inputs.len() * len,
        "output buffer has the wrong length"
    );
    if len == 0 {
        return inputs.iter().map(|_| None).collect();
    }
    out.par_chunks_mut(len)
        .zip(inputs.par_iter())
        .map(|(slot, input)| {
            let result = match input {
                None => Err(fail(Kind::Null, "no image bytes (null value)")),
                Some(bytes) => preprocess_into(bytes, opts, slot),
            };
            match result {
                Ok(()) => None,
                Err(e) => {
                    slot.fill(0.0);
                    Some(e)
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        })
    }

    #[test]
    fn lossless_formats_roundtrip_to_the_same_pixels() {
        let img = DynamicImage::ImageRgb8(gradient(37, 23));
        for format in [
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
            ImageFormat::WebP,
        ] {
            let bytes = encode(&img, format);
            let decoded = decode_rgb8(&bytes, &DecodeOptions::new(8)).unwrap();
            assert_eq!(
                decoded.as_raw(),
                img.as_rgb8().unwrap().as_raw(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn jpeg_and_gif_decode_close_to_the_original() {
        let img = DynamicImage::ImageRgb8(gradient(64, 48));
        for (format, tol) in [(ImageFormat::Jpeg, 12.0), (ImageFormat::Gif, 40.0)] {
            let bytes = encode(&img, format);
            let decoded = decode_rgb8(&bytes, &DecodeOptions::new(8)).unwrap();
            assert_eq!(decoded.dimensions(), (64, 48));
            let mad: f64 = decoded
                .as_raw()
                .iter()
                .zip(img.as_rgb8().unwrap().as_raw())
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .sum::<f64>()
                / decoded.as_raw().len() as f64;
            assert!(mad < tol, "{format:?}: mean abs diff {mad}");
        }
    }

    #[test]
    fn grey_and_alpha_modes_become_rgb_on_white() {
        let grey = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 4, Luma([77u8])));
        let rgb = decode_rgb8(&encode(&grey, ImageFormat::Png), &DecodeOptions::new(4)).unwrap();
        assert!(rgb.pixels().all(|p| p.0 == [77, 77, 77]));

        let ga = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(4, 4, LumaA([0u8, 0])));
        let rgb = decode_rgb8(&encode(&ga, ImageFormat::Png), &DecodeOptions::new(4)).unwrap();
        assert!(
            rgb.pixels().all(|p| p.0 == [255, 255, 255]),
            "fully transparent → white"
        );

        let rgba =
            DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 4, Rgba([200u8, 0, 0, 128])));
        let rgb = decode_rgb8(&encode(&rgba, ImageFormat::Png), &DecodeOptions::new(4)).unwrap();
        // 200*128/255 + 255*127/255 = 100.4 + 127 = 227.4 → 227 ; 0 → 127
        assert!(
            rgb.pixels().all(|p| p.0 == [227, 127, 127]),
            "{:?}",
            rgb.get_pixel(0, 0)
        );
    }

    #[test]
    fn sixteen_bit_png_is_scaled_to_eight_bits() {
        let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(3, 3, Rgb([65535u16, 32896, 0]));
        let bytes = encode(&DynamicImage::ImageRgb16(img), ImageFormat::Png);
        let rgb = decode_rgb8(&bytes, &DecodeOptions::new(3)).unwrap();
        assert_eq!(rgb.get_pixel(1, 1).0, [255, 128, 0]);
    }

    #[test]
    fn pixel_budget_is_checked_on_the_header() {
        let img = DynamicImage::ImageRgb8(gradient(100, 100));
        let bytes = encode(&img, ImageFormat::Png);
        let opts = DecodeOptions {
            max_pixels: 9_999,
            ..DecodeOptions::new(8)
        };
        let err = decode_rgb8(&bytes, &opts).unwrap_err();
        assert_eq!(err.kind, Kind::TooManyPixels);
        assert!(err.to_string().contains("100×100 = 10000 pixels"), "{err}");
        let ok = DecodeOptions {
            max_pixels: 10_000,
            ..opts
        };
        assert!(decode_rgb8(&bytes, &ok).is_ok());
    }

    #[test]
    fn byte_limit_empty_and_garbage_are_specific() {
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(10, 10)), ImageFormat::Png);
        let opts = DecodeOptions {
            max_bytes: 10,
            ..DecodeOptions::new(8)
        };
        assert_eq!(
            decode_rgb8(&bytes, &opts).unwrap_err().kind,
            Kind::TooManyBytes
        );
        assert_eq!(
            decode_rgb8(&[], &DecodeOptions::new(8)).unwrap_err().kind,
            Kind::Empty
        );
        assert_eq!(
            decode_rgb8(b"hello, this is text", &DecodeOptions::new(8))
                .unwrap_err()
                .kind,
            Kind::UnknownFormat
        );
    }

    #[test]
    fn truncated_images_are_reported() {
        let img = DynamicImage::ImageRgb8(gradient(64, 64));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let err = decode_rgb8(&jpeg[..jpeg.len() / 2], &DecodeOptions::new(8)).unwrap_err();
        assert_eq!(err.kind, Kind::Truncated, "{err}");
        let png = encode(&img, ImageFormat::Png);
        let err = decode_rgb8(&png[..png.len() / 2], &DecodeOptions::new(8)).unwrap_err();
        assert!(matches!(err.kind, Kind::Truncated | Kind::Corrupt), "{err}");
    }

    #[test]
    fn batch_keeps_good_rows_when_one_is_bad() {
        let a = encode(&DynamicImage::ImageRgb8(gradient(20, 30)), ImageFormat::Png);
        let b = encode(&DynamicImage::ImageRgb8(gradient(30, 20)), ImageFormat::Png);
        let opts = DecodeOptions::new(16);
        let len = opts.tensor_len();
        let mut clean = vec![0f32; 2 * len];
        let errs = decode_batch(&[Some(&a), Some(&b)], &opts, &mut clean);
        assert!(errs.iter().all(Option::is_none));
        let mut mixed = vec![1f32; 4 * len];
        let errs = decode_batch(
            &[Some(&a), Some(b"junk"), None, Some(&b)],
            &opts,
            &mut mixed,
        );
        assert_eq!(errs[1].as_ref().unwrap().kind, Kind::UnknownFormat);
        assert_eq!(errs[2].as_ref().unwrap().kind, Kind::Null);
        assert_eq!(&mixed[..len], &clean[..len]);
        assert_eq!(&mixed[3 * len..], &clean[len..]);
        assert!(mixed[len..3 * len].iter().all(|&v| v == 0.0));
        assert!(clean.iter().all(|&v| (-1.0..=1.0).contains(&v)));
    }

    #[test]
    fn normalisation_matches_keras_preprocess_input() {
        let mut out = [0f32; 3];
        normalize_into(&[0, 255, 128], &mut out);
        assert_eq!(out, [-1.0, 1.0, 128.0 / 127.5 - 1.0]);
    }
}
