//! fruitlens: encoded fruit photos → MobileNetV2 embeddings → PCA, as Arrow-batch
//! functions for PySpark executors.
//!
//! The core modules are plain Rust and never touch Python; the pyo3 binding layer lives
//! in `python/` (module `fruitlens._native`: `mod.rs` the wrappers, `arrow.rs` zero-copy
//! Arrow at the boundary, `errors.rs` the one mapping to `fruitlens._errors`) behind the
//! `python` feature, so `cargo test` needs no interpreter.
//!
//! * decoding: [`decode`] (format sniffing, limits, Pillow's pipeline up to the input
//!   tensor), [`jpeg`] (libjpeg-turbo), [`bmp`], [`gif_frame`], [`tiff_planar`],
//!   [`tiff_palette`] (where the `image` crate and Pillow differ), [`orientation`]
//!   (EXIF/XMP), [`resize`] (Pillow's bicubic), [`guard`] (decoder panics → per-row errors);
//! * inference: [`embed`] (ONNX Runtime, loaded at run time), [`process`] (per-process
//!   state across `fork`);
//! * PCA: [`pca`] (one-pass mergeable statistics, fit, projection), [`eigen`] (the
//!   leading eigenpairs);
//! * [`limits`] (argument bounds) and [`error`] (the one error type).

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
