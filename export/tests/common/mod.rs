//! The committed fixture checkpoints and their PyTorch reference cases, shared by the parity and
//! quantization tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use w2v_engine::Batch;

/// The fixture variant folders (tools/fixtures/wav2vec2/*), sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fixtures/wav2vec2");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    v.sort();
    assert_eq!(
        v.len(),
        4,
        "expected the four fixture variants in {}",
        root.display()
    );
    v
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
