//! End-to-end: `w2v export checkpoint.pt` of the fairseq fixtures (tools/fixtures/fairseq/)
//! through the real binary. The export transcribes exactly as the export of the same weights in
//! transformers' form; a checkpoint that carries code fails with one error line naming the
//! callable and writes nothing; a pre-trained checkpoint says it has no CTC head.

mod common;

use common::*;
use w2v_test_support::paths::{fairseq_fixture, sample, README_SAMPLE};

#[test]
fn fairseq_export_transcribes_like_the_hf_form_export() {
    let dir = tempfile::tempdir().unwrap();
    let from_pt = dir.path().join("pt.onnx");
    let from_hf = dir.path().join("hf.onnx");
    let run = export_run(&fairseq_fixture("base-cfg/checkpoint.pt"), &from_pt, &[]);
    assert_ok(&run);
    assert!(run.stdout.starts_with("exported "), "{}", run.stdout);
    assert_ok(&export_run(&fairseq_fixture("base-cfg/hf"), &from_hf, &[]));
    let mut texts = 0;
    for name in [README_SAMPLE, "go-up.wav", "five-four.wav"] {
        let audio = sample(name);
        let (a, b) = (
            transcribe_text(&from_pt, &audio),
            transcribe_text(&from_hf, &audio),
        );
        assert_eq!(a, b, "{name}");
        texts += usize::from(!a.trim().is_empty());
    }
    assert!(
        texts > 0,
        "the random model transcribed nothing: no comparison"
    );
}

#[test]
fn explicit_dict_flag_is_wired() {
    let dir = tempfile::tempdir().unwrap();
    let pt = dir.path().join("model.pt");
    std::fs::copy(fairseq_fixture("large-args/checkpoint.pt"), &pt).unwrap();
    let out = dir.path().join("m.onnx");
    let run = export_run(&pt, &out, &[]);
    assert_one_error(&run, &["dict.ltr.txt", "--dict"]);
    assert!(!out.exists());
    let dict = fairseq_fixture("large-args/dict.ltr.txt");
    let run = export_run(&pt, &out, &["--dict", dict.to_str().unwrap()]);
    assert_ok(&run);
    let info = w2v(["inspect".as_ref(), out.as_os_str(), "--json".as_ref()]);
    assert_ok(&info);
    let json = parse_json(&info);
    assert_eq!(json["do_normalize"], true);
    assert_eq!(json["vocab"][0], "<pad>");
}

#[test]
fn code_carrying_checkpoint_fails_naming_the_callable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let src = fairseq_fixture("evil/checkpoint.pt");
    let run = export_run(&src, &out, &[]);
    assert_one_error(&run, &["checkpoint.pt", "posix.system", "not allowed"]);
    assert!(run.stdout.trim().is_empty(), "stdout: {}", run.stdout);
    assert_dir_empty(dir.path());
}

#[test]
fn pretrained_checkpoint_export_says_how_to_get_a_head() {
    let dir = tempfile::tempdir().unwrap();
    let run = export_run(
        &fairseq_fixture("pretrained/checkpoint.pt"),
        &dir.path().join("m.onnx"),
        &[],
    );
    assert_one_error(&run, &["no CTC head", "w2v finetune"]);
    assert_dir_empty(dir.path());
}

/// `w2v finetune` starts a pre-trained fairseq checkpoint with a new CTC head from its
/// dictionary, trains it, and the result transcribes.
#[test]
fn pretrained_checkpoint_is_fine_tuned_with_a_new_head() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("train.tsv");
    let rows: String = [
        ("fsdd/0_george_0.wav", "zero"),
        ("fsdd/1_george_0.wav", "one"),
    ]
    .iter()
    .map(|(p, t)| format!("{}\t{t}\n", speech(p).display()))
    .collect();
    std::fs::write(&tsv, rows).unwrap();
    let out = dir.path().join("run");
    let src = fairseq_fixture("pretrained/checkpoint.pt");
    let dict = fairseq_fixture("base-cfg/dict.ltr.txt");
    let run = w2v([
        "finetune".as_ref(),
        "--model".as_ref(),
        src.as_os_str(),
        "--vocab".as_ref(),
        dict.as_os_str(),
        "--data".as_ref(),
        tsv.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--steps".as_ref(),
        "2".as_ref(),
        "--batch-seconds".as_ref(),
        "30".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
    ]);
    assert_ok(&run);
    assert!(out.join("base.onnx").is_file() && out.join("model.onnx").is_file());
    assert_transcribes(&out.join("model.onnx"));
    // --vocab on an exported model is refused.
    let again = w2v([
        "finetune".as_ref(),
        "--model".as_ref(),
        out.join("model.onnx").as_os_str(),
        "--vocab".as_ref(),
        dict.as_os_str(),
        "--data".as_ref(),
        tsv.as_os_str(),
        "--output".as_ref(),
        dir.path().join("run2").as_os_str(),
    ]);
    assert_one_error(&again, &["--vocab", "already has one"]);
}
