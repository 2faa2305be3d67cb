//! The one mapping from the core's [`Error`] to Python exceptions.
//!
//! The exception classes are defined in Python (`fruitlens._errors`) so that users can
//! import, subclass and catch them like any other; pyo3's `import_exception!` binds
//! them here (as Daft does). [`check_imported`] runs when `fruitlens._native` is
//! imported: a missing or broken class then fails that import with a clear message,
//! instead of a panic the first time an error is raised.

use pyo3::exceptions::{PyImportError, PyMemoryError, PyOSError, PyValueError};
use pyo3::import_exception;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyTypeInfo;

use crate::error::Error;

import_exception!(fruitlens._errors, DecodeError);
import_exception!(fruitlens._errors, RuntimeNotFoundError);
import_exception!(fruitlens._errors, ModelError);
import_exception!(fruitlens._errors, InferenceError);
import_exception!(fruitlens._errors, PCAError);
import_exception!(fruitlens._errors, InternalError);

/// The classes above, by name, for [`check_imported`].
const CLASSES: [&str; 6] = [
    "DecodeError",
    "RuntimeNotFoundError",
    "ModelError",
    "InferenceError",
    "PCAError",
    "InternalError",
];

/// Import `fruitlens._errors` and check that each class the mapping raises is an
/// exception class; then bind them, so that raising one can never fail later.
pub(crate) fn check_imported(py: Python<'_>) -> PyResult<()> {
    let module = py.import("fruitlens._errors")?;
    for name in CLASSES {
        let class = module.getattr(name)?;
        let is_exception = class
            .cast::<PyType>()
            .map(|c| c.is_subclass_of::<pyo3::exceptions::PyBaseException>())
            .unwrap_or(Ok(false))?;
        if !is_exception {
            return Err(PyImportError::new_err(format!(
                "fruitlens._errors.{name} is not an exception class"
            )));
        }
    }
    DecodeError::type_object(py);
    RuntimeNotFoundError::type_object(py);
    ModelError::type_object(py);
    InferenceError::type_object(py);
    PCAError::type_object(py);
    InternalError::type_object(py);
    Ok(())
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::Decode(_) => DecodeError::new_err(message),
            Error::RuntimeNotFound(_) => RuntimeNotFoundError::new_err(message),
            Error::Model(_) => ModelError::new_err(message),
            Error::Inference(_) => InferenceError::new_err(message),
            Error::Pca(_) => PCAError::new_err(message),
            Error::InvalidArgument(_) => PyValueError::new_err(message),
            Error::Internal(_) => InternalError::new_err(message),
            Error::OutOfMemory(_) => PyMemoryError::new_err(message),
            Error::Io { .. } => PyOSError::new_err(message),
        }
    }
}
