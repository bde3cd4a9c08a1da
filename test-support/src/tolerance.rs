//! Tolerance tiers: one name per kind of numeric comparison, so that a test says what it compares
//! (and a reader sees which bound it shares with which other test) instead of a bare `1e-4`.
//!
//! Each tier is a bound on max |got − want| over all elements, unless the test says it uses it
//! relatively. A test whose bound differs from its tier's keeps its own named constant, with a
//! comment saying why.

use std::fmt;

/// How closely two computations of the same numbers must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// `1e-6`: the same float32 operations in another order or implementation, on O(1) values: a
    /// few float32 ulps (e.g. AdamW updates against torch.optim.AdamW).
    ExactF32,
    /// `1e-5`: a float32 computation against a float64 reference of the same algorithm, on O(1)
    /// values (e.g. the CTC loss and its gradient against torch's float64 `ctc_loss`).
    F32VsF64,
    /// `1e-4`: a float32 graph against reference outputs (PyTorch's logits, or tract against ONNX
    /// Runtime). Logits are O(10): this is float32 reordering noise, far below any real error.
    Fp32Graph,
    /// `1e-2`: an fp16 graph in ONNX Runtime against the float32 reference logits.
    Fp16,
    /// `3e-2`: an fp16 graph in tract against the float32 reference logits. tract computes float16
    /// less accurately than ONNX Runtime (about 0.015 max |diff| on the fixtures, where ONNX
    /// Runtime gives 0.005), so its bound is looser than [`Tier::Fp16`].
    Fp16Tract,
}

impl Tier {
    /// The bound, as float64.
    pub const fn f64(self) -> f64 {
        match self {
            Tier::ExactF32 => 1e-6,
            Tier::F32VsF64 => 1e-5,
            Tier::Fp32Graph => 1e-4,
            Tier::Fp16 => 1e-2,
            Tier::Fp16Tract => 3e-2,
        }
    }

    /// The bound, as float32.
    pub const fn f32(self) -> f32 {
        self.f64() as f32
    }

    /// The tier's name in messages.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::ExactF32 => "exact-f32",
            Tier::F32VsF64 => "f32-vs-f64",
            Tier::Fp32Graph => "fp32-graph",
            Tier::Fp16 => "fp16",
            Tier::Fp16Tract => "fp16-tract",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:e})", self.name(), self.f64())
    }
}

/// Reduced-precision agreement bounds: the percentage of frames whose argmax (the decoded token)
/// must match the float32 reference's.
pub mod agreement {
    /// fp16 exports, in ONNX Runtime and tract: ≥ 99 % of all frames.
    pub const FP16_ARGMAX_PERCENT: f64 = 99.0;
    /// int8 exports (default calibration, feature encoder in float): ≥ 97 % of the confident
    /// frames, those whose reference top-2 margin exceeds [`CONFIDENT_MARGIN`].
    pub const INT8_ARGMAX_PERCENT: f64 = 97.0;
    /// A frame is confident when its reference logits' top-2 margin exceeds this; closer frames
    /// are near-ties that any rounding may flip.
    pub const CONFIDENT_MARGIN: f32 = 0.1;
}

/// The element where two arrays differ most.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Worst {
    /// Its index (0 when the arrays are empty).
    pub index: usize,
    pub got: f64,
    pub want: f64,
    /// |got − want| (0 when the arrays are empty; infinite where one side is NaN and the other
    /// is not).
    pub diff: f64,
}

impl fmt::Display for Worst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max |diff| {:.3e} at [{}]: got {}, want {}",
            self.diff, self.index, self.got, self.want
        )
    }
}

/// The element where `got` and `want` differ most; panics if their lengths differ. Accepts any
/// mix of float32 and float64 (compared in float64). A NaN on one side only counts as an
/// infinite difference, so it never passes a tolerance.
pub fn max_abs_diff<A, B>(got: &[A], want: &[B]) -> Worst
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    assert_eq!(got.len(), want.len(), "compared arrays differ in length");
    let mut worst = Worst {
        index: 0,
        got: got.first().map_or(0.0, |&g| g.into()),
        want: want.first().map_or(0.0, |&w| w.into()),
        diff: 0.0,
    };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w): (f64, f64) = (g.into(), w.into());
        let diff = if g.is_nan() && w.is_nan() {
            0.0
        } else if g.is_nan() || w.is_nan() {
            f64::INFINITY
        } else {
            (g - w).abs()
        };
        if diff > worst.diff {
            worst = Worst {
                index: i,
                got: g,
                want: w,
                diff,
            };
        }
    }
    worst
}

/// Assert that `got` matches `want` within `tier` (max |diff| ≤ the tier's bound); the message
/// names `what`, the tier and the worst element. Returns the worst element.
#[track_caller]
pub fn assert_close<A, B>(what: &str, got: &[A], want: &[B], tier: Tier) -> Worst
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    let worst = max_abs_diff(got, want);
    assert!(
        worst.diff <= tier.f64(),
        "{what}: {worst}, over the {tier} tolerance"
    );
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_keep_their_values_in_both_widths() {
        let want = [
            (Tier::ExactF32, 1e-6, 1e-6f32),
            (Tier::F32VsF64, 1e-5, 1e-5f32),
            (Tier::Fp32Graph, 1e-4, 1e-4f32),
            (Tier::Fp16, 1e-2, 1e-2f32),
            (Tier::Fp16Tract, 3e-2, 3e-2f32),
        ];
        for (tier, f64_bound, f32_bound) in want {
            assert_eq!(tier.f64(), f64_bound, "{tier}");
            assert_eq!(tier.f32(), f32_bound, "{tier}");
        }
        assert_eq!(Tier::Fp32Graph.to_string(), "fp32-graph (1e-4)");
    }

    #[test]
    fn the_worst_element_is_reported() {
        let w = max_abs_diff(&[1.0f32, 2.0, 3.0], &[1.0f64, 2.5, 2.9]);
        assert_eq!((w.index, w.got, w.want, w.diff), (1, 2.0, 2.5, 0.5));
        assert!(w.to_string().contains("at [1]"), "{w}");
        let empty: [f32; 0] = [];
        assert_eq!(max_abs_diff(&empty, &empty).diff, 0.0);
        let nan = max_abs_diff(&[1.0f32, f32::NAN], &[1.0f32, 0.0]);
        assert_eq!((nan.index, nan.diff), (1, f64::INFINITY));
        assert_eq!(max_abs_diff(&[f32::NAN], &[f32::NAN]).diff, 0.0);
    }

    #[test]
    fn assert_close_passes_within_and_fails_over_the_tier() {
        assert_close("ok", &[1.0f32, 2.0], &[1.0f32, 2.00005], Tier::Fp32Graph);
        let failed = std::panic::catch_unwind(|| {
            assert_close("bad", &[1.0f32, 2.0], &[1.0f32, 2.001], Tier::Fp32Graph)
        });
        let msg = *failed.unwrap_err().downcast::<String>().unwrap();
        assert!(
            msg.contains("bad: max |diff|") && msg.contains("at [1]"),
            "{msg}"
        );
        assert!(msg.contains("fp32-graph"), "{msg}");
    }
}
