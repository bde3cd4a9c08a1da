//! Board support for w2v: what machine this is (Jetson model, L4T/JetPack, CPU features, memory,
//! power mode; NVIDIA GPU and TensorRT version), `tegrastats` telemetry parsing, and the
//! execution-provider policy (which ONNX Runtime providers to register, TensorRT settings and
//! engine-cache location).
//!
//! Mostly pure logic over files and strings: no ONNX Runtime, no GPU needed, so it is tested
//! against fixture trees in the real formats. The exceptions ask the system at run time and say
//! why when they cannot: `nvpmodel -q`, `tegrastats`, and the CUDA driver and TensorRT libraries
//! ([`nvidia`]). The reported structs derive `Serialize` for
//! `w2v doctor --json`.

pub mod capture;
pub mod nvidia;
pub mod platform;
pub mod provider;
pub mod tegrastats;

#[cfg(feature = "microphone")]
pub use capture::Microphone;
pub use capture::{
    input_device_names, sample_ring, AudioSource, CaptureError, FileSource, Pacing, RingConsumer,
    RingProducer,
};
pub use nvidia::{cuda_device, tensorrt_version, GpuDevice};
pub use platform::{
    jetpack_for_l4t, parse_nvpmodel, query_power_mode, CpuInfo, JetsonInfo, L4tRelease, MemInfo,
    Platform, PowerMode,
};
pub use provider::{
    cache_dir, default_cache_base, EngineCacheListing, Fallback, OptimizationProfile, OrtFacts,
    Provider, ProviderAvailability, ProviderError, ProviderPlan, ProviderPolicy, ProviderRequest,
    TensorRtError, TensorRtSettings,
};
pub use tegrastats::{
    CpuCore, PowerRail, RamUsage, SamplerError, Stat, SwapUsage, TegraStats, TegrastatsError,
    TegrastatsSampler, TelemetrySummary, Utilization,
};
