//! Fuzz the public decode path on Png inputs only (see `common/mod.rs`): inputs
//! without the Png signature are rejected, so the corpus stays Png.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::Png.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
