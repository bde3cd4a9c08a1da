//! Measurement helpers for `w2v bench` and `w2v doctor`: synthetic benchmark audio, timing
//! statistics, peak resident memory, the arithmetic a wav2vec 2.0 model does for an input of a
//! given length, and (with the `ort` feature) the execution providers the loaded ONNX Runtime
//! offers.

use serde::Serialize;

use crate::model_info::{conv_output_length, ModelInfo};

// ----- synthetic audio -----

/// `seconds` of benchmark audio at `sample_rate`: seeded white noise (amplitude 0.05) plus a
/// linear chirp from 100 Hz to 4 kHz (or 45% of the sample rate, if lower) at amplitude 0.3.
/// The same arguments always give the same samples. Not normalized.
pub fn synthetic_audio(seconds: f64, sample_rate: u32, seed: u64) -> Vec<f32> {
    let n = (seconds.max(0.0) * f64::from(sample_rate)).round() as usize;
    let rate = f64::from(sample_rate);
    let (f0, f1) = (100.0, (0.45 * rate).min(4000.0));
    let duration = (n as f64 / rate).max(f64::MIN_POSITIVE);
    let mut rng = crate::rng::SplitMix64(seed);
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            // Phase of a linear sweep f(t) = f0 + (f1 - f0) t / duration.
            let phase =
                2.0 * std::f64::consts::PI * (f0 * t + (f1 - f0) * t * t / (2.0 * duration));
            let noise = rng.next_unit() * 2.0 - 1.0;
            (0.3 * phase.sin() + 0.05 * noise) as f32
        })
        .collect()
}

// ----- timing statistics -----

/// Summary statistics of repeated timings, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub min: f64,
    /// The middle value (the mean of the two middle values for an even count).
    pub median: f64,
    /// Nearest-rank 95th percentile: the smallest value at least 95% of the runs do not exceed.
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

/// Summarize `values`; `None` when empty or when any value is not finite.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let rank = (0.95 * n as f64).ceil() as usize;
    Some(Summary {
        runs: n,
        min: v[0],
        median,
        p95: v[rank.clamp(1, n) - 1],
        max: v[n - 1],
        mean: v.iter().sum::<f64>() / n as f64,
    })
}

// ----- memory -----

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), in bytes; `None` where
/// the kernel does not report it (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    status_field_bytes("VmHWM")
}

/// The process's current resident set size (`VmRSS`), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_field_bytes("VmRSS")
}

fn status_field_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_field(&text, key)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in bytes (the kernel's "kB" means KiB).
pub fn parse_status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let mut words = v.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => n.checked_mul(1024),
            None => Some(n),
            Some(_) => None,
        }
    })
}

/// Bytes as the "MB" the benchmarks report: MiB (2^20 bytes), as `/usr/bin/time` users read it.
pub fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

// ----- arithmetic -----

/// Multiply-accumulates of one forward pass of a wav2vec 2.0 CTC model, by part. Counts the
/// matrix products and convolutions only (normalizations, activations, softmax and bias adds are
/// a few percent and left out). One MAC is two floating-point operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Arithmetic {
    /// Output frames of the convolutional front end.
    pub frames: u64,
    /// The feature-encoder convolutions: C_out·C_in·k per output position of each layer.
    pub conv: u64,
    /// The linear projection of the last conv channels to the hidden size.
    pub feature_projection: u64,
    /// The grouped positional convolution: H·(H/groups)·K per frame.
    pub positional_conv: u64,
    /// Query, key, value and output projections: 4·H² per frame and layer.
    pub attention_projections: u64,
    /// Attention scores and context: 2·T·H per frame and layer (quadratic in length).
    pub attention_scores: u64,
    /// The feed-forward blocks: 2·H·I per frame and layer.
    pub feed_forward: u64,
    /// The CTC head: H·V per frame.
    pub lm_head: u64,
}

impl Arithmetic {
    /// All multiply-accumulates.
    pub fn macs(&self) -> u64 {
        self.conv
            + self.feature_projection
            + self.positional_conv
            + self.attention_projections
            + self.attention_scores
            + self.feed_forward
            + self.lm_head
    }

    /// Billions of floating-point operations (2 per MAC).
    pub fn gflop(&self) -> f64 {
        2.0 * self.macs() as f64 / 1e9
    }
}

/// The model dimensions the arithmetic depends on, from the model description the exporter
/// built the graph with ([`crate::config::Wav2Vec2Config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimensions {
    /// (C_out, kernel, stride) of each feature-encoder convolution.
    pub conv: Vec<(u64, u64, u64)>,
    pub hidden: u64,
    pub layers: u64,
    pub intermediate: u64,
    pub pos_conv_kernel: u64,
    pub pos_conv_groups: u64,
    pub vocab: u64,
}

impl Dimensions {
    /// The dimensions of `info`'s model ([`ModelInfo::model_config`]); an error names a config
    /// field whose value is unusable.
    pub fn of(info: &ModelInfo) -> Result<Self, String> {
        let c = info.model_config().map_err(|e| e.to_string())?;
        let n = |v: usize| v as u64;
        let conv = c
            .conv_dim
            .iter()
            .zip(&c.conv_kernel)
            .zip(&c.conv_stride)
            .map(|((&d, &k), &s)| (n(d), n(k), n(s)))
            .collect();
        // The CTC head's width is the vocabulary the model carries.
        let vocab = u64::try_from(info.vocab.len()).unwrap_or(u64::MAX);
        Ok(Dimensions {
            conv,
            hidden: n(c.hidden_size),
            layers: n(c.num_hidden_layers),
            intermediate: n(c.intermediate_size),
            pos_conv_kernel: n(c.num_conv_pos_embeddings),
            pos_conv_groups: n(c.num_conv_pos_embedding_groups),
            vocab,
        })
    }

    /// Multiply-accumulates of one forward pass over `samples` input samples (batch of one); all
    /// zero for an input shorter than the receptive field (no frames, so nothing is run).
    pub fn arithmetic(&self, samples: usize) -> Arithmetic {
        let mut a = Arithmetic::default();
        let all: Vec<(usize, usize)> = self
            .conv
            .iter()
            .map(|&(_, k, s)| (k as usize, s as usize))
            .collect();
        if conv_output_length(&all, samples) == 0 {
            return a;
        }
        let mut c_in = 1u64;
        let mut layers = Vec::with_capacity(self.conv.len());
        for &(c_out, k, s) in &self.conv {
            layers.push((k as usize, s as usize));
            let positions = conv_output_length(&layers, samples) as u64;
            a.conv += positions * c_out * c_in * k;
            c_in = c_out;
        }
        let t = conv_output_length(&layers, samples) as u64;
        let h = self.hidden;
        a.frames = t;
        a.feature_projection = t * c_in * h;
        a.positional_conv = t * h * (h / self.pos_conv_groups) * self.pos_conv_kernel;
        a.attention_projections = self.layers * t * 4 * h * h;
        a.attention_scores = self.layers * t * 2 * t * h;
        a.feed_forward = self.layers * t * 2 * h * self.intermediate;
        a.lm_head = t * h * self.vocab;
        a
    }
}

/// Multiply-accumulates of `info`'s model on `samples` input samples.
pub fn arithmetic(info: &ModelInfo, samples: usize) -> Result<Arithmetic, String> {
    Ok(Dimensions::of(info)?.arithmetic(samples))
}

// ----- ONNX Runtime -----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_seeded_and_sized() {
        let a = synthetic_audio(0.5, 16000, 7);
        assert_eq!(a.len(), 8000);
        assert_eq!(a, synthetic_audio(0.5, 16000, 7));
        assert_ne!(a, synthetic_audio(0.5, 16000, 8));
        assert!(a.iter().all(|x| x.abs() <= 0.35 + 1e-6));
        assert!(a.iter().any(|x| x.abs() > 0.1));
        assert!(synthetic_audio(0.0, 16000, 1).is_empty());
    }

    #[test]
    fn summary_statistics() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (s.min, s.median, s.p95, s.max, s.mean),
            (1.0, 2.0, 3.0, 3.0, 2.0)
        );
        let s = summarize(&[4.0, 1.0]).unwrap();
        assert_eq!((s.median, s.p95), (2.5, 4.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(summarize(&twenty).unwrap().p95, 19.0);
        assert_eq!(summarize(&[5.0]).unwrap().p95, 5.0);
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tw2v\nVmHWM:\t  123456 kB\nVmRSS:\t 1000 kB\nThreads:\t3\n";
        assert_eq!(parse_status_field(status, "VmHWM"), Some(123456 * 1024));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(1000 * 1024));
        assert_eq!(parse_status_field(status, "Threads"), Some(3));
        assert_eq!(parse_status_field(status, "VmPeak"), None);
        #[cfg(target_os = "linux")]
        {
            // Current first: other tests' threads may grow the process between the two reads.
            let current = current_rss_bytes().unwrap();
            assert!(peak_rss_bytes().unwrap() >= current);
        }
    }

    /// wav2vec2-base on one second at 16 kHz, counted by hand.
    #[test]
    fn base_model_arithmetic() {
        let dims = Dimensions {
            conv: [(10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)]
                .map(|(k, s)| (512, k, s))
                .to_vec(),
            hidden: 768,
            layers: 12,
            intermediate: 3072,
            pos_conv_kernel: 128,
            pos_conv_groups: 16,
            vocab: 32,
        };
        let a = dims.arithmetic(16000);
        assert_eq!(a.frames, 49);
        // Conv output lengths 3199, 1599, 799, 399, 199, 99, 49.
        let conv =
            3199 * 512 * 10 + (1599 + 799 + 399 + 199) * 512 * 512 * 3 + (99 + 49) * 512 * 512 * 2;
        assert_eq!(a.conv, conv);
        assert_eq!(a.feature_projection, 49 * 512 * 768);
        assert_eq!(a.positional_conv, 49 * 768 * 48 * 128);
        assert_eq!(a.attention_projections, 12 * 49 * 4 * 768 * 768);
        assert_eq!(a.attention_scores, 12 * 49 * 2 * 49 * 768);
        assert_eq!(a.feed_forward, 12 * 49 * 2 * 768 * 3072);
        assert_eq!(a.lm_head, 49 * 768 * 32);
        // About 13.8 GFLOP for one second of audio, mostly the conv front end and the FFNs.
        assert_eq!(a.macs(), 6_907_859_968);
        assert!((a.gflop() - 13.816).abs() < 1e-3, "{}", a.gflop());
        // Attention scores grow quadratically with length, the rest linearly.
        let b = dims.arithmetic(160_000);
        assert_eq!(b.frames, 499);
        assert_eq!(b.attention_scores, 12 * 499 * 2 * 499 * 768);
        assert_eq!(dims.arithmetic(100).macs(), 0);
    }
}
