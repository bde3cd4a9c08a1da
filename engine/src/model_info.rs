//! What a w2v ONNX model says about itself in `metadata_props`.
//!
//! The exporter writes these keys and the runtime reads them: one home for both, so a model never
//! needs side files (vocab, sample rate, normalization) that could get lost or mismatched.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Wav2Vec2Config};
use crate::onnx_pb::{ModelMetadataOnly, StringStringEntryProto};

/// Metadata keys, all under the `w2v.` namespace: the one spelling of each, for the exporter and
/// `w2v finetune` that write them and every reader.
pub mod keys {
    /// The namespace every key starts with.
    pub const PREFIX: &str = "w2v.";
    pub const FORMAT_VERSION: &str = "w2v.format_version";
    pub const MODEL_TYPE: &str = "w2v.model_type";
    pub const CONFIG: &str = "w2v.config";
    pub const VOCAB: &str = "w2v.vocab";
    pub const SAMPLE_RATE: &str = "w2v.sample_rate";
    pub const DO_NORMALIZE: &str = "w2v.do_normalize";
    pub const FRAME_STRIDE: &str = "w2v.frame_stride";
    pub const RECEPTIVE_FIELD: &str = "w2v.receptive_field";
    pub const USES_ATTENTION_MASK: &str = "w2v.uses_attention_mask";
    pub const PAD_TOKEN_ID: &str = "w2v.pad_token_id";
    pub const WORD_DELIMITER: &str = "w2v.word_delimiter_token";
    pub const PRECISION: &str = "w2v.precision";
    pub const SOURCE_SHA256: &str = "w2v.source_sha256";
    pub const EXPORTER_VERSION: &str = "w2v.exporter_version";
    /// The checkpoint's `masked_spec_embed` (comma-separated float32 values, one per model
    /// channel): what fine-tuning's time masks put in place of the masked frames. Not part of
    /// [`super::ModelInfo`]: only `w2v finetune` reads it.
    pub const MASKED_SPEC_EMBED: &str = "w2v.masked_spec_embed";

    /// `fp16` when an fp32 model's weights are stored as float16 and widened to float32 at load
    /// (`w2v export --fp16-weights`); absent when they are stored as float32.
    pub const WEIGHT_STORAGE: &str = "w2v.weight_storage";

    // Reduced-precision models (the runtime keeps them in `ModelInfo::raw`).
    /// `cpu` or `tensorrt` (int8 models only): a [`crate::precision::QuantizationTarget`].
    pub const QUANTIZATION_TARGET: &str = "w2v.quantization.target";
    /// How the graph was reduced, in words.
    pub const QUANTIZATION_SCHEME: &str = "w2v.quantization.scheme";
    /// The accuracy report (JSON, the exporter's `AccuracyReport`).
    pub const QUANTIZATION_REPORT: &str = "w2v.quantization.report";
    /// `int8` when the feature encoder's convolutions are quantized (`--quantize-conv`), else
    /// `float32` (int8 models only).
    pub const QUANTIZATION_CONVS: &str = "w2v.quantization.convs";
    /// The calibration of activation scales (`tensorrt` only), in words.
    pub const QUANTIZATION_CALIBRATION: &str = "w2v.quantization.calibration";
    /// sha256 of the fp32 ONNX model this one was re-quantized from (absent when it was exported
    /// from a Hugging Face folder; [`SOURCE_SHA256`] is the checkpoint's in both cases).
    pub const QUANTIZATION_SOURCE_MODEL_SHA256: &str = "w2v.quantization.source_model_sha256";

    // Lineage of a `w2v finetune` model.
    /// sha256 of the model fine-tuning started from.
    pub const FINETUNE_BASE_SHA256: &str = "w2v.finetune.base_sha256";
    /// sha256 of the training manifest.
    pub const FINETUNE_DATA_SHA256: &str = "w2v.finetune.data_sha256";
    /// Updates run.
    pub const FINETUNE_STEPS: &str = "w2v.finetune.steps";
    /// Word error rate on `--eval` after training.
    pub const FINETUNE_EVAL_WER: &str = "w2v.finetune.eval_wer";
    /// sha256 of the `--eval` manifest.
    pub const FINETUNE_EVAL_DATA_SHA256: &str = "w2v.finetune.eval_data_sha256";
}

/// The metadata format this build writes and understands.
pub const FORMAT_VERSION: u32 = 1;
/// The only model type so far: a wav2vec 2.0 encoder with a CTC head.
pub const MODEL_TYPE_WAV2VEC2_CTC: &str = "wav2vec2-ctc";

#[derive(Debug, thiserror::Error)]
pub enum ModelInfoError {
    #[error("{path}: cannot read model: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an ONNX model ({reason})")]
    NotOnnx { path: String, reason: String },
    #[error("{path}: ONNX model has no w2v metadata (was it made by `w2v export`?)")]
    NotW2v { path: String },
    #[error("{path}: metadata `{key}` is missing")]
    Missing { path: String, key: &'static str },
    #[error("{path}: metadata `{key}` has an invalid value {value:?}: {reason}")]
    Invalid {
        path: String,
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// Everything the runtime needs to turn audio into text with a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub format_version: u32,
    pub model_type: String,
    /// The Hugging Face `config.json` the model was exported from, verbatim.
    pub config: serde_json::Value,
    /// Token strings by id.
    pub vocab: Vec<String>,
    pub sample_rate: u32,
    /// Zero-mean, unit-variance normalization of each utterance before the model.
    pub do_normalize: bool,
    /// Input samples per output frame.
    pub frame_stride: usize,
    /// Input samples that one output frame sees through the convolutional front end.
    pub receptive_field: usize,
    pub uses_attention_mask: bool,
    pub pad_token_id: usize,
    pub word_delimiter_token: Option<String>,
    pub precision: String,
    pub source_sha256: String,
    pub exporter_version: String,
    /// Every `metadata_props` entry, including ones this build does not interpret.
    pub raw: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Seconds of audio per logits frame (the feature encoder's stride over the sample rate).
    pub fn seconds_per_frame(&self) -> f64 {
        self.frame_stride as f64 / self.sample_rate as f64
    }

    /// The `metadata_props` entries describing this model, in a stable order.
    pub fn to_metadata_props(&self) -> Vec<StringStringEntryProto> {
        let mut map = self.raw.clone();
        let mut put = |k: &str, v: String| {
            map.insert(k.to_string(), v);
        };
        put(keys::FORMAT_VERSION, self.format_version.to_string());
        put(keys::MODEL_TYPE, self.model_type.clone());
        put(keys::CONFIG, self.config.to_string());
        put(
            keys::VOCAB,
            serde_json::to_string(&self.vocab).expect("strings serialize"),
        );
        put(keys::SAMPLE_RATE, self.sample_rate.to_string());
        put(keys::DO_NORMALIZE, self.do_normalize.to_string());
        put(keys::FRAME_STRIDE, self.frame_stride.to_string());
        put(keys::RECEPTIVE_FIELD, self.receptive_field.to_string());
        put(
            keys::USES_ATTENTION_MASK,
            self.uses_attention_mask.to_string(),
        );
        put(keys::PAD_TOKEN_ID, self.pad_token_id.to_string());
        if let Some(d) = &self.word_delimiter_token {
            put(keys::WORD_DELIMITER, d.clone());
        }
        put(keys::PRECISION, self.precision.clone());
        put(keys::SOURCE_SHA256, self.source_sha256.clone());
        put(keys::EXPORTER_VERSION, self.exporter_version.clone());
        map.into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect()
    }

    /// Parse the entries of `metadata_props`; `path` only names the model in errors.
    pub fn from_metadata_props(
        path: &str,
        props: &[StringStringEntryProto],
    ) -> Result<Self, ModelInfoError> {
        let raw: BTreeMap<String, String> = props
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        if !raw.keys().any(|k| k.starts_with(keys::PREFIX)) {
            return Err(ModelInfoError::NotW2v {
                path: path.to_string(),
            });
        }
        let get = |key: &'static str| {
            raw.get(key).cloned().ok_or(ModelInfoError::Missing {
                path: path.to_string(),
                key,
            })
        };
        let invalid = |key: &'static str, value: &str, reason: String| ModelInfoError::Invalid {
            path: path.to_string(),
            key,
            value: value.chars().take(80).collect(),
            reason,
        };
        fn parse<T: std::str::FromStr>(
            key: &'static str,
            v: &str,
            invalid: &dyn Fn(&'static str, &str, String) -> ModelInfoError,
        ) -> Result<T, ModelInfoError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim()
                .parse::<T>()
                .map_err(|e| invalid(key, v, e.to_string()))
        }
        let format_version: u32 =
            parse(keys::FORMAT_VERSION, &get(keys::FORMAT_VERSION)?, &invalid)?;
        if format_version > FORMAT_VERSION {
            return Err(invalid(
                keys::FORMAT_VERSION,
                &format_version.to_string(),
                format!("this w2v understands format {FORMAT_VERSION}; upgrade w2v"),
            ));
        }
        let model_type = get(keys::MODEL_TYPE)?;
        if model_type != MODEL_TYPE_WAV2VEC2_CTC {
            return Err(invalid(
                keys::MODEL_TYPE,
                &model_type,
                "unsupported model type".into(),
            ));
        }
        let config_s = get(keys::CONFIG)?;
        let config = serde_json::from_str(&config_s)
            .map_err(|e| invalid(keys::CONFIG, &config_s, e.to_string()))?;
        let vocab_s = get(keys::VOCAB)?;
        let vocab: Vec<String> = serde_json::from_str(&vocab_s)
            .map_err(|e| invalid(keys::VOCAB, &vocab_s, e.to_string()))?;
        if vocab.is_empty() {
            return Err(invalid(keys::VOCAB, &vocab_s, "empty vocabulary".into()));
        }
        let sample_rate: u32 = parse(keys::SAMPLE_RATE, &get(keys::SAMPLE_RATE)?, &invalid)?;
        if sample_rate == 0 {
            return Err(invalid(keys::SAMPLE_RATE, "0", "must be positive".into()));
        }
        let frame_stride: usize = parse(keys::FRAME_STRIDE, &get(keys::FRAME_STRIDE)?, &invalid)?;
        let receptive_field: usize = parse(
            keys::RECEPTIVE_FIELD,
            &get(keys::RECEPTIVE_FIELD)?,
            &invalid,
        )?;
        if frame_stride == 0 || receptive_field < frame_stride {
            return Err(invalid(
                keys::RECEPTIVE_FIELD,
                &receptive_field.to_string(),
                format!("inconsistent with frame stride {frame_stride}"),
            ));
        }
        let pad_token_id: usize = parse(keys::PAD_TOKEN_ID, &get(keys::PAD_TOKEN_ID)?, &invalid)?;
        if pad_token_id >= vocab.len() {
            return Err(invalid(
                keys::PAD_TOKEN_ID,
                &pad_token_id.to_string(),
                format!("outside the vocabulary of {} tokens", vocab.len()),
            ));
        }
        Ok(ModelInfo {
            format_version,
            model_type,
            config,
            vocab,
            sample_rate,
            do_normalize: parse(keys::DO_NORMALIZE, &get(keys::DO_NORMALIZE)?, &invalid)?,
            frame_stride,
            receptive_field,
            uses_attention_mask: parse(
                keys::USES_ATTENTION_MASK,
                &get(keys::USES_ATTENTION_MASK)?,
                &invalid,
            )?,
            pad_token_id,
            word_delimiter_token: raw.get(keys::WORD_DELIMITER).cloned(),
            precision: get(keys::PRECISION)?,
            source_sha256: get(keys::SOURCE_SHA256)?,
            exporter_version: get(keys::EXPORTER_VERSION)?,
            raw,
        })
    }

    /// Read the metadata of an ONNX file without reading its weights: the top-level fields are
    /// scanned and the graph (field 7, which holds every initializer) is skipped with a seek.
    pub fn read(path: &Path) -> Result<Self, ModelInfoError> {
        let name = path.display().to_string();
        let io = |source| ModelInfoError::Io {
            path: name.clone(),
            source,
        };
        let not_onnx = |reason: String| ModelInfoError::NotOnnx {
            path: name.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(std::io::Error::other("is a directory")));
        }
        let header = top_level_fields_without_graph(file).map_err(|e| match e {
            ScanError::Io(e) => io(e),
            ScanError::Format(reason) => not_onnx(reason),
        })?;
        let model =
            ModelMetadataOnly::decode(header.as_slice()).map_err(|e| not_onnx(e.to_string()))?;
        if model.ir_version <= 0 || model.opset_import.is_empty() {
            return Err(not_onnx("no IR version or opset".into()));
        }
        Self::from_metadata_props(&name, &model.metadata_props)
    }

    /// Number of output frames for `samples` input samples (the conv stack's length formula).
    pub fn frames_for_samples(&self, samples: usize) -> usize {
        conv_output_length(&self.conv_layers(), samples)
    }

    /// The stored Hugging Face config (`w2v.config`) as the typed, validated model description,
    /// with transformers' defaults for absent fields (those the exporter built the graph with).
    pub fn model_config(&self) -> Result<Wav2Vec2Config, ConfigError> {
        Wav2Vec2Config::from_value(Path::new(keys::CONFIG), self.config.clone())
    }

    /// (kernel, stride) of each feature-encoder convolution, from the model description; none
    /// when the stored config is not a valid one (every exported model's is).
    pub fn conv_layers(&self) -> Vec<(usize, usize)> {
        self.model_config()
            .map(|c| c.conv_layers())
            .unwrap_or_default()
    }
}

enum ScanError {
    Io(std::io::Error),
    Format(String),
}

/// The bytes of every top-level protobuf field of a `ModelProto` except the graph, in order.
/// Bounded: a non-graph field over 64 MiB is not plausible metadata and is rejected.
fn top_level_fields_without_graph(file: std::fs::File) -> Result<Vec<u8>, ScanError> {
    use std::io::{BufReader, Read, Seek, SeekFrom};
    const GRAPH_FIELD: u64 = 7;
    const MAX_FIELD: u64 = 64 << 20;
    let len = file.metadata().map_err(ScanError::Io)?.len();
    let mut r = BufReader::new(file);
    let mut out = Vec::new();
    let mut pos = 0u64;
    fn varint(
        r: &mut impl Read,
        pos: &mut u64,
        out: Option<&mut Vec<u8>>,
    ) -> Result<u64, ScanError> {
        let mut v = 0u64;
        let mut bytes = Vec::new();
        for shift in (0..64).step_by(7) {
            let mut b = [0u8];
            r.read_exact(&mut b)
                .map_err(|_| ScanError::Format("truncated varint".into()))?;
            *pos += 1;
            bytes.push(b[0]);
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                if let Some(out) = out {
                    out.extend_from_slice(&bytes);
                }
                return Ok(v);
            }
        }
        Err(ScanError::Format("varint too long".into()))
    }
    if len == 0 {
        return Err(ScanError::Format("empty file".into()));
    }
    while pos < len {
        let mut key_bytes = Vec::new();
        let key = varint(&mut r, &mut pos, Some(&mut key_bytes))?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(ScanError::Format("field number 0".into()));
        }
        match wire {
            0 => {
                out.extend_from_slice(&key_bytes);
                varint(&mut r, &mut pos, Some(&mut out))?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                let mut b = vec![0u8; n];
                r.read_exact(&mut b)
                    .map_err(|_| ScanError::Format("truncated field".into()))?;
                pos += n as u64;
                out.extend_from_slice(&key_bytes);
                out.extend_from_slice(&b);
            }
            2 => {
                let n = varint(&mut r, &mut pos, None)?;
                if pos.checked_add(n).is_none_or(|end| end > len) {
                    return Err(ScanError::Format(format!(
                        "field {field} runs past the end of the file"
                    )));
                }
                if field == GRAPH_FIELD {
                    r.seek(SeekFrom::Current(n as i64)).map_err(ScanError::Io)?;
                } else {
                    if n > MAX_FIELD {
                        return Err(ScanError::Format(format!("field {field} is {n} bytes")));
                    }
                    let mut b = vec![0u8; n as usize];
                    r.read_exact(&mut b).map_err(ScanError::Io)?;
                    out.extend_from_slice(&key_bytes);
                    prost::encoding::encode_varint(n, &mut out);
                    out.extend_from_slice(&b);
                }
                pos += n;
            }
            _ => return Err(ScanError::Format(format!("wire type {wire} at top level"))),
        }
    }
    Ok(out)
}

/// Output length of a stack of unpadded strided convolutions, as
/// `Wav2Vec2Model._get_feat_extract_output_lengths` computes it (0 when the input is too short).
pub fn conv_output_length(layers: &[(usize, usize)], samples: usize) -> usize {
    let mut len = samples;
    for &(kernel, stride) in layers {
        if len < kernel {
            return 0;
        }
        len = (len - kernel) / stride + 1;
    }
    len
}

/// (frame stride, receptive field) in input samples of a stack of convolutions.
pub fn conv_stride_and_receptive_field(layers: &[(usize, usize)]) -> (usize, usize) {
    let mut stride = 1;
    let mut field = 1;
    for &(kernel, s) in layers {
        field += (kernel - 1) * stride;
        stride *= s;
    }
    (stride, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(usize, usize); 7] = [(10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)];

    #[test]
    fn base_front_end_geometry() {
        // wav2vec2-base: 20 ms frames, 25 ms receptive field at 16 kHz.
        assert_eq!(conv_stride_and_receptive_field(&BASE), (320, 400));
        assert_eq!(conv_output_length(&BASE, 16000), 49);
        assert_eq!(conv_output_length(&BASE, 400), 1);
        assert_eq!(conv_output_length(&BASE, 399), 0);
    }
}
