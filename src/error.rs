//! The one error type of the fruitlens core.

use std::fmt;

/// Why one image could not be turned into a tensor.
///
/// A per-image failure never aborts a batch: it becomes that row's `error` value,
/// rendered as `"<kind>: <detail>"` so that users can group and filter on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeErrorKind {
    /// The row holds no value (Arrow null).
    Null,
    /// The row holds zero bytes.
    Empty,
    /// The encoded image is larger than the configured byte limit.
    TooManyBytes,
    /// The bytes are not one of the supported image formats.
    UnknownFormat,
    /// The header declares more pixels than the configured pixel budget.
    TooManyPixels,
    /// The header is readable but the image uses a feature we do not support.
    Unsupported,
    /// The image ends before its data is complete.
    Truncated,
    /// The image data is damaged.
    Corrupt,
    /// A decoder failed unexpectedly (a caught panic): a bug to report, not a property
    /// of the image. The detail names the format and the panic message.
    Internal,
}

impl DecodeErrorKind {
    /// The stable, machine-readable name of the kind (the prefix of the error value).
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::Null => "null",
            DecodeErrorKind::Empty => "empty",
            DecodeErrorKind::TooManyBytes => "too_many_bytes",
            DecodeErrorKind::UnknownFormat => "unknown_format",
            DecodeErrorKind::TooManyPixels => "too_many_pixels",
            DecodeErrorKind::Unsupported => "unsupported",
            DecodeErrorKind::Truncated => "truncated",
            DecodeErrorKind::Corrupt => "corrupt",
            DecodeErrorKind::Internal => "internal",
        }
    }
}

/// One image's decode failure: a kind and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    pub kind: DecodeErrorKind,
    pub detail: String,
}

impl DecodeFailure {
    pub fn new(kind: DecodeErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for DecodeFailure {}

/// Every error the fruitlens core can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image could not be decoded (only raised where a single image is asked for;
    /// batch functions turn it into a per-row error value).
    #[error("{0}")]
    Decode(#[from] DecodeFailure),
    /// The ONNX Runtime shared library is missing or cannot be loaded.
    #[error("{0}")]
    RuntimeNotFound(String),
    /// The model file is missing, unreadable or has the wrong inputs/outputs.
    #[error("{0}")]
    Model(String),
    /// ONNX Runtime failed while running a batch.
    #[error("inference failed: {0}")]
    Inference(String),
    /// PCA was given inconsistent data or parameters.
    #[error("{0}")]
    Pca(String),
    /// A caller passed an argument outside its domain.
    #[error("{0}")]
    InvalidArgument(String),
    /// fruitlens failed unexpectedly (a caught panic outside the per-image decode): a
    /// bug to report.
    #[error("internal error: fruitlens failed unexpectedly ({0}); please report it")]
    Internal(String),
    /// A buffer the arguments call for cannot be allocated.
    #[error("{0}")]
    OutOfMemory(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
