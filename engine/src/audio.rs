//! The audio front end: decode any common audio file to mono `f32`, resample it to the model's
//! rate, and normalize it the way Hugging Face's `Wav2Vec2FeatureExtractor` does.
//!
//! - [`decode_file`] reads WAV (8-bit unsigned, 16/24/32-bit int, 32/64-bit float, A-law, µ-law,
//!   ADPCM), FLAC, MP3 (and MP1/MP2), OGG/Vorbis, AIFF, CAF, MKV/WebM and MP4/M4A (AAC, ALAC)
//!   through Symphonia, and mixes all channels to mono by their mean.
//! - [`Resampler`] is a streaming, fixed-ratio, FFT-based band-limited resampler (Rubato's `Fft`)
//!   that keeps input and output time-aligned and produces exactly `round(n * to / from)` samples
//!   for `n` input samples; [`resample`] is the one-shot form.
//! - [`load`] is decode + resample; [`normalize`] is `zero_mean_unit_var_norm`.
//! - [`PcmStream`] reads a live stream (WAV or raw 16-bit PCM from standard input or a pipe)
//!   incrementally, a block at a time, for `w2v listen --input -`.
//!
//! Errors are [`AudioError`]s: one line each, starting with the file's path.

mod decode;
mod resample;
mod stream;

pub use decode::{decode_bytes, decode_file};
pub use resample::{resample, try_resample, ResampleError, Resampler};
pub use stream::{integer_pcm_to_mono, PcmStream, StreamHint};

use std::path::Path;

/// A decoded audio file, mixed down to mono.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples, the mean of the source's channels. Integer sources decode to `[-1, 1)`;
    /// float sources are passed through unclipped (they are checked to be finite).
    pub samples: Vec<f32>,
    /// The source's sample rate in Hz.
    pub sample_rate: u32,
    /// The number of channels in the source (before the mono mix-down).
    pub channels: usize,
    /// Short name of the codec, as Symphonia's decoder reports it (`pcm_s16le`, `flac`, `mp3`,
    /// `vorbis`, …).
    pub codec: String,
}

impl DecodedAudio {
    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / f64::from(self.sample_rate)
        }
    }
}

/// Why an audio file could not be loaded. Every message is one line that starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: no such file")]
    NotFound { path: String },
    #[error("{path}: is a directory, not an audio file")]
    IsDirectory { path: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: file is empty (0 bytes)")]
    EmptyFile { path: String },
    #[error(
        "{path}: not an audio file, or a container format that is not supported \
         (supported: WAV, FLAC, MP3, OGG, AIFF, CAF, MKV/WebM, MP4/M4A)"
    )]
    UnknownFormat { path: String },
    #[error("{path}: truncated: the file ends inside its header")]
    TruncatedHeader { path: String },
    #[error("{path}: invalid audio header: {reason}")]
    InvalidHeader { path: String, reason: String },
    #[error("{path}: contains no audio track")]
    NoAudioTrack { path: String },
    #[error("{path}: unsupported audio codec: {codec}")]
    UnsupportedCodec { path: String, codec: String },
    #[error("{path}: contains no audio samples (zero length)")]
    ZeroLength { path: String },
    #[error(
        "{path}: sample at {seconds:.3} s is {what}: the file is corrupt or not valid float audio"
    )]
    NonFinite {
        path: String,
        what: &'static str,
        seconds: f64,
    },
    #[error("{path}: decode error at {seconds:.3} s: {reason}")]
    Decode {
        path: String,
        seconds: f64,
        reason: String,
    },
    #[error("{path}: unsupported stream: {reason}")]
    UnsupportedStream { path: String, reason: String },
    #[error("{path}: cannot resample from {from} Hz to {to} Hz: {reason}")]
    Resample {
        path: String,
        from: u32,
        to: u32,
        reason: String,
    },
}

impl AudioError {
    /// The path of the file the error is about, as displayed in the message.
    pub fn path(&self) -> &str {
        match self {
            AudioError::NotFound { path }
            | AudioError::IsDirectory { path }
            | AudioError::Io { path, .. }
            | AudioError::EmptyFile { path }
            | AudioError::UnknownFormat { path }
            | AudioError::TruncatedHeader { path }
            | AudioError::InvalidHeader { path, .. }
            | AudioError::NoAudioTrack { path }
            | AudioError::UnsupportedCodec { path, .. }
            | AudioError::ZeroLength { path }
            | AudioError::NonFinite { path, .. }
            | AudioError::Decode { path, .. }
            | AudioError::UnsupportedStream { path, .. }
            | AudioError::Resample { path, .. } => path,
        }
    }
}

/// Decode `path` (any supported format), mix it to mono and resample it to `target_rate` Hz.
pub fn load(path: &Path, target_rate: u32) -> Result<Vec<f32>, AudioError> {
    to_rate(decode_file(path)?, &path.display().to_string(), target_rate)
}

/// [`load`] for audio in memory (an upload named `name`).
pub fn load_bytes(bytes: Vec<u8>, name: &str, target_rate: u32) -> Result<Vec<f32>, AudioError> {
    to_rate(decode_bytes(bytes, name)?, name, target_rate)
}

fn to_rate(decoded: DecodedAudio, shown: &str, target_rate: u32) -> Result<Vec<f32>, AudioError> {
    if decoded.sample_rate == target_rate {
        return Ok(decoded.samples);
    }
    try_resample(&decoded.samples, decoded.sample_rate, target_rate).map_err(|e| {
        AudioError::Resample {
            path: shown.to_string(),
            from: decoded.sample_rate,
            to: target_rate,
            reason: e.to_string(),
        }
    })
}

/// Zero-mean, unit-variance normalization in place, exactly as Hugging Face's
/// `Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm`: `(x - mean) / sqrt(var + 1e-7)` with the
/// population variance. Statistics are accumulated in `f64`. An empty slice is left as it is.
pub fn normalize(samples: &mut [f32]) {
    if samples.is_empty() {
        return;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&x| {
            let d = f64::from(x) - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    let inv_std = 1.0 / (var + 1e-7).sqrt();
    for x in samples.iter_mut() {
        *x = ((f64::from(*x) - mean) * inv_std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_matches_formula() {
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        normalize(&mut x);
        // mean 2.5, population variance 1.25
        let s = (1.25f64 + 1e-7).sqrt();
        let want = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        for (a, b) in x.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn normalize_constant_and_empty() {
        // Constant input: variance 0, so the epsilon keeps it finite (all zeros).
        let mut x = vec![0.25f32; 10];
        normalize(&mut x);
        assert!(x.iter().all(|&v| v == 0.0));
        let mut e: Vec<f32> = Vec::new();
        normalize(&mut e);
        assert!(e.is_empty());
    }

    #[test]
    fn error_messages_are_one_line_and_name_the_path() {
        let e = AudioError::Decode {
            path: "a/b.wav".into(),
            seconds: 1.5,
            reason: "malformed stream: bad frame".into(),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("a/b.wav: "), "{msg}");
        assert!(!msg.contains('\n'));
        assert_eq!(e.path(), "a/b.wav");
    }
}
