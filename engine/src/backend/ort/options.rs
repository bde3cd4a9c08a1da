//! What an ONNX Runtime session is made with: graph optimization level, execution providers and
//! their settings, I/O binding.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::GraphOptimizationLevel;

use crate::backend::BackendOptions;

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

    pub(super) fn to_ort(self) -> GraphOptimizationLevel {
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

    pub(super) fn dispatch(&self) -> ExecutionProviderDispatch {
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
    /// Run through an I/O binding ([`OrtBackend`](super::OrtBackend) says what that does); `None`:
    /// when a GPU provider is registered.
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
}
