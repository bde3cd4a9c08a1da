//! The ONNX Runtime backend, through the `ort` crate.
//!
//! ONNX Runtime is not linked at build time: its shared library is loaded once per process, the
//! first time this backend is used, from the path [`find_ort_library`] picks. Every failure to find
//! or load it becomes [`BackendError::OrtLibrary`], whose message says how to fix it; nothing here
//! panics because the library is missing or broken.
//!
//! ONNX Runtime handles dynamic input shapes itself, so unlike tract there is one session per
//! model, whatever the batch shape.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::ExecutionProviderDispatch;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{Outlet, Tensor, TensorElementType, TensorRef};

use super::runner::{order_inputs, GraphRunner, HostTensor, TensorView, TensorViewData};
use super::{attention_mask, Backend, BackendError, BackendOptions, Batch, Logits};
use crate::model_info::{keys, ModelInfo};

const NAME: &str = "ort";

/// Name of the model's audio input, `[batch, samples]` f32.
pub const INPUT_VALUES: &str = "input_values";
/// Name of the model's optional mask input, `[batch, samples]` i64 (1 = valid, 0 = padding).
pub const ATTENTION_MASK: &str = "attention_mask";
/// Name of the model's output, `[batch, frames, vocab]` f32.
pub const LOGITS: &str = "logits";

/// The environment variable naming the ONNX Runtime shared library to load.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The library file name looked for in `.ort/lib/` and beside the executable.
const LIBRARY_FILE: &str = "libonnxruntime.so";

/// How to fix a missing or unusable library; ends every [`BackendError::OrtLibrary`] message.
const HOW_TO_FIX: &str =
    "run tools/fetch-ort.sh or set ORT_DYLIB_PATH to an ONNX Runtime (>= 1.17) \
                          libonnxruntime.so";

/// ONNX Runtime graph optimization level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OptLevel {
    /// No graph optimizations.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant node elimination).
    Basic,
    /// Basic plus complex node fusions.
    Extended,
    /// Everything, including layout optimizations.
    #[default]
    All,
}

impl OptLevel {
    pub const ALL: [OptLevel; 4] = [
        OptLevel::Disable,
        OptLevel::Basic,
        OptLevel::Extended,
        OptLevel::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OptLevel::Disable => "disable",
            OptLevel::Basic => "basic",
            OptLevel::Extended => "extended",
            OptLevel::All => "all",
        }
    }

    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

impl fmt::Display for OptLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OptLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OptLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown optimization level {s:?} (expected disable, basic, extended or all)"
                )
            })
    }
}

/// An ONNX Runtime execution provider to register on a session, in priority order.
///
/// Registration failures are errors, never a silent fall back to the CPU. (ONNX Runtime still runs
/// the nodes an accelerator does not support on its CPU provider, which is always present.)
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecutionProvider {
    /// The default CPU provider (MLAS). `arena`: use ONNX Runtime's CPU memory arena (its default).
    Cpu { arena: bool },
    /// NVIDIA CUDA on GPU `device_id`.
    Cuda { device_id: i32 },
    /// NVIDIA TensorRT. Register CUDA after it for the nodes TensorRT rejects.
    TensorRt(TensorRtOptions),
}

impl ExecutionProvider {
    /// The CPU provider with ONNX Runtime's default settings.
    pub fn cpu() -> Self {
        ExecutionProvider::Cpu { arena: true }
    }

    /// ONNX Runtime's name for the provider, as in logs and `get_available_providers()`.
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu { .. } => "CPUExecutionProvider",
            ExecutionProvider::Cuda { .. } => "CUDAExecutionProvider",
            ExecutionProvider::TensorRt(_) => "TensorrtExecutionProvider",
        }
    }

    /// The CUDA provider on the first GPU.
    pub fn cuda() -> Self {
        ExecutionProvider::Cuda { device_id: 0 }
    }

    /// The TensorRT provider on the first GPU with ONNX Runtime's defaults (fp32, no engine cache,
    /// shapes from the first input seen).
    pub fn tensorrt() -> Self {
        ExecutionProvider::TensorRt(TensorRtOptions::default())
    }

    /// Whether the provider computes on an NVIDIA GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(
            self,
            ExecutionProvider::Cuda { .. } | ExecutionProvider::TensorRt(_)
        )
    }

    fn dispatch(&self) -> ExecutionProviderDispatch {
        let ep = match self {
            ExecutionProvider::Cpu { arena } => {
                ort::ep::CPU::default().with_arena_allocator(*arena).build()
            }
            ExecutionProvider::Cuda { device_id } => {
                ort::ep::CUDA::default().with_device_id(*device_id).build()
            }
            ExecutionProvider::TensorRt(options) => {
                use ort::ep::ArbitrarilyConfigurableExecutionProvider;
                let mut ep = ort::ep::TensorRT::default();
                for (key, value) in options.ort_options() {
                    ep.options_mut().set(key, value);
                }
                ep.build()
            }
        };
        ep.error_on_failure()
    }
}

/// The TensorRT execution provider's settings, as ONNX Runtime options (`trt_*`). What to choose
/// is the caller's policy (the binary's, through `w2v-board-support`); this only spells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorRtOptions {
    pub device_id: i32,
    /// Let TensorRT use fp16 kernels (`trt_fp16_enable`).
    pub fp16: bool,
    /// Let TensorRT use int8 kernels (`trt_int8_enable`): for QDQ models, whose scales are in the
    /// graph.
    pub int8: bool,
    /// Keep LayerNorm's reductions in fp32 when fp16 is on (`trt_layer_norm_fp32_fallback`).
    pub layer_norm_fp32: bool,
    /// The optimization profile's `[min, opt, max]` shapes (`trt_profile_{min,opt,max}_shapes`),
    /// e.g. `input_values:1x400`: one engine for every input length in range, built once.
    pub profile_shapes: Option<[String; 3]>,
    /// Where built engines and the timing cache are kept (`trt_engine_cache_path`,
    /// `trt_timing_cache_path`): later sessions load them instead of building again.
    pub cache_dir: Option<PathBuf>,
}

impl TensorRtOptions {
    /// The `(key, value)` pairs given to ONNX Runtime's `UpdateTensorRTProviderOptions`.
    pub fn ort_options(&self) -> Vec<(&'static str, String)> {
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut o = vec![
            ("device_id", self.device_id.to_string()),
            ("trt_fp16_enable", flag(self.fp16)),
            ("trt_int8_enable", flag(self.int8)),
            ("trt_layer_norm_fp32_fallback", flag(self.layer_norm_fp32)),
        ];
        if let Some([min, opt, max]) = &self.profile_shapes {
            o.push(("trt_profile_min_shapes", min.clone()));
            o.push(("trt_profile_opt_shapes", opt.clone()));
            o.push(("trt_profile_max_shapes", max.clone()));
        }
        if let Some(dir) = &self.cache_dir {
            let dir = dir.to_string_lossy().into_owned();
            o.push(("trt_engine_cache_enable", flag(true)));
            o.push(("trt_engine_cache_path", dir.clone()));
            o.push(("trt_timing_cache_enable", flag(true)));
            o.push(("trt_timing_cache_path", dir));
        }
        o
    }
}

impl fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of the ONNX Runtime backend.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    pub common: BackendOptions,
    pub optimization_level: OptLevel,
    /// Registered in order; empty means ONNX Runtime's default (CPU).
    pub execution_providers: Vec<ExecutionProvider>,
    /// Run through an I/O binding ([`OrtBackend`] says what that does); `None`: when a GPU
    /// provider is registered.
    pub io_binding: Option<bool>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            common: BackendOptions::default(),
            optimization_level: OptLevel::default(),
            execution_providers: vec![ExecutionProvider::cpu()],
            io_binding: None,
        }
    }
}

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

// ----- the shared library -----

/// Where to load ONNX Runtime from, in this order:
///
/// 1. `ORT_DYLIB_PATH`, when set and not empty (an error if no file is there);
/// 2. `.ort/lib/libonnxruntime.so` in the current directory or any of its parents (where
///    `tools/fetch-ort.sh` puts it in a checkout);
/// 3. beside the running executable: `<exe dir>/libonnxruntime.so`, `<exe dir>/../lib/libonnxruntime.so`;
/// 4. `.ort/lib/libonnxruntime.so` in any parent of the executable's folder (a `target/` build run
///    from elsewhere).
pub fn find_ort_library() -> Result<PathBuf, BackendError> {
    let env = std::env::var_os(ORT_DYLIB_PATH);
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    find_ort_library_in(env.as_deref(), cwd.as_deref(), exe.as_deref())
}

/// [`find_ort_library`] with its inputs spelled out: the value of `ORT_DYLIB_PATH`, the current
/// directory and the path of the running executable.
pub fn find_ort_library_in(
    env_value: Option<&OsStr>,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> Result<PathBuf, BackendError> {
    let fail = |reason: String| BackendError::OrtLibrary {
        reason: format!("{reason}; {HOW_TO_FIX}"),
    };
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let path = Path::new(value);
        // Make it absolute: `ort` would otherwise try a relative path beside the executable first.
        let path = match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        };
        return if path.is_file() {
            Ok(path)
        } else if path.is_dir() {
            Err(fail(format!(
                "{ORT_DYLIB_PATH}={} is a directory, not the library file",
                path.display()
            )))
        } else {
            Err(fail(format!(
                "{ORT_DYLIB_PATH}={}: no such file",
                path.display()
            )))
        };
    }
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    if let Some(cwd) = cwd {
        candidates.extend(
            cwd.ancestors()
                .map(|d| d.join(".ort/lib").join(LIBRARY_FILE)),
        );
        looked.push(format!(
            "{}/.ort/lib and its parents' .ort/lib",
            cwd.display()
        ));
    }
    if let Some(dir) = exe.and_then(Path::parent) {
        candidates.push(dir.join(LIBRARY_FILE));
        candidates.extend(dir.parent().map(|p| p.join("lib").join(LIBRARY_FILE)));
        candidates.extend(
            dir.ancestors()
                .skip(1)
                .map(|d| d.join(".ort/lib").join(LIBRARY_FILE)),
        );
        looked.push(format!(
            "{dir}, {dir}/../lib, .ort/lib above {dir}",
            dir = dir.display()
        ));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        fail(format!(
            "{LIBRARY_FILE} not found ({ORT_DYLIB_PATH} is not set; looked in {})",
            looked.join("; ")
        ))
    })
}

/// ONNX Runtime, loaded and initialized for this process.
struct Runtime {
    env: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process's ONNX Runtime, initializing it on first use. A failure is remembered: `ort` can
/// load only one library per process anyway.
fn runtime() -> Result<&'static Runtime, BackendError> {
    RUNTIME
        .get_or_init(init_runtime)
        .as_ref()
        .map_err(|reason| BackendError::OrtLibrary {
            reason: reason.clone(),
        })
}

fn init_runtime() -> Result<Runtime, String> {
    let library = match find_ort_library() {
        Ok(p) => p,
        Err(BackendError::OrtLibrary { reason }) => return Err(reason),
        Err(e) => return Err(e.to_string()),
    };
    tracing::debug!(library = %library.display(), "ort: loading ONNX Runtime");
    // `ort` checks the file, its `OrtGetApiBase` and its version and returns errors for those, but
    // a few later steps `expect`; keep any such panic from escaping.
    let built = catch_unwind(AssertUnwindSafe(|| -> Result<Environment, String> {
        let builder = ort::init_from(&library).map_err(|e| describe_load_error(&e))?;
        builder
            .with_name("w2v")
            .with_telemetry(false)
            .build()
            .map_err(|e| {
                format!(
                    "cannot initialize ONNX Runtime from {}: {e}",
                    library.display()
                )
            })
    }));
    let env = match built {
        Ok(Ok(env)) => env,
        Ok(Err(reason)) => return Err(format!("{reason}; {HOW_TO_FIX}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            return Err(format!(
                "loading {} failed: {msg}; {HOW_TO_FIX}",
                library.display()
            ));
        }
    };
    let runtime = Runtime { env, library };
    tracing::info!(
        library = %runtime.library.display(),
        version = %library_version(&runtime.library).unwrap_or_else(|| "unknown".into()),
        "ort: ONNX Runtime loaded"
    );
    Ok(runtime)
}

/// `ort`'s message, plus what `dlerror` said when `dlopen` failed (`ort` only says "dlopen failed").
fn describe_load_error(e: &ort::LoadDynamicError) -> String {
    let mut msg = e.to_string();
    if let ort::LoadDynamicError::Dlopen { error, .. } = e {
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
    }
    msg
}

/// The version of the ONNX Runtime library this process uses (e.g. "1.32.0"), loading it if
/// needed; "unknown" when the library does not say.
pub fn ort_version() -> Result<String, BackendError> {
    let runtime = runtime()?;
    Ok(library_version(&runtime.library).unwrap_or_else(|| "unknown".into()))
}

/// The path of the ONNX Runtime library this process uses, loading it if needed.
pub fn ort_library() -> Result<PathBuf, BackendError> {
    Ok(runtime()?.library.clone())
}

fn library_version(library: &Path) -> Option<String> {
    loaded_library_version(library).or_else(|| version_from_file_name(library))
}

/// `1.32.0` from `libonnxruntime.so.1.32.0` (following symlinks).
fn version_from_file_name(library: &Path) -> Option<String> {
    let real = std::fs::canonicalize(library).ok()?;
    let name = real.file_name()?.to_str()?;
    let version = name.strip_prefix(LIBRARY_FILE)?.strip_prefix('.')?;
    (!version.is_empty()).then(|| version.to_string())
}

/// Ask the already-loaded library itself (`OrtGetApiBase()->GetVersionString()`); `ort` keeps this
/// to itself in rc.15, and the build-info string of the official builds carries no version.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn loaded_library_version(library: &Path) -> Option<String> {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::os::unix::ffi::OsStrExt;

    const RTLD_LAZY: c_int = 0x1;
    const RTLD_NOLOAD: c_int = 0x4;
    #[link(name = "dl")]
    extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        fn dlclose(handle: *mut c_void) -> c_int;
    }
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;

    let c_path = CString::new(library.as_os_str().as_bytes()).ok()?;
    // SAFETY: with RTLD_NOLOAD, dlopen only returns (and references) a library that `ort` already
    // loaded from this very path; it loads nothing and runs no initializers.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_LAZY | RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live handle; the symbol name is NUL-terminated.
    let symbol = unsafe { dlsym(handle, c"OrtGetApiBase".as_ptr()) };
    let version = if symbol.is_null() {
        None
    } else {
        // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release; `ort` has
        // already called it on this library. The version string is static, NUL-terminated.
        unsafe {
            let get_api_base = std::mem::transmute::<*mut c_void, GetApiBase>(symbol);
            let base = get_api_base();
            if base.is_null() {
                None
            } else {
                let s = ((*base).GetVersionString)();
                (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
            }
        }
    };
    // SAFETY: releases the reference taken above; `ort` still holds its own.
    unsafe { dlclose(handle) };
    version
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn loaded_library_version(_library: &Path) -> Option<String> {
    None
}

/// The execution providers the ONNX Runtime library offers (`GetAvailableProviders`: the ones it
/// was built with, e.g. `["AzureExecutionProvider", "CPUExecutionProvider"]` for the PyPI CPU
/// build), in its order. Loads the library as [`crate::backend::ort::ort_library`] does and fails
/// as it does, with [`crate::BackendError::OrtLibrary`].
/// A provider being listed does not mean it works here: CUDA and TensorRT also need their
/// provider libraries, the GPU driver and the CUDA/TensorRT libraries at session creation.
pub fn ort_available_providers() -> Result<Vec<String>, crate::BackendError> {
    use std::ffi::{c_char, c_int, CStr};

    // Loads and initializes the library through w2v's own path search first, so `ort::api()`
    // below never falls back to `ort`'s default search (which would panic if that failed).
    ort_library()?;
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: `GetAvailableProviders` writes an array of `count` NUL-terminated strings owned by
    // ONNX Runtime, released below with `ReleaseAvailableProviders`.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut count) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is a live `OrtStatus` whose message is a NUL-terminated
        // string valid until the status is released.
        let message = unsafe {
            let m = (api.GetErrorMessage)(status.0);
            let text = if m.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            };
            (api.ReleaseStatus)(status.0);
            text
        };
        return Err(crate::BackendError::OrtLibrary {
            reason: format!("its GetAvailableProviders failed: {message}"),
        });
    }
    if list.is_null() {
        return Ok(Vec::new());
    }
    let count = usize::try_from(count).unwrap_or(0);
    // SAFETY: `list` holds `count` valid C strings (see above).
    let names = (0..count)
        .map(|i| unsafe {
            let p = *list.add(i);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    // SAFETY: releases exactly the array obtained above; its status is always null (success).
    let status = unsafe { (api.ReleaseAvailableProviders)(list, count as c_int) };
    if !status.0.is_null() {
        // SAFETY: as above.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    Ok(names)
}

/// Whether the loaded ONNX Runtime library offers the GPU execution providers: `Ok(())`, or why
/// not. (CPU is always offered.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuProviderAvailability {
    pub cuda: Result<(), String>,
    pub tensorrt: Result<(), String>,
}

/// Which GPU providers the loaded library was built with ([`ort_available_providers`]). Being
/// listed is necessary, not sufficient: registration (with `error_on_failure`) still fails if
/// the provider library, driver or CUDA/TensorRT libraries are missing.
pub fn ort_gpu_provider_availability() -> Result<GpuProviderAvailability, BackendError> {
    let offered = ort_available_providers()?;
    let library = ort_library()?;
    let version = ort_version()?;
    let check = |name: &str| -> Result<(), String> {
        if offered.iter().any(|p| p == name) {
            Ok(())
        } else {
            Err(format!(
                "not built into this ONNX Runtime ({}, version {version}): it offers {}",
                library.display(),
                offered.join(", ")
            ))
        }
    };
    Ok(GpuProviderAvailability {
        cuda: check(ExecutionProvider::cuda().name()),
        tensorrt: check(ExecutionProvider::tensorrt().name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_level_round_trips() {
        for l in OptLevel::ALL {
            assert_eq!(l.as_str().parse::<OptLevel>(), Ok(l));
        }
        assert_eq!("ALL".parse::<OptLevel>(), Ok(OptLevel::All));
        assert!("fast"
            .parse::<OptLevel>()
            .unwrap_err()
            .contains("disable, basic"));
        assert_eq!(OptLevel::default(), OptLevel::All);
    }

    #[test]
    fn tensorrt_options_for_onnx_runtime() {
        let get = |o: &TensorRtOptions, key: &str| -> Option<String> {
            let pairs = o.ort_options();
            let found: Vec<&String> = pairs
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v)
                .collect();
            assert!(found.len() <= 1, "{key} set twice");
            found.first().map(|v| v.to_string())
        };
        let plain = TensorRtOptions::default();
        assert_eq!(get(&plain, "device_id").as_deref(), Some("0"));
        assert_eq!(get(&plain, "trt_fp16_enable").as_deref(), Some("0"));
        assert_eq!(get(&plain, "trt_int8_enable").as_deref(), Some("0"));
        assert_eq!(get(&plain, "trt_engine_cache_enable"), None);
        assert_eq!(get(&plain, "trt_profile_min_shapes"), None);

        let o = TensorRtOptions {
            device_id: 1,
            fp16: true,
            int8: true,
            layer_norm_fp32: true,
            profile_shapes: Some(["in:1x400", "in:1x160000", "in:1x480000"].map(String::from)),
            cache_dir: Some(PathBuf::from("/cache/w2v/tensorrt/abc-trt10.3.0-Orin_sm87")),
        };
        for (key, want) in [
            ("device_id", "1"),
            ("trt_fp16_enable", "1"),
            ("trt_int8_enable", "1"),
            ("trt_layer_norm_fp32_fallback", "1"),
            ("trt_profile_min_shapes", "in:1x400"),
            ("trt_profile_opt_shapes", "in:1x160000"),
            ("trt_profile_max_shapes", "in:1x480000"),
            ("trt_engine_cache_enable", "1"),
            (
                "trt_engine_cache_path",
                "/cache/w2v/tensorrt/abc-trt10.3.0-Orin_sm87",
            ),
            ("trt_timing_cache_enable", "1"),
            (
                "trt_timing_cache_path",
                "/cache/w2v/tensorrt/abc-trt10.3.0-Orin_sm87",
            ),
        ] {
            assert_eq!(get(&o, key).as_deref(), Some(want), "{key}");
        }
        // Every key is one ONNX Runtime's TensorRT provider knows (OrtTensorRTProviderOptionsV2).
        for (key, _) in o.ort_options() {
            assert!(key == "device_id" || key.starts_with("trt_"), "{key}");
        }
        assert!(ExecutionProvider::TensorRt(o).is_gpu());
        assert!(ExecutionProvider::cuda().is_gpu());
        assert!(!ExecutionProvider::cpu().is_gpu());
    }

    #[cfg(unix)]
    #[test]
    fn version_from_versioned_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libonnxruntime.so.1.32.0");
        std::fs::write(&real, b"").unwrap();
        std::os::unix::fs::symlink("libonnxruntime.so.1.32.0", dir.path().join(LIBRARY_FILE))
            .unwrap();
        assert_eq!(
            version_from_file_name(&dir.path().join(LIBRARY_FILE)).as_deref(),
            Some("1.32.0")
        );
        std::fs::write(dir.path().join("other.so"), b"").unwrap();
        assert_eq!(version_from_file_name(&dir.path().join("other.so")), None);
    }
}
