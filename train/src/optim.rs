//! AdamW, the wav2vec 2.0 tri-stage learning-rate schedule, and gradient-norm clipping.

/// AdamW hyper-parameters (PyTorch's `torch.optim.AdamW` semantics and defaults, except the
/// weight decay, which fine-tuning recipes set explicitly).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW state: first and second moments per parameter element, and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for parameters of the given sizes.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> Self {
        AdamW {
            config,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of every parameter with learning rate `lr`: decoupled weight decay
    /// `p ← p·(1 − lr·wd)`, then `p ← p − lr·m̂/(√v̂ + eps)` with bias-corrected moments,
    /// computed in float32 the way `torch.optim.AdamW` computes it (so it vectorizes).
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        let all = vec![true; params.len()];
        let since = vec![0; params.len()];
        self.update_some(params, grads, lr, &all, &since);
    }

    /// [`AdamW::update`] of the parameters `i` with `train[i]` only (the others keep their
    /// values and moments, as PyTorch skips parameters without a gradient). Parameter `i`
    /// started training after `since[i]` updates: its bias correction uses its own step count,
    /// `step − since[i]`, like PyTorch's per-parameter state.
    pub fn update_some(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Vec<f32>],
        lr: f64,
        train: &[bool],
        since: &[u64],
    ) {
        self.step += 1;
        let c = self.config;
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let (b1, b2, eps) = (c.beta1 as f32, c.beta2 as f32, c.eps as f32);
        for (i, (((p, g), m), v)) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
            .enumerate()
        {
            if !train[i] {
                continue;
            }
            let t = self.step.saturating_sub(since[i]).max(1) as i32;
            // PyTorch's single-tensor AdamW, in float32 as it computes: decay, lerp of the
            // first moment, second moment, then p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps).
            let step_size = (lr / (1.0 - c.beta1.powi(t))) as f32;
            let bc2_sqrt = ((1.0 - c.beta2.powi(t)).sqrt()) as f32;
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *p *= decay;
                *m += (g - *m) * (1.0 - b1);
                *v = *v * b2 + g * g * (1.0 - b2);
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        }
    }
}

/// The tri-stage schedule of the wav2vec 2.0 paper (fairseq's `tri_stage`): linear warm-up from
/// `init_scale·peak` to `peak`, a hold at `peak`, then exponential decay to `final_scale·peak`,
/// which is kept afterwards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriStage {
    pub peak: f64,
    pub warmup_steps: u64,
    pub hold_steps: u64,
    pub decay_steps: u64,
    pub init_scale: f64,
    pub final_scale: f64,
}

impl TriStage {
    /// The paper's split of `total` updates: 10% warm-up, 40% hold, 50% decay, from 0.01·peak
    /// to 0.05·peak.
    pub fn paper(peak: f64, total: u64) -> Self {
        let warmup_steps = total / 10;
        let hold_steps = total * 4 / 10;
        TriStage {
            peak,
            warmup_steps,
            hold_steps,
            decay_steps: total - warmup_steps - hold_steps,
            init_scale: 0.01,
            final_scale: 0.05,
        }
    }

    /// The learning rate of update number `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        let init = self.init_scale * self.peak;
        if step < self.warmup_steps {
            return init + (self.peak - init) * step as f64 / self.warmup_steps as f64;
        }
        let step = step - self.warmup_steps;
        if step < self.hold_steps {
            return self.peak;
        }
        let step = step - self.hold_steps;
        if step <= self.decay_steps && self.decay_steps > 0 {
            let factor = -self.final_scale.ln() / self.decay_steps as f64;
            return self.peak * (-factor * step as f64).exp();
        }
        self.final_scale * self.peak
    }
}

/// Scale `grads` so that their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    // float64 partial sums in 8 lanes: exact enough for millions of terms, and vectorizable
    let mut lanes = [0f64; 8];
    let mut tail = 0f64;
    for g in grads.iter() {
        let chunks = g.chunks_exact(8);
        for &x in chunks.remainder() {
            tail += x as f64 * x as f64;
        }
        for c in chunks {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += x as f64 * x as f64;
            }
        }
    }
    let norm = (lanes.iter().sum::<f64>() + tail).sqrt();
    let scale = max_norm / (norm + 1e-6);
    if scale < 1.0 {
        let s = scale as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_parameters_keep_values_and_late_starters_count_their_own_steps() {
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let grads = |k: usize| vec![vec![0.5 - 0.1 * k as f32, 1.0], vec![0.3 * k as f32 - 0.2]];
        // parameter 1 frozen for 3 updates, then trained with its own step count
        let mut a = AdamW::new(cfg, &[2, 1]);
        let mut pa = vec![vec![1.0f32, -1.0], vec![2.0f32]];
        // reference: parameter 1 alone in a fresh optimizer from update 4 on
        let mut b = AdamW::new(cfg, &[1]);
        let mut pb = vec![vec![2.0f32]];
        for k in 0..6 {
            let frozen = k < 3;
            a.update_some(&mut pa, &grads(k), 1e-2, &[true, !frozen], &[0, 3]);
            if frozen {
                assert_eq!(pa[1], vec![2.0]);
                assert_eq!(a.m[1], vec![0.0]);
            } else {
                b.update(&mut pb, &[grads(k)[1].clone()], 1e-2);
                assert_eq!(pa[1], pb[0], "update {k}");
            }
        }
        assert_eq!(a.step, 6);
    }

    #[test]
    fn tri_stage_phases() {
        let s = TriStage::paper(1e-4, 100);
        assert_eq!((s.warmup_steps, s.hold_steps, s.decay_steps), (10, 40, 50));
        assert!((s.lr(0) - 1e-6).abs() < 1e-15);
        assert!((s.lr(5) - (1e-6 + (1e-4 - 1e-6) * 0.5)).abs() < 1e-15);
        assert_eq!(s.lr(10), 1e-4);
        assert_eq!(s.lr(49), 1e-4);
        assert!((s.lr(100) - 5e-6).abs() < 1e-15);
        assert_eq!(s.lr(1000), 5e-6);
        // Monotone decay.
        assert!((50..100).all(|t| s.lr(t + 1) < s.lr(t)));
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![vec![3.0f32, 0.0], vec![4.0]];
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
        let mut small = vec![vec![0.1f32]];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small[0][0], 0.1);
    }
}
