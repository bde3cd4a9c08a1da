//! `w2v finetune` end to end: a tiny fixture model learns (loss goes down), an interrupted run
//! (SIGKILL) resumed from its checkpoint ends with exactly the weights of an uninterrupted one,
//! and bad input gets one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_one_error, assert_transcribes, export_fixture, repo, speech, w2v};

/// Four spoken digits from ../shared/data (8 kHz WAV, resampled by the front end).
const CLIPS: [(&str, &str); 4] = [
    ("fsdd/0_george_0.wav", "zero"),
    ("fsdd/1_george_0.wav", "one"),
    ("fsdd/2_george_0.wav", "two"),
    ("fsdd/3_george_0.wav", "three"),
];

fn write_tsv(dir: &Path, name: &str, rows: &[(PathBuf, &str)]) -> PathBuf {
    let p = dir.join(name);
    let text: String = rows
        .iter()
        .map(|(path, t)| format!("{}\t{t}\n", path.display()))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn digits_tsv(dir: &Path) -> PathBuf {
    let rows: Vec<(PathBuf, &str)> = CLIPS.iter().map(|(p, t)| (speech(p), *t)).collect();
    write_tsv(dir, "train.tsv", &rows)
}

/// Common arguments: the whole set in every batch (so losses of successive updates compare).
fn finetune_args(model: &Path, data: &Path, out: &Path, steps: u64) -> Vec<String> {
    [
        "finetune",
        "--model",
        &model.display().to_string(),
        "--data",
        &data.display().to_string(),
        "--output",
        &out.display().to_string(),
        "--steps",
        &steps.to_string(),
        "--lr",
        "3e-3",
        "--batch-seconds",
        "30",
        "--backend",
        "ort",
        "--threads",
        "1",
        "--checkpoint-every",
        "1",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn step_losses(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("{\"step\"") && l.contains("\"loss\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn loss_decreases_and_output_model_transcribes() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let data = digits_tsv(dir.path());
    let out = dir.path().join("run");
    let run = w2v(finetune_args(&model, &data, &out, 12));
    assert!(run.success(), "{run:?}");
    let losses = step_losses(&run.stdout);
    assert_eq!(losses.len(), 12, "{}", run.stdout);
    eprintln!("losses: {losses:?}");
    assert!(
        losses[11] < 0.8 * losses[0],
        "loss did not decrease enough: {losses:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout[run.stdout.find("{\n").expect("report")..]).unwrap();
    assert_eq!(report["steps"], 12);
    assert!(report["peak_memory_mb"].as_f64().unwrap() > 1.0, "{report}");
    let tuned = out.join("model.onnx");
    assert!(tuned.is_file());
    // The fine-tuned model is a normal w2v model with lineage metadata...
    inspect_shows(&tuned, &["w2v.finetune.base_sha256"]);
    assert_transcribes(&tuned);
    // ... which `w2v export` re-quantizes on the device, keeping the lineage.
    let int8 = dir.path().join("tuned.int8.onnx");
    let q = w2v([
        "export".as_ref(),
        tuned.as_os_str(),
        "-o".as_ref(),
        int8.as_os_str(),
        "--precision".as_ref(),
        "int8".as_ref(),
    ]);
    assert!(q.success(), "{q:?}");
    inspect_shows(&int8, &["\"int8\"", "w2v.finetune.base_sha256"]);
    assert_transcribes(&int8);
}

#[test]
fn a_hugging_face_folder_is_exported_then_fine_tuned() {
    let dir = tempfile::tempdir().unwrap();
    let data = digits_tsv(dir.path());
    let out = dir.path().join("run");
    let folder = common::fixture("base-safetensors");
    let run = w2v(finetune_args(&folder, &data, &out, 4));
    assert!(run.success(), "{run:?}");
    let losses = step_losses(&run.stdout);
    assert_eq!(losses.len(), 4, "{}", run.stdout);
    assert!(losses[3] < losses[0], "loss did not decrease: {losses:?}");
    // The fp32 export of the folder is kept beside the checkpoint, equal to `w2v export`'s,
    // and it is the base model in the lineage.
    let base = out.join("base.onnx");
    let exported = export_fixture("base-safetensors", dir.path());
    assert_eq!(
        std::fs::read(&base).unwrap(),
        std::fs::read(&exported).unwrap(),
        "base.onnx differs from `w2v export` of the same folder"
    );
    let base_sha = w2v_engine::fs::sha256_hex(&std::fs::read(&base).unwrap());
    inspect_shows(&out.join("model.onnx"), &[&base_sha]);
    assert_transcribes(&out.join("model.onnx"));
    // --resume from the same folder finds the same base (re-exported byte for byte) and the
    // finished checkpoint: nothing left to do.
    let again = w2v(finetune_args(&folder, &data, &out, 4)
        .into_iter()
        .chain(["--resume".to_string()])
        .collect::<Vec<_>>());
    assert!(again.success(), "{again:?}");
    assert_eq!(step_losses(&again.stdout).len(), 0, "{}", again.stdout);
}

/// `w2v inspect --json` of `model` succeeds and mentions every needle.
fn inspect_shows(model: &Path, needles: &[&str]) {
    let inspect = w2v(["inspect".as_ref(), model.as_os_str(), "--json".as_ref()]);
    assert!(inspect.success(), "{inspect:?}");
    for n in needles {
        assert!(inspect.stdout.contains(n), "no {n} in {}", inspect.stdout);
    }
}

/// The float32 initializers of an ONNX model, by name.
fn weights(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use prost::Message;
    let m =
        w2v_engine::onnx_pb::ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    m.graph
        .unwrap()
        .initializer
        .into_iter()
        .filter(|t| t.data_type == w2v_engine::onnx_pb::data_type::FLOAT && !t.dims.is_empty())
        .map(|t| (t.name, t.raw_data))
        .collect()
}

#[test]
fn a_model_with_fp16_weights_fine_tunes_into_float32_weights() {
    let dir = tempfile::tempdir().unwrap();
    let full = export_fixture("base-safetensors", dir.path());
    let half = dir.path().join("half.onnx");
    let run = w2v([
        "export".as_ref(),
        common::fixture("base-safetensors").as_os_str(),
        "-o".as_ref(),
        half.as_os_str(),
        "--fp16-weights".as_ref(),
    ]);
    assert!(run.success(), "{run:?}");
    let data = digits_tsv(dir.path());
    let (from_full, from_half) = (dir.path().join("full"), dir.path().join("half"));
    let full_run = w2v(finetune_args(&full, &data, &from_full, 3));
    let half_run = w2v(finetune_args(&half, &data, &from_half, 3));
    assert!(full_run.success(), "{full_run:?}");
    assert!(half_run.success(), "{half_run:?}");
    // The same weights up to float16 rounding train the same way...
    let (a, b) = (step_losses(&full_run.stdout), step_losses(&half_run.stdout));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-2 * x.abs(),
            "losses {a:?} against {b:?}"
        );
    }
    // ... every weight trains (the stored ones are not left as constants), and the result is
    // an ordinary fp32 model with float32 weights.
    let mut stored = {
        use prost::Message;
        w2v_engine::onnx_pb::ModelProto::decode(std::fs::read(&half).unwrap().as_slice()).unwrap()
    };
    let stored = stored.graph.as_mut().unwrap();
    assert!(w2v_engine::onnx_pb::widen_f16_storage(stored) > 0);
    let start: std::collections::BTreeMap<_, _> = stored
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.raw_data.clone()))
        .collect();
    let tuned = weights(&from_half.join("model.onnx"));
    assert_eq!(
        weights(&full).keys().collect::<Vec<_>>(),
        tuned.keys().collect::<Vec<_>>()
    );
    let layers: Vec<_> = tuned
        .iter()
        .filter(|(n, _)| n.contains("encoder.layers.") && n.ends_with("weight.T"))
        .collect();
    assert!(!layers.is_empty());
    for (n, w) in layers {
        assert_ne!(*w, start[n], "{n} did not train");
    }
    inspect_shows(&from_half.join("model.onnx"), &["\"fp32\""]);
    let inspect = w2v([
        "inspect".as_ref(),
        from_half.join("model.onnx").as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(
        !inspect.stdout.contains("w2v.weight_storage"),
        "{}",
        inspect.stdout
    );
    assert_transcribes(&from_half.join("model.onnx"));
}

#[test]
fn eval_reports_wer_before_during_and_after_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let data = digits_tsv(dir.path());
    let out = dir.path().join("run");
    let mut args = finetune_args(&model, &data, &out, 4);
    args.extend(["--eval", data.to_str().unwrap(), "--eval-every", "2"].map(String::from));
    let run = w2v(args);
    assert!(run.success(), "{run:?}");
    let evals: Vec<(u64, f64)> = run
        .stdout
        .lines()
        .filter(|l| l.contains("\"eval_wer\"") && l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["eval_wer"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 2, 4],
        "{}",
        run.stdout
    );
    // a random fixture model outputs nonsense: every reference word is wrong or missing
    assert!(evals.iter().all(|e| e.1 >= 0.5), "{evals:?}");
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout[run.stdout.find("{\n").expect("report")..]).unwrap();
    assert_eq!(report["eval_wer_before"].as_f64(), Some(evals[0].1));
    assert_eq!(report["eval_wer"].as_f64(), Some(evals[2].1));
    let want = format!("{:.6}", evals[2].1);
    inspect_shows(&out.join("model.onnx"), &["w2v.finetune.eval_wer", &want]);
}

#[test]
fn a_frozen_transformer_leaves_all_but_the_ctc_head_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let data = digits_tsv(dir.path());
    let before = weights(&model);
    let out = dir.path().join("frozen");
    let mut args = finetune_args(&model, &data, &out, 3);
    args.extend(["--freeze-transformer-steps", "3"].map(String::from));
    let run = w2v(args);
    assert!(run.success(), "{run:?}");
    let after = weights(&out.join("model.onnx"));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, w) in &before {
        if name.starts_with("lm_head.") {
            assert_ne!(w, &after[name], "{name} did not train");
        } else {
            assert_eq!(w, &after[name], "{name} changed while frozen");
        }
    }
    // afterwards the Transformer trains too (the feature encoder stays frozen)
    let out = dir.path().join("unfrozen");
    let mut args = finetune_args(&model, &data, &out, 3);
    args.extend(["--freeze-transformer-steps", "1"].map(String::from));
    assert!(w2v(args).success());
    let after = weights(&out.join("model.onnx"));
    let changed = |prefix: &str| {
        before
            .iter()
            .filter(|(n, _)| n.trim_start_matches("wav2vec2.").starts_with(prefix))
            .any(|(n, w)| *w != after[n])
    };
    assert!(changed("encoder.layers."));
    assert!(!changed("feature_extractor."));
}

#[test]
fn masking_changes_training_and_bad_probabilities_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let data = digits_tsv(dir.path());
    let run_with = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = finetune_args(&model, &data, &out, 2);
        args.extend(extra.iter().map(|s| s.to_string()));
        (w2v(args), out.join("model.onnx"))
    };
    let (plain, a) = run_with("plain", &["--no-masking"]);
    assert!(plain.success(), "{plain:?}");
    let (masked, b) = run_with(
        "masked",
        &[
            "--mask-time-prob",
            "0.5",
            "--mask-time-length",
            "2",
            "--mask-channel-prob",
            "0.3",
        ],
    );
    assert!(masked.success(), "{masked:?}");
    assert_ne!(weights(&a), weights(&b), "masking made no difference");
    let (again, c) = run_with(
        "masked-again",
        &[
            "--mask-time-prob",
            "0.5",
            "--mask-time-length",
            "2",
            "--mask-channel-prob",
            "0.3",
        ],
    );
    assert!(again.success());
    assert_eq!(
        weights(&b),
        weights(&c),
        "masks are not reproducible from the seed"
    );
    let (bad, _) = run_with("bad", &["--mask-time-prob", "1.5"]);
    assert_one_error(&bad, &["--mask-time-prob", "1.5"]);
}

#[test]
fn layer_drop_skips_layers_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("large-stable-sharded", dir.path());
    let data = digits_tsv(dir.path());
    let run_with = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = finetune_args(&model, &data, &out, 3);
        args.extend(["--no-masking"].iter().chain(extra).map(|s| s.to_string()));
        let run = w2v(args);
        assert!(run.success(), "{run:?}");
        weights(&out.join("model.onnx"))
    };
    let plain = run_with("plain", &[]);
    let dropped = run_with("drop", &["--layer-drop", "0.5"]);
    assert_ne!(plain, dropped, "LayerDrop made no difference");
    assert_eq!(dropped, run_with("drop-again", &["--layer-drop", "0.5"]));
    // dropping every layer: the Transformer layers get no gradient and keep their weights
    let base = weights(&model);
    let all = run_with("drop-all", &["--layer-drop", "0.999999"]);
    for (name, w) in &base {
        if name
            .trim_start_matches("wav2vec2.")
            .starts_with("encoder.layers.")
        {
            assert_eq!(w, &all[name], "{name} trained while its layer was dropped");
        }
    }
}

fn checkpoint_step(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(16..16 + len)?).ok()?;
    header["step"].as_u64()
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let data = digits_tsv(dir.path());
    let steps = 30;

    let straight = dir.path().join("straight");
    let run = w2v(finetune_args(&model, &data, &straight, steps));
    assert!(run.success(), "{run:?}");

    let killed = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_w2v"))
        .args(finetune_args(&model, &data, &killed, steps))
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join("checkpoint.w2vckpt");
    let start = Instant::now();
    while checkpoint_step(&ckpt).is_none_or(|s| s < 2) {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let at = checkpoint_step(&ckpt).unwrap();
    assert!(at < steps, "killed after the end");
    eprintln!("killed after checkpoint step {at} of {steps}");
    assert!(!killed.join("model.onnx").exists());

    let mut args = finetune_args(&model, &data, &killed, steps);
    args.push("--resume".into());
    let resumed = w2v(args);
    assert!(resumed.success(), "{resumed:?}");
    assert_eq!(step_losses(&resumed.stdout).len() as u64, steps - at);
    let a = std::fs::read(straight.join("model.onnx")).unwrap();
    let b = std::fs::read(killed.join("model.onnx")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(
        std::fs::read(straight.join("checkpoint.w2vckpt")).unwrap(),
        std::fs::read(&ckpt).unwrap()
    );
}

#[test]
fn bad_input_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_fixture("base-safetensors", dir.path());
    let out = dir.path().join("out");
    let run_with = |rows: &[(PathBuf, &str)], extra: &[&str]| {
        let data = write_tsv(dir.path(), "d.tsv", rows);
        let mut args = finetune_args(&model, &data, &out, 1);
        args.extend(extra.iter().map(|s| s.to_string()));
        w2v(args)
    };
    let good = (speech(CLIPS[0].0), "zero");

    // Characters outside the vocabulary: an error listing them.
    let run = run_with(&[good.clone(), (speech(CLIPS[1].0), "oné 2")], &[]);
    assert_one_error(&run, &["d.tsv", "vocabulary", "'é'", "'2'"]);

    // Missing audio: skipped and counted, or fatal with --strict.
    let missing = dir.path().join("missing.wav");
    let run = run_with(&[good.clone(), (missing.clone(), "one")], &[]);
    assert!(run.success(), "{run:?}");
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout[run.stdout.find("{\n").expect("report")..]).unwrap();
    assert_eq!(report["skipped_unreadable"], 1);
    let run = run_with(&[good.clone(), (missing.clone(), "one")], &["--strict"]);
    assert_one_error(&run, &["missing.wav"]);

    // A clip too short for its transcript: skipped and counted.
    let long = "zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero";
    let run = run_with(&[good.clone(), (speech(CLIPS[1].0), long)], &[]);
    assert!(run.success(), "{run:?}");
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout[run.stdout.find("{\n").expect("report")..]).unwrap();
    assert_eq!(report["skipped_too_short"], 1);

    // A quantized model: fine-tuning needs fp32 weights.
    let int8 = dir.path().join("int8.onnx");
    let e = w2v([
        "export".as_ref(),
        common::fixture("base-safetensors").as_os_str(),
        "-o".as_ref(),
        int8.as_os_str(),
        "--precision".as_ref(),
        "int8".as_ref(),
    ]);
    assert!(e.success(), "{e:?}");
    let data = digits_tsv(dir.path());
    let run = w2v(finetune_args(&int8, &data, &out, 1));
    assert_one_error(&run, &["int8.onnx", "fp32"]);
}
