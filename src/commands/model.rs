//! Choosing and opening a model and its backend: the one place the binary decides this.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;
use w2v_board_support::{
    cache_dir, cuda_device, default_cache_base, tensorrt_version, EngineCacheListing,
    OptimizationProfile, Provider, ProviderAvailability, ProviderError, ProviderPlan,
    ProviderPolicy, ProviderRequest, TensorRtSettings,
};
use w2v_engine::backend::ort::{
    ort_gpu_provider_availability, ExecutionProvider, OptLevel, OrtBackend, OrtGraph, OrtOptions,
    TensorRtOptions, ATTENTION_MASK, INPUT_VALUES,
};
use w2v_engine::backend::tract::{TractBackend, TractGraph};
use w2v_engine::backend::GraphRunner;
use w2v_engine::precision::{Precision, QuantizationTarget};
use w2v_engine::{Backend, BackendOptions, ModelInfo};

/// The shipped default model's file name inside `models/`.
pub const DEFAULT_MODEL_FILE: &str = "default.onnx";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// tract: pure Rust, CPU, no setup.
    Tract,
    /// ONNX Runtime (tools/fetch-ort.sh or ORT_DYLIB_PATH provides the library).
    Ort,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model (.onnx made by `w2v export`); defaults to the shipped model.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Inference backend.
    #[arg(long, value_enum, default_value = "tract")]
    pub backend: BackendKind,
    /// Intra-op threads (default: the runtime's choice).
    #[arg(long)]
    pub threads: Option<usize>,
    /// ONNX Runtime graph optimization level: disable, basic, extended or all.
    #[arg(long, default_value = "all", value_parser = parse_opt_level)]
    pub graph_opt: OptLevel,
    /// ONNX Runtime execution provider: auto (TensorRT, then CUDA, then CPU, whichever are
    /// available), cpu, cuda or tensorrt.
    #[arg(long, default_value = "auto", value_parser = parse_provider)]
    pub provider: ProviderRequest,
    /// With --provider cuda or tensorrt: run on the CPU (with a warning) when that provider is not
    /// available, instead of failing.
    #[arg(long)]
    pub allow_fallback: bool,
    /// TensorRT: the longest input, in seconds, its engine is built for (the optimization profile
    /// spans one receptive field to this, tuned for 10 s), so no input length rebuilds it.
    /// Default: the longest input the command runs (transcribe, eval: --chunk-seconds; bench: the
    /// longest --seconds).
    #[arg(long, value_name = "SECONDS")]
    pub max_seconds: Option<f64>,
    /// TensorRT engine and timing cache folder [default: $XDG_CACHE_HOME/w2v/tensorrt, else
    /// ~/.cache/w2v/tensorrt]; it holds one subfolder per model, TensorRT version and GPU.
    #[arg(long, value_name = "DIR")]
    pub tensorrt_cache: Option<PathBuf>,
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    s.parse()
}

fn parse_provider(s: &str) -> Result<ProviderRequest, String> {
    s.parse()
        .map_err(|e: w2v_board_support::provider::ParseProviderRequestError| e.to_string())
}

/// The provider policy's plan. Unavailable providers skipped by `auto` are logged at info; an
/// explicit request that falls back to the CPU (`--allow-fallback`) is logged at warn (by the
/// policy), with its reason.
fn provider_plan(args: &ModelArgs) -> Result<ProviderPlan> {
    let policy = ProviderPolicy::new(args.provider, args.allow_fallback);
    let available = if args.provider == ProviderRequest::Cpu {
        // Nothing to ask the library.
        ProviderAvailability::cpu_only("not requested")
    } else {
        let gpu = ort_gpu_provider_availability()?;
        ProviderAvailability {
            tensorrt: gpu.tensorrt,
            cuda: gpu.cuda,
            cpu: Ok(()),
        }
    };
    let plan = policy.plan(&available).map_err(|e| match e {
        ProviderError::Unavailable { provider, reason } => anyhow::anyhow!(
            "execution provider {provider} is not available: {reason} \
             (use --allow-fallback to run on the CPU instead)"
        ),
        e @ ProviderError::NoneAvailable { .. } => anyhow::anyhow!(e),
    })?;
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
    args: &ModelArgs,
    max_seconds: f64,
) -> Result<TensorRtSettings> {
    let precision: Precision = info
        .precision
        .parse()
        .with_context(|| format!("{}: metadata `w2v.precision`", path.display()))?;
    let quantization = match info
        .raw
        .get(w2v_engine::model_info::keys::QUANTIZATION_TARGET)
    {
        Some(t) => Some(t.parse::<QuantizationTarget>().with_context(|| {
            format!(
                "{}: metadata `{}`",
                path.display(),
                w2v_engine::model_info::keys::QUANTIZATION_TARGET
            )
        })?),
        None => None,
    };
    let profile = OptimizationProfile::new(max_seconds, info.sample_rate, info.receptive_field)
        .with_context(|| format!("--max-seconds {max_seconds}"))?;
    let base = match &args.tensorrt_cache {
        Some(dir) => dir.clone(),
        None => default_cache_base().context(
            "no folder for the TensorRT engine cache: neither XDG_CACHE_HOME nor HOME is set; \
             pass --tensorrt-cache DIR",
        )?,
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
    pub backend: Box<dyn Backend>,
    /// For the ort backend.
    pub ort: Option<OrtSessionReport>,
}

fn open_ort(
    path: &Path,
    args: &ModelArgs,
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
                    Some(m) if m < longest_input_seconds => bail!(
                        "--max-seconds {m} is shorter than the longest input this command runs \
                         ({longest_input_seconds} s), which TensorRT's engine would not take"
                    ),
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
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("{}: cannot create the TensorRT engine cache", dir.display())
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

pub fn resolve_model(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.to_path_buf());
    }
    let candidates = default_model_candidates();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no --model given and no shipped model found (looked at {})",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Loads the graphs fine-tuning generates on the backend `args` choose.
pub type GraphRunnerFactory =
    Box<dyn Fn(&[u8], &str) -> Result<Box<dyn GraphRunner>, w2v_engine::BackendError>>;

/// A [`GraphRunnerFactory`] for `--backend`, `--threads`, `--graph-opt` and `--provider`.
/// Training graphs run on CUDA or the CPU: TensorRT builds engines for fixed inference graphs,
/// so an explicit `--provider tensorrt` is refused and `auto` skips it.
pub fn graph_runner_factory(args: &ModelArgs) -> Result<GraphRunnerFactory> {
    let common = BackendOptions {
        threads: args.threads,
    };
    let factory: GraphRunnerFactory = match args.backend {
        BackendKind::Tract => {
            if !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu) {
                bail!(
                    "--provider {}: tract runs on the CPU only; use --backend ort for cuda",
                    args.provider
                );
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
                bail!("--provider tensorrt: fine-tuning runs on cuda or cpu, not TensorRT");
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

/// Open the model for inference. `longest_input_seconds`: the longest input the command will run
/// (the TensorRT profile's default maximum).
pub fn open_backend(args: &ModelArgs, longest_input_seconds: f64) -> Result<OpenedModel> {
    if args.backend == BackendKind::Tract
        && !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu)
    {
        bail!(
            "--provider {}: tract runs on the CPU only; use --backend ort for cuda/tensorrt",
            args.provider
        );
    }
    if let Some(m) = args.max_seconds.filter(|m| !(m.is_finite() && *m > 0.0)) {
        bail!("--max-seconds {m}: expected a positive number of seconds");
    }
    let path = resolve_model(args.model.as_deref())?;
    if path.is_dir() {
        bail!(
            "{}: is a directory, not an ONNX model (export it first with `w2v export`)",
            path.display()
        );
    }
    if !path.is_file() {
        bail!("{}: no such model file", path.display());
    }
    let common = BackendOptions {
        threads: args.threads,
    };
    let opened = match args.backend {
        BackendKind::Tract => OpenedModel {
            backend: Box::new(TractBackend::load(&path, &common)?),
            ort: None,
        },
        BackendKind::Ort => {
            let (backend, report) = open_ort(&path, args, common, longest_input_seconds)?;
            OpenedModel {
                backend: Box::new(backend),
                ort: Some(report),
            }
        }
    };
    tracing::info!(model = %path.display(), backend = opened.backend.name(), "model loaded");
    Ok(opened)
}
