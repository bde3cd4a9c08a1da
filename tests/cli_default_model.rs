//! The shipped default model (`models/`) end to end through the binary: `w2v transcribe` with no
//! `--model` finds `models/default.onnx` and prints the right words for the committed samples
//! (`samples/`, phrases of held-out speakers the model never trained on), on both backends and
//! for the int8 variant; and `models/` stays under its 30 MB budget.

mod common;

use std::path::PathBuf;

use common::*;
use w2v_test_support::paths::{default_int8_model, models_dir, samples_dir, samples_tsv};

/// (absolute path, transcript) of every row of `samples/samples.tsv`.
fn samples() -> Vec<(PathBuf, String)> {
    let tsv = samples_tsv();
    let text = std::fs::read_to_string(&tsv).unwrap_or_else(|e| panic!("{}: {e}", tsv.display()));
    let rows: Vec<(PathBuf, String)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (path, words) = l.split_once('\t').expect("path<TAB>transcript");
            (samples_dir().join(path), words.to_string())
        })
        .collect();
    assert!(rows.len() >= 3, "{}: expected a few samples", tsv.display());
    rows
}

/// Runs `w2v transcribe --format json` on every sample with `extra` arguments and checks that
/// each file's transcript is exactly its reference.
fn transcribes_every_sample(extra: &[&str]) {
    let samples = samples();
    let mut args: Vec<String> = vec!["transcribe".into(), "--format".into(), "json".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(samples.iter().map(|(p, _)| p.display().to_string()));
    let run = w2v(&args);
    assert_ok(&run);
    let lines: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        lines.len(),
        samples.len(),
        "one JSON line per file:\n{}",
        run.stdout
    );
    let wrong: Vec<String> = samples
        .iter()
        .zip(&lines)
        .filter(|((_, want), got)| {
            // the vocabulary is upper-case characters; references are written in lower case
            got["text"].as_str().map(str::to_lowercase) != Some(want.to_lowercase())
        })
        .map(|((p, want), got)| format!("{}: want {want:?}, got {}", p.display(), got["text"]))
        .collect();
    assert!(wrong.is_empty(), "w2v {extra:?}:\n{}", wrong.join("\n"));
}

#[test]
fn default_model_on_tract_transcribes_the_samples() {
    transcribes_every_sample(&[]);
}

#[test]
fn default_model_on_onnx_runtime_transcribes_the_samples() {
    transcribes_every_sample(&["--backend", "ort"]);
}

#[test]
fn int8_default_model_transcribes_the_samples() {
    let int8 = default_int8_model();
    transcribes_every_sample(&["--model", int8.to_str().unwrap()]);
}

#[test]
fn the_shipped_model_describes_itself() {
    let run = w2v(["inspect", "--json"]);
    assert_ok(&run);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let text = v.to_string();
    // base-960h's character vocabulary, so tokens and decoding match real checkpoints
    for needle in ["\"<pad>\"", "\"|\"", "16000"] {
        assert!(text.contains(needle), "inspect lacks {needle}: {text}");
    }
}

#[test]
fn models_folder_fits_its_30_mb_budget() {
    let dir = models_dir();
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(
        total < 30_000_000,
        "{}: {total} bytes, over the 30 MB budget",
        dir.display()
    );
}

/// `models/default.words.txt`: the shipped model's training words.
fn word_list() -> PathBuf {
    models_dir().join("default.words.txt")
}

/// Asserts that every word of `transcribe --format json` output is `listed`, with a confidence
/// in [0, 1]; returns how many words there were.
fn words_all_listed(stdout: &str, listed: &[String]) -> usize {
    let mut emitted = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for w in v["words"].as_array().unwrap() {
            let text = w["text"].as_str().unwrap();
            assert!(
                listed.iter().any(|l| l == text),
                "{text:?} is not listed: {line}"
            );
            let c = w["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c), "{line}");
            emitted += 1;
        }
    }
    emitted
}

/// The words of [`word_list`], upper case as transcripts spell them.
fn listed_words() -> Vec<String> {
    std::fs::read_to_string(word_list())
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap().to_string())
        .flat_map(|l| {
            l.split_whitespace()
                .map(str::to_uppercase)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn default_model_with_its_word_list_transcribes_the_samples() {
    let words = word_list();
    transcribes_every_sample(&["--words", words.to_str().unwrap()]);
}

/// `models/default.lm.arpa`, the shipped domain LM (a bigram of the training transcripts), loads
/// and its beam search transcribes every sample.
#[test]
fn default_model_with_its_domain_lm_transcribes_the_samples() {
    let lm = models_dir().join("default.lm.arpa");
    transcribes_every_sample(&["--lm", lm.to_str().unwrap()]);
}

/// Constrained decoding on held-out clips: every output word is a listed one (greedy output of
/// the same clips misspells some), and `eval --json` says how it decoded.
#[test]
fn word_list_decoding_outputs_only_listed_words() {
    let listed = listed_words();
    let clips = common::stream::test_clips(&["two", "three", "left", "off", "seven", "go"]);
    let chosen = common::stream::pick(&clips, &["two", "three", "left", "off", "seven", "go"], 4);
    let words = word_list();
    let mut args = vec![
        "transcribe".to_string(),
        "--format".into(),
        "json".into(),
        "--words".into(),
        words.display().to_string(),
    ];
    args.extend(chosen.iter().map(|(p, _)| p.display().to_string()));
    let run = w2v(&args);
    assert_ok(&run);
    let emitted = words_all_listed(&run.stdout, &listed);
    assert!(emitted >= chosen.len() / 2, "{}", run.stdout);

    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("clips.tsv");
    let rows: String = chosen
        .iter()
        .map(|(p, t)| format!("{}\t{t}\n", p.display()))
        .collect();
    std::fs::write(&tsv, format!("path\ttranscript\n{rows}")).unwrap();
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--json", "--data", tsv.to_str().unwrap()];
        a.extend(extra);
        let run = w2v(&a);
        assert_ok(&run);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let greedy = eval(&[]);
    let constrained = eval(&["--words", words.to_str().unwrap()]);
    assert_eq!(greedy["decoding"], "greedy");
    assert_eq!(constrained["decoding"], "lexicon");
    assert_eq!(constrained["words_file"], words.display().to_string());
    let lm = models_dir().join("default.lm.arpa");
    let with_lm = eval(&[
        "--words",
        words.to_str().unwrap(),
        "--lm",
        lm.to_str().unwrap(),
    ]);
    assert_eq!(with_lm["decoding"], "beam+words");
    eprintln!(
        "{} clips: WER greedy {:.3}, with the word list {:.3}, word list + LM {:.3}",
        chosen.len(),
        greedy["wer"],
        constrained["wer"],
        with_lm["wer"]
    );
}

/// `--words` with beam search: a word trie with LM lookahead in the beam. A held-out "zero"
/// that the model alone spells "ERO" comes out as a listed word, and every word of every output
/// is listed.
#[test]
fn word_list_in_the_beam_with_the_domain_lm() {
    let words = word_list();
    let listed = listed_words();
    let lm = models_dir().join("default.lm.arpa");
    let zero = common::speech("fsdd/0_george_0.wav");
    let run = w2v(["transcribe".as_ref(), zero.as_os_str()]);
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "ERO");
    let run = w2v([
        "transcribe".as_ref(),
        "--words".as_ref(),
        words.as_os_str(),
        "--lm".as_ref(),
        lm.as_os_str(),
        zero.as_os_str(),
    ]);
    assert_ok(&run);
    assert_eq!(run.stdout.trim(), "ZERO");
    let clips = common::stream::test_clips(&["two", "three", "left", "off", "seven", "go"]);
    let chosen = common::stream::pick(&clips, &["two", "three", "left", "off", "seven", "go"], 3);
    let mut args = vec![
        "transcribe".to_string(),
        "--format".into(),
        "json".into(),
        "--words".into(),
        words.display().to_string(),
        "--decoder".into(),
        "beam".into(),
    ];
    args.extend(chosen.iter().map(|(p, _)| p.display().to_string()));
    let run = w2v(&args);
    assert_ok(&run);
    words_all_listed(&run.stdout, &listed);
    // pyctcdecode's search has no word list: refused in one line.
    let run = w2v([
        "transcribe".as_ref(),
        "--words".as_ref(),
        words.as_os_str(),
        "--lm".as_ref(),
        lm.as_os_str(),
        "--pyctcdecode".as_ref(),
        zero.as_os_str(),
    ]);
    assert_one_error(&run, &["--words is not part of pyctcdecode's search"]);
}

#[test]
fn bad_word_lists_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sample = samples()[0].0.clone();
    let missing = dir.path().join("missing.txt");
    let run = w2v([
        "transcribe".as_ref(),
        "--words".as_ref(),
        missing.as_os_str(),
        sample.as_os_str(),
    ]);
    assert_one_error(&run, &[&shown(&missing), "no such file"]);
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "yes no\nstop café\n").unwrap();
    let run = w2v([
        "eval".as_ref(),
        "--words".as_ref(),
        bad.as_os_str(),
        "--data".as_ref(),
        samples_tsv().as_os_str(),
    ]);
    assert_one_error(&run, &[&shown(&bad), ":2:", "café", "é"]);
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let run = w2v([
        "transcribe".as_ref(),
        "--words".as_ref(),
        empty.as_os_str(),
        sample.as_os_str(),
    ]);
    assert_one_error(&run, &[&shown(&empty), "no words"]);
}

/// `w2v eval --tune`: every setting of the grid, best first, each equal to a plain `eval` with
/// that setting (the model runs once; the saved logits are decoded per setting).
#[test]
fn eval_tune_reports_the_grid_and_agrees_with_eval() {
    let lm = models_dir().join("default.lm.arpa");
    let data = common::repo().join("samples/samples.tsv");
    let (lm, data) = (lm.to_str().unwrap(), data.to_str().unwrap());
    let run = w2v([
        "eval",
        "--data",
        data,
        "--lm",
        lm,
        "--tune",
        "--lm-weights",
        "0.5,3",
        "--word-scores",
        "-2,1.5",
        "--json",
    ]);
    assert!(run.success(), "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    assert_eq!(report["utterances"], 5);
    let wers: Vec<f64> = points.iter().map(|p| p["wer"].as_f64().unwrap()).collect();
    assert!(wers.windows(2).all(|w| w[0] <= w[1]), "{wers:?}");
    for p in [&points[0], &points[3]] {
        let (a, b) = (p["lm_weight"].to_string(), p["word_score"].to_string());
        let plain = w2v([
            "eval",
            "--data",
            data,
            "--lm",
            lm,
            "--lm-weight",
            &a,
            "--word-score",
            &b,
            "--json",
        ]);
        let plain: serde_json::Value = serde_json::from_str(&plain.stdout).unwrap();
        assert_eq!(plain["wer"], p["wer"], "lm-weight {a} word-score {b}");
    }
    let run = w2v(["eval", "--data", data, "--tune"]);
    assert!(!run.success());
    assert!(run.stderr.contains("--lm"), "{}", run.stderr);
}
