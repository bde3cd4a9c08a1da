//! `w2v doctor`: what this machine is and what w2v can use on it: platform (Jetson details when
//! present), the ONNX Runtime library and its execution providers, audio input, and the default
//! model. Nothing missing is an error here: each problem is reported with its fix, exit status 0.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use w2v::board_support::{
    cuda_device, default_cache_base, tensorrt_version, GpuDevice, Platform, Provider,
    ProviderPolicy,
};
use w2v::engine::backend::ort::{find_ort_library, ORT_DYLIB_PATH};
use w2v::runtime::{judge_providers, ort_facts};

use w2v::resolve_model;

#[derive(clap::Args)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    platform: Platform,
    gpu: GpuReport,
    onnxruntime: OrtReport,
    audio_input: AudioReport,
    default_model: DefaultModel,
}

#[derive(Serialize)]
struct OrtReport {
    /// Whether the library loaded.
    available: bool,
    /// `ORT_DYLIB_PATH` as set in the environment.
    ort_dylib_path: Option<String>,
    /// The library loaded (or found but unloadable).
    library: Option<PathBuf>,
    version: Option<String>,
    /// Why the library is not available, ending with how to fix it.
    problem: Option<String>,
    /// `GetAvailableProviders`: the execution providers the library was built with.
    providers: Vec<String>,
    cuda: ProviderStatus,
    tensorrt: ProviderStatus,
    /// What `--provider auto` would register, in order (board-support's policy).
    auto_plan: Vec<Provider>,
}

/// The NVIDIA GPU and TensorRT, as the CUDA driver and libnvinfer report them (what keys the
/// TensorRT engine cache), and where that cache is.
#[derive(Serialize)]
struct GpuReport {
    device: Option<GpuDevice>,
    /// Why no GPU could be queried.
    device_problem: Option<String>,
    tensorrt_version: Option<String>,
    tensorrt_problem: Option<String>,
    /// The TensorRT engine cache folder `--tensorrt-cache` defaults to.
    tensorrt_cache: Option<PathBuf>,
}

impl GpuReport {
    fn detect() -> Self {
        let (device, device_problem) = split(cuda_device(0));
        let (tensorrt_version, tensorrt_problem) = split(tensorrt_version());
        GpuReport {
            device,
            device_problem,
            tensorrt_version,
            tensorrt_problem,
            tensorrt_cache: default_cache_base(),
        }
    }
}

fn split<T>(r: Result<T, String>) -> (Option<T>, Option<String>) {
    match r {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    }
}

#[derive(Serialize)]
struct ProviderStatus {
    available: bool,
    /// Why not, or a caveat when available.
    reason: Option<String>,
}

#[derive(Serialize)]
struct AudioReport {
    /// Capture devices `w2v listen --device` accepts.
    input_devices: Vec<String>,
    /// One line: how many devices, or why none can be listed.
    note: String,
}

fn audio_report() -> AudioReport {
    match w2v_board_support::input_device_names() {
        Ok(devices) if devices.is_empty() => AudioReport {
            input_devices: devices,
            note: "no capture devices found (w2v listen needs one, or --input FILE)".into(),
        },
        Ok(devices) => AudioReport {
            note: format!("{} capture devices: {}", devices.len(), devices.join(", ")),
            input_devices: devices,
        },
        Err(e) => AudioReport {
            input_devices: Vec::new(),
            note: e.to_string(),
        },
    }
}

#[derive(Serialize)]
struct DefaultModel {
    /// The model `--model` defaults to, when one is found.
    path: Option<PathBuf>,
    found: bool,
    problem: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let platform = Platform::detect();
    let onnxruntime = ort_report(&platform);
    let default_model = match resolve_model(None) {
        Ok(path) => DefaultModel {
            path: Some(path),
            found: true,
            problem: None,
        },
        Err(e) => DefaultModel {
            path: None,
            found: false,
            problem: Some(format!(
                "{e}; pass --model, set W2V_MODEL, or export one with `w2v export`"
            )),
        },
    };
    let report = Report {
        platform,
        gpu: GpuReport::detect(),
        onnxruntime,
        audio_input: audio_report(),
        default_model,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn ort_report(platform: &Platform) -> OrtReport {
    let env = std::env::var_os(ORT_DYLIB_PATH).map(|v| v.to_string_lossy().into_owned());
    let facts = ort_facts();
    // The same judgement `--provider auto` makes.
    let availability = judge_providers(&facts, platform);
    let (library, version, providers, problem) = match facts {
        Ok(f) => (Some(f.library), Some(f.version), f.offered, None),
        // Found but not loadable still names the file.
        Err(e) => (find_ort_library().ok(), None, Vec::new(), Some(e)),
    };
    let status = |provider: Provider| -> ProviderStatus {
        match availability.get(provider) {
            Ok(()) => ProviderStatus {
                available: true,
                reason: Some(format!(
                    "compiled in; the {provider} libraries are loaded when a session registers it"
                )),
            },
            Err(reason) => ProviderStatus {
                available: false,
                reason: Some(reason.to_string()),
            },
        }
    };
    let auto_plan = ProviderPolicy::default()
        .plan(&availability)
        .map(|p| p.providers)
        .unwrap_or_default();
    OrtReport {
        available: problem.is_none(),
        ort_dylib_path: env,
        library,
        version,
        problem,
        providers,
        cuda: status(Provider::Cuda),
        tensorrt: status(Provider::TensorRt),
        auto_plan,
    }
}

fn text(r: &Report) -> String {
    let p = &r.platform;
    let or_unknown = |s: Option<&str>| s.unwrap_or("unknown").to_string();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut lines: Vec<String> = Vec::new();
    let mut line = |k: &str, v: String| lines.push(format!("{k:<17}{v}"));

    line("arch:", or_unknown(p.arch.as_deref()));
    line("cpu:", or_unknown(p.cpu.model.as_deref()));
    line(
        "cores:",
        format!(
            "{} online, {} present",
            p.cpu
                .logical_cores
                .map_or("?".into(), |n: usize| n.to_string()),
            p.cpu
                .cores_present
                .map_or("?".into(), |n: usize| n.to_string())
        ),
    );
    line(
        "cpu features:",
        if p.cpu.features.is_empty() {
            "(none of interest)".into()
        } else {
            p.cpu.features.join(" ")
        },
    );
    line(
        "memory:",
        match &p.memory {
            Some(m) => format!(
                "{:.1} GiB total, {} available, {} swap",
                gib(m.total_bytes),
                m.available_bytes
                    .map_or("?".into(), |b| format!("{:.1} GiB", gib(b))),
                match m.swap_total_bytes {
                    Some(0) => "no".into(),
                    Some(b) => format!("{:.1} GiB", gib(b)),
                    None => "?".into(),
                }
            ),
            None => "unknown".into(),
        },
    );
    match &p.jetson {
        Some(j) => {
            line("jetson:", or_unknown(j.model.as_deref()));
            line("  soc:", or_unknown(j.soc.as_deref()));
            line(
                "  L4T:",
                j.l4t
                    .as_ref()
                    .map_or("unknown".into(), |l| format!("R{}", l.version)),
            );
            line("  JetPack:", or_unknown(j.jetpack.as_deref()));
            line(
                "  power mode:",
                p.power_mode
                    .as_ref()
                    .map_or("unknown".into(), |m| match m.id {
                        Some(id) => format!("{} (mode {id})", m.name),
                        None => m.name.clone(),
                    }),
            );
        }
        None => line(
            "jetson:",
            match &p.device_model {
                Some(m) => format!("no ({m})"),
                None => "no".into(),
            },
        ),
    }

    let g = &r.gpu;
    line(
        "gpu:",
        match (&g.device, &g.device_problem) {
            (Some(d), _) => format!(
                "{} (compute capability {}.{})",
                d.name, d.compute_capability.0, d.compute_capability.1
            ),
            (None, problem) => format!("none ({})", problem.as_deref().unwrap_or("unknown")),
        },
    );
    line(
        "tensorrt:",
        match (&g.tensorrt_version, &g.tensorrt_problem) {
            (Some(v), _) => v.clone(),
            (None, problem) => format!("not found ({})", problem.as_deref().unwrap_or("unknown")),
        },
    );
    line(
        "  engine cache:",
        g.tensorrt_cache
            .as_deref()
            .map_or("none (no HOME or XDG_CACHE_HOME)".into(), |p| {
                p.display().to_string()
            }),
    );

    let o = &r.onnxruntime;
    match &o.problem {
        None => {
            line(
                "onnxruntime:",
                format!(
                    "{} ({})",
                    or_unknown(o.version.as_deref()),
                    o.library
                        .as_deref()
                        .map_or("?".into(), |l| l.display().to_string())
                ),
            );
            line("  providers:", o.providers.join(", "));
        }
        // The problem says "not available" and how to fix it.
        Some(problem) => line("onnxruntime:", problem.clone()),
    }
    for (name, s) in [("  CUDA:", &o.cuda), ("  TensorRT:", &o.tensorrt)] {
        let verdict = if s.available { "found" } else { "not found" };
        line(
            name,
            match &s.reason {
                Some(reason) => format!("{verdict}: {reason}"),
                None => verdict.into(),
            },
        );
    }
    line(
        "  auto plan:",
        if o.auto_plan.is_empty() {
            "none".into()
        } else {
            o.auto_plan
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" > ")
        },
    );
    line("audio input:", r.audio_input.note.clone());
    line(
        "default model:",
        match (&r.default_model.path, &r.default_model.problem) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(problem)) => format!("not found: {problem}"),
            (None, None) => "not found".into(),
        },
    );
    let mut s = lines.join("\n");
    s.push('\n');
    s
}
