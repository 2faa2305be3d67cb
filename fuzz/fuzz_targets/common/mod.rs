//! What every fuzz target checks: the public per-image path
//! (`_native::decode::preprocess_into`) returns `Ok` with values in [-1, 1], or a
//! `DecodeFailure` that renders as `"<kind>: <detail>"` and is *not* `internal`.
//!
//! `internal` is what a decoder panic caught by `catch_unwind` becomes: the batch
//! survives it, but it is still a bug to root-cause, so it fails the target here.
//! Escaping panics, aborts, timeouts and allocations above `-malloc_limit_mb` are
//! findings by themselves (libFuzzer).

use std::sync::OnceLock;

use _native::decode::{preprocess_into, DecodeOptions};

/// Small output and a 4 Mpx budget: fast executions, bounded memory. The environment
/// variable `FUZZ_MAX_PIXELS` lowers the budget for a faster run (a JPEG declaring
/// 4 Mpx is decoded whole, however little data follows: tens of ms per execution).
pub fn opts() -> &'static DecodeOptions {
    static OPTS: OnceLock<DecodeOptions> = OnceLock::new();
    OPTS.get_or_init(|| DecodeOptions {
        size: 16,
        max_pixels: std::env::var("FUZZ_MAX_PIXELS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4_000_000),
        max_bytes: 1 << 20,
        ..DecodeOptions::new(16)
    })
}

/// The formats, as `image::guess_format` recognises them by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
    Bmp,
    Tiff,
}

impl Format {
    /// Whether `data` starts with this format's signature.
    #[allow(dead_code)]
    pub fn matches(self, data: &[u8]) -> bool {
        match self {
            Format::Jpeg => data.starts_with(b"\xFF\xD8\xFF"),
            Format::Png => data.starts_with(b"\x89PNG\r\n\x1a\n"),
            Format::Gif => data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a"),
            Format::WebP => data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP",
            Format::Bmp => data.starts_with(b"BM"),
            Format::Tiff => [&b"II*\0"[..], b"MM\0*", b"II+\0", b"MM\0+"]
                .iter()
                .any(|m| data.starts_with(m)),
        }
    }
}

/// Run the public decode path on `data` and fail (panic → libFuzzer crash) on any
/// result that is not a clean success or a specific, non-internal error.
pub fn check(data: &[u8]) {
    let opts = opts();
    let mut out = vec![0f32; opts.tensor_len()];
    match preprocess_into(data, opts, &mut out) {
        Ok(()) => assert!(
            out.iter().all(|v| (-1.0..=1.0).contains(v)),
            "normalised values out of range"
        ),
        Err(e) => {
            let s = e.to_string();
            assert!(s.starts_with(e.kind.as_str()), "{s}");
            // A caught decoder panic: still a finding (compared by name so that
            // this builds with and without `Kind::Internal`).
            assert_ne!(e.kind.as_str(), "internal", "caught decoder panic: {s}");
        }
    }
}
