//! The model and runtime flags every inference command shares, turned into the library's
//! [`RuntimeOptions`].

use std::path::PathBuf;

use anyhow::Result;
use w2v::runtime::{open_backend, OpenedModel};
use w2v::{resolve_model, BackendKind, OptLevel, ProviderRequest, RuntimeOptions};

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model (.onnx made by `w2v export`); defaults to the shipped model.
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Inference backend: tract (pure Rust, CPU, no setup) or ort (ONNX Runtime: CPU, CUDA,
    /// TensorRT; tools/fetch-ort.sh or ORT_DYLIB_PATH provides the library).
    #[arg(long, default_value = "tract", value_parser = backend_parser())]
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

/// `tract` or `ort`, listed in `--help` and in the error for anything else.
fn backend_parser() -> impl clap::builder::TypedValueParser<Value = BackendKind> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(BackendKind::ALL.map(BackendKind::as_str))
        .map(|s| s.parse::<BackendKind>().expect("a listed backend"))
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    s.parse()
}

fn parse_provider(s: &str) -> Result<ProviderRequest, String> {
    s.parse()
        .map_err(|e: w2v::board_support::provider::ParseProviderRequestError| e.to_string())
}

impl ModelArgs {
    /// The library's options for these flags.
    pub fn runtime(&self) -> RuntimeOptions {
        RuntimeOptions {
            backend: self.backend,
            threads: self.threads,
            graph_opt: self.graph_opt,
            provider: self.provider,
            allow_fallback: self.allow_fallback,
            max_seconds: self.max_seconds,
            tensorrt_cache: self.tensorrt_cache.clone(),
        }
    }

    /// `--model`, or the shipped model.
    pub fn path(&self) -> Result<PathBuf> {
        Ok(resolve_model(self.model.as_deref())?)
    }

    /// Open the model; `longest_input_seconds` is the longest input the command will run.
    pub fn open(&self, longest_input_seconds: f64) -> Result<OpenedModel> {
        Ok(open_backend(
            &self.path()?,
            &self.runtime(),
            longest_input_seconds,
        )?)
    }
}
