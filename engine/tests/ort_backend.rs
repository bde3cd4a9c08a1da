//! The ONNX Runtime backend against tiny models built here, checked against tract.
//!
//! Needs the ONNX Runtime library: run `tools/fetch-ort.sh` first (or set `ORT_DYLIB_PATH`).
//! Run with `cargo test -p w2v-engine --features ort`.
#![cfg(feature = "ort")]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use w2v_engine::backend::ort::{
    find_ort_library, find_ort_library_in, ort_library, ort_version, ExecutionProvider, OptLevel,
    OrtBackend, OrtOptions,
};
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::backend::{Backend, BackendError, BackendOptions, Batch, Logits};
use w2v_engine::model_info::{ModelInfo, FORMAT_VERSION, MODEL_TYPE_WAV2VEC2_CTC};
use w2v_engine::onnx_pb::{
    attribute_type, data_type, dimension, AttributeProto, Dimension, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto,
};

/// Samples per frame of the toy models.
const STRIDE: usize = 4;
/// The constant the toy models add to each frame: logits[b][t][v] = x[b][4t + v] + BIAS[v].
const BIAS: [f32; STRIDE] = [0.5, -1.0, 2.0, 10.0];

fn info(uses_attention_mask: bool) -> ModelInfo {
    ModelInfo {
        format_version: FORMAT_VERSION,
        model_type: MODEL_TYPE_WAV2VEC2_CTC.to_string(),
        config: serde_json::json!({ "conv_dim": [8], "conv_kernel": [4], "conv_stride": [4] }),
        vocab: ["<pad>", "|", "a", "b"].map(String::from).to_vec(),
        sample_rate: 16000,
        do_normalize: true,
        frame_stride: STRIDE,
        receptive_field: STRIDE,
        uses_attention_mask,
        pad_token_id: 0,
        word_delimiter_token: Some("|".into()),
        precision: "fp32".into(),
        source_sha256: "0".repeat(64),
        exporter_version: "test".into(),
        raw: BTreeMap::new(),
    }
}

fn dim_param(name: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(name.into())),
    }
}

fn tensor_info(name: &str, elem_type: i32, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// `input_values [B, S]` (times the attention mask when `mask_input`) → Reshape `[B, S/4, 4]` →
/// Add `BIAS` → `logits`. `metadata`: the w2v metadata to attach, if any.
fn toy_model(mask_input: bool, metadata: Option<&ModelInfo>) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut inputs = vec![tensor_info(
        "input_values",
        data_type::FLOAT,
        vec![dim_param("batch"), dim_param("samples")],
    )];
    let mut x = "input_values";
    if mask_input {
        inputs.push(tensor_info(
            "attention_mask",
            data_type::INT64,
            vec![dim_param("batch"), dim_param("samples")],
        ));
        let to = AttributeProto {
            name: "to".into(),
            r#type: attribute_type::INT,
            i: data_type::FLOAT as i64,
            ..Default::default()
        };
        nodes.push(node("Cast", &["attention_mask"], "mask_f", vec![to]));
        nodes.push(node("Mul", &["input_values", "mask_f"], "masked", vec![]));
        x = "masked";
    }
    nodes.push(node("Reshape", &[x, "frame_shape"], "frames", vec![]));
    nodes.push(node("Add", &["frames", "bias"], "logits", vec![]));
    let graph = GraphProto {
        node: nodes,
        name: "toy".into(),
        initializer: vec![
            TensorProto {
                dims: vec![3],
                data_type: data_type::INT64,
                int64_data: vec![0, -1, STRIDE as i64],
                name: "frame_shape".into(),
                ..Default::default()
            },
            TensorProto {
                dims: vec![STRIDE as i64],
                data_type: data_type::FLOAT,
                float_data: BIAS.to_vec(),
                name: "bias".into(),
                ..Default::default()
            },
        ],
        input: inputs,
        output: vec![tensor_info(
            "logits",
            data_type::FLOAT,
            vec![
                dim_param("batch"),
                dim_param("frames"),
                Dimension {
                    value: Some(dimension::Value::DimValue(STRIDE as i64)),
                },
            ],
        )],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "w2v-test".into(),
        graph: Some(graph),
        metadata_props: metadata
            .map(ModelInfo::to_metadata_props)
            .unwrap_or_default(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What the toy model computes.
fn expected(samples: &[f32], batch: usize, len: usize, lengths: Option<&[usize]>) -> Logits {
    let mut data = Vec::with_capacity(samples.len());
    for b in 0..batch {
        for i in 0..len {
            let valid = lengths.is_none_or(|l| i < l[b]);
            let x = if valid { samples[b * len + i] } else { 0.0 };
            data.push(x + BIAS[i % STRIDE]);
        }
    }
    Logits {
        data,
        batch,
        frames: len / STRIDE,
        vocab: STRIDE,
    }
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 0.25 - 3.0).collect()
}

fn load_ort(path: &Path) -> OrtBackend {
    OrtBackend::load(path, &OrtOptions::default())
        .unwrap_or_else(|e| panic!("{e} (did you run tools/fetch-ort.sh?)"))
}

#[test]
fn library_is_found_and_reports_its_version() {
    let lib = find_ort_library().expect("run tools/fetch-ort.sh first");
    assert!(lib.is_file(), "{}", lib.display());
    let version = ort_version().unwrap();
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap_or(""));
    assert_eq!(major, "1", "version {version}");
    assert!(
        minor.parse::<u32>().unwrap() >= 17,
        "version {version} is older than ort's minimum"
    );
    assert!(ort_library().unwrap().is_file());
}

#[test]
fn ort_and_tract_compute_the_toy_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "toy.onnx",
        &toy_model(false, Some(&info(false))),
    );
    let mut ort = load_ort(&path);
    let mut tract = TractBackend::load(&path, &BackendOptions::default()).unwrap();
    assert_eq!(ort.name(), "ort");
    assert_eq!(ort.info(), tract.info());
    let mut read = ort.info().clone();
    read.raw.clear();
    assert_eq!(read, info(false));

    // Several shapes through the same session: ORT needs no per-shape compilation.
    for (batch, len) in [(1, 8), (2, 12), (1, 40), (3, 4)] {
        let samples = ramp(batch * len);
        let lengths = vec![len; batch];
        let input = Batch {
            samples: &samples,
            batch,
            len,
            lengths: &lengths,
        };
        let want = expected(&samples, batch, len, None);
        assert_eq!(ort.run(&input).unwrap(), want, "ort, shape {batch}x{len}");
        assert_eq!(
            tract.run(&input).unwrap(),
            want,
            "tract, shape {batch}x{len}"
        );
    }
}

#[test]
fn attention_mask_is_fed_when_the_model_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "masked.onnx",
        &toy_model(true, Some(&info(true))),
    );
    let mut ort = load_ort(&path);
    let mut tract = TractBackend::load(&path, &BackendOptions::default()).unwrap();
    assert!(ort.info().uses_attention_mask);

    let (batch, len) = (3, 12);
    // Padding is zero in real batches; make it nonzero here so only the mask can hide it.
    let samples = ramp(batch * len);
    let lengths = [12, 5, 0];
    let input = Batch {
        samples: &samples,
        batch,
        len,
        lengths: &lengths,
    };
    let want = expected(&samples, batch, len, Some(&lengths));
    assert_eq!(ort.run(&input).unwrap(), want);
    assert_eq!(tract.run(&input).unwrap(), want);

    let one = ramp(8);
    assert_eq!(
        ort.run(&Batch::single(&one, &[8])).unwrap(),
        expected(&one, 1, 8, None)
    );
}

#[test]
fn every_option_gives_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "masked.onnx",
        &toy_model(true, Some(&info(true))),
    );
    let samples = ramp(16);
    let lengths = [8, 7];
    let input = Batch {
        samples: &samples,
        batch: 2,
        len: 8,
        lengths: &lengths,
    };
    let want = expected(&samples, 2, 8, Some(&lengths));
    let one = ramp(8);
    for optimization_level in OptLevel::ALL {
        for execution_providers in [
            vec![],
            vec![ExecutionProvider::cpu()],
            vec![ExecutionProvider::Cpu { arena: false }],
        ] {
            // The I/O binding that GPU providers use, here on the CPU: same numbers, run after
            // run, whether the output shape repeats or changes.
            for io_binding in [None, Some(false), Some(true)] {
                let options = OrtOptions {
                    common: BackendOptions { threads: Some(1) },
                    optimization_level,
                    execution_providers: execution_providers.clone(),
                    io_binding,
                };
                let mut ort = OrtBackend::load(&path, &options).unwrap();
                assert_eq!(ort.run(&input).unwrap(), want, "{options:?}");
                assert_eq!(ort.run(&input).unwrap(), want, "{options:?}, again");
                assert_eq!(
                    ort.run(&Batch::single(&one, &[8])).unwrap(),
                    expected(&one, 1, 8, None),
                    "{options:?}, another shape"
                );
                assert_eq!(
                    ort.run(&input).unwrap(),
                    want,
                    "{options:?}, first shape again"
                );
            }
        }
    }
}

#[test]
fn malformed_batch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "toy.onnx",
        &toy_model(false, Some(&info(false))),
    );
    let mut ort = load_ort(&path);
    let samples = ramp(8);
    let err = ort
        .run(&Batch {
            samples: &samples,
            batch: 2,
            len: 8,
            lengths: &[8, 8],
        })
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Run { backend: "ort", .. }),
        "{err}"
    );
    // 6 samples do not reshape into frames of 4: ORT's own error comes back, no panic.
    let samples = ramp(6);
    let err = ort.run(&Batch::single(&samples, &[6])).unwrap_err();
    assert!(
        matches!(err, BackendError::Run { backend: "ort", .. }),
        "{err}"
    );
}

fn assert_load_error(err: BackendError, path: &Path, needle: &str) -> String {
    let msg = err.to_string();
    match &err {
        BackendError::Load {
            backend: "ort",
            path: p,
            ..
        } => assert_eq!(p, path),
        // Files that are not w2v models are refused before ONNX Runtime sees them.
        BackendError::Model(_) => {}
        other => panic!("expected a load error, got {other:?}"),
    }
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    msg
}

/// Errors from the model's metadata name the file once, not twice.
fn assert_said_once(msg: &str, path: &Path) {
    assert_eq!(msg.matches(&path.display().to_string()).count(), 1, "{msg}");
}

#[test]
fn bad_models_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let options = OrtOptions::default();

    let text = write(dir.path(), "notes.txt", b"this is not a model\n");
    let err = OrtBackend::load(&text, &options).unwrap_err();
    assert_said_once(&assert_load_error(err, &text, "not an ONNX model"), &text);

    let missing = dir.path().join("missing.onnx");
    let err = OrtBackend::load(&missing, &options).unwrap_err();
    assert_said_once(
        &assert_load_error(err, &missing, "cannot read model"),
        &missing,
    );

    let plain = write(dir.path(), "plain.onnx", &toy_model(false, None));
    let err = OrtBackend::load(&plain, &options).unwrap_err();
    assert_said_once(&assert_load_error(err, &plain, "no w2v metadata"), &plain);
    let Err(err) = TractBackend::load(&plain, &BackendOptions::default()) else {
        panic!("tract loaded a model without metadata");
    };
    assert!(err.to_string().contains("no w2v metadata"), "{err}");

    // Metadata and graph disagree about the attention mask, both ways.
    let no_mask_input = write(dir.path(), "a.onnx", &toy_model(false, Some(&info(true))));
    let err = OrtBackend::load(&no_mask_input, &options).unwrap_err();
    assert_load_error(err, &no_mask_input, "no input `attention_mask`");
    let extra_mask_input = write(dir.path(), "b.onnx", &toy_model(true, Some(&info(false))));
    let err = OrtBackend::load(&extra_mask_input, &options).unwrap_err();
    assert_load_error(err, &extra_mask_input, "w2v.uses_attention_mask");

    // Valid metadata, broken graph: ORT's own complaint comes back as a load error.
    let mut model = ModelProto::decode(toy_model(false, Some(&info(false))).as_slice()).unwrap();
    model.graph.as_mut().unwrap().node[0].op_type = "NoSuchOp".into();
    let broken = write(dir.path(), "broken.onnx", &model.encode_to_vec());
    let err = OrtBackend::load(&broken, &options).unwrap_err();
    assert_load_error(err, &broken, "NoSuchOp");
}

#[test]
fn discovery_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let nested = root.join("a/b/c");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::create_dir_all(root.join(".ort/lib")).unwrap();
    let fetched = write(&root.join(".ort/lib"), "libonnxruntime.so", b"");
    let bin = root.join("opt/w2v/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("opt/w2v/lib")).unwrap();
    let exe = bin.join("w2v");
    let explicit = write(root, "custom.so", b"");

    // ORT_DYLIB_PATH wins, and a relative value is taken from the current directory.
    let found = find_ort_library_in(Some(explicit.as_os_str()), Some(&nested), Some(&exe));
    assert_eq!(found.unwrap(), explicit);
    let found = find_ort_library_in(Some(OsStr::new("custom.so")), Some(root), Some(&exe));
    assert_eq!(found.unwrap(), explicit);
    // Empty counts as unset.
    let found = find_ort_library_in(Some(OsStr::new("")), Some(&nested), Some(&exe));
    assert_eq!(found.unwrap(), fetched);
    // .ort/lib in a parent of the current directory.
    assert_eq!(
        find_ort_library_in(None, Some(&nested), Some(&exe)).unwrap(),
        fetched
    );
    // Beside the executable, then ../lib.
    let elsewhere = tempfile::tempdir().unwrap();
    let lib = write(&root.join("opt/w2v/lib"), "libonnxruntime.so", b"");
    assert_eq!(
        find_ort_library_in(None, Some(elsewhere.path()), Some(&exe)).unwrap(),
        lib
    );
    let beside = write(&bin, "libonnxruntime.so", b"");
    assert_eq!(
        find_ort_library_in(None, Some(elsewhere.path()), Some(&exe)).unwrap(),
        beside
    );
}

fn assert_library_error(err: BackendError, needle: &str) {
    let msg = err.to_string();
    assert!(
        matches!(err, BackendError::OrtLibrary { .. }),
        "expected OrtLibrary, got {msg}"
    );
    assert!(msg.contains("tools/fetch-ort.sh"), "{msg}");
    assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
}

#[test]
fn discovery_errors_say_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/libonnxruntime.so");
    let err = find_ort_library_in(Some(missing.as_os_str()), Some(dir.path()), None).unwrap_err();
    assert_library_error(err, &missing.display().to_string());

    let err = find_ort_library_in(Some(dir.path().as_os_str()), None, None).unwrap_err();
    assert_library_error(err, "is a directory");

    let exe = dir.path().join("bin/w2v");
    let err = find_ort_library_in(None, Some(dir.path()), Some(&exe)).unwrap_err();
    assert_library_error(err, "libonnxruntime.so not found");
}

// ----- a missing or broken library, in child processes (ORT loads once per process) -----

const CHILD_ENV: &str = "W2V_ORT_TEST_CHILD";

/// Run the test `name` of this binary in a child process with `ORT_DYLIB_PATH=dylib`.
fn run_child(name: &str, dylib: &Path, model: &Path) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, model)
        .env("ORT_DYLIB_PATH", dylib)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child {name} did not run:\n{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "child {name} panicked:\n{stderr}"
    );
}

/// In a child: every entry point fails with an `OrtLibrary` error mentioning `needle`.
fn child_expects_library_error(needle: &str) {
    let Some(model) = std::env::var_os(CHILD_ENV) else {
        return; // not in a child: nothing to do
    };
    let err = OrtBackend::load(Path::new(&model), &OrtOptions::default()).unwrap_err();
    assert_library_error(err, needle);
    // Asking again gives the same answer (and still no panic).
    let err = OrtBackend::load(Path::new(&model), &OrtOptions::default()).unwrap_err();
    assert_library_error(err, needle);
    assert_library_error(ort_version().unwrap_err(), needle);
    println!("child checks done");
}

#[test]
fn child_missing_library() {
    child_expects_library_error("no such file");
}

#[test]
fn child_not_a_library() {
    child_expects_library_error("dlopen failed: ");
}

#[test]
fn child_wrong_library() {
    child_expects_library_error("does not export `OrtGetApiBase`");
}

#[test]
fn missing_or_broken_library_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(
        dir.path(),
        "toy.onnx",
        &toy_model(false, Some(&info(false))),
    );
    run_child(
        "child_missing_library",
        &dir.path().join("libonnxruntime.so"),
        &model,
    );
    let fake = write(dir.path(), "libfake.so", b"not an ELF file");
    run_child("child_not_a_library", &fake, &model);
    // A real shared library, but not ONNX Runtime: the helper that tools/fetch-ort.sh installs
    // beside it.
    let lib = find_ort_library().expect("run tools/fetch-ort.sh first");
    let helper = lib.with_file_name("libonnxruntime_providers_shared.so");
    if helper.is_file() {
        run_child("child_wrong_library", &helper, &model);
    } else {
        eprintln!("skipping the wrong-library check: no {}", helper.display());
    }

    // find_ort_library itself, with the variable set to a missing file.
    let exe = std::env::current_exe().unwrap();
    let missing = dir.path().join("gone.so");
    let out = Command::new(exe)
        .args(["child_find_library", "--exact", "--nocapture"])
        .env(CHILD_ENV, &model)
        .env("ORT_DYLIB_PATH", &missing)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}"
    );
}

#[test]
fn child_find_library() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let err = find_ort_library().unwrap_err();
    assert_library_error(err, "gone.so");
}
