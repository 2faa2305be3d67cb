//! JPEG decoding with libjpeg-turbo's decoder (as bundled by `mozjpeg-sys`).
//!
//! Pillow — and so the classic PySpark + Keras pipeline — decodes JPEGs with
//! libjpeg-turbo (accurate integer IDCT, "fancy" chroma upsampling). Using the same
//! decoder gives bit-identical pixels, where a different decoder (e.g. zune-jpeg)
//! differs by up to ±4 levels and moves features visibly (cosine 0.998 instead of
//! ≥ 0.99999 on the golden set).
//!
//! libjpeg reports fatal errors through `error_exit`, which here unwinds (the
//! `mozjpeg` crate's convention) and is caught at the boundary of [`decode`].
//! Warnings that mean the pixels are wrong — premature end of data, corrupt entropy
//! data — are recorded and turned into per-image errors instead of being ignored
//! (libjpeg would otherwise fill the missing part with grey).
//!
//! Limits: the pixel budget is checked on the frame header, before libjpeg allocates
//! anything for the image; progressive files are refused past [`MAX_SCANS`] scans
//! (thousands of tiny scans are a CPU bomb, libjpeg-turbo's own advice). Arithmetic-coded
//! files decode (libjpeg is built with `arith_dec`, as Pillow's is); JPEG features a build
//! lacks fail as `unsupported`.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::RgbImage;
use mozjpeg::{Decompress, Marker};
use mozjpeg_sys as ffi;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

/// Most scans a JPEG may have (a standard progressive file has about 10).
pub const MAX_SCANS: u32 = 500;

thread_local! {
    /// The first pixel-damaging warning of the image being decoded on this thread.
    static DAMAGE: Cell<Option<c_int>> = const { Cell::new(None) };
    /// Scans (SOS markers) seen so far in the image being decoded on this thread.
    static SCANS: Cell<u32> = const { Cell::new(0) };
}

/// Why libjpeg stopped: its message code and text (the unwinding payload).
struct Fatal {
    code: c_int,
    msg: String,
}

fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    // SAFETY: `err` is set by jpeg_create_decompress and points at our error manager;
    // format_message writes at most 80 bytes (JMSG_LENGTH_MAX) into the buffer.
    unsafe {
        let err = &*cinfo.err;
        match err.format_message {
            Some(fmt) => {
                let mut buffer = [0u8; 80];
                let f = std::mem::transmute::<
                    unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &[u8; 80]),
                    unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]),
                >(fmt);
                f(cinfo, &mut buffer);
                let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
                String::from_utf8_lossy(&buffer[..end]).into_owned()
            }
            None => format!("libjpeg error {}", err.msg_code),
        }
    }
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    // SAFETY: see `message`.
    let code = unsafe { (*cinfo.err).msg_code };
    let msg = message(cinfo);
    // resume_unwind: no panic hook (this is an expected, per-image failure).
    std::panic::resume_unwind(Box::new(Fatal { code, msg }));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    // SAFETY: see `message`.
    let code = unsafe { (*cinfo.err).msg_code };
    if level >= 0 {
        // Trace messages: only count the scans.
        if code == ffi::JTRC_SOS as c_int {
            let n = SCANS.with(|s| {
                s.set(s.get() + 1);
                s.get()
            });
            if n > MAX_SCANS {
                std::panic::resume_unwind(Box::new(Fatal {
                    code: TOO_MANY_SCANS,
                    msg: format!("more than {MAX_SCANS} scans"),
                }));
            }
        }
        return;
    }
    let damaging = [
        ffi::JWRN_JPEG_EOF,
        ffi::JWRN_HUFF_BAD_CODE,
        ffi::JWRN_MUST_RESYNC,
        ffi::JWRN_HIT_MARKER,
        ffi::JWRN_NOT_SEQUENTIAL,
        ffi::JWRN_BOGUS_PROGRESSION,
    ];
    if damaging.iter().any(|&c| c as c_int == code) {
        DAMAGE.with(|d| {
            if d.get().is_none() {
                d.set(Some(code));
            }
        });
    }
}

/// Pseudo message code for the scan limit (libjpeg's codes are small positive ints).
const TOO_MANY_SCANS: c_int = -1;

fn error_manager() -> ffi::jpeg_error_mgr {
    // SAFETY: jpeg_std_error initialises every field of a zeroed jpeg_error_mgr.
    unsafe {
        let mut err: ffi::jpeg_error_mgr = std::mem::zeroed();
        ffi::jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }
}

/// Pillow's `MULDIV255`: `round(a * b / 255)` in integer arithmetic.
#[inline]
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// CMYK (as libjpeg returns it) → RGB, as Pillow does it. Adobe-written files store
/// inverted CMYK (Photoshop convention); Pillow reads *every* 4-component JPEG as
/// `CMYK;I` (YCCK too: libjpeg hands those over as inverted CMYK), with or without
/// an Adobe marker, so the decoder always converts as inverted, in place with
/// [`cmyk_to_rgb_in_place`]; this copying version is its reference in tests.
#[cfg(test)]
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool, out: &mut [u8]) {
    for (px, o) in cmyk.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        o.copy_from_slice(&cmyk_pixel([px[0], px[1], px[2], px[3]], inverted));
    }
}

#[inline]
fn cmyk_pixel(px: [u8; 4], inverted: bool) -> [u8; 3] {
    let v = |x: u8| u32::from(if inverted { 255 - x } else { x });
    let nk = 255 - v(px[3]);
    [0, 1, 2].map(|c| (nk - muldiv255(v(px[c]), nk)) as u8)
}

/// [`cmyk_to_rgb`] (inverted) in place: `buf` holds `n` CMYK pixels and ends up with
/// `n` RGB ones (3·n bytes), without a second full-size buffer.
fn cmyk_to_rgb_in_place(buf: &mut Vec<u8>) {
    let n = buf.len() / 4;
    for i in 0..n {
        // Pixel i is read (bytes 4i..4i+4) before bytes 3i..3i+3 ≤ 4i+2 are written.
        let px = [buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]];
        buf[3 * i..3 * i + 3].copy_from_slice(&cmyk_pixel(px, true));
    }
    buf.truncate(3 * n);
}

/// Grey → RGB in place: `buf` holds `n` grey bytes followed by room for 2·n more.
fn grey_to_rgb_in_place(buf: &mut [u8], n: usize) {
    // Backwards: bytes 3i..3i+3 ≥ i never overwrite a grey value not yet read.
    for i in (0..n).rev() {
        let g = buf[i];
        buf[3 * i..3 * i + 3].fill(g);
    }
}

/// Read every scanline of a started decompression into `buf`, then finish it.
fn read_all<R: std::io::BufRead>(
    mut started: mozjpeg::decompress::DecompressStarted<R>,
    buf: &mut [u8],
) -> Result<(), DecodeFailure> {
    let corrupt = |e: std::io::Error| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}"));
    started.read_scanlines_into(buf).map_err(corrupt)?;
    started.finish().map_err(corrupt)
}

/// A decoded image as stored (not yet turned upright) and its EXIF orientation.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub rgb: RgbImage,
    pub orientation: Orientation,
    /// The DCT scaling denominator the image was decoded with (1: full size).
    pub dct_scale: usize,
}

/// The DCT scaling denominator (1, 2, 4 or 8) for a `w × h` JPEG going to a
/// `target × target` input: the largest that keeps the decoded image at least twice
/// the target on both axes (Pillow's `draft` with `reducing_gap = 2`: `w // 2·target`
/// and `h // 2·target` both at least the denominator). 1 without a target.
pub fn dct_denominator(w: usize, h: usize, target: Option<u32>) -> usize {
    let Some(target) = target else { return 1 };
    let need = 2 * target as usize;
    [8, 4, 2]
        .into_iter()
        .find(|&d| need > 0 && w / need >= d && h / need >= d)
        .unwrap_or(1)
}

fn decode_inner(
    bytes: &[u8],
    max_pixels: u64,
    reduce_for: Option<u32>,
    admit: &mut dyn FnMut(u64),
) -> Result<Decoded, DecodeFailure> {
    let markers = [Marker::APP(1)];
    let mut dec = Decompress::with_err(error_manager())
        .with_markers(&markers)
        .from_mem(bytes)
        .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG header: {e}")))?;
    let (w, h) = dec.size();
    let pixels = w as u64 * h as u64;
    if w == 0 || h == 0 {
        return Err(DecodeFailure::new(
            Kind::Corrupt,
            format!("JPEG header declares an empty {w}×{h} image"),
        ));
    }
    if pixels > max_pixels {
        return Err(DecodeFailure::new(
            Kind::TooManyPixels,
            format!(
                "JPEG header declares {w}×{h} = {pixels} pixels, above the budget of {max_pixels} (raise max_pixels to accept it)"
            ),
        ));
    }
    // DCT scaling (the `fast` resize): libjpeg decodes straight to ceil(w / d) ×
    // ceil(h / d), with its reduced-size inverse DCTs.
    let d = dct_denominator(w, h, reduce_for);
    if d > 1 {
        dec.scale((8 / d) as u8);
    }
    let (w, h) = (w.div_ceil(d), h.div_ceil(d));
    // Before libjpeg allocates its buffers (jpeg_start_decompress) and ours.
    admit(w as u64 * h as u64);
    let orientation = crate::orientation::jpeg(
        dec.markers()
            .filter(|m| m.marker == Marker::APP(1))
            .map(|m| m.data),
    );
    // One buffer per image: libjpeg writes into it, colour conversion is in place.
    let format = dec
        .image()
        .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
    let (width, height) = match &format {
        mozjpeg::decompress::Format::RGB(s)
        | mozjpeg::decompress::Format::Gray(s)
        | mozjpeg::decompress::Format::CMYK(s) => (s.width(), s.height()),
    };
    if (width, height) != (w, h) {
        return Err(DecodeFailure::new(
            Kind::Internal,
            format!("libjpeg decodes {width}×{height}, {w}×{h} expected"),
        ));
    }
    let (width, height) = (w as u32, h as u32);
    let rgb = match format {
        mozjpeg::decompress::Format::RGB(started) => {
            let mut rgb = vec![0u8; w * h * 3];
            read_all(started, &mut rgb)?;
            rgb
        }
        mozjpeg::decompress::Format::Gray(started) => {
            let mut rgb = vec![0u8; w * h * 3];
            read_all(started, &mut rgb[..w * h])?;
            grey_to_rgb_in_place(&mut rgb, w * h);
            rgb
        }
        mozjpeg::decompress::Format::CMYK(started) => {
            let mut buf = vec![0u8; w * h * 4];
            read_all(started, &mut buf)?;
            cmyk_to_rgb_in_place(&mut buf);
            buf
        }
    };
    let rgb = RgbImage::from_raw(width, height, rgb).expect("buffer matches dimensions");
    Ok(Decoded {
        rgb,
        orientation,
        dct_scale: d,
    })
}

/// Decode a JPEG to upright RGB8, refusing images above `max_pixels` before any
/// pixel buffer is allocated.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeFailure> {
    let d = decode_admitted(bytes, max_pixels, None, &mut |_| {})?;
    Ok(crate::resize::orient(d.rgb, d.orientation))
}

fn classify_fatal(code: c_int, msg: &str, ran_out: bool) -> Kind {
    let lower = msg.to_ascii_lowercase();
    let is = |c: ffi::J_MESSAGE_CODE| code == c as c_int;
    // By code, not text: "Unsupported marker type" (JERR_UNKNOWN_MARKER) is what
    // damaged entropy data usually produces, so it must stay `corrupt`.
    if code == TOO_MANY_SCANS
        || is(ffi::JERR_ARITH_NOTIMPL)
        || is(ffi::JERR_NOT_COMPILED)
        || is(ffi::JERR_SOF_UNSUPPORTED)
        || is(ffi::JERR_BAD_PRECISION)
        || is(ffi::JERR_CONVERSION_NOTIMPL)
    {
        Kind::Unsupported
    } else if ran_out
        || is(ffi::JERR_INPUT_EMPTY)
        || is(ffi::JERR_INPUT_EOF)
        || lower.contains("premature end")
    {
        Kind::Truncated
    } else if is(ffi::JERR_IMAGE_TOO_BIG) || lower.contains("maximum supported image dimension") {
        Kind::TooManyPixels
    } else {
        Kind::Corrupt
    }
}

/// [`decode`] without the orientation applied, calling `admit(pixels)` with the size
/// of the decoded buffer once the header has passed the pixel budget (checked on the
/// full size) and before any pixel buffer is allocated (the caller may block there to
/// bound memory; see [`crate::decode`]). With `reduce_for = Some(target)`, the image
/// is decoded with DCT scaling (see [`dct_denominator`]).
pub(crate) fn decode_admitted(
    bytes: &[u8],
    max_pixels: u64,
    reduce_for: Option<u32>,
    admit: &mut dyn FnMut(u64),
) -> Result<Decoded, DecodeFailure> {
    DAMAGE.with(|d| d.set(None));
    SCANS.with(|s| s.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        decode_inner(bytes, max_pixels, reduce_for, admit)
    }));
    let damage = DAMAGE.with(|d| d.take());
    let ran_out = damage == Some(ffi::JWRN_JPEG_EOF as c_int);
    let decoded = match outcome {
        Ok(Ok(decoded)) => decoded,
        // A non-fatal failure (e.g. "no image in the JPEG file") after the data ran out.
        Ok(Err(e)) if ran_out && e.kind == Kind::Corrupt => {
            return Err(DecodeFailure::new(
                Kind::Truncated,
                format!("JPEG data ends before the image is complete ({})", e.detail),
            ))
        }
        Ok(Err(e)) => return Err(e),
        Err(payload) => {
            let (code, msg) = match payload.downcast::<Fatal>() {
                Ok(f) => (f.code, f.msg),
                Err(other) => (
                    0,
                    other
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| other.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown libjpeg failure".into()),
                ),
            };
            let kind = classify_fatal(code, &msg, ran_out);
            let detail = match kind {
                _ if code == TOO_MANY_SCANS => format!(
                    "JPEG has {msg} (a standard progressive JPEG has about 10); refused as a CPU bomb"
                ),
                _ if code == ffi::JERR_ARITH_NOTIMPL as c_int
                    || code == ffi::JERR_NOT_COMPILED as c_int =>
                {
                    format!("this JPEG uses a feature the bundled libjpeg lacks ({msg})")
                }
                _ => format!("JPEG: {msg}"),
            };
            return Err(DecodeFailure::new(kind, detail));
        }
    };
    if let Some(code) = damage {
        return Err(if code == ffi::JWRN_JPEG_EOF as c_int {
            DecodeFailure::new(
                Kind::Truncated,
                "JPEG data ends before the image is complete",
            )
        } else {
            DecodeFailure::new(
                Kind::Corrupt,
                format!("JPEG entropy-coded data is damaged (libjpeg warning {code}); the pixels would be wrong"),
            )
        });
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_rounds_like_pillow() {
        for a in [0u32, 1, 127, 128, 254, 255] {
            for b in [0u32, 1, 100, 255] {
                let exact = (a * b) as f64 / 255.0;
                assert!(
                    (muldiv255(a, b) as f64 - exact).abs() <= 0.5 + 1e-9,
                    "{a}*{b}"
                );
            }
        }
    }

    #[test]
    fn cmyk_conversion_handles_adobe_inversion() {
        let mut out = [0u8; 3];
        // Plain CMYK: no ink → white; full K → black.
        cmyk_to_rgb(&[0, 0, 0, 0], false, &mut out);
        assert_eq!(out, [255, 255, 255]);
        cmyk_to_rgb(&[0, 0, 0, 255], false, &mut out);
        assert_eq!(out, [0, 0, 0]);
        // Adobe (inverted): 255 means no ink.
        cmyk_to_rgb(&[255, 255, 255, 255], true, &mut out);
        assert_eq!(out, [255, 255, 255]);
        cmyk_to_rgb(&[0, 255, 255, 255], true, &mut out);
        assert_eq!(out, [0, 255, 255], "full cyan");
    }

    /// A 16×16 progressive JPEG written by libjpeg itself.
    fn progressive_jpeg() -> Vec<u8> {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_size(16, 16);
        comp.set_progressive_mode();
        let mut started = comp.start_compress(Vec::new()).unwrap();
        let pixels: Vec<u8> = (0..16 * 16 * 3).map(|i| (i * 7 % 256) as u8).collect();
        started.write_scanlines(&pixels).unwrap();
        started.finish().unwrap()
    }

    #[test]
    fn progressive_jpeg_decodes() {
        let rgb = decode(&progressive_jpeg(), 1 << 20).unwrap();
        assert_eq!(rgb.dimensions(), (16, 16));
    }

    #[test]
    fn thousands_of_scans_are_refused_as_unsupported() {
        // Repeat the last scan (SOS header + data, up to EOI) 600 times.
        let jpeg = progressive_jpeg();
        let last_sos = jpeg
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .expect("a scan");
        let body = &jpeg[..jpeg.len() - 2];
        let scan = &jpeg[last_sos..jpeg.len() - 2];
        let mut bomb = body.to_vec();
        for _ in 0..600 {
            bomb.extend_from_slice(scan);
        }
        bomb.extend_from_slice(&[0xFF, 0xD9]);
        let err = decode(&bomb, 1 << 20).unwrap_err();
        assert_eq!(err.kind, Kind::Unsupported, "{err}");
        assert!(err.detail.contains("more than 500 scans"), "{err}");
        // The per-thread counter is reset for the next image.
        assert!(decode(&jpeg, 1 << 20).is_ok());
    }

    #[test]
    fn arithmetic_coded_jpeg_decodes_like_libjpeg_turbo() {
        // An 8×8 JPEG converted by `jpegtran -arithmetic -copy none`; mozjpeg-sys is
        // built with `arith_dec`, and `djpeg` gives (202, 30, 88) for every pixel.
        const HEX: &str = "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a181616183123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffdb0043011112121815182f1a1a2f634238426363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363ffc90011080008000803012200021101031101ffcc000a0010100501101105ffda000c03010002110311003f00fed1cdb838ffd9";
        let bytes: Vec<u8> = (0..HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&HEX[i..i + 2], 16).unwrap())
            .collect();
        let img = decode(&bytes, 1 << 20).unwrap();
        assert_eq!(img.dimensions(), (8, 8));
        assert!(img.pixels().all(|p| p.0 == [202, 30, 88]));
    }

    #[test]
    fn damaged_marker_in_scan_data_is_corrupt_not_unsupported() {
        // "Unsupported marker type" comes from damaged data, not from a JPEG feature.
        let mut jpeg = progressive_jpeg();
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let at = sos + 20;
        jpeg[at..at + 2].copy_from_slice(&[0xFF, 0x15]);
        let err = decode(&jpeg, 1 << 20).unwrap_err();
        assert_ne!(err.kind, Kind::Unsupported, "{err}");
    }

    #[test]
    fn truncated_header_is_truncated() {
        let jpeg = progressive_jpeg();
        for cut in [4, 30, 100] {
            let err = decode(&jpeg[..cut], 1 << 20).unwrap_err();
            assert_eq!(err.kind, Kind::Truncated, "cut at {cut}: {err}");
        }
    }

    #[test]
    fn in_place_conversions_match_the_copying_ones() {
        let cmyk: Vec<u8> = (0..4 * 50).map(|i| (i * 37 % 256) as u8).collect();
        let mut want = vec![0u8; 3 * 50];
        cmyk_to_rgb(&cmyk, true, &mut want);
        let mut buf = cmyk.clone();
        cmyk_to_rgb_in_place(&mut buf);
        assert_eq!(buf, want);

        let mut grey = vec![0u8; 3 * 7];
        grey[..7].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        grey_to_rgb_in_place(&mut grey, 7);
        assert_eq!(
            grey,
            [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7]
        );
    }

    fn photo_jpeg(w: usize, h: usize) -> Vec<u8> {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_size(w, h);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        let pixels: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i / 3) % w * 255 / w) as u8)
            .collect();
        started.write_scanlines(&pixels).unwrap();
        started.finish().unwrap()
    }

    #[test]
    fn dct_denominator_keeps_twice_the_target() {
        assert_eq!(dct_denominator(4032, 3024, None), 1);
        assert_eq!(dct_denominator(4032, 3024, Some(224)), 4); // 1008×756
        assert_eq!(dct_denominator(3024, 4032, Some(224)), 4);
        assert_eq!(dct_denominator(8000, 6000, Some(224)), 8); // 1000×750
        assert_eq!(dct_denominator(896, 896, Some(224)), 2);
        assert_eq!(dct_denominator(895, 4000, Some(224)), 1);
        assert_eq!(dct_denominator(640, 480, Some(224)), 1);
        assert_eq!(dct_denominator(100_000, 100_000, Some(1)), 8);
    }

    #[test]
    fn dct_scaling_decodes_the_reduced_size_and_admits_it() {
        let jpeg = photo_jpeg(1000, 600);
        let mut admitted = Vec::new();
        let d = decode_admitted(&jpeg, 1 << 20, Some(64), &mut |p| admitted.push(p)).unwrap();
        assert_eq!(d.rgb.dimensions(), (250, 150)); // 1/4: 250 ≥ 128, 150 ≥ 128
        assert_eq!(admitted, [250 * 150]);
        // The budget is still checked on the full size.
        let err = decode_admitted(&jpeg, 599_999, Some(64), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind, Kind::TooManyPixels);
        // No reduction possible: the same pixels as without a target.
        let full = decode_admitted(&jpeg, 1 << 20, None, &mut |_| {}).unwrap();
        let same = decode_admitted(&jpeg, 1 << 20, Some(400), &mut |_| {}).unwrap();
        assert_eq!(full.rgb, same.rgb);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode(&[0xFF, 0xD8, 0xFF, 0x00, 0x01, 0x02], 1 << 20).unwrap_err();
        assert!(matches!(err.kind, Kind::Corrupt | Kind::Truncated), "{err}");
    }
}
