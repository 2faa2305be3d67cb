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

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::RgbImage;
use mozjpeg::{Decompress, Marker};
use mozjpeg_sys as ffi;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

thread_local! {
    /// The first pixel-damaging warning of the image being decoded on this thread.
    static DAMAGE: Cell<Option<c_int>> = const { Cell::new(None) };
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
    let msg = message(cinfo);
    std::panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return; // trace messages
    }
    // SAFETY: see `message`.
    let code = unsafe { (*cinfo.err).msg_code };
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

/// The orientation stored in an `Exif\0\0` APP1 segment, if any.
fn exif_orientation(app1: &[u8]) -> Option<Orientation> {
    app1.strip_prefix(b"Exif\0\0")
        .and_then(Orientation::from_exif_chunk)
}

/// Pillow's `MULDIV255`: `round(a * b / 255)` in integer arithmetic.
#[inline]
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// CMYK (as libjpeg returns it) → RGB, as Pillow does it. Adobe-written files store
/// inverted CMYK (Photoshop convention); Pillow reads those as `CMYK;I`.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool, out: &mut [u8]) {
    for (px, o) in cmyk.chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let v = |x: u8| u32::from(if inverted { 255 - x } else { x });
        let nk = 255 - v(px[3]);
        for c in 0..3 {
            o[c] = (nk - muldiv255(v(px[c]), nk)) as u8;
        }
    }
}

struct Decoded {
    rgb: RgbImage,
    orientation: Option<Orientation>,
}

fn decode_inner(bytes: &[u8], max_pixels: u64) -> Result<Decoded, DecodeFailure> {
    let markers = [Marker::APP(1), Marker::APP(14)];
    let dec = Decompress::with_err(error_manager())
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
    let mut orientation = None;
    let mut adobe = false;
    for m in dec.markers() {
        match m.marker {
            Marker::APP(1) if orientation.is_none() => orientation = exif_orientation(m.data),
            Marker::APP(14) => adobe |= m.data.starts_with(b"Adobe"),
            _ => {}
        }
    }
    let (width, height) = (w as u32, h as u32);
    let mut rgb = vec![0u8; w * h * 3];
    match dec
        .image()
        .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?
    {
        mozjpeg::decompress::Format::RGB(mut started) => {
            started
                .read_scanlines_into(&mut rgb)
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
            started
                .finish()
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
        }
        mozjpeg::decompress::Format::Gray(mut started) => {
            let mut grey = vec![0u8; w * h];
            started
                .read_scanlines_into(&mut grey)
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
            started
                .finish()
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
            for (o, &g) in rgb.chunks_exact_mut(3).zip(&grey) {
                o.fill(g);
            }
        }
        mozjpeg::decompress::Format::CMYK(mut started) => {
            let mut cmyk = vec![0u8; w * h * 4];
            started
                .read_scanlines_into(&mut cmyk)
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
            started
                .finish()
                .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("JPEG: {e}")))?;
            cmyk_to_rgb(&cmyk, adobe, &mut rgb);
        }
    }
    let rgb = RgbImage::from_raw(width, height, rgb).expect("buffer matches dimensions");
    Ok(Decoded { rgb, orientation })
}

/// Decode a JPEG to upright RGB8, refusing images above `max_pixels` before any
/// pixel buffer is allocated.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeFailure> {
    DAMAGE.with(|d| d.set(None));
    let outcome = catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, max_pixels)));
    let damage = DAMAGE.with(|d| d.take());
    let decoded = match outcome {
        Ok(result) => result?,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown libjpeg failure".into());
            let lower = msg.to_ascii_lowercase();
            let ran_out = damage == Some(ffi::JWRN_JPEG_EOF as c_int);
            let kind =
                if ran_out || lower.contains("premature end") || lower.contains("empty input") {
                    Kind::Truncated
                } else if lower.contains("unsupported") || lower.contains("not supported") {
                    Kind::Unsupported
                } else if lower.contains("maximum supported image dimension") {
                    Kind::TooManyPixels
                } else {
                    Kind::Corrupt
                };
            return Err(DecodeFailure::new(kind, format!("JPEG: {msg}")));
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
    let mut img = image::DynamicImage::ImageRgb8(decoded.rgb);
    if let Some(o) = decoded.orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let err = decode(&[0xFF, 0xD8, 0xFF, 0x00, 0x01, 0x02], 1 << 20).unwrap_err();
        assert!(matches!(err.kind, Kind::Corrupt | Kind::Truncated), "{err}");
    }
}
