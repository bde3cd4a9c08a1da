//! ONNX Runtime sessions: a w2v model ([`OrtBackend`]) or any ONNX graph ([`OrtGraph`]), made in
//! one place and run.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use ort::ep::ExecutionProviderDispatch;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{Outlet, Tensor, TensorElementType, TensorRef};

use super::library::runtime;
use super::options::{ExecutionProvider, OrtOptions};
use super::{ATTENTION_MASK, INPUT_VALUES, LOGITS, NAME};
use crate::backend::runner::{order_inputs, GraphRunner, HostTensor, TensorView, TensorViewData};
use crate::backend::{attention_mask, Backend, BackendError, Batch, Logits};
use crate::model_info::{keys, ModelInfo};

/// A model loaded into an ONNX Runtime session.
///
/// With a GPU provider, runs go through one [`IoBinding`] kept for the session: each run's inputs
/// are copied to the device when bound, and ONNX Runtime writes the logits straight into a host
/// buffer that stays bound across runs while the input shape repeats (as it does for the equal
/// windows of long audio), instead of allocating a fresh output every run. Without one, a plain
/// `Session::run`.
pub struct OrtBackend {
    info: ModelInfo,
    session: Session,
    binding: Option<OutputBinding>,
}

/// An I/O binding whose logits output is bound to host memory for inputs of `input_shape`.
struct OutputBinding {
    binding: IoBinding,
    /// The input shape the bound output was allocated for; `None` before the first run.
    input_shape: Option<[usize; 2]>,
}

impl OutputBinding {
    fn new(session: &Session) -> ort::Result<Self> {
        Ok(OutputBinding {
            binding: session.create_binding()?,
            input_shape: None,
        })
    }

    /// Binds the logits to host memory for a run on inputs of `shape`. ONNX Runtime allocates the
    /// output on the first run after binding and then reuses it, which fails once its shape
    /// changes; so a new input shape gets a fresh binding.
    fn prepare(&mut self, shape: [usize; 2]) -> ort::Result<()> {
        if self.input_shape == Some(shape) {
            return Ok(());
        }
        self.binding.clear_outputs();
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::CPUOutput,
        )?;
        self.binding.bind_output_to_device(LOGITS, &host)?;
        self.input_shape = Some(shape);
        Ok(())
    }
}

impl fmt::Debug for OrtBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtBackend")
            .field("model_type", &self.info.model_type)
            .finish_non_exhaustive()
    }
}

impl OrtBackend {
    /// Load a w2v model: read its metadata, initialize ONNX Runtime if needed, create a session and
    /// check that the graph's inputs and outputs are the ones the metadata promises.
    pub fn load(path: &Path, options: &OrtOptions) -> Result<Self, BackendError> {
        let info = ModelInfo::read(path)?;
        let session = create_session(path, options, |b| b.commit_from_file(path))?;
        let err = |e: &dyn fmt::Display| load_err(path, e);
        check_signature(&session, &info).map_err(|e| err(&e))?;
        let use_binding = options.io_binding.unwrap_or_else(|| {
            options
                .execution_providers
                .iter()
                .any(ExecutionProvider::is_gpu)
        });
        let binding = if use_binding {
            Some(
                OutputBinding::new(&session)
                    .map_err(|e| err(&format_args!("cannot create an I/O binding: {e}")))?,
            )
        } else {
            None
        };
        tracing::debug!(io_binding = use_binding, "ort: session ready");
        Ok(OrtBackend {
            info,
            session,
            binding,
        })
    }
}

/// The one place sessions are made: initialize ONNX Runtime if needed, apply `options`
/// (optimization level, threads, execution providers), then `commit` the model. `what` names the
/// model in logs and errors.
fn create_session(
    what: &Path,
    options: &OrtOptions,
    commit: impl FnOnce(&mut SessionBuilder) -> ort::Result<Session>,
) -> Result<Session, BackendError> {
    let runtime = runtime()?;
    let eps: Vec<ExecutionProviderDispatch> = options
        .execution_providers
        .iter()
        .map(ExecutionProvider::dispatch)
        .collect();
    let ep_names: Vec<&str> = options
        .execution_providers
        .iter()
        .map(|e| e.name())
        .collect();
    tracing::debug!(
        model = %what.display(),
        optimization_level = %options.optimization_level,
        execution_providers = ?ep_names,
        threads = ?options.common.threads,
        "ort: creating session"
    );
    let err = |e: &dyn fmt::Display| load_err(what, e);
    let mut builder = Session::builder(&runtime.env)
        .map_err(|e| err(&e))?
        .with_optimization_level(options.optimization_level.to_ort())
        .map_err(|e| err(&e))?
        // No memory pattern: after the first run at an input length ONNX Runtime plans one block
        // for all intermediates, and that block is larger than what the run itself needed. On the
        // 95 M-parameter base model (377 MB) a second 10 s run raised the peak from 673 MB to
        // 798 MB with it, and kept it at 673 MB without; the arena still reuses buffers.
        .with_memory_pattern(false)
        .map_err(|e| err(&e))?;
    if let Some(threads) = options.common.threads {
        builder = builder.with_intra_threads(threads).map_err(|e| err(&e))?;
    }
    if !eps.is_empty() {
        builder = builder.with_execution_providers(&eps).map_err(|e| {
            err(&format_args!(
                "cannot register execution providers {ep_names:?}: {e}"
            ))
        })?;
    }
    commit(&mut builder).map_err(|e| err(&e))
}

/// Any ONNX graph in an ONNX Runtime session ([`GraphRunner`]).
pub struct OrtGraph {
    session: Session,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl fmt::Debug for OrtGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtGraph")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OrtGraph {
    /// Load a serialized ONNX model; `what` names it in logs and errors.
    pub fn from_bytes(
        bytes: &[u8],
        what: &Path,
        options: &OrtOptions,
    ) -> Result<Self, BackendError> {
        let session = create_session(what, options, |b| b.commit_from_memory(bytes))?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtGraph {
            session,
            inputs,
            outputs,
        })
    }
}

impl GraphRunner for OrtGraph {
    fn name(&self) -> &'static str {
        NAME
    }

    fn input_names(&self) -> &[String] {
        &self.inputs
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&mut self, inputs: &[(&str, TensorView<'_>)]) -> Result<Vec<HostTensor>, BackendError> {
        order_inputs(NAME, &self.inputs, inputs)?;
        let values = inputs
            .iter()
            .map(|(name, t)| {
                let v: SessionInputValue<'_> = match t.data {
                    TensorViewData::F32(d) => TensorRef::from_array_view((t.shape, d))
                        .map_err(run_err)?
                        .into(),
                    TensorViewData::I64(d) => TensorRef::from_array_view((t.shape, d))
                        .map_err(run_err)?
                        .into(),
                };
                Ok((Cow::Borrowed(*name), v))
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let outputs = self.session.run(values).map_err(run_err)?;
        self.outputs
            .iter()
            .map(|name| {
                let v = outputs
                    .get(name.as_str())
                    .ok_or_else(|| run_err(format!("no output `{name}`")))?;
                let dims = |d: &ort::value::Shape| -> Vec<usize> {
                    d.iter().map(|&x| usize::try_from(x).unwrap_or(0)).collect()
                };
                if let Ok((d, data)) = v.try_extract_tensor::<f32>() {
                    Ok(HostTensor::f32(dims(d), data.to_vec()))
                } else {
                    let (d, data) = v.try_extract_tensor::<i64>().map_err(run_err)?;
                    Ok(HostTensor::i64(dims(d), data.to_vec()))
                }
            })
            .collect()
    }
}

/// Check the session's inputs and outputs against what `run` will feed and read.
fn check_signature(session: &Session, info: &ModelInfo) -> Result<(), String> {
    let names = |outlets: &[Outlet]| -> String {
        let v: Vec<&str> = outlets.iter().map(Outlet::name).collect();
        format!("{v:?}")
    };
    let find = |outlets: &[Outlet], name: &str, what: &str| -> Result<TensorElementType, String> {
        let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
            format!(
                "the graph has no {what} `{name}` (it has {})",
                names(outlets)
            )
        })?;
        outlet
            .dtype()
            .tensor_type()
            .ok_or_else(|| format!("{what} `{name}` is not a tensor"))
    };
    let expect = |name: &str, got: TensorElementType, want: TensorElementType| {
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "`{name}` has element type {got:?}, expected {want:?}"
            ))
        }
    };
    let inputs = session.inputs();
    expect(
        INPUT_VALUES,
        find(inputs, INPUT_VALUES, "input")?,
        TensorElementType::Float32,
    )?;
    let has_mask = inputs.iter().any(|o| o.name() == ATTENTION_MASK);
    if info.uses_attention_mask {
        expect(
            ATTENTION_MASK,
            find(inputs, ATTENTION_MASK, "input")?,
            TensorElementType::Int64,
        )?;
    } else if has_mask {
        return Err(format!(
            "the graph has an `{ATTENTION_MASK}` input but metadata `{}` is false",
            keys::USES_ATTENTION_MASK
        ));
    }
    let expected_inputs = 1 + usize::from(info.uses_attention_mask);
    if inputs.len() != expected_inputs {
        return Err(format!("unexpected graph inputs {}", names(inputs)));
    }
    expect(
        LOGITS,
        find(session.outputs(), LOGITS, "output")?,
        TensorElementType::Float32,
    )?;
    Ok(())
}

fn load_err(path: &Path, e: impl fmt::Display) -> BackendError {
    let reason = e.to_string();
    // Model-info errors start with the path already; don't say it twice.
    let prefix = format!("{}: ", path.display());
    let reason = reason
        .strip_prefix(&prefix)
        .map(str::to_string)
        .unwrap_or(reason);
    BackendError::Load {
        backend: NAME,
        path: path.to_path_buf(),
        reason,
    }
}

fn run_err(e: impl fmt::Display) -> BackendError {
    BackendError::Run {
        backend: NAME,
        reason: e.to_string(),
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&mut self, batch: &Batch<'_>) -> Result<Logits, BackendError> {
        if batch.samples.len() != batch.batch * batch.len || batch.lengths.len() != batch.batch {
            return Err(run_err(format!(
                "malformed batch: {} samples and {} lengths for {} rows of {}",
                batch.samples.len(),
                batch.lengths.len(),
                batch.batch,
                batch.len
            )));
        }
        let shape = [batch.batch, batch.len];
        let mask = self.info.uses_attention_mask.then(|| attention_mask(batch));
        let outputs = match &mut self.binding {
            None => {
                let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(2);
                inputs.push((
                    INPUT_VALUES.into(),
                    TensorRef::from_array_view((shape, batch.samples))
                        .map_err(run_err)?
                        .into(),
                ));
                if let Some(mask) = &mask {
                    inputs.push((
                        ATTENTION_MASK.into(),
                        TensorRef::from_array_view((shape, mask.as_slice()))
                            .map_err(run_err)?
                            .into(),
                    ));
                }
                self.session.run(inputs).map_err(run_err)?
            }
            Some(out) => {
                out.prepare(shape).map_err(run_err)?;
                // Owned tensors: binding a borrowed view would make `ort` clone it anyway. Binding
                // copies them to the device the session wants them on.
                let values =
                    Tensor::from_array((shape, batch.samples.to_vec())).map_err(run_err)?;
                out.binding
                    .bind_input(INPUT_VALUES, &values)
                    .map_err(run_err)?;
                if let Some(mask) = mask {
                    let mask = Tensor::from_array((shape, mask)).map_err(run_err)?;
                    out.binding
                        .bind_input(ATTENTION_MASK, &mask)
                        .map_err(run_err)?;
                }
                self.session.run_binding(&out.binding).map_err(run_err)?
            }
        };
        let logits = outputs
            .get(LOGITS)
            .ok_or_else(|| run_err(format!("the model returned no `{LOGITS}`")))?;
        let (dims, data) = logits.try_extract_tensor::<f32>().map_err(run_err)?;
        let dims: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        let &[b, frames, vocab] = dims.as_slice() else {
            return Err(run_err(format!(
                "logits have shape {dims:?}, expected rank 3"
            )));
        };
        if b != batch.batch {
            return Err(run_err(format!(
                "logits have batch {b}, expected {}",
                batch.batch
            )));
        }
        Ok(Logits {
            data: data.to_vec(),
            batch: b,
            frames,
            vocab,
        })
    }
}
