//! Shared set-up for the criterion benchmarks: the sample JPEGs they run on.

use std::path::{Path, PathBuf};

/// How many sample images the benchmarks load.
pub const SAMPLE_IMAGES: usize = 64;

/// The sample data set: `$FRUITLENS_BENCH_IMAGES`, or `../shared/data/fruits360-sample`
/// beside the repository.
pub fn sample_dir() -> PathBuf {
    std::env::var_os("FRUITLENS_BENCH_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fruits360-sample")
        })
}

fn collect_jpegs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect_jpegs(&path, out);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        {
            out.push(path);
        }
    }
}

/// The encoded bytes of the first [`SAMPLE_IMAGES`] JPEGs of the sample data set (in
/// sorted path order, so every run measures the same files). Panics with a clear
/// message when the data set is missing or too small.
pub fn sample_jpegs() -> Vec<Vec<u8>> {
    let dir = sample_dir();
    assert!(
        dir.is_dir(),
        "benchmark images not found: {} does not exist (it is the shared fruits360 \
         sample; set FRUITLENS_BENCH_IMAGES to a folder of JPEGs to use another)",
        dir.display()
    );
    let mut paths = Vec::new();
    collect_jpegs(&dir, &mut paths);
    paths.sort();
    assert!(
        paths.len() >= SAMPLE_IMAGES,
        "benchmark images: {} holds {} JPEGs, {SAMPLE_IMAGES} are needed",
        dir.display(),
        paths.len()
    );
    paths
        .iter()
        .take(SAMPLE_IMAGES)
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display())))
        .collect()
}
