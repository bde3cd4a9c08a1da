//! Execution-provider policy and TensorRT settings.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use w2v_board_support::provider::default_cache_base_from;
use w2v_board_support::{
    cache_dir, EngineCacheListing, OptimizationProfile, Provider, ProviderAvailability,
    ProviderError, ProviderPolicy, ProviderRequest, TensorRtError, TensorRtSettings,
};
use w2v_engine::precision::{ParseError, Precision, QuantizationTarget};

const NO_CUDA: &str = "libcudart.so.12: cannot open shared object file: No such file or directory";
const NO_TRT: &str = "libnvinfer.so.10: cannot open shared object file: No such file or directory";

fn gpu_without_tensorrt() -> ProviderAvailability {
    ProviderAvailability {
        tensorrt: Err(NO_TRT.into()),
        ..ProviderAvailability::all()
    }
}

fn policy(request: &str, allow_fallback: bool) -> ProviderPolicy {
    ProviderPolicy::new(request.parse().unwrap(), allow_fallback)
}

#[test]
fn request_parsing() {
    assert_eq!("auto".parse(), Ok(ProviderRequest::Auto));
    assert_eq!("cpu".parse(), Ok(ProviderRequest::Cpu));
    assert_eq!("CUDA".parse(), Ok(ProviderRequest::Cuda));
    assert_eq!(" tensorrt ".parse(), Ok(ProviderRequest::TensorRt));
    let err = "trt".parse::<ProviderRequest>().unwrap_err().to_string();
    assert!(
        err.contains("\"trt\"") && err.contains("auto, cpu, cuda or tensorrt"),
        "{err}"
    );
    for r in ["auto", "cpu", "cuda", "tensorrt"] {
        assert_eq!(r.parse::<ProviderRequest>().unwrap().to_string(), r);
    }
    assert_eq!(ProviderRequest::default(), ProviderRequest::Auto);
}

#[test]
fn auto_with_every_provider() {
    let plan = policy("auto", false)
        .plan(&ProviderAvailability::all())
        .unwrap();
    assert_eq!(
        plan.providers,
        [Provider::TensorRt, Provider::Cuda, Provider::Cpu]
    );
    assert_eq!(plan.primary(), Provider::TensorRt);
    assert!(plan.fallbacks.is_empty());
}

#[test]
fn auto_without_tensorrt_uses_cuda() {
    let plan = policy("auto", false).plan(&gpu_without_tensorrt()).unwrap();
    assert_eq!(plan.providers, [Provider::Cuda, Provider::Cpu]);
    assert_eq!(plan.fallbacks.len(), 1);
    let f = &plan.fallbacks[0];
    assert_eq!((f.from, f.to), (Provider::TensorRt, Provider::Cuda));
    assert_eq!(f.reason, NO_TRT);
}

#[test]
fn auto_without_gpu_uses_cpu_and_says_why() {
    let plan = policy("auto", false)
        .plan(&ProviderAvailability::cpu_only(
            "ONNX Runtime was built without CUDA",
        ))
        .unwrap();
    assert_eq!(plan.providers, [Provider::Cpu]);
    let chain: Vec<_> = plan.fallbacks.iter().map(|f| (f.from, f.to)).collect();
    // Each skipped provider's work goes to the next one that is available.
    assert_eq!(
        chain,
        [
            (Provider::TensorRt, Provider::Cpu),
            (Provider::Cuda, Provider::Cpu)
        ]
    );
    assert!(plan
        .fallbacks
        .iter()
        .all(|f| f.reason == "ONNX Runtime was built without CUDA"));
}

#[test]
fn auto_with_tensorrt_but_no_cuda_sends_rejected_nodes_to_cpu() {
    let avail = ProviderAvailability {
        cuda: Err(NO_CUDA.into()),
        ..ProviderAvailability::all()
    };
    let plan = policy("auto", false).plan(&avail).unwrap();
    assert_eq!(plan.providers, [Provider::TensorRt, Provider::Cpu]);
    assert_eq!(plan.fallbacks.len(), 1);
    assert_eq!(
        (plan.fallbacks[0].from, plan.fallbacks[0].to),
        (Provider::Cuda, Provider::Cpu)
    );
}

#[test]
fn explicit_cuda_missing_is_an_error_naming_cuda_and_the_reason() {
    let err = policy("cuda", false)
        .plan(&ProviderAvailability::cpu_only(NO_CUDA))
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Unavailable {
            provider: Provider::Cuda,
            reason: NO_CUDA.into()
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("CUDA") && msg.contains(NO_CUDA), "{msg}");
}

#[test]
fn explicit_cuda_missing_with_fallback_uses_cpu_with_the_reason() {
    let plan = policy("cuda", true)
        .plan(&ProviderAvailability::cpu_only(NO_CUDA))
        .unwrap();
    assert_eq!(plan.request, ProviderRequest::Cuda);
    assert_eq!(plan.providers, [Provider::Cpu]);
    assert_eq!(plan.fallbacks.len(), 1);
    let f = &plan.fallbacks[0];
    assert_eq!(
        (f.from, f.to, f.reason.as_str()),
        (Provider::Cuda, Provider::Cpu, NO_CUDA)
    );
}

#[test]
fn explicit_providers_when_available() {
    let all = ProviderAvailability::all();
    assert_eq!(
        policy("cuda", false).plan(&all).unwrap().providers,
        [Provider::Cuda, Provider::Cpu]
    );
    assert_eq!(
        policy("cpu", false).plan(&all).unwrap().providers,
        [Provider::Cpu]
    );
    assert_eq!(
        policy("tensorrt", false).plan(&all).unwrap().providers,
        [Provider::TensorRt, Provider::Cuda, Provider::Cpu]
    );
    // An explicit CPU request never touches the GPU providers, even when they are broken.
    let plan = policy("cpu", false)
        .plan(&ProviderAvailability::cpu_only(NO_CUDA))
        .unwrap();
    assert_eq!(
        (plan.providers.as_slice(), plan.fallbacks.len()),
        ([Provider::Cpu].as_slice(), 0)
    );
}

#[test]
fn explicit_tensorrt_missing() {
    let err = policy("tensorrt", false)
        .plan(&gpu_without_tensorrt())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("TensorRT") && msg.contains(NO_TRT), "{msg}");
    // With fallback it goes to CPU, as any explicit request does, not to CUDA.
    let plan = policy("tensorrt", true)
        .plan(&gpu_without_tensorrt())
        .unwrap();
    assert_eq!(plan.providers, [Provider::Cpu]);
    assert_eq!(plan.fallbacks[0].from, Provider::TensorRt);
}

#[test]
fn nothing_available() {
    let none = ProviderAvailability {
        cpu: Err("CPU provider disabled".into()),
        ..ProviderAvailability::cpu_only("no GPU")
    };
    let err = policy("auto", true).plan(&none).unwrap_err();
    assert!(matches!(err, ProviderError::NoneAvailable { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("TensorRT: no GPU") && msg.contains("CPU: CPU provider disabled"),
        "{msg}"
    );
    assert!(matches!(
        policy("cuda", true).plan(&none),
        Err(ProviderError::NoneAvailable { .. })
    ));
    assert!(matches!(
        policy("cpu", true).plan(&none),
        Err(ProviderError::Unavailable {
            provider: Provider::Cpu,
            ..
        })
    ));
}

#[test]
fn plan_serializes() {
    let plan = policy("auto", false).plan(&gpu_without_tensorrt()).unwrap();
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "request": "auto",
            "providers": ["cuda", "cpu"],
            "fallbacks": [{"from": "tensorrt", "to": "cuda", "reason": NO_TRT}],
        })
    );
    assert_eq!(Provider::TensorRt.ort_name(), "TensorrtExecutionProvider");
    assert_eq!(Provider::Cuda.name(), "cuda");
}

#[test]
fn precision_flags() {
    let profile = OptimizationProfile::new(30.0, 16_000, 400).unwrap();
    let settings = |p: &str, target: Option<&str>| {
        TensorRtSettings::new(
            p.parse().unwrap(),
            target.map(|t| t.parse().unwrap()),
            profile,
            PathBuf::from("/c"),
        )
    };
    let flags = |p: &str, target: Option<&str>| {
        let s = settings(p, target);
        (s.fp16, s.int8, s.layer_norm_fp32, s.note.is_some())
    };
    assert_eq!(flags("fp32", None), (false, false, false, false));
    assert_eq!(flags("fp16", None), (true, false, true, false));
    // QDQ int8: TensorRT's explicit quantization, fp16 for the rest.
    assert_eq!(flags("INT8", Some("tensorrt")), (true, true, true, false));
    // Dynamic (CPU) int8 or unknown layout: no int8 flag, which would want a calibration table.
    assert_eq!(flags("int8", Some("cpu")), (false, false, false, true));
    assert_eq!(flags("int8", None), (false, false, false, true));
    let note = settings("int8", Some("cpu")).note.unwrap();
    assert!(
        note.contains("the CPU") && note.contains("--target tensorrt"),
        "{note}"
    );
    assert_eq!(
        "bf16".parse::<Precision>(),
        Err(ParseError::Precision("bf16".into()))
    );
    assert_eq!(
        " TensorRT".parse::<QuantizationTarget>(),
        Ok(QuantizationTarget::TensorRt)
    );
    assert_eq!(
        "gpu".parse::<QuantizationTarget>(),
        Err(ParseError::QuantizationTarget("gpu".into()))
    );
    let v = serde_json::to_value(settings("fp16", None)).unwrap();
    assert_eq!(v["fp16"], true);
    assert_eq!(v["profile"]["max_samples"], 480_000);
    assert_eq!(v["engine_cache_dir"], "/c");
}

#[test]
fn optimization_profiles() {
    // wav2vec2 at 16 kHz: 400-sample receptive field.
    let p = OptimizationProfile::new(30.0, 16_000, 400).unwrap();
    assert_eq!(
        (p.min_samples, p.opt_samples, p.max_samples),
        (400, 160_000, 480_000)
    );
    assert_eq!(
        p.ort_shapes(&["input_values"], 1),
        [
            "input_values:1x400",
            "input_values:1x160000",
            "input_values:1x480000"
        ]
    );
    // Every input gets the same shape (the attention mask is per sample).
    assert_eq!(
        p.ort_shapes(&["input_values", "attention_mask"], 2)[2],
        "input_values:2x480000,attention_mask:2x480000"
    );
    assert!(p.contains(400) && p.contains(480_000) && p.contains(200_000));
    assert!(!p.contains(399) && !p.contains(480_001));
    // Inputs are a whole number of samples: the maximum rounds to the nearest, so an input of
    // `round(seconds * rate)` samples is always inside.
    let p = OptimizationProfile::new(1.000_03, 16_000, 400).unwrap();
    assert!(p.contains((1.000_03_f64 * 16_000.0).round() as usize));
    // opt is capped at max.
    let p = OptimizationProfile::new(4.5, 16_000, 400).unwrap();
    assert_eq!(
        (p.min_samples, p.opt_samples, p.max_samples),
        (400, 72_000, 72_000)
    );
    // max exactly one receptive field.
    let p = OptimizationProfile::new(0.025, 16_000, 400).unwrap();
    assert_eq!(
        (p.min_samples, p.opt_samples, p.max_samples),
        (400, 400, 400)
    );

    for (secs, sr, rf) in [
        (0.01, 16_000, 400),
        (0.0, 16_000, 400),
        (-1.0, 16_000, 400),
        (f64::NAN, 16_000, 400),
        (f64::INFINITY, 16_000, 400),
        (1e9, 16_000, 400),
        (30.0, 0, 400),
        (30.0, 16_000, 0),
    ] {
        let err = OptimizationProfile::new(secs, sr, rf).unwrap_err();
        assert!(
            matches!(err, TensorRtError::Profile(_)),
            "{secs} {sr} {rf}: {err}"
        );
    }
}

#[test]
fn engine_cache_directory() {
    let sha = "3F5A0C9E7B21D4A68C0E5F1B2A3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E";
    let dir = cache_dir(
        Path::new("/var/cache/w2v/tensorrt"),
        sha,
        "10.3.0",
        "Orin (nvgpu)",
    );
    assert_eq!(
        dir,
        Path::new("/var/cache/w2v/tensorrt")
            .join(format!("{}-trt10.3.0-Orin_nvgpu", sha.to_ascii_lowercase()))
    );
    // Different GPU or TensorRT version, different directory.
    let base = Path::new("/c");
    assert_ne!(
        cache_dir(base, sha, "10.3.0", "Orin"),
        cache_dir(base, sha, "10.7.0", "Orin")
    );
    assert_ne!(
        cache_dir(base, sha, "10.3.0", "Orin"),
        cache_dir(base, sha, "10.3.0", "NVIDIA GeForce RTX 4090")
    );
    // Hostile names cannot escape the base directory.
    let dir = cache_dir(base, "../../x", "1/../../2", "a\0b/../c d");
    assert_eq!(dir.parent(), Some(base));
    let name = dir.file_name().unwrap().to_str().unwrap();
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "{name}"
    );
    assert_eq!(name, "x-trt1_.._.._2-a_b_.._c_d");
    assert_eq!(
        cache_dir(base, "", "", "").file_name().unwrap(),
        "unknown-trtunknown-unknown"
    );
}

#[test]
fn default_cache_base_locations() {
    let os = |s: &'static str| Some(OsStr::new(s));
    assert_eq!(
        default_cache_base_from(os("/xdg"), os("/home/u")),
        Some(PathBuf::from("/xdg/w2v/tensorrt"))
    );
    assert_eq!(
        default_cache_base_from(None, os("/home/u")),
        Some(PathBuf::from("/home/u/.cache/w2v/tensorrt"))
    );
    // Relative or empty XDG_CACHE_HOME is ignored.
    assert_eq!(
        default_cache_base_from(os("rel/cache"), os("/home/u")),
        Some(PathBuf::from("/home/u/.cache/w2v/tensorrt"))
    );
    assert_eq!(
        default_cache_base_from(os(""), os("/home/u")),
        Some(PathBuf::from("/home/u/.cache/w2v/tensorrt"))
    );
    assert_eq!(default_cache_base_from(None, None), None);
    assert_eq!(default_cache_base_from(None, os("")), None);
}

#[test]
fn engine_cache_listing_tells_built_from_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let missing = EngineCacheListing::read(&dir.path().join("missing"));
    assert_eq!(missing.engines().count(), 0);

    let engine = dir
        .path()
        .join("TensorrtExecutionProvider_TRTKernel_graph_main_1_0_sm87.engine");
    std::fs::write(dir.path().join("x.profile"), b"p").unwrap();
    std::fs::write(dir.path().join("x.timing"), b"t").unwrap();
    let empty = EngineCacheListing::read(dir.path());
    assert_eq!(empty.engines().count(), 0, "only *.engine files count");

    std::fs::write(&engine, b"engine").unwrap();
    let built = EngineCacheListing::read(dir.path());
    assert_eq!(built.built_since(&empty), std::slice::from_ref(&engine));
    assert_eq!(built.engines().collect::<Vec<_>>(), [engine.as_path()]);

    // Loading a cached engine leaves it as it was.
    assert!(EngineCacheListing::read(dir.path())
        .built_since(&built)
        .is_empty());

    // Rebuilding rewrites it.
    let f = std::fs::File::options().write(true).open(&engine).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        EngineCacheListing::read(dir.path()).built_since(&built),
        [engine]
    );
}

/// The availability check shared by `w2v doctor` and `--provider auto`, on fixture folders laid
/// out as the ONNX Runtime wheels lay out their libraries.
#[test]
fn availability_is_judged_from_the_build_the_provider_libraries_and_the_driver() {
    use w2v_board_support::OrtFacts;
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libonnxruntime.so.1.23.0");
    std::fs::write(&lib, b"").unwrap();
    let driver = dir.path().join("nvidia-version");
    let cpu_build = OrtFacts {
        library: lib.clone(),
        version: "1.23.0".into(),
        offered: vec!["CPUExecutionProvider".into()],
    };
    // A CPU-only build: neither GPU provider, whatever the driver.
    std::fs::write(&driver, b"NVRM version: 540").unwrap();
    let a = ProviderAvailability::judge(Ok(&cpu_build), false, &driver);
    assert_eq!(a.cpu, Ok(()));
    for (p, name) in [(Provider::Cuda, "CUDA"), (Provider::TensorRt, "TensorRT")] {
        let why = a.get(p).unwrap_err();
        assert!(why.contains("not built into this ONNX Runtime"), "{why}");
        assert!(why.contains("offers CPUExecutionProvider"), "{why}");
        assert!(
            why.contains(&format!("no {name} execution provider")),
            "{why}"
        );
    }
    // A GPU build whose provider libraries are missing.
    let gpu_build = OrtFacts {
        offered: vec![
            "TensorrtExecutionProvider".into(),
            "CUDAExecutionProvider".into(),
            "CPUExecutionProvider".into(),
        ],
        ..cpu_build
    };
    let a = ProviderAvailability::judge(Ok(&gpu_build), false, &driver);
    let why = a.cuda.clone().unwrap_err();
    assert!(
        why.contains("libonnxruntime_providers_cuda.so is missing"),
        "{why}"
    );
    // With them, the driver decides (a Jetson needs no /proc driver file).
    for so in ["cuda", "tensorrt"] {
        std::fs::write(
            dir.path().join(format!("libonnxruntime_providers_{so}.so")),
            b"",
        )
        .unwrap();
    }
    let a = ProviderAvailability::judge(Ok(&gpu_build), false, &driver);
    assert_eq!(a, ProviderAvailability::all());
    std::fs::remove_file(&driver).unwrap();
    let a = ProviderAvailability::judge(Ok(&gpu_build), false, &driver);
    assert!(a
        .tensorrt
        .clone()
        .unwrap_err()
        .contains("no NVIDIA GPU driver"));
    assert_eq!(a.cpu, Ok(()));
    let a = ProviderAvailability::judge(Ok(&gpu_build), true, &driver);
    assert_eq!(a, ProviderAvailability::all());
    // No ONNX Runtime at all: nothing, not even the CPU, with the reason.
    let a = ProviderAvailability::judge(Err("libonnxruntime.so: not found"), false, &driver);
    assert!(a
        .cpu
        .clone()
        .unwrap_err()
        .contains("libonnxruntime.so: not found"));
    assert!(ProviderPolicy::default().plan(&a).is_err());
}
