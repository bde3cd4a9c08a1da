//! End-to-end tests of `w2v export` and `w2v inspect` through the real binary: every fixture
//! checkpoint variant exports to a self-describing model, and every kind of broken input fails
//! with one `error:` line naming the offending file, no panic and nothing left in the output
//! folder.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use w2v_test_support::paths::pickle_fixtures_dir;

/// Export `src` into an empty `out_dir`, expect one error line naming `must_contain`, and
/// check `out_dir` is still empty (no model, no temp file).
fn export_fails(src: &Path, must_contain: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("model.onnx");
    let run = export_run(src, &out, &[]);
    let line = assert_one_error(&run, must_contain);
    assert!(run.stdout.trim().is_empty(), "stdout: {}", run.stdout);
    assert_dir_empty(out_dir.path());
    line
}

fn inspect_json(model: &Path) -> Value {
    let run = w2v(["inspect".as_ref(), model.as_os_str(), "--json".as_ref()]);
    assert_ok(&run);
    parse_json(&run)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn every_fixture_variant_exports_and_inspects() {
    for variant in VARIANTS {
        let src = fixture(variant);
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("model.onnx");

        let run = export_run(&src, &out, &[]);
        assert_ok(&run);
        assert_no_panic(&run);
        assert_eq!(run.stdout.lines().count(), 1, "{variant}: {}", run.stdout);
        assert!(run.stdout.starts_with("exported "), "{}", run.stdout);
        // Only the model: no temp file left beside it.
        assert_eq!(dir_entries(out_dir.path()), ["model.onnx"], "{variant}");

        let info = inspect_json(&out);
        assert_eq!(info["format_version"], 1, "{variant}");
        assert_eq!(info["model_type"], "wav2vec2-ctc", "{variant}");
        assert_eq!(info["sample_rate"], 16000, "{variant}");
        assert_eq!(info["frame_stride"], 320, "{variant}");
        assert_eq!(info["receptive_field"], 400, "{variant}");
        assert_eq!(info["precision"], "fp32", "{variant}");
        assert_eq!(info["do_normalize"], true, "{variant}");

        // The config is stored verbatim; the attention mask is used exactly by the layer-norm
        // feature encoders (as in transformers' `feat_extract_norm == "layer"`).
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(info["config"], config, "{variant}");
        let layer_norm = config["feat_extract_norm"] == "layer";
        assert_eq!(
            info["uses_attention_mask"], layer_norm,
            "{variant}: uses_attention_mask"
        );
        assert_eq!(
            layer_norm,
            variant.starts_with("large") || variant.starts_with("layer"),
            "{variant}: fixture set changed"
        );

        // The vocabulary, by id, as vocab.json maps it.
        let vocab_json: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(src.join("vocab.json")).unwrap())
                .unwrap();
        let vocab = info["vocab"].as_array().expect("vocab array");
        assert_eq!(
            vocab.len() as u64,
            config["vocab_size"].as_u64().unwrap(),
            "{variant}"
        );
        for (token, id) in &vocab_json {
            assert_eq!(
                vocab[id.as_u64().unwrap() as usize],
                *token,
                "{variant}: token {token}"
            );
        }
        let pad = info["pad_token_id"].as_u64().unwrap() as usize;
        assert!(pad < vocab.len(), "{variant}");

        let sha = info["source_sha256"].as_str().expect("source_sha256");
        assert!(is_sha256_hex(sha), "{variant}: source_sha256 {sha:?}");
        assert!(!info["exporter_version"].as_str().unwrap().is_empty());

        // The text form works too and shows the same facts.
        let run = w2v(["inspect".as_ref(), out.as_os_str()]);
        assert_ok(&run);
        assert!(run.stdout.contains("16000 Hz"), "{}", run.stdout);
        assert!(run.stdout.contains(sha), "{}", run.stdout);

        // `export --json`: the summary parses and agrees with the file and with inspect.
        let out2 = out_dir.path().join("again.onnx");
        let run = export_run(&src, &out2, &["--json"]);
        assert_ok(&run);
        let summary = parse_json(&run);
        assert_eq!(summary["output"], shown(&out2), "{variant}");
        assert_eq!(summary["opset"], 17, "{variant}");
        assert_eq!(summary["precision"], "fp32", "{variant}");
        assert!(summary["parameters"].as_u64().unwrap() > 0, "{variant}");
        assert_eq!(
            summary["output_bytes"].as_u64().unwrap(),
            std::fs::metadata(&out2).unwrap().len(),
            "{variant}"
        );
        assert!(
            !summary["weight_files"].as_array().unwrap().is_empty(),
            "{variant}"
        );
        assert!(summary["seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(summary["info"], info, "{variant}: --json info vs inspect");
        // Exports are reproducible: the same source gives the same bytes.
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&out2).unwrap(),
            "{variant}: two exports differ"
        );
        assert_eq!(dir_entries(out_dir.path()), ["again.onnx", "model.onnx"]);
    }
}

#[test]
fn supported_opsets_export_and_others_are_refused() {
    let src = fixture("base-safetensors");
    for opset in ["17", "21"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        let run = export_run(&src, &out, &["--opset", opset, "--json"]);
        assert_ok(&run);
        assert_eq!(parse_json(&run)["opset"].to_string(), opset);
    }
    for opset in ["99", "16", "22", "0", "-1"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        let run = export_run(&src, &out, &[&format!("--opset={opset}")]);
        assert_one_error(&run, &["opset", opset]);
        assert_dir_empty(dir.path());
    }
}

#[test]
fn missing_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("no-such-model");
    export_fails(&src, &[&shown(&src)]);
}

#[test]
fn source_file_that_is_not_an_onnx_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model.safetensors");
    std::fs::copy(fixture("base-safetensors").join("model.safetensors"), &src).unwrap();
    let want = "neither a Hugging Face model folder nor an ONNX model";
    export_fails(&src, &[&shown(&src), want]);
    let onnx = tmp.path().join("model.onnx");
    std::fs::write(&onnx, b"x").unwrap();
    export_fails(&onnx, &[&shown(&onnx), want]);
}

/// Like [`export_fails`], with extra arguments.
fn export_fails_with(src: &Path, extra: &[&str], must_contain: &[&str]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("model.onnx");
    let run = export_run(src, &out, extra);
    let line = assert_one_error(&run, must_contain);
    assert!(run.stdout.trim().is_empty(), "stdout: {}", run.stdout);
    assert_dir_empty(out_dir.path());
    line
}

#[test]
fn an_exported_fp32_model_requantizes() {
    let tmp = tempfile::tempdir().unwrap();
    let fp32 = export_fixture("layer-noprefix-bin", tmp.path());
    let fp32_info = inspect_json(&fp32);
    for (precision, target) in [("fp16", "cpu"), ("int8", "cpu"), ("int8", "tensorrt")] {
        let out = tmp.path().join(format!("{precision}-{target}.onnx"));
        let run = export_run(
            &fp32,
            &out,
            &["--precision", precision, "--target", target, "--json"],
        );
        assert_ok(&run);
        let summary = parse_json(&run);
        assert_eq!(summary["source"], shown(&fp32));
        assert_eq!(summary["precision"], precision);
        assert_eq!(summary["opset"], 17);
        // The report compares against the source model itself.
        let report = &summary["report"];
        assert!(
            report.is_object(),
            "{precision}/{target}: no accuracy report"
        );
        assert_eq!(
            report["fp32_bytes"].as_u64(),
            Some(std::fs::metadata(&fp32).unwrap().len())
        );
        let info = inspect_json(&out);
        assert_eq!(info["precision"], precision);
        // Lineage: the checkpoint's hash is kept, the fp32 model's is added.
        assert_eq!(info["source_sha256"], fp32_info["source_sha256"]);
        let lineage = info["raw"]["w2v.quantization.source_model_sha256"]
            .as_str()
            .expect("lineage key");
        assert!(is_sha256_hex(lineage), "{lineage}");
        assert_eq!(info["vocab"], fp32_info["vocab"]);
        assert_eq!(info["config"], fp32_info["config"]);
        assert_transcribes(&out);
    }
    // The text summary names the source model.
    let out = tmp.path().join("text.onnx");
    let run = export_run(&fp32, &out, &["--precision", "int8"]);
    assert_ok(&run);
    assert!(run
        .stdout
        .starts_with(&format!("exported {} -> ", shown(&fp32))));
    assert!(
        run.stdout.contains("accuracy: int8 vs fp32"),
        "{}",
        run.stdout
    );
}

#[test]
fn fp16_weights_shrink_an_fp32_model_that_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let fp32 = export_fixture("base-safetensors", tmp.path());
    let half = tmp.path().join("half.onnx");
    let run = export_run(&fixture("base-safetensors"), &half, &["--fp16-weights"]);
    assert_ok(&run);
    assert!(
        run.stdout.contains("fp32 with fp16 weights"),
        "{}",
        run.stdout
    );
    let (full_bytes, half_bytes) = (
        std::fs::metadata(&fp32).unwrap().len(),
        std::fs::metadata(&half).unwrap().len(),
    );
    // Tensors under 1024 values (norms, biases) stay float32: most of this tiny fixture's
    // tensors (0.71 of the bytes), against 0.50 for the shipped model.
    assert!(
        (half_bytes as f64) < 0.75 * full_bytes as f64,
        "{half_bytes} bytes against {full_bytes}"
    );
    let info = inspect_json(&half);
    assert_eq!(info["precision"], "fp32");
    assert_eq!(info["raw"]["w2v.weight_storage"], "fp16");
    assert_eq!(info["source_sha256"], inspect_json(&fp32)["source_sha256"]);
    assert_transcribes(&half);
    // It re-quantizes like any fp32 model, and an fp32 ONNX model can be stored this way.
    let int8 = tmp.path().join("int8.onnx");
    assert_ok(&export_run(&half, &int8, &["--precision", "int8"]));
    let info = inspect_json(&int8);
    assert_eq!(info["precision"], "int8");
    assert!(info["raw"].get("w2v.weight_storage").is_none(), "{info}");
    assert_transcribes(&int8);
    let again = tmp.path().join("again.onnx");
    assert_ok(&export_run(&fp32, &again, &["--fp16-weights"]));
    let again_bytes = std::fs::metadata(&again).unwrap().len();
    // The same weights; only the lineage key is added.
    assert!(
        again_bytes.abs_diff(half_bytes) < 200,
        "{again_bytes} bytes against {half_bytes}"
    );
    // Only fp32 takes it: fp16 and int8 store their float32 weights so anyway.
    export_fails_with(
        &fixture("base-safetensors"),
        &["--fp16-weights", "--precision", "int8"],
        &["--fp16-weights", "--precision fp32"],
    );
}

#[test]
fn requantizing_refuses_models_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let fp32 = export_fixture("base-safetensors", tmp.path());
    let int8 = tmp.path().join("int8.onnx");
    assert_ok(&export_run(&fp32, &int8, &["--precision", "int8"]));
    let int8_args = ["--precision", "int8"];
    export_fails_with(
        &int8,
        &int8_args,
        &[&shown(&int8), "precision int8", "fp32"],
    );
    export_fails_with(&fp32, &[], &[&shown(&fp32), "already an fp32 model"]);
    export_fails_with(
        &fp32,
        &["--precision", "fp16", "--opset", "21"],
        &[&shown(&fp32), "opset 17"],
    );
    // An ONNX model from another tool.
    let foreign = tmp.path().join("foreign.onnx");
    std::fs::write(&foreign, bare_onnx(&[("author", "someone")])).unwrap();
    export_fails_with(&foreign, &int8_args, &[&shown(&foreign), "w2v metadata"]);
    // A w2v model whose graph was edited: one operator renamed in place (same length, so the
    // file stays valid protobuf).
    let mut bytes = std::fs::read(&fp32).unwrap();
    let at = bytes
        .windows(9)
        .position(|w| w == b"\x22\x07Softmax")
        .expect("a Softmax node");
    bytes[at + 2..at + 9].copy_from_slice(b"Sigmoid");
    let edited = tmp.path().join("edited.onnx");
    std::fs::write(&edited, &bytes).unwrap();
    export_fails_with(
        &edited,
        &int8_args,
        &[&shown(&edited), "not the graph", "Sigmoid"],
    );
    // Cut short.
    let fp32_bytes = std::fs::read(&fp32).unwrap();
    let cut = tmp.path().join("cut.onnx");
    std::fs::write(&cut, &fp32_bytes[..fp32_bytes.len() / 2]).unwrap();
    export_fails_with(&cut, &int8_args, &[&shown(&cut)]);
}

#[test]
fn folder_without_config() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    std::fs::remove_file(src.join("config.json")).unwrap();
    export_fails(&src, &[&shown(&src.join("config.json"))]);
}

#[test]
fn config_that_is_not_json() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    std::fs::write(src.join("config.json"), "{ \"model_type\": \"wav2vec2\", ").unwrap();
    export_fails(&src, &[&shown(&src.join("config.json")), "JSON"]);
}

#[test]
fn folder_without_vocab() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    std::fs::remove_file(src.join("vocab.json")).unwrap();
    export_fails(&src, &[&shown(&src.join("vocab.json"))]);
}

#[test]
fn folder_without_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    std::fs::remove_file(src.join("model.safetensors")).unwrap();
    export_fails(&src, &[&shown(&src), "no weights"]);
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    let weights = src.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    export_fails(&src, &[&shown(&weights)]);
    // Cut inside the header, too.
    std::fs::write(&weights, &bytes[..20]).unwrap();
    export_fails(&src, &[&shown(&weights)]);
}

#[test]
fn missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("large-stable-sharded", tmp.path(), "m");
    let shard = src.join("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    export_fails(&src, &[&shown(&shard)]);
}

#[test]
fn malicious_pickles_are_refused() {
    let pickles = pickle_fixtures_dir();
    // (fixture, what the error must name: the refused global or opcode)
    let cases: [(&str, &[&str]); 4] = [
        ("evil_system.bin", &["refused", "system"]),
        ("evil_eval.bin", &["refused", "eval"]),
        ("evil_inst.bin", &["refused", "INST"]),
        ("evil_obj.bin", &["refused", "OBJ"]),
    ];
    for (file, phrases) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture_copy("base-bin-legacy-weight-norm", tmp.path(), "m");
        let bin = src.join("pytorch_model.bin");
        std::fs::copy(pickles.join(file), &bin).unwrap();
        let mut want = vec![shown(&bin)];
        want.extend(phrases.iter().map(|s| s.to_string()));
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        export_fails(&src, &want);
    }
}

#[test]
fn broken_pickles_fail_cleanly() {
    let pickles = pickle_fixtures_dir();
    for file in [
        "truncated.bin",
        "truncated_pkl.bin",
        "not_a_dict.bin",
        "not_torch.bin",
        "missing_storage.bin",
        // A valid checkpoint, but of some other model: its tensors are not wav2vec2's.
        "plain.bin",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture_copy("layer-noprefix-bin", tmp.path(), "m");
        let bin = src.join("pytorch_model.bin");
        std::fs::copy(pickles.join(file), &bin).unwrap();
        let line = export_fails(&src, &[]);
        assert!(
            line.contains(&shown(&bin)) || line.contains(&shown(&src)),
            "{file}: error names neither the weights file nor the folder: {line}"
        );
    }
}

#[test]
fn batch_feat_extract_norm_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    let config = src.join("config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["feat_extract_norm"] = "batch".into();
    std::fs::write(&config, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    export_fails(&src, &[&shown(&config), "feat_extract_norm", "batch"]);
}

/// `base-safetensors` with `lm_head.weight` (32 × 32) stored under another shape.
fn reshaped_lm_head(
    parent: &Path,
    shape: &[usize],
    keep_bytes: Option<usize>,
) -> std::path::PathBuf {
    let src = fixture_copy("base-safetensors", parent, "m");
    let weights = src.join("model.safetensors");
    let mut tensors = read_safetensors(&weights);
    // Round trip first: the writer must reproduce a checkpoint the exporter accepts.
    write_safetensors(&weights, &tensors);
    let t = tensors
        .iter_mut()
        .find(|t| t.name == "lm_head.weight")
        .expect("fixture has lm_head.weight");
    assert_eq!(t.shape, [32, 32], "fixture changed");
    t.shape = shape.to_vec();
    if let Some(n) = keep_bytes {
        t.data.truncate(n);
    }
    write_safetensors(&weights, &tensors);
    src
}

#[test]
fn safetensors_round_trip_still_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    let weights = src.join("model.safetensors");
    write_safetensors(&weights, &read_safetensors(&weights));
    let out = tmp.path().join("out.onnx");
    assert_ok(&export_run(&src, &out, &[]));
}

#[test]
fn weight_of_the_wrong_shape() {
    // Same element count, other shape.
    let tmp = tempfile::tempdir().unwrap();
    let src = reshaped_lm_head(tmp.path(), &[16, 64], None);
    export_fails(
        &src,
        &[&shown(&src), "lm_head.weight", "[16, 64]", "[32, 32]"],
    );

    // Fewer elements.
    let tmp = tempfile::tempdir().unwrap();
    let src = reshaped_lm_head(tmp.path(), &[31, 32], Some(31 * 32 * 4));
    export_fails(
        &src,
        &[&shown(&src), "lm_head.weight", "[31, 32]", "[32, 32]"],
    );
}

#[test]
fn safetensors_shape_disagreeing_with_its_bytes() {
    // The header says 32 × 64 floats but the data is 32 × 32: a corrupt file, not a shape error.
    let tmp = tempfile::tempdir().unwrap();
    let src = reshaped_lm_head(tmp.path(), &[32, 64], None);
    export_fails(&src, &[&shown(&src.join("model.safetensors"))]);
}

#[test]
fn output_in_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("no-such-dir").join("model.onnx");
    let run = export_run(&fixture("base-safetensors"), &out, &[]);
    assert_one_error(&run, &[&shown(&out), "does not exist"]);
    assert_dir_empty(tmp.path());
}

#[test]
fn output_that_is_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model.onnx");
    std::fs::create_dir(&out).unwrap();
    let run = export_run(&fixture("base-safetensors"), &out, &[]);
    assert_one_error(&run, &[&shown(&out)]);
    assert_eq!(dir_entries(tmp.path()), ["model.onnx"]);
    assert_dir_empty(&out);
}

#[test]
fn failed_export_leaves_an_existing_output_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture_copy("base-safetensors", tmp.path(), "m");
    let weights = src.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("model.onnx");
    std::fs::write(&out, b"previous model").unwrap();
    let run = export_run(&src, &out, &[]);
    assert_one_error(&run, &[&shown(&weights)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
    assert_eq!(dir_entries(out_dir.path()), ["model.onnx"]);
}

#[test]
fn quantized_exports_describe_themselves_and_transcribe() {
    let tmp = tempfile::tempdir().unwrap();
    for (precision, target) in [("fp16", "cpu"), ("int8", "cpu"), ("int8", "tensorrt")] {
        let out = tmp.path().join(format!("{precision}-{target}.onnx"));
        let run = export_run(
            &fixture("base-safetensors"),
            &out,
            &["--precision", precision, "--target", target, "--json"],
        );
        assert_ok(&run);
        let summary = parse_json(&run);
        assert!(
            summary["report"].is_object(),
            "{precision}/{target}: no accuracy report"
        );
        let info = inspect_json(&out);
        assert_eq!(info["precision"], precision);
        // The quantized model runs through the normal transcription path.
        assert_transcribes(&out);
    }
}

#[test]
fn quantization_refusals_leave_no_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.onnx");
    let run = export_run(
        &fixture("base-safetensors"),
        &out,
        &["--precision", "fp16", "--quantize-conv"],
    );
    assert_one_error(&run, &["quantize-conv"]);
    assert_dir_empty(tmp.path());
    // A WER budget of zero on the synthetic set cannot be met by int8 of a random model.
    let run = export_run(
        &fixture("base-safetensors"),
        &out,
        &["--precision", "int8", "--max-wer-increase", "0"],
    );
    assert_eq!(
        run.code,
        Some(1),
        "expected the WER gate to refuse the export: {}",
        run.stderr
    );
    assert_no_panic(&run);
    assert_dir_empty(tmp.path());
}

#[test]
fn calibration_and_eval_data_that_cannot_be_used() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("base-safetensors");
    let tsv = tmp.path().join("data.tsv");
    let arg = tsv.to_str().unwrap();
    let calibrate = [
        "--precision",
        "int8",
        "--target",
        "tensorrt",
        "--calibration",
        arg,
    ];
    let evaluate = ["--precision", "int8", "--eval", arg];
    let no_such_file = "No such file";
    export_fails_with(&src, &calibrate, &[&shown(&tsv), no_such_file]);
    export_fails_with(&src, &evaluate, &[&shown(&tsv), no_such_file]);

    std::fs::write(&tsv, "one-field-only\n").unwrap();
    let row = format!("{}:1", shown(&tsv));
    export_fails_with(&src, &calibrate, &[&row, "path<TAB>transcript"]);
    export_fails_with(&src, &evaluate, &[&row, "path<TAB>transcript"]);

    std::fs::write(&tsv, "# nothing but a comment\n").unwrap();
    export_fails_with(&src, &calibrate, &[&shown(&tsv), "no utterances"]);

    std::fs::write(&tsv, "nowhere.wav\thello\n").unwrap();
    let missing = shown(&tmp.path().join("nowhere.wav"));
    export_fails_with(&src, &calibrate, &[&shown(&tsv), &missing]);
    export_fails_with(&src, &evaluate, &[&shown(&tsv), &missing]);

    // Clips shorter than one output frame (400 samples) cannot calibrate anything.
    std::fs::write(tmp.path().join("short.wav"), pcm16_wav(16000, &[100; 300])).unwrap();
    std::fs::write(&tsv, "short.wav\thello\nshort.wav\tagain\n").unwrap();
    export_fails_with(
        &src,
        &calibrate,
        &[&shown(&tsv), "no usable calibration clips", "400 samples"],
    );

    // Calibration data is for the TensorRT target only.
    export_fails_with(
        &src,
        &["--precision", "int8", "--calibration", arg],
        &["--calibration applies to --target tensorrt"],
    );
}

#[test]
fn inspect_rejects_what_is_not_a_w2v_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (tmp.path().join("missing.onnx"), ""),
        (tmp.path().join("text.onnx"), "not an ONNX model"),
        (tmp.path().join("bare.onnx"), "metadata"),
        (tmp.path().join("other.onnx"), "metadata"),
    ];
    std::fs::write(&cases[1].0, "this is not a model\n").unwrap();
    std::fs::write(&cases[2].0, bare_onnx(&[])).unwrap();
    std::fs::write(&cases[3].0, bare_onnx(&[("author", "someone")])).unwrap();
    for (path, phrase) in &cases {
        let run = w2v(["inspect".as_ref(), path.as_os_str(), "--json".as_ref()]);
        assert_one_error(&run, &[&shown(path), phrase]);
        assert!(run.stdout.is_empty());
    }
}
