//! CTC loss and its gradient with respect to the logits (Graves et al. 2006).
//!
//! The loss is computed from pre-softmax logits: a log-softmax per frame, then the log-space
//! forward (α) and backward (β) recursions over the target with blanks interleaved
//! (`b l₁ b l₂ … b`). With α including the emission at frame t and β excluding it,
//! `log p(target | x) = logsumexp_s(α_t(s) + β_t(s))` for every t, and the gradient of
//! `-log p` with respect to the logit `z_t(k)` is `softmax_t(k) − Σ_{s: label(s)=k} γ_t(s)` with
//! `γ_t(s) = exp(α_t(s) + β_t(s) − log p)`, the posterior of being in state s at frame t.
//!
//! Semantics follow `torch.nn.functional.ctc_loss(..., zero_infinity=True)` on
//! `log_softmax(logits)`: a target that no alignment can produce (too few frames for its labels
//! plus a blank between each repeated pair) has loss 0 and gradient 0, frames past a row's input
//! length get gradient 0, and [`Reduction::Mean`] divides each row's loss by its target length
//! (at least 1) before averaging over the batch. Everything is computed in f64.

/// How per-row losses are combined into the loss the gradient is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Σ_b loss_b / max(1, target_len_b), divided by the batch size (PyTorch's `'mean'`).
    Mean,
    /// Σ_b loss_b (PyTorch's `'sum'`).
    Sum,
}

/// The logits of a batch: `data[b][t][v]`, row-major, `frames` per row (padded rows included).
#[derive(Clone, Copy, Debug)]
pub struct LogitsView<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub frames: usize,
    pub vocab: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CtcError {
    #[error("logits hold {got} values, expected {batch}×{frames}×{vocab}")]
    Shape {
        got: usize,
        batch: usize,
        frames: usize,
        vocab: usize,
    },
    #[error("{what} has {got} rows for a batch of {batch}")]
    Rows {
        what: &'static str,
        got: usize,
        batch: usize,
    },
    #[error("row {row}: input length {len} exceeds the {frames} frames of the logits")]
    InputLength {
        row: usize,
        len: usize,
        frames: usize,
    },
    #[error("row {row}: label {label} is outside the vocabulary of {vocab} or is the blank")]
    Label {
        row: usize,
        label: usize,
        vocab: usize,
    },
    #[error("blank {blank} is outside the vocabulary of {vocab}")]
    Blank { blank: usize, vocab: usize },
}

/// The result of [`ctc_loss`].
#[derive(Clone, Debug, PartialEq)]
pub struct CtcLoss {
    /// The reduced loss.
    pub loss: f64,
    /// `-log p(target_b | x_b)` per row, 0 where the target is infeasible.
    pub losses: Vec<f64>,
    /// Rows whose target is infeasible (loss and gradient zeroed).
    pub infeasible: Vec<usize>,
    /// d loss / d logits, shaped like the logits.
    pub grad: Vec<f32>,
}

/// CTC loss of `targets` (one label sequence per row, without blanks) given `logits`, of which
/// row b's first `input_lengths[b]` frames are valid.
pub fn ctc_loss(
    logits: LogitsView<'_>,
    input_lengths: &[usize],
    targets: &[Vec<usize>],
    blank: usize,
    reduction: Reduction,
) -> Result<CtcLoss, CtcError> {
    let LogitsView {
        data,
        batch,
        frames,
        vocab,
    } = logits;
    if data.len() != batch * frames * vocab {
        return Err(CtcError::Shape {
            got: data.len(),
            batch,
            frames,
            vocab,
        });
    }
    for (what, got) in [
        ("input_lengths", input_lengths.len()),
        ("targets", targets.len()),
    ] {
        if got != batch {
            return Err(CtcError::Rows { what, got, batch });
        }
    }
    if blank >= vocab {
        return Err(CtcError::Blank { blank, vocab });
    }
    let mut losses = vec![0f64; batch];
    let mut infeasible = Vec::new();
    let mut grad = vec![0f32; data.len()];
    for b in 0..batch {
        let len = input_lengths[b];
        if len > frames {
            return Err(CtcError::InputLength {
                row: b,
                len,
                frames,
            });
        }
        if let Some(&label) = targets[b].iter().find(|&&l| l >= vocab || l == blank) {
            return Err(CtcError::Label {
                row: b,
                label,
                vocab,
            });
        }
        let scale = match reduction {
            Reduction::Sum => 1.0,
            Reduction::Mean => 1.0 / (targets[b].len().max(1) as f64 * batch as f64),
        };
        let row = &data[b * frames * vocab..(b * frames + len) * vocab];
        let g = &mut grad[b * frames * vocab..(b * frames + len) * vocab];
        match row_loss(row, vocab, &targets[b], blank, scale, g) {
            Some(l) => losses[b] = l,
            None => infeasible.push(b),
        }
    }
    let loss = match reduction {
        Reduction::Sum => losses.iter().sum(),
        Reduction::Mean => {
            losses
                .iter()
                .zip(targets)
                .map(|(l, t)| l / t.len().max(1) as f64)
                .sum::<f64>()
                / batch.max(1) as f64
        }
    };
    Ok(CtcLoss {
        loss,
        losses,
        infeasible,
        grad,
    })
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// One row: `logits` is `[T, V]` (valid frames only). Writes `scale · d(-log p)/d logits` into
/// `grad` and returns `-log p`, or `None` (gradient left at 0) when the target is infeasible.
fn row_loss(
    logits: &[f32],
    vocab: usize,
    target: &[usize],
    blank: usize,
    scale: f64,
    grad: &mut [f32],
) -> Option<f64> {
    let t_len = logits.len() / vocab;
    let s_len = 2 * target.len() + 1;
    let label = |s: usize| {
        if s.is_multiple_of(2) {
            blank
        } else {
            target[s / 2]
        }
    };
    // Skipping a blank (s-2 → s) is allowed when label(s) is not blank and differs from label(s-2).
    let can_skip = |s: usize| s >= 2 && !s.is_multiple_of(2) && label(s) != label(s - 2);

    // Log-softmax, f64.
    let mut logp = vec![0f64; t_len * vocab];
    for t in 0..t_len {
        let z = &logits[t * vocab..(t + 1) * vocab];
        let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        for (o, &v) in logp[t * vocab..(t + 1) * vocab].iter_mut().zip(z) {
            *o = v as f64 - lse;
        }
    }
    if t_len == 0 {
        // No frames: only the empty target has probability (1) of being produced.
        return target.is_empty().then_some(0.0);
    }

    let ninf = f64::NEG_INFINITY;
    let mut alpha = vec![ninf; t_len * s_len];
    alpha[0] = logp[blank];
    if s_len > 1 {
        alpha[1] = logp[label(1)];
    }
    for t in 1..t_len {
        for s in 0..s_len {
            let prev = &alpha[(t - 1) * s_len..t * s_len];
            let mut a = prev[s];
            if s >= 1 {
                a = log_add(a, prev[s - 1]);
            }
            if can_skip(s) {
                a = log_add(a, prev[s - 2]);
            }
            alpha[t * s_len + s] = if a == ninf {
                ninf
            } else {
                a + logp[t * vocab + label(s)]
            };
        }
    }
    let last = &alpha[(t_len - 1) * s_len..];
    let log_p = if s_len > 1 {
        log_add(last[s_len - 1], last[s_len - 2])
    } else {
        last[0]
    };
    if log_p == ninf {
        return None;
    }

    // β_t(s): log-probability of emitting the rest of the target after frame t, from state s.
    let mut beta = vec![ninf; t_len * s_len];
    beta[(t_len - 1) * s_len + s_len - 1] = 0.0;
    if s_len > 1 {
        beta[(t_len - 1) * s_len + s_len - 2] = 0.0;
    }
    for t in (0..t_len - 1).rev() {
        for s in 0..s_len {
            let next = |s2: usize| beta[(t + 1) * s_len + s2] + logp[(t + 1) * vocab + label(s2)];
            let mut b = next(s);
            if s + 1 < s_len {
                b = log_add(b, next(s + 1));
            }
            if s + 2 < s_len && can_skip(s + 2) {
                b = log_add(b, next(s + 2));
            }
            beta[t * s_len + s] = b;
        }
    }

    // grad = scale · (softmax − Σ_{s: label(s)=k} γ_t(s)).
    let mut occupancy = vec![ninf; vocab];
    for t in 0..t_len {
        occupancy.fill(ninf);
        for s in 0..s_len {
            let k = label(s);
            occupancy[k] = log_add(occupancy[k], alpha[t * s_len + s] + beta[t * s_len + s]);
        }
        for k in 0..vocab {
            let p = logp[t * vocab + k].exp();
            let gamma = (occupancy[k] - log_p).exp();
            grad[t * vocab + k] = (scale * (p - gamma)) as f32;
        }
    }
    Some(-log_p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_frame_single_label_is_minus_log_prob() {
        // One frame, target [1]: p = softmax(z)[1].
        let z = [0.5f32, 2.0, -1.0];
        let view = LogitsView {
            data: &z,
            batch: 1,
            frames: 1,
            vocab: 3,
        };
        let r = ctc_loss(view, &[1], &[vec![1]], 0, Reduction::Sum).unwrap();
        let lse = z.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((r.loss - (lse - 2.0)).abs() < 1e-12);
    }

    #[test]
    fn bad_labels_are_errors() {
        let z = [0f32; 6];
        let view = LogitsView {
            data: &z,
            batch: 1,
            frames: 2,
            vocab: 3,
        };
        let e = ctc_loss(view, &[2], &[vec![0]], 0, Reduction::Sum).unwrap_err();
        assert_eq!(
            e,
            CtcError::Label {
                row: 0,
                label: 0,
                vocab: 3
            }
        );
        assert!(ctc_loss(view, &[3], &[vec![1]], 0, Reduction::Sum).is_err());
        assert!(ctc_loss(view, &[2], &[vec![3]], 0, Reduction::Sum).is_err());
    }
}
