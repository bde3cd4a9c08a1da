//! End-to-end tests of `w2v decode` (saved logits, greedy and beam search with an n-gram LM and
//! hotwords) through the real binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use w2v_engine::npy::encode_logits;

/// pyctcdecode's bugs-bunny labels, with `<pad>` as the blank (as a vocab.json names it).
const LABELS: [&str; 8] = [" ", "b", "g", "n", "s", "u", "y", "<pad>"];

fn lm_data(name: &str) -> PathBuf {
    repo().join("engine/tests/data/lm").join(name)
}

/// pyctcdecode's TEST_LOGITS ([`w2v_test_support::lm::BUGS_BUNNY_FRAMES`]), its blank as
/// `<pad>`.
fn bugs_bunny_logits() -> Vec<f32> {
    let mut out = Vec::new();
    for row in w2v_test_support::lm::BUGS_BUNNY_FRAMES {
        let mut p = [1e-15f32; 8];
        for &(label, x) in row {
            let label = if label.is_empty() { "<pad>" } else { label };
            p[LABELS.iter().position(|l| *l == label).unwrap()] = x as f32;
        }
        out.extend(p.iter().map(|x| x.ln()));
    }
    out
}

struct Setup {
    dir: tempfile::TempDir,
    vocab: PathBuf,
    logits: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.json");
    let map: serde_json::Map<String, Value> = LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| (l.to_string(), Value::from(i)))
        .collect();
    std::fs::write(&vocab, Value::Object(map).to_string()).unwrap();
    let logits = dir.path().join("bugs.npy");
    std::fs::write(&logits, encode_logits(&bugs_bunny_logits(), 13, 8)).unwrap();
    Setup { dir, vocab, logits }
}

fn decode(s: &Setup, logits: &[&Path], extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec!["decode".into(), "--vocab".into(), shown(&s.vocab)];
    for l in logits {
        args.push("--logits".into());
        args.push(shown(l));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    w2v(args)
}

#[test]
fn greedy_beam_lm_and_hotwords() {
    let s = setup();
    let arpa = lm_data("bugs_bunny_kenlm.arpa");
    let run = decode(&s, &[&s.logits], &[]);
    assert_ok(&run);
    assert_eq!(run.stdout, "bunny bunny\n");
    let run = decode(&s, &[&s.logits], &["--decoder", "beam"]);
    assert_ok(&run);
    assert_eq!(run.stdout, "bunny bunny\n");
    // The LM turns it into "bugs bunny", in both modes; two inputs give two lines in order.
    for mode in [&[][..], &["--pyctcdecode"][..]] {
        let mut extra = vec!["--lm", arpa.to_str().unwrap()];
        extra.extend(mode);
        let run = decode(&s, &[&s.logits, &s.logits], &extra);
        assert_ok(&run);
        assert_eq!(run.stdout, "bugs bunny\nbugs bunny\n", "{mode:?}");
    }
    let hot = s.dir.path().join("hot.txt");
    std::fs::write(&hot, "# favoured\nbugs\n").unwrap();
    let run = decode(&s, &[&s.logits], &["--hotwords", hot.to_str().unwrap()]);
    assert_ok(&run);
    assert_eq!(run.stdout, "bugs bunny\n");
}

#[test]
fn json_has_words_times_and_nbest() {
    let s = setup();
    let run = decode(
        &s,
        &[&s.logits],
        &["--decoder", "beam", "--nbest", "3", "--json"],
    );
    assert_ok(&run);
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["text"], "bunny bunny");
    assert_eq!(v["file"], shown(&s.logits));
    let words = v["words"].as_array().unwrap();
    assert_eq!(words.len(), 2);
    // vocab.json: 0.02 s per frame; "bunny" (second) spans frames 7..13.
    assert!((words[1]["start"].as_f64().unwrap() - 0.14).abs() < 1e-9);
    assert!((words[1]["end"].as_f64().unwrap() - 0.26).abs() < 1e-9);
    let nbest = v["nbest"].as_array().unwrap();
    assert_eq!(nbest.len(), 3);
    assert_eq!(nbest[0]["text"], "bunny bunny");
    assert!(nbest[0]["score"].as_f64().unwrap() >= nbest[1]["score"].as_f64().unwrap());
}

#[test]
fn pyctcdecode_mode_on_librispeech_logits() {
    // pyctcdecode's own LibriSpeech logits, with a vocab.json of its labels.
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.json");
    let mut map = serde_json::Map::new();
    map.insert(" ".into(), 0.into());
    for (i, c) in ('a'..='z').enumerate() {
        map.insert(c.to_string(), (i + 1).into());
    }
    map.insert("'".into(), 27.into());
    map.insert("<pad>".into(), 28.into());
    std::fs::write(&vocab, Value::Object(map).to_string()).unwrap();
    let run = w2v([
        "decode",
        "--pyctcdecode",
        "--decoder",
        "beam",
        "--vocab",
        vocab.to_str().unwrap(),
        "--logits",
        lm_data("libri_logits.npy").to_str().unwrap(),
    ]);
    assert_ok(&run);
    assert_eq!(
        run.stdout.trim(),
        "i have a good deal of will you remember and what i have set my mind upon no doubt i \
         shall some day achieve"
    );
}

#[test]
fn bad_inputs_are_one_error_line() {
    let s = setup();
    // Logits of the wrong width.
    let wide = s.dir.path().join("wide.npy");
    std::fs::write(&wide, encode_logits(&[0.0; 18], 2, 9)).unwrap();
    let run = decode(&s, &[&wide], &[]);
    assert_one_error(&run, &["wide.npy", "9 columns", "8 tokens"]);
    // NaN logits.
    let mut x = bugs_bunny_logits();
    x[17] = f32::NAN;
    let nan = s.dir.path().join("nan.npy");
    std::fs::write(&nan, encode_logits(&x, 13, 8)).unwrap();
    assert_one_error(&decode(&s, &[&nan], &[]), &["nan.npy", "NaN", "frame 2"]);
    // Not a .npy.
    let txt = s.dir.path().join("x.npy");
    std::fs::write(&txt, "hello").unwrap();
    assert_one_error(&decode(&s, &[&txt], &[]), &["x.npy", "not a .npy"]);
    // A malformed ARPA names the file and line.
    let arpa = s.dir.path().join("bad.arpa");
    std::fs::write(
        &arpa,
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t<s>\nzero\tbugs\n\\end\\\n",
    )
    .unwrap();
    assert_one_error(
        &decode(&s, &[&s.logits], &["--lm", arpa.to_str().unwrap()]),
        &["bad.arpa:6:", "probability"],
    );
    // An empty hotword file.
    let hot = s.dir.path().join("hot.txt");
    std::fs::write(&hot, "# nothing\n\n").unwrap();
    assert_one_error(
        &decode(&s, &[&s.logits], &["--hotwords", hot.to_str().unwrap()]),
        &["hot.txt", "no hotword phrases"],
    );
    // --lm with an explicit greedy decoder.
    assert_one_error(
        &decode(
            &s,
            &[&s.logits],
            &["--decoder", "greedy", "--lm", arpa.to_str().unwrap()],
        ),
        &["--decoder beam"],
    );
}

/// `w2v lm build`: a domain LM from the user's own sentences, used at once by `--lm`.
#[test]
fn lm_build_makes_a_domain_lm_that_transcribe_uses() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "zero zero six seven\none two\nfive four\ngo up\nno stop\nzero nine eight\n\
         two one zero\nfive five one\ngo down\nstop\n",
    )
    .unwrap();
    let arpa = dir.path().join("commands.arpa");
    let lm_build = |corpus: &Path, extra: &[&str]| {
        let mut args = vec!["lm".as_ref(), "build".as_ref(), corpus.as_os_str()];
        args.extend(["-o".as_ref(), arpa.as_os_str()]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        w2v(args)
    };
    let run = lm_build(&corpus, &["--order", "3", "--json"]);
    assert!(run.success(), "{run:?}");
    // Ten short sentences are too few for lmplz's discount estimates above unigrams: said once.
    assert_eq!(run.stderr_lines().len(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("fallback (0.5, 1, 1.5)"),
        "{}",
        run.stderr
    );
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["fallback_orders"], serde_json::json!([2, 3]));
    assert_eq!(summary["order"], 3);
    assert_eq!(summary["sentences"], 10);
    let text = std::fs::read_to_string(&arpa).unwrap();
    assert!(text.starts_with("\\data\\\nngram 1="), "{text}");
    let sample = w2v_test_support::paths::sample(w2v_test_support::paths::README_SAMPLE);
    let run = w2v([
        "transcribe".as_ref(),
        "--lm".as_ref(),
        arpa.as_os_str(),
        sample.as_os_str(),
    ]);
    assert_ok(&run);
    assert_eq!(
        run.stdout.trim(),
        w2v_test_support::paths::README_TRANSCRIPT
    );

    // Bad input: one line naming the file.
    let missing = dir.path().join("missing.txt");
    let run = lm_build(&missing, &[]);
    assert_one_error(&run, &[&shown(&missing), "cannot read"]);
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    let run = lm_build(&empty, &[]);
    assert_one_error(&run, &[&shown(&empty), "no words"]);
    let run = lm_build(&corpus, &["--order", "9"]);
    assert_one_error(&run, &["order must be between 1 and 6"]);
}
