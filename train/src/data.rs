//! Labelled audio for fine-tuning: a manifest (`path<TAB>transcript`) read into normalized,
//! label-encoded [`Example`]s, and the evaluation set and word error rate between steps.

use std::path::{Path, PathBuf};

use w2v_engine::audio::{self, AudioError};
use w2v_engine::ctc::{greedy_decode, Vocabulary};
use w2v_engine::manifest::{read_manifest, ManifestError};
use w2v_engine::metrics::{word_errors, EditCounts};
use w2v_engine::model_info::ModelInfo;

use crate::trainer::{Example, TrainError, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: transcripts use characters outside the model's vocabulary: {chars}", .path.display())]
    Vocabulary { path: PathBuf, chars: String },
    #[error("{source} (in {})", .manifest.display())]
    Audio {
        manifest: PathBuf,
        source: AudioError,
    },
    #[error("{0}")]
    TooShort(String),
    #[error("{}: no usable examples", .0.display())]
    NoExamples(PathBuf),
}

/// The examples of a manifest, and what was skipped.
#[derive(Debug)]
pub struct LoadedExamples {
    pub examples: Vec<Example>,
    /// Rows whose audio could not be read.
    pub unreadable: usize,
    /// Rows whose audio has fewer frames than CTC needs for the transcript.
    pub too_short: usize,
}

/// Read the manifest's audio at the model's rate, normalized as the model expects, with labels
/// encoded. Unreadable or too-short audio is skipped (counted, logged) unless `strict`;
/// characters outside the vocabulary are always an error. `progress(done, rows)` is called
/// before each row's audio is read.
pub fn load_examples(
    data: &Path,
    info: &ModelInfo,
    strict: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedExamples, DataError> {
    let rows = read_manifest(data)?;
    let vocab = Vocabulary::from_model_info(info);
    let mut unknown: Vec<char> = Vec::new();
    let mut labels = Vec::with_capacity(rows.len());
    for row in &rows {
        match vocab.encode(&row.transcript) {
            Ok(l) => labels.push(l),
            Err(chars) => {
                for c in chars {
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                }
                labels.push(Vec::new());
            }
        }
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
        return Err(DataError::Vocabulary {
            path: data.to_path_buf(),
            chars: list.join(", "),
        });
    }
    let (mut examples, mut unreadable, mut too_short) = (Vec::new(), 0, 0);
    for (i, (row, labels)) in rows.iter().zip(labels).enumerate() {
        progress(i, rows.len());
        let mut samples = match audio::load(&row.path, info.sample_rate) {
            Ok(s) => s,
            Err(source) if strict => {
                return Err(DataError::Audio {
                    manifest: data.to_path_buf(),
                    source,
                })
            }
            Err(e) => {
                tracing::warn!("skipping {}: {e}", row.path.display());
                unreadable += 1;
                continue;
            }
        };
        let frames = info.frames_for_samples(samples.len());
        let repeats = labels.windows(2).filter(|w| w[0] == w[1]).count();
        if frames < labels.len() + repeats || frames == 0 {
            let msg = format!(
                "{}: {:.2} s of audio ({frames} frames) is too short for its {}-token transcript",
                row.path.display(),
                samples.len() as f64 / info.sample_rate as f64,
                labels.len()
            );
            if strict {
                return Err(DataError::TooShort(msg));
            }
            tracing::warn!("skipping {msg}");
            too_short += 1;
            continue;
        }
        if info.do_normalize {
            audio::normalize(&mut samples);
        }
        examples.push(Example { samples, labels });
    }
    if examples.is_empty() {
        return Err(DataError::NoExamples(data.to_path_buf()));
    }
    Ok(LoadedExamples {
        examples,
        unreadable,
        too_short,
    })
}

/// An evaluation set's rows: normalized audio and transcript. Unreadable audio is an error (an
/// evaluation that silently drops rows would not be comparable between runs).
pub fn load_eval(data: &Path, info: &ModelInfo) -> Result<Vec<(Vec<f32>, String)>, DataError> {
    let rows = read_manifest(data)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut samples =
            audio::load(&row.path, info.sample_rate).map_err(|source| DataError::Audio {
                manifest: data.to_path_buf(),
                source,
            })?;
        if info.do_normalize {
            audio::normalize(&mut samples);
        }
        out.push((samples, row.transcript));
    }
    Ok(out)
}

/// Corpus WER of the trainer's current weights on `set` (greedy decoding).
pub fn word_error_rate(
    trainer: &mut Trainer,
    set: &[(Vec<f32>, String)],
) -> Result<f64, TrainError> {
    let vocab = Vocabulary::from_model_info(trainer.info());
    let spf = trainer.info().seconds_per_frame();
    let mut counts = EditCounts::default();
    for (samples, reference) in set {
        let (logits, _) = trainer.logits(samples)?;
        let hyp = greedy_decode(&logits, &vocab, spf, 0.0);
        counts += word_errors(reference, &hyp.text);
    }
    Ok(counts.rate())
}
