//! Fuzz the public decode path on WebP inputs only (see `common/mod.rs`): inputs
//! without the WebP signature are rejected, so the corpus stays WebP.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Format;
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if !Format::WebP.matches(data) {
        return Corpus::Reject;
    }
    common::check(data);
    Corpus::Keep
});
