//! PCA statistics on 1280-dimensional rows (MobileNetV2 embeddings).
//!
//! * `update/256x1280`: `PcaStats::update` with one 256 × 1280 `f32` block
//!   (throughput in rows);
//! * `fit/1280_k85`: `PcaModel::fit` with `KSpec::Count(85)` on statistics of
//!   4,096 rows (one eigendecomposition of the 1280 × 1280 covariance);
//! * `transform/256x1280_k85`: `PcaModel::transform` of the 256-row block
//!   (throughput in rows).

use std::hint::black_box;
use std::time::Duration;

use _native::pca::{KSpec, PcaModel, PcaStats};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const DIM: usize = 1280;
const ROWS: usize = 256;
const K: usize = 85;

/// `n × d` row-major pseudo-random data (64-bit LCG), with correlated columns of
/// decreasing scale so the covariance has a spread-out spectrum.
fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let base = [next(), next(), next()];
        for c in 0..d {
            let shared = base[c % 3] * (d - c) as f64 / d as f64;
            out.push((1.0 + shared + next() / (c + 1) as f64) as f32);
        }
    }
    out
}

fn bench_pca(c: &mut Criterion) {
    let block = data(ROWS, DIM, 1);

    let mut group = c.benchmark_group("pca_stats");

    group.throughput(Throughput::Elements(ROWS as u64));
    let mut stats = PcaStats::new(DIM);
    group.bench_function("update/256x1280", |b| {
        b.iter(|| stats.update(black_box(&block)).expect("valid rows"))
    });

    let mut fit_stats = PcaStats::new(DIM);
    for seed in 0..16 {
        fit_stats
            .update(&data(ROWS, DIM, 100 + seed))
            .expect("valid rows");
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("fit/1280_k85", |b| {
        b.iter(|| PcaModel::fit(black_box(&fit_stats), KSpec::Count(K)).expect("fit"))
    });

    let model = PcaModel::fit(&fit_stats, KSpec::Count(K)).expect("fit");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("transform/256x1280_k85", |b| {
        b.iter(|| model.transform(black_box(&block)).expect("transform"))
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_pca
}
criterion_main!(benches);
