//! CTC decoding of 30 s of logits (1500 frames × 32 tokens, the base-960h vocabulary): greedy,
//! and prefix beam search (beam 100, pyctcdecode's pruning) with a 200k-word bigram LM (issue
//! 22's budget: <= 50 ms).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use w2v_engine::beam::{BeamOptions, BeamSetup, LanguageModel, Mode};
use w2v_engine::ctc::{best_path, greedy_decode, Vocabulary};
use w2v_engine::lm::NgramLm;

const VOCAB: [&str; 32] = [
    "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
    "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
];
const FRAMES: usize = 1500;

/// Speech-like logits: noise everywhere, a peak on blank in about two frames of three and on a
/// letter or delimiter otherwise.
fn logits() -> Vec<f32> {
    logits_with_peak(8.0)
}

/// [`logits`] with the peak `peak` above the noise: 8 is a confident model, 3 an uncertain one
/// (several tokens per frame within pyctcdecode's -5 token pruning), where beam searches slow
/// down.
fn logits_with_peak(peak_height: f32) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut logits = Vec::with_capacity(FRAMES * VOCAB.len());
    for _ in 0..FRAMES {
        let row_start = logits.len();
        logits.extend((0..VOCAB.len()).map(|_| (next() % 1000) as f32 / 250.0 - 2.0));
        let peak = if next() % 3 != 0 {
            0
        } else {
            4 + (next() % 28) as usize
        };
        logits[row_start + peak] += peak_height;
    }
    logits
}

fn bench(c: &mut Criterion) {
    let vocab = Vocabulary::new(
        VOCAB.iter().map(|s| s.to_string()).collect(),
        0,
        Some("|".into()),
    );
    let logits = logits();
    c.bench_function("greedy_decode 30 s (1500x32)", |b| {
        b.iter(|| greedy_decode(black_box(&logits), &vocab, 0.02, 0.0))
    });
    c.bench_function("best_path 30 s (1500x32)", |b| {
        b.iter(|| best_path(black_box(&logits), VOCAB.len(), 0))
    });
}

/// A 200 003-word bigram LM (4-5 letter words, 20 000 bigrams).
fn big_lm() -> NgramLm {
    let text = w2v_test_support::lm::synthetic_bigram_arpa(200_000, 20_000);
    NgramLm::parse(&text, "big.arpa").expect("a valid ARPA")
}

fn bench_beam(c: &mut Criterion) {
    let vocab = Vocabulary::new(
        VOCAB.iter().map(|s| s.to_string()).collect(),
        0,
        Some("|".into()),
    );
    let logits = logits();
    let setup = BeamSetup {
        words: None,
        lm: Some(std::sync::Arc::new(LanguageModel::new(
            big_lm(),
            Mode::Native,
        ))),
        hotwords: None,
        options: BeamOptions::default(),
    };
    c.bench_function("beam 100 + 200k-word LM, 30 s (1500x32)", |b| {
        b.iter(|| setup.decode(&vocab, black_box(&logits), 0.02, 0.0))
    });
    let uncertain = logits_with_peak(3.0);
    c.bench_function("beam 100 + 200k-word LM, 30 s uncertain (1500x32)", |b| {
        b.iter(|| setup.decode(&vocab, black_box(&uncertain), 0.02, 0.0))
    });
    // Real speech: the shipped model's logits of 30 s of held-back test clips
    // (tools/lm/gen_bench_logits.py), as they are and softened (times 0.5 and 0.3), as in
    // tools/lm/parity_real.py.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/data/real-30s.npy");
    let real = w2v_engine::npy::read_logits(std::path::Path::new(path)).expect("real-30s.npy");
    assert_eq!(real.vocab, VOCAB.len());
    for scale in [1.0f32, 0.5, 0.3] {
        let softened: Vec<f32> = real.data.iter().map(|x| x * scale).collect();
        c.bench_function(
            &format!("beam 100 + 200k-word LM, 30 s real speech x{scale}"),
            |b| b.iter(|| setup.decode(&vocab, black_box(&softened), 0.02, 0.0)),
        );
    }
    let no_lm = BeamSetup {
        words: None,
        lm: None,
        hotwords: None,
        options: BeamOptions::default(),
    };
    c.bench_function("beam 100 without LM, 30 s (1500x32)", |b| {
        b.iter(|| no_lm.decode(&vocab, black_box(&logits), 0.02, 0.0))
    });
}

criterion_group!(benches, bench, bench_beam);
criterion_main!(benches);
