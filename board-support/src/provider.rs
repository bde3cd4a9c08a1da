//! Execution-provider policy, in one place and as pure logic: which ONNX Runtime execution
//! providers to register, in which order, what was skipped and why; and the TensorRT settings
//! (precision flags, optimization profile, engine-cache directory) as plain data.
//!
//! Nothing here talks to ONNX Runtime: the caller asks it which providers work, fills in a
//! [`ProviderAvailability`], and turns the returned [`ProviderPlan`] into session options.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use w2v_engine::precision::{Precision, QuantizationTarget};

/// An ONNX Runtime execution provider this project uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// The command-line spelling: `tensorrt`, `cuda`, `cpu`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    /// ONNX Runtime's name, as in `get_available_providers()` and its logs.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }
}

/// "TensorRT", "CUDA", "CPU".
impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::TensorRt => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        })
    }
}

/// What the user asked for (`--provider auto|cpu|cuda|tensorrt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderRequest {
    /// The fastest that works: TensorRT, then CUDA, then CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    TensorRt,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown execution provider {0:?}: expected auto, cpu, cuda or tensorrt")]
pub struct ParseProviderRequestError(pub String);

impl FromStr for ProviderRequest {
    type Err = ParseProviderRequestError;

    /// `auto`, `cpu`, `cuda` or `tensorrt`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ProviderRequest::Auto),
            "cpu" => Ok(ProviderRequest::Cpu),
            "cuda" => Ok(ProviderRequest::Cuda),
            "tensorrt" => Ok(ProviderRequest::TensorRt),
            _ => Err(ParseProviderRequestError(s.to_string())),
        }
    }
}

impl fmt::Display for ProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderRequest::Auto => "auto",
            ProviderRequest::Cpu => "cpu",
            ProviderRequest::Cuda => "cuda",
            ProviderRequest::TensorRt => "tensorrt",
        })
    }
}

/// Which providers work here: `Ok(())`, or why not (e.g. "libnvinfer.so.10: cannot open shared
/// object file"). The caller fills this from ONNX Runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderAvailability {
    pub tensorrt: Result<(), String>,
    pub cuda: Result<(), String>,
    pub cpu: Result<(), String>,
}

impl ProviderAvailability {
    /// Only the CPU provider; `reason` says why the GPU ones are not (e.g. "ONNX Runtime was
    /// built without CUDA").
    pub fn cpu_only(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ProviderAvailability {
            tensorrt: Err(reason.clone()),
            cuda: Err(reason),
            cpu: Ok(()),
        }
    }

    /// Every provider available.
    pub fn all() -> Self {
        ProviderAvailability {
            tensorrt: Ok(()),
            cuda: Ok(()),
            cpu: Ok(()),
        }
    }

    /// Whether each provider can run here, judged from what ONNX Runtime reports and what is on
    /// disk: the one check behind both `w2v doctor` and `--provider auto`, so they cannot
    /// disagree. A GPU provider works when the library was built with it, its provider library
    /// (`libonnxruntime_providers_cuda.so`, `..._tensorrt.so`) sits beside the runtime, and an
    /// NVIDIA driver is loaded (`driver_version_file`, normally `/proc/driver/nvidia/version`, or
    /// a Jetson, whose driver is part of L4T). `ort` is `Err(why)` when ONNX Runtime did not load.
    pub fn judge(
        ort: Result<&OrtFacts, &str>,
        on_jetson: bool,
        driver_version_file: &Path,
    ) -> Self {
        let ort = match ort {
            Ok(facts) => facts,
            Err(why) => {
                let reason = format!("ONNX Runtime is not available: {why}");
                return ProviderAvailability {
                    tensorrt: Err(reason.clone()),
                    cuda: Err(reason.clone()),
                    cpu: Err(reason),
                };
            }
        };
        let check = |provider: Provider, provider_lib: &str| -> Result<(), String> {
            if !ort.offered.iter().any(|p| p == provider.ort_name()) {
                return Err(format!(
                    "not built into this ONNX Runtime ({}, version {}): it offers {}; this                      build has no {provider} execution provider (a GPU build of ONNX Runtime, or                      JetPack's on a Jetson, has it)",
                    ort.library.display(),
                    ort.version,
                    ort.offered.join(", ")
                ));
            }
            let dir = ort.library.parent().unwrap_or(Path::new("."));
            if !dir.join(provider_lib).is_file() {
                return Err(format!(
                    "compiled into ONNX Runtime, but {provider_lib} is missing from {}",
                    dir.display()
                ));
            }
            if !on_jetson && !driver_version_file.is_file() {
                return Err(format!(
                    "compiled into ONNX Runtime, but no NVIDIA GPU driver is loaded ({} is \
                     absent)",
                    driver_version_file.display()
                ));
            }
            Ok(())
        };
        ProviderAvailability {
            tensorrt: check(Provider::TensorRt, "libonnxruntime_providers_tensorrt.so"),
            cuda: check(Provider::Cuda, "libonnxruntime_providers_cuda.so"),
            cpu: Ok(()),
        }
    }

    pub fn get(&self, provider: Provider) -> Result<(), &str> {
        let r = match provider {
            Provider::TensorRt => &self.tensorrt,
            Provider::Cuda => &self.cuda,
            Provider::Cpu => &self.cpu,
        };
        r.as_ref().map(|_| ()).map_err(String::as_str)
    }
}

/// What a loaded ONNX Runtime library says about itself: the input of
/// [`ProviderAvailability::judge`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrtFacts {
    /// The shared library loaded.
    pub library: PathBuf,
    pub version: String,
    /// `GetAvailableProviders`: ONNX Runtime's names of the providers it was built with.
    pub offered: Vec<String>,
}

/// The request plus whether an unavailable explicit request may fall back to CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProviderPolicy {
    pub request: ProviderRequest,
    pub allow_fallback: bool,
}

/// A provider that was wanted but is unavailable, and where its work goes instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub from: Provider,
    pub to: Provider,
    pub reason: String,
}

/// The outcome of [`ProviderPolicy::plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProviderPlan {
    pub request: ProviderRequest,
    /// Providers to register, in priority order; never empty. ONNX Runtime assigns each node to
    /// the first that supports it, so TensorRT is followed by CUDA (when available) for the
    /// nodes TensorRT rejects, and CPU comes last.
    pub providers: Vec<Provider>,
    /// Every wanted provider that was unavailable, in the order considered.
    pub fallbacks: Vec<Fallback>,
}

impl ProviderPlan {
    /// The provider that runs the model: the first registered (CPU for a hand-built empty plan,
    /// as ONNX Runtime would).
    pub fn primary(&self) -> Provider {
        self.providers.first().copied().unwrap_or(Provider::Cpu)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("execution provider {provider} was requested but is not available: {reason}")]
    Unavailable { provider: Provider, reason: String },
    #[error("no execution provider is available ({reasons})")]
    NoneAvailable { reasons: String },
}

impl ProviderPolicy {
    pub fn new(request: ProviderRequest, allow_fallback: bool) -> Self {
        ProviderPolicy {
            request,
            allow_fallback,
        }
    }

    /// Decides the providers to register, logging every skipped provider with its reason.
    ///
    /// - `auto`: TensorRT → CUDA → CPU, each one available registered in that order.
    /// - `tensorrt` / `cuda`: that provider (TensorRT with CUDA behind it when available), then
    ///   CPU. If it is unavailable: an error naming it and the reason, or with `allow_fallback`,
    ///   CPU alone.
    /// - `cpu`: CPU.
    pub fn plan(&self, available: &ProviderAvailability) -> Result<ProviderPlan, ProviderError> {
        use Provider::*;
        let wanted: &[Provider] = match self.request {
            ProviderRequest::Auto => &[TensorRt, Cuda, Cpu],
            ProviderRequest::TensorRt => &[TensorRt, Cuda, Cpu],
            ProviderRequest::Cuda => &[Cuda, Cpu],
            ProviderRequest::Cpu => &[Cpu],
        };
        let mut fallbacks = Vec::new();

        // An explicit request: that provider or (only if allowed) CPU.
        if self.request != ProviderRequest::Auto {
            let requested = wanted[0];
            if let Err(reason) = available.get(requested) {
                if !self.allow_fallback || requested == Cpu {
                    return Err(ProviderError::Unavailable {
                        provider: requested,
                        reason: reason.to_string(),
                    });
                }
                if let Err(cpu_reason) = available.get(Cpu) {
                    return Err(ProviderError::NoneAvailable {
                        reasons: format!("{requested}: {reason}; CPU: {cpu_reason}"),
                    });
                }
                tracing::warn!(
                    "execution provider {requested} was requested but is not available \
                     ({reason}); falling back to CPU"
                );
                fallbacks.push(Fallback {
                    from: requested,
                    to: Cpu,
                    reason: reason.to_string(),
                });
                return Ok(ProviderPlan {
                    request: self.request,
                    providers: vec![Cpu],
                    fallbacks,
                });
            }
        }

        let providers: Vec<Provider> = wanted
            .iter()
            .copied()
            .filter(|p| available.get(*p).is_ok())
            .collect();
        if providers.is_empty() {
            let reasons = wanted
                .iter()
                .filter_map(|p| available.get(*p).err().map(|r| format!("{p}: {r}")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ProviderError::NoneAvailable { reasons });
        }
        for (i, p) in wanted.iter().copied().enumerate() {
            let Err(reason) = available.get(p) else {
                continue;
            };
            // Where this provider's work goes: the next available one. (Only CPU can have none
            // after it; ONNX Runtime's CPU provider is always present anyway.)
            let Some(to) = wanted[i + 1..]
                .iter()
                .copied()
                .find(|q| available.get(*q).is_ok())
            else {
                tracing::debug!("execution provider {p} is not available ({reason})");
                continue;
            };
            tracing::info!("execution provider {p} is not available ({reason}); using {to}");
            fallbacks.push(Fallback {
                from: p,
                to,
                reason: reason.to_string(),
            });
        }
        tracing::debug!(request = %self.request, ?providers, "execution provider plan");
        Ok(ProviderPlan {
            request: self.request,
            providers,
            fallbacks,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TensorRtError {
    #[error("invalid TensorRT optimization profile: {0}")]
    Profile(String),
}

/// The length TensorRT is tuned for (`opt`), unless `max_seconds` is shorter.
pub const OPT_SECONDS: f64 = 10.0;

/// A TensorRT optimization profile over the input length, in samples (batch and other dimensions
/// are the caller's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OptimizationProfile {
    pub min_samples: usize,
    pub opt_samples: usize,
    pub max_samples: usize,
}

impl OptimizationProfile {
    /// min = one receptive field (the shortest input that yields a frame), opt = 10 s capped at
    /// max, max = `max_seconds` (rounded to the nearest sample, as inputs of that length are).
    pub fn new(
        max_seconds: f64,
        sample_rate: u32,
        receptive_field: usize,
    ) -> Result<Self, TensorRtError> {
        let bad = |m: String| Err(TensorRtError::Profile(m));
        if sample_rate == 0 || receptive_field == 0 {
            return bad(format!(
                "sample rate ({sample_rate}) and receptive field ({receptive_field}) must be positive"
            ));
        }
        // 24 h is far beyond any single-pass input; it only keeps the arithmetic exact.
        if !(max_seconds.is_finite() && max_seconds > 0.0 && max_seconds <= 86_400.0) {
            return bad(format!(
                "max_seconds must be in (0, 86400], got {max_seconds}"
            ));
        }
        let samples = |seconds: f64| (seconds * f64::from(sample_rate)).round() as usize;
        let max_samples = samples(max_seconds);
        if max_samples < receptive_field {
            return bad(format!(
                "max_seconds {max_seconds} ({max_samples} samples at {sample_rate} Hz) is shorter \
                 than one receptive field ({receptive_field} samples)"
            ));
        }
        let opt_samples = samples(OPT_SECONDS).clamp(receptive_field, max_samples);
        Ok(OptimizationProfile {
            min_samples: receptive_field,
            opt_samples,
            max_samples,
        })
    }

    /// Whether an input of `samples` samples is inside the profile (TensorRT runs it without a
    /// new engine).
    pub fn contains(&self, samples: usize) -> bool {
        (self.min_samples..=self.max_samples).contains(&samples)
    }

    /// The profile as ONNX Runtime's `trt_profile_{min,opt,max}_shapes` values for `[batch,
    /// samples]` inputs, every input with the same shape, e.g. with `input_values` and
    /// `attention_mask`: `input_values:1x400,attention_mask:1x400`.
    pub fn ort_shapes(&self, inputs: &[&str], batch: usize) -> [String; 3] {
        [self.min_samples, self.opt_samples, self.max_samples].map(|n| {
            inputs
                .iter()
                .map(|name| format!("{name}:{batch}x{n}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// Everything the TensorRT provider needs from us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorRtSettings {
    /// `trt_fp16_enable`.
    pub fp16: bool,
    /// `trt_int8_enable`.
    pub int8: bool,
    /// `trt_layer_norm_fp32_fallback`: with fp16 on, keep LayerNorm's reductions in fp32. The fp16
    /// export keeps LayerNorm in fp32 for its range; this keeps TensorRT from lowering it again.
    pub layer_norm_fp32: bool,
    pub profile: OptimizationProfile,
    /// `trt_engine_cache_path` (and `trt_timing_cache_path`), from [`cache_dir`].
    pub engine_cache_dir: PathBuf,
    /// Why the settings use less than the model's precision suggests, for the log.
    pub note: Option<String>,
}

impl TensorRtSettings {
    /// From the model's precision (and, for int8, its quantization target):
    /// - fp32: neither flag;
    /// - fp16: fp16, LayerNorm in fp32;
    /// - int8 for TensorRT (QDQ): int8 and fp16 (layers outside the QDQ pairs run in fp16 rather
    ///   than fp32), LayerNorm in fp32;
    /// - int8 for the CPU, or of unknown layout: neither flag, and a [`note`](Self::note) saying
    ///   why (TensorRT int8 without QDQ would need a calibration table; the model's integer
    ///   matmuls run on CUDA or the CPU).
    pub fn new(
        precision: Precision,
        quantization: Option<QuantizationTarget>,
        profile: OptimizationProfile,
        engine_cache_dir: PathBuf,
    ) -> Self {
        let mut note = None;
        let (fp16, int8) = match (precision, quantization) {
            (Precision::Fp32, _) => (false, false),
            (Precision::Fp16, _) => (true, false),
            (Precision::Int8, Some(QuantizationTarget::TensorRt)) => (true, true),
            (Precision::Int8, target) => {
                note = Some(format!(
                    "this int8 model is quantized for {} (dynamic quantization), which TensorRT \
                     cannot run in int8: TensorRT runs its float parts in fp32 and its integer \
                     matmuls run on CUDA or the CPU; export with `--precision int8 --target \
                     tensorrt` for TensorRT",
                    match target {
                        Some(QuantizationTarget::Cpu) => "the CPU",
                        _ => "an unknown target",
                    }
                ));
                (false, false)
            }
        };
        TensorRtSettings {
            fp16,
            int8,
            layer_norm_fp32: fp16,
            profile,
            engine_cache_dir,
            note,
        }
    }
}

/// The files of a TensorRT engine cache directory (ONNX Runtime's `*.engine`, `*.profile`,
/// `*.timing`) with their modification times, to tell afterwards whether a session built a new
/// engine or loaded a cached one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineCacheListing {
    engines: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

impl EngineCacheListing {
    /// The `*.engine` files in `dir` (none if it does not exist).
    pub fn read(dir: &Path) -> Self {
        let mut engines: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(OsStr::new("engine")))
            .map(|p| {
                let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
                (p, modified)
            })
            .collect();
        engines.sort();
        EngineCacheListing { engines }
    }

    /// The engine files.
    pub fn engines(&self) -> impl Iterator<Item = &Path> {
        self.engines.iter().map(|(p, _)| p.as_path())
    }

    /// Engine files that are new or rewritten since `before`: ONNX Runtime built them.
    pub fn built_since(&self, before: &EngineCacheListing) -> Vec<PathBuf> {
        self.engines
            .iter()
            .filter(|e| !before.engines.contains(e))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// The longest a sanitized name part may be (directory names are limited to 255 bytes).
const MAX_PART: usize = 64;

/// The engine-cache directory for one model on one TensorRT version and GPU:
/// `<base>/<model_sha>-trt<trt_version>-<gpu_name>`. A TensorRT engine is only valid for the
/// model, TensorRT version and GPU it was built on, so all three key the directory. Each part is
/// reduced to `[A-Za-z0-9._-]` (other characters become `_`), the sha lowercased.
pub fn cache_dir(base: &Path, model_sha: &str, trt_version: &str, gpu_name: &str) -> PathBuf {
    base.join(format!(
        "{}-trt{}-{}",
        sanitize(&model_sha.to_ascii_lowercase()),
        sanitize(trt_version),
        sanitize(gpu_name)
    ))
}

/// `[A-Za-z0-9._-]` only: runs of other characters become one `_`; leading and trailing `_` and
/// `.` are dropped (no hidden or `..` names); at most [`MAX_PART`] characters; "unknown" if
/// nothing is left.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches(|c| c == '_' || c == '.');
    let mut part: String = trimmed.chars().take(MAX_PART).collect();
    part.truncate(part.trim_end_matches(['_', '.']).len());
    if part.is_empty() {
        "unknown".to_string()
    } else {
        part
    }
}

/// `$XDG_CACHE_HOME/w2v/tensorrt`, or `~/.cache/w2v/tensorrt`; `None` without either.
pub fn default_cache_base() -> Option<PathBuf> {
    default_cache_base_from(
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// [`default_cache_base`] from given `XDG_CACHE_HOME` and `HOME` values. A relative or empty
/// `XDG_CACHE_HOME` is ignored, as the XDG base-directory spec says.
pub fn default_cache_base_from(
    xdg_cache_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Option<PathBuf> {
    let xdg = xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let cache = xdg.or_else(|| {
        home.filter(|h| !h.is_empty())
            .map(|h| Path::new(h).join(".cache"))
    })?;
    Some(cache.join("w2v").join("tensorrt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize("Orin (nvgpu)"), "Orin_nvgpu");
        assert_eq!(
            sanitize("NVIDIA GeForce RTX 4090"),
            "NVIDIA_GeForce_RTX_4090"
        );
        assert_eq!(sanitize("10.3.0.30"), "10.3.0.30");
        assert_eq!(sanitize("../../etc"), "etc");
        assert_eq!(sanitize(".."), "unknown");
        assert_eq!(sanitize(""), "unknown");
        assert_eq!(sanitize("ü/ß"), "unknown");
        assert_eq!(sanitize(&"a".repeat(300)).len(), MAX_PART);
    }
}
