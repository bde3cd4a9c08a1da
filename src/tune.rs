//! Tuning the beam search's LM weight and word score on labelled audio (`w2v eval --tune`): the
//! model runs once per utterance, then every setting of the grid decodes the saved logits.

use serde::Serialize;
use w2v_engine::manifest::Utterance;
use w2v_engine::metrics::{char_errors, word_errors, EditCounts};

use crate::decoder::{DecoderKind, DecoderOptions};
use crate::error::{Error, Result};
use crate::Recognizer;

/// The grid.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneOptions {
    pub lm_weights: Vec<f64>,
    pub word_scores: Vec<f64>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            lm_weights: vec![0.25, 0.5, 1.0, 1.5, 2.0],
            word_scores: vec![0.0, 0.75, 1.5, 3.0],
        }
    }
}

/// One setting and its error rates.
#[derive(Clone, Debug, Serialize)]
pub struct TunePoint {
    pub lm_weight: f64,
    pub word_score: f64,
    pub wer: f64,
    pub cer: f64,
    pub words: EditCounts,
}

/// Every setting, best (lowest WER, then CER) first.
#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    pub points: Vec<TunePoint>,
    /// Utterances decoded (those whose audio could be read).
    pub utterances: usize,
    pub failed: usize,
}

/// Decode `rows` with every grid setting of `decoder`'s LM (which must be set) on `recognizer`'s
/// model. `progress(done, total)` counts utterances run through the model, then settings.
pub fn tune(
    recognizer: &mut Recognizer,
    rows: &[Utterance],
    decoder: &DecoderOptions,
    grid: &TuneOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TuneReport> {
    if decoder.lm.is_none() {
        return Err(Error::invalid(
            "--tune needs --lm: it tunes the LM weight and word score",
        ));
    }
    if grid.lm_weights.is_empty() || grid.word_scores.is_empty() {
        return Err(Error::invalid(
            "--tune needs at least one LM weight and one word score",
        ));
    }
    let beam = DecoderOptions {
        decoder: Some(DecoderKind::Beam),
        words: None,
        ..decoder.clone()
    };
    let mut setup = beam
        .beam_setup(recognizer.vocabulary(), 1)?
        .expect("a beam decoder was asked for");
    let total = rows.len() + grid.lm_weights.len() * grid.word_scores.len();
    let mut saved = Vec::with_capacity(rows.len());
    let mut failed = 0;
    for (i, row) in rows.iter().enumerate() {
        progress(i, total);
        match recognizer.transcribe_file_with_logits(&row.path) {
            Ok((_, logits)) => saved.push((logits.row(0).to_vec(), row.transcript.as_str())),
            Err(e) if e.is_model_failure() => return Err(e),
            Err(e) => {
                tracing::warn!("skipping: {e}");
                failed += 1;
            }
        }
    }
    let spf = recognizer.info().seconds_per_frame();
    let vocab = recognizer.vocabulary().clone();
    let mut points = Vec::new();
    let mut done = rows.len();
    for &lm_weight in &grid.lm_weights {
        for &word_score in &grid.word_scores {
            progress(done, total);
            done += 1;
            setup.options.lm_weight = lm_weight;
            setup.options.word_score = word_score;
            let (mut words, mut chars) = (EditCounts::default(), EditCounts::default());
            for (logits, reference) in &saved {
                let hyp = setup
                    .decode(&vocab, logits, spf, 0.0)
                    .swap_remove(0)
                    .transcript;
                words += word_errors(reference, &hyp.text);
                chars += char_errors(reference, &hyp.text);
            }
            points.push(TunePoint {
                lm_weight,
                word_score,
                wer: words.rate(),
                cer: chars.rate(),
                words,
            });
        }
    }
    points.sort_by(|a, b| a.wer.total_cmp(&b.wer).then(a.cer.total_cmp(&b.cer)));
    Ok(TuneReport {
        points,
        utterances: saved.len(),
        failed,
    })
}
