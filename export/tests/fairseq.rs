//! fairseq wav2vec 2.0 checkpoints (tools/fixtures/fairseq/, written by
//! tools/fixtures/gen_fairseq.py): every supported variant exports to the model its transformers
//! conversion gives (logits within 1e-4 of PyTorch on tract and ONNX Runtime, the same metadata),
//! training state is never read, and checkpoints that carry code are refused by name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

mod common;
use common::{cases, compare, TIER};

use w2v_engine::backend::ort::{OrtBackend, OrtOptions};
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::config::Wav2Vec2Config;
use w2v_engine::model_info::{keys, ModelInfo};
use w2v_engine::{Backend, BackendOptions, Logits};
use w2v_export::checkpoint::{fairseq, pytorch, CheckpointError};
use w2v_export::{export, ExportError, ExportOptions, NewHead};
use w2v_test_support::assert_close;
use w2v_test_support::paths::fairseq_fixture as fixture;

const VARIANTS: [&str; 3] = ["base-cfg", "large-args", "layer-nobias-noproj"];

fn checkpoint(variant: &str) -> PathBuf {
    fixture(variant).join("checkpoint.pt")
}

fn run_cases(backend: &mut dyn Backend, what: &str, dir: &Path) -> (Vec<Logits>, f32) {
    let mut out = Vec::new();
    let mut worst = 0f32;
    for case in cases(dir) {
        let got = backend
            .run(&case.batch())
            .unwrap_or_else(|e| panic!("{what}/{}: {e}", case.name));
        worst = worst.max(compare(what, &case, &got));
        out.push(got);
    }
    (out, worst)
}

#[test]
fn fairseq_variants_match_pytorch_in_tract_and_ort() {
    let out = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let onnx = out.path().join(format!("{variant}.onnx"));
        let summary = export(&checkpoint(variant), &onnx, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{variant}: export failed: {e}"));
        assert_eq!(summary.weight_files, vec![checkpoint(variant)]);
        let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
        let (t, dt) = run_cases(&mut tract, &format!("tract/{variant}"), &fixture(variant));
        let mut ort = OrtBackend::load(&onnx, &OrtOptions::default()).unwrap();
        let (o, do_) = run_cases(&mut ort, &format!("ort/{variant}"), &fixture(variant));
        for (a, b) in t.iter().zip(&o) {
            assert_close(&format!("{variant}: tract vs ort"), &a.data, &b.data, TIER);
        }
        eprintln!("{variant}: max |logit diff| vs PyTorch: tract {dt:.2e}, ort {do_:.2e}");
    }
}

#[test]
fn metadata_follows_the_checkpoint() {
    let out = tempfile::tempdir().unwrap();
    let want = [
        // (variant, do_normalize, attention mask, stable layer norm, conv bias, vocab size)
        ("base-cfg", false, false, false, false, 32),
        ("large-args", true, true, true, true, 16),
        ("layer-nobias-noproj", true, true, false, false, 24),
    ];
    for (variant, normalize, mask, stable, bias, vocab) in want {
        let onnx = out.path().join(format!("{variant}.onnx"));
        let s = export(&checkpoint(variant), &onnx, &ExportOptions::default()).unwrap();
        let info = s.info;
        assert_eq!(info.do_normalize, normalize, "{variant}");
        assert_eq!(info.uses_attention_mask, mask, "{variant}");
        assert_eq!(info.sample_rate, 16000, "{variant}");
        assert_eq!(info.vocab.len(), vocab, "{variant}");
        assert_eq!(
            info.vocab[..5],
            ["<pad>", "<s>", "</s>", "<unk>", "|"],
            "{variant}"
        );
        assert_eq!(info.pad_token_id, 0, "{variant}");
        assert_eq!(info.word_delimiter_token.as_deref(), Some("|"), "{variant}");
        assert!(info.raw.contains_key(keys::MASKED_SPEC_EMBED), "{variant}");
        // The stored config is a Hugging Face one, readable as any exported model's.
        let cfg = Wav2Vec2Config::parse(Path::new("x"), &info.config.to_string()).unwrap();
        assert_eq!(
            (cfg.do_stable_layer_norm, cfg.conv_bias, cfg.vocab_size),
            (stable, bias, vocab),
            "{variant}"
        );
        // The fine-tuning run's SpecAugment settings are what `w2v finetune` starts from.
        assert_eq!(info.config["mask_time_prob"], 0.5, "{variant}");
        assert_eq!(info.config["mask_feature_prob"], 0.25, "{variant}");
        assert_eq!(info.config["mask_feature_length"], 64, "{variant}");
    }
}

/// The fairseq checkpoint and its transformers conversion (base-cfg/hf) are the same model: the
/// same graph, logits and metadata apart from the config's wording and the source hash.
#[test]
fn export_equals_the_hf_form_export() {
    let out = tempfile::tempdir().unwrap();
    let from_pt = out.path().join("pt.onnx");
    let from_hf = out.path().join("hf.onnx");
    let a = export(&checkpoint("base-cfg"), &from_pt, &ExportOptions::default()).unwrap();
    let b = export(&fixture("base-cfg/hf"), &from_hf, &ExportOptions::default()).unwrap();
    assert_eq!(a.parameters, b.parameters);
    let (ia, ib) = (a.info, b.info);
    assert_eq!(ia.vocab, ib.vocab);
    assert_eq!(ia.pad_token_id, ib.pad_token_id);
    assert_eq!(ia.word_delimiter_token, ib.word_delimiter_token);
    assert_eq!(ia.do_normalize, ib.do_normalize);
    assert_eq!(ia.sample_rate, ib.sample_rate);
    assert_eq!(
        (ia.frame_stride, ia.receptive_field),
        (ib.frame_stride, ib.receptive_field)
    );
    assert_eq!(ia.uses_attention_mask, ib.uses_attention_mask);
    assert_eq!(ia.model_type, ib.model_type);
    assert_eq!(
        ia.raw.get(keys::MASKED_SPEC_EMBED),
        ib.raw.get(keys::MASKED_SPEC_EMBED)
    );
    let parse = |i: &ModelInfo| Wav2Vec2Config::parse(Path::new("x"), &i.config.to_string());
    let (ca, cb) = (parse(&ia).unwrap(), parse(&ib).unwrap());
    assert_eq!(
        (ca.conv_dim, ca.conv_kernel, ca.conv_stride),
        (cb.conv_dim, cb.conv_kernel, cb.conv_stride)
    );
    assert_eq!(
        (ca.hidden_size, ca.num_hidden_layers, ca.num_attention_heads),
        (cb.hidden_size, cb.num_hidden_layers, cb.num_attention_heads)
    );
    assert_eq!(
        (ca.intermediate_size, ca.hidden_act, ca.feat_extract_norm),
        (cb.intermediate_size, cb.hidden_act, cb.feat_extract_norm)
    );
    assert_eq!(
        (
            ca.num_conv_pos_embeddings,
            ca.num_conv_pos_embedding_groups,
            ca.layer_norm_eps
        ),
        (
            cb.num_conv_pos_embeddings,
            cb.num_conv_pos_embedding_groups,
            cb.layer_norm_eps
        )
    );
    // Same weights, same graph: identical logits on the same runtime.
    let case = &cases(&fixture("base-cfg"))[0];
    let mut ta = TractBackend::load(&from_pt, &BackendOptions::default()).unwrap();
    let mut tb = TractBackend::load(&from_hf, &BackendOptions::default()).unwrap();
    let (la, lb) = (
        ta.run(&case.batch()).unwrap(),
        tb.run(&case.batch()).unwrap(),
    );
    assert_eq!(la.data, lb.data);
}

#[test]
fn training_state_is_inert_data() {
    let path = checkpoint("base-cfg");
    let c = pytorch::read_checkpoint(&path, &["extra_state", "optimizer_history"]).unwrap();
    let train = &c.entries["extra_state"]["metrics"]["train"];
    assert_eq!(train["__class__"], "fairseq.logging.meters.MetersDict");
    assert_eq!(
        train["loss"]["__class__"],
        "fairseq.logging.meters.AverageMeter"
    );
    assert_eq!(train["loss"]["sum"], 325.0);
    assert_eq!(
        train["wps"]["__class__"],
        "fairseq.logging.meters.TimeMeter"
    );
    assert_eq!(
        train["wall"]["__class__"],
        "fairseq.logging.meters.StopwatchMeter"
    );
    // A numpy scalar is a placeholder too; a tensor outside the weights is never read.
    assert_eq!(
        train["loss"]["val"]["__class__"]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next(),
        Some("scalar")
    );
    assert!(train["wall"]["val"].is_null());
    assert_eq!(
        c.entries["optimizer_history"][0]["optimizer_name"],
        "FairseqAdam"
    );
}

/// Rewrite a torch.save zip keeping only the entries `keep` accepts.
fn filter_zip(src: &Path, dst: &Path, keep: impl Fn(&str) -> bool) -> usize {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut dropped = 0;
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let name = e.name().to_string();
        if !keep(&name) {
            dropped += 1;
            continue;
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        w.start_file(name, opts).unwrap();
        w.write_all(&buf).unwrap();
    }
    w.finish().unwrap();
    dropped
}

/// torch.save numbers storages in pickling order: the model's come first (cfg holds no
/// tensors), then extra_state's and last_optimizer_state's. With every storage after the
/// model's deleted from the archive, the checkpoint still exports to the same model: those
/// storages are never read.
#[test]
fn optimizer_and_extra_state_storages_are_never_read() {
    let src = checkpoint("base-cfg");
    let model_tensors = fairseq::read(&src).unwrap().state_dict.len();
    let dir = tempfile::tempdir().unwrap();
    let pruned = dir.path().join("checkpoint.pt");
    let dropped = filter_zip(&src, &pruned, |name| {
        match name.rsplit_once("/data/").map(|(_, k)| k.parse::<usize>()) {
            Some(Ok(key)) => key < model_tensors,
            _ => true,
        }
    });
    assert!(dropped >= 10, "only {dropped} storages after the model's");
    std::fs::copy(
        fixture("base-cfg/dict.ltr.txt"),
        dir.path().join("dict.ltr.txt"),
    )
    .unwrap();
    let onnx = dir.path().join("m.onnx");
    export(&pruned, &onnx, &ExportOptions::default()).unwrap();
    let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
    run_cases(&mut tract, "tract/pruned", &fixture("base-cfg"));
}

#[test]
fn code_carrying_checkpoint_is_refused_by_name() {
    let path = checkpoint("evil");
    match fairseq::read(&path) {
        Err(CheckpointError::Unsafe { reason, .. }) => {
            assert!(reason.contains("posix.system"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("m.onnx");
    let e = export(&path, &onnx, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("posix.system is not allowed"), "{e}");
    assert!(!onnx.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn pretrained_checkpoint_has_no_ctc_head() {
    let path = checkpoint("pretrained");
    let c = fairseq::read(&path).unwrap();
    assert!(!c.has_ctc_head());
    assert!(c.sections.ctc.is_none());
    assert!(c.state_dict.contains_key("quantizer.codevectors"));
    assert!(c.state_dict.contains_key("project_hid.weight"));
    let dir = tempfile::tempdir().unwrap();
    let e = export(&path, &dir.path().join("m.onnx"), &ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::NoCtcHead { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("no CTC head") && text.contains("w2v finetune"),
        "{text}"
    );
}

#[test]
fn dictionary_is_found_beside_or_given() {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("model.pt");
    std::fs::copy(checkpoint("large-args"), &pt).unwrap();
    let onnx = dir.path().join("m.onnx");
    let e = export(&pt, &onnx, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("--dict"), "{e}");
    // Given explicitly; then a dictionary of another size is refused.
    let options = ExportOptions {
        dict: Some(fixture("large-args/dict.ltr.txt")),
        ..Default::default()
    };
    export(&pt, &onnx, &options).unwrap();
    let wrong = ExportOptions {
        dict: Some(fixture("base-cfg/dict.ltr.txt")),
        ..Default::default()
    };
    let e = export(&pt, &dir.path().join("n.onnx"), &wrong).unwrap_err();
    assert!(
        e.to_string().contains("32 symbols") && e.to_string().contains("16 outputs"),
        "{e}"
    );
    // Any single dict.*.txt beside the checkpoint is used.
    std::fs::copy(
        fixture("large-args/dict.ltr.txt"),
        dir.path().join("dict.chars.txt"),
    )
    .unwrap();
    export(&pt, &dir.path().join("o.onnx"), &ExportOptions::default()).unwrap();
    // --dict is for fairseq checkpoints only.
    let hf = ExportOptions {
        dict: Some(fixture("large-args/dict.ltr.txt")),
        ..Default::default()
    };
    let e = export(&fixture("base-cfg/hf"), &dir.path().join("p.onnx"), &hf).unwrap_err();
    assert!(e.to_string().contains("--dict"), "{e}");
}

fn with_head(vocab: PathBuf, seed: u64) -> ExportOptions {
    ExportOptions {
        new_head: Some(NewHead { vocab, seed }),
        ..Default::default()
    }
}

/// A pre-trained fairseq checkpoint given a new, seeded CTC head: the same encoder as the
/// fine-tuned base (its pre-training weights are the base's), a head of the dictionary's size,
/// the same for the same seed and different for another.
#[test]
fn pretrained_fairseq_checkpoint_takes_a_new_seeded_head() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint("pretrained");
    let dict = fixture("base-cfg/dict.ltr.txt");
    let (a, b, c) = (
        dir.path().join("a.onnx"),
        dir.path().join("b.onnx"),
        dir.path().join("c.onnx"),
    );
    let s = export(&src, &a, &with_head(dict.clone(), 7)).unwrap();
    export(&src, &b, &with_head(dict.clone(), 7)).unwrap();
    export(&src, &c, &with_head(dict.clone(), 8)).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    assert_eq!(s.info.vocab.len(), 32);
    assert_eq!(s.info.vocab[0], "<pad>");
    assert_eq!(s.info.pad_token_id, 0);
    assert!(!s.info.do_normalize);
    // Fine-tuning starts from fairseq's fine-tuning defaults, not pre-training's masking.
    assert_eq!(s.info.config["mask_time_prob"], 0.5);
    let mut tract = TractBackend::load(&a, &BackendOptions::default()).unwrap();
    let case = &cases(&fixture("base-cfg"))[0];
    let logits = tract.run(&case.batch()).unwrap();
    assert_eq!(logits.vocab, 32);
    assert!(logits.data.iter().all(|v| v.is_finite()));
    // A fine-tuned checkpoint already has its head.
    let e = export(&checkpoint("base-cfg"), &c, &with_head(dict, 7)).unwrap_err();
    assert!(e.to_string().contains("already has a CTC head"), "{e}");
}

/// A Hugging Face pre-trained folder (Wav2Vec2ForPreTraining, no lm_head, no vocab.json): refused
/// without a head, exported with one from a vocab.json.
#[test]
fn pretrained_hf_folder_takes_a_new_head() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pre");
    std::fs::create_dir(&folder).unwrap();
    let hf = fixture("base-cfg/hf");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["Wav2Vec2ForPreTraining"]);
    std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        hf.join("preprocessor_config.json"),
        folder.join("preprocessor_config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(hf.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("lm_head."))
        .collect();
    safetensors::serialize_to_file(kept, None, &folder.join("model.safetensors")).unwrap();

    let out = dir.path().join("m.onnx");
    let e = export(&folder, &out, &ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::NoCtcHead { .. }), "{e}");
    assert!(e.to_string().contains("--vocab vocab.json"), "{e}");
    let s = export(&folder, &out, &with_head(hf.join("vocab.json"), 1)).unwrap();
    assert_eq!(s.info.vocab.len(), 32);
    assert_eq!(s.info.config["architectures"][0], "Wav2Vec2ForCTC");
    let cfg = Wav2Vec2Config::parse(Path::new("x"), &s.info.config.to_string()).unwrap();
    assert_eq!((cfg.vocab_size, cfg.pad_token_id), (32, Some(0)));
}
