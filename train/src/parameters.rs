//! Which initializers of an exported model are trainable parameters.
//!
//! The exporter (export/src/wav2vec2.rs) names every weight after its checkpoint tensor
//! (`encoder.layers.0.attention.q_proj.weight.T`, `lm_head.bias`, …) and stores every constant it
//! adds itself (epsilons, GELU coefficients, the mask fill value) as a 0-D scalar, and shapes and
//! axes as int64. So the parameters are exactly the float32 initializers of rank ≥ 1.

use w2v_engine::onnx_pb::{data_type, TensorProto};

/// The checkpoint scope of the convolutional feature encoder, frozen by default when
/// fine-tuning (as in the wav2vec 2.0 paper and transformers' `freeze_feature_encoder`).
pub const FEATURE_ENCODER_SCOPE: &str = "feature_extractor.";

/// Whether `t` is a model weight (as opposed to a constant the exporter added).
pub fn is_weight(t: &TensorProto) -> bool {
    t.data_type == data_type::FLOAT && !t.dims.is_empty()
}

/// Whether the weight named `name` belongs to the feature encoder (with or without the
/// checkpoint's `wav2vec2.` prefix).
pub fn in_feature_encoder(name: &str) -> bool {
    name.strip_prefix("wav2vec2.")
        .unwrap_or(name)
        .starts_with(FEATURE_ENCODER_SCOPE)
}

/// Whether `t` is trained: a weight, outside the feature encoder when that is frozen, and not a
/// constant the training instrumentation added ([`crate::regularize`]).
pub fn is_trainable(t: &TensorProto, freeze_feature_encoder: bool) -> bool {
    is_weight(t)
        && !(freeze_feature_encoder && in_feature_encoder(&t.name))
        && !crate::regularize::is_instrumentation(&t.name)
}

/// Whether the weight named `name` belongs to the CTC head (`lm_head.*`), the only part that
/// trains while the Transformer is frozen for the first updates.
pub fn in_ctc_head(name: &str) -> bool {
    name.starts_with("lm_head.")
}
