//! The `fruitlens._native` Python module: thin pyo3 wrappers over the core.
//!
//! Each entry point extracts its inputs under the GIL (Arrow arrays are borrowed
//! through the PyCapsule interface, not copied), then runs all compute inside
//! [`compute`], which releases the GIL.

mod arrow;
mod errors;

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, Float32Array, Float64Array};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3_arrow::{PyArray, PyRecordBatch};

use crate::decode::{
    decode_batch, DecodeOptions, ResizeMode, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS,
};
use crate::embed::{self, Embedder, DEFAULT_BATCH_SIZE};
use crate::error::{Error, Result};
use crate::limits::{self, MAX_PCA_DIM, MAX_SIZE};
use crate::pca::{KSpec, PcaModel, PcaStats};
use crate::process::PerProcess;

/// Run native work with the GIL released (polars' `enter_polars`). A panic becomes a
/// `fruitlens.InternalError`, never a `PanicException` (which is not an `Exception`
/// and would take a whole batch, or a Spark task, down).
fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    py.detach(|| crate::guard::catch(f).unwrap_or_else(|panic| Err(Error::Internal(panic))))
        .map_err(PyErr::from)
}

fn batch_to_py(py: Python<'_>, batch: arrow_array::RecordBatch) -> PyResult<Bound<'_, PyAny>> {
    PyRecordBatch::new(batch).into_pyarrow(py)
}

fn array_to_py(py: Python<'_>, array: arrow_array::ArrayRef) -> PyResult<Bound<'_, PyAny>> {
    let array = PyArray::from_array_ref(array);
    let out = array.to_pyarrow(py)?.unbind();
    Ok(out.into_bound(py))
}

/// A process-wide rayon pool for the standalone `decode` function, built on first
/// use (never at import: PySpark forks its workers) and rebuilt after a fork.
fn decode_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOL: PerProcess<(usize, Arc<rayon::ThreadPool>)> = PerProcess::new();
    POOL.with(
        || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| {
                    Error::InvalidArgument(format!("could not start {threads} threads: {e}"))
                })?;
            Ok((threads, Arc::new(pool)))
        },
        |(built, _)| *built == threads,
        |(_, pool)| Ok(Arc::clone(pool)),
    )
}

/// decode(images, size, max_pixels, max_bytes, threads, resize) -> pyarrow.RecordBatch
#[pyfunction]
#[pyo3(signature = (images, size=224, max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES, threads=None, resize="exact"))]
fn decode<'py>(
    py: Python<'py>,
    images: PyArray,
    size: u32,
    max_pixels: u64,
    max_bytes: usize,
    threads: Option<usize>,
    resize: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = DecodeOptions {
        size: limits::check_size(size)?,
        max_pixels,
        max_bytes,
        resize: resize.parse::<ResizeMode>()?,
    };
    let threads = match threads {
        Some(t) if t > 0 => limits::check_threads(t)?,
        _ => embed::default_threads(),
    };
    let array = images.array();
    let inputs = arrow::binary_values(array.as_ref())?;
    let batch = compute(py, || {
        let pool = decode_pool(threads)?;
        let len = inputs.len().saturating_mul(opts.tensor_len());
        let mut out = limits::zeroed_f32(len, "the decoded pixels")?;
        let errors = pool.install(|| decode_batch(&inputs, &opts, &mut out));
        arrow::values_and_errors("pixels", out, opts.tensor_len(), &errors)
    })?;
    batch_to_py(py, batch)
}

/// The thread count used when none is given: `OMP_NUM_THREADS` if set (Spark sets it
/// from `spark.task.cpus`), else the CPU count; at most `MAX_THREADS`.
#[pyfunction]
fn default_threads() -> usize {
    embed::default_threads()
}

/// Load ONNX Runtime from `path` (or the environment); returns the loaded path.
#[pyfunction]
#[pyo3(signature = (path=None))]
fn init_runtime(py: Python<'_>, path: Option<PathBuf>) -> PyResult<PathBuf> {
    compute(py, || embed::init_runtime(path.as_deref()))
}

#[pyclass(name = "Embedder", module = "fruitlens._native", frozen)]
struct PyEmbedder {
    inner: Embedder,
}

#[pymethods]
impl PyEmbedder {
    #[new]
    #[pyo3(signature = (model_path, threads=None, runtime_path=None))]
    fn new(
        py: Python<'_>,
        model_path: PathBuf,
        threads: Option<usize>,
        runtime_path: Option<PathBuf>,
    ) -> PyResult<Self> {
        let inner = compute(py, || {
            Embedder::new(&model_path, threads, runtime_path.as_deref())
        })?;
        Ok(Self { inner })
    }

    #[getter]
    fn input_size(&self) -> u32 {
        self.inner.info().input_size
    }

    #[getter]
    fn output_dim(&self) -> usize {
        self.inner.info().output_dim
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The model's `metadata_props` (key -> value).
    #[getter]
    fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.info().metadata.clone()
    }

    #[getter]
    fn model_path(&self) -> PathBuf {
        self.inner.model_path().to_path_buf()
    }

    /// embed(images, max_pixels, max_bytes, batch_size, resize) -> RecordBatch(features, error)
    #[pyo3(signature = (images, max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES, batch_size=DEFAULT_BATCH_SIZE, resize="exact"))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        images: PyArray,
        max_pixels: u64,
        max_bytes: usize,
        batch_size: usize,
        resize: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let resize = resize.parse::<ResizeMode>()?;
        let array = images.array();
        let inputs = arrow::binary_values(array.as_ref())?;
        let d = self.inner.info().output_dim;
        let batch = compute(py, || {
            let (features, errors) = self
                .inner
                .embed_images(&inputs, max_pixels, max_bytes, resize, batch_size)?;
            arrow::values_and_errors("features", features, d, &errors)
        })?;
        batch_to_py(py, batch)
    }

    /// embed_tensors(x: float32 array of n·S·S·3 values, batch_size) -> float32 array of n·D values
    #[pyo3(signature = (x, batch_size=DEFAULT_BATCH_SIZE))]
    fn embed_tensors<'py>(
        &self,
        py: Python<'py>,
        x: PyArray,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let array = x.array();
        let values = array
            .as_any()
            .downcast_ref::<Float32Array>()
            .filter(|a| a.null_count() == 0)
            .ok_or_else(|| {
                Error::InvalidArgument("tensors must be a float32 array without nulls".into())
            })?;
        let out = compute(py, || self.inner.embed_tensors(values.values(), batch_size))?;
        array_to_py(py, Arc::new(Float32Array::from(out)))
    }
}

#[pyclass(name = "PcaStats", module = "fruitlens._native")]
struct PyPcaStats {
    inner: PcaStats,
}

#[pymethods]
impl PyPcaStats {
    #[new]
    fn new(dim: usize) -> PyResult<Self> {
        limits::check_pca_dim(dim)?;
        Ok(Self {
            inner: PcaStats::new(dim),
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn count(&self) -> u64 {
        self.inner.count()
    }

    /// Add the non-null rows of a list/fixed_size_list<float> array; returns how many
    /// rows were added.
    fn update(&mut self, py: Python<'_>, rows: PyArray) -> PyResult<usize> {
        let array = rows.array();
        let rows = arrow::float_rows(array.as_ref(), Some(self.inner.dim()), "features")?;
        let n = rows.values.len() / rows.dim;
        let inner = &mut self.inner;
        compute(py, || inner.update(&rows.values))?;
        Ok(n)
    }

    /// Add `other`'s rows (`other` may be this very object: its rows then count twice).
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, PyPcaStats>) -> PyResult<()> {
        if slf.is(other) {
            let copy = slf.try_borrow()?.inner.clone();
            return slf
                .try_borrow_mut()?
                .inner
                .merge(&copy)
                .map_err(PyErr::from);
        }
        let other = other.try_borrow()?;
        let mut this = slf.try_borrow_mut()?;
        this.inner.merge(&other.inner).map_err(PyErr::from)
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(Self {
            inner: PcaStats::from_bytes(data)?,
        })
    }

    /// fit(k: int | None, variance: float | None) -> PcaModel
    #[pyo3(signature = (k=None, variance=None))]
    fn fit(&self, py: Python<'_>, k: Option<usize>, variance: Option<f64>) -> PyResult<PyPcaModel> {
        let spec = match (k, variance) {
            (Some(k), None) => KSpec::Count(k),
            (None, Some(v)) => KSpec::Variance(v),
            _ => {
                return Err(
                    Error::InvalidArgument("give exactly one of k or variance".into()).into(),
                )
            }
        };
        let inner = compute(py, || PcaModel::fit(&self.inner, spec))?;
        Ok(PyPcaModel { inner })
    }
}

#[pyclass(name = "PcaModel", module = "fruitlens._native", frozen)]
struct PyPcaModel {
    inner: PcaModel,
}

#[pymethods]
impl PyPcaModel {
    #[getter]
    fn k(&self) -> usize {
        self.inner.k
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim
    }

    #[getter]
    fn n_samples(&self) -> u64 {
        self.inner.n_samples
    }

    #[getter]
    fn total_variance(&self) -> f64 {
        self.inner.total_variance
    }

    #[getter]
    fn k_rule(&self) -> String {
        self.inner.k_rule.clone()
    }

    /// Mean (float64 array of dim).
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array_to_py(py, Arc::new(Float64Array::from(self.inner.mean.clone())))
    }

    /// Components, row-major k·dim (float64).
    #[getter]
    fn components<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array_to_py(
            py,
            Arc::new(Float64Array::from(self.inner.components.clone())),
        )
    }

    #[getter]
    fn explained_variance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array_to_py(
            py,
            Arc::new(Float64Array::from(self.inner.explained_variance.clone())),
        )
    }

    #[getter]
    fn explained_variance_ratio<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        array_to_py(
            py,
            Arc::new(Float64Array::from(
                self.inner.explained_variance_ratio.clone(),
            )),
        )
    }

    /// transform(rows) -> fixed_size_list<float32>[k] (null where the input row is null)
    fn transform<'py>(&self, py: Python<'py>, rows: PyArray) -> PyResult<Bound<'py, PyAny>> {
        let array = rows.array();
        let rows = arrow::float_rows(array.as_ref(), Some(self.inner.dim), "features")?;
        let k = self.inner.k;
        let out = compute(py, || {
            let compact = self.inner.transform(&rows.values)?;
            let full = arrow::scatter(&compact, &rows.valid, k);
            arrow::fixed_size_list(full, k, Some(rows.valid.clone()))
        })?;
        array_to_py(py, Arc::new(out))
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        Ok(Self {
            inner: PcaModel::from_json(text)?,
        })
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::check_imported(m.py())?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(init_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(default_threads, m)?)?;
    m.add_class::<PyEmbedder>()?;
    m.add_class::<PyPcaStats>()?;
    m.add_class::<PyPcaModel>()?;
    m.add("DEFAULT_MAX_PIXELS", DEFAULT_MAX_PIXELS)?;
    m.add("DEFAULT_MAX_BYTES", DEFAULT_MAX_BYTES)?;
    m.add("DEFAULT_BATCH_SIZE", DEFAULT_BATCH_SIZE)?;
    m.add("MAX_SIZE", MAX_SIZE)?;
    m.add("MAX_PCA_DIM", MAX_PCA_DIM)?;
    m.add("MAX_THREADS", limits::max_threads())?;
    m.add("MAX_THREADS_CAP", limits::MAX_THREADS_CAP)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
