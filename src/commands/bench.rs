//! `w2v bench`: load time, first-inference time, and per input length the model's compute time,
//! real-time factor, peak memory and achieved GFLOP/s, on synthetic audio.

use std::process::ExitCode;
use std::time::Instant;

use std::ffi::OsStr;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use w2v_board_support::{Platform, Stat, TegrastatsSampler, TelemetrySummary};
use w2v_engine::audio::normalize;
use w2v_engine::bench::{
    megabytes, peak_rss_bytes, summarize, synthetic_audio, Arithmetic, Dimensions,
};
use w2v_engine::{Backend, Batch, ModelInfo};

use super::model::ModelArgs;
use w2v::runtime::OrtSessionReport;
use w2v::BackendKind;

/// Seed of the synthetic audio (the same for every length and run, so results are comparable).
const AUDIO_SEED: u64 = 0x5eed;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Input lengths to time, in seconds of audio, comma-separated.
    #[arg(long, default_value = "1,10,30")]
    seconds: String,
    /// Timed runs per length (each length also gets one untimed warm-up run first).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Sample the board with `tegrastats` (Jetson) during the timed runs: RAM, CPU and GPU load,
    /// temperatures, power rails.
    #[arg(long)]
    telemetry: bool,
    /// `tegrastats` sampling interval for --telemetry, in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    telemetry_interval_ms: u32,
}

#[derive(Serialize)]
struct Report {
    model: String,
    backend: &'static str,
    /// The ONNX Runtime version, for the ort backend.
    ort_version: Option<String>,
    /// For the ort backend: the execution providers registered and, with TensorRT, its settings
    /// and whether loading built the engine (how long that took is in `load_seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    ort_session: Option<OrtSessionReport>,
    /// `--threads`; null means the runtime's default.
    threads: Option<usize>,
    runs: usize,
    sample_rate: u32,
    /// Opening the model (reading it and, on ort, building the session).
    load_seconds: f64,
    /// The first inference (on the first length), which includes any lazy compilation.
    first_inference_seconds: f64,
    /// Peak resident memory of the whole process (VmHWM), in MB (MiB).
    peak_rss_mb: Option<f64>,
    lengths: Vec<LengthReport>,
    /// `--telemetry`: the board over the runs (warm-up and timed, every length).
    #[serde(skip_serializing_if = "Option::is_none")]
    telemetry: Option<TelemetrySummary>,
}

#[derive(Serialize)]
struct LengthReport {
    seconds: f64,
    samples: usize,
    frames: usize,
    /// The untimed warm-up run.
    first_seconds: f64,
    min_seconds: f64,
    median_seconds: f64,
    p95_seconds: f64,
    max_seconds: f64,
    /// Median compute time / audio seconds.
    real_time_factor: f64,
    /// Floating-point operations of one pass over this input (2 per multiply-accumulate).
    gflop: Option<f64>,
    gflop_per_audio_second: Option<f64>,
    /// `gflop / median_seconds`.
    achieved_gflop_per_second: Option<f64>,
    /// GFLOP by part, for seeing where the time may go.
    gflop_by_part: Option<GflopByPart>,
    /// Process peak resident memory after this length's runs, in MB (MiB).
    peak_rss_mb: Option<f64>,
}

#[derive(Serialize)]
struct GflopByPart {
    conv: f64,
    feature_projection: f64,
    positional_conv: f64,
    attention_projections: f64,
    attention_scores: f64,
    feed_forward: f64,
    lm_head: f64,
}

impl From<&Arithmetic> for GflopByPart {
    fn from(a: &Arithmetic) -> Self {
        let g = |macs: u64| 2.0 * macs as f64 / 1e9;
        GflopByPart {
            conv: g(a.conv),
            feature_projection: g(a.feature_projection),
            positional_conv: g(a.positional_conv),
            attention_projections: g(a.attention_projections),
            attention_scores: g(a.attention_scores),
            feed_forward: g(a.feed_forward),
            lm_head: g(a.lm_head),
        }
    }
}

/// `1,10,30` → seconds; each a positive, finite number.
fn parse_seconds(list: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        let value: f64 = item
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .with_context(|| {
                format!("--seconds {list:?}: {item:?} is not a positive number of seconds")
            })?;
        out.push(value);
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let lengths = parse_seconds(&args.seconds)?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let model_path = args.model.path()?;
    let start = Instant::now();
    let longest = lengths.iter().copied().fold(0.0, f64::max);
    let opened = args.model.open(longest)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let mut backend = opened.backend;
    let info = backend.info().clone();
    let receptive_field = info.receptive_field as f64 / f64::from(info.sample_rate);
    if let Some(&short) = lengths
        .iter()
        .find(|&&s| info.frames_for_samples(samples_for(s, &info)) == 0)
    {
        bail!(
            "--seconds {short}: shorter than the model's receptive field ({:.1} ms), so no frames",
            receptive_field * 1000.0
        );
    }
    let ort_version = match args.model.backend {
        BackendKind::Ort => w2v_engine::backend::ort::ort_version().ok(),
        BackendKind::Tract => None,
    };
    // The arithmetic is informative only: a config it cannot read leaves it out (logged).
    let dims = Dimensions::of(&info)
        .map_err(|e| tracing::warn!("cannot count the model's arithmetic: {e}"))
        .ok();

    let sampler = if args.telemetry {
        Some(start_telemetry(args.telemetry_interval_ms)?)
    } else {
        None
    };
    let mut rows = Vec::with_capacity(lengths.len());
    for &seconds in &lengths {
        let mut samples = synthetic_audio(seconds, info.sample_rate, AUDIO_SEED);
        if info.do_normalize {
            normalize(&mut samples);
        }
        let lens = [samples.len()];
        let batch = Batch::single(&samples, &lens);
        let mut time_one = || -> Result<(f64, usize)> {
            let t = Instant::now();
            let logits = backend.run(&batch)?;
            Ok((t.elapsed().as_secs_f64(), logits.frames))
        };
        let (first_seconds, frames) = time_one()?;
        let mut times = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            times.push(time_one()?.0);
        }
        let stats = summarize(&times).context("timings are not finite")?;
        let work = dims.as_ref().map(|d| d.arithmetic(samples.len()));
        let gflop = work.as_ref().map(Arithmetic::gflop);
        rows.push(LengthReport {
            seconds,
            samples: samples.len(),
            frames,
            first_seconds,
            min_seconds: stats.min,
            median_seconds: stats.median,
            p95_seconds: stats.p95,
            max_seconds: stats.max,
            real_time_factor: stats.median / seconds,
            gflop,
            gflop_per_audio_second: gflop.map(|g| g / seconds),
            achieved_gflop_per_second: gflop.map(|g| g / stats.median),
            gflop_by_part: work.as_ref().map(GflopByPart::from),
            peak_rss_mb: peak_rss_bytes().map(megabytes),
        });
    }

    let telemetry = sampler.map(TegrastatsSampler::stop);
    if let Some(t) = &telemetry {
        if t.samples == 0 {
            tracing::warn!("--telemetry: tegrastats printed no samples during the run");
        }
    }
    let report = Report {
        model: model_path.display().to_string(),
        backend: backend.name(),
        ort_version,
        ort_session: opened.ort,
        threads: args.model.threads,
        runs: args.runs,
        sample_rate: info.sample_rate,
        load_seconds,
        first_inference_seconds: rows.first().map_or(0.0, |r| r.first_seconds),
        peak_rss_mb: peak_rss_bytes().map(megabytes),
        lengths: rows,
        telemetry,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tegrastats` from `PATH`. It comes with JetPack; elsewhere this fails saying the machine is not
/// a Jetson, or (a `tegrastats` found anyway) warns so.
fn start_telemetry(interval_ms: u32) -> Result<TegrastatsSampler> {
    let jetson = Platform::detect().is_jetson();
    let sampler = TegrastatsSampler::start(OsStr::new("tegrastats"), interval_ms).map_err(|e| {
        anyhow::anyhow!(
            "--telemetry: {e} (tegrastats comes with JetPack on Jetson boards{})",
            if jetson {
                ""
            } else {
                "; this machine is not a Jetson"
            }
        )
    })?;
    if !jetson {
        tracing::warn!(
            "--telemetry: this machine is not a Jetson; sampling the tegrastats found on PATH"
        );
    }
    Ok(sampler)
}

fn samples_for(seconds: f64, info: &ModelInfo) -> usize {
    (seconds * f64::from(info.sample_rate)).round() as usize
}

/// A number with three significant digits (at least one decimal), right-aligned in `width`.
fn sig3(v: Option<f64>, width: usize) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return format!("{:>width$}", "?");
    };
    let magnitude = if v == 0.0 {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    let prec = (2 - magnitude).clamp(1, 6) as usize;
    format!("{v:>width$.prec$}")
}

fn table(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!("model:        {}\n", r.model));
    s.push_str(&format!(
        "backend:      {}{}, {} threads, {} timed runs per length\n",
        r.backend,
        r.ort_version
            .as_deref()
            .map(|v| format!(" (ONNX Runtime {v})"))
            .unwrap_or_default(),
        r.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "default".into()),
        r.runs
    ));
    if let Some(o) = &r.ort_session {
        let providers: Vec<String> = o
            .execution_providers
            .iter()
            .map(|p| p.to_string())
            .collect();
        s.push_str(&format!("providers:    {}\n", providers.join(" > ")));
        if let Some(t) = &o.tensorrt {
            s.push_str(&format!(
                "tensorrt:     {} in {:.1} s ({}{}), cache {}\n",
                if t.engine_built {
                    "engine built"
                } else {
                    "cached engine loaded"
                },
                t.session_seconds,
                if t.settings.int8 {
                    "int8+fp16"
                } else if t.settings.fp16 {
                    "fp16"
                } else {
                    "fp32"
                },
                format_args!(", inputs up to {} samples", t.settings.profile.max_samples),
                t.settings.engine_cache_dir.display()
            ));
        }
    }
    s.push_str(&format!("load:         {:.3} s\n", r.load_seconds));
    if let Some(first) = r.lengths.first() {
        s.push_str(&format!(
            "first run:    {:.3} s ({} s of audio)\n",
            r.first_inference_seconds, first.seconds
        ));
    }
    s.push_str(&format!(
        "peak memory:  {} MB (VmHWM)\n\n",
        r.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}"))
    ));
    s.push_str(
        "audio s  frames  first ms  median ms   p95 ms       RTF  GFLOP/audio s  GFLOP/s  peak MB\n",
    );
    for l in &r.lengths {
        s.push_str(&format!(
            "{:>7}  {:>6}  {:>8.1}  {:>9.1}  {:>7.1}  {}  {}  {}  {:>7}\n",
            l.seconds,
            l.frames,
            l.first_seconds * 1e3,
            l.median_seconds * 1e3,
            l.p95_seconds * 1e3,
            sig3(Some(l.real_time_factor), 8),
            sig3(l.gflop_per_audio_second, 13),
            sig3(l.achieved_gflop_per_second, 7),
            l.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}")),
        ));
    }
    if let Some(t) = &r.telemetry {
        s.push_str(&telemetry_text(t));
    }
    s
}

/// `min / mean / max unit`.
fn stat_text(st: &Stat, unit: &str) -> String {
    format!("{:.0} / {:.0} / {:.0} {unit}", st.min, st.mean, st.max)
}

fn telemetry_text(t: &TelemetrySummary) -> String {
    let mut s = format!(
        "\ntelemetry ({} tegrastats samples; min / mean / max)\n",
        t.samples
    );
    let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<11}{v}\n"));
    if let Some(ram) = &t.ram_used_mb {
        let total = t
            .ram_total_mb
            .map(|m| format!(" of {m} MB"))
            .unwrap_or_default();
        line("RAM:", format!("{}{total}", stat_text(ram, "MB")));
    }
    if let Some(cpu) = &t.cpu_load_pct {
        line("CPU:", stat_text(cpu, "% (mean of online cores)"));
    }
    if let Some(gpu) = &t.gpu_load_pct {
        let freq = t
            .gpu_freq_mhz
            .as_ref()
            .map(|f| format!(", {}", stat_text(f, "MHz")))
            .unwrap_or_default();
        line("GPU:", format!("{}{freq}", stat_text(gpu, "%")));
    }
    for (name, st) in &t.temperatures_c {
        line(
            &format!("{name}:"),
            format!("{:.1} / {:.1} / {:.1} C", st.min, st.mean, st.max),
        );
    }
    for (name, st) in &t.power_mw {
        line(&format!("{name}:"), stat_text(st, "mW"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_lists() {
        assert_eq!(parse_seconds("1,10,30").unwrap(), vec![1.0, 10.0, 30.0]);
        assert_eq!(parse_seconds(" 0.5 , 2").unwrap(), vec![0.5, 2.0]);
        for bad in ["", "1,", "x", "0", "-1", "1,nan", "inf"] {
            let e = parse_seconds(bad).unwrap_err().to_string();
            assert!(e.starts_with("--seconds"), "{bad}: {e}");
        }
    }

    #[test]
    fn three_significant_digits() {
        assert_eq!(sig3(Some(0.000341), 0), "0.000341");
        assert_eq!(sig3(Some(0.0123), 0), "0.0123");
        assert_eq!(sig3(Some(1.234), 0), "1.23");
        assert_eq!(sig3(Some(13.816), 0), "13.8");
        assert_eq!(sig3(Some(142.4), 6), " 142.4");
        assert_eq!(sig3(Some(0.0), 0), "0.00");
        assert_eq!(sig3(None, 3), "  ?");
    }
}
