//! Bounds on the arguments of the public API, checked before any work starts.
//!
//! An out-of-range size, thread count or dimension is refused with an
//! [`Error::InvalidArgument`] that states the limit, instead of a huge allocation
//! (which aborts the process), thousands of threads (which crash ONNX Runtime) or a
//! panic. The Python layer exposes the same constants (`fruitlens._native.MAX_SIZE`,
//! `MAX_THREADS`, `MAX_PCA_DIM`) so that its argument parsers use this one rule.

use crate::error::{Error, Result};

/// Largest model input side S (the tensor is S×S×3; 4096 is ~200 MB per image as
/// `f32`, far above any image model's input).
pub const MAX_SIZE: u32 = 4096;

/// Largest PCA dimension: the statistics hold a `dim × dim` `f64` matrix (2 GiB at
/// 16384; MobileNetV2 features have 1280 or 1024 values).
pub const MAX_PCA_DIM: usize = 16384;

/// Threads per process are limited to this many per CPU …
pub const THREADS_PER_CPU: usize = 4;
/// … and to this many in all.
pub const MAX_THREADS_CAP: usize = 256;

/// Largest accepted thread count on this machine: 4 per CPU, at least 8, at most 256.
pub fn max_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    cpus.saturating_mul(THREADS_PER_CPU)
        .clamp(8, MAX_THREADS_CAP)
}

/// Check a model input / output side length.
pub fn check_size(size: u32) -> Result<u32> {
    if size == 0 || size > MAX_SIZE {
        return Err(Error::InvalidArgument(format!(
            "size must be between 1 and {MAX_SIZE}, got {size}"
        )));
    }
    Ok(size)
}

/// Check a thread count (`0` is refused: callers map "not given" to a default first).
pub fn check_threads(threads: usize) -> Result<usize> {
    let max = max_threads();
    if threads == 0 || threads > max {
        return Err(Error::InvalidArgument(format!(
            "threads must be between 1 and {max} ({THREADS_PER_CPU} per CPU, at most \
             {MAX_THREADS_CAP}), got {threads}"
        )));
    }
    Ok(threads)
}

/// Check a PCA dimension.
pub fn check_pca_dim(dim: usize) -> Result<usize> {
    if dim == 0 || dim > MAX_PCA_DIM {
        return Err(Error::InvalidArgument(format!(
            "the PCA dimension must be between 1 and {MAX_PCA_DIM}, got {dim}"
        )));
    }
    Ok(dim)
}

/// A zeroed `Vec<f32>` of `len` values, or an error (not an abort) when the memory
/// cannot be had. `what` names the buffer in the message.
pub fn zeroed_f32(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::OutOfMemory(format!(
            "could not allocate {:.1} GiB for {what}; use a smaller batch or size",
            len as f64 * 4.0 / f64::from(1u32 << 30)
        ))
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_say_what_they_allow() {
        assert_eq!(check_size(224).unwrap(), 224);
        assert_eq!(check_size(MAX_SIZE).unwrap(), MAX_SIZE);
        for bad in [0, MAX_SIZE + 1, 100_000] {
            let e = check_size(bad).unwrap_err().to_string();
            assert!(e.contains("between 1 and 4096"), "{e}");
        }
        assert!(max_threads() >= 8 && max_threads() <= MAX_THREADS_CAP);
        assert_eq!(check_threads(1).unwrap(), 1);
        assert!(check_threads(max_threads()).is_ok());
        for bad in [0, max_threads() + 1, 100_000] {
            let e = check_threads(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("between 1 and {}", max_threads())),
                "{e}"
            );
        }
        assert!(check_pca_dim(1280).is_ok());
        let e = check_pca_dim(10_000_000).unwrap_err().to_string();
        assert!(e.contains("16384"), "{e}");
        assert!(check_pca_dim(0).is_err());
    }

    #[test]
    fn impossible_allocations_are_errors() {
        let e = zeroed_f32(usize::MAX / 2, "the test").unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(_)), "{e}");
        assert_eq!(zeroed_f32(3, "x").unwrap(), vec![0.0; 3]);
    }
}
