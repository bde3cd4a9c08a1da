//! Activation-scale calibration for QDQ (`--target tensorrt`) exports: the float32 model runs on
//! calibration audio with the weight matmuls' inputs exposed as outputs, and each activation's
//! scale is the 99.99th percentile of its absolute values, divided by 127.

use std::collections::BTreeMap;
use std::path::Path;

use tract_onnx::prelude::*;

use crate::report::EvalSet;
use crate::ExportError;

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

fn err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Eval(format!("calibration: {e:#}"))
}

/// Per-tensor symmetric scales (`amax / 127`) of the named activations of the float32 model at
/// `fp32`, and a description of the calibration for the metadata.
pub fn activation_scales(
    fp32: &Path,
    names: &[String],
    set: &EvalSet,
) -> Result<(BTreeMap<String, f32>, String), ExportError> {
    let info = w2v_engine::ModelInfo::read(fp32).map_err(err)?;
    let model = tract_onnx::onnx().model_for_path(fp32).map_err(err)?;
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
        let n = samples.len();
        let mut m = model.clone();
        m = m
            .with_input_fact(0, f32::fact([1, n]).into())
            .map_err(err)?;
        if info.uses_attention_mask {
            m = m
                .with_input_fact(1, i64::fact([1, n]).into())
                .map_err(err)?;
        }
        m = m.with_outputs_by_name(names).map_err(err)?;
        let plan = m
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(err)?;
        let mut inputs: TVec<TValue> =
            tvec!(tract_onnx::prelude::Tensor::from_shape(&[1, n], &samples)
                .map_err(err)?
                .into());
        if info.uses_attention_mask {
            let mask = vec![1i64; n];
            inputs.push(
                tract_onnx::prelude::Tensor::from_shape(&[1, n], &mask)
                    .map_err(err)?
                    .into(),
            );
        }
        let outs = plan.run(inputs).map_err(err)?;
        for (h, o) in hists.iter_mut().zip(outs.iter()) {
            let v = o.to_plain_array_view::<f32>().map_err(err)?;
            match v.as_slice() {
                Some(s) => h.add(s),
                None => h.add(&v.iter().copied().collect::<Vec<_>>()),
            }
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
        let amax = h.percentile(PERCENTILE);
        scales.insert(name.clone(), if amax > 0.0 { amax / 127.0 } else { 1.0 });
    }
    let how = format!(
        "per-tensor symmetric, {PERCENTILE}th percentile of |x| over {} ({used} clips)",
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
}
