//! On-device CTC fine-tuning: the CTC loss and its gradient, and reverse-mode differentiation of
//! the exporter's ONNX graphs.

pub mod autodiff;
pub mod checkpoint;
pub mod ctc;
pub mod data;
pub mod gradients;
pub mod optim;
pub mod parameters;
pub mod regularize;
pub mod rng;
pub mod trainer;
