//! Inference backends: one trait, one implementation per runtime.
//!
//! Only the binary chooses which backend (and which execution providers) to use; everything else
//! works through [`Backend`].

use std::path::PathBuf;

use crate::model_info::ModelInfo;

#[cfg(feature = "ort")]
pub mod ort;
pub mod runner;
pub mod tract;

pub use runner::{GraphRunner, HostTensor, TensorData, TensorView, TensorViewData};

/// A batch of model inputs: `batch` rows of `len` samples each, row-major, already normalized as
/// the model expects. `lengths[i]` is the number of valid (unpadded) samples in row `i`.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub samples: &'a [f32],
    pub batch: usize,
    pub len: usize,
    pub lengths: &'a [usize],
}

impl<'a> Batch<'a> {
    /// A batch of one unpadded row.
    pub fn single(samples: &'a [f32], lengths: &'a [usize]) -> Self {
        debug_assert_eq!(lengths.len(), 1);
        Batch {
            samples,
            batch: 1,
            len: samples.len(),
            lengths,
        }
    }
}

/// Model output: `logits[b][t][v]`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub batch: usize,
    pub frames: usize,
    pub vocab: usize,
}

impl Logits {
    /// The `[frames, vocab]` logits of one batch row.
    pub fn row(&self, b: usize) -> &[f32] {
        let n = self.frames * self.vocab;
        &self.data[b * n..(b + 1) * n]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The file is not a w2v model (its metadata names the file).
    #[error(transparent)]
    Model(#[from] crate::model_info::ModelInfoError),
    #[error("{path}: cannot load model with {backend}: {reason}")]
    Load {
        backend: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{backend}: inference failed: {reason}")]
    Run {
        backend: &'static str,
        reason: String,
    },
    #[error("ONNX Runtime library not available: {reason}")]
    OrtLibrary { reason: String },
}

/// Options shared by every backend.
#[derive(Clone, Debug, Default)]
pub struct BackendOptions {
    /// Intra-op threads; `None` lets the runtime decide.
    pub threads: Option<usize>,
}

/// A loaded model that turns a batch of audio into CTC logits.
pub trait Backend {
    /// A short name for logs and reports ("tract", "ort").
    fn name(&self) -> &'static str;
    /// The model's self-description.
    fn info(&self) -> &ModelInfo;
    /// Run the model. Rows shorter than `batch.len` are padded (with zeros) by the caller.
    fn run(&mut self, batch: &Batch<'_>) -> Result<Logits, BackendError>;
}

/// The attention mask for a padded batch: 1 for valid samples, 0 for padding.
pub fn attention_mask(batch: &Batch<'_>) -> Vec<i64> {
    let mut mask = vec![0i64; batch.batch * batch.len];
    for (b, &n) in batch.lengths.iter().enumerate() {
        mask[b * batch.len..b * batch.len + n.min(batch.len)].fill(1);
    }
    mask
}

/// A backend behind a pointer is a backend: boxed (`Box<dyn Backend + Send>`, what the runtime
/// opens) or borrowed (a [`crate::listen::Listener`] running on a model something else owns).
macro_rules! forward_backend {
    ($($ptr:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ptr {
            fn name(&self) -> &'static str {
                (**self).name()
            }

            fn info(&self) -> &ModelInfo {
                (**self).info()
            }

            fn run(&mut self, batch: &Batch<'_>) -> Result<Logits, BackendError> {
                (**self).run(batch)
            }
        }
    )*};
}

forward_backend!(Box<B>, &mut B);
