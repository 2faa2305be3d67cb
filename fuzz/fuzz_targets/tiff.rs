//! Fuzz the public decode path on Tiff inputs only (see `common/mod.rs`): inputs
//! without the Tiff signature are rejected, so the corpus stays Tiff.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::Tiff.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
