//! The one mapping from the core's [`Error`] to Python exceptions.
//!
//! The exception classes are defined in Python (`fruitlens._errors`) so that users can
//! import, subclass and catch them like any other; this looks them up when raising.

use pyo3::exceptions::{PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::error::Error;

fn python_error(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        let cls = py
            .import("fruitlens._errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match cls {
            Ok(cls) => PyErr::from_type(cls, (message,)),
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let message = err.to_string();
        match err {
            Error::Decode(_) => python_error("DecodeError", message),
            Error::RuntimeNotFound(_) => python_error("RuntimeNotFoundError", message),
            Error::Model(_) => python_error("ModelError", message),
            Error::Inference(_) => python_error("InferenceError", message),
            Error::Pca(_) => python_error("PCAError", message),
            Error::InvalidArgument(_) => PyValueError::new_err(message),
            Error::Internal(_) => python_error("InternalError", message),
            Error::OutOfMemory(_) => PyMemoryError::new_err(message),
            Error::Io { .. } => PyOSError::new_err(message),
        }
    }
}
