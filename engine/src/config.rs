//! The model description: the Hugging Face `Wav2Vec2Config` fields w2v implements, with
//! transformers' defaults, parsed and validated in one place for the exporter (which builds the
//! graph from it), the runtime and benchmarks (which read it back from a model's `w2v.config`,
//! [`crate::ModelInfo::model_config`]) and fine-tuning (its SpecAugment settings).
//!
//! Anything that would change the forward pass and that we do not implement is rejected by
//! validation with the field and its value, so an export never produces silently wrong logits.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unsupported {field} = {value} ({reason})")]
    Unsupported {
        path: PathBuf,
        field: &'static str,
        value: String,
        reason: String,
    },
}

fn d_conv_dim() -> Vec<usize> {
    vec![512; 7]
}
fn d_conv_kernel() -> Vec<usize> {
    vec![10, 3, 3, 3, 3, 2, 2]
}
fn d_conv_stride() -> Vec<usize> {
    vec![5, 2, 2, 2, 2, 2, 2]
}
fn d_group() -> String {
    "group".into()
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_768() -> usize {
    768
}
fn d_12() -> usize {
    12
}
fn d_3072() -> usize {
    3072
}
fn d_eps() -> f64 {
    1e-5
}
fn d_128() -> usize {
    128
}
fn d_16() -> usize {
    16
}
fn d_32() -> usize {
    32
}
fn d_wav2vec2() -> String {
    "wav2vec2".into()
}
fn d_initializer_range() -> f64 {
    0.02
}
fn d_true() -> bool {
    true
}
fn d_mask_time_prob() -> f64 {
    0.05
}
fn d_10() -> usize {
    10
}

/// `config.json` of a `Wav2Vec2ForCTC` checkpoint (field names as in transformers): the one
/// typed description of a model's architecture, and of its fine-tuning SpecAugment settings.
#[derive(Clone, Debug, Deserialize)]
pub struct Wav2Vec2Config {
    #[serde(default = "d_wav2vec2")]
    pub model_type: String,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "d_conv_dim")]
    pub conv_dim: Vec<usize>,
    #[serde(default = "d_conv_kernel")]
    pub conv_kernel: Vec<usize>,
    #[serde(default = "d_conv_stride")]
    pub conv_stride: Vec<usize>,
    #[serde(default)]
    pub conv_bias: bool,
    #[serde(default = "d_group")]
    pub feat_extract_norm: String,
    #[serde(default = "d_gelu")]
    pub feat_extract_activation: String,
    #[serde(default = "d_768")]
    pub hidden_size: usize,
    #[serde(default = "d_12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_12")]
    pub num_attention_heads: usize,
    #[serde(default = "d_3072")]
    pub intermediate_size: usize,
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_128")]
    pub num_conv_pos_embeddings: usize,
    #[serde(default = "d_16")]
    pub num_conv_pos_embedding_groups: usize,
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    #[serde(default = "d_32")]
    pub vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub add_adapter: bool,
    #[serde(default)]
    pub adapter_attn_dim: Option<usize>,
    #[serde(default)]
    pub use_weighted_layer_sum: bool,
    #[serde(default)]
    pub position_embeddings_type: Option<String>,
    /// Standard deviation of a new layer's initial weights (a new CTC head's).
    #[serde(default = "d_initializer_range")]
    pub initializer_range: f64,
    /// SpecAugment during fine-tuning (`w2v finetune`); off turns both masks off.
    #[serde(default = "d_true")]
    pub apply_spec_augment: bool,
    /// Time masks cover about this fraction of an utterance's frames (before overlaps).
    #[serde(default = "d_mask_time_prob")]
    pub mask_time_prob: f64,
    /// Frames per time mask.
    #[serde(default = "d_10")]
    pub mask_time_length: usize,
    /// About this fraction of the channels is zeroed.
    #[serde(default)]
    pub mask_feature_prob: f64,
    /// Channels per channel mask.
    #[serde(default = "d_10")]
    pub mask_feature_length: usize,
    /// The file as read, kept verbatim for the model's metadata.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

/// Activation functions, by their transformers `ACT2FN` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu`): x·Φ(x) with erf.
    Gelu,
    /// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
    }
}

/// How the feature encoder normalizes its convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatExtractNorm {
    /// GroupNorm (one group per channel) after the first conv only: wav2vec2-base.
    Group,
    /// LayerNorm over channels after every conv: wav2vec2-large-lv60 and XLS-R.
    Layer,
}

impl Wav2Vec2Config {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|source| ConfigError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_value(path, raw)
    }

    /// A configuration given as JSON (`path` names its source in errors).
    pub fn from_value(path: &Path, raw: serde_json::Value) -> Result<Self, ConfigError> {
        let mut config: Wav2Vec2Config =
            serde_json::from_value(raw.clone()).map_err(|source| ConfigError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        config.raw = raw;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(ConfigError::Unsupported {
                path: path.to_path_buf(),
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.model_type != "wav2vec2" {
            return bad(
                "model_type",
                format!("{:?}", self.model_type),
                "only \"wav2vec2\" is supported",
            );
        }
        if let Some(archs) = &self.architectures {
            if let Some(a) = archs.iter().find(|a| {
                !["Wav2Vec2ForCTC", "Wav2Vec2ForPreTraining", "Wav2Vec2Model"].contains(&a.as_str())
            }) {
                return bad(
                    "architectures",
                    format!("{a:?}"),
                    "supported: Wav2Vec2ForCTC, and pre-trained Wav2Vec2ForPreTraining / \
                     Wav2Vec2Model given a new CTC head",
                );
            }
        }
        if self.feat_extract_norm != "group" && self.feat_extract_norm != "layer" {
            return bad(
                "feat_extract_norm",
                format!("{:?}", self.feat_extract_norm),
                "expected \"group\" or \"layer\"",
            );
        }
        if Activation::parse(&self.feat_extract_activation).is_none() {
            return bad(
                "feat_extract_activation",
                format!("{:?}", self.feat_extract_activation),
                "supported: gelu, gelu_new, relu, silu",
            );
        }
        if Activation::parse(&self.hidden_act).is_none() {
            return bad(
                "hidden_act",
                format!("{:?}", self.hidden_act),
                "supported: gelu, gelu_new, relu, silu",
            );
        }
        let n = self.conv_dim.len();
        if n == 0 || self.conv_kernel.len() != n || self.conv_stride.len() != n {
            return bad(
                "conv_dim",
                format!("{:?}", self.conv_dim),
                &format!(
                    "conv_dim, conv_kernel and conv_stride must have the same non-zero length \
                     (got {}, {}, {})",
                    n,
                    self.conv_kernel.len(),
                    self.conv_stride.len()
                ),
            );
        }
        if self.conv_kernel.contains(&0)
            || self.conv_stride.contains(&0)
            || self.conv_dim.contains(&0)
        {
            return bad(
                "conv_kernel",
                format!("{:?}", self.conv_kernel),
                "zero sizes",
            );
        }
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(
                "num_attention_heads",
                self.num_attention_heads.to_string(),
                &format!("must divide hidden_size {}", self.hidden_size),
            );
        }
        if self.num_conv_pos_embedding_groups == 0
            || !self
                .hidden_size
                .is_multiple_of(self.num_conv_pos_embedding_groups)
        {
            return bad(
                "num_conv_pos_embedding_groups",
                self.num_conv_pos_embedding_groups.to_string(),
                &format!("must divide hidden_size {}", self.hidden_size),
            );
        }
        if self.num_conv_pos_embeddings == 0 {
            return bad("num_conv_pos_embeddings", "0".into(), "must be positive");
        }
        if self.vocab_size == 0 {
            return bad("vocab_size", "0".into(), "must be positive");
        }
        if self.add_adapter {
            return bad(
                "add_adapter",
                "true".into(),
                "adapter layers are not implemented",
            );
        }
        if let Some(d) = self.adapter_attn_dim {
            return bad(
                "adapter_attn_dim",
                d.to_string(),
                "attention adapters (MMS) are not implemented",
            );
        }
        if self.use_weighted_layer_sum {
            return bad(
                "use_weighted_layer_sum",
                "true".into(),
                "not used by Wav2Vec2ForCTC",
            );
        }
        if let Some(p) = &self.position_embeddings_type {
            return bad(
                "position_embeddings_type",
                format!("{p:?}"),
                "that is a wav2vec2-conformer field; only wav2vec2 is supported",
            );
        }
        Ok(())
    }

    /// A pre-trained model without a CTC head (`Wav2Vec2ForPreTraining`, `Wav2Vec2Model`).
    pub fn is_pretrained_only(&self) -> bool {
        self.architectures
            .as_ref()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|a| a != "Wav2Vec2ForCTC"))
    }

    /// This configuration with a CTC head of `vocab_size` outputs whose blank is `pad_token_id`
    /// (the config a pre-trained model is fine-tuned under).
    pub fn with_ctc_head(
        &self,
        path: &Path,
        vocab_size: usize,
        pad_token_id: usize,
    ) -> Result<Self, ConfigError> {
        let mut raw = self.raw.clone();
        if let Some(m) = raw.as_object_mut() {
            m.insert(
                "architectures".into(),
                serde_json::json!(["Wav2Vec2ForCTC"]),
            );
            m.insert("vocab_size".into(), vocab_size.into());
            m.insert("pad_token_id".into(), pad_token_id.into());
        }
        Self::from_value(path, raw)
    }

    pub fn feat_extract_norm(&self) -> FeatExtractNorm {
        if self.feat_extract_norm == "layer" {
            FeatExtractNorm::Layer
        } else {
            FeatExtractNorm::Group
        }
    }

    pub fn feat_extract_activation(&self) -> Activation {
        Activation::parse(&self.feat_extract_activation).expect("validated")
    }

    pub fn hidden_act(&self) -> Activation {
        Activation::parse(&self.hidden_act).expect("validated")
    }

    /// Models with a layer-norm feature encoder are trained with padding masks and need one at
    /// inference; group-norm models are not (their feature extractor returns no mask).
    pub fn uses_attention_mask(&self) -> bool {
        self.feat_extract_norm() == FeatExtractNorm::Layer
    }

    pub fn conv_layers(&self) -> Vec<(usize, usize)> {
        self.conv_kernel
            .iter()
            .copied()
            .zip(self.conv_stride.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Wav2Vec2Config, ConfigError> {
        Wav2Vec2Config::parse(Path::new("config.json"), text)
    }

    #[test]
    fn defaults_are_wav2vec2_base() {
        let c = parse("{}").unwrap();
        assert_eq!(c.conv_dim, vec![512; 7]);
        assert_eq!(c.hidden_size, 768);
        assert_eq!(c.feat_extract_norm(), FeatExtractNorm::Group);
        assert!(!c.uses_attention_mask());
    }

    #[test]
    fn spec_augment_defaults_follow_transformers() {
        let c = parse("{}").unwrap();
        assert!(c.apply_spec_augment);
        assert_eq!((c.mask_time_prob, c.mask_time_length), (0.05, 10));
        assert_eq!((c.mask_feature_prob, c.mask_feature_length), (0.0, 10));
    }

    #[test]
    fn unknown_norm_names_field_and_value() {
        let e = parse(r#"{"feat_extract_norm": "batch"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("feat_extract_norm") && e.contains("batch"),
            "{e}"
        );
    }

    #[test]
    fn rejects_other_models_and_adapters() {
        for (json, field) in [
            (r#"{"model_type": "hubert"}"#, "model_type"),
            (r#"{"add_adapter": true}"#, "add_adapter"),
            (r#"{"adapter_attn_dim": 16}"#, "adapter_attn_dim"),
            (r#"{"hidden_act": "mish"}"#, "hidden_act"),
            (
                r#"{"architectures": ["Wav2Vec2ForSequenceClassification"]}"#,
                "architectures",
            ),
            (
                r#"{"hidden_size": 10, "num_attention_heads": 3}"#,
                "num_attention_heads",
            ),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
