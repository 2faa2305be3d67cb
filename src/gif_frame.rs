//! The first frame of a GIF, composed as Pillow composes it.
//!
//! Pillow's frame 0: the canvas is the logical screen, grown to hold the frame if the
//! frame reaches past it; it is filled with the frame's transparent index when there
//! is one, else with index 0; the frame's indices are pasted at its offset; the
//! palette is the frame's local one, else the global one (no palette at all: the
//! indices are grey levels). The classic pipeline then composites the transparent
//! index on white. The `image` crate instead fills the area outside the frame with
//! transparent pixels and crops oversized frames, so GIFs are composed here.

use std::num::NonZeroU64;

use image::RgbImage;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

fn fail(kind: Kind, detail: impl Into<String>) -> DecodeFailure {
    DecodeFailure::new(kind, detail)
}

fn gif_error(e: gif::DecodingError) -> DecodeFailure {
    let msg = e.to_string();
    match e {
        gif::DecodingError::OutOfMemory | gif::DecodingError::MemoryLimit => fail(
            Kind::TooManyPixels,
            format!("GIF decoder refused to allocate the image ({msg})"),
        ),
        gif::DecodingError::UnexpectedEof => fail(
            Kind::Truncated,
            format!("GIF data ends before the image is complete ({msg})"),
        ),
        _ if msg.to_ascii_lowercase().contains("eof") => fail(
            Kind::Truncated,
            format!("GIF data ends before the image is complete ({msg})"),
        ),
        _ => fail(Kind::Corrupt, format!("GIF data is damaged ({msg})")),
    }
}

/// The canvas size of the first frame (the screen, grown to hold the frame), read
/// without decoding pixels: `None` if the file has no frame.
pub fn canvas_size(bytes: &[u8]) -> Result<(u32, u32), DecodeFailure> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.check_frame_consistency(false);
    let mut d = options.read_info(bytes).map_err(gif_error)?;
    let (sw, sh) = (u32::from(d.width()), u32::from(d.height()));
    let f = d
        .next_frame_info()
        .map_err(gif_error)?
        .ok_or_else(|| fail(Kind::Corrupt, "GIF has no image"))?;
    Ok((
        sw.max(u32::from(f.left) + u32::from(f.width)),
        sh.max(u32::from(f.top) + u32::from(f.height)),
    ))
}

/// Decode the first frame (see the module documentation); transparent pixels are
/// white. `max_frame_bytes` bounds the frame buffer the decoder may allocate.
pub fn decode_first_frame(bytes: &[u8], max_frame_bytes: u64) -> Result<RgbImage, DecodeFailure> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.check_frame_consistency(false);
    if let Some(limit) = NonZeroU64::new(max_frame_bytes) {
        options.set_memory_limit(gif::MemoryLimit::Bytes(limit));
    }
    let mut d = options.read_info(bytes).map_err(gif_error)?;
    let (sw, sh) = (usize::from(d.width()), usize::from(d.height()));
    let global = d.global_palette().map(<[u8]>::to_vec);
    let frame = d
        .read_next_frame()
        .map_err(gif_error)?
        .ok_or_else(|| fail(Kind::Corrupt, "GIF has no image"))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let (w, h) = (sw.max(left + fw), sh.max(top + fh));
    if w == 0 || h == 0 {
        return Err(fail(Kind::Corrupt, "GIF declares an empty image"));
    }
    let transparent = frame.transparent;
    let mut canvas = vec![transparent.unwrap_or(0); w * h];
    for (r, row) in frame.buffer.chunks(fw.max(1)).take(fh).enumerate() {
        let at = (top + r) * w + left;
        canvas[at..at + row.len()].copy_from_slice(row);
    }
    let palette: Option<&[u8]> = frame.palette.as_deref().or(global.as_deref());
    let mut rgb = vec![0u8; w * h * 3];
    for (o, &i) in rgb.chunks_exact_mut(3).zip(&canvas) {
        // Without a palette Pillow's image is "L" and its pipeline keeps the grey
        // levels, transparent index included.
        let c = match palette {
            Some(_) if Some(i) == transparent => [255; 3],
            Some(p) => p
                .get(3 * usize::from(i)..3 * usize::from(i) + 3)
                .map_or([0; 3], |c| [c[0], c[1], c[2]]),
            None => [i; 3],
        };
        o.copy_from_slice(&c);
    }
    Ok(RgbImage::from_raw(w as u32, h as u32, rgb).expect("buffer matches dimensions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GIF with a `sw × sh` screen, a global palette of 4 colours and one 2×2 frame
    /// of indices [1, 2, 3, 1] at (`left`, `top`).
    fn gif(sw: u16, sh: u16, left: u16, top: u16, transparent: Option<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let palette = [10, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200];
        let mut e = gif::Encoder::new(&mut out, sw, sh, &palette).unwrap();
        let frame = gif::Frame {
            left,
            top,
            width: 2,
            height: 2,
            transparent,
            buffer: std::borrow::Cow::Borrowed(&[1, 2, 3, 1]),
            ..gif::Frame::default()
        };
        e.write_frame(&frame).unwrap();
        drop(e);
        out
    }

    #[test]
    fn outside_the_frame_is_index_zero_or_the_transparent_index() {
        let img = decode_first_frame(&gif(4, 3, 1, 1, None), 1 << 20).unwrap();
        assert_eq!(img.dimensions(), (4, 3));
        assert_eq!(
            img.get_pixel(0, 0).0,
            [10, 20, 30],
            "index 0 outside the frame"
        );
        assert_eq!(img.get_pixel(1, 1).0, [200, 0, 0]);
        assert_eq!(img.get_pixel(2, 1).0, [0, 200, 0]);
        assert_eq!(img.get_pixel(1, 2).0, [0, 0, 200]);
        let img = decode_first_frame(&gif(4, 3, 1, 1, Some(3)), 1 << 20).unwrap();
        assert_eq!(
            img.get_pixel(0, 0).0,
            [255; 3],
            "transparent outside the frame"
        );
        assert_eq!(
            img.get_pixel(1, 2).0,
            [255; 3],
            "transparent index in the frame"
        );
        assert_eq!(img.get_pixel(1, 1).0, [200, 0, 0]);
    }

    #[test]
    fn a_frame_past_the_screen_grows_the_canvas() {
        let bytes = gif(2, 2, 1, 1, None);
        assert_eq!(canvas_size(&bytes).unwrap(), (3, 3));
        let img = decode_first_frame(&bytes, 1 << 20).unwrap();
        assert_eq!(img.dimensions(), (3, 3));
        assert_eq!(img.get_pixel(2, 2).0, [200, 0, 0]);
    }
}
