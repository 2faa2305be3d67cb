//! Palette TIFFs (PhotometricInterpretation 3), which the `tiff` crate refuses.
//!
//! Pillow opens an 8-bit one-sample palette TIFF as mode `P` with the palette
//! `ColorMap` (tag 320: all reds, then all greens, then all blues, 16-bit values)
//! scaled down as `v // 256`. Here the file is read as 8-bit grey — a copy whose
//! PhotometricInterpretation says BlackIsZero, so the indices come out unchanged — and
//! the indices are then looked up in that palette. Other palette depths (1, 2, 4 bits)
//! stay `unsupported`.

use std::io::Cursor;

use image::{DynamicImage, RgbImage};
use tiff::decoder::Decoder;
use tiff::tags::Tag;
use tiff::ColorType;

use crate::error::{DecodeErrorKind as Kind, DecodeFailure};

/// The RGB colour of each palette index.
pub type Palette = Vec<[u8; 3]>;

/// The offset of the inline value of IFD0's PhotometricInterpretation entry when it is
/// 3 (palette) in a classic TIFF, and the byte order.
fn palette_photometric(bytes: &[u8]) -> Option<(usize, bool)> {
    let le = match bytes.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(o..o.checked_add(2)?)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let b: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
    let ifd = if le {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    } as usize;
    let n = usize::from(u16_at(ifd)?);
    (0..n).find_map(|i| {
        let e = ifd.checked_add(2 + 12 * i)?;
        (u16_at(e)? == 262 && u16_at(e + 2)? == 3 && u16_at(e + 8)? == 3).then_some((e + 8, le))
    })
}

/// For an 8-bit one-sample palette TIFF: a copy that reads as 8-bit grey (the indices)
/// and the palette as Pillow builds it. `Ok(None)` for any other TIFF (left to the
/// `tiff` crate, which refuses other palette depths as unsupported).
pub fn as_grey(bytes: &[u8]) -> Result<Option<(Vec<u8>, Palette)>, DecodeFailure> {
    let Some((at, le)) = palette_photometric(bytes) else {
        return Ok(None);
    };
    let mut grey = bytes.to_vec();
    grey[at..at + 2].copy_from_slice(&if le {
        1u16.to_le_bytes()
    } else {
        1u16.to_be_bytes()
    });
    let Ok(mut d) = Decoder::new(Cursor::new(&grey[..])) else {
        return Ok(None); // the normal path reports the error
    };
    if !matches!(d.colortype(), Ok(ColorType::Gray(8))) {
        return Ok(None);
    }
    let map = d
        .get_tag_u16_vec(Tag::ColorMap)
        .map_err(|e| DecodeFailure::new(Kind::Corrupt, format!("TIFF palette: {e}")))?;
    if map.len() != 3 * 256 {
        return Err(DecodeFailure::new(
            Kind::Corrupt,
            format!(
                "TIFF ColorMap has {} values, 768 expected for 8-bit indices",
                map.len()
            ),
        ));
    }
    let hi = |v: u16| (v / 256) as u8;
    let palette = (0..256)
        .map(|i| [hi(map[i]), hi(map[256 + i]), hi(map[512 + i])])
        .collect();
    Ok(Some((grey, palette)))
}

/// The RGB image of the indices `img` (8-bit grey, from [`as_grey`]'s copy).
pub fn expand(img: &DynamicImage, palette: &Palette) -> RgbImage {
    let idx = img.to_luma8();
    RgbImage::from_fn(idx.width(), idx.height(), |x, y| {
        image::Rgb(palette[usize::from(idx.get_pixel(x, y).0[0])])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4×2 8-bit palette TIFF (little-endian, uncompressed, one strip).
    fn palette_tiff(colormap: &[u16]) -> Vec<u8> {
        let pixels: [u8; 8] = [0, 1, 2, 3, 255, 2, 1, 0];
        let n = 9u16;
        let ifd = 8u32;
        let after = ifd + 2 + 12 * u32::from(n) + 4;
        let map_at = after;
        let pix_at = map_at + 2 * colormap.len() as u32;
        let mut t = b"II*\0".to_vec();
        t.extend_from_slice(&ifd.to_le_bytes());
        t.extend_from_slice(&n.to_le_bytes());
        let mut entry = |tag: u16, typ: u16, count: u32, value: u32| {
            t.extend_from_slice(&tag.to_le_bytes());
            t.extend_from_slice(&typ.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(&value.to_le_bytes());
        };
        entry(256, 3, 1, 4); // width
        entry(257, 3, 1, 2); // height
        entry(258, 3, 1, 8); // bits per sample
        entry(259, 3, 1, 1); // no compression
        entry(262, 3, 1, 3); // palette
        entry(273, 4, 1, pix_at); // strip offset
        entry(278, 3, 1, 2); // rows per strip
        entry(279, 4, 1, 8); // strip byte count
        entry(320, 3, colormap.len() as u32, map_at);
        t.extend_from_slice(&0u32.to_le_bytes());
        for v in colormap {
            t.extend_from_slice(&v.to_le_bytes());
        }
        t.extend_from_slice(&pixels);
        t
    }

    #[test]
    fn palette_tiff_decodes_like_pillow() {
        // Index i: red 257·i + 255 (high byte i, or i + 1 rounded), green 65535 − 256·i, blue 0x80FF.
        let mut map = vec![0u16; 768];
        for i in 0..256 {
            map[i] = (257 * i as u32 + 255).min(65535) as u16;
            map[256 + i] = (65535 - 256 * i as u32) as u16;
            map[512 + i] = 0x80FF;
        }
        let bytes = palette_tiff(&map);
        let img =
            crate::decode::decode_rgb8(&bytes, &crate::decode::DecodeOptions::default()).unwrap();
        let want = |i: usize| [(map[i] / 256) as u8, (map[256 + i] / 256) as u8, 0x80];
        let got: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        let idx = [0, 1, 2, 3, 255, 2, 1, 0];
        assert_eq!(got, idx.iter().map(|&i| want(i)).collect::<Vec<_>>());
        // A short ColorMap is a specific error.
        let err = crate::decode::decode_rgb8(
            &palette_tiff(&map[..300]),
            &crate::decode::DecodeOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, Kind::Corrupt, "{err}");
    }
}
