//! The EXIF orientation of a JPEG, PNG, WebP or TIFF file, found where Pillow finds it
//! (the one orientation reader of the crate).
//!
//! Pillow's `ImageOps.exif_transpose` reads the orientation from `getexif()`: the
//! EXIF block of the file (JPEG `Exif` APP1 segments; PNG `eXIf` chunk wherever it is,
//! or a `Raw profile type exif` text chunk as ImageMagick writes it; WebP `EXIF` chunk;
//! a TIFF's own first IFD), with or without an `Exif\0\0` prefix, the entry read as
//! Pillow's `ImageFileDirectory_v2` reads it (any numeric type, first value; see
//! [`exif_tag`]) and — when that block has no orientation tag — from the XMP packet
//! (`tiff:Orientation="N"` or `<tiff:Orientation>N<`; JPEG `http://ns.adobe.com/xap/1.0/`
//! APP1 segment, PNG `XML:com.adobe.xmp` text chunk, WebP `XMP ` chunk, TIFF tag 700).
//! The `image` crate misses most of these, so the decoder reads the orientation here
//! instead, from the raw bytes.

use image::metadata::Orientation;

/// The orientation tag (0x0112) of IFD0 of an EXIF block (`Exif\0\0` prefix optional,
/// even twice, as Pillow allows): `Some(value)` when Pillow's `getexif()` has the tag,
/// `None` otherwise (then Pillow falls back to XMP). See [`orientation_value`].
pub fn exif_tag(exif: &[u8]) -> Option<u32> {
    // Pillow: `re.sub(b"^(Exif\x00\x00){1,2}", b"", data)`.
    let mut d = exif;
    for _ in 0..2 {
        d = d.strip_prefix(b"Exif\0\0").unwrap_or(d);
    }
    let t = Tiff::new(d).filter(|t| !t.big)?; // Pillow reads 8 header bytes only
    t.entry(t.first_ifd()?, 0x0112)
        .map(|(typ, data)| orientation_value(t.le, typ, data))
}

/// A TIFF structure (a TIFF file, or the body of an EXIF block), read like Pillow's
/// `ImageFileDirectory_v2`.
struct Tiff<'a> {
    d: &'a [u8],
    le: bool,
    big: bool,
}

impl<'a> Tiff<'a> {
    fn new(d: &'a [u8]) -> Option<Self> {
        let (le, big) = match d.get(..4)? {
            b"II*\0" => (true, false),
            b"MM\0*" => (false, false),
            b"II+\0" => (true, true),
            b"MM\0+" => (false, true),
            _ => return None,
        };
        Some(Tiff { d, le, big })
    }

    fn uint(&self, o: usize, n: usize) -> Option<u64> {
        uint(self.d, self.le, o, n)
    }

    /// The offset of IFD0.
    fn first_ifd(&self) -> Option<usize> {
        let off = if self.big {
            self.uint(8, 8)?
        } else {
            self.uint(4, 4)?
        };
        usize::try_from(off).ok()
    }

    /// The type and data of `tag` in the IFD at `ifd`, as Pillow loads it: the first
    /// entry with that tag whose type Pillow knows and whose data is there and not
    /// empty (Pillow skips the others; a truncated IFD keeps the entries before the cut;
    /// out-of-line data is skipped once the total of all out-of-line data read so far
    /// passes the length of the stream).
    fn entry(&self, ifd: usize, want: u16) -> Option<(u16, &'a [u8])> {
        let (count_len, entry_len, inline) = if self.big { (8, 20, 8) } else { (2, 12, 4) };
        let n = self.uint(ifd, count_len)?;
        let limit = self.d.len() as u64;
        let mut total = 0u64;
        let mut stored = std::collections::HashSet::new();
        for i in 0..n {
            let e = usize::try_from(i)
                .ok()?
                .checked_mul(entry_len)?
                .checked_add(ifd + count_len)?;
            let tag = self.uint(e, 2)? as u16;
            let typ = self.uint(e + 2, 2)? as u16;
            let count = self.uint(e + 4, inline)?;
            let value_at = e + 4 + inline;
            self.d.get(value_at..value_at + inline)?; // Pillow reads the whole entry
            if stored.contains(&tag) {
                continue;
            }
            let Some(unit) = unit_size(typ) else {
                continue;
            };
            let size = count.saturating_mul(unit);
            let data = if size > inline as u64 {
                let off = self.uint(value_at, inline)?;
                if off >= 1 << 63 {
                    continue;
                }
                total = total.saturating_add(size);
                if total > limit {
                    continue;
                }
                let end = off.saturating_add(size);
                if end > limit {
                    continue; // short read: Pillow skips the tag
                }
                &self.d[off as usize..end as usize]
            } else {
                &self.d[value_at..value_at + size as usize]
            };
            if data.is_empty() {
                continue;
            }
            if tag == want {
                return Some((typ, data));
            }
            stored.insert(tag);
        }
        None
    }
}

/// The `n`-byte unsigned integer at `o` of `d`.
fn uint(d: &[u8], le: bool, o: usize, n: usize) -> Option<u64> {
    let b = d.get(o..o.checked_add(n)?)?;
    let fold = |v: u64, &byte: &u8| (v << 8) | u64::from(byte);
    Some(if le {
        b.iter().rev().fold(0, fold)
    } else {
        b.iter().fold(0, fold)
    })
}

/// Bytes per value of a TIFF type Pillow loads (others are skipped).
fn unit_size(typ: u16) -> Option<u64> {
    Some(match typ {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 => 8,
        _ => return None,
    })
}

/// What Pillow's `exif_transpose` makes of an orientation entry: the first value when
/// the type is numeric and that value equals an integer (SHORT, LONG, their signed
/// forms, SBYTE, IFD, LONG8; FLOAT/DOUBLE/RATIONAL values such as `6.0` or `12/2`,
/// as Python's `{6: ...}.get(6.0)` matches). BYTE, UNDEFINED (Pillow keeps `bytes`),
/// ASCII (`str`), fractions and negative values never match a transform: 0.
fn orientation_value(le: bool, typ: u16, data: &[u8]) -> u32 {
    let u = |at: usize, n: usize| uint(data, le, at, n);
    let int = |v: i128| u32::try_from(v).unwrap_or(0);
    let float = |f: f64| {
        if f.is_finite() && f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) {
            f as u32
        } else {
            0
        }
    };
    let ratio = |num: i128, den: i128| {
        if den != 0 && num % den == 0 {
            int(num / den)
        } else {
            0
        }
    };
    let v = match typ {
        3 => u(0, 2).map(|v| int(v.into())),
        4 | 13 => u(0, 4).map(|v| int(v.into())),
        16 => u(0, 8).map(|v| int(v.into())),
        6 => u(0, 1).map(|v| int((v as u8 as i8).into())),
        8 => u(0, 2).map(|v| int((v as u16 as i16).into())),
        9 => u(0, 4).map(|v| int((v as u32 as i32).into())),
        11 => u(0, 4).map(|v| float(f32::from_bits(v as u32).into())),
        12 => u(0, 8).map(|v| float(f64::from_bits(v))),
        5 => u(0, 4).zip(u(4, 4)).map(|(n, d)| ratio(n.into(), d.into())),
        10 => u(0, 4)
            .zip(u(4, 4))
            .map(|(n, d)| ratio((n as u32 as i32).into(), (d as u32 as i32).into())),
        _ => None,
    };
    v.unwrap_or(0)
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
        // Pillow stores each chunk's value in `info` as it reads it: the last wins.
        match kind {
            b"eXIf" => exif = Some(data.to_vec()),
            b"tEXt" | b"zTXt" | b"iTXt" => {
                if kind == b"tEXt" {
                    // Pillow: a `tEXt` keyword `exif` sets `info["exif"]` (bytes) too.
                    exif = png_text(kind, data, b"exif").or(exif);
                }
                raw = png_text(kind, data, b"Raw profile type exif").or(raw);
                xmp = png_text(kind, data, b"XML:com.adobe.xmp").or(xmp);
            }
            b"IEND" => break,
            _ => {}
        }
        at = at.saturating_add(12).saturating_add(len);
    }
    pick(exif.or_else(|| raw.and_then(|t| raw_profile(&t))), xmp)
}

/// The orientation of a JPEG, as Pillow sees it, from its APP1 segments (in file
/// order): the EXIF block is the first `Exif\0\0` segment with the bodies of any later
/// ones appended (Pillow's `info["exif"] += s[6:]`), the XMP packet the last
/// `http://ns.adobe.com/xap/1.0/\0` segment.
pub fn jpeg<'a>(app1: impl IntoIterator<Item = &'a [u8]>) -> Orientation {
    const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
    let (mut exif, mut xmp): (Option<Vec<u8>>, _) = (None, None);
    for s in app1 {
        if s.starts_with(b"Exif\0\0") {
            match &mut exif {
                Some(e) => e.extend_from_slice(&s[6..]),
                None => exif = Some(s.to_vec()),
            }
        } else if let Some(x) = s.strip_prefix(XMP) {
            xmp = Some(x.to_vec());
        }
    }
    pick(exif, xmp)
}

/// The orientation of a TIFF file, as Pillow sees it: tag 0x0112 of the first IFD read
/// with the EXIF rules ([`exif_tag`]), else the XMP packet of tag 700 of that IFD.
pub fn tiff(bytes: &[u8]) -> Orientation {
    let Some(t) = Tiff::new(bytes) else {
        return Orientation::NoTransforms;
    };
    let Some(ifd) = t.first_ifd() else {
        return Orientation::NoTransforms;
    };
    let tag = t
        .entry(ifd, 0x0112)
        .map(|(typ, data)| orientation_value(t.le, typ, data))
        .or_else(|| t.entry(ifd, 700).and_then(|(_, xmp)| xmp_tag(xmp)));
    to_orientation(tag)
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

    /// A little-endian TIFF structure: header, IFD0 with `entries` (tag, type, count,
    /// 4 value bytes), then `tail` (at offset 8 + 2 + 12·n + 4).
    fn ifd0(entries: &[(u16, u16, u32, [u8; 4])], tail: &[u8]) -> Vec<u8> {
        let mut t = b"II*\0".to_vec();
        t.extend_from_slice(&8u32.to_le_bytes());
        t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in entries {
            t.extend_from_slice(&tag.to_le_bytes());
            t.extend_from_slice(&typ.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(value);
        }
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(tail);
        t
    }

    fn tail_at(n: usize) -> [u8; 4] {
        ((8 + 2 + 12 * n + 4) as u32).to_le_bytes()
    }

    #[test]
    fn orientation_entry_types_like_pillow() {
        let one =
            |typ: u16, count: u32, v: [u8; 4]| exif_tag(&ifd0(&[(0x112, typ, count, v)], &[]));
        // Pillow takes the first value of any numeric type.
        assert_eq!(one(3, 1, [6, 0, 0, 0]), Some(6), "SHORT");
        assert_eq!(one(3, 2, [6, 0, 0, 0]), Some(6), "SHORT, count 2");
        assert_eq!(one(3, 2, [0, 0, 6, 0]), Some(0), "SHORT, count 2, first 0");
        assert_eq!(one(4, 1, [6, 0, 0, 0]), Some(6), "LONG");
        assert_eq!(one(8, 1, [6, 0, 0, 0]), Some(6), "SSHORT");
        assert_eq!(one(8, 1, [0xFA, 0xFF, 0, 0]), Some(0), "SSHORT -6");
        assert_eq!(one(9, 1, [6, 0, 0, 0]), Some(6), "SLONG");
        assert_eq!(one(6, 1, [6, 0, 0, 0]), Some(6), "SBYTE");
        assert_eq!(one(13, 1, [6, 0, 0, 0]), Some(6), "IFD");
        assert_eq!(one(11, 1, 6.0f32.to_le_bytes()), Some(6), "FLOAT 6.0");
        assert_eq!(one(11, 1, 6.5f32.to_le_bytes()), Some(0), "FLOAT 6.5");
        // Pillow keeps BYTE / UNDEFINED as bytes and ASCII as str: never a transform,
        // but the tag is there (no XMP fallback).
        assert_eq!(one(1, 1, [6, 0, 0, 0]), Some(0), "BYTE");
        assert_eq!(one(7, 1, [6, 0, 0, 0]), Some(0), "UNDEFINED");
        assert_eq!(one(2, 2, *b"6\0\0\0"), Some(0), "ASCII");
        // No data, or a type Pillow does not know: no tag.
        assert_eq!(one(3, 0, [6, 0, 0, 0]), None, "count 0");
        assert_eq!(one(14, 1, [6, 0, 0, 0]), None, "type 14");
        // Out-of-line values: RATIONAL 12/2 == 6; DOUBLE; data past the end is skipped.
        let r = [12u32.to_le_bytes(), 2u32.to_le_bytes()].concat();
        assert_eq!(exif_tag(&ifd0(&[(0x112, 5, 1, tail_at(1))], &r)), Some(6));
        let r = [13u32.to_le_bytes(), 2u32.to_le_bytes()].concat();
        assert_eq!(exif_tag(&ifd0(&[(0x112, 5, 1, tail_at(1))], &r)), Some(0));
        let d = 8.0f64.to_le_bytes();
        assert_eq!(exif_tag(&ifd0(&[(0x112, 12, 1, tail_at(1))], &d)), Some(8));
        assert_eq!(
            exif_tag(&ifd0(&[(0x112, 12, 1, tail_at(1))], &d[..7])),
            None
        );
        // Duplicates: the first entry Pillow keeps wins; skipped ones do not count.
        let dup = |a: (u16, u32), b: (u16, u32)| {
            exif_tag(&ifd0(
                &[
                    (0x112, a.0, a.1, [3, 0, 0, 0]),
                    (0x112, b.0, b.1, [6, 0, 0, 0]),
                ],
                &[],
            ))
        };
        assert_eq!(dup((3, 1), (3, 1)), Some(3));
        assert_eq!(dup((3, 0), (3, 1)), Some(6));
        assert_eq!(dup((99, 1), (4, 1)), Some(6));
    }

    #[test]
    fn jpeg_exif_segments_and_xmp_like_pillow() {
        const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
        let app = |body: &[u8], prefix: &[u8]| [prefix, body].concat();
        let no_orientation = ifd0(&[(0x131, 2, 2, *b"x\0\0\0")], &[]);
        let o6 = ifd0(&[(0x112, 4, 1, [6, 0, 0, 0])], &[]);
        let o3 = ifd0(&[(0x112, 3, 1, [3, 0, 0, 0])], &[]);
        let x6 = br#"<x tiff:Orientation="6"/>"#.as_slice();
        let x8 = b"<tiff:Orientation>8</tiff:Orientation>".as_slice();
        let jpeg = |segs: &[Vec<u8>]| jpeg(segs.iter().map(|s| s.as_slice()));
        // LONG type (image's reader ignores it).
        assert_eq!(jpeg(&[app(&o6, b"Exif\0\0")]), Orientation::Rotate90);
        // Only the first Exif segment's IFD0 counts (later ones are appended to it).
        assert_eq!(
            jpeg(&[app(&no_orientation, b"Exif\0\0"), app(&o6, b"Exif\0\0")]),
            Orientation::NoTransforms
        );
        assert_eq!(
            jpeg(&[app(&o3, b"Exif\0\0"), app(&o6, b"Exif\0\0")]),
            Orientation::Rotate180
        );
        // XMP only, XMP when EXIF lacks the tag, the last XMP segment wins.
        assert_eq!(jpeg(&[app(x6, XMP)]), Orientation::Rotate90);
        assert_eq!(
            jpeg(&[app(&no_orientation, b"Exif\0\0"), app(x8, XMP)]),
            Orientation::Rotate270
        );
        assert_eq!(jpeg(&[app(x6, XMP), app(x8, XMP)]), Orientation::Rotate270);
        assert_eq!(
            jpeg(&[app(&o3, b"Exif\0\0"), app(x6, XMP)]),
            Orientation::Rotate180
        );
    }

    #[test]
    fn tiff_orientation_types_and_xmp_tag() {
        let tif = |entries: &[(u16, u16, u32, [u8; 4])], tail: &[u8]| tiff(&ifd0(entries, tail));
        assert_eq!(
            tif(&[(0x112, 8, 1, [6, 0, 0, 0])], &[]),
            Orientation::Rotate90
        );
        assert_eq!(
            tif(&[(0x112, 1, 1, [6, 0, 0, 0])], &[]),
            Orientation::NoTransforms
        );
        let xmp = br#"<x tiff:Orientation="6"/>"#;
        let n = xmp.len() as u32;
        assert_eq!(tif(&[(700, 1, n, tail_at(1))], xmp), Orientation::Rotate90);
        // The tag wins over XMP.
        assert_eq!(
            tif(&[(0x112, 3, 1, [1, 0, 0, 0]), (700, 7, n, tail_at(2))], xmp),
            Orientation::NoTransforms
        );
        assert_eq!(tiff(b"not a tiff"), Orientation::NoTransforms);
    }

    #[test]
    fn png_last_exif_chunk_wins() {
        let sig = b"\x89PNG\r\n\x1a\n".to_vec();
        let f = [
            sig,
            png_chunk(b"eXIf", &exif(6, false)),
            png_chunk(b"eXIf", &exif(3, true)),
            png_chunk(b"IEND", b""),
        ]
        .concat();
        assert_eq!(png(&f), Orientation::Rotate180);
    }
}
