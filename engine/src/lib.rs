//! w2v runtime: the audio front end, inference backends and CTC decoding.
//!
//! This crate depends on none of the other w2v crates; the exporter and trainer build on it.

pub mod audio;
pub mod backend;
pub mod beam;
pub mod bench;
pub mod config;
pub mod ctc;
pub mod fs;
pub mod grammar;
pub mod hotwords;
pub mod lexicon;
pub mod listen;
pub mod lm;
pub mod manifest;
pub mod metrics;
pub mod model_info;
pub mod npy;
pub mod onnx_pb;
pub mod precision;
pub mod rng;
pub mod speech_gate;

pub use backend::{Backend, BackendError, BackendOptions, Batch, Logits};
pub use model_info::ModelInfo;
pub use precision::{Precision, QuantizationTarget};
pub mod transcriber;
pub mod vad;
