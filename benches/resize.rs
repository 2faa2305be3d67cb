//! Pillow-exact bicubic resize of an RGB8 image to 224×224.
//!
//! * `100x100`: a real 100×100 sample photo (the size of the fruits360 images),
//!   i.e. an upscale;
//! * `1024x768`: a synthetic 1024×768 image (gradient plus deterministic noise),
//!   a downscale with wide filter supports.
//!
//! Throughput is in images.

mod common;

use std::hint::black_box;
use std::time::Duration;

use _native::decode::{decode_rgb8, DecodeOptions};
use _native::resize::resize_rgb8;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use image::{Rgb, RgbImage};

/// A `w × h` gradient with xorshift noise, so the resize does not see flat areas.
fn synthetic(w: u32, h: u32) -> RgbImage {
    let mut s: u32 = 0x9E37_79B9;
    RgbImage::from_fn(w, h, |x, y| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let n = (s & 0x3f) as u8;
        Rgb([
            ((x * 191 / w) as u8).wrapping_add(n),
            ((y * 191 / h) as u8).wrapping_add(n >> 1),
            (((x + y) * 127 / (w + h)) as u8).wrapping_add(n >> 2),
        ])
    })
}

fn bench_resize(c: &mut Criterion) {
    let first = &common::sample_jpegs()[0];
    let small = decode_rgb8(first, &DecodeOptions::new(224)).expect("sample decodes");
    let large = synthetic(1024, 768);

    let mut group = c.benchmark_group("resize");
    group.throughput(Throughput::Elements(1));
    for img in [&small, &large] {
        let id = BenchmarkId::new(
            "resize_rgb8_to_224",
            format!("{}x{}", img.width(), img.height()),
        );
        group.bench_with_input(id, img, |b, img| {
            b.iter(|| black_box(resize_rgb8(black_box(img), 224, 224)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_resize
}
criterion_main!(benches);
