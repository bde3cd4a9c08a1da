//! The wav2vec 2.0 fine-tuning regularization: SpecAugment-style masking of the Transformer input
//! (Baevski et al. 2020, §3.1 and §5; transformers' `Wav2Vec2Model._mask_hidden_states`).
//!
//! *Time masking* replaces spans of `time_length` frames of the projected features with the
//! model's learned `masked_spec_embed` vector; *channel masking* zeroes spans of `channel_length`
//! channels for the whole utterance. Span counts follow transformers' `_compute_mask_indices`
//! (the probabilities are its `mask_time_prob` / `mask_feature_prob`: the expected fraction of
//! the axis covered before overlaps, with probabilistic rounding of the span count), so the
//! defaults come straight from the model's stored config.
//!
//! The masks enter the training graphs as two extra inputs that [`instrument`] wires in after the
//! feature projection (the tensor produced with the weight `feature_projection.projection.bias`,
//! a checkpoint name the exporter keeps): `x' = (x·keep_t + (1 − keep_t)·embed)·keep_c`, with
//! `keep_t` of shape `[B, T, 1]` and `keep_c` of shape `[B, 1, H]` (1 = keep).
//!
//! *LayerDrop* (Fan et al. 2019; transformers' `layerdrop`) skips each Transformer layer with
//! probability p per update. [`instrument_layer_drop`] gives layer `i` (the exporter's node scope
//! `encoder.layers.{i}/`) a gate input `g_i` of shape `[1]`: its output becomes
//! `g_i·layer(x) + (1 − g_i)·x`, so a dropped layer passes its input through and gets no gradient.
//!
//! Inference graphs are never changed.

use w2v_engine::onnx_pb::{
    data_type, dimension, Dimension, ModelProto, NodeProto, TensorProto, TensorShapeProto,
    TypeProto, TypeProtoTensor, ValueInfoProto,
};

use w2v_engine::config::Wav2Vec2Config;

use crate::rng::SplitMix64;

/// The time-keep input of an instrumented graph: `[batch, frames, 1]`, 1 = keep.
pub const TIME_KEEP: &str = "w2v_train/time_keep";
/// The channel-keep input of an instrumented graph: `[batch, 1, hidden]`, 1 = keep.
pub const CHANNEL_KEEP: &str = "w2v_train/channel_keep";
const EMBED: &str = "w2v_train/masked_spec_embed";
/// The gate input of Transformer layer `i` ([`instrument_layer_drop`]): `[1]`, 1 = keep.
pub fn layer_keep(i: usize) -> String {
    format!("w2v_train/layer_keep/{i}")
}
const ONE: &str = "w2v_train/one";

/// Masking settings, in transformers' terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Masking {
    /// `mask_time_prob`: time masks cover about this fraction of an utterance's frames
    /// (before overlaps).
    pub time_prob: f64,
    /// `mask_time_length`: frames per time mask.
    pub time_length: usize,
    /// `mask_feature_prob`: about this fraction of the channels is zeroed.
    pub channel_prob: f64,
    /// `mask_feature_length`: channels per channel mask.
    pub channel_length: usize,
}

impl Masking {
    /// No masking.
    pub const NONE: Masking = Masking {
        time_prob: 0.0,
        time_length: 10,
        channel_prob: 0.0,
        channel_length: 10,
    };

    /// The settings of a model's description (its stored Hugging Face config, `w2v.config`,
    /// with transformers' defaults: 0.05 × 10 frames, no channel masking, for missing fields);
    /// none when the config turns SpecAugment off (`apply_spec_augment: false`).
    pub fn from_config(config: &Wav2Vec2Config) -> Masking {
        if !config.apply_spec_augment {
            return Masking::NONE;
        }
        Masking {
            time_prob: config.mask_time_prob,
            time_length: config.mask_time_length,
            channel_prob: config.mask_feature_prob,
            channel_length: config.mask_feature_length,
        }
    }

    pub fn is_active(&self) -> bool {
        self.time_prob > 0.0 || self.channel_prob > 0.0
    }
}

/// Span masks over an axis of `len` positions, as transformers' `_compute_mask_indices` for one
/// row: `⌊prob·len/span + u⌋` spans (u uniform, at most `len / span`), distinct start positions
/// drawn uniformly from `0..=len − span`, overlaps allowed. Returns 1 = keep, 0 = masked.
pub fn span_mask(len: usize, prob: f64, span: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let mut keep = vec![1.0f32; len];
    if prob <= 0.0 || span == 0 || len == 0 {
        return keep;
    }
    let span = span.min(len);
    let wanted = (prob * len as f64 / span as f64 + rng.next_unit()) as usize;
    let spans = wanted.min(len / span);
    // Distinct starts from 0..=len-span: a partial Fisher-Yates draw over the candidates.
    let mut starts: Vec<usize> = (0..=len - span).collect();
    for i in 0..spans.min(starts.len()) {
        let j = i + (rng.next_u64() % (starts.len() - i) as u64) as usize;
        starts.swap(i, j);
        keep[starts[i]..starts[i] + span].fill(0.0);
    }
    keep
}

/// The mask inputs of one batch: `time_keep` `[B, frames, 1]` (each row masked only within its
/// own `frames[i]` valid frames) and `channel_keep` `[B, 1, hidden]`.
pub fn sample(
    masking: &Masking,
    frames: &[usize],
    padded_frames: usize,
    hidden: usize,
    rng: &mut SplitMix64,
) -> (Vec<f32>, Vec<f32>) {
    let b = frames.len();
    let mut time = vec![1.0f32; b * padded_frames];
    let mut channel = vec![1.0f32; b * hidden];
    for (row, &t) in frames.iter().enumerate() {
        let t = t.min(padded_frames);
        let m = span_mask(t, masking.time_prob, masking.time_length, rng);
        time[row * padded_frames..row * padded_frames + t].copy_from_slice(&m);
        let c = span_mask(hidden, masking.channel_prob, masking.channel_length, rng);
        channel[row * hidden..(row + 1) * hidden].copy_from_slice(&c);
    }
    (time, channel)
}

#[derive(Debug, thiserror::Error)]
pub enum InstrumentError {
    #[error(
        "the model has no feature projection (no node uses `feature_projection.projection.bias`): \
         not a wav2vec2 model made by `w2v export`"
    )]
    NoFeatureProjection,
    #[error("masked_spec_embed has {got} values, the model width is {hidden}")]
    EmbedSize { got: usize, hidden: usize },
    #[error(
        "the model has no Transformer layers named `encoder.layers.N/…`: not made by `w2v export`"
    )]
    NoLayers,
}

fn value_info(name: &str, dims: &[(Option<&str>, i64)]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|(p, v)| Dimension {
            value: Some(match p {
                Some(p) => dimension::Value::DimParam(p.to_string()),
                None => dimension::Value::DimValue(*v),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], out: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        name: out.to_string(),
        op_type: op.to_string(),
        ..Default::default()
    }
}

/// Renames every use of `from` by the nodes after `after` to `to`.
fn rewire(g: &mut w2v_engine::onnx_pb::GraphProto, after: usize, from: &str, to: &str) {
    for n in g.node.iter_mut().skip(after + 1) {
        for i in n.input.iter_mut() {
            if i == from {
                *i = to.to_string();
            }
        }
    }
}

/// Adds the scalar constant 1 the instrumentation uses, once.
fn add_one(g: &mut w2v_engine::onnx_pb::GraphProto) {
    if !g.initializer.iter().any(|t| t.name == ONE) {
        g.initializer.push(f32_tensor(ONE, &[], &[1.0]));
    }
}

/// `model` with the masks wired in after the feature projection (see the module docs); `embed`
/// is the model's `masked_spec_embed` (`hidden` values). The embedding is a constant of the
/// training graphs: it is not trained (see [`crate::parameters::is_trainable`]).
pub fn instrument(
    model: &ModelProto,
    embed: &[f32],
    hidden: usize,
) -> Result<ModelProto, InstrumentError> {
    if embed.len() != hidden {
        return Err(InstrumentError::EmbedSize {
            got: embed.len(),
            hidden,
        });
    }
    let mut m = model.clone();
    let g = m
        .graph
        .as_mut()
        .ok_or(InstrumentError::NoFeatureProjection)?;
    let pos = g
        .node
        .iter()
        .position(|n| {
            n.input.iter().any(|i| {
                i.strip_prefix("wav2vec2.").unwrap_or(i) == "feature_projection.projection.bias"
            })
        })
        .ok_or(InstrumentError::NoFeatureProjection)?;
    let x = g.node[pos]
        .output
        .first()
        .cloned()
        .ok_or(InstrumentError::NoFeatureProjection)?;
    let masked = "w2v_train/masked_features";
    rewire(g, pos, &x, masked);
    let new = [
        node("Mul", &[&x, TIME_KEEP], "w2v_train/kept"),
        node("Sub", &[ONE, TIME_KEEP], "w2v_train/time_masked"),
        node("Mul", &["w2v_train/time_masked", EMBED], "w2v_train/filled"),
        node(
            "Add",
            &["w2v_train/kept", "w2v_train/filled"],
            "w2v_train/time_masked_features",
        ),
        node(
            "Mul",
            &["w2v_train/time_masked_features", CHANNEL_KEEP],
            masked,
        ),
    ];
    g.node.splice(pos + 1..pos + 1, new);
    g.input.push(value_info(
        TIME_KEEP,
        &[(Some("batch"), 0), (Some("frames"), 0), (None, 1)],
    ));
    g.input.push(value_info(
        CHANNEL_KEEP,
        &[(Some("batch"), 0), (None, 1), (None, hidden as i64)],
    ));
    g.initializer
        .push(f32_tensor(EMBED, &[hidden as i64], embed));
    add_one(g);
    Ok(m)
}

/// `model` with a LayerDrop gate on every Transformer layer (see the module docs); returns the
/// instrumented model and its number of layers.
pub fn instrument_layer_drop(model: &ModelProto) -> Result<(ModelProto, usize), InstrumentError> {
    let mut m = model.clone();
    let g = m.graph.as_mut().ok_or(InstrumentError::NoLayers)?;
    let inits: std::collections::HashSet<String> =
        g.initializer.iter().map(|t| t.name.clone()).collect();
    let mut layers = 0;
    loop {
        let scope = format!("encoder.layers.{layers}/");
        let (Some(first), Some(last)) = (
            g.node.iter().position(|n| n.name.starts_with(&scope)),
            g.node.iter().rposition(|n| n.name.starts_with(&scope)),
        ) else {
            break;
        };
        let x = g.node[first]
            .input
            .iter()
            .find(|i| !inits.contains(*i))
            .cloned()
            .ok_or(InstrumentError::NoLayers)?;
        let y = g.node[last]
            .output
            .first()
            .cloned()
            .ok_or(InstrumentError::NoLayers)?;
        let keep = layer_keep(layers);
        let p = format!("w2v_train/layer_drop/{layers}");
        let out = format!("{p}/out");
        rewire(g, last, &y, &out);
        let new = [
            node("Mul", &[&y, &keep], &format!("{p}/kept")),
            node("Sub", &[ONE, &keep], &format!("{p}/dropped")),
            node(
                "Mul",
                &[&x, &format!("{p}/dropped")],
                &format!("{p}/skipped"),
            ),
            node(
                "Add",
                &[&format!("{p}/kept"), &format!("{p}/skipped")],
                &out,
            ),
        ];
        g.node.splice(last + 1..last + 1, new);
        g.input.push(value_info(&keep, &[(None, 1)]));
        layers += 1;
    }
    if layers == 0 {
        return Err(InstrumentError::NoLayers);
    }
    add_one(g);
    Ok((m, layers))
}

/// This update's LayerDrop gates: each layer kept (1) with probability `1 − p`.
pub fn sample_layer_keep(layers: usize, p: f64, rng: &mut SplitMix64) -> Vec<f32> {
    (0..layers)
        .map(|_| if rng.next_unit() < p { 0.0 } else { 1.0 })
        .collect()
}

/// Whether `name` is a constant [`instrument`] added (never a trainable parameter).
pub fn is_instrumentation(name: &str) -> bool {
    name.starts_with("w2v_train/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_masks_cover_about_the_requested_fraction() {
        let mut rng = SplitMix64(7);
        let (len, prob, span) = (500, 0.3, 10);
        let mut masked = 0usize;
        let rows = 400;
        for _ in 0..rows {
            let m = span_mask(len, prob, span, &mut rng);
            assert_eq!(m.len(), len);
            // every masked run is made of whole spans: runs are at least `span` long
            let mut run = 0;
            for (i, &v) in m.iter().enumerate() {
                if v == 0.0 {
                    run += 1;
                }
                if v != 0.0 || i + 1 == len {
                    assert!(run == 0 || run >= span, "a masked run of {run} < {span}");
                    run = 0;
                }
            }
            masked += m.iter().filter(|&&v| v == 0.0).count();
        }
        // 15 spans of 10 at random starts over 500 frames: overlaps bring the expected
        // covered fraction to about 1 - (1 - 10/491)^15 = 0.26
        let frac = masked as f64 / (rows * len) as f64;
        assert!((0.23..0.29).contains(&frac), "covered {frac}");
    }

    #[test]
    fn no_masking_keeps_everything_and_short_axes_stay_valid() {
        let mut rng = SplitMix64(1);
        assert!(span_mask(50, 0.0, 10, &mut rng).iter().all(|&v| v == 1.0));
        // an axis shorter than the span: at most one span, clipped to the axis
        for _ in 0..50 {
            let m = span_mask(4, 0.9, 10, &mut rng);
            assert_eq!(m.len(), 4);
        }
        assert!(span_mask(0, 0.5, 10, &mut rng).is_empty());
    }

    #[test]
    fn masks_stay_inside_each_rows_valid_frames() {
        let mut rng = SplitMix64(3);
        let masking = Masking {
            time_prob: 0.5,
            time_length: 5,
            channel_prob: 0.2,
            channel_length: 4,
        };
        let (time, channel) = sample(&masking, &[40, 12], 40, 32, &mut rng);
        assert_eq!(time.len(), 80);
        assert_eq!(channel.len(), 64);
        assert!(
            time[40 + 12..].iter().all(|&v| v == 1.0),
            "padding is never masked"
        );
        assert!(time.contains(&0.0));
        assert!(channel.contains(&0.0));
    }

    #[test]
    fn config_defaults_follow_transformers() {
        let config = |json: serde_json::Value| {
            Wav2Vec2Config::from_value(std::path::Path::new("config.json"), json).unwrap()
        };
        let m = Masking::from_config(&config(serde_json::json!({})));
        assert_eq!(
            (m.time_prob, m.time_length, m.channel_prob),
            (0.05, 10, 0.0)
        );
        let m = Masking::from_config(&config(serde_json::json!({
            "mask_time_prob": 0.2, "mask_time_length": 8,
            "mask_feature_prob": 0.05, "mask_feature_length": 16
        })));
        assert_eq!(
            (m.time_prob, m.time_length, m.channel_prob, m.channel_length),
            (0.2, 8, 0.05, 16)
        );
        let off = Masking::from_config(&config(serde_json::json!({"apply_spec_augment": false})));
        assert!(!off.is_active());
    }
}
