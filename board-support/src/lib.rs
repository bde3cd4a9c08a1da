//! Board support for w2v: what machine this is (Jetson model, L4T/JetPack, CPU features, memory,
//! power mode), `tegrastats` telemetry parsing, and the execution-provider policy (which ONNX
//! Runtime providers to register, TensorRT settings and engine-cache location).
//!
//! Pure logic over files and strings: no ONNX Runtime, no GPU needed, so all of it is tested
//! against fixture trees in the real formats. The reported structs derive `Serialize` for
//! `w2v doctor --json`.

pub mod capture;
pub mod platform;
pub mod provider;
pub mod tegrastats;

#[cfg(feature = "microphone")]
pub use capture::Microphone;
pub use capture::{
    input_device_names, sample_ring, AudioSource, CaptureError, FileSource, Pacing, RingConsumer,
    RingProducer,
};
pub use platform::{
    jetpack_for_l4t, parse_nvpmodel, query_power_mode, CpuInfo, JetsonInfo, L4tRelease, MemInfo,
    Platform, PowerMode,
};
pub use provider::{
    cache_dir, default_cache_base, Fallback, OptimizationProfile, Precision, Provider,
    ProviderAvailability, ProviderError, ProviderPlan, ProviderPolicy, ProviderRequest,
    TensorRtError, TensorRtSettings,
};
pub use tegrastats::{
    CpuCore, PowerRail, RamUsage, SwapUsage, TegraStats, TegrastatsError, Utilization,
};
