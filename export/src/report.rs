//! The accuracy report of a reduced-precision export: the float32 model against the fp16 or int8
//! one on eval audio (a `path<TAB>transcript` manifest) or, without one, on a seeded synthetic
//! set (noise and chirps). Both models run on tract, the default backend, on this machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::ctc::{greedy_decode, Vocabulary};
use w2v_engine::metrics::{char_errors, word_errors, EditCounts};
use w2v_engine::rng::SplitMix64;
use w2v_engine::transcriber::Transcriber;
use w2v_engine::{BackendOptions, ModelInfo};

use crate::ExportError;

/// Frames whose float32 top-2 logit margin is at most this are near-ties: a flip there is not an
/// accuracy loss, so they are left out of `confident_argmax_agreement`.
pub const CONFIDENT_MARGIN: f32 = 0.1;

/// Seed of the synthetic set.
pub const SYNTHETIC_SEED: u64 = 0x5732_7651;

/// One utterance of an eval set.
pub struct Clip {
    pub name: String,
    pub samples: Vec<f32>,
    pub transcript: Option<String>,
}

/// Audio to compare the models on.
pub struct EvalSet {
    /// The manifest, or a description of the synthetic set.
    pub source: String,
    pub clips: Vec<Clip>,
}

impl EvalSet {
    /// The utterances of a manifest, at `sample_rate`.
    pub fn from_manifest(path: &Path, sample_rate: u32) -> Result<Self, ExportError> {
        let rows = w2v_engine::manifest::read_manifest(path)
            .map_err(|e| ExportError::Eval(e.to_string()))?;
        let mut clips = Vec::with_capacity(rows.len());
        for row in rows {
            let samples = w2v_engine::audio::load(&row.path, sample_rate)
                .map_err(|e| ExportError::Eval(format!("{}: {e}", path.display())))?;
            clips.push(Clip {
                name: row.path.display().to_string(),
                samples,
                transcript: Some(row.transcript),
            });
        }
        Ok(EvalSet {
            source: path.display().to_string(),
            clips,
        })
    }

    /// Seeded noise and chirps: four 2-second clips that exercise the whole model without
    /// needing data. There are no transcripts, so WER is measured against the float32 output.
    pub fn synthetic(sample_rate: u32) -> Self {
        let sr = sample_rate as f64;
        let n = 2 * sample_rate as usize;
        let mut rng = SplitMix64(SYNTHETIC_SEED);
        let noise = |rng: &mut SplitMix64, amp: f64| -> Vec<f64> {
            (0..n).map(|_| amp * rng.gaussian()).collect()
        };
        let chirp = |f0: f64, f1: f64, amp: f64| -> Vec<f64> {
            let dur = n as f64 / sr;
            (0..n)
                .map(|i| {
                    let t = i as f64 / sr;
                    let phase =
                        2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * dur));
                    amp * phase.sin()
                })
                .collect()
        };
        let mix = |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> {
            a.iter().zip(&b).map(|(x, y)| x + y).collect()
        };
        let nyq = sr / 2.0;
        let clips = vec![
            ("noise", noise(&mut rng, 0.1)),
            ("chirp", chirp(100.0, nyq * 0.5, 0.5)),
            (
                "chirp+noise",
                mix(
                    chirp(3000.0f64.min(nyq * 0.4), 200.0, 0.4),
                    noise(&mut rng, 0.05),
                ),
            ),
            ("two-chirps-am", {
                let a = mix(
                    chirp(150.0, 600.0, 0.3),
                    chirp(1200.0f64.min(nyq * 0.3), 2400.0f64.min(nyq * 0.6), 0.2),
                );
                a.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v * (0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * i as f64 / sr).sin())
                    })
                    .collect()
            }),
        ];
        EvalSet {
            source: format!(
                "synthetic ({} clips of 2 s, seed {SYNTHETIC_SEED:#x})",
                clips.len()
            ),
            clips: clips
                .into_iter()
                .map(|(name, s)| Clip {
                    name: name.into(),
                    samples: s.into_iter().map(|v| v as f32).collect(),
                    transcript: None,
                })
                .collect(),
        }
    }

    pub fn audio_seconds(&self, sample_rate: u32) -> f64 {
        self.clips.iter().map(|c| c.samples.len()).sum::<usize>() as f64 / sample_rate as f64
    }
}

/// fp32 against a reduced-precision model. Rates are percentages.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AccuracyReport {
    pub precision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The eval manifest, or the synthetic set's description.
    pub data: String,
    pub utterances: usize,
    pub audio_seconds: f64,
    pub frames: usize,
    /// Mean and minimum over frames of the cosine similarity of the two logit vectors.
    pub cosine_mean: f64,
    pub cosine_min: f64,
    pub max_abs_logit_diff: f64,
    /// Frames with the same argmax, in percent.
    pub argmax_agreement: f64,
    /// The same over the frames whose fp32 top-2 margin exceeds [`CONFIDENT_MARGIN`].
    pub confident_argmax_agreement: f64,
    pub confident_frames: usize,
    /// WER and CER against the manifest's transcripts (absent on synthetic data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wer_fp32: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wer_quantized: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cer_fp32: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cer_quantized: Option<f64>,
    /// WER and CER of the quantized transcripts with the fp32 ones as the reference.
    pub wer_vs_fp32: f64,
    pub cer_vs_fp32: f64,
    /// `wer_quantized − wer_fp32`, or `wer_vs_fp32` on synthetic data (an upper bound: every
    /// change counts as an error). This is what `--max-wer-increase` checks.
    pub wer_increase_points: f64,
    pub fp32_bytes: u64,
    pub quantized_bytes: u64,
    /// Backend both models were timed on.
    pub backend: String,
    /// Compute seconds for the whole set (second pass, plans already compiled).
    pub fp32_seconds: f64,
    pub quantized_seconds: f64,
    /// fp32 seconds / quantized seconds.
    pub speedup: f64,
}

impl AccuracyReport {
    /// One-line summary (also stored in the model's metadata as JSON).
    pub fn summary_line(&self) -> String {
        let wer = match (self.wer_fp32, self.wer_quantized) {
            (Some(a), Some(b)) => format!(
                "WER {a:.2}% -> {b:.2}% ({:+.2} points), CER {:.2}% -> {:.2}%",
                b - a,
                self.cer_fp32.unwrap_or(0.0),
                self.cer_quantized.unwrap_or(0.0)
            ),
            _ => format!(
                "WER vs fp32 output {:.2}%, CER vs fp32 output {:.2}%",
                self.wer_vs_fp32, self.cer_vs_fp32
            ),
        };
        format!(
            "{} vs fp32 on {} ({} utterances, {:.1} s, {} frames): cosine mean {:.5} min {:.5}, argmax agreement {:.2}% ({:.2}% on {} frames with margin > {}), {wer}; size {:.2} MB -> {:.2} MB ({:.2}x); {} time {:.3} s -> {:.3} s ({:.2}x)",
            self.precision,
            self.data,
            self.utterances,
            self.audio_seconds,
            self.frames,
            self.cosine_mean,
            self.cosine_min,
            self.argmax_agreement,
            self.confident_argmax_agreement,
            self.confident_frames,
            CONFIDENT_MARGIN,
            self.fp32_bytes as f64 / 1e6,
            self.quantized_bytes as f64 / 1e6,
            self.fp32_bytes as f64 / self.quantized_bytes.max(1) as f64,
            self.backend,
            self.fp32_seconds,
            self.quantized_seconds,
            self.speedup,
        )
    }
}

/// Logit agreement of two `[frames, vocab]` arrays.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogitStats {
    pub frames: usize,
    pub cosine_sum: f64,
    pub cosine_min: f64,
    pub max_abs_diff: f64,
    pub agree: usize,
    pub confident: usize,
    pub confident_agree: usize,
}

impl LogitStats {
    pub fn new() -> Self {
        LogitStats {
            cosine_min: 1.0,
            ..Default::default()
        }
    }

    /// Add the frames of `reference` (fp32) and `other`, both `[frames, vocab]`.
    pub fn add(&mut self, reference: &[f32], other: &[f32], vocab: usize) {
        for (r, o) in reference.chunks_exact(vocab).zip(other.chunks_exact(vocab)) {
            let (mut dot, mut nr, mut no) = (0f64, 0f64, 0f64);
            for (&a, &b) in r.iter().zip(o) {
                dot += a as f64 * b as f64;
                nr += a as f64 * a as f64;
                no += b as f64 * b as f64;
                self.max_abs_diff = self.max_abs_diff.max((a as f64 - b as f64).abs());
            }
            let cos = if nr > 0.0 && no > 0.0 {
                dot / (nr.sqrt() * no.sqrt())
            } else if nr == no {
                1.0
            } else {
                0.0
            };
            self.cosine_sum += cos;
            self.cosine_min = self.cosine_min.min(cos);
            self.frames += 1;
            let (ar, margin) = top2(r);
            let (ao, _) = top2(o);
            let same = ar == ao;
            self.agree += same as usize;
            if margin > CONFIDENT_MARGIN {
                self.confident += 1;
                self.confident_agree += same as usize;
            }
        }
    }

    pub fn agreement(&self) -> f64 {
        percent(self.agree, self.frames)
    }

    pub fn confident_agreement(&self) -> f64 {
        percent(self.confident_agree, self.confident)
    }

    pub fn cosine_mean(&self) -> f64 {
        if self.frames == 0 {
            1.0
        } else {
            self.cosine_sum / self.frames as f64
        }
    }
}

fn percent(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// Argmax and the margin between the two largest values.
pub fn top2(row: &[f32]) -> (usize, f32) {
    let (mut best, mut i_best, mut second) = (f32::NEG_INFINITY, 0, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best {
            second = best;
            best = v;
            i_best = i;
        } else if v > second {
            second = v;
        }
    }
    (i_best, best - second)
}

fn eval_err(model: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Eval(format!("{}: {e}", model.display()))
}

/// One model's outputs on an eval set.
struct ModelRun {
    /// Per clip, `[frames, vocab]`.
    logits: Vec<Vec<f32>>,
    texts: Vec<String>,
    vocab: usize,
    /// Seconds of a second (timed) pass, plans already compiled.
    seconds: f64,
}

/// Per-clip logits and transcripts of one model, and the seconds a second (timed) pass took.
fn run_model(path: &Path, set: &EvalSet) -> Result<ModelRun, ExportError> {
    let backend =
        TractBackend::load(path, &BackendOptions::default()).map_err(|e| eval_err(path, e))?;
    let info: ModelInfo = w2v_engine::Backend::info(&backend).clone();
    let vocab = Vocabulary::new(
        info.vocab.clone(),
        info.pad_token_id,
        info.word_delimiter_token.clone(),
    );
    let spf = info.seconds_per_frame();
    let mut t = Transcriber::new(backend);
    let mut logits = Vec::new();
    let mut texts = Vec::new();
    let mut vocab_len = info.vocab.len();
    for clip in &set.clips {
        let l = t.logits(&clip.samples).map_err(|e| eval_err(path, e))?;
        vocab_len = l.vocab;
        texts.push(greedy_decode(l.row(0), &vocab, spf, 0.0).text);
        logits.push(l.data);
    }
    let start = Instant::now();
    for clip in &set.clips {
        t.logits(&clip.samples).map_err(|e| eval_err(path, e))?;
    }
    Ok(ModelRun {
        logits,
        texts,
        vocab: vocab_len,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Compare the fp32 model with the reduced-precision one on `set`, both on tract.
pub fn compare(
    fp32: &Path,
    quantized: &Path,
    set: &EvalSet,
    precision: &str,
    target: Option<&str>,
) -> Result<AccuracyReport, ExportError> {
    let ModelRun {
        logits: ref_logits,
        texts: ref_texts,
        vocab,
        seconds: fp32_seconds,
    } = run_model(fp32, set)?;
    let ModelRun {
        logits: q_logits,
        texts: q_texts,
        seconds: q_seconds,
        ..
    } = run_model(quantized, set)?;
    let mut stats = LogitStats::new();
    for (r, q) in ref_logits.iter().zip(&q_logits) {
        if r.len() != q.len() {
            return Err(ExportError::Eval(format!(
                "fp32 and {precision} models give different frame counts ({} and {})",
                r.len() / vocab.max(1),
                q.len() / vocab.max(1)
            )));
        }
        stats.add(r, q, vocab);
    }
    let mut w_ref = EditCounts::default();
    let mut w_q = EditCounts::default();
    let mut c_ref = EditCounts::default();
    let mut c_q = EditCounts::default();
    let mut w_vs = EditCounts::default();
    let mut c_vs = EditCounts::default();
    let labelled = set.clips.iter().all(|c| c.transcript.is_some());
    for ((clip, r), q) in set.clips.iter().zip(&ref_texts).zip(&q_texts) {
        w_vs += word_errors(r, q);
        c_vs += char_errors(r, q);
        if let Some(truth) = &clip.transcript {
            w_ref += word_errors(truth, r);
            w_q += word_errors(truth, q);
            c_ref += char_errors(truth, r);
            c_q += char_errors(truth, q);
        }
    }
    let pct = |e: EditCounts| 100.0 * e.rate();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let sample_rate = w2v_engine::ModelInfo::read(fp32)
        .map(|i| i.sample_rate)
        .unwrap_or(16000);
    let (wer_fp32, wer_q) = (pct(w_ref), pct(w_q));
    Ok(AccuracyReport {
        precision: precision.into(),
        target: target.map(str::to_string),
        data: set.source.clone(),
        utterances: set.clips.len(),
        audio_seconds: set.audio_seconds(sample_rate),
        frames: stats.frames,
        cosine_mean: stats.cosine_mean(),
        cosine_min: stats.cosine_min,
        max_abs_logit_diff: stats.max_abs_diff,
        argmax_agreement: stats.agreement(),
        confident_argmax_agreement: stats.confident_agreement(),
        confident_frames: stats.confident,
        wer_fp32: labelled.then_some(wer_fp32),
        wer_quantized: labelled.then_some(wer_q),
        cer_fp32: labelled.then(|| pct(c_ref)),
        cer_quantized: labelled.then(|| pct(c_q)),
        wer_vs_fp32: pct(w_vs),
        cer_vs_fp32: pct(c_vs),
        wer_increase_points: if labelled {
            wer_q - wer_fp32
        } else {
            pct(w_vs)
        },
        fp32_bytes: size(fp32),
        quantized_bytes: size(quantized),
        backend: "tract".into(),
        fp32_seconds,
        quantized_seconds: q_seconds,
        speedup: if q_seconds > 0.0 {
            fp32_seconds / q_seconds
        } else {
            0.0
        },
    })
}

/// The eval set an export uses: the manifest if given, else the synthetic set.
pub fn eval_set(manifest: Option<&PathBuf>, sample_rate: u32) -> Result<EvalSet, ExportError> {
    match manifest {
        Some(p) => EvalSet::from_manifest(p, sample_rate),
        None => Ok(EvalSet::synthetic(sample_rate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top2_margin() {
        assert_eq!(top2(&[0.0, 3.0, 1.0, 2.5]), (1, 0.5));
        assert_eq!(top2(&[5.0, 1.0]), (0, 4.0));
    }

    #[test]
    fn identical_logits_agree_fully() {
        let a = [1.0, 2.0, 0.5, -1.0, 0.0, 3.0];
        let mut s = LogitStats::new();
        s.add(&a, &a, 3);
        assert_eq!(s.frames, 2);
        assert!((s.cosine_mean() - 1.0).abs() < 1e-12);
        assert_eq!(s.agreement(), 100.0);
        assert_eq!(s.confident, 2);
    }

    #[test]
    fn synthetic_set_is_deterministic() {
        let a = EvalSet::synthetic(16000);
        let b = EvalSet::synthetic(16000);
        assert_eq!(a.clips.len(), 4);
        for (x, y) in a.clips.iter().zip(&b.clips) {
            assert_eq!(x.samples, y.samples);
            assert_eq!(x.samples.len(), 32000);
            assert!(x.samples.iter().all(|v| v.is_finite() && v.abs() < 2.0));
        }
    }
}
