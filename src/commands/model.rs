//! Choosing and opening a model and its backend: the one place the binary decides this.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::ValueEnum;
use w2v_board_support::{
    Provider, ProviderAvailability, ProviderError, ProviderPolicy, ProviderRequest,
};
use w2v_engine::backend::ort::{
    ort_gpu_provider_availability, ExecutionProvider, OptLevel, OrtBackend, OrtGraph, OrtOptions,
};
use w2v_engine::backend::tract::{TractBackend, TractGraph};
use w2v_engine::backend::GraphRunner;
use w2v_engine::{Backend, BackendOptions};

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
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    s.parse()
}

fn parse_provider(s: &str) -> Result<ProviderRequest, String> {
    s.parse()
        .map_err(|e: w2v_board_support::provider::ParseProviderRequestError| e.to_string())
}

/// The ONNX Runtime execution providers to register, by the provider policy. Unavailable
/// providers skipped by `auto` are logged at info; an explicit request that falls back to the CPU
/// (`--allow-fallback`) is logged at warn (by the policy), with its reason.
fn ort_execution_providers(args: &ModelArgs) -> Result<Vec<ExecutionProvider>> {
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
    Ok(plan
        .providers
        .iter()
        .map(|p| match p {
            Provider::TensorRt => ExecutionProvider::tensorrt(),
            Provider::Cuda => ExecutionProvider::cuda(),
            Provider::Cpu => ExecutionProvider::cpu(),
        })
        .collect())
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
pub fn graph_runner_factory(args: &ModelArgs) -> Result<GraphRunnerFactory> {
    let common = BackendOptions {
        threads: args.threads,
    };
    let factory: GraphRunnerFactory = match args.backend {
        BackendKind::Tract => {
            if !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu) {
                bail!(
                    "--provider {}: tract runs on the CPU only; use --backend ort for cuda/tensorrt",
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
            let options = OrtOptions {
                common,
                optimization_level: args.graph_opt,
                execution_providers: ort_execution_providers(args)?,
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

pub fn open_backend(args: &ModelArgs) -> Result<Box<dyn Backend>> {
    if args.backend == BackendKind::Tract
        && !matches!(args.provider, ProviderRequest::Auto | ProviderRequest::Cpu)
    {
        bail!(
            "--provider {}: tract runs on the CPU only; use --backend ort for cuda/tensorrt",
            args.provider
        );
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
    let backend: Box<dyn Backend> = match args.backend {
        BackendKind::Tract => Box::new(TractBackend::load(&path, &common)?),
        BackendKind::Ort => {
            let options = OrtOptions {
                common,
                optimization_level: args.graph_opt,
                execution_providers: ort_execution_providers(args)?,
            };
            Box::new(OrtBackend::load(&path, &options)?)
        }
    };
    tracing::info!(model = %path.display(), backend = backend.name(), "model loaded");
    Ok(backend)
}
