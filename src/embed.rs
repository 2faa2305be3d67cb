//! MobileNetV2 embeddings with ONNX Runtime, loaded at run time (`ort`'s
//! `load-dynamic`): fruitlens ships no ONNX Runtime of its own and uses the
//! `libonnxruntime.so.*` of the `onnxruntime` Python wheel (or any file named by
//! `FRUITLENS_ORT_LIB` / `ORT_DYLIB_PATH`).
//!
//! Native resources are created lazily and per process: PySpark forks its Python
//! workers, and neither ONNX Runtime's nor rayon's thread pools survive a fork, so
//! an [`Embedder`] notices when it runs in a new process and builds its session and
//! thread pool again there (leaking, never touching, the parent's).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::decode::{decode_batch, DecodeOptions, ResizeMode};
use crate::error::{DecodeFailure, Error, Result};
use crate::process::PerProcess;

/// Environment variable naming the ONNX Runtime shared library to load.
pub const ORT_LIB_ENV: &str = "FRUITLENS_ORT_LIB";

static RUNTIME: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Where to look for the ONNX Runtime library: the explicit path, then
/// `$FRUITLENS_ORT_LIB`, then `$ORT_DYLIB_PATH`.
pub fn resolve_runtime_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(ORT_LIB_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
}

/// Load ONNX Runtime once per process. Later calls return the first outcome (a
/// process can hold only one ONNX Runtime).
pub fn init_runtime(explicit: Option<&Path>) -> Result<PathBuf> {
    let outcome = RUNTIME.get_or_init(|| {
        let path = resolve_runtime_path(explicit).ok_or_else(|| {
            format!(
                "ONNX Runtime was not found: install it with `pip install onnxruntime` \
                 (fruitlens loads its libonnxruntime.so), or set {ORT_LIB_ENV} to the path of a \
                 libonnxruntime shared library"
            )
        })?;
        if !path.is_file() {
            return Err(format!(
                "ONNX Runtime library {} does not exist: fix {ORT_LIB_ENV} or reinstall onnxruntime",
                path.display()
            ));
        }
        let builder = ort::init_from(&path).map_err(|e| {
            format!("could not load ONNX Runtime from {}: {e}", path.display())
        })?;
        // One environment per process, kept for the process' lifetime.
        let env = builder
            .with_name("fruitlens")
            .build()
            .map_err(|e| format!("could not create the ONNX Runtime environment: {e}"))?;
        Ok((path, env))
    });
    match outcome {
        Ok((path, _)) => Ok(path.clone()),
        Err(e) => Err(Error::RuntimeNotFound(e.clone())),
    }
}

fn environment() -> Result<&'static Environment> {
    match RUNTIME.get() {
        Some(Ok((_, env))) => Ok(env),
        Some(Err(e)) => Err(Error::RuntimeNotFound(e.clone())),
        None => Err(Error::RuntimeNotFound(
            "ONNX Runtime has not been loaded yet".into(),
        )),
    }
}

/// The number of threads to use when the caller does not say: `OMP_NUM_THREADS` if
/// set (Spark sets it from `spark.task.cpus`), else the machine's CPU count; never
/// more than [`crate::limits::max_threads`].
pub fn default_threads() -> usize {
    std::env::var("OMP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .min(crate::limits::max_threads())
}

/// What the model takes and gives, read from the ONNX graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub input_name: String,
    pub output_name: String,
    /// S of the `[N, S, S, 3]` input.
    pub input_size: u32,
    /// D of the `[N, D]` output.
    pub output_dim: usize,
    /// The model's `metadata_props` (key → value), e.g. a classifier's `labels`.
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn inspect(session: &Session, path: &Path) -> Result<ModelInfo> {
    let bad = |what: String| {
        Error::Model(format!(
            "{} is not a fruitlens image model: {what}; build one with `fruitlens model convert` or \
             `fruitlens model fetch`",
            path.display()
        ))
    };
    let [input] = session.inputs() else {
        return Err(bad(format!(
            "it has {} inputs, expected 1",
            session.inputs().len()
        )));
    };
    let [output] = session.outputs() else {
        return Err(bad(format!(
            "it has {} outputs, expected 1",
            session.outputs().len()
        )));
    };
    let (
        ValueType::Tensor {
            ty: in_ty,
            shape: in_shape,
            ..
        },
        ValueType::Tensor {
            ty: out_ty,
            shape: out_shape,
            ..
        },
    ) = (input.dtype(), output.dtype())
    else {
        return Err(bad("its input and output must be tensors".into()));
    };
    let in_dims: Vec<i64> = in_shape.iter().copied().collect();
    let out_dims: Vec<i64> = out_shape.iter().copied().collect();
    let f32_ty = TensorElementType::Float32;
    if *in_ty != f32_ty
        || in_dims.len() != 4
        || in_dims[3] != 3
        || in_dims[1] <= 0
        || in_dims[1] > i64::from(crate::limits::MAX_SIZE)
        || in_dims[1] != in_dims[2]
    {
        return Err(bad(format!(
            "input `{}` is {in_ty:?} {in_dims:?}, expected float32 [N, S, S, 3] (NHWC)",
            input.name()
        )));
    }
    if *out_ty != f32_ty || out_dims.len() != 2 || out_dims[1] <= 0 {
        return Err(bad(format!(
            "output `{}` is {out_ty:?} {out_dims:?}, expected float32 [N, D]",
            output.name()
        )));
    }
    Ok(ModelInfo {
        input_name: input.name().to_string(),
        output_name: output.name().to_string(),
        input_size: in_dims[1] as u32,
        output_dim: out_dims[1] as usize,
        metadata: metadata_props(session, path)?,
    })
}

/// The model's `metadata_props` as a sorted map.
fn metadata_props(
    session: &Session,
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>> {
    let bad = |e: ort::Error| {
        Error::Model(format!(
            "could not read the metadata of {}: {e}",
            path.display()
        ))
    };
    let metadata = session.metadata().map_err(bad)?;
    let mut props = std::collections::BTreeMap::new();
    for key in metadata.custom_keys().map_err(bad)? {
        if let Some(value) = metadata.custom(&key) {
            props.insert(key, value);
        }
    }
    Ok(props)
}

/// Images per ONNX Runtime run unless told otherwise. Small batches keep MobileNetV2's
/// activations in cache: on 2 cores, 4 runs about 9 % faster per image than 8 and
/// 12 % faster than 32 (`benchmarks/bench_layout.py --batch-size`), with a quarter of
/// the activation memory of 16.
pub const DEFAULT_BATCH_SIZE: usize = 4;

/// Per-process native state: an ONNX Runtime session and a rayon pool for decoding.
struct ProcessState {
    session: Session,
    pool: Arc<rayon::ThreadPool>,
}

/// A MobileNetV2 (or any `[N,S,S,3] → [N,D]`) ONNX model ready to embed images.
///
/// `Session::run` needs `&mut`, so calls from several threads are serialised on a
/// mutex; ONNX Runtime itself uses `threads` intra-op threads for each batch.
pub struct Embedder {
    model_path: PathBuf,
    threads: usize,
    info: ModelInfo,
    state: PerProcess<ProcessState>,
}

impl Embedder {
    /// Load the model (and ONNX Runtime, if not yet loaded). `threads = None` (or 0)
    /// means [`default_threads`]; more than [`crate::limits::max_threads`] is refused.
    pub fn new(
        model_path: impl AsRef<Path>,
        threads: Option<usize>,
        runtime: Option<&Path>,
    ) -> Result<Self> {
        let threads = match threads {
            Some(t) if t > 0 => crate::limits::check_threads(t)?,
            _ => default_threads(),
        };
        let model_path = model_path.as_ref().to_path_buf();
        if !model_path.is_file() {
            return Err(Error::Model(format!(
                "model file {} does not exist: run `fruitlens model fetch` (or `fruitlens model convert`) \
                 to create it, or pass the right path",
                model_path.display()
            )));
        }
        init_runtime(runtime)?;
        let state = Self::build_state(&model_path, threads)?;
        let info = inspect(&state.session, &model_path)?;
        Ok(Self {
            model_path,
            threads,
            info,
            state: PerProcess::with_value(state),
        })
    }

    fn build_state(model_path: &Path, threads: usize) -> Result<ProcessState> {
        let model_err = |e: ort::Error| {
            Error::Model(format!(
                "could not load the ONNX model {}: {e}",
                model_path.display()
            ))
        };
        let session = Session::builder(environment()?)
            .map_err(model_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| model_err(e.into()))?
            .with_intra_threads(threads)
            .map_err(|e| model_err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| model_err(e.into()))?
            .commit_from_file(model_path)
            .map_err(model_err)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fruitlens-decode-{i}"))
            .build()
            .map_err(|e| {
                Error::InvalidArgument(format!("could not start {threads} decode threads: {e}"))
            })?;
        Ok(ProcessState {
            session,
            pool: Arc::new(pool),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Run `f` with this process' state, rebuilding it after a fork.
    fn with_state<T>(&self, f: impl FnOnce(&mut ProcessState) -> Result<T>) -> Result<T> {
        self.state.with(
            || Self::build_state(&self.model_path, self.threads),
            |_| true,
            f,
        )
    }

    fn run_session(
        &self,
        state: &mut ProcessState,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let s = self.info.input_size as usize;
        let d = self.info.output_dim;
        let input = TensorRef::from_array_view(([n, s, s, 3], x))
            .map_err(|e| Error::Inference(e.to_string()))?;
        let outputs = state
            .session
            .run(ort::inputs![self.info.input_name.as_str() => input])
            .map_err(|e| Error::Inference(e.to_string()))?;
        let (shape, data) = outputs[self.info.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Inference(e.to_string()))?;
        if data.len() != n * d {
            return Err(Error::Inference(format!(
                "model returned shape {shape:?} for a batch of {n}, expected [{n}, {d}]"
            )));
        }
        out.copy_from_slice(data);
        Ok(())
    }

    /// Embed preprocessed NHWC tensors: `x` holds `n * S * S * 3` floats; returns
    /// `n * D` floats. Runs in chunks of `batch_size`.
    pub fn embed_tensors(&self, x: &[f32], batch_size: usize) -> Result<Vec<f32>> {
        let per = self.tensor_len();
        if x.len() % per != 0 {
            return Err(Error::InvalidArgument(format!(
                "input has {} floats, not a multiple of {per} (= {s}×{s}×3 for this model)",
                x.len(),
                s = self.info.input_size
            )));
        }
        let n = x.len() / per;
        let d = self.info.output_dim;
        let mut out = crate::limits::zeroed_f32(n.saturating_mul(d), "the features")?;
        let batch = batch_size.clamp(1, n.max(1));
        self.with_state(|state| {
            for (xc, oc) in x.chunks(batch * per).zip(out.chunks_mut(batch * d)) {
                self.run_session(state, xc, xc.len() / per, oc)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    fn tensor_len(&self) -> usize {
        let s = self.info.input_size as usize;
        s * s * 3
    }

    /// Decode and embed encoded images. Returns `n * D` floats (zero rows where the
    /// image failed) and one optional failure per image. Images are decoded on this
    /// process' rayon pool, `batch_size` at a time, the next chunk being decoded
    /// while ONNX Runtime runs the current one.
    pub fn embed_images(
        &self,
        inputs: &[Option<&[u8]>],
        max_pixels: u64,
        max_bytes: usize,
        resize: ResizeMode,
        batch_size: usize,
    ) -> Result<(Vec<f32>, Vec<Option<DecodeFailure>>)> {
        let opts = DecodeOptions {
            size: self.info.input_size,
            max_pixels,
            max_bytes,
            resize,
        };
        let per = opts.tensor_len();
        let d = self.info.output_dim;
        let n = inputs.len();
        let mut features = crate::limits::zeroed_f32(n.saturating_mul(d), "the features")?;
        let mut errors: Vec<Option<DecodeFailure>> = Vec::with_capacity(n);
        let batch = batch_size.clamp(1, n.max(1));
        self.with_state(|state| {
            let pool = Arc::clone(&state.pool);
            let decode_chunk = |chunk: &[Option<&[u8]>]| {
                let mut buf = vec![0f32; chunk.len() * per];
                let errs = pool.install(|| decode_batch(chunk, &opts, &mut buf));
                (buf, errs)
            };
            // With one inference thread, the next chunk is decoded on another thread
            // while this one runs. With several, ONNX Runtime's threads synchronise
            // after every operator and a decode thread preempting one of them stalls
            // all: then decode (on all threads) and inference take turns.
            // (`benchmarks/bench_layout.py`: 1 x 2 threads, 187 -> 243 images/s.)
            let overlap = self.threads == 1;
            let mut chunks = inputs.chunks(batch).enumerate().peekable();
            let mut pending = chunks.peek().map(|(_, c)| decode_chunk(c));
            while let Some((i, _)) = chunks.next() {
                let (buf, errs) = pending.take().expect("decoded chunk is ready");
                let next = chunks.peek().map(|(_, c)| *c);
                let (result, decoded_next) = std::thread::scope(|scope| {
                    let handle = next
                        .filter(|_| overlap)
                        .map(|c| scope.spawn(|| decode_chunk(c)));
                    let result = self.embed_decoded(
                        state,
                        &buf,
                        &errs,
                        &mut features[i * batch * d..],
                        per,
                        d,
                    );
                    let decoded = match handle {
                        Some(h) => Some(h.join().expect("decode thread panicked")),
                        None => next.map(&decode_chunk),
                    };
                    (result, decoded)
                });
                result?;
                errors.extend(errs);
                pending = decoded_next;
            }
            Ok(())
        })?;
        Ok((features, errors))
    }

    /// Run the rows of a decoded chunk that did not fail, compacted into one
    /// contiguous batch, and scatter their features back to their rows in `out`.
    fn embed_decoded(
        &self,
        state: &mut ProcessState,
        buf: &[f32],
        errs: &[Option<DecodeFailure>],
        out: &mut [f32],
        per: usize,
        d: usize,
    ) -> Result<()> {
        let ok: Vec<usize> = errs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_none())
            .map(|(i, _)| i)
            .collect();
        if ok.is_empty() {
            return Ok(());
        }
        let mut feats = vec![0f32; ok.len() * d];
        if ok.len() == errs.len() {
            self.run_session(state, buf, ok.len(), &mut feats)?;
        } else {
            let mut compact = Vec::with_capacity(ok.len() * per);
            for &i in &ok {
                compact.extend_from_slice(&buf[i * per..(i + 1) * per]);
            }
            self.run_session(state, &compact, ok.len(), &mut feats)?;
        }
        for (j, &i) in ok.iter().enumerate() {
            out[i * d..(i + 1) * d].copy_from_slice(&feats[j * d..(j + 1) * d]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_runtime_path_wins() {
        let p = resolve_runtime_path(Some(Path::new("/x/libonnxruntime.so.1")));
        assert_eq!(p, Some(PathBuf::from("/x/libonnxruntime.so.1")));
    }

    #[test]
    fn default_threads_is_positive() {
        assert!(default_threads() >= 1);
        assert!(default_threads() <= crate::limits::max_threads());
    }

    #[test]
    fn too_many_threads_are_refused_before_anything_loads() {
        let err = Embedder::new("/nonexistent/model.onnx", Some(100_000), None)
            .err()
            .expect("must fail");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string().contains("threads must be between 1 and"),
            "{err}"
        );
    }

    #[test]
    fn missing_model_is_a_model_error() {
        let err = Embedder::new("/nonexistent/model.onnx", Some(1), None)
            .err()
            .expect("must fail");
        assert!(matches!(err, Error::Model(_)), "{err}");
        assert!(err.to_string().contains("fruitlens model fetch"), "{err}");
    }
}
