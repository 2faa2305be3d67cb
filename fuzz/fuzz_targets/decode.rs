//! Fuzz the whole per-image path on any bytes: limits → sniffing → header → decode →
//! RGB8 → EXIF orientation → Pillow-exact bicubic resize → normalisation (see
//! `common/mod.rs` for what counts as a finding). The per-format targets (`jpeg`,
//! `png`, `gif`, `webp`, `bmp`, `tiff`) run the same check on one format each.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::check(data));
