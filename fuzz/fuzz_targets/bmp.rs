//! Fuzz the public decode path on Bmp inputs only (see `common/mod.rs`): inputs
//! without the Bmp signature are rejected, so the corpus stays Bmp.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::Bmp.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
