//! The committed fixture checkpoints and their PyTorch reference cases, shared by the parity and
//! quantization tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use w2v_engine::Batch;
use w2v_test_support::{assert_close, Tier};

/// The fixture variant folders (tools/fixtures/wav2vec2/*), sorted.
pub fn fixtures() -> Vec<PathBuf> {
    w2v_test_support::paths::wav2vec2_fixtures()
}

/// One reference input and the logits PyTorch computed for it.
pub struct Case {
    pub name: String,
    pub input: Vec<f32>,
    pub shape: Vec<usize>,
    pub lengths: Vec<usize>,
    pub logits: Vec<f32>,
    pub logits_shape: Vec<usize>,
}

impl Case {
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            samples: &self.input,
            batch: self.shape[0],
            len: self.shape[1],
            lengths: &self.lengths,
        }
    }
}

fn f32s(st: &SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

/// The reference cases of a fixture folder (references.safetensors), sorted by name.
pub fn cases(dir: &Path) -> Vec<Case> {
    let bytes = std::fs::read(dir.join("references.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st
        .names()
        .iter()
        .filter_map(|n| n.strip_suffix(".logits").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let (input, shape) = f32s(&st, &format!("{name}.input_values"));
            let (logits, logits_shape) = f32s(&st, &format!("{name}.logits"));
            let lengths = match st.tensor(&format!("{name}.attention_mask")) {
                Ok(m) => m
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>()
                    .chunks(shape[1])
                    .map(|row| row.iter().sum::<i64>() as usize)
                    .collect(),
                Err(_) => vec![shape[1]; shape[0]],
            };
            Case {
                name,
                input,
                shape,
                lengths,
                logits,
                logits_shape,
            }
        })
        .collect()
}

/// Tolerance: max |logit difference| within [`Tier::Fp32Graph`] (1e-4; logits are O(10): this is
/// float32 reordering noise, far below any real error), and identical argmax on every frame whose
/// reference top-2 margin exceeds `TIE_MARGIN` (closer frames are ties within the tolerance).
pub const TIER: Tier = Tier::Fp32Graph;
/// Twice the [`TIER`] bound: two logits closer than this may swap places within it.
pub const TIE_MARGIN: f32 = 2e-4;

/// Check logits against a reference case (shape, max |diff|, argmax off ties); returns the max
/// |diff|.
pub fn compare(what: &str, case: &Case, got: &w2v_engine::Logits) -> f32 {
    assert_eq!(
        vec![got.batch, got.frames, got.vocab],
        case.logits_shape,
        "{what}/{}: logits shape",
        case.name
    );
    let max_diff = assert_close(
        &format!("{what}/{}", case.name),
        &got.data,
        &case.logits,
        TIER,
    )
    .diff as f32;
    let v = got.vocab;
    for (f, (row, reference)) in got.data.chunks(v).zip(case.logits.chunks(v)).enumerate() {
        let mut sorted = reference.to_vec();
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        if sorted[0] - sorted[1] <= TIE_MARGIN {
            continue;
        }
        let argmax = |r: &[f32]| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
                .unwrap()
                .0
        };
        assert_eq!(
            argmax(row),
            argmax(reference),
            "{what}/{}: argmax at frame {f}",
            case.name
        );
    }
    eprintln!("{what}/{}: max |diff| {max_diff:.2e}", case.name);
    max_diff
}
