//! End-to-end tests of `w2v doctor` through the real binary: the JSON and text reports on this
//! machine (x86_64, not a Jetson, ONNX Runtime 1.32.0 in `.ort/lib`), and a missing or broken
//! ONNX Runtime reported with its fix and exit status 0.

mod common;

use std::ffi::OsStr;

use common::*;
use serde_json::Value;

/// `w2v doctor ARGS` with extra environment variables.
fn doctor(args: &[&str], env: &[(&str, &OsStr)]) -> Run {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    w2v_with_env(&all, env)
}

fn doctor_json(env: &[(&str, &OsStr)]) -> Value {
    let run = doctor(&["--json"], env);
    assert_ok(&run);
    parse_json(&run)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect()
}

#[test]
fn json_report_on_this_machine() {
    let v = doctor_json(&[]);
    let p = &v["platform"];
    #[cfg(target_arch = "x86_64")]
    assert_eq!(p["arch"], "x86_64");
    assert!(p["jetson"].is_null(), "not a Jetson: {}", p["jetson"]);
    assert!(p["power_mode"].is_null());
    assert!(p["cpu"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(p["cpu"]["model"].is_string());
    assert!(p["cpu"]["features"].is_array());
    assert!(p["memory"]["total_bytes"].as_u64().unwrap() > 0);

    // No NVIDIA driver or TensorRT on these machines: each says which library it could not load.
    let g = &v["gpu"];
    assert!(g["device"].is_null(), "{g}");
    assert!(
        g["device_problem"]
            .as_str()
            .unwrap()
            .contains("libcuda.so.1"),
        "{g}"
    );
    assert!(g["tensorrt_version"].is_null(), "{g}");
    assert!(
        g["tensorrt_problem"]
            .as_str()
            .unwrap()
            .contains("libnvinfer"),
        "{g}"
    );
    assert!(
        g["tensorrt_cache"]
            .as_str()
            .unwrap()
            .ends_with("w2v/tensorrt"),
        "{g}"
    );

    let o = &v["onnxruntime"];
    assert_eq!(o["available"], true, "{o}");
    assert!(o["problem"].is_null(), "{o}");
    assert_eq!(o["version"], "1.32.0");
    let library = o["library"].as_str().expect("library");
    assert!(library.ends_with("libonnxruntime.so"), "{library}");
    assert!(std::path::Path::new(library).is_file(), "{library}");
    let providers = strings(&o["providers"]);
    assert!(providers.contains(&"CPUExecutionProvider"), "{providers:?}");
    for (key, ort_name, what) in [
        ("cuda", "CUDAExecutionProvider", "CUDA"),
        ("tensorrt", "TensorrtExecutionProvider", "TensorRT"),
    ] {
        let s = &o[key];
        let reason = s["reason"].as_str().expect("reason");
        if !providers.contains(&ort_name) {
            assert_eq!(s["available"], false, "{s}");
            assert!(
                reason.contains(&format!("no {what} execution provider")),
                "{reason}"
            );
        }
    }
    let plan = strings(&o["auto_plan"]);
    assert_eq!(plan.last(), Some(&"cpu"), "{plan:?}");

    check_audio_input(&v["audio_input"]);
    let d = &v["default_model"];
    match d["found"].as_bool().expect("found") {
        true => assert!(d["path"].is_string() && d["problem"].is_null(), "{d}"),
        false => {
            assert!(d["path"].is_null(), "{d}");
            assert!(d["problem"].as_str().unwrap().contains("--model"), "{d}");
        }
    }
}

#[test]
fn default_model_from_w2v_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture("base-safetensors", dir.path());
    let v = doctor_json(&[("W2V_MODEL", m.as_os_str())]);
    assert_eq!(v["default_model"]["found"], true);
    assert_eq!(v["default_model"]["path"], shown(&m));
}

#[test]
fn text_report() {
    let run = doctor(&[], &[]);
    assert_ok(&run);
    let out = &run.stdout;
    // `key:` then the value, one per line.
    let value = |key: &str| -> String {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"));
        line.trim_start()[key.len()..].trim().to_string()
    };
    assert_eq!(value("arch:"), std::env::consts::ARCH);
    assert_eq!(value("jetson:"), "no");
    assert!(value("onnxruntime:").starts_with("1.32.0 ("), "{out}");
    assert!(
        value("providers:").contains("CPUExecutionProvider"),
        "{out}"
    );
    for key in ["CUDA:", "TensorRT:"] {
        let v = value(key);
        assert!(
            v.starts_with("found: ") || v.starts_with("not found: "),
            "{out}"
        );
    }
    assert!(value("auto plan:").ends_with("CPU"), "{out}");
    let audio = value("audio input:");
    assert!(
        audio.starts_with("no capture devices found")
            || audio.contains(" capture devices: ")
            || audio.starts_with("cannot list audio input devices: ")
            || (!cfg!(feature = "microphone")
                && audio.starts_with("this w2v was built without microphone support")),
        "{out}"
    );
    for key in [
        "cpu:",
        "cores:",
        "cpu features:",
        "memory:",
        "default model:",
    ] {
        assert!(!value(key).is_empty(), "{key} is empty in:\n{out}");
    }
}

#[test]
fn missing_onnx_runtime_is_reported_not_fatal() {
    let env = [("ORT_DYLIB_PATH", OsStr::new("/nonexistent"))];
    let run = doctor(&[], &env);
    assert_ok(&run);
    for want in [
        "not available",
        "/nonexistent",
        "tools/fetch-ort.sh",
        "ORT_DYLIB_PATH",
    ] {
        assert!(run.stdout.contains(want), "no {want:?} in:\n{}", run.stdout);
    }
    let v = doctor_json(&env);
    let o = &v["onnxruntime"];
    assert_eq!(o["available"], false);
    assert!(o["version"].is_null() && o["library"].is_null(), "{o}");
    assert_eq!(o["ort_dylib_path"], "/nonexistent");
    let problem = o["problem"].as_str().expect("problem");
    assert!(problem.contains("/nonexistent") && problem.contains("tools/fetch-ort.sh"));
    assert_eq!(o["cuda"]["available"], false);
    assert_eq!(o["tensorrt"]["available"], false);
    assert_eq!(o["providers"], Value::Array(vec![]));
    // The rest of the report is still there.
    assert!(v["platform"]["arch"].is_string());
    check_audio_input(&v["audio_input"]);
}

/// The capture devices, and a note that agrees with them.
fn check_audio_input(a: &Value) {
    let devices = a["input_devices"].as_array().expect("input_devices");
    let note = a["note"].as_str().expect("note");
    if !cfg!(feature = "microphone") {
        // The default build cannot list devices; the note says how to get microphone support.
        assert!(devices.is_empty(), "{a}");
        assert!(
            note.starts_with("this w2v was built without microphone support")
                && note.contains("--features microphone")
                && note.contains("--input -"),
            "{a}"
        );
    } else if devices.is_empty() {
        assert!(
            note.starts_with("no capture devices found")
                || note.starts_with("cannot list audio input devices: "),
            "{a}"
        );
    } else {
        assert!(
            note.starts_with(&format!("{} capture devices: ", devices.len())),
            "{a}"
        );
    }
}

#[test]
fn broken_onnx_runtime_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let v = doctor_json(&[("ORT_DYLIB_PATH", fake.as_os_str())]);
    let o = &v["onnxruntime"];
    assert_eq!(o["available"], false, "{o}");
    assert_eq!(
        o["library"],
        shown(&fake),
        "found but unloadable still names the file"
    );
    let problem = o["problem"].as_str().expect("problem");
    assert!(problem.contains("tools/fetch-ort.sh"), "{problem}");
}
