//! pyctcdecode's own test cases (`pyctcdecode/tests/test_decoder.py`, bugs bunny), and the
//! decoder's invariants.

use super::*;
use crate::ctc::{base_960h, greedy_decode};
use crate::hotwords::{parse_hotwords, Hotword};

const BUGS_BUNNY_ARPA: &str = include_str!("../../tests/data/lm/bugs_bunny_kenlm.arpa");

/// pyctcdecode's SAMPLE_LABELS: `" "` is the word delimiter, `""` the blank.
fn sample_vocab() -> Vocabulary {
    let labels = [" ", "b", "g", "n", "s", "u", "y", ""];
    Vocabulary::new(labels.iter().map(|s| s.to_string()).collect(), 7, None)
}

/// Rows of probabilities by label, logged with pyctcdecode's clipping.
fn log_rows(vocab: &Vocabulary, rows: &[&[(&str, f64)]]) -> Vec<f32> {
    let mut out = Vec::new();
    for row in rows {
        let mut p = vec![0f64; vocab.len()];
        for &(label, x) in row.iter() {
            let id = (0..vocab.len())
                .find(|&i| vocab.token(i) == Some(label))
                .unwrap();
            p[id] += x;
        }
        out.extend(p.iter().map(|&x| x.clamp(1e-15, 1.0).ln() as f32));
    }
    out
}

/// pyctcdecode's TEST_LOGITS ([`w2v_test_support::lm::BUGS_BUNNY_FRAMES`]).
fn test_logits(vocab: &Vocabulary) -> Vec<f32> {
    log_rows(vocab, &w2v_test_support::lm::BUGS_BUNNY_FRAMES)
}

fn bugs_bunny_lm() -> NgramLm {
    NgramLm::parse(BUGS_BUNNY_ARPA, "bugs_bunny_kenlm.arpa").unwrap()
}

fn compat(opts: BeamOptions) -> BeamOptions {
    BeamOptions {
        mode: Mode::PyCtcDecode,
        ..opts
    }
}

fn decode_text(
    vocab: &Vocabulary,
    logits: &[f32],
    lm: Option<&LanguageModel>,
    hotwords: Option<&Hotwords>,
    opts: BeamOptions,
) -> String {
    BeamDecoder::new(vocab, lm, hotwords, opts).decode(logits, 0.02, 0.0)[0]
        .transcript
        .text
        .clone()
}

fn unigram_hotwords(words: &[&str], weight: f64) -> Hotwords {
    let hw: Vec<Hotword> = words
        .iter()
        .map(|w| Hotword {
            words: w.split_whitespace().map(str::to_string).collect(),
            weight: None,
            line: 1,
        })
        .collect();
    Hotwords::Unigrams(UnigramHotwords::new(&hw, weight))
}

#[test]
fn pyctcdecode_test_decoder() {
    let v = sample_vocab();
    let x = test_logits(&v);
    let opts = |alpha: f64, unk: f64| {
        compat(BeamOptions {
            lm_weight: alpha,
            unk_score: unk,
            ..BeamOptions::default()
        })
    };
    // No LM.
    assert_eq!(
        decode_text(&v, &x, None, None, opts(0.5, -10.0)),
        "bunny bunny"
    );
    // LM without unigrams: alpha 0, then 1.
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), None);
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, opts(0.0, -10.0)),
        "bunny bunny"
    );
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, opts(1.0, -10.0)),
        "bugs bunny"
    );
    // Empty unigram list.
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), Some(&[][..]));
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, opts(1.0, -10.0)),
        "bugs bunny"
    );
    // Restricted unigrams, unknown-word penalty 0, then -10.
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), Some(&["bunny"][..]));
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, opts(1.0, 0.0)),
        "bugs bunny"
    );
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, opts(1.0, -10.0)),
        "bunny bunny"
    );
}

#[test]
fn pyctcdecode_build_ctcdecoder_pruning_and_scores() {
    let v = sample_vocab();
    let x = test_logits(&v);
    // build_ctcdecoder(labels, arpa): unigrams read from the ARPA, default alpha and beta.
    let lm = LanguageModel::new(bugs_bunny_lm(), Mode::PyCtcDecode);
    let o = compat(BeamOptions::default());
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, o.clone()),
        "bugs bunny"
    );
    // A token threshold above 0 leaves only each frame's best token: greedy.
    let only_best = BeamOptions {
        token_min_logp: 0.0,
        ..o.clone()
    };
    assert_eq!(
        decode_text(&v, &x, Some(&lm), None, only_best),
        "bunny bunny"
    );
    // test_decode_beams_batch: with TEST_UNIGRAMS the single beam and its scores and frames.
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), Some(&["bugs", "bunny"][..]));
    let all = BeamOptions {
        nbest: 100,
        ..o.clone()
    };
    let hyps = BeamDecoder::new(&v, Some(&lm), None, all).decode(&x, 1.0, 0.0);
    assert_eq!(hyps.len(), 1);
    assert_eq!(hyps[0].transcript.text, "bugs bunny");
    assert!(
        (hyps[0].logit_score - -2.853399551509947).abs() < 1e-5,
        "{}",
        hyps[0].logit_score
    );
    assert!(
        (hyps[0].score - 0.14660044849005294).abs() < 1e-5,
        "{}",
        hyps[0].score
    );
    let w = &hyps[0].transcript.words;
    assert_eq!((w[0].start, w[0].end), (0.0, 4.0));
    assert_eq!((w[1].start, w[1].end), (7.0, 13.0));
}

#[test]
fn pyctcdecode_beam_results() {
    let v = sample_vocab();
    let x = test_logits(&v);
    let all = compat(BeamOptions {
        nbest: 100,
        ..BeamOptions::default()
    });
    let hyps = BeamDecoder::new(&v, None, None, all.clone()).decode(&x, 0.02, 0.0);
    assert_eq!(hyps.len(), 16);
    assert_eq!(hyps[0].transcript.text, "bunny bunny");
    assert_eq!(hyps[15].transcript.text, "bugs bunny");
    let lm = LanguageModel::new(bugs_bunny_lm(), Mode::PyCtcDecode);
    let hyps = BeamDecoder::new(&v, Some(&lm), None, all.clone()).decode(&x, 0.02, 0.0);
    assert_eq!(hyps.len(), 1);
    assert_eq!(hyps[0].transcript.text, "bugs bunny");
    // No unknown-word penalty and no score pruning: all 16, LM order.
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), None);
    let wide = BeamOptions {
        unk_score: 0.0,
        beam_prune_logp: -20.0,
        ..all
    };
    let hyps = BeamDecoder::new(&v, Some(&lm), None, wide).decode(&x, 0.02, 0.0);
    assert_eq!(hyps.len(), 16);
    assert_eq!(hyps[0].transcript.text, "bugs bunny");
    assert_eq!(hyps[1].transcript.text, "bunny bunny");
}

#[test]
fn pyctcdecode_hotwords() {
    let v = sample_vocab();
    let x = test_logits(&v);
    let lm = LanguageModel::new(bugs_bunny_lm(), Mode::PyCtcDecode);
    let o = compat(BeamOptions::default());
    for (words, want) in [
        (&["bunny"][..], "bunny bunny"),
        (&["bugs", "bunny"][..], "bugs bunny"),
        (&["bugs bunny"][..], "bugs bunny"),
    ] {
        let hw = unigram_hotwords(words, 20.0);
        assert_eq!(
            decode_text(&v, &x, Some(&lm), Some(&hw), o.clone()),
            want,
            "{words:?}"
        );
    }
    // Without a language model.
    let hw = unigram_hotwords(&["bugs"], 10.0);
    assert_eq!(decode_text(&v, &x, None, Some(&hw), o), "bugs bunny");
}

#[test]
fn pyctcdecode_stateful_first_case() {
    // test_stateful: "bugs bugs" wins without an LM, "bugs bunny" with it.
    let v = sample_vocab();
    let x = log_rows(
        &v,
        &[
            &[("b", 1.0)],
            &[("u", 1.0)],
            &[("g", 1.0)],
            &[("s", 1.0)],
            &[(" ", 1.0)],
            &[("b", 1.0)],
            &[("u", 1.0)],
            &[("g", 0.51), ("n", 0.49)],
            &[("s", 0.51), ("", 0.49)],
            &[("", 0.51), ("n", 0.49)],
            &[("", 0.51), ("y", 0.49)],
        ],
    );
    let o = compat(BeamOptions::default());
    assert_eq!(decode_text(&v, &x, None, None, o.clone()), "bugs bugs");
    let lm = LanguageModel::with_unigrams(bugs_bunny_lm(), Some(&["bugs", "bunny"][..]));
    assert_eq!(decode_text(&v, &x, Some(&lm), None, o), "bugs bunny");
}

fn graph(vocab: &Vocabulary, text: &str, weight: f64) -> Hotwords {
    let hw = parse_hotwords(text, "HW.txt").unwrap();
    Hotwords::Graph(ContextGraph::new(&hw, weight, vocab, "HW.txt").unwrap())
}

#[test]
fn native_hotwords_are_phrases() {
    let v = sample_vocab();
    let x = test_logits(&v);
    let o = BeamOptions::default();
    assert_eq!(decode_text(&v, &x, None, None, o.clone()), "bunny bunny");
    let hw = graph(&v, "bugs", 10.0);
    assert_eq!(
        decode_text(&v, &x, None, Some(&hw), o.clone()),
        "bugs bunny"
    );
    let hw = graph(&v, "bugs bunny", 10.0);
    assert_eq!(
        decode_text(&v, &x, None, Some(&hw), o.clone()),
        "bugs bunny"
    );
    // The words in the wrong order are not the phrase: no help.
    let hw = graph(&v, "bunny bugs", 10.0);
    assert_eq!(decode_text(&v, &x, None, Some(&hw), o), "bunny bunny");
}

/// Frames of base-960h logits: each `(token, logit)` set over a floor of 0.
fn frames_960h(rows: &[&[(&str, f32)]]) -> Vec<f32> {
    let v = base_960h();
    let mut out = Vec::new();
    for row in rows {
        let mut r = vec![0f32; v.len()];
        for &(t, x) in row.iter() {
            r[if t.is_empty() { 0 } else { v.id(t).unwrap() }] = x;
        }
        out.extend(r);
    }
    out
}

#[test]
fn hotwords_below_token_min_logp_still_win_in_native_mode() {
    // "CAT" is clear; K is at log-prob ~ -6.5 in the first frame, below token_min_logp = -5.
    let v = base_960h();
    let x = frames_960h(&[
        &[("C", 12.0), ("K", 5.5)],
        &[("", 10.0)],
        &[("A", 12.0)],
        &[("T", 12.0)],
    ]);
    let mut lp = x[..v.len()].to_vec();
    log_softmax_in_place(&mut lp);
    let k = lp[v.id("K").unwrap()];
    assert!(k < -5.0 && k > -7.5, "{k}");
    let o = BeamOptions::default();
    assert_eq!(decode_text(&v, &x, None, None, o.clone()), "CAT");
    let hw = graph(&v, "kat", 10.0);
    assert_eq!(decode_text(&v, &x, None, Some(&hw), o.clone()), "KAT");
    // pyctcdecode never tries K here (its known failure).
    let uni = unigram_hotwords(&["kat"], 10.0);
    assert_eq!(decode_text(&v, &x, None, Some(&uni), compat(o)), "CAT");
}

/// Pseudo-random logits (a fixed LCG), peaked enough to look like a CTC model's.
fn random_logits(frames: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) as f32
    };
    let mut out = Vec::with_capacity(frames * vocab);
    for _ in 0..frames {
        let hot = (next() * vocab as f32) as usize % vocab;
        for i in 0..vocab {
            out.push(next() * 4.0 + if i == hot { 6.0 } else { 0.0 });
        }
    }
    out
}

#[test]
fn width_one_without_lm_is_greedy() {
    let v = base_960h();
    for seed in 0..20 {
        let x = random_logits(60, v.len(), seed);
        let g = greedy_decode(&x, &v, 0.02, 1.5);
        let o = BeamOptions {
            beam_width: 1,
            ..BeamOptions::default()
        };
        let b = &BeamDecoder::new(&v, None, None, o).decode(&x, 0.02, 1.5)[0].transcript;
        assert_eq!(b.text, g.text, "seed {seed}");
        assert_eq!(b.words.len(), g.words.len());
        for (a, w) in b.words.iter().zip(&g.words) {
            assert_eq!((a.start, a.end), (w.start, w.end), "seed {seed}");
            assert!(
                (a.confidence - w.confidence).abs() < 1e-5,
                "seed {seed}: {a:?} vs {w:?}"
            );
        }
    }
}

#[test]
fn zero_weights_change_nothing_and_output_is_deterministic() {
    let v = base_960h();
    let arpa = "\\data\\\nngram 1=5\nngram 2=1\n\n\\1-grams:\n-1 <s> -0.5\n-1 </s>\n-1 <unk>\n-0.5 hi -0.3\n-0.7 ho -0.1\n\n\\2-grams:\n-0.1 hi ho\n\n\\end\\\n";
    let lm = LanguageModel::new(NgramLm::parse(arpa, "t.arpa").unwrap(), Mode::Native);
    let hw = graph(&v, "hi ho\nhe :3", 0.0);
    for seed in 0..10 {
        let x = random_logits(50, v.len(), 100 + seed);
        let o = BeamOptions {
            beam_width: 8,
            nbest: 3,
            ..BeamOptions::default()
        };
        let plain = BeamDecoder::new(&v, None, None, o.clone()).decode(&x, 0.02, 0.0);
        let zero_lm = BeamOptions {
            lm_weight: 0.0,
            ..o.clone()
        };
        let with_lm0 = BeamDecoder::new(&v, Some(&lm), None, zero_lm).decode(&x, 0.02, 0.0);
        let texts = |h: &[Hypothesis]| {
            h.iter()
                .map(|h| h.transcript.text.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&with_lm0), texts(&plain));
        // "he" has its own weight 3: the graph is not inert; with every weight 0 it is.
        let hw0 = graph(&v, "hi ho\nhe", 0.0);
        let with_hw0 = BeamDecoder::new(&v, None, Some(&hw0), o.clone()).decode(&x, 0.02, 0.0);
        assert_eq!(texts(&with_hw0), texts(&plain));
        let a = BeamDecoder::new(&v, Some(&lm), Some(&hw), o.clone()).decode(&x, 0.02, 0.0);
        let b = BeamDecoder::new(&v, Some(&lm), Some(&hw), o).decode(&x, 0.02, 0.0);
        assert_eq!(texts(&a), texts(&b));
        assert_eq!(
            a.iter().map(|h| h.score.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|h| h.score.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn lm_pulls_towards_likely_words() {
    // Acoustics slightly prefer "HO HI"; the LM knows "hi ho".
    let v = base_960h();
    let arpa = "\\data\\\nngram 1=5\nngram 2=3\n\n\\1-grams:\n-1 <s> -0.5\n-1 </s>\n-3 <unk>\n-0.5 hi -0.3\n-0.7 ho -0.1\n\n\\2-grams:\n-0.1 <s> hi\n-0.1 hi ho\n-0.1 ho </s>\n\n\\end\\\n";
    let lm = LanguageModel::new(NgramLm::parse(arpa, "t.arpa").unwrap(), Mode::Native);
    let x = frames_960h(&[
        &[("H", 10.0)],
        &[("O", 6.0), ("I", 5.5)],
        &[("|", 10.0)],
        &[("H", 10.0)],
        &[("I", 6.0), ("O", 5.5)],
    ]);
    let o = BeamOptions::default();
    assert_eq!(decode_text(&v, &x, None, None, o.clone()), "HO HI");
    assert_eq!(decode_text(&v, &x, Some(&lm), None, o), "HI HO");
}

#[test]
fn empty_and_blank_input() {
    let v = base_960h();
    let d = BeamDecoder::new(&v, None, None, BeamOptions::default());
    let h = d.decode(&[], 0.02, 0.0);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].transcript, Transcript::default());
    let x = frames_960h(&[&[("", 10.0)], &[("", 10.0)]]);
    assert_eq!(d.decode(&x, 0.02, 0.0)[0].transcript, Transcript::default());
    let mut nan = frames_960h(&[&[("H", 10.0)], &[("I", 10.0)]]);
    nan[3] = f32::NAN;
    assert_eq!(d.decode(&nan, 0.02, 0.0)[0].transcript.text, "HI");
}

/// CPython 3.11's iteration order of `set(np.array(ids)) | {best}` (printed by CPython itself),
/// which pyctcdecode's candidate loop follows.
#[test]
fn python_set_order_is_cpythons() {
    let cases: &[(&[usize], usize, &[usize])] = &[
        (&[], 0, &[0]),
        (&[], 25, &[25]),
        (&[20], 9, &[9, 20]),
        (&[8], 8, &[8]),
        (&[1, 4, 11], 1, &[1, 11, 4]),
        (&[7, 19, 23], 7, &[19, 23, 7]),
        (&[3, 12, 23, 25, 29], 30, &[3, 23, 25, 12, 29, 30]),
        (&[8, 11, 15, 26, 28], 11, &[8, 26, 11, 28, 15]),
        (&[6, 9, 15, 25, 26, 27], 15, &[6, 9, 26, 27, 25, 15]),
        (&[5, 9, 10, 11, 15, 26], 11, &[26, 5, 9, 10, 11, 15]),
        (
            &[1, 4, 6, 9, 11, 21, 22, 31],
            10,
            &[1, 4, 6, 9, 10, 11, 21, 22, 31],
        ),
        (
            &[4, 6, 10, 12, 15, 16, 17, 19, 20, 22, 23, 27],
            6,
            &[4, 6, 10, 12, 15, 16, 17, 19, 20, 22, 23, 27],
        ),
    ];
    for &(ids, best, want) in cases {
        let mut got = ids.to_vec();
        python_set_order(&mut got, best);
        assert_eq!(got, want, "set({ids:?}) | {{{best}}}");
    }
}

fn word_list(words: &[&str], lm: Option<&LanguageModel>) -> WordList {
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    WordList::new(&words, lm.map(LanguageModel::model), -10.0)
}

fn decode_words(
    v: &Vocabulary,
    x: &[f32],
    lm: Option<&LanguageModel>,
    words: &WordList,
    opts: BeamOptions,
) -> String {
    BeamDecoder::new(v, lm, None, opts)
        .with_words(Some(words))
        .decode(x, 0.02, 0.0)[0]
        .transcript
        .text
        .clone()
}

#[test]
fn a_word_list_only_lets_listed_words_through() {
    // The acoustics spell "ERO" (as the shipped model spells a held-out "zero"); Z is weak,
    // below token_min_logp, and still tried because it begins a listed word.
    let v = base_960h();
    let x = frames_960h(&[
        &[("E", 8.0), ("Z", 2.5)],
        &[("E", 8.0)],
        &[("R", 9.0)],
        &[("O", 9.0)],
        &[("", 9.0)],
    ]);
    let mut lp = x[..v.len()].to_vec();
    log_softmax_in_place(&mut lp);
    assert!(lp[v.id("Z").unwrap()] < -5.0, "{}", lp[v.id("Z").unwrap()]);
    let o = BeamOptions::default();
    assert_eq!(decode_text(&v, &x, None, None, o.clone()), "ERO");
    let list = word_list(&["zero", "one", "two"], None);
    assert_eq!(decode_words(&v, &x, None, &list, o.clone()), "ZERO");
    // Nothing listed fits: still only listed words (here none at all), never free spelling.
    let far = word_list(&["yes", "no"], None);
    let got = decode_words(&v, &x, None, &far, o);
    assert!(
        got.is_empty() || got.split(' ').all(|w| w == "YES" || w == "NO"),
        "{got}"
    );
}

#[test]
fn lm_lookahead_keeps_the_likely_word_alive() {
    // "G O", then L slightly over A, then F slightly over L: the acoustics say GOLF, a little
    // less GOAL; the LM likes "goal" far better.
    let v = base_960h();
    let arpa = "\\data\\\nngram 1=5\n\n\\1-grams:\n-1 <s>\n-1 </s>\n-3 <unk>\n-0.3 goal\n-4 golf\n\n\\end\\\n";
    let lm = LanguageModel::new(NgramLm::parse(arpa, "t.arpa").unwrap(), Mode::Native);
    let x = frames_960h(&[
        &[("G", 10.0)],
        &[("O", 10.0)],
        &[("L", 6.0), ("A", 5.6)],
        &[("F", 6.0), ("L", 5.6)],
        &[("", 9.0)],
    ]);
    let words = word_list(&["goal", "golf"], Some(&lm));
    let o = BeamOptions::default();
    // Without the LM the acoustics pick GOLF; with it GOAL wins, and the search must have kept
    // the GOA prefix alive, which the lookahead does.
    assert_eq!(decode_words(&v, &x, None, &words, o.clone()), "GOLF");
    assert_eq!(decode_words(&v, &x, Some(&lm), &words, o.clone()), "GOAL");
    // A narrow beam still finds it: the lookahead ranks GOA above GOL from the third frame.
    let narrow = BeamOptions { beam_width: 2, ..o };
    assert_eq!(decode_words(&v, &x, Some(&lm), &words, narrow), "GOAL");
}
