//! From audio samples to a transcript: normalization, chunking with overlap, stitching, decoding.
//!
//! Long audio is cut into windows of `chunk_seconds` that overlap by `overlap_seconds` on each
//! side; each window's logits keep only the frames of its centre, so every kept frame saw at
//! least `overlap_seconds` of context on both sides (except at the file's ends). Windows start
//! on frame boundaries, so the kept frames tile the whole file exactly once.
//!
//! Memory: besides the decoded audio itself (4 bytes per sample, 230 MB for an hour at 16 kHz),
//! one window's activations and the logits of the whole file (4 · vocab bytes per frame: 23 MB
//! for an hour with a 32-token vocabulary) are held; neither grows with the window count.

use std::time::Instant;

use serde::Serialize;

use crate::audio::normalize;
use crate::backend::{Backend, BackendError, Batch, Logits};
use std::sync::Arc;

use crate::beam::BeamSetup;
use crate::ctc::{greedy_decode, Transcript, Vocabulary, Word};
use crate::lexicon::Lexicon;
use crate::model_info::ModelInfo;

/// The default window length for long audio, in seconds.
pub const DEFAULT_CHUNK_SECONDS: f64 = 30.0;

/// How audio is cut into windows.
#[derive(Clone, Copy, Debug)]
pub struct ChunkPlan {
    /// Window length in seconds; audio up to this length runs in one piece.
    pub chunk_seconds: f64,
    /// Context on each side of a window's kept centre, in seconds.
    pub overlap_seconds: f64,
}

impl Default for ChunkPlan {
    fn default() -> Self {
        ChunkPlan {
            chunk_seconds: DEFAULT_CHUNK_SECONDS,
            overlap_seconds: 2.0,
        }
    }
}

/// One window: samples `[start, end)` of the file, keeping its local frames `[keep_from, keep_to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub keep_from: usize,
    pub keep_to: usize,
}

impl ChunkPlan {
    /// Cut `samples` samples into windows for a model with the given geometry.
    pub fn windows(&self, samples: usize, info: &ModelInfo) -> Vec<Window> {
        let stride = info.frame_stride;
        let round_down = |s: f64| ((s * info.sample_rate as f64) as usize / stride) * stride;
        let chunk = round_down(self.chunk_seconds).max(info.receptive_field + 2 * stride);
        let overlap = round_down(self.overlap_seconds).min(chunk / 4 / stride * stride);
        let total_frames = info.frames_for_samples(samples);
        if samples <= chunk {
            return vec![Window {
                start: 0,
                end: samples,
                keep_from: 0,
                keep_to: total_frames,
            }];
        }
        let hop = chunk - 2 * overlap;
        let mut out = Vec::new();
        let mut start = 0usize;
        loop {
            let end = (start + chunk).min(samples);
            let local_frames = info.frames_for_samples(end - start);
            let first_frame = start / stride;
            let keep_from = if start == 0 { 0 } else { overlap / stride };
            let last = end == samples;
            let keep_to = if last {
                local_frames.min(total_frames.saturating_sub(first_frame))
            } else {
                (chunk - overlap) / stride
            };
            out.push(Window {
                start,
                end,
                keep_from,
                keep_to: keep_to.max(keep_from),
            });
            if last {
                break;
            }
            start += hop;
            // The final window is shifted left so it is full length: no tiny tail windows.
            if start + chunk > samples {
                let aligned = (samples.saturating_sub(chunk)) / stride * stride;
                let prev_keep_end = out
                    .last()
                    .map(|w| w.start / stride + w.keep_to)
                    .unwrap_or(0);
                let end = samples;
                let first_frame = aligned / stride;
                let local_frames = info.frames_for_samples(end - aligned);
                out.push(Window {
                    start: aligned,
                    end,
                    keep_from: prev_keep_end.saturating_sub(first_frame),
                    keep_to: local_frames.min(total_frames - first_frame),
                });
                break;
            }
        }
        out
    }
}

/// A transcript with its timing.
#[derive(Clone, Debug, Serialize)]
pub struct FileTranscript {
    pub text: String,
    pub words: Vec<Word>,
    /// Audio duration in seconds.
    pub duration: f64,
    /// Model compute time in seconds (excluding audio decoding).
    pub compute_seconds: f64,
    /// compute_seconds / duration.
    pub real_time_factor: f64,
}

pub struct Transcriber<B: Backend> {
    backend: B,
    vocab: Vocabulary,
    pub plan: ChunkPlan,
    /// Restrict transcripts to these words (lexicon-constrained decoding); greedy when `None`.
    /// Shared: a stream over the same model decodes with the same list.
    pub lexicon: Option<Arc<Lexicon>>,
    /// Beam search (with its LM and hotwords) instead of greedy decoding; the lexicon, when
    /// both are set, wins.
    pub beam: Option<Arc<BeamSetup>>,
}

impl<B: Backend> Transcriber<B> {
    pub fn new(backend: B) -> Self {
        let info = backend.info();
        let vocab = Vocabulary::new(
            info.vocab.clone(),
            info.pad_token_id,
            info.word_delimiter_token.clone(),
        );
        Transcriber {
            backend,
            vocab,
            plan: ChunkPlan::default(),
            lexicon: None,
            beam: None,
        }
    }

    pub fn info(&self) -> &ModelInfo {
        self.backend.info()
    }

    /// The model's CTC vocabulary.
    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Seconds of audio per logits frame.
    pub fn seconds_per_frame(&self) -> f64 {
        self.backend.info().seconds_per_frame()
    }

    /// The backend, to run it directly (a [`crate::listen::Listener`] over the same model).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Logits `[frames, vocab]` of a whole file (at the model's sample rate, not normalized yet),
    /// computed window by window and stitched.
    pub fn logits(&mut self, audio: &[f32]) -> Result<Logits, BackendError> {
        let mut samples = audio.to_vec();
        if self.backend.info().do_normalize {
            normalize(&mut samples);
        }
        let mut vocab = self.backend.info().vocab.len();
        if self.backend.info().frames_for_samples(samples.len()) == 0 {
            // Shorter than one receptive field: no frames, nothing to run.
            return Ok(Logits {
                data: Vec::new(),
                batch: 1,
                frames: 0,
                vocab,
            });
        }
        let windows = self.plan.windows(samples.len(), self.backend.info());
        let mut data = Vec::new();
        for w in &windows {
            let chunk = &samples[w.start..w.end];
            let lengths = [chunk.len()];
            let out = self.backend.run(&Batch::single(chunk, &lengths))?;
            vocab = out.vocab;
            let to = w.keep_to.min(out.frames);
            if w.keep_from < to {
                data.extend_from_slice(&out.row(0)[w.keep_from * vocab..to * vocab]);
            }
        }
        let frames = data.len().checked_div(vocab).unwrap_or(0);
        Ok(Logits {
            data,
            batch: 1,
            frames,
            vocab,
        })
    }

    /// Transcribe one file's samples (mono, at the model's sample rate).
    pub fn transcribe(&mut self, audio: &[f32]) -> Result<FileTranscript, BackendError> {
        self.transcribe_keeping_logits(audio).map(|(t, _)| t)
    }

    /// [`Transcriber::transcribe`], also returning the stitched logits `[frames, vocab]`.
    pub fn transcribe_keeping_logits(
        &mut self,
        audio: &[f32],
    ) -> Result<(FileTranscript, Logits), BackendError> {
        let start = Instant::now();
        let logits = self.logits(audio)?;
        let t = self.decode(logits.row(0), self.seconds_per_frame());
        Ok((
            self.finish(t, audio.len(), start.elapsed().as_secs_f64()),
            logits,
        ))
    }

    /// [`Transcriber::transcribe`] decoded by `beam` instead of this transcriber's decoder (a
    /// request's own hotwords over the same model).
    pub fn transcribe_with_beam(
        &mut self,
        audio: &[f32],
        beam: &BeamSetup,
    ) -> Result<FileTranscript, BackendError> {
        let start = Instant::now();
        let logits = self.logits(audio)?;
        let t = beam
            .decode(&self.vocab, logits.row(0), self.seconds_per_frame(), 0.0)
            .swap_remove(0)
            .transcript;
        Ok(self.finish(t, audio.len(), start.elapsed().as_secs_f64()))
    }

    /// Transcribe several utterances in one batch (each shorter than a window). Models with an
    /// attention mask run padded rows with a mask; models without one only batch rows of equal
    /// length (padding would change their normalization), others run alone. The results equal
    /// those of [`Transcriber::transcribe`] on each utterance.
    pub fn transcribe_batch(
        &mut self,
        audios: &[&[f32]],
    ) -> Result<Vec<FileTranscript>, BackendError> {
        let start = Instant::now();
        let info = self.backend.info().clone();
        let max_len = audios.iter().map(|a| a.len()).max().unwrap_or(0);
        let chunk_limit = (self.plan.chunk_seconds * info.sample_rate as f64) as usize;
        let same_len = audios.iter().all(|a| a.len() == max_len);
        let too_short = audios.iter().any(|a| info.frames_for_samples(a.len()) == 0);
        if audios.len() < 2
            || too_short
            || max_len > chunk_limit
            || !(info.uses_attention_mask || same_len)
        {
            return audios.iter().map(|a| self.transcribe(a)).collect();
        }
        let mut samples = vec![0f32; audios.len() * max_len];
        let lengths: Vec<usize> = audios.iter().map(|a| a.len()).collect();
        for (b, a) in audios.iter().enumerate() {
            let row = &mut samples[b * max_len..b * max_len + a.len()];
            row.copy_from_slice(a);
            if info.do_normalize {
                normalize(row);
            }
        }
        let batch = Batch {
            samples: &samples,
            batch: audios.len(),
            len: max_len,
            lengths: &lengths,
        };
        let out = self.backend.run(&batch)?;
        let elapsed = start.elapsed().as_secs_f64() / audios.len() as f64;
        let spf = self.seconds_per_frame();
        Ok((0..audios.len())
            .map(|b| {
                let frames = info.frames_for_samples(lengths[b]).min(out.frames);
                let t = self.decode(&out.row(b)[..frames * out.vocab], spf);
                self.finish(t, lengths[b], elapsed)
            })
            .collect())
    }

    /// One utterance's logits to words: greedy, constrained to [`Transcriber::lexicon`], or by
    /// [`Transcriber::beam`] search.
    fn decode(&self, logits: &[f32], seconds_per_frame: f64) -> Transcript {
        self.decode_at(logits, seconds_per_frame, 0.0)
    }

    /// Decode `[frames, vocab]` logits with this transcriber's decoder (word list, beam search,
    /// or greedy); word times start at `offset` seconds.
    pub fn decode_logits(&self, logits: &[f32], offset: f64) -> Transcript {
        self.decode_at(logits, self.seconds_per_frame(), offset)
    }

    fn decode_at(&self, logits: &[f32], seconds_per_frame: f64, offset: f64) -> Transcript {
        match (&self.lexicon, &self.beam) {
            (Some(lex), _) => lex.decode(logits, &self.vocab, seconds_per_frame, offset),
            (None, Some(beam)) => {
                beam.decode(&self.vocab, logits, seconds_per_frame, offset)
                    .swap_remove(0)
                    .transcript
            }
            (None, None) => greedy_decode(logits, &self.vocab, seconds_per_frame, offset),
        }
    }

    fn finish(&self, t: Transcript, samples: usize, compute: f64) -> FileTranscript {
        let duration = samples as f64 / self.backend.info().sample_rate as f64;
        FileTranscript {
            text: t.text,
            words: t.words,
            duration,
            compute_seconds: compute,
            real_time_factor: if duration > 0.0 {
                compute / duration
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_info::{FORMAT_VERSION, MODEL_TYPE_WAV2VEC2_CTC};

    fn info() -> ModelInfo {
        ModelInfo {
            format_version: FORMAT_VERSION,
            model_type: MODEL_TYPE_WAV2VEC2_CTC.into(),
            config: serde_json::json!({
                "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]
            }),
            vocab: vec!["<pad>".into(), "a".into()],
            sample_rate: 16000,
            do_normalize: true,
            frame_stride: 320,
            receptive_field: 400,
            uses_attention_mask: false,
            pad_token_id: 0,
            word_delimiter_token: None,
            precision: "fp32".into(),
            source_sha256: String::new(),
            exporter_version: String::new(),
            raw: Default::default(),
        }
    }

    #[test]
    fn windows_tile_every_frame_exactly_once() {
        let info = info();
        let plan = ChunkPlan {
            chunk_seconds: 4.0,
            overlap_seconds: 0.5,
        };
        for seconds in [1.0, 4.0, 4.01, 7.3, 10.0, 33.3] {
            let samples = (seconds * 16000.0) as usize;
            let windows = plan.windows(samples, &info);
            let mut next = 0usize;
            for w in &windows {
                let first = w.start / info.frame_stride;
                assert_eq!(w.start % info.frame_stride, 0);
                assert_eq!(first + w.keep_from, next, "{seconds}s: {windows:?}");
                assert!(w.keep_to <= info.frames_for_samples(w.end - w.start));
                next = first + w.keep_to;
            }
            assert_eq!(
                next,
                info.frames_for_samples(samples),
                "{seconds}s: {windows:?}"
            );
        }
    }
}
