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
//!
//! # Limits and memory
//!
//! * `max_bytes` (default [`DEFAULT_MAX_BYTES`], 64 MiB): larger encoded images are
//!   refused (`too_many_bytes`) before they are even sniffed.
//! * `max_pixels` (default [`DEFAULT_MAX_PIXELS`], 64 Mpx): checked on the width ×
//!   height the *header* declares, for every format, before any pixel buffer is
//!   allocated (`too_many_pixels`): a 100-byte file claiming 50 000 × 50 000 costs
//!   nothing. The `image` crate decoders also run under an allocation cap derived
//!   from the budget (see [`alloc_limit`]), which bounds what they may allocate for
//!   metadata, compressed chunks, GIF frames larger than the canvas, TIFF strips …
//!   (`too_many_pixels` when exceeded).
//! * Large images (more than [`LARGE_IMAGE_PIXELS`], 4 Mpx) are decoded one at a time
//!   per process: a process-wide gate is taken after the header check and held until
//!   the image is resized. Small images keep decoding in parallel meanwhile, so the
//!   peak is about one large image plus `threads − 1` small ones, whatever the batch
//!   holds. Decoding costs about 3 bytes per pixel for the RGB buffer plus the
//!   decoder's own (up to ~8 more for 16-bit RGBA, or for a progressive JPEG's
//!   coefficients), i.e. ≲ 1 GiB at the default 64 Mpx budget, counted once.
//! * Progressive JPEGs with more than [`crate::jpeg::MAX_SCANS`] scans are refused
//!   (`unsupported`).

use std::io::Cursor;
use std::sync::{Condvar, Mutex, PoisonError};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use rayon::prelude::*;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};
use crate::jpeg::Decoded;
use crate::resize;

/// Default pixel budget: images whose header declares more pixels are refused.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;
/// Default limit on the encoded size of one image (bytes).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Images declaring more pixels than this are decoded one at a time per process (see
/// the module documentation).
pub const LARGE_IMAGE_PIXELS: u64 = 4_000_000;

/// An empty IEND chunk (length, type, CRC).
const PNG_IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// Pixels of large images that may be decoded at the same time in a process (about
/// 150 MB of RGB): two or three 12-Mpx photos decode in parallel; an image larger than
/// this still goes through, alone.
pub const LARGE_IMAGE_BUDGET: u64 = 48_000_000;

/// Pixels of the large images being decoded and resized right now.
static LARGE_IN_FLIGHT: Mutex<u64> = Mutex::new(0);
static LARGE_RELEASED: Condvar = Condvar::new();

/// The right to decode one large image of `pixels` pixels (released on drop).
#[derive(Debug)]
pub(crate) struct LargeImage {
    pixels: u64,
}

impl Drop for LargeImage {
    fn drop(&mut self) {
        let mut in_flight = LARGE_IN_FLIGHT
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *in_flight -= self.pixels;
        LARGE_RELEASED.notify_all();
    }
}

/// The guard that bounds the large images in flight (`None` for small ones).
type Admission = Option<LargeImage>;

/// Wait for the right to decode an image of `pixels` pixels: at once for a small one;
/// for a large one, until the large images in flight leave room for it within
/// [`LARGE_IMAGE_BUDGET`] (or there are none).
fn admit(pixels: u64) -> Admission {
    if pixels <= LARGE_IMAGE_PIXELS {
        return None;
    }
    let mut in_flight = LARGE_IN_FLIGHT
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while *in_flight > 0 && *in_flight + pixels > LARGE_IMAGE_BUDGET {
        in_flight = LARGE_RELEASED
            .wait(in_flight)
            .unwrap_or_else(PoisonError::into_inner);
    }
    *in_flight += pixels;
    Some(LargeImage { pixels })
}

/// The allocation cap the `image` crate decoders run under for a pixel budget of
/// `max_pixels`: 16 bytes per pixel (an RGBA16 buffer and a conversion copy) plus
/// 64 MiB of working memory, at most 4 GiB + 64 MiB.
pub fn alloc_limit(max_pixels: u64) -> u64 {
    max_pixels
        .min(1 << 28)
        .saturating_mul(16)
        .saturating_add(64 << 20)
}

/// How an image is brought down to the model input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// Decode every pixel, then Pillow's bicubic resize: bit-identical to
    /// `Image.open(b).convert("RGB").resize((S, S))`.
    #[default]
    Exact,
    /// Large images are first reduced cheaply (JPEG: libjpeg DCT scaling by 1/2, 1/4 or
    /// 1/8; other formats: an integer box reduce), keeping at least twice the output
    /// size on both axes, then resized with the same bicubic. Images too small for any
    /// reduction give exactly the `Exact` result.
    Fast,
}

impl ResizeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeMode::Exact => "exact",
            ResizeMode::Fast => "fast",
        }
    }
}

impl std::str::FromStr for ResizeMode {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(ResizeMode::Exact),
            "fast" => Ok(ResizeMode::Fast),
            other => Err(crate::error::Error::InvalidArgument(format!(
                "resize must be \"exact\" or \"fast\", got {other:?}"
            ))),
        }
    }
}

/// Options for turning encoded bytes into a model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Output side length S (the tensor is S×S×3).
    pub size: u32,
    /// Largest accepted width × height, checked on the header before decoding.
    pub max_pixels: u64,
    /// Largest accepted encoded size in bytes.
    pub max_bytes: usize,
    /// How large images are reduced to `size` (see [`ResizeMode`]).
    pub resize: ResizeMode,
}

impl DecodeOptions {
    pub fn new(size: u32) -> Self {
        Self {
            size,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_bytes: DEFAULT_MAX_BYTES,
            resize: ResizeMode::Exact,
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

/// Decode encoded bytes into an upright RGB8 image, enforcing the limits (at full
/// size: `opts.resize` is not used here).
pub fn decode_rgb8(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage, DecodeFailure> {
    let opts = DecodeOptions {
        resize: ResizeMode::Exact,
        ..*opts
    };
    guarded(bytes, || {
        let mut admission = None;
        let d = decode_rgb8_admitted(bytes, &opts, &mut admission)?;
        Ok(resize::orient(d.rgb, d.orientation))
    })
}

/// Run the decoding of `bytes` under [`crate::guard::catch`]: a panic in a decoder
/// (or in colour conversion, EXIF handling, resizing) becomes this image's `internal`
/// failure, silently; the thread, the batch and the pool carry on.
fn guarded<T>(
    bytes: &[u8],
    f: impl FnOnce() -> Result<T, DecodeFailure>,
) -> Result<T, DecodeFailure> {
    crate::guard::catch(f).unwrap_or_else(|panic| {
        let format = image::guess_format(bytes).map_or("unknown format", format_name);
        Err(fail(
            Kind::Internal,
            format!("the decoder failed unexpectedly ({format}): {panic}"),
        ))
    })
}

/// Decode to RGB8 as stored, with the orientation still to apply, leaving in
/// `admission` the large-image guard (if the image needed one) for the caller to hold
/// while it still uses the full-size pixels. With `ResizeMode::Fast`, JPEGs are
/// decoded with DCT scaling (see [`crate::jpeg::dct_denominator`]).
fn decode_rgb8_admitted(
    bytes: &[u8],
    opts: &DecodeOptions,
    admission: &mut Admission,
) -> Result<Decoded, DecodeFailure> {
    let stored = |rgb: RgbImage| Decoded {
        rgb,
        orientation: Orientation::NoTransforms,
        dct_scale: 1,
    };
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
        let reduce_for = (opts.resize == ResizeMode::Fast).then_some(opts.size);
        return crate::jpeg::decode_admitted(bytes, opts.max_pixels, reduce_for, &mut |pixels| {
            *admission = admit(pixels);
        });
    }

    if format == ImageFormat::Gif {
        // The first frame, composed as Pillow does (see `crate::gif_frame`). The screen
        // size is checked before the frames are parsed.
        let screen = |o: usize| {
            bytes
                .get(o..o + 2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        };
        let check = |w: u32, h: u32| {
            let pixels = u64::from(w) * u64::from(h);
            if pixels > opts.max_pixels {
                return Err(fail(
                    Kind::TooManyPixels,
                    format!(
                        "GIF header declares {w}×{h} = {pixels} pixels, above the budget of {} (raise max_pixels to accept it)",
                        opts.max_pixels
                    ),
                ));
            }
            Ok(pixels)
        };
        check(u32::from(screen(6)), u32::from(screen(8)))?;
        let (w, h) = crate::gif_frame::canvas_size(bytes)?;
        let pixels = check(w, h)?;
        *admission = admit(pixels);
        return crate::gif_frame::decode_first_frame(bytes, alloc_limit(pixels)).map(stored);
    }
    let one_plane: Vec<u8>;
    let bytes = match format {
        ImageFormat::Bmp => match crate::bmp::with_one_plane(bytes) {
            Some(b) => {
                one_plane = b;
                &one_plane[..]
            }
            None => bytes,
        },
        _ => bytes,
    };
    if format == ImageFormat::Bmp && crate::bmp::rle_kind(bytes).is_some() {
        // RLE bitmaps: decoded as Pillow does (see `crate::bmp`).
        let header = crate::bmp::rle_header(bytes)?;
        let (w, h) = (header.width, header.height);
        let pixels = u64::from(w) * u64::from(h);
        if pixels > opts.max_pixels {
            return Err(fail(
                Kind::TooManyPixels,
                format!(
                    "BMP header declares {w}×{h} = {pixels} pixels, above the budget of {} (raise max_pixels to accept it)",
                    opts.max_pixels
                ),
            ));
        }
        *admission = admit(pixels);
        return crate::bmp::decode_rle(bytes, &header).map(stored);
    }

    // Pillow accepts a PNG whose IEND chunk is missing (e.g. cut right after the last
    // IDAT); the png crate insists on one. Supply it: if the pixel data is incomplete
    // the zlib stream still is, and that stays an error.
    let patched: Vec<u8>;
    let bytes = if format == ImageFormat::Png && !bytes.windows(4).any(|w| w == b"IEND") {
        patched = [bytes, &PNG_IEND[..]].concat();
        &patched[..]
    } else {
        bytes
    };
    // A grey or RGB PNG with a tRNS colour key: Pillow opens it as L / RGB (the key
    // only in `info`), so its pipeline keeps those pixels opaque. So do we.
    let keyless: Vec<u8>;
    let bytes = match format {
        ImageFormat::Png => match png_without_colour_key(bytes) {
            Some(b) => {
                keyless = b;
                &keyless[..]
            }
            None => bytes,
        },
        _ => bytes,
    };
    // 8-bit palette TIFFs: read as grey indices, then looked up (see `crate::tiff_palette`).
    let indices: Vec<u8>;
    let mut tiff_palette = None;
    let bytes = match format {
        ImageFormat::Tiff => match crate::tiff_palette::as_grey(bytes)? {
            Some((grey, palette)) => {
                indices = grey;
                tiff_palette = Some(palette);
                &indices[..]
            }
            None => bytes,
        },
        _ => bytes,
    };

    // Header-phase limits: what a decoder may allocate before we know the dimensions
    // (PNG keeps these for the whole decode: its limits cannot be changed later).
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(alloc_limit(opts.max_pixels));
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(header_limits);
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
    limits.max_alloc = Some(alloc_limit(pixels));
    *admission = admit(pixels);
    if format == ImageFormat::Tiff && crate::tiff_planar::is_tiled_planar(bytes) {
        // The `tiff` crate cannot read these whole (see the module).
        let mut img = crate::tiff_planar::decode(bytes, alloc_limit(pixels))?;
        if tiff_associated_alpha(bytes) {
            img = unpremultiply_like_pillow(img);
        }
        return Ok(Decoded {
            rgb: to_rgb8_on_white(img),
            orientation: crate::orientation::tiff(bytes),
            dct_scale: 1,
        });
    }
    decoder
        .set_limits(limits)
        .map_err(|e| classify(format, e))?;
    // Where Pillow finds it (see `crate::orientation`).
    let orientation = match format {
        ImageFormat::Png => Some(crate::orientation::png(bytes)),
        ImageFormat::WebP => Some(crate::orientation::webp(bytes)),
        ImageFormat::Tiff => Some(crate::orientation::tiff(bytes)),
        _ => decoder.orientation().ok(),
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(format, e))?;
    if let Some(palette) = &tiff_palette {
        img = DynamicImage::ImageRgb8(crate::tiff_palette::expand(&img, palette));
    }
    if format == ImageFormat::Tiff && tiff_associated_alpha(bytes) {
        img = unpremultiply_like_pillow(img);
    }
    if let DynamicImage::ImageLuma16(grey) = &mut img {
        if format == ImageFormat::Tiff && tiff_white_is_zero(bytes) {
            // Pillow reads 16-bit WhiteIsZero samples as stored (`I;16`, not inverted);
            // `image` inverts them. Undo that.
            grey.iter_mut().for_each(|v| *v = u16::MAX - *v);
        }
    }
    if format == ImageFormat::Bmp
        && img.color().has_alpha()
        && !crate::bmp::pillow_keeps_alpha(bytes)
    {
        // Pillow ignores these alpha bits (see `crate::bmp`).
        img = DynamicImage::ImageRgb8(img.to_rgb8());
    }
    if format == ImageFormat::Bmp {
        if let (Some(is565), DynamicImage::ImageRgb8(rgb)) =
            (crate::bmp::sixteen_bit_565(bytes), &mut img)
        {
            // Pillow floors where `image` rounds (see `crate::bmp`).
            crate::bmp::floor_16bit_like_pillow(rgb, is565);
        }
    }
    // Orientation commutes with the per-pixel conversion: applied after it, on RGB8
    // (see `crate::resize::resize_oriented`).
    Ok(Decoded {
        rgb: to_rgb8_on_white(img),
        orientation: orientation.unwrap_or(Orientation::NoTransforms),
        dct_scale: 1,
    })
}

/// Whether a TIFF's extra sample is associated (premultiplied) alpha (ExtraSamples = 1).
fn tiff_associated_alpha(bytes: &[u8]) -> bool {
    tiff::decoder::Decoder::new(Cursor::new(bytes))
        .ok()
        .and_then(|mut d| {
            d.find_tag_unsigned_vec::<u16>(tiff::tags::Tag::ExtraSamples)
                .ok()
                .flatten()
        })
        .is_some_and(|v| v.first() == Some(&1))
}

/// Whether a TIFF is grey with 0 as white (PhotometricInterpretation = 0).
fn tiff_white_is_zero(bytes: &[u8]) -> bool {
    tiff::decoder::Decoder::new(Cursor::new(bytes))
        .ok()
        .and_then(|mut d| {
            d.find_tag_unsigned::<u16>(tiff::tags::Tag::PhotometricInterpretation)
                .ok()
                .flatten()
        })
        == Some(0)
}

/// Premultiplied RGBA → straight RGBA8 as Pillow's `RGBa` / `RGBa;16` unpackers do it
/// (16-bit samples keep their high byte; `c * 255 / a` truncated and clipped; a
/// transparent pixel becomes all zero). Other images are returned unchanged.
fn unpremultiply_like_pillow(img: DynamicImage) -> DynamicImage {
    let rgba = match img {
        DynamicImage::ImageRgba8(rgba) => rgba,
        DynamicImage::ImageRgba16(rgba) => {
            let (w, h) = rgba.dimensions();
            let raw = rgba.as_raw().iter().map(|&v| high_byte(v)).collect();
            image::RgbaImage::from_raw(w, h, raw).expect("same dimensions")
        }
        other => return other,
    };
    let mut rgba = rgba;
    for px in rgba.pixels_mut() {
        let a = u32::from(px.0[3]);
        px.0 = match a {
            0 => [0; 4],
            255 => px.0,
            _ => {
                let un = |c: u8| (u32::from(c) * 255 / a).min(255) as u8;
                [un(px.0[0]), un(px.0[1]), un(px.0[2]), px.0[3]]
            }
        };
    }
    DynamicImage::ImageRgba8(rgba)
}

/// The PNG without its tRNS chunk when the image is grey or RGB (colour types 0 and 2,
/// where tRNS is a colour key); `None` when there is nothing to remove.
fn png_without_colour_key(bytes: &[u8]) -> Option<Vec<u8>> {
    // Signature, then IHDR: length, "IHDR", width, height, depth, colour type.
    if bytes.get(12..16)? != b"IHDR" || !matches!(bytes.get(25)?, 0 | 2) {
        return None;
    }
    let mut at = 8usize;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let end = at.checked_add(12)?.checked_add(len)?;
        if &head[4..8] == b"tRNS" {
            let end = end.min(bytes.len());
            return Some([&bytes[..at], &bytes[end..]].concat());
        }
        if &head[4..8] == b"IDAT" {
            return None; // tRNS must come before the image data
        }
        at = end;
    }
    None
}

/// Composite `c` over opaque white with straight alpha `a` (both 8-bit), exactly as
/// Pillow's `Image.alpha_composite(white, img)` rounds it (7 extra bits of precision,
/// divisions by 255 rounded with shifts).
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let (c, a) = (u32::from(c), u32::from(a));
    let blend = 255 * (255 - a);
    let outa255 = a * 255 + blend;
    let coef1 = a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = c * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    ((((tmp >> 8) + tmp) >> 8) >> PRECISION_BITS) as u8
}

/// 16-bit sample → 8 bits as Pillow reads 16-bit PNG/TIFF (`RGB;16B` …): the high
/// byte. (`image`'s own conversion rounds `v / 257`, one level off for many values.)
#[inline]
fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Convert any decoded image to RGB8; transparent pixels become white (the background
/// of the product photos this is made for) with Pillow's rounding, 16-bit colour and
/// grey+alpha samples keep their high byte, 16-bit grey is clipped to 255 (both as
/// Pillow), float samples are clamped and scaled.
pub fn to_rgb8_on_white(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let from_fn = |f: &dyn Fn(usize) -> [u8; 3]| {
        let mut out = RgbImage::new(w, h);
        for (i, px) in out.pixels_mut().enumerate() {
            px.0 = f(i);
        }
        out
    };
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageLuma8(_) => img.to_rgb8(),
        DynamicImage::ImageLumaA8(la) => {
            let s = la.as_raw();
            from_fn(&|i| {
                let v = over_white(s[2 * i], s[2 * i + 1]);
                [v, v, v]
            })
        }
        DynamicImage::ImageRgba8(rgba) => {
            let s = rgba.as_raw();
            from_fn(&|i| {
                let a = s[4 * i + 3];
                [
                    over_white(s[4 * i], a),
                    over_white(s[4 * i + 1], a),
                    over_white(s[4 * i + 2], a),
                ]
            })
        }
        DynamicImage::ImageLuma16(l) => {
            // Pillow opens 16-bit grey as `I;16`/`I;16B`, and its `convert("RGB")` clips
            // every value above 255 to 255 (no scaling): the Keras pipeline sees that.
            let s = l.as_raw();
            from_fn(&|i| [s[i].min(255) as u8; 3])
        }
        DynamicImage::ImageLumaA16(la) => {
            let s = la.as_raw();
            from_fn(&|i| {
                let v = over_white(high_byte(s[2 * i]), high_byte(s[2 * i + 1]));
                [v, v, v]
            })
        }
        DynamicImage::ImageRgb16(rgb) => {
            let s = rgb.as_raw();
            from_fn(&|i| {
                [
                    high_byte(s[3 * i]),
                    high_byte(s[3 * i + 1]),
                    high_byte(s[3 * i + 2]),
                ]
            })
        }
        DynamicImage::ImageRgba16(rgba) => {
            let s = rgba.as_raw();
            from_fn(&|i| {
                let a = high_byte(s[4 * i + 3]);
                [
                    over_white(high_byte(s[4 * i]), a),
                    over_white(high_byte(s[4 * i + 1]), a),
                    over_white(high_byte(s[4 * i + 2]), a),
                ]
            })
        }
        other if other.color().has_alpha() => {
            let rgba = other.to_rgba8();
            to_rgb8_on_white(DynamicImage::ImageRgba8(rgba))
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
    guarded(bytes, || {
        let mut admission = None;
        let Decoded {
            mut rgb,
            orientation,
            dct_scale,
        } = decode_rgb8_admitted(bytes, opts, &mut admission)?;
        // A JPEG its decoder scaled by 1/2 or 1/4 goes straight to the bicubic (as
        // Pillow's `draft` + `resize`); unscaled images and JPEGs still large at 1/8
        // get the box pre-pass.
        if opts.resize == ResizeMode::Fast && matches!(dct_scale, 1 | 8) {
            let (fx, fy) = box_factors(rgb.width(), rgb.height(), opts.size);
            if fx > 1 || fy > 1 {
                rgb = resize::box_reduce(&rgb, fx, fy);
            }
        }
        // Consumes the full-size pixels: they are freed before the large-image gate
        // opens for the next one.
        let resized = resize::resize_oriented(rgb, orientation, opts.size, opts.size);
        drop(admission);
        normalize_into(resized.as_raw(), out);
        Ok(())
    })
}

/// The integer box-reduce factors of the `fast` resize for a `w × h` image going to
/// `size × size`: per axis, the largest keeping at least `2·size` pixels (as Pillow's
/// `reducing_gap = 2`); 1 when the axis is smaller than `4·size`.
pub fn box_factors(w: u32, h: u32, size: u32) -> (u32, u32) {
    let need = 2 * size.max(1);
    ((w / need).max(1), (h / need).max(1))
}

/// Decode a batch in parallel (on the current rayon pool) into `out`, which holds
/// `inputs.len() * opts.tensor_len()` floats. Images above [`LARGE_IMAGE_PIXELS`]
/// are decoded one at a time (see the module documentation), so memory stays bounded
/// whatever the batch holds. Rows that fail are zero-filled and get
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
    fn png_without_iend_decodes_like_pillow_but_truncated_idat_fails() {
        let img = DynamicImage::ImageRgb8(gradient(40, 30));
        let png = encode(&img, ImageFormat::Png);
        assert!(png.ends_with(&PNG_IEND));
        let opts = DecodeOptions::new(8);
        let no_iend = &png[..png.len() - 12];
        assert_eq!(
            decode_rgb8(no_iend, &opts).unwrap().as_raw(),
            img.as_rgb8().unwrap().as_raw()
        );
        let err = decode_rgb8(&png[..png.len() - 20], &opts).unwrap_err();
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
    fn alpha_composite_rounds_like_pillow() {
        assert_eq!(over_white(200, 128), 227);
        assert_eq!(over_white(0, 128), 127);
        for c in 0..=255u8 {
            assert_eq!(over_white(c, 0), 255);
            assert_eq!(over_white(c, 255), c);
            for a in 0..=255u8 {
                let exact = (f64::from(c) * f64::from(a) + 255.0 * (255.0 - f64::from(a))) / 255.0;
                assert!(
                    (f64::from(over_white(c, a)) - exact).abs() <= 1.0,
                    "{c} {a}"
                );
            }
        }
    }

    #[test]
    fn sixteen_bit_colour_keeps_the_high_byte_grey_clips_like_pillow() {
        // 511 = 0x01FF: Pillow reads 1 (high byte), round(511 / 257) would be 2.
        let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(2, 2, Rgb([511u16, 0x80FF, 0xFFFF]));
        let bytes = encode(&DynamicImage::ImageRgb16(img), ImageFormat::Png);
        let rgb = decode_rgb8(&bytes, &DecodeOptions::new(2)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [1, 0x80, 0xFF]);
        // 16-bit grey: Pillow's `I;16 → RGB` clips to 255, whatever the file format.
        for (v, want) in [(0u16, 0u8), (7, 7), (255, 255), (256, 255), (511, 255)] {
            let grey: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(2, 2, Luma([v]));
            for format in [ImageFormat::Png, ImageFormat::Tiff] {
                let bytes = encode(&DynamicImage::ImageLuma16(grey.clone()), format);
                let rgb = decode_rgb8(&bytes, &DecodeOptions::new(2)).unwrap();
                assert_eq!(rgb.get_pixel(1, 1).0, [want; 3], "{v} {format:?}");
            }
        }
    }

    #[test]
    fn large_images_are_admitted_within_the_budget() {
        assert!(
            admit(LARGE_IMAGE_PIXELS).is_none(),
            "small images never wait"
        );
        // An image above the whole budget goes through alone …
        let held = admit(LARGE_IMAGE_BUDGET + 1);
        assert!(held.is_some());
        // … and while it is held, another large one has to wait …
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let guard = admit(LARGE_IMAGE_PIXELS + 1);
            tx.send(guard.is_some()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        // … small ones do not.
        assert!(admit(10).is_none());
        drop(held);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
        waiter.join().unwrap();
        // Several 12-Mpx photos fit in the budget together.
        let photos: Vec<_> = (0..LARGE_IMAGE_BUDGET / 12_000_000)
            .map(|_| admit(12_000_000))
            .collect();
        assert!(photos.iter().all(Option::is_some));
        drop(photos);
        assert_eq!(*LARGE_IN_FLIGHT.lock().unwrap(), 0);
    }

    #[test]
    fn fast_resize_reduces_large_images_and_keeps_small_ones_exact() {
        let big = DynamicImage::ImageRgb8(gradient(2000, 1500));
        let small = DynamicImage::ImageRgb8(gradient(255, 200));
        let exact = DecodeOptions::new(64);
        let fast = DecodeOptions {
            resize: ResizeMode::Fast,
            ..exact
        };
        assert_eq!(box_factors(2000, 1500, 64), (15, 11));
        assert_eq!(box_factors(255, 256, 64), (1, 2));
        let run = |bytes: &[u8], opts: &DecodeOptions| {
            let mut out = vec![0f32; opts.tensor_len()];
            preprocess_into(bytes, opts, &mut out).unwrap();
            out
        };
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let s = encode(&small, format);
            assert!(run(&s, &exact) == run(&s, &fast), "{format:?}");
            let b = encode(&big, format);
            let (e, f) = (run(&b, &exact), run(&b, &fast));
            assert!(e != f, "{format:?}");
            let mad = e.iter().zip(&f).map(|(a, b)| (a - b).abs()).sum::<f32>() / e.len() as f32;
            assert!(mad < 0.02, "{format:?}: mean abs diff {mad}");
        }
    }

    #[test]
    fn lying_headers_are_refused_before_allocation() {
        // GIF: 1×1 canvas, one 65535×65535 frame: the frame buffer is over the cap.
        let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff".to_vec();
        gif.extend_from_slice(b"\x2c\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02\x44\x01\x00\x3b");
        let err = decode_rgb8(&gif, &DecodeOptions::new(8)).unwrap_err();
        assert_eq!(err.kind, Kind::TooManyPixels, "{err}");
        // BMP claiming 50000×50000 with 64 bytes of pixels.
        let mut bmp = b"BM".to_vec();
        bmp.extend_from_slice(&(54u32 + 64).to_le_bytes());
        bmp.extend_from_slice(&[0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0]);
        bmp.extend_from_slice(&50_000i32.to_le_bytes());
        bmp.extend_from_slice(&50_000i32.to_le_bytes());
        bmp.extend_from_slice(&[1, 0, 24, 0, 0, 0, 0, 0, 64, 0, 0, 0]);
        bmp.extend_from_slice(&[0; 16]);
        bmp.extend_from_slice(&[0x80; 64]);
        let err = decode_rgb8(&bmp, &DecodeOptions::new(8)).unwrap_err();
        assert_eq!(err.kind, Kind::TooManyPixels, "{err}");
        assert!(err.detail.contains("50000×50000"), "{err}");
    }

    #[test]
    fn alloc_limit_is_bounded() {
        assert_eq!(alloc_limit(0), 64 << 20);
        assert_eq!(alloc_limit(1_000), 16_000 + (64 << 20));
        assert_eq!(alloc_limit(u64::MAX), alloc_limit(1 << 28));
    }

    #[test]
    fn a_decoder_panic_is_this_images_internal_error() {
        let png = encode(&DynamicImage::ImageRgb8(gradient(4, 4)), ImageFormat::Png);
        let err = guarded(&png, || -> Result<(), DecodeFailure> {
            panic!("assertion failed: buf.len() >= n")
        })
        .unwrap_err();
        assert_eq!(err.kind, Kind::Internal);
        let text = err.to_string();
        assert!(
            text.starts_with(
                "internal: the decoder failed unexpectedly (PNG): assertion failed: buf.len() >= n (at "
            ),
            "{text}"
        );
        let err = guarded(b"??", || -> Result<(), DecodeFailure> { panic!("x") }).unwrap_err();
        assert!(err.detail.contains("(unknown format): x"), "{err}");
        // The same thread decodes normally afterwards.
        assert!(decode_rgb8(&png, &DecodeOptions::new(4)).is_ok());
    }

    #[test]
    fn tiled_tiffs_with_separate_planes_decode_instead_of_panicking() {
        let (w, h) = (40, 19);
        let plane = |f: fn(u32, u32) -> u16| -> Vec<u16> {
            (0..h).flat_map(|y| (0..w).map(move |x| f(x, y))).collect()
        };
        let (r, g, b) = (
            plane(|x, _| (x * 6) as u16),
            plane(|_, y| (y * 13) as u16),
            plane(|x, y| ((x * y) % 256) as u16),
        );
        let bytes = crate::tiff_planar::tests::tiled_planar_tiff(
            w,
            h,
            16,
            16,
            8,
            &[r.clone(), g.clone(), b.clone()],
        );
        let rgb = decode_rgb8(&bytes, &DecodeOptions::new(8)).unwrap();
        for (x, y, p) in rgb.enumerate_pixels() {
            let i = (y * w + x) as usize;
            assert_eq!(p.0, [r[i] as u8, g[i] as u8, b[i] as u8]);
        }
        let opts = DecodeOptions::new(8);
        let mut out = vec![0f32; 2 * opts.tensor_len()];
        let errs = decode_batch(
            &[Some(&bytes), Some(&bytes[..bytes.len() / 3])],
            &opts,
            &mut out,
        );
        assert!(errs[0].is_none());
        assert_ne!(errs[1].as_ref().unwrap().kind, Kind::Internal);
    }

    #[test]
    fn webp_exif_with_the_exif_prefix_is_applied() {
        // 2×1: red, blue. Orientation 3 (rotate 180°) → blue, red.
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let mut webp = encode(&img, ImageFormat::WebP);
        let mut exif =
            b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x03\0\0\0\0\0\0\0".to_vec();
        if exif.len() % 2 == 1 {
            exif.push(0);
        }
        webp.extend_from_slice(b"EXIF");
        webp.extend_from_slice(&(exif.len() as u32).to_le_bytes());
        webp.extend_from_slice(&exif);
        let riff_len = (webp.len() - 8) as u32;
        webp[4..8].copy_from_slice(&riff_len.to_le_bytes());
        let rgb = decode_rgb8(&webp, &DecodeOptions::new(2)).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 0, 0]);
    }

    #[test]
    fn colour_key_png_stays_opaque_like_pillow() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(3, 3, Rgb([10u8, 20, 30])));
        let png = encode(&img, ImageFormat::Png);
        // Insert tRNS (key = the only colour) after IHDR (8 + 25 bytes).
        let mut key = vec![0, 0, 0, 6, b't', b'R', b'N', b'S', 0, 10, 0, 20, 0, 30];
        key.extend_from_slice(&[0; 4]);
        let keyed = [&png[..33], &key[..], &png[33..]].concat();
        assert!(png_without_colour_key(&keyed).is_some());
        // (CRC of the inserted chunk is wrong on purpose: it is removed before decoding.)
        let rgb = decode_rgb8(&keyed, &DecodeOptions::new(3)).unwrap();
        assert!(rgb.pixels().all(|p| p.0 == [10, 20, 30]));
    }

    #[test]
    fn premultiplied_tiff_alpha_is_undone_like_pillow() {
        let img = DynamicImage::ImageRgba8(ImageBuffer::from_fn(3, 1, |x, _| match x {
            0 => Rgba([100u8, 50, 0, 128]),
            1 => Rgba([9, 9, 9, 0]),
            _ => Rgba([200, 100, 0, 255]),
        }));
        let DynamicImage::ImageRgba8(out) = unpremultiply_like_pillow(img) else {
            panic!("RGBA8 expected")
        };
        assert_eq!(out.get_pixel(0, 0).0, [199, 99, 0, 128]); // 100*255/128 = 199
        assert_eq!(out.get_pixel(1, 0).0, [0, 0, 0, 0]);
        assert_eq!(out.get_pixel(2, 0).0, [200, 100, 0, 255]);
    }

    #[test]
    fn normalisation_matches_keras_preprocess_input() {
        let mut out = [0f32; 3];
        normalize_into(&[0, 255, 128], &mut out);
        assert_eq!(out, [-1.0, 1.0, 128.0 / 127.5 - 1.0]);
    }

    /// Found by fuzzing (issue 11, `fuzz/` target `webp`): a lossless WebP whose
    /// Huffman code lengths oversubscribe the code space. image-webp 0.2.4 sums the
    /// length histogram in a `u16` before its completeness check
    /// (`HuffmanTree::build_implicit`, upstream image-rs/image-webp#118): with overflow
    /// checks (`cargo test`, cargo-fuzz) that is a panic, caught as `internal`; in
    /// release builds the sum wraps and the check rejects the code (`corrupt`). Either
    /// way an error for this row, never a panic out of the batch.
    #[test]
    fn webp_oversubscribed_huffman_code_is_an_error_not_a_panic() {
        const WEBP: &[u8] =
            b"RIFFr\x5c\x02\x00WEBPVP8Lf\x5c\x02\x00/+\xc1J\x00\x09\x87i\x1b\x09\x12y8\x0c\x9f\
            w\xff\x05\xcf\xec\xde\x97\x10\xd1\xff\x09\xe87$!\xaa\xa8\xb8&\xc13UT<\xed\x8f/\
            \xf1\x92\xc2I\x05z\x92\xb9\xa8\xc0@Qa0^\xff\xff\xff\xff\xff\xff\xff\xff5\x1b\x88\
            \x007\x93\xdd\x01\x14\xcf\xed&\xe0\x85\x0e\xb5\xf7\xcezFQ\xa3\xb9+\xfe\xfd/\xe1\
            \x0f\x97\xad\x13\xdf\xc3\x09\xf57\xf8\x0ft\x99\xfd,\xdc\xb08n\xf6{\x15\xefm\xff\
            \xcfI\x92\xed\x0f\xea\xfd\xfe\xf8\xeb@F\xa4\x8b\xed\x99\xee\xd1\xde\xfbg\xdb\xb6\
            m\xfb\xcc\xc6\x99m\x1e\x8d/?>\xc9U\xcb\x99\x8f\xd5\x01\x00\x00\x006L\xe5~\x9c9\
            \x7f\x99\x99\xec_\xfb\xb7\xcaI\xceM6\x9b\xf6{\x15\xefm\xff\xcfI\x92\xed\x0f\xea\
            \xfd\xfeF\xa4\x8b\xed\x99\xee\xd1\xde\xfbg\xdb\xb6m\xfb\xcc\xc6\x99m\x1e\xd97\
            \x07k\xd8*f%\x222\xf0\x8d/?>\xc9U\xcb\x99\xbbI\xf6{\x15\xefm\xff\xcfI\x92\xed\
            \x0f\xea\xfd\xfe\xf8\xeb@F\xa4\x8b\xed\x99\xee\xd1\xde\xfbg\xdb\xb6m\xfb\xcc\xc6\
            m\x1e\xd97\x07k\xd8*f%\x222\xf0\x8d/?>\xc9U\xcb\x99\x00";
        assert_eq!(WEBP.len(), 310);
        let err = decode_rgb8(WEBP, &DecodeOptions::new(8)).unwrap_err();
        if cfg!(debug_assertions) {
            assert!(matches!(err.kind, Kind::Internal | Kind::Corrupt), "{err}");
        } else {
            assert_eq!(err.kind, Kind::Corrupt, "{err}");
        }
    }
}
