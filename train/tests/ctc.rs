//! CTC loss and gradient against `torch.nn.functional.ctc_loss(zero_infinity=True)`
//! (references from tools/fixtures/gen_ctc_cases.py, computed in float64).

use safetensors::{Dtype, SafeTensors};
use w2v_test_support::{assert_close, Tier};
use w2v_train::ctc::{ctc_loss, LogitsView, Reduction};

/// Largest allowed |ours − torch| for losses and gradient entries: float32 against torch's
/// float64 reference.
const TIER: Tier = Tier::F32VsF64;
const TOLERANCE: f64 = TIER.f64();

const CASES: &[&str] = &[
    "simple",
    "repeats",
    "random_repeats",
    "blanks_only",
    "infeasible",
    "tight",
    "blank_last",
    "long",
];

fn f64s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F64, "{name}");
    let data = t
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), data)
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::I64, "{name}");
    let data = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), data)
}

#[test]
fn loss_and_gradient_match_pytorch() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ctc_cases.safetensors"
    ))
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut saw_infeasible = false;
    for case in CASES {
        let (shape, logits64) = f64s(&st, &format!("{case}.logits"));
        let logits: Vec<f32> = logits64.iter().map(|&v| v as f32).collect();
        assert!(logits.iter().zip(&logits64).all(|(&a, &b)| a as f64 == b));
        let (batch, frames, vocab) = (shape[0], shape[1], shape[2]);
        let input_lengths: Vec<usize> = i64s(&st, &format!("{case}.input_lengths"))
            .1
            .iter()
            .map(|&v| v as usize)
            .collect();
        let (tshape, tflat) = i64s(&st, &format!("{case}.targets"));
        let targets: Vec<Vec<usize>> = tflat
            .chunks(tshape[1])
            .map(|r| r.iter().filter(|&&v| v >= 0).map(|&v| v as usize).collect())
            .collect();
        let blank = i64s(&st, &format!("{case}.blank")).1[0] as usize;
        let view = LogitsView {
            data: &logits,
            batch,
            frames,
            vocab,
        };
        let (_, losses_ref) = f64s(&st, &format!("{case}.losses_none"));
        for (reduction, name) in [(Reduction::Mean, "mean"), (Reduction::Sum, "sum")] {
            let r = ctc_loss(view, &input_lengths, &targets, blank, reduction).unwrap();
            let loss_ref = f64s(&st, &format!("{case}.loss_{name}")).1[0];
            let (_, grad_ref) = f64s(&st, &format!("{case}.grad_{name}"));
            assert!(
                (r.loss - loss_ref).abs() <= TOLERANCE,
                "{case} {name}: loss {} vs torch {loss_ref}",
                r.loss
            );
            for (b, (&l, &lr)) in r.losses.iter().zip(&losses_ref).enumerate() {
                assert!(
                    (l - lr).abs() <= TOLERANCE,
                    "{case} row {b}: loss {l} vs torch {lr}"
                );
                assert_eq!(
                    r.infeasible.contains(&b),
                    lr == 0.0 && !targets[b].is_empty()
                );
            }
            saw_infeasible |= !r.infeasible.is_empty();
            assert_close(&format!("{case} {name}: grad"), &r.grad, &grad_ref, TIER);
            assert!(
                grad_ref.iter().any(|&g| g.abs() > 1e-3),
                "{case}: trivial reference"
            );
        }
    }
    assert!(saw_infeasible, "no case exercised an infeasible target");
}
