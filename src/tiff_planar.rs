//! Tiled TIFFs with separate planes (PlanarConfiguration = 2, TileWidth set).
//!
//! The `tiff` crate (0.11) computes the edge padding of a tile from its chunk index
//! as if every plane were the first, so reading such an image whole (as the `image`
//! crate does) trips an assertion inside the crate for the later planes' edge tiles.
//! These images are decoded here instead, one tile of one plane at a time, each tile
//! cropped to the part inside the image and written into an interleaved buffer:
//! 8- and 16-bit grey + alpha, RGB and RGBA (what Pillow reads through libtiff for
//! such files). Other colour types are refused as `unsupported` before any decoding.

use std::io::Cursor;

use image::{DynamicImage, ImageBuffer};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::{PlanarConfiguration, Tag};
use tiff::ColorType;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

fn fail(kind: Kind, detail: impl Into<String>) -> DecodeFailure {
    DecodeFailure::new(kind, detail)
}

fn tiff_error(e: tiff::TiffError) -> DecodeFailure {
    use tiff::TiffError as E;
    match e {
        E::LimitsExceeded => fail(
            Kind::TooManyPixels,
            "TIFF decoder refused to allocate the image",
        ),
        E::UnsupportedError(e) => fail(Kind::Unsupported, format!("TIFF: {e}")),
        E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => fail(
            Kind::Truncated,
            format!("TIFF data ends before the image is complete ({e})"),
        ),
        other => fail(Kind::Corrupt, format!("TIFF data is damaged ({other})")),
    }
}

/// Whether `bytes` is a tiled TIFF whose samples are stored in separate planes (with
/// more than one sample per pixel): those must go through [`decode`].
pub fn is_tiled_planar(bytes: &[u8]) -> bool {
    let Ok(mut d) = Decoder::new(Cursor::new(bytes)) else {
        return false;
    };
    let planar = matches!(
        d.find_tag_unsigned::<u16>(Tag::PlanarConfiguration),
        Ok(Some(2))
    );
    let tiled = matches!(d.find_tag(Tag::TileWidth), Ok(Some(_)));
    let samples = d
        .find_tag_unsigned::<u16>(Tag::SamplesPerPixel)
        .ok()
        .flatten()
        .unwrap_or(1);
    planar && tiled && samples > 1
}

/// Decode a tiled planar TIFF (see the module documentation). `max_alloc` bounds what
/// the `tiff` crate may allocate; the caller has checked the dimensions.
/// (The orientation is read by `crate::orientation::tiff`.)
pub fn decode(bytes: &[u8], max_alloc: u64) -> Result<DynamicImage, DecodeFailure> {
    let mut limits = Limits::default();
    let cap = usize::try_from(max_alloc).unwrap_or(usize::MAX);
    limits.decoding_buffer_size = cap;
    limits.intermediate_buffer_size = cap;
    limits.ifd_value_size = cap;
    let mut d = Decoder::new(Cursor::new(bytes))
        .map_err(tiff_error)?
        .with_limits(limits);
    let (w, h) = d.dimensions().map_err(tiff_error)?;
    let color = d.colortype().map_err(tiff_error)?;
    let (channels, depth) = match color {
        ColorType::GrayA(n) => (2usize, n),
        ColorType::RGB(n) => (3, n),
        ColorType::RGBA(n) => (4, n),
        other => (0, other.bit_depth()),
    };
    if channels == 0 || !(depth == 8 || depth == 16) {
        return Err(fail(
            Kind::Unsupported,
            format!(
                "TIFF: tiled images with separate planes are supported for 8/16-bit grey+alpha, \
                 RGB and RGBA, not {color:?}"
            ),
        ));
    }
    debug_assert_eq!(
        d.find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .ok()
            .flatten(),
        Some(PlanarConfiguration::Planar.to_u16())
    );
    let (tw, th) = d.chunk_dimensions();
    if tw == 0 || th == 0 {
        return Err(fail(Kind::Corrupt, "TIFF declares an empty tile"));
    }
    let across = w.div_ceil(tw) as usize;
    let down = h.div_ceil(th) as usize;
    let per_plane = across * down;
    let tiles = d.tile_count().map_err(tiff_error)? as usize;
    if tiles < per_plane * channels {
        return Err(fail(
            Kind::Corrupt,
            format!(
                "TIFF has {tiles} tiles, {} needed for {channels} planes of {w}×{h}",
                per_plane * channels
            ),
        ));
    }
    let (w, h) = (w as usize, h as usize);
    let mut out8 = Vec::new();
    let mut out16 = Vec::new();
    let len = w * h * channels;
    if depth == 8 {
        out8 = vec![0u8; len];
    } else {
        out16 = vec![0u16; len];
    }
    for plane in 0..channels {
        for t in 0..per_plane {
            let index = (plane * per_plane + t) as u32;
            // The dimensions the crate reads this chunk with (possibly the whole tile:
            // see the module documentation), and the part inside the image.
            let (cw, _) = d.chunk_data_dimensions(index);
            let (x0, y0) = ((t % across) * tw as usize, (t / across) * th as usize);
            let vw = (tw as usize).min(w - x0);
            let vh = (th as usize).min(h - y0);
            let cw = cw as usize;
            if cw < vw {
                return Err(fail(Kind::Corrupt, "TIFF tile is narrower than the image"));
            }
            let chunk = d.read_chunk(index).map_err(tiff_error)?;
            match chunk {
                DecodingResult::U8(v) if depth == 8 => {
                    scatter(&v, cw, vw, vh, x0, y0, w, channels, plane, &mut out8)?
                }
                DecodingResult::U16(v) if depth == 16 => {
                    scatter(&v, cw, vw, vh, x0, y0, w, channels, plane, &mut out16)?
                }
                _ => {
                    return Err(fail(
                        Kind::Unsupported,
                        "TIFF: tiled separate planes with non-integer samples are not supported",
                    ))
                }
            }
        }
    }
    let (w, h) = (w as u32, h as u32);
    let bad = || fail(Kind::Corrupt, "TIFF planes do not fill the image");
    let img = match (channels, depth) {
        (2, 8) => DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, out8).ok_or_else(bad)?),
        (3, 8) => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, out8).ok_or_else(bad)?),
        (4, 8) => DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, out8).ok_or_else(bad)?),
        (2, _) => DynamicImage::ImageLumaA16(ImageBuffer::from_raw(w, h, out16).ok_or_else(bad)?),
        (3, _) => DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, out16).ok_or_else(bad)?),
        _ => DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, out16).ok_or_else(bad)?),
    };
    Ok(img)
}

/// Copy the `vw × vh` visible part of one plane's tile (rows of `cw` samples) into
/// channel `plane` of the interleaved image `out` (`w` pixels wide).
#[allow(clippy::too_many_arguments)]
fn scatter<T: Copy>(
    tile: &[T],
    cw: usize,
    vw: usize,
    vh: usize,
    x0: usize,
    y0: usize,
    w: usize,
    channels: usize,
    plane: usize,
    out: &mut [T],
) -> Result<(), DecodeFailure> {
    if tile.len() < cw * vh {
        return Err(fail(Kind::Truncated, "TIFF tile is shorter than declared"));
    }
    for (r, row) in tile.chunks(cw).take(vh).enumerate() {
        let base = ((y0 + r) * w + x0) * channels + plane;
        for (c, &v) in row[..vw].iter().enumerate() {
            out[base + c * channels] = v;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A little-endian, uncompressed, tiled TIFF with separate planes: `planes` holds
    /// one `w × h` plane per sample (8 or 16 bits), tiles of `tw × th` (multiples of 16).
    pub(crate) fn tiled_planar_tiff(
        w: u32,
        h: u32,
        tw: u32,
        th: u32,
        bits: u16,
        planes: &[Vec<u16>],
    ) -> Vec<u8> {
        let samples = planes.len() as u16;
        let across = w.div_ceil(tw);
        let down = h.div_ceil(th);
        let bps = usize::from(bits / 8);
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        let mut counts = Vec::new();
        for plane in planes {
            for ty in 0..down {
                for tx in 0..across {
                    offsets.push(8 + data.len() as u32);
                    for y in 0..th {
                        for x in 0..tw {
                            let (px, py) = (tx * tw + x, ty * th + y);
                            let v = if px < w && py < h {
                                plane[(py * w + px) as usize]
                            } else {
                                0xABCD // padding: must never show
                            };
                            if bps == 1 {
                                data.push(v as u8);
                            } else {
                                data.extend_from_slice(&v.to_le_bytes());
                            }
                        }
                    }
                    counts.push(tw * th * bps as u32);
                }
            }
        }
        let mut out = b"II*\0".to_vec();
        let extra = 8 + data.len() as u32;
        // Arrays after the pixel data: BitsPerSample, TileOffsets, TileByteCounts, ExtraSamples.
        let bits_off = extra;
        let offs_off = bits_off + 2 * u32::from(samples);
        let counts_off = offs_off + 4 * offsets.len() as u32;
        let ifd_off = counts_off + 4 * counts.len() as u32;
        out.extend_from_slice(&ifd_off.to_le_bytes());
        out.extend_from_slice(&data);
        for _ in 0..samples {
            out.extend_from_slice(&bits.to_le_bytes());
        }
        for o in &offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        for c in &counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let photometric: u16 = if samples >= 3 { 2 } else { 1 };
        let alpha = samples == 2 || samples == 4;
        let mut entries: Vec<(u16, u16, u32, u32)> = vec![
            (256, 4, 1, w),
            (257, 4, 1, h),
            (258, 3, u32::from(samples), bits_off),
            (259, 3, 1, 1),
            (262, 3, 1, u32::from(photometric)),
            (277, 3, 1, u32::from(samples)),
            (284, 3, 1, 2),
            (322, 4, 1, tw),
            (323, 4, 1, th),
            (324, 4, offsets.len() as u32, offs_off),
            (325, 4, counts.len() as u32, counts_off),
        ];
        if alpha {
            entries.push((338, 3, 1, 2)); // unassociated alpha
        }
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, ty, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }

    fn plane(w: u32, h: u32, f: impl Fn(u32, u32) -> u16) -> Vec<u16> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect()
    }

    #[test]
    fn tiled_separate_planes_decode_to_the_right_pixels() {
        let (w, h) = (37, 21); // edge tiles on both sides
        let r = plane(w, h, |x, _| (x * 6) as u16);
        let g = plane(w, h, |_, y| (y * 11) as u16);
        let b = plane(w, h, |x, y| ((x + y) % 256) as u16);
        let bytes = tiled_planar_tiff(w, h, 16, 16, 8, &[r.clone(), g.clone(), b.clone()]);
        assert!(is_tiled_planar(&bytes));
        let img = decode(&bytes, 1 << 30).unwrap();
        let rgb = img.to_rgb8();
        for (x, y, p) in rgb.enumerate_pixels() {
            let i = (y * w + x) as usize;
            assert_eq!(p.0, [r[i] as u8, g[i] as u8, b[i] as u8], "({x},{y})");
        }
        // 16-bit RGBA
        let a = plane(w, h, |x, _| if x % 2 == 0 { 65535 } else { 0x8000 });
        let r16 = plane(w, h, |x, y| (x * 1000 + y) as u16);
        let bytes = tiled_planar_tiff(
            w,
            h,
            16,
            32,
            16,
            &[r16.clone(), r16.clone(), r16.clone(), a.clone()],
        );
        let img = decode(&bytes, 1 << 30).unwrap();
        let DynamicImage::ImageRgba16(img) = img else {
            panic!("expected RGBA16")
        };
        for (x, y, p) in img.enumerate_pixels() {
            let i = (y * w + x) as usize;
            assert_eq!(p.0, [r16[i], r16[i], r16[i], a[i]], "({x},{y})");
        }
    }

    #[test]
    fn chunky_and_striped_tiffs_are_not_taken_here() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(5, 5, image::Rgb([1u8, 2, 3])));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Tiff).unwrap();
        assert!(!is_tiled_planar(buf.get_ref()));
        assert!(!is_tiled_planar(b"II*\0garbage"));
    }
}
