//! Fuzz the public decode path on Gif inputs only (see `common/mod.rs`): inputs
//! without the Gif signature are rejected, so the corpus stays Gif.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::Gif.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
