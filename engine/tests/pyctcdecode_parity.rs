//! The pyctcdecode-compatible beam search against pyctcdecode 0.5.0 itself: its LibriSpeech
//! logits (`engine/tests/data/lm/libri_logits.npy`), decoded by pyctcdecode in each setting of
//! `pyctcdecode_expected.json` (written by `tools/lm/gen_pyctcdecode_expected.py`), at three
//! logit scales. The top transcript of `decode` (which prunes the history) and the best of
//! `decode_beams` (which does not) must be pyctcdecode's in every case; the five best beams are
//! counted. The search reproduces pyctcdecode's arithmetic: numpy's pairwise sum in the
//! log-softmax, `log(1 + exp(d))` when paths merge, candidate tokens in Python set order, so
//! that beams whose scores tie exactly (common on these flattened logits) rank as pyctcdecode
//! ranks them.

use std::path::Path;

use serde_json::Value;
use w2v_engine::beam::{BeamDecoder, BeamOptions, Hotwords, LanguageModel, Mode};
use w2v_engine::ctc::Vocabulary;
use w2v_engine::hotwords::{Hotword, UnigramHotwords};
use w2v_engine::lm::NgramLm;
use w2v_engine::npy::read_logits;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lm")
        .join(name)
}

#[test]
fn top_transcripts_and_beams_equal_pyctcdecodes() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(data("pyctcdecode_expected.json")).unwrap())
            .unwrap();
    let labels: Vec<String> = expected["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let blank = labels.iter().position(|l| l.is_empty()).unwrap();
    let vocab = Vocabulary::new(labels, blank, None);
    let logits = read_logits(&data("libri_logits.npy")).unwrap();
    assert_eq!(logits.vocab, vocab.len());
    let hot: Vec<Hotword> = expected["hotwords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hotword {
            words: h
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            weight: None,
            line: 1,
        })
        .collect();
    let (mut checked, mut all_five) = (0, 0);
    let mut mismatches: Vec<String> = Vec::new();
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let scale = case["scale"].as_f64().unwrap() as f32;
        let s = &case["settings"];
        let num = |k: &str, d: f64| s.get(k).and_then(Value::as_f64).unwrap_or(d);
        let mut opts = BeamOptions {
            mode: Mode::PyCtcDecode,
            nbest: 5,
            ..BeamOptions::default()
        };
        opts.beam_width = num("beam_width", opts.beam_width as f64) as usize;
        opts.token_min_logp = num("token_min_logp", opts.token_min_logp);
        opts.beam_prune_logp = num("beam_prune_logp", opts.beam_prune_logp);
        opts.hotword_weight = num("hotword_weight", opts.hotword_weight);
        let hotwords = s
            .get("hotwords")
            .map(|_| Hotwords::Unigrams(UnigramHotwords::new(&hot, opts.hotword_weight)));
        // "ARPA alpha A beta B" / "ARPA unk U [hotwords]" cases carry an LM.
        let lm = name.split_once(".arpa").map(|(file, rest)| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["alpha", a, "beta", b] => {
                    opts.lm_weight = a.parse().unwrap();
                    opts.word_score = b.parse().unwrap();
                }
                ["unk", u, ..] => opts.unk_score = u.parse().unwrap(),
                _ => panic!("unknown case {name}"),
            }
            let model = NgramLm::load(&data(&format!("{file}.arpa"))).unwrap();
            LanguageModel::new(model, Mode::PyCtcDecode)
        });
        let x: Vec<f32> = logits.data.iter().map(|&v| v * scale).collect();
        // pyctcdecode's `decode` (the top transcript) prunes the history, its `decode_beams`
        // (the n-best list) does not.
        let top = BeamDecoder::new(
            &vocab,
            lm.as_ref(),
            hotwords.as_ref(),
            BeamOptions {
                nbest: 1,
                prune_history: true,
                ..opts.clone()
            },
        )
        .decode(&x, 0.02, 0.0);
        let hyps =
            BeamDecoder::new(&vocab, lm.as_ref(), hotwords.as_ref(), opts).decode(&x, 0.02, 0.0);
        let texts: Vec<&str> = hyps.iter().map(|h| h.transcript.text.as_str()).collect();
        let want: Vec<&str> = case["nbest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        checked += 1;
        if top[0].transcript.text != case["text"].as_str().unwrap() {
            mismatches.push(format!(
                "{name} at scale {scale}: {:?}, pyctcdecode {:?}",
                top[0].transcript.text, case["text"]
            ));
            continue;
        }
        if texts[0] != want[0] {
            mismatches.push(format!(
                "{name} at scale {scale}, best of decode_beams: {:?}, pyctcdecode {:?}",
                texts[0], want[0]
            ));
            continue;
        }
        // Lower beams can swap where pyctcdecode's float64 scores and ours (from float32
        // log-softmax) differ in the last bits: counted, not required.
        if texts == want {
            all_five += 1;
        }
    }
    eprintln!(
        "{checked} cases: top transcript equal in {}, all 5 best beams in {all_five}",
        checked - mismatches.len()
    );
    for m in &mismatches {
        eprintln!("  differs: {m}");
    }
    assert!(checked >= 21, "{checked} cases");
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
