//! Activation-scale calibration for QDQ (`--target tensorrt`) exports: the float32 model runs on
//! calibration audio with the weight matmuls' inputs exposed as outputs, and each activation's
//! scale is its clipping threshold divided by 127. The threshold is either the 99.99th
//! percentile of |x| or, with the entropy method, the one whose 8-bit quantization of the |x|
//! histogram loses the least information (minimum KL divergence; Migacz, "8-bit Inference with
//! TensorRT", 2017, as TensorRT's entropy calibrator).

use std::collections::BTreeMap;
use std::path::Path;

use w2v_engine::backend::tract::TractGraph;
use w2v_engine::backend::{GraphRunner, TensorView};
use w2v_engine::BackendOptions;

use crate::report::EvalSet;
use crate::{CalibrationMethod, ExportError};

/// The percentile of |activation| that maps to 127.
pub const PERCENTILE: f64 = 99.99;

/// Log-scale histogram of |x|: `SUB` bins per octave from 2^MIN_EXP to 2^MAX_EXP.
struct AbsHistogram {
    bins: Vec<u64>,
    total: u64,
    max: f32,
}

const SUB: i32 = 32;
const MIN_EXP: i32 = -40;
const MAX_EXP: i32 = 40;

impl AbsHistogram {
    fn new() -> Self {
        AbsHistogram {
            bins: vec![0; ((MAX_EXP - MIN_EXP) * SUB) as usize + 1],
            total: 0,
            max: 0.0,
        }
    }

    fn add(&mut self, xs: &[f32]) {
        for &x in xs {
            let a = x.abs();
            if !a.is_finite() {
                continue;
            }
            self.max = self.max.max(a);
            let b = if a <= 0.0 {
                0
            } else {
                let l = ((a as f64).log2() - MIN_EXP as f64) * SUB as f64;
                (l.ceil().max(0.0) as usize).min(self.bins.len() - 1)
            };
            self.bins[b] += 1;
            self.total += 1;
        }
    }

    /// The upper edge of the bin holding the `p`-th percentile, at most the maximum seen.
    fn percentile(&self, p: f64) -> f32 {
        let want = ((p / 100.0) * self.total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                let edge = 2f64.powf(MIN_EXP as f64 + i as f64 / SUB as f64) as f32;
                return edge.min(self.max);
            }
        }
        self.max
    }
}

/// Linear bins of the entropy method's reference histogram (TensorRT uses 2048).
const ENTROPY_BINS: usize = 2048;
/// Quantized levels of |x|: 8-bit symmetric.
const LEVELS: usize = 128;

impl AbsHistogram {
    /// The log-scale histogram re-binned onto `n` linear bins over [0, max]: each log bin's
    /// count is spread uniformly over the linear range it covers (its width is 2.2 % of its
    /// value, so the spreading is finer than the 8-bit levels it is compared with).
    fn linear(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0f64; n];
        if self.max <= 0.0 {
            out[0] = self.total as f64;
            return out;
        }
        let width = self.max as f64 / n as f64;
        for (i, &c) in self.bins.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if i == 0 {
                out[0] += c as f64; // zeros and values below 2^MIN_EXP
                continue;
            }
            let hi = 2f64
                .powf(MIN_EXP as f64 + i as f64 / SUB as f64)
                .min(self.max as f64);
            let lo = 2f64
                .powf(MIN_EXP as f64 + (i - 1) as f64 / SUB as f64)
                .min(hi);
            let (a, b) = (lo / width, (hi / width).max(lo / width + 1e-12));
            let mut x = a;
            while x < b {
                let bin = (x.floor() as usize).min(n - 1);
                let next = ((bin + 1) as f64).min(b);
                out[bin] += c as f64 * (next - x) / (b - a);
                if next <= x {
                    break;
                }
                x = next;
            }
        }
        out
    }

    /// The entropy method's clipping threshold: for each candidate `i` (from 128 to 2048
    /// linear bins), the reference distribution is the first `i` bins with everything beyond
    /// folded into the last, the candidate quantizes those bins into 128 levels (each level
    /// spread back evenly over its non-empty bins), and the threshold with the smallest
    /// KL(reference ‖ quantized) wins.
    fn entropy_threshold(&self) -> f32 {
        let hist = self.linear(ENTROPY_BINS);
        let total: f64 = hist.iter().sum();
        if total <= 0.0 || self.max <= 0.0 {
            return self.max;
        }
        let width = self.max as f64 / ENTROPY_BINS as f64;
        let (mut best, mut best_kl) = (ENTROPY_BINS, f64::INFINITY);
        let mut tail: f64 = hist[LEVELS..].iter().sum();
        for i in LEVELS..=ENTROPY_BINS {
            // reference: bins [0, i) with the outliers beyond folded into the last one
            let mut p: Vec<f64> = hist[..i].to_vec();
            tail -= if i < ENTROPY_BINS { hist[i] } else { 0.0 };
            p[i - 1] += tail.max(0.0);
            // candidate: i bins merged into LEVELS groups, each spread over its non-empty bins
            let mut q = vec![0f64; i];
            for l in 0..LEVELS {
                let (s, e) = (
                    l * i / LEVELS,
                    ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1),
                );
                let sum: f64 = hist[s..e].iter().sum();
                let nonzero = hist[s..e].iter().filter(|&&v| v > 0.0).count();
                if nonzero > 0 {
                    for j in s..e {
                        if hist[j] > 0.0 {
                            q[j] = sum / nonzero as f64;
                        }
                    }
                }
            }
            let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
            if ps <= 0.0 || qs <= 0.0 {
                continue;
            }
            let mut kl = 0.0;
            for (pj, qj) in p.iter().zip(&q) {
                if *pj > 0.0 {
                    let (pj, qj) = (pj / ps, (qj / qs).max(1e-12));
                    kl += pj * (pj / qj).ln();
                }
            }
            if kl < best_kl {
                best_kl = kl;
                best = i;
            }
        }
        ((best as f64 + 0.5) * width).min(self.max as f64) as f32
    }
}

fn err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Eval(format!("calibration: {e:#}"))
}

/// Per-tensor symmetric scales (`amax / 127`) of the named activations of the float32 model at
/// `fp32`, and a description of the calibration for the metadata.
pub fn activation_scales(
    fp32: &Path,
    names: &[String],
    set: &EvalSet,
    method: CalibrationMethod,
) -> Result<(BTreeMap<String, f32>, String), ExportError> {
    let info = w2v_engine::ModelInfo::read(fp32).map_err(err)?;
    let bytes = std::fs::read(fp32).map_err(err)?;
    // The engine's tract graph runner and its plan cache; one thread, as calibration always ran.
    let options = BackendOptions { threads: Some(1) };
    let mut graph = TractGraph::from_bytes(&bytes, fp32, &options)
        .and_then(|g| g.with_outputs(names))
        .map_err(err)?;
    // tract's input order: the samples, then the attention mask (masked models).
    let inputs = graph.input_names().to_vec();
    if inputs.len() < 1 + usize::from(info.uses_attention_mask) {
        return Err(err(format!(
            "{}: the model has too few inputs",
            fp32.display()
        )));
    }
    let mut hists: Vec<AbsHistogram> = names.iter().map(|_| AbsHistogram::new()).collect();
    let (mut used, mut short) = (0, 0);
    for clip in &set.clips {
        let mut samples = clip.samples.clone();
        if info.do_normalize {
            w2v_engine::audio::normalize(&mut samples);
        }
        if info.frames_for_samples(samples.len()) == 0 {
            tracing::debug!(clip = %clip.name, "calibration clip shorter than one frame; skipped");
            short += 1;
            continue;
        }
        used += 1;
        let shape = [1, samples.len()];
        let mask = vec![1i64; samples.len()];
        let mut feed = vec![(inputs[0].as_str(), TensorView::f32(&shape, &samples))];
        if info.uses_attention_mask {
            feed.push((inputs[1].as_str(), TensorView::i64(&shape, &mask)));
        }
        let outs = graph.run(&feed).map_err(err)?;
        for (h, o) in hists.iter_mut().zip(outs.iter()) {
            let v = o
                .as_f32()
                .ok_or_else(|| err("a calibrated activation is not float32"))?;
            h.add(v);
        }
    }
    if used > 0 && short > 0 {
        tracing::warn!(
            "{}: {short} calibration clips shorter than one frame were skipped",
            set.source
        );
    }
    if used == 0 {
        return Err(ExportError::Eval(format!(
            "{}: no usable calibration clips (each needs at least {} samples at {} Hz, one output \
             frame)",
            set.source, info.receptive_field, info.sample_rate
        )));
    }
    let mut scales = BTreeMap::new();
    for (name, h) in names.iter().zip(&hists) {
        if h.total == 0 {
            continue;
        }
        let amax = match method {
            CalibrationMethod::Percentile => h.percentile(PERCENTILE),
            CalibrationMethod::Entropy => h.entropy_threshold(),
        };
        scales.insert(name.clone(), if amax > 0.0 { amax / 127.0 } else { 1.0 });
    }
    let rule = match method {
        CalibrationMethod::Percentile => format!("{PERCENTILE}th percentile of |x|"),
        CalibrationMethod::Entropy => {
            format!("entropy (minimum KL divergence, {ENTROPY_BINS} bins, {LEVELS} levels)")
        }
    };
    let how = format!(
        "per-tensor symmetric, {rule} over {} ({used} clips)",
        set.source
    );
    Ok((scales, how))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_uniform_values() {
        let mut h = AbsHistogram::new();
        let xs: Vec<f32> = (1..=10000).map(|i| i as f32 / 1000.0).collect();
        h.add(&xs);
        let p = h.percentile(50.0);
        assert!((p - 5.0).abs() / 5.0 < 0.03, "{p}");
        assert_eq!(h.percentile(100.0), 10.0);
    }

    #[test]
    fn linear_rebinning_keeps_the_counts() {
        let mut h = AbsHistogram::new();
        let xs: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        h.add(&xs);
        let lin = h.linear(ENTROPY_BINS);
        let sum: f64 = lin.iter().sum();
        assert!((sum - 5000.0).abs() < 1e-6, "{sum}");
        // uniform-ish |sin| mass: no bin holds a large share
        assert!(lin.iter().all(|&c| c < 50.0));
    }

    /// A Gaussian bulk with rare huge outliers: the percentile keeps the outliers in range only
    /// if they pass its rank; entropy clips them and stays near the bulk, as TensorRT's does.
    #[test]
    fn entropy_clips_rare_outliers_that_widen_the_range() {
        let mut h = AbsHistogram::new();
        let mut s = 12345u64;
        let mut normal = || {
            // Box-Muller from a small LCG
            let mut u = || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            ((-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos()) as f32
        };
        let mut xs: Vec<f32> = (0..200_000).map(|_| normal()).collect();
        xs.extend([80.0f32, -95.0, 100.0]);
        h.add(&xs);
        let t = h.entropy_threshold();
        assert!(t > 2.5 && t < 20.0, "threshold {t}");
        // and a distribution with no outliers keeps (nearly) its whole range
        let mut u = AbsHistogram::new();
        let xs: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        u.add(&xs);
        let t = u.entropy_threshold();
        assert!(t > 0.9, "uniform threshold {t}");
    }
}
