//! The EXIF orientation of a PNG or WebP file, found where Pillow finds it.
//!
//! Pillow's `ImageOps.exif_transpose` reads the orientation from `getexif()`: the
//! EXIF block of the file (PNG `eXIf` chunk wherever it is, or a `Raw profile type
//! exif` text chunk as ImageMagick writes it; WebP `EXIF` chunk), with or without an
//! `Exif\0\0` prefix, and — when that block has no orientation tag — from the XMP
//! packet (`tiff:Orientation="N"` or `<tiff:Orientation>N<`; PNG `XML:com.adobe.xmp`
//! text chunk, WebP `XMP ` chunk). The `image` crate misses the prefixed EXIF blocks,
//! `eXIf` after the pixel data, the text chunks and XMP, so the decoder reads the
//! orientation here instead, from the raw bytes.

use image::metadata::Orientation;

/// The orientation tag (0x0112) of IFD0 of an EXIF block (`Exif\0\0` prefix optional,
/// even twice, as Pillow allows):
/// `Some(value)` when the tag is there (whatever its value), `None` otherwise.
pub fn exif_tag(exif: &[u8]) -> Option<u32> {
    // Pillow: `re.sub(b"^(Exif\x00\x00){1,2}", b"", data)`.
    let mut d = exif;
    for _ in 0..2 {
        d = d.strip_prefix(b"Exif\0\0").unwrap_or(d);
    }
    let le = match d.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b: [u8; 2] = d.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = d.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let n = usize::from(u16_at(ifd)?);
    (0..n).find_map(|i| {
        let e = ifd.checked_add(2 + 12 * i)?;
        if u16_at(e)? != 0x0112 {
            return None;
        }
        match u16_at(e + 2)? {
            1 | 7 => d.get(e + 8).map(|&b| u32::from(b)),
            3 | 8 => u16_at(e + 8).map(u32::from),
            4 | 9 => u32_at(e + 8),
            _ => None,
        }
    })
}

/// The orientation in an XMP packet, as Pillow's `tiff:Orientation(="|>)([0-9])`.
pub fn xmp_tag(xmp: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"tiff:Orientation";
    let mut rest = xmp;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let after = &rest[at + KEY.len()..];
        let digit = match after {
            [b'=', b'"', d, ..] | [b'>', d, ..] if d.is_ascii_digit() => Some(u32::from(d - b'0')),
            _ => None,
        };
        if digit.is_some() {
            return digit;
        }
        rest = after;
    }
    None
}

/// What Pillow's `exif_transpose` does for a tag value (2–8 transform, others none).
fn to_orientation(tag: Option<u32>) -> Orientation {
    tag.and_then(|v| u8::try_from(v).ok())
        .and_then(Orientation::from_exif)
        .unwrap_or(Orientation::NoTransforms)
}

/// Pillow's rule: the EXIF tag if the EXIF block has one, else the XMP one.
fn pick(exif: Option<Vec<u8>>, xmp: Option<Vec<u8>>) -> Orientation {
    let tag = exif
        .as_deref()
        .and_then(exif_tag)
        .or_else(|| xmp.as_deref().and_then(xmp_tag));
    to_orientation(tag)
}

/// The EXIF block of a `Raw profile type exif` text value: a header line, the name,
/// the length, then hex digits (Pillow: `"".join(value.split("\n")[3:])`).
fn raw_profile(text: &[u8]) -> Option<Vec<u8>> {
    let hex: Vec<u8> = text
        .split(|&b| b == b'\n')
        .skip(3)
        .flatten()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, 1 << 20).ok()
}

/// The value of a PNG text chunk whose keyword is `key` (tEXt, zTXt or iTXt).
fn png_text(kind: &[u8], data: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let nul = data.iter().position(|&b| b == 0)?;
    if &data[..nul] != key {
        return None;
    }
    let rest = &data[nul + 1..];
    match kind {
        b"tEXt" => Some(rest.to_vec()),
        b"zTXt" => inflate(rest.get(1..)?),
        b"iTXt" => {
            let (&compressed, rest) = rest.split_first()?;
            let rest = rest.get(1..)?; // compression method
            let lang = rest.iter().position(|&b| b == 0)?;
            let rest = &rest[lang + 1..];
            let tkey = rest.iter().position(|&b| b == 0)?;
            let text = &rest[tkey + 1..];
            if compressed == 1 {
                inflate(text)
            } else {
                Some(text.to_vec())
            }
        }
        _ => None,
    }
}

/// The orientation of a PNG, as Pillow sees it (see the module documentation).
pub fn png(bytes: &[u8]) -> Orientation {
    let (mut exif, mut raw, mut xmp) = (None, None, None);
    let mut at = 8;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let kind = &head[4..8];
        let Some(data) = bytes.get(at + 8..at.saturating_add(8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"eXIf" if exif.is_none() => exif = Some(data.to_vec()),
            b"tEXt" | b"zTXt" | b"iTXt" => {
                if raw.is_none() {
                    raw = png_text(kind, data, b"Raw profile type exif")
                        .and_then(|t| raw_profile(&t));
                }
                if xmp.is_none() {
                    xmp = png_text(kind, data, b"XML:com.adobe.xmp");
                }
            }
            b"IEND" => break,
            _ => {}
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    pick(exif.or(raw), xmp)
}

/// The orientation of a WebP, as Pillow sees it (see the module documentation).
pub fn webp(bytes: &[u8]) -> Orientation {
    let (mut exif, mut xmp) = (None, None);
    let mut at = 12;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        let Some(data) = bytes.get(at + 8..at.saturating_add(8).saturating_add(len)) else {
            break;
        };
        match &head[..4] {
            b"EXIF" if exif.is_none() => exif = Some(data.to_vec()),
            b"XMP " if xmp.is_none() => xmp = Some(data.to_vec()),
            _ => {}
        }
        at = at
            .saturating_add(8)
            .saturating_add(len)
            .saturating_add(len & 1);
    }
    pick(exif, xmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exif(orientation: u16, big_endian: bool) -> Vec<u8> {
        let mut e: Vec<u8> = if big_endian {
            b"MM\0*".to_vec()
        } else {
            b"II*\0".to_vec()
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        e.extend_from_slice(&w32(8));
        e.extend_from_slice(&w16(1));
        e.extend_from_slice(&w16(0x0112));
        e.extend_from_slice(&w16(3));
        e.extend_from_slice(&w32(1));
        e.extend_from_slice(&w16(orientation));
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&w32(0));
        e
    }

    #[test]
    fn exif_with_and_without_prefix_in_both_byte_orders() {
        for be in [false, true] {
            let raw = exif(6, be);
            assert_eq!(exif_tag(&raw), Some(6));
            assert_eq!(exif_tag(&[b"Exif\0\0".as_slice(), &raw].concat()), Some(6));
            let twice = [b"Exif\0\0Exif\0\0".as_slice(), &raw].concat();
            assert_eq!(exif_tag(&twice), Some(6));
        }
        assert_eq!(exif_tag(b"junk"), None);
        assert_eq!(exif_tag(b"II*\0\xff\xff\xff\xff"), None);
    }

    #[test]
    fn xmp_like_pillow() {
        assert_eq!(xmp_tag(br#"<x tiff:Orientation="3"/>"#), Some(3));
        assert_eq!(xmp_tag(b"<tiff:Orientation>8</tiff:Orientation>"), Some(8));
        assert_eq!(
            xmp_tag(b"tiff:Orientation=\"x\" tiff:Orientation>5<"),
            Some(5)
        );
        assert_eq!(xmp_tag(b"nothing"), None);
    }

    fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (kind, data) in chunks {
            body.extend_from_slice(*kind);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        [
            b"RIFF".as_slice(),
            &(body.len() as u32).to_le_bytes(),
            &body,
        ]
        .concat()
    }

    #[test]
    fn webp_exif_prefixed_after_the_image_and_xmp_fallback() {
        let prefixed = [b"Exif\0\0".as_slice(), &exif(3, false)].concat();
        let f = riff(&[
            (b"VP8X", vec![0; 10]),
            (b"VP8L", vec![1, 2, 3]),
            (b"EXIF", prefixed),
        ]);
        assert_eq!(webp(&f), Orientation::Rotate180);
        let f = riff(&[
            (b"VP8L", vec![1]),
            (b"XMP ", br#"tiff:Orientation="6""#.to_vec()),
        ]);
        assert_eq!(webp(&f), Orientation::Rotate90);
        // An EXIF orientation wins over XMP, even when it is 1.
        let f = riff(&[
            (b"EXIF", exif(1, true)),
            (b"XMP ", br#"tiff:Orientation="6""#.to_vec()),
        ]);
        assert_eq!(webp(&f), Orientation::NoTransforms);
    }

    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]); // CRC is not checked here
        c
    }

    #[test]
    fn png_exif_after_idat_raw_profile_and_xmp() {
        let sig = b"\x89PNG\r\n\x1a\n".to_vec();
        let f = [
            sig.clone(),
            png_chunk(b"IDAT", b"x"),
            png_chunk(b"eXIf", &exif(8, false)),
            png_chunk(b"IEND", b""),
        ]
        .concat();
        assert_eq!(png(&f), Orientation::Rotate270);
        let hex: String = [b"Exif\0\0".as_slice(), &exif(5, true)]
            .concat()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let text = format!(
            "Raw profile type exif\0\nexif\n      {}\n{hex}\n",
            hex.len() / 2
        );
        let f = [sig.clone(), png_chunk(b"tEXt", text.as_bytes())].concat();
        assert_eq!(png(&f), Orientation::Rotate90FlipH);
        let z = miniz_oxide::deflate::compress_to_vec_zlib(br#"<tiff:Orientation>4<"#, 6);
        let itxt = [b"XML:com.adobe.xmp\0\x01\0\0\0".as_slice(), &z].concat();
        let f = [sig, png_chunk(b"iTXt", &itxt)].concat();
        assert_eq!(png(&f), Orientation::FlipVertical);
    }
}
