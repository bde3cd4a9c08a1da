//! The ONNX Runtime backend, through the `ort` crate.
//!
//! ONNX Runtime is not linked at build time: its shared library is loaded once per process, the
//! first time this backend is used, from the path [`find_ort_library`] picks. Every failure to find
//! or load it becomes [`BackendError::OrtLibrary`](crate::backend::BackendError::OrtLibrary), whose
//! message says how to fix it; nothing here panics because the library is missing or broken.
//!
//! ONNX Runtime handles dynamic input shapes itself, so unlike tract there is one session per
//! model, whatever the batch shape.
//!
//! The module is split at its seams: `options` spells what a session is made with, `session`
//! makes sessions and runs them ([`OrtBackend`], [`OrtGraph`]), and `library` finds and loads the
//! shared library and asks it what it offers. All of the backend's `unsafe` code (`dlopen` and
//! raw ONNX Runtime C API calls) is in `library`; the other modules forbid it.

mod library;
#[forbid(unsafe_code)]
mod options;
#[forbid(unsafe_code)]
mod session;

pub use library::{
    find_ort_library, find_ort_library_in, ort_available_providers, ort_library, ort_version,
};
pub use options::{ExecutionProvider, OptLevel, OrtOptions, TensorRtOptions};
pub use session::{OrtBackend, OrtGraph};

const NAME: &str = "ort";

/// Name of the model's audio input, `[batch, samples]` f32.
pub const INPUT_VALUES: &str = "input_values";
/// Name of the model's optional mask input, `[batch, samples]` i64 (1 = valid, 0 = padding).
pub const ATTENTION_MASK: &str = "attention_mask";
/// Name of the model's output, `[batch, frames, vocab]` f32.
pub const LOGITS: &str = "logits";

/// The environment variable naming the ONNX Runtime shared library to load.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
