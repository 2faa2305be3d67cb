//! Fuzz the public decode path on Jpeg inputs only (see `common/mod.rs`): inputs
//! without the Jpeg signature are rejected, so the corpus stays Jpeg.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::Jpeg.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
