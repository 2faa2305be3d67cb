//! Fuzz the EXIF/orientation path: the input is an EXIF payload (a TIFF-structured
//! block, `II*\0…`/`MM\0*…`) that the target wraps, according to its first byte, into
//! a small valid JPEG (APP1 `Exif\0\0`), PNG (`eXIf` chunk) or WebP (VP8X + `EXIF`
//! chunk), then runs the public decode path (see `common/mod.rs`). The pixels stay
//! valid, so the fuzzer spends its time in EXIF parsing and orientation.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::io::Cursor;
use std::sync::OnceLock;

use image::{DynamicImage, ImageFormat, RgbImage};
use libfuzzer_sys::fuzz_target;

/// 12×8 (not square, so that every orientation changes the result).
fn base(format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(12, 8, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 99]));
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

struct Bases {
    jpeg: Vec<u8>,
    png: Vec<u8>,
    webp: Vec<u8>,
}

fn bases() -> &'static Bases {
    static B: OnceLock<Bases> = OnceLock::new();
    B.get_or_init(|| Bases {
        jpeg: base(ImageFormat::Jpeg),
        png: base(ImageFormat::Png),
        webp: base(ImageFormat::WebP),
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// JPEG: SOI, APP1 `Exif\0\0` + payload, then the rest of the base JPEG.
fn jpeg(exif: &[u8]) -> Vec<u8> {
    let base = &bases().jpeg;
    let exif = &exif[..exif.len().min(0xFFFF - 8)];
    let mut out = base[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((exif.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(exif);
    out.extend_from_slice(&base[2..]);
    out
}

/// PNG: signature + IHDR, an `eXIf` chunk, then the rest of the base PNG.
fn png(exif: &[u8]) -> Vec<u8> {
    let base = &bases().png;
    let after_ihdr = 8 + 8 + 13 + 4;
    let mut out = base[..after_ihdr].to_vec();
    let mut chunk = b"eXIf".to_vec();
    chunk.extend_from_slice(exif);
    out.extend_from_slice(&(exif.len() as u32).to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out.extend_from_slice(&base[after_ihdr..]);
    out
}

/// WebP: RIFF/WEBP with a VP8X header (EXIF flag), the base's VP8L chunk, `EXIF`.
fn webp(exif: &[u8]) -> Vec<u8> {
    let base = &bases().webp;
    let vp8l = &base[12..];
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(b"VP8X");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(&[0x08, 0, 0, 0]);
    body.extend_from_slice(&(12u32 - 1).to_le_bytes()[..3]);
    body.extend_from_slice(&(8u32 - 1).to_le_bytes()[..3]);
    body.extend_from_slice(vp8l);
    body.extend_from_slice(b"EXIF");
    body.extend_from_slice(&(exif.len() as u32).to_le_bytes());
    body.extend_from_slice(exif);
    if exif.len() % 2 == 1 {
        body.push(0);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, exif)) = data.split_first() else {
        return;
    };
    let bytes = match which % 3 {
        0 => jpeg(exif),
        1 => png(exif),
        _ => webp(exif),
    };
    common::check(&bytes);
});
