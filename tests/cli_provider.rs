//! `--provider` and `--allow-fallback` end to end, against the CPU-only ONNX Runtime that
//! `tools/fetch-ort.sh` puts in `.ort/lib`: CUDA and TensorRT are not built into it, so an explicit
//! request fails in one line (naming the provider and why) unless falling back is allowed.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const MODEL: &str = "base-safetensors";
const SPEECH: &str = "sentences/1272-128104-0004-8k.wav";

fn transcribe(model: &Path, extra: &[&str]) -> Run {
    let file: PathBuf = speech(SPEECH);
    let mut args: Vec<std::ffi::OsString> =
        vec!["transcribe".into(), "-m".into(), model.as_os_str().into()];
    args.extend(extra.iter().map(Into::into));
    args.push(file.into_os_string());
    w2v(args)
}

/// The transcript printed by a successful run: one non-empty line.
fn assert_transcript(run: &Run) {
    assert!(
        run.success(),
        "w2v {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        run.args,
        run.code,
        run.stdout,
        run.stderr
    );
    assert!(
        !run.stdout.trim().is_empty(),
        "w2v {:?}: no transcript on stdout",
        run.args
    );
}

#[test]
fn explicit_gpu_provider_without_fallback_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(MODEL, dir.path());
    for (provider, name) in [("cuda", "CUDA"), ("tensorrt", "TensorRT")] {
        let run = transcribe(&m, &["--backend", "ort", "--provider", provider]);
        let line = assert_one_error(&run, &[name, "not built into this ONNX Runtime", "offers"]);
        assert!(line.contains("CPUExecutionProvider"), "{line}");
        assert!(run.stdout.trim().is_empty(), "{}", run.stdout);
    }
}

#[test]
fn allow_fallback_runs_on_cpu_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(MODEL, dir.path());
    let plain = transcribe(&m, &["--backend", "ort", "--provider", "cpu"]);
    assert_ok(&plain);
    for name in ["cuda", "tensorrt"] {
        let run = transcribe(
            &m,
            &["--backend", "ort", "--provider", name, "--allow-fallback"],
        );
        assert_transcript(&run);
        assert_eq!(
            run.stdout, plain.stdout,
            "same transcript as --provider cpu"
        );
        assert_no_panic(&run);
        let lines = run.stderr_lines();
        assert_eq!(lines.len(), 1, "one warning line:\n{}", run.stderr);
        let display = if name == "cuda" { "CUDA" } else { "TensorRT" };
        let line = lines[0];
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(display), "{line}");
        assert!(line.contains("falling back to CPU"), "{line}");
        assert!(line.contains("not built into this ONNX Runtime"), "{line}");
    }
}

#[test]
fn auto_and_cpu_run_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(MODEL, dir.path());
    for extra in [
        &["--backend", "ort"][..],
        &["--backend", "ort", "--provider", "auto"],
        &["--backend", "ort", "--provider", "cpu"],
        &["--backend", "tract", "--provider", "auto"],
        &["--backend", "tract", "--provider", "cpu"],
    ] {
        let run = transcribe(&m, extra);
        assert_ok(&run);
        assert_transcript(&run);
    }
}

#[test]
fn tract_rejects_gpu_providers() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(MODEL, dir.path());
    for provider in ["cuda", "tensorrt"] {
        let run = transcribe(&m, &["--backend", "tract", "--provider", provider]);
        assert_one_error(
            &run,
            &[provider, "tract runs on the CPU only", "--backend ort"],
        );
    }
}

#[test]
fn unknown_provider_is_a_usage_error() {
    let run = w2v(["transcribe", "--provider", "rocm", "x.wav"]);
    assert!(!run.success() && run.code.is_some(), "{run:?}");
    assert!(run.stderr.contains("rocm"), "{}", run.stderr);
    assert!(
        run.stderr.contains("auto, cpu, cuda or tensorrt"),
        "{}",
        run.stderr
    );
}

#[test]
fn max_seconds_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(MODEL, dir.path());
    for (bad, shown) in [("0", "0"), ("-2", "-2"), ("nan", "NaN")] {
        let arg = format!("--max-seconds={bad}");
        let run = transcribe(&m, &["--backend", "ort", &arg]);
        assert_one_error(
            &run,
            &["--max-seconds", shown, "positive number of seconds"],
        );
    }
    // Only TensorRT's engine depends on it: shorter than the 30 s windows is fine when TensorRT
    // is not used (here it falls back to the CPU).
    let run = transcribe(
        &m,
        &[
            "--backend",
            "ort",
            "--provider",
            "tensorrt",
            "--allow-fallback",
            "--max-seconds",
            "5",
        ],
    );
    assert_transcript(&run);
}
