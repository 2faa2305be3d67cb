//! fruitlens: encoded fruit photos → MobileNetV2 embeddings → PCA, as Arrow-batch
//! functions for PySpark executors.
//!
//! The core modules ([`decode`], [`resize`], [`embed`], [`pca`]) are plain Rust and
//! never touch Python; the pyo3 binding layer lives in `python/` behind the `python`
//! feature, so `cargo test` needs no interpreter.

pub mod bmp;
pub mod decode;
pub mod eigen;
pub mod embed;
pub mod error;
pub mod gif_frame;
pub mod guard;
pub mod jpeg;
pub mod limits;
pub mod orientation;
pub mod pca;
pub mod process;
pub mod resize;
pub mod tiff_palette;
pub mod tiff_planar;

#[cfg(feature = "python")]
mod python;

pub use error::{DecodeErrorKind, DecodeFailure, Error, Result};
