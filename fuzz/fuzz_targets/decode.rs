//! Fuzz the whole per-image path: limits → sniffing → header → decode → RGB8 →
//! EXIF orientation → Pillow-exact bicubic resize → normalisation.
//!
//! Small output size and a modest pixel budget keep each execution fast and the
//! memory bounded; any panic, abort, hang or out-of-memory is a bug (every bad
//! input must come back as a `DecodeFailure`).
#![no_main]

use _native::decode::{preprocess_into, DecodeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        size: 16,
        max_pixels: 4_000_000,
        max_bytes: 1 << 20,
    };
    let mut out = vec![0f32; opts.tensor_len()];
    match preprocess_into(data, &opts, &mut out) {
        Ok(()) => assert!(
            out.iter().all(|v| (-1.0..=1.0).contains(v)),
            "normalised values out of range"
        ),
        Err(e) => {
            // Every failure renders as "<kind>: <detail>".
            let s = e.to_string();
            assert!(s.starts_with(e.kind.as_str()), "{s}");
        }
    }
});
