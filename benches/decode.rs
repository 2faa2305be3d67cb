//! JPEG bytes → 224×224 model input, on the first 64 images of the shared sample.
//!
//! * `decode_rgb8`: decode only (full-size RGB8, no resize);
//! * `preprocess_into`: the per-image full path of `decode_batch` (decode, Pillow
//!   bicubic resize to 224×224, `x / 127.5 - 1`), one image after another;
//! * `decode_batch`: the 64 images as one batch on the global rayon pool.
//!
//! Throughput is in images.

mod common;

use std::hint::black_box;
use std::time::Duration;

use _native::decode::{decode_batch, decode_rgb8, preprocess_into, DecodeOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_decode(c: &mut Criterion) {
    let images = common::sample_jpegs();
    let opts = DecodeOptions::new(224);
    let len = opts.tensor_len();
    let n = images.len();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(n as u64));

    group.bench_function("decode_rgb8/64", |b| {
        b.iter(|| {
            for bytes in &images {
                black_box(decode_rgb8(black_box(bytes), &opts).expect("sample decodes"));
            }
        })
    });

    let mut out = vec![0.0f32; len];
    group.bench_function("preprocess_into_224/64", |b| {
        b.iter(|| {
            for bytes in &images {
                preprocess_into(black_box(bytes), &opts, &mut out).expect("sample decodes");
                black_box(&out);
            }
        })
    });

    let inputs: Vec<Option<&[u8]>> = images.iter().map(|b| Some(b.as_slice())).collect();
    let mut batch_out = vec![0.0f32; n * len];
    group.bench_function("decode_batch_224/64", |b| {
        b.iter(|| {
            let failures = decode_batch(black_box(&inputs), &opts, &mut batch_out);
            assert!(failures.iter().all(Option::is_none), "sample decodes");
            black_box(&batch_out);
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    targets = bench_decode
}
criterion_main!(benches);
