//! End-to-end tests of `w2v bench` through the real binary, on a tiny random fixture model
//! exported per test: the JSON report on both backends, the text table, and one-line errors for
//! bad arguments and a missing ONNX Runtime.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn model() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture("base-safetensors", dir.path());
    (dir, m)
}

fn bench(model: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("bench"),
        OsStr::new("--model"),
        model.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    w2v(args)
}

fn w2v_env(args: &[&OsStr], env: &[(&str, &OsStr)]) -> Run {
    w2v_with_env(args, env)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

fn positive(v: &Value, key: &str) -> f64 {
    let x = num(v, key);
    assert!(x > 0.0 && x.is_finite(), "`{key}` = {x} should be positive");
    x
}

/// The JSON report of one length-1 s, 2-run bench, checked field by field.
fn check_report(v: &Value, model: &Path, backend: &str) {
    assert_eq!(v["model"], shown(model));
    assert_eq!(v["backend"], backend);
    assert_eq!(v["runs"], 2);
    assert_eq!(v["threads"], 1);
    let rate = v["sample_rate"].as_u64().expect("sample_rate");
    assert_eq!(rate, 16000);
    positive(v, "load_seconds");
    positive(v, "first_inference_seconds");
    positive(v, "peak_rss_mb");
    match backend {
        "ort" => {
            assert_eq!(v["ort_version"], "1.32.0");
            // `--provider auto` on the CPU-only ONNX Runtime: CPU alone, no TensorRT settings.
            assert_eq!(
                v["ort_session"]["execution_providers"],
                serde_json::json!(["cpu"])
            );
            assert!(
                v["ort_session"]["tensorrt"].is_null(),
                "{}",
                v["ort_session"]
            );
        }
        _ => {
            assert!(v["ort_version"].is_null(), "{}", v["ort_version"]);
            assert!(v.get("ort_session").is_none(), "{v}");
        }
    }
    assert!(
        v.get("telemetry").is_none(),
        "no --telemetry, no telemetry: {v}"
    );
    let lengths = v["lengths"].as_array().expect("lengths");
    assert_eq!(lengths.len(), 1, "{v}");
    let l = &lengths[0];
    assert_eq!(num(l, "seconds"), 1.0);
    assert_eq!(l["samples"].as_u64(), Some(rate));
    // 16000 samples through the base conv stack: 49 frames.
    assert_eq!(l["frames"].as_u64(), Some(49));
    assert_eq!(num(l, "first_seconds"), num(v, "first_inference_seconds"));
    let (min, median, p95, max) = (
        positive(l, "min_seconds"),
        positive(l, "median_seconds"),
        positive(l, "p95_seconds"),
        positive(l, "max_seconds"),
    );
    assert!(
        min <= median && median <= p95 && p95 <= max,
        "min {min} median {median} p95 {p95} max {max}"
    );
    let rtf = positive(l, "real_time_factor");
    assert!(
        (rtf - median / 1.0).abs() <= 1e-12 * median.max(1.0),
        "{rtf} vs {median}"
    );
    let gflop = positive(l, "gflop");
    assert_eq!(num(l, "gflop_per_audio_second"), gflop);
    let achieved = positive(l, "achieved_gflop_per_second");
    assert!((achieved - gflop / median).abs() <= 1e-9 * achieved);
    let parts = l["gflop_by_part"].as_object().expect("gflop_by_part");
    let sum: f64 = parts.values().map(|x| x.as_f64().unwrap()).sum();
    assert!((sum - gflop).abs() <= 1e-9 * gflop, "{sum} vs {gflop}");
    assert!(parts["attention_scores"].as_f64().unwrap() > 0.0);
    positive(l, "peak_rss_mb");
    assert!(num(l, "peak_rss_mb") <= num(v, "peak_rss_mb"));
}

#[test]
fn json_report_on_both_backends() {
    let (_dir, m) = model();
    for backend in ["tract", "ort"] {
        let run = bench(
            &m,
            &[
                "--backend",
                backend,
                "--threads",
                "1",
                "--seconds",
                "1",
                "--runs",
                "2",
                "--json",
            ],
        );
        assert_ok(&run);
        check_report(&parse_json(&run), &m, backend);
    }
}

/// The fixture's arithmetic, counted by hand from its config: conv_dim 16 × 7, hidden 32,
/// 2 layers, intermediate 64, positional conv 16 taps in 4 groups, 32 tokens; 49 frames.
#[test]
fn gflop_matches_the_config() {
    let (_dir, m) = model();
    let run = bench(&m, &["--seconds", "1", "--runs", "1", "--json"]);
    assert_ok(&run);
    let v = parse_json(&run);
    let l = &v["lengths"][0];
    let conv: u64 =
        3199 * 16 * 10 + (1599 + 799 + 399 + 199) * 16 * 16 * 3 + (99 + 49) * 16 * 16 * 2;
    let t = 49u64;
    let macs = conv
        + t * 16 * 32
        + t * 32 * 8 * 16
        + 2 * t * 4 * 32 * 32
        + 2 * t * 2 * t * 32
        + 2 * t * 2 * 32 * 64
        + t * 32 * 32;
    let want = 2.0 * macs as f64 / 1e9;
    let got = num(l, "gflop");
    assert!((got - want).abs() < 1e-12, "gflop {got}, expected {want}");
}

#[test]
fn text_table_has_a_row_per_length() {
    let (_dir, m) = model();
    let run = bench(&m, &["--seconds", "0.5,2", "--runs", "1"]);
    assert_ok(&run);
    let out = &run.stdout;
    for want in [
        "model:",
        "backend:",
        "load:",
        "first run:",
        "peak memory:",
        "RTF",
        "GFLOP/s",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("audio s"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].trim_start().starts_with("0.5 "), "{}", rows[0]);
    assert!(rows[1].trim_start().starts_with("2 "), "{}", rows[1]);
}

#[test]
fn bad_arguments_fail_in_one_line() {
    let (_dir, m) = model();
    for (seconds, bad) in [
        ("x", "\"x\""),
        ("1,,2", "\"\""),
        ("0", "\"0\""),
        ("-1", "\"-1\""),
        ("1,nan", "\"nan\""),
    ] {
        let arg = format!("--seconds={seconds}");
        let run = bench(&m, &[&arg, "--runs", "1"]);
        assert_one_error(&run, &["--seconds", bad, "positive number of seconds"]);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    let run = bench(&m, &["--seconds", "0.01", "--runs", "1"]);
    assert_one_error(&run, &["--seconds 0.01", "receptive field"]);
    let run = bench(&m, &["--seconds", "1", "--runs", "0"]);
    assert_one_error(&run, &["--runs"]);
    let missing = m.with_file_name("missing.onnx");
    let run = bench(&missing, &["--seconds", "1"]);
    assert_one_error(&run, &[&shown(&missing), "no such model file"]);
}

#[test]
fn missing_onnx_runtime_fails_in_one_line() {
    let (_dir, m) = model();
    let args: Vec<&OsStr> = [
        OsStr::new("bench"),
        OsStr::new("--model"),
        m.as_os_str(),
        OsStr::new("--backend"),
        OsStr::new("ort"),
        OsStr::new("--seconds"),
        OsStr::new("1"),
    ]
    .to_vec();
    let run = w2v_env(&args, &[("ORT_DYLIB_PATH", OsStr::new("/nonexistent"))]);
    assert_one_error(&run, &["/nonexistent", "tools/fetch-ort.sh"]);
}

/// A stand-in for JetPack's `tegrastats` in a folder to put first on `PATH`: prints the JetPack 6
/// Orin Nano log from board-support's fixtures once, then waits to be killed as the real one does.
#[cfg(unix)]
fn fake_tegrastats() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = repo().join("board-support/tests/data/tegrastats/jp6-orin-nano.log");
    let script = dir.path().join("tegrastats");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --interval ] && [ \"$2\" -gt 0 ] || exit 2\ncat '{}'\nexec sleep 60\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

#[cfg(unix)]
#[test]
fn telemetry_summarizes_tegrastats() {
    let (_dir, m) = model();
    let fake = fake_tegrastats();
    let path = path_with(fake.path());
    let args = [
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--seconds",
        "1",
        "--runs",
        "1",
        "--telemetry",
        "--telemetry-interval-ms",
        "100",
    ];
    let json_args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let run = w2v_with_env(&json_args, &[("PATH", path.as_os_str())]);
    assert!(run.success(), "{run:?}");
    // This machine is not a Jetson: the one line on stderr says so.
    let lines = run.stderr_lines();
    assert!(
        lines.len() == 1 && lines[0].contains("WARN") && lines[0].contains("not a Jetson"),
        "{}",
        run.stderr
    );
    let t = &parse_json(&run)["telemetry"];
    assert_eq!(t["samples"], 3, "{t}");
    assert_eq!(t["ram_used_mb"]["min"], 3101.0);
    assert_eq!(t["ram_used_mb"]["max"], 3398.0);
    assert_eq!(t["ram_total_mb"], 7620);
    assert_eq!(t["gpu_load_pct"]["max"], 99.0);
    assert_eq!(t["power_mw"]["VDD_IN"]["max"], 9922.0);
    assert_eq!(
        t["temperatures_c"]["tj"]["max"]
            .as_f64()
            .map(|c| (c * 1000.0).round()),
        Some(49031.0)
    );

    let run = w2v_with_env(args, &[("PATH", path.as_os_str())]);
    assert!(run.success(), "{run:?}");
    for want in [
        "telemetry (3 tegrastats samples",
        "RAM:",
        "3101 / 3201 / 3398 MB of 7620 MB",
        "VDD_IN:",
        "tj:",
    ] {
        assert!(run.stdout.contains(want), "no {want:?} in:\n{}", run.stdout);
    }
}

#[test]
fn telemetry_without_tegrastats_fails_in_one_line() {
    let (_dir, m) = model();
    let empty = tempfile::tempdir().unwrap();
    let run = w2v_with_env(
        [
            "bench",
            "--model",
            m.to_str().unwrap(),
            "--seconds",
            "1",
            "--runs",
            "1",
            "--telemetry",
        ],
        &[("PATH", empty.path().as_os_str())],
    );
    let line = assert_one_error(
        &run,
        &["--telemetry", "tegrastats", "JetPack", "not a Jetson"],
    );
    assert!(run.stdout.is_empty(), "{line}");
}
