//! Choosing and opening a model on a runtime: backend, execution providers (by board-support's
//! policy and the availability check `w2v doctor` shows), TensorRT settings and engine cache, and
//! the graph runners fine-tuning uses. [`crate::Recognizer`] and every `w2v` command open models
//! here, so an embedder gets exactly the CLI's choices.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;
use w2v_board_support::{
    cache_dir, cuda_device, default_cache_base, tensorrt_version, EngineCacheListing,
    OptimizationProfile, Provider, ProviderAvailability, ProviderPlan, ProviderPolicy,
    ProviderRequest, TensorRtSettings,
};
pub use w2v_engine::backend::ort::OptLevel;
use w2v_engine::backend::ort::{
    ExecutionProvider, OrtBackend, OrtGraph, OrtOptions, TensorRtOptions, ATTENTION_MASK,
    INPUT_VALUES,
};
use w2v_engine::backend::tract::{TractBackend, TractGraph};
use w2v_engine::backend::GraphRunner;
use w2v_engine::model_info::keys;
use w2v_engine::precision::{Precision, QuantizationTarget};
use w2v_engine::{Backend, BackendOptions, ModelInfo};

use crate::error::{Error, Result};

/// The shipped default model's file name inside `models/`.
pub const DEFAULT_MODEL_FILE: &str = "default.onnx";

/// The inference runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract: pure Rust, CPU, no setup.
    #[default]
    Tract,
    /// ONNX Runtime (tools/fetch-ort.sh or ORT_DYLIB_PATH provides the library): CPU, CUDA,
    /// TensorRT.
    Ort,
}

impl BackendKind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [BackendKind; 2] = [BackendKind::Tract, BackendKind::Ort];

    /// The command-line spelling: `tract`, `ort`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    /// `tract` or `ort` (also `onnxruntime`), case-insensitively.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tract" => Ok(BackendKind::Tract),
            "ort" | "onnxruntime" => Ok(BackendKind::Ort),
            _ => Err(Error::invalid(format!(
                "unknown backend {s:?}: expected tract or ort"
            ))),
        }
    }
}

/// How to open a model: which runtime, which execution providers, threads, TensorRT's profile
/// and engine cache. The defaults are the CLI's: tract, `--provider auto`, the runtime's threads.
///
/// ```
/// use w2v::{BackendKind, ProviderRequest, RuntimeOptions};
///
/// // What `--backend ort --provider tensorrt --max-seconds 10` asks for.
/// let options = RuntimeOptions {
///     backend: BackendKind::Ort,
///     provider: ProviderRequest::TensorRt,
///     max_seconds: Some(10.0),
///     ..RuntimeOptions::default()
/// };
/// assert!(!options.allow_fallback);
/// ```
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    pub backend: BackendKind,
    /// Intra-op threads; `None` lets the runtime decide.
    pub threads: Option<usize>,
    /// ONNX Runtime's graph optimization level.
    pub graph_opt: OptLevel,
    /// ONNX Runtime's execution providers: `Auto` is TensorRT, then CUDA, then the CPU, whichever
    /// [`provider_availability`] finds usable.
    pub provider: ProviderRequest,
    /// With an explicit CUDA or TensorRT request: run on the CPU (with a warning) when it is not
    /// available, instead of failing.
    pub allow_fallback: bool,
    /// TensorRT: the longest input in seconds its engine is built for; default the longest input
    /// the caller says it will run.
    pub max_seconds: Option<f64>,
    /// TensorRT engine and timing cache folder; default `$XDG_CACHE_HOME/w2v/tensorrt`, else
    /// `~/.cache/w2v/tensorrt`.
    pub tensorrt_cache: Option<PathBuf>,
}

/// Which execution providers work on this machine with the ONNX Runtime library w2v would load:
/// the one check behind `w2v doctor`'s report and `--provider auto` (board-support's
/// [`ProviderAvailability::judge`] over what the library reports).
pub fn provider_availability() -> ProviderAvailability {
    judge_providers(&ort_facts(), &w2v_board_support::Platform::detect())
}

/// [`provider_availability`] for what [`ort_facts`] returned on `platform`.
pub fn judge_providers(
    facts: &std::result::Result<w2v_board_support::OrtFacts, String>,
    platform: &w2v_board_support::Platform,
) -> ProviderAvailability {
    ProviderAvailability::judge(
        facts.as_ref().map_err(String::as_str),
        platform.is_jetson(),
        Path::new(NVIDIA_DRIVER_VERSION),
    )
}

/// Where a loaded NVIDIA kernel driver reports its version.
pub const NVIDIA_DRIVER_VERSION: &str = "/proc/driver/nvidia/version";

/// The ONNX Runtime library w2v loads, its version and the providers it was built with; `Err`
/// says why it cannot be loaded, and how to fix that.
pub fn ort_facts() -> std::result::Result<w2v_board_support::OrtFacts, String> {
    use w2v_engine::backend::ort::{ort_available_providers, ort_library, ort_version};
    let facts = ort_library().and_then(|library| {
        Ok(w2v_board_support::OrtFacts {
            library,
            version: ort_version()?,
            offered: ort_available_providers()?,
        })
    });
    facts.map_err(|e| e.to_string())
}

/// The provider policy's plan. Unavailable providers skipped by `auto` are logged at info; an
/// explicit request that falls back to the CPU (`--allow-fallback`) is logged at warn (by the
/// policy), with its reason.
fn provider_plan(args: &RuntimeOptions) -> Result<ProviderPlan> {
    let policy = ProviderPolicy::new(args.provider, args.allow_fallback);
    let available = if args.provider == ProviderRequest::Cpu {
        // Nothing to ask the library.
        ProviderAvailability::cpu_only("not requested")
    } else {
        let available = provider_availability();
        if let Err(why) = &available.cpu {
            // Not even the CPU: the library itself did not load.
            return Err(Error::Backend(w2v_engine::BackendError::OrtLibrary {
                reason: why.clone(),
            }));
        }
        available
    };
    let plan = policy.plan(&available).map_err(Error::Provider)?;
    for f in &plan.fallbacks {
        // The policy has already logged these (warn for an explicit request, info for auto).
        tracing::debug!(from = %f.from, to = %f.to, reason = %f.reason, "execution provider fallback");
    }
    tracing::info!(providers = ?plan.providers, "execution providers");
    Ok(plan)
}

/// The TensorRT provider's settings for the model at `path`, by board-support's policy: precision
/// flags from the model's metadata, a profile up to `max_seconds`, and the engine cache under
/// `--tensorrt-cache` (or the user's cache folder) keyed by the model's sha256, the TensorRT
/// version and the GPU.
fn tensorrt_settings(
    path: &Path,
    info: &ModelInfo,
    args: &RuntimeOptions,
    max_seconds: f64,
) -> Result<TensorRtSettings> {
    let metadata = |key: &str, e: &dyn fmt::Display| Error::Model {
        path: path.to_path_buf(),
        reason: format!("metadata `{key}`: {e}"),
    };
    let precision: Precision = info
        .precision
        .parse()
        .map_err(|e| metadata(keys::PRECISION, &e))?;
    let target_key = keys::QUANTIZATION_TARGET;
    let quantization = match info.raw.get(target_key) {
        Some(t) => Some(
            t.parse::<QuantizationTarget>()
                .map_err(|e| metadata(target_key, &e))?,
        ),
        None => None,
    };
    let profile = OptimizationProfile::new(max_seconds, info.sample_rate, info.receptive_field)
        .map_err(|e| Error::invalid(format!("--max-seconds {max_seconds}: {e}")))?;
    let base = match &args.tensorrt_cache {
        Some(dir) => dir.clone(),
        None => default_cache_base().ok_or_else(|| {
            Error::invalid(
                "no folder for the TensorRT engine cache: neither XDG_CACHE_HOME nor HOME is \
                 set; pass --tensorrt-cache DIR",
            )
        })?,
    };
    let model_sha = w2v_engine::fs::sha256_files(&[path])?;
    let trt_version = tensorrt_version().unwrap_or_else(|reason| {
        tracing::warn!(
            "cannot tell the TensorRT version ({reason}); its engines are cached as version \
             \"unknown\": delete that cache folder after changing TensorRT"
        );
        "unknown".into()
    });
    let gpu = cuda_device(0)
        .map(|d| d.cache_key())
        .unwrap_or_else(|reason| {
            tracing::warn!(
                "cannot identify the GPU ({reason}); its engines are cached as GPU \"unknown\""
            );
            "unknown".into()
        });
    let dir = cache_dir(&base, &model_sha, &trt_version, &gpu);
    let settings = TensorRtSettings::new(precision, quantization, profile, dir);
    if let Some(note) = &settings.note {
        tracing::warn!("{}: {note}", path.display());
    }
    Ok(settings)
}

/// How an ONNX Runtime session was set up, for reports (`bench --json`).
#[derive(Clone, Debug, Serialize)]
pub struct OrtSessionReport {
    /// The execution providers registered, in priority order.
    pub execution_providers: Vec<Provider>,
    pub tensorrt: Option<TensorRtReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TensorRtReport {
    pub settings: TensorRtSettings,
    /// Whether creating the session built (and cached) a TensorRT engine, rather than loading a
    /// cached one.
    pub engine_built: bool,
    /// Creating the session: the engine build, when `engine_built`.
    pub session_seconds: f64,
    /// The engine files now in the cache folder.
    pub engines: Vec<PathBuf>,
}

/// A model opened for inference, and how.
pub struct OpenedModel {
    /// The model file.
    pub path: PathBuf,
    pub backend: Box<dyn Backend + Send>,
    /// For the ort backend.
    pub ort: Option<OrtSessionReport>,
}

fn open_ort(
    path: &Path,
    args: &RuntimeOptions,
    common: BackendOptions,
    longest_input_seconds: f64,
) -> Result<(OrtBackend, OrtSessionReport)> {
    let plan = provider_plan(args)?;
    let mut tensorrt = None;
    let mut execution_providers = Vec::with_capacity(plan.providers.len());
    for p in &plan.providers {
        execution_providers.push(match p {
            Provider::TensorRt => {
                let max_seconds = match args.max_seconds {
                    Some(m) if m < longest_input_seconds => {
                        return Err(Error::invalid(format!(
                            "--max-seconds {m} is shorter than the longest input this command \
                             runs ({longest_input_seconds} s), which TensorRT's engine would not \
                             take"
                        )))
                    }
                    Some(m) => m,
                    None => longest_input_seconds,
                };
                let info = ModelInfo::read(path)?;
                let settings = tensorrt_settings(path, &info, args, max_seconds)?;
                let mut inputs = vec![INPUT_VALUES];
                if info.uses_attention_mask {
                    inputs.push(ATTENTION_MASK);
                }
                let dir = &settings.engine_cache_dir;
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    path: dir.clone(),
                    what: "cannot create the TensorRT engine cache",
                    source,
                })?;
                let options = TensorRtOptions {
                    device_id: 0,
                    fp16: settings.fp16,
                    int8: settings.int8,
                    layer_norm_fp32: settings.layer_norm_fp32,
                    profile_shapes: Some(settings.profile.ort_shapes(&inputs, 1)),
                    cache_dir: Some(dir.clone()),
                };
                tracing::info!(
                    cache = %dir.display(),
                    fp16 = settings.fp16,
                    int8 = settings.int8,
                    profile = ?settings.profile,
                    "TensorRT settings"
                );
                tensorrt = Some(settings);
                ExecutionProvider::TensorRt(options)
            }
            Provider::Cuda => ExecutionProvider::cuda(),
            Provider::Cpu => ExecutionProvider::cpu(),
        });
    }
    let before = tensorrt
        .as_ref()
        .map(|s| EngineCacheListing::read(&s.engine_cache_dir));
    let options = OrtOptions {
        common,
        optimization_level: args.graph_opt,
        execution_providers,
        io_binding: None,
    };
    let start = Instant::now();
    let backend = OrtBackend::load(path, &options)?;
    let session_seconds = start.elapsed().as_secs_f64();
    let tensorrt = match (tensorrt, before) {
        (Some(settings), Some(before)) => {
            let after = EngineCacheListing::read(&settings.engine_cache_dir);
            let built = after.built_since(&before);
            let dir = settings.engine_cache_dir.display();
            if built.is_empty() {
                tracing::info!(
                    "TensorRT: session ready in {session_seconds:.2} s (engines from {dir})"
                );
            } else {
                tracing::info!(
                    "TensorRT: built {} engine(s) in {session_seconds:.1} s, cached in {dir}",
                    built.len()
                );
            }
            Some(TensorRtReport {
                engine_built: !built.is_empty(),
                session_seconds,
                engines: after.engines().map(Path::to_path_buf).collect(),
                settings,
            })
        }
        _ => None,
    };
    let report = OrtSessionReport {
        execution_providers: plan.providers,
        tensorrt,
    };
    Ok((backend, report))
}

/// Where a shipped default model may be: `W2V_MODEL`, next to the installed binary, or the
/// source tree's models/ folder (for `cargo run`).
fn default_model_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(p) = std::env::var_os("W2V_MODEL") {
        c.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            c.push(dir.join("models").join(DEFAULT_MODEL_FILE));
            c.push(dir.join("../share/w2v/models").join(DEFAULT_MODEL_FILE));
        }
    }
    c.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_FILE),
    );
    c
}

/// `model`, or the shipped default model: `W2V_MODEL`, `models/default.onnx` next to the
/// executable (or in `../share/w2v/models`), or the source tree's `models/`.
///
/// ```
/// let model = w2v::resolve_model(None)?;
/// assert!(model.ends_with("default.onnx"));
/// # Ok::<(), w2v::Error>(())
/// ```
pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.to_path_buf());
    }
    let candidates = default_model_candidates();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(Error::NoDefaultModel {
            searched: candidates,
        }),
    }
}

/// Loads the graphs fine-tuning generates on the backend `args` choose.
pub type GraphRunnerFactory =
    Box<dyn Fn(&[u8], &str) -> std::result::Result<Box<dyn GraphRunner>, w2v_engine::BackendError>>;

/// A [`GraphRunnerFactory`] for the backend, threads, graph optimization and provider `args`
/// choose.
/// Training graphs run on CUDA or the CPU: TensorRT builds engines for fixed inference graphs,
/// so an explicit `--provider tensorrt` is refused and `auto` skips it.
pub fn graph_runner_factory(args: &RuntimeOptions) -> Result<GraphRunnerFactory> {
    let common = BackendOptions {
        threads: args.threads,
    };
    let factory: GraphRunnerFactory = match args.backend {
        BackendKind::Tract => {
            if !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu) {
                return Err(Error::invalid(format!(
                    "--provider {}: tract runs on the CPU only; use --backend ort for cuda",
                    args.provider
                )));
            }
            Box::new(move |bytes: &[u8], what: &str| {
                Ok(
                    Box::new(TractGraph::from_bytes(bytes, Path::new(what), &common)?)
                        as Box<dyn GraphRunner>,
                )
            })
        }
        BackendKind::Ort => {
            if args.provider == ProviderRequest::TensorRt {
                return Err(Error::invalid(
                    "--provider tensorrt: fine-tuning runs on cuda or cpu, not TensorRT",
                ));
            }
            let plan = provider_plan(args)?;
            let execution_providers = plan
                .providers
                .iter()
                .filter_map(|p| match p {
                    Provider::TensorRt => None,
                    Provider::Cuda => Some(ExecutionProvider::cuda()),
                    Provider::Cpu => Some(ExecutionProvider::cpu()),
                })
                .collect();
            let options = OrtOptions {
                common,
                optimization_level: args.graph_opt,
                execution_providers,
                io_binding: None,
            };
            Box::new(move |bytes: &[u8], what: &str| {
                Ok(
                    Box::new(OrtGraph::from_bytes(bytes, Path::new(what), &options)?)
                        as Box<dyn GraphRunner>,
                )
            })
        }
    };
    Ok(factory)
}

/// Open the model file `path` for inference. `longest_input_seconds`: the longest input the caller
/// will run (the TensorRT profile's default maximum).
pub fn open_backend(
    path: &Path,
    args: &RuntimeOptions,
    longest_input_seconds: f64,
) -> Result<OpenedModel> {
    if args.backend == BackendKind::Tract
        && !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu)
    {
        return Err(Error::invalid(format!(
            "--provider {}: tract runs on the CPU only; use --backend ort for cuda/tensorrt",
            args.provider
        )));
    }
    if let Some(m) = args.max_seconds.filter(|m| !(m.is_finite() && *m > 0.0)) {
        return Err(Error::invalid(format!(
            "--max-seconds {m}: expected a positive number of seconds"
        )));
    }
    let path = path.to_path_buf();
    if path.is_dir() {
        return Err(Error::Model {
            path,
            reason: "is a directory, not an ONNX model (export it first with `w2v export`)".into(),
        });
    }
    if !path.is_file() {
        return Err(Error::Model {
            path,
            reason: "no such model file".into(),
        });
    }
    let common = BackendOptions {
        threads: args.threads,
    };
    let opened = match args.backend {
        BackendKind::Tract => OpenedModel {
            backend: Box::new(TractBackend::load(&path, &common)?),
            ort: None,
            path,
        },
        BackendKind::Ort => {
            let (backend, report) = open_ort(&path, args, common, longest_input_seconds)?;
            OpenedModel {
                backend: Box::new(backend),
                ort: Some(report),
                path,
            }
        }
    };
    tracing::info!(model = %opened.path.display(), backend = opened.backend.name(), "model loaded");
    Ok(opened)
}
