//! The restricted unpickler against real torch.save files and malicious pickles, written by
//! `tools/fixtures/gen_pickle_cases.py` into `export/tests/data/pickle/`.

use std::path::PathBuf;

use w2v_export::checkpoint::{pytorch, CheckpointError};
use w2v_test_support::paths::pickle_fixtures_dir;

fn fixture(name: &str) -> PathBuf {
    pickle_fixtures_dir().join(name)
}

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("expected.json is JSON") {
        serde_json::Value::Object(m) => m,
        other => panic!("expected.json is not an object: {other}"),
    }
}

#[test]
fn valid_files_match_torch() {
    let expected = expected();
    assert!(
        expected.len() >= 10,
        "expected.json lists {} files",
        expected.len()
    );
    for (file, entries) in &expected {
        let got = pytorch::read(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let entries = entries.as_array().expect("entry list");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let want_names: Vec<&str> = entries
            .iter()
            .map(|e| e["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, want_names, "{file}: names and order");
        for ((name, tensor), want) in got.iter().zip(entries) {
            let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).expect("shape");
            let data: Vec<f64> = serde_json::from_value(want["data"].clone()).expect("data");
            assert_eq!(tensor.shape, shape, "{file}: {name} shape");
            // Every expected value is an exact float32 (torch converted it), so compare exactly.
            let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
            assert_eq!(tensor.data, data, "{file}: {name} data");
        }
    }
}

#[test]
fn views_share_storage_and_keep_their_layout() {
    let got = pytorch::read(&fixture("views.bin")).expect("views.bin");
    let get = |n: &str| &got.iter().find(|(name, _)| name == n).expect(n).1;
    let (a, t) = (get("a"), get("t"));
    assert_eq!(
        (a.shape.as_slice(), t.shape.as_slice()),
        (&[3, 4][..], &[4, 3][..])
    );
    for i in 0..3 {
        for j in 0..4 {
            assert_eq!(a.data[i * 4 + j], t.data[j * 3 + i]);
        }
    }
    assert_eq!(get("row").data, a.data[8..12]);
    assert_eq!(get("expand").data, vec![0., 1., 2., 0., 1., 2.]);
}

#[test]
fn integer_buffers_are_skipped() {
    let got = pytorch::read(&fixture("module.bin")).expect("module.bin");
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["proj.weight", "proj.bias", "conv.weight", "conv.bias"]
    );
}

fn unsafe_reason(file: &str) -> String {
    match pytorch::read(&fixture(file)) {
        Err(e @ CheckpointError::Unsafe { .. }) => {
            let text = e.to_string();
            assert!(text.contains(file), "error does not name the file: {text}");
            text
        }
        other => panic!("{file}: expected an Unsafe error, got {other:?}"),
    }
}

#[test]
fn malicious_pickles_are_refused() {
    for (file, needle) in [
        ("evil_system.bin", "global posix.system is not allowed"),
        ("evil_eval.bin", "global builtins.eval is not allowed"),
        ("evil_inst.bin", "opcode INST is not allowed"),
        ("evil_obj.bin", "opcode OBJ is not allowed"),
    ] {
        let text = unsafe_reason(file);
        assert!(text.contains(needle), "{file}: {text}");
    }
}

#[test]
fn broken_files_are_format_errors() {
    for (file, needle) in [
        ("truncated.bin", "zip"),
        ("truncated_pkl.bin", "pickle ends early"),
        (
            "missing_storage.bin",
            "missing storage entry archive/data/1",
        ),
        ("not_a_dict.bin", "not a state dict"),
        ("legacy.bin", "re-save it with a newer torch"),
        ("not_torch.bin", "not a torch.save zip archive"),
    ] {
        match pytorch::read(&fixture(file)) {
            Err(e @ CheckpointError::Format { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(needle) && text.contains(file),
                    "{file}: {text}"
                );
            }
            other => panic!("{file}: expected a Format error, got {other:?}"),
        }
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let err = pytorch::read(&fixture("does-not-exist.bin")).expect_err("no such file");
    assert!(matches!(err, CheckpointError::Io { .. }), "{err:?}");
}
