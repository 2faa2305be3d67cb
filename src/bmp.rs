//! BMP details where the `image` crate and Pillow part ways.
//!
//! * RLE4 / RLE8 bitmaps are decoded here, as Pillow's `BmpRleDecoder` does it: pixels
//!   that the stream skips (delta records, early end of line) are palette index 0,
//!   runs past the end of a row are cut, top-down RLE files are accepted, and a stream
//!   that ends before the bitmap is full is an error (Pillow: "not enough image
//!   data"). The `image` crate makes skipped pixels transparent (white, after
//!   compositing) and refuses some files Pillow reads.
//! * Alpha: Pillow keeps a BMP's alpha only for 32-bit BITFIELDS files whose masks
//!   name an alpha channel it knows; everywhere else (16-bit A1R5G5B5, …) the alpha
//!   bits are ignored. [`pillow_keeps_alpha`] says which.
//! * 16-bit pixels: Pillow scales 5/6-bit channels down (`v·255/31`), the `image` crate
//!   rounds; [`floor_16bit_like_pillow`] converts.

use image::RgbImage;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

fn fail(kind: Kind, detail: impl Into<String>) -> DecodeFailure {
    DecodeFailure::new(kind, detail)
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

const INFO_HEADERS: [u32; 6] = [40, 52, 56, 64, 108, 124];

/// The RLE compression of a BMP with a Windows info header: `Some(true)` for RLE4,
/// `Some(false)` for RLE8, `None` for anything else.
pub fn rle_kind(bytes: &[u8]) -> Option<bool> {
    if !INFO_HEADERS.contains(&u32_at(bytes, 14)?) {
        return None;
    }
    match u32_at(bytes, 30)? {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

/// Whether Pillow opens this BMP with an alpha channel (see the module documentation).
pub fn pillow_keeps_alpha(bytes: &[u8]) -> bool {
    let Some(header) = u32_at(bytes, 14) else {
        return false;
    };
    if !INFO_HEADERS.contains(&header) || header < 56 {
        return false;
    }
    if u16_at(bytes, 28) != Some(32) || u32_at(bytes, 30) != Some(3) {
        return false;
    }
    let masks = [54, 58, 62, 66].map(|o| u32_at(bytes, o));
    let Some(masks) = masks.into_iter().collect::<Option<Vec<u32>>>() else {
        return false;
    };
    [
        [0xFF00_0000, 0xFF_0000, 0xFF00, 0xFF],
        [0xFF, 0xFF00, 0xFF_0000, 0xFF00_0000],
        [0xFF_0000, 0xFF00, 0xFF, 0xFF00_0000],
        [0xFF00_0000, 0xFF00, 0xFF, 0xFF_0000],
        [0, 0, 0, 0],
    ]
    .iter()
    .any(|m| m[..] == masks[..])
}

/// The layout of a 16-bit BMP that Pillow decodes: `Some(true)` for 5-6-5 BITFIELDS,
/// `Some(false)` for 5-5-5 (uncompressed, or BITFIELDS with those masks); `None` for
/// anything else (other depths, other masks: Pillow refuses those).
pub fn sixteen_bit_565(bytes: &[u8]) -> Option<bool> {
    let header = u32_at(bytes, 14)?;
    if header == 12 {
        return (u16_at(bytes, 24)? == 16).then_some(false);
    }
    if !INFO_HEADERS.contains(&header) || u16_at(bytes, 28)? != 16 {
        return None;
    }
    match u32_at(bytes, 30)? {
        0 => Some(false),
        3 => match [54, 58, 62].map(|o| u32_at(bytes, o)) {
            [Some(0xF800), Some(0x7E0), Some(0x1F)] => Some(true),
            [Some(0x7C00), Some(0x3E0), Some(0x1F)] => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Rescale the channels of a 16-bit BMP decoded by the `image` crate, which rounds
/// (`round(v·255/31)`), to Pillow's `BGR;15` / `BGR;16` unpackers, which floor
/// (`v·255/31`, green of 5-6-5 `v·255/63`). Both scales are strictly increasing, so
/// the rounded value gives back `v`. Pillow ignores the alpha bit (A1R5G5B5).
pub fn floor_16bit_like_pillow(img: &mut RgbImage, is565: bool) {
    fn table(max: u32) -> [u8; 256] {
        let mut t = [0u8; 256];
        for v in 0..=max {
            let rounded = (2 * v * 255 + max) / (2 * max);
            t[rounded as usize] = (v * 255 / max) as u8;
        }
        t
    }
    let five = table(31);
    let green = if is565 { table(63) } else { five };
    for p in img.pixels_mut() {
        p.0 = [
            five[p.0[0] as usize],
            green[p.0[1] as usize],
            five[p.0[2] as usize],
        ];
    }
}

/// The BMP with its colour-plane count set to 1 when it says otherwise (Pillow ignores
/// the field, the `image` crate refuses the file); `None` when nothing needs fixing.
pub fn with_one_plane(bytes: &[u8]) -> Option<Vec<u8>> {
    let at = match u32_at(bytes, 14)? {
        12 => 22,
        h if INFO_HEADERS.contains(&h) => 26,
        _ => return None,
    };
    if u16_at(bytes, at)? == 1 {
        return None;
    }
    let mut fixed = bytes.to_vec();
    fixed[at..at + 2].copy_from_slice(&1u16.to_le_bytes());
    Some(fixed)
}

/// The header fields an RLE bitmap needs.
pub struct RleHeader {
    pub width: u32,
    pub height: u32,
    top_down: bool,
    rle4: bool,
    data_offset: usize,
    /// RGB of each palette entry.
    palette: Vec<[u8; 3]>,
}

/// Read an RLE bitmap's header and palette, as Pillow does.
pub fn rle_header(bytes: &[u8]) -> Result<RleHeader, DecodeFailure> {
    let corrupt = || fail(Kind::Truncated, "BMP header ends early");
    let header = u32_at(bytes, 14).ok_or_else(corrupt)? as usize;
    let rle4 = rle_kind(bytes).ok_or_else(|| fail(Kind::Unsupported, "BMP: not RLE"))?;
    let width = u32_at(bytes, 18).ok_or_else(corrupt)? as i32;
    let raw_height = u32_at(bytes, 22).ok_or_else(corrupt)?;
    let top_down = bytes.get(25) == Some(&0xFF);
    let height = if top_down {
        raw_height.wrapping_neg()
    } else {
        raw_height
    };
    let bits = u16_at(bytes, 28).ok_or_else(corrupt)?;
    if width <= 0 || height == 0 || height > i32::MAX as u32 {
        return Err(fail(
            Kind::Corrupt,
            format!(
                "BMP header declares an invalid size {width}×{}",
                height as i32
            ),
        ));
    }
    if !matches!(bits, 1 | 4 | 8) {
        return Err(fail(
            Kind::Unsupported,
            format!("BMP: RLE with {bits} bits per pixel is not supported"),
        ));
    }
    let mut colors = u32_at(bytes, 46).ok_or_else(corrupt)?;
    if colors == 0 {
        colors = 1 << bits;
    }
    if colors > 65536 {
        return Err(fail(
            Kind::Corrupt,
            format!("BMP declares a palette of {colors} colours"),
        ));
    }
    let palette_at = 14 + header;
    let mut data_offset = u32_at(bytes, 10).ok_or_else(corrupt)? as usize;
    if data_offset == palette_at {
        data_offset += 4 * colors as usize;
    }
    let raw = bytes
        .get(palette_at..palette_at + 4 * colors as usize)
        .ok_or_else(|| fail(Kind::Truncated, "BMP palette ends early"))?;
    let palette = raw.chunks_exact(4).map(|c| [c[2], c[1], c[0]]).collect();
    Ok(RleHeader {
        width: width as u32,
        height,
        top_down,
        rle4,
        data_offset,
        palette,
    })
}

/// Decode an RLE4 / RLE8 bitmap whose header is `h` to RGB, exactly as Pillow's
/// `BmpRleDecoder` followed by `convert("RGB")` (palette index 0 where the stream
/// skips pixels; indices past the palette are black).
pub fn decode_rle(bytes: &[u8], h: &RleHeader) -> Result<RgbImage, DecodeFailure> {
    let (w, rows) = (h.width as usize, h.height as usize);
    let dest = w * rows;
    let mut data: Vec<u8> = Vec::with_capacity(dest);
    let mut pos = h.data_offset;
    let mut x = 0usize;
    let read = |n: usize, pos: &mut usize| -> &[u8] {
        let start = (*pos).min(bytes.len());
        let end = start.saturating_add(n).min(bytes.len());
        *pos = start + (end - start);
        &bytes[start..end]
    };
    while data.len() < dest {
        let pair = read(2, &mut pos);
        if pair.len() < 2 {
            break;
        }
        let (count, byte) = (usize::from(pair[0]), pair[1]);
        if count > 0 {
            let n = if x + count > w {
                w.saturating_sub(x)
            } else {
                count
            };
            if h.rle4 {
                let (hi, lo) = (byte >> 4, byte & 0x0F);
                data.extend((0..n).map(|i| if i % 2 == 0 { hi } else { lo }));
            } else {
                data.extend(std::iter::repeat_n(byte, n));
            }
            x += n;
        } else {
            match byte {
                0 => {
                    while data.len() % w != 0 {
                        data.push(0);
                    }
                    x = 0;
                }
                1 => break,
                2 => {
                    let d = read(2, &mut pos);
                    if d.len() < 2 {
                        break;
                    }
                    let skip = (usize::from(d[0]) + usize::from(d[1]) * w).min(dest - data.len());
                    data.resize(data.len() + skip, 0);
                    x = data.len() % w;
                }
                n => {
                    let n = usize::from(n);
                    let count = n.min(dest - data.len());
                    let (byte_count, got) = if h.rle4 {
                        let byte_count = count.div_ceil(2);
                        let got = read(byte_count, &mut pos);
                        for (i, &b) in got.iter().enumerate() {
                            data.push(b >> 4);
                            if i * 2 + 1 < count {
                                data.push(b & 0x0F);
                            }
                        }
                        (byte_count, got.len())
                    } else {
                        let got = read(count, &mut pos);
                        data.extend_from_slice(got);
                        (count, got.len())
                    };
                    if got < byte_count || data.len() == dest {
                        break;
                    }
                    x += n;
                    // Runs are word-aligned in the file (Pillow: `fd.tell() % 2`).
                    if pos % 2 != 0 {
                        pos += 1;
                    }
                }
            }
        }
    }
    if data.len() < dest {
        return Err(fail(
            Kind::Truncated,
            format!(
                "BMP RLE data ends before the image is complete ({} of {dest} pixels)",
                data.len()
            ),
        ));
    }
    data.truncate(dest);
    let mut rgb = vec![0u8; dest * 3];
    for (r, row) in data.chunks_exact(w).enumerate() {
        // Bottom-up files store the last row first.
        let y = if h.top_down { r } else { rows - 1 - r };
        let out = &mut rgb[y * w * 3..(y + 1) * w * 3];
        for (o, &i) in out.chunks_exact_mut(3).zip(row) {
            o.copy_from_slice(&h.palette.get(usize::from(i)).copied().unwrap_or([0; 3]));
        }
    }
    Ok(RgbImage::from_raw(h.width, h.height, rgb).expect("buffer matches dimensions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bottom-up 16-bit BMP, one row of the given pixels; `masks` makes it BITFIELDS.
    fn bmp16(pixels: &[u16], masks: Option<[u32; 3]>) -> Vec<u8> {
        let mut data: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        data.resize(data.len().div_ceil(4) * 4, 0);
        let extra = if masks.is_some() { 12 } else { 0 };
        let off = 54 + extra;
        let mut b = b"BM".to_vec();
        for v in [
            (off + data.len()) as u32,
            0,
            off as u32,
            40,
            pixels.len() as u32,
            1,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        let compression: u32 = if masks.is_some() { 3 } else { 0 };
        for v in [compression, data.len() as u32, 0, 0, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for m in masks.into_iter().flatten() {
            b.extend_from_slice(&m.to_le_bytes());
        }
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn sixteen_bit_channels_are_floored_like_pillow() {
        let opts = crate::decode::DecodeOptions::default();
        // 5-5-5 (BI_RGB, alpha bit set: ignored): every level of every channel.
        let px: Vec<u16> = (0..32u16).map(|v| 0x8000 | v << 10 | v << 5 | v).collect();
        let bytes = bmp16(&px, None);
        assert_eq!(sixteen_bit_565(&bytes), Some(false));
        let img = crate::decode::decode_rgb8(&bytes, &opts).unwrap();
        for (v, p) in img.pixels().enumerate() {
            let f = (v * 255 / 31) as u8;
            assert_eq!(p.0, [f, f, f], "level {v}");
        }
        // 5-6-5 BITFIELDS.
        let px: Vec<u16> = (0..64u16)
            .map(|v| (v % 32) << 11 | v << 5 | (31 - v % 32))
            .collect();
        let bytes = bmp16(&px, Some([0xF800, 0x7E0, 0x1F]));
        assert_eq!(sixteen_bit_565(&bytes), Some(true));
        let img = crate::decode::decode_rgb8(&bytes, &opts).unwrap();
        for (v, p) in img.pixels().enumerate() {
            let want = [
                (v % 32 * 255 / 31) as u8,
                (v * 255 / 63) as u8,
                ((31 - v % 32) * 255 / 31) as u8,
            ];
            assert_eq!(p.0, want, "level {v}");
        }
        // Other masks: not a layout Pillow reads.
        assert_eq!(
            sixteen_bit_565(&bmp16(&px, Some([0x1F, 0x7E0, 0xF800]))),
            None
        );
    }

    /// An RLE8 bitmap (bottom-up unless `top_down`) with a 4-colour palette.
    pub(crate) fn rle8(w: i32, h: i32, top_down: bool, stream: &[u8]) -> Vec<u8> {
        let palette: [[u8; 4]; 4] = [
            [10, 20, 30, 0],
            [0, 0, 255, 0],
            [0, 255, 0, 0],
            [255, 0, 0, 0],
        ];
        let offset = 14 + 40 + 16;
        let mut b = b"BM".to_vec();
        b.extend_from_slice(&((offset + stream.len()) as u32).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&(offset as u32).to_le_bytes());
        b.extend_from_slice(&40u32.to_le_bytes());
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&(if top_down { -h } else { h }).to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&8u16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes()); // RLE8
        b.extend_from_slice(&(stream.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&4u32.to_le_bytes()); // colours used
        b.extend_from_slice(&[0; 4]);
        for p in palette {
            b.extend_from_slice(&p);
        }
        b.extend_from_slice(stream);
        b
    }

    #[test]
    fn skipped_pixels_are_palette_index_zero_like_pillow() {
        // Row 0 (bottom): 2 × index 1, then a delta of 1 right / 1 up; row 1: skipped
        // until x = 3, then 1 × index 3; end of bitmap right after (row 1 is full).
        let stream = [2, 1, 0, 2, 1, 1, 1, 3, 0, 1];
        let bytes = rle8(4, 2, false, &stream);
        assert_eq!(rle_kind(&bytes), Some(false));
        let h = rle_header(&bytes).unwrap();
        let img = decode_rle(&bytes, &h).unwrap();
        let bgr0 = [30, 20, 10];
        let px = |x, y| img.get_pixel(x, y).0;
        // bottom row (y = 1): index 1, 1, skipped, skipped
        assert_eq!(
            [px(0, 1), px(1, 1), px(2, 1), px(3, 1)],
            [[255, 0, 0], [255, 0, 0], bgr0, bgr0]
        );
        // top row (y = 0): skipped ×3, then index 3
        assert_eq!(
            [px(0, 0), px(1, 0), px(2, 0), px(3, 0)],
            [bgr0, bgr0, bgr0, [0, 0, 255]]
        );
    }

    #[test]
    fn top_down_runs_cut_at_the_row_end_and_short_streams_fail() {
        // 10 × index 2 on a 3-wide row is cut to 3; then end of line; 3 × index 1.
        let bytes = rle8(3, 2, true, &[10, 2, 0, 0, 3, 1, 0, 1]);
        let img = decode_rle(&bytes, &rle_header(&bytes).unwrap()).unwrap();
        assert!((0..3).all(|x| img.get_pixel(x, 0).0 == [0, 255, 0]));
        assert!((0..3).all(|x| img.get_pixel(x, 1).0 == [255, 0, 0]));
        // End of bitmap after one row: Pillow says "not enough image data".
        let bytes = rle8(3, 2, false, &[3, 1, 0, 1]);
        let err = decode_rle(&bytes, &rle_header(&bytes).unwrap()).unwrap_err();
        assert_eq!(err.kind, Kind::Truncated, "{err}");
    }

    #[test]
    fn absolute_runs_are_word_aligned() {
        // Absolute run of 3 indices (padded to 4 bytes), then 1 × index 3.
        let bytes = rle8(4, 1, false, &[0, 3, 1, 2, 3, 0, 1, 3, 0, 1]);
        let img = decode_rle(&bytes, &rle_header(&bytes).unwrap()).unwrap();
        let row: Vec<[u8; 3]> = (0..4).map(|x| img.get_pixel(x, 0).0).collect();
        assert_eq!(row, [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 255]]);
    }

    #[test]
    fn a_wrong_plane_count_is_ignored_like_pillow() {
        let mut bytes = rle8(2, 1, false, &[2, 1, 0, 1]);
        assert!(with_one_plane(&bytes).is_none());
        bytes[26] = 3;
        assert_eq!(u16_at(&with_one_plane(&bytes).unwrap(), 26), Some(1));
    }

    #[test]
    fn alpha_is_kept_only_where_pillow_keeps_it() {
        let mut b = vec![0u8; 70];
        b[14..18].copy_from_slice(&124u32.to_le_bytes());
        b[28..30].copy_from_slice(&32u16.to_le_bytes());
        b[30..34].copy_from_slice(&3u32.to_le_bytes());
        for (i, m) in [0xFF_0000u32, 0xFF00, 0xFF, 0xFF00_0000].iter().enumerate() {
            b[54 + 4 * i..58 + 4 * i].copy_from_slice(&m.to_le_bytes());
        }
        assert!(pillow_keeps_alpha(&b));
        b[28..30].copy_from_slice(&16u16.to_le_bytes());
        assert!(!pillow_keeps_alpha(&b), "16-bit alpha is ignored");
    }
}
