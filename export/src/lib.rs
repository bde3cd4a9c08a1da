//! w2v exporter: Hugging Face `Wav2Vec2ForCTC` checkpoints and fairseq wav2vec 2.0 CTC
//! checkpoints to self-describing ONNX.
//!
//! `checkpoint` reads weights (safetensors, restricted-pickle `.bin`, shards, fairseq `.pt` with
//! its dictionary), `config` the model configuration (a fairseq one mapped to the Hugging Face
//! one), `wav2vec2` builds the forward graph block by block, `graph` writes ONNX.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use w2v_engine::config::{ConfigError, Wav2Vec2Config};
use w2v_engine::fs::{atomic_write, AtomicWriteError};
use w2v_engine::model_info::{self, ModelInfo, FORMAT_VERSION, MODEL_TYPE_WAV2VEC2_CTC};
use w2v_engine::precision::{Precision, QuantizationTarget};

pub mod calibrate;
pub mod checkpoint;
pub mod config;
pub mod exported;
pub mod graph;
pub mod precision;
pub mod quantize;
pub mod report;
pub mod wav2vec2;

pub use checkpoint::CheckpointError;

/// The lowest and highest ONNX opsets the exporter writes.
pub const MIN_OPSET: i64 = 17;
pub const MAX_OPSET: i64 = 21;
pub const DEFAULT_OPSET: i64 = 17;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: no such model folder")]
    NoFolder { path: PathBuf },
    #[error("{path}: missing ({what})")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {reason}")]
    Vocab { path: PathBuf, reason: String },
    /// A pre-trained model without a CTC head where one is needed.
    #[error("{path}: {reason}")]
    NoCtcHead { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("checkpoint has no tensor `{name}`")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error(
        "checkpoint has tensors this exporter does not implement: {}",
        format_names(names)
    )]
    UnexpectedTensors { names: Vec<String> },
    /// An error about the checkpoint's tensors, with the folder they came from.
    #[error("{path}: {source}")]
    InCheckpoint {
        path: PathBuf,
        source: Box<ExportError>,
    },
    #[error("unsupported opset {opset} (supported: {MIN_OPSET}..={MAX_OPSET})")]
    Opset { opset: i64 },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// An ONNX model given as the source that is not an fp32 model made by `w2v export`.
    #[error("{path}: {reason}")]
    SourceModel { path: PathBuf, reason: String },
    #[error(transparent)]
    ModelInfo(#[from] model_info::ModelInfoError),
    /// The accuracy check on eval or calibration data could not run.
    #[error("{0}")]
    Eval(String),
    #[error(
        "WER rose by {increase:.2} points with {precision} (fp32 {fp32:.2}%, {precision} {quantized:.2}%), \
         more than --max-wer-increase {limit}; no model written"
    )]
    WerIncrease {
        precision: String,
        fp32: f64,
        quantized: f64,
        increase: f64,
        limit: f64,
        /// The accuracy report, so the caller can still show it.
        report: Box<report::AccuracyReport>,
    },
}

fn format_names(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > 5 {
        format!("{} and {} more", shown.join(", "), names.len() - 5)
    } else {
        shown.join(", ")
    }
}

/// How `QuantizationTarget::TensorRt` exports choose each activation's quantization range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// The 99.99th percentile of |x|.
    #[default]
    Percentile,
    /// The clipping threshold whose 8-bit quantization loses the least information (minimum
    /// KL divergence, TensorRT's entropy calibrator).
    Entropy,
}

impl CalibrationMethod {
    /// Every method, in the order the command line lists them.
    pub const ALL: [CalibrationMethod; 2] =
        [CalibrationMethod::Percentile, CalibrationMethod::Entropy];

    pub fn as_str(self) -> &'static str {
        match self {
            CalibrationMethod::Percentile => "percentile",
            CalibrationMethod::Entropy => "entropy",
        }
    }
}

impl std::str::FromStr for CalibrationMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CalibrationMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown calibration method {s:?}: expected percentile or entropy")
            })
    }
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// `None`: [`DEFAULT_OPSET`] for a Hugging Face folder, the model's own for an ONNX model.
    pub opset: Option<i64>,
    pub precision: Precision,
    /// Only for `Precision::Int8`.
    pub target: QuantizationTarget,
    /// Quantize the feature encoder's convolutions too (`Precision::Int8` only).
    pub quantize_conv: bool,
    /// `path<TAB>transcript` rows for the accuracy report; `None` uses a synthetic set.
    pub eval: Option<PathBuf>,
    /// Rows whose audio calibrates activation scales (`QuantizationTarget::TensorRt`); `None` uses `eval`
    /// or the synthetic set.
    pub calibration: Option<PathBuf>,
    /// How activation ranges are chosen from the calibration audio (`QuantizationTarget::TensorRt`).
    pub calibration_method: CalibrationMethod,
    /// Fail (and write nothing) when the WER rises by more than this many percentage points.
    pub max_wer_increase: Option<f64>,
    /// Skip the accuracy report (and the check) of reduced-precision exports.
    pub skip_report: bool,
    /// The fairseq dictionary of a fairseq checkpoint; `None`: the one beside it
    /// ([`checkpoint::fairseq::dictionary_beside`]).
    pub dict: Option<PathBuf>,
    /// Give a pre-trained model (no CTC head) a freshly initialized one, to fine-tune it.
    pub new_head: Option<NewHead>,
    /// `Precision::Fp32` only: store the weights as float16, widened to float32 by a `Cast` that
    /// runtimes fold at load ([`precision::f16_storage`]): half the file, float32 compute, each
    /// weight rounded to float16 (relative error at most 2⁻¹¹). fp16 and int8 exports always
    /// store their float32-compute weights this way.
    pub fp16_weights: bool,
}

/// A freshly initialized, seeded CTC head for a pre-trained model (a Hugging Face
/// `Wav2Vec2ForPreTraining` / `Wav2Vec2Model` folder or a fairseq pre-training checkpoint): as
/// transformers initializes `lm_head`, weights N(0, `initializer_range`) and zero bias.
#[derive(Clone, Debug)]
pub struct NewHead {
    /// Its vocabulary: a Hugging Face `vocab.json` or a fairseq dictionary (`dict.ltr.txt`).
    pub vocab: PathBuf,
    pub seed: u64,
}

impl NewHead {
    /// The vocabulary by output index, and the blank's index (`<pad>`, else 0).
    fn vocab(&self) -> Result<(Vec<String>, usize), ExportError> {
        let path = &self.vocab;
        let vocab = if path.extension().is_some_and(|e| e == "json") {
            let json = read_json(path)?;
            let size = json
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
                .filter_map(serde_json::Value::as_u64)
                .max()
                .map_or(0, |m| m as usize + 1);
            vocab_from_json(path, &json, size)?
        } else {
            checkpoint::fairseq::read_dictionary(path)?
        };
        if vocab.len() < 2 {
            return Err(ExportError::Vocab {
                path: path.clone(),
                reason: "a CTC vocabulary needs a blank and at least one token".into(),
            });
        }
        let blank = vocab.iter().position(|t| t == "<pad>").unwrap_or(0);
        Ok((vocab, blank))
    }

    /// `lm_head.weight` [vocab, hidden] and `lm_head.bias`, seeded.
    fn tensors(
        &self,
        vocab: usize,
        hidden: usize,
        std: f64,
    ) -> (checkpoint::Tensor, checkpoint::Tensor) {
        // The engine's seeded generator: the same head for the same seed on every platform.
        let mut rng = w2v_engine::rng::SplitMix64(self.seed);
        let data = (0..vocab * hidden)
            .map(|_| (rng.gaussian() * std) as f32)
            .collect();
        (
            checkpoint::Tensor::new(vec![vocab, hidden], data),
            checkpoint::Tensor::new(vec![vocab], vec![0.0; vocab]),
        )
    }

    /// Add the head to a pre-trained model's weights under `config`; the config of the model
    /// with it, and the vocabulary.
    fn attach(
        &self,
        src: &Path,
        config: &Wav2Vec2Config,
        sd: &mut checkpoint::StateDict,
    ) -> Result<(Wav2Vec2Config, Vec<String>), ExportError> {
        let (vocab, blank) = self.vocab()?;
        let (w, b) = self.tensors(vocab.len(), config.hidden_size, config.initializer_range);
        sd.insert("lm_head.weight".into(), w);
        sd.insert("lm_head.bias".into(), b);
        let config = config.with_ctc_head(src, vocab.len(), blank)?;
        Ok((config, vocab))
    }
}

/// The error for exporting a pre-trained model without a new head.
fn no_ctc_head(src: &Path, what: &str, vocab: &str) -> ExportError {
    ExportError::NoCtcHead {
        path: src.to_path_buf(),
        reason: format!(
            "is a pre-trained model: it has no CTC head ({what}) to export; give it one by \
             fine-tuning: w2v finetune --model {} --vocab {vocab} --data DATA.tsv --output DIR",
            src.display()
        ),
    }
}

fn head_given_twice(src: &Path) -> ExportError {
    ExportError::Unsupported(format!(
        "{}: already has a CTC head; a new one (--vocab) is for pre-trained models only",
        src.display()
    ))
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: None,
            precision: Precision::Fp32,
            target: QuantizationTarget::Cpu,
            quantize_conv: false,
            eval: None,
            calibration: None,
            calibration_method: CalibrationMethod::Percentile,
            max_wer_increase: None,
            skip_report: false,
            dict: None,
            new_head: None,
            fp16_weights: false,
        }
    }
}

/// What an export did, for the CLI's report and `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub source: PathBuf,
    pub output: PathBuf,
    pub weight_files: Vec<PathBuf>,
    pub parameters: usize,
    pub output_bytes: u64,
    pub precision: String,
    /// `cpu` or `tensorrt` for int8 models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub opset: i64,
    pub seconds: f64,
    /// fp32 against the reduced-precision model, for fp16 and int8 exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<report::AccuracyReport>,
    pub info: ModelInfo,
}

/// The side files of a Hugging Face model folder that the runtime needs.
struct FolderFiles {
    config: Wav2Vec2Config,
    vocab: Vec<String>,
    word_delimiter: Option<String>,
    sample_rate: u32,
    do_normalize: bool,
}

fn read_json(path: &Path) -> Result<serde_json::Value, ExportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ExportError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ExportError::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read_folder_files(dir: &Path) -> Result<FolderFiles, ExportError> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(ExportError::MissingFile {
            path: config_path,
            what: "model configuration",
        });
    }
    let config = Wav2Vec2Config::read(&config_path)?;

    let vocab_path = dir.join("vocab.json");
    if !vocab_path.is_file() {
        return Err(ExportError::MissingFile {
            path: vocab_path,
            what: "CTC vocabulary",
        });
    }
    let vocab_json = read_json(&vocab_path)?;
    let vocab = vocab_from_json(&vocab_path, &vocab_json, config.vocab_size)?;

    let tok_path = dir.join("tokenizer_config.json");
    let delimiter_from_config = if tok_path.is_file() {
        read_json(&tok_path)?
            .get("word_delimiter_token")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    } else {
        None
    };
    let word_delimiter = delimiter_from_config
        .or_else(|| Some("|".to_string()))
        .filter(|d| vocab.iter().any(|t| t == d));

    let (sample_rate, do_normalize) = read_preprocessor(dir)?;
    Ok(FolderFiles {
        config,
        vocab,
        word_delimiter,
        sample_rate,
        do_normalize,
    })
}

/// The sample rate and input normalization of a folder's `preprocessor_config.json`.
fn read_preprocessor(dir: &Path) -> Result<(u32, bool), ExportError> {
    let pre_path = dir.join("preprocessor_config.json");
    Ok(if pre_path.is_file() {
        let pre = read_json(&pre_path)?;
        let sr = pre
            .get("sampling_rate")
            .and_then(|v| v.as_u64())
            .unwrap_or(16000);
        let norm = pre
            .get("do_normalize")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if sr == 0 || sr > 192_000 {
            return Err(ExportError::Json {
                path: pre_path,
                reason: format!("sampling_rate {sr} is not a usable sample rate"),
            });
        }
        (sr as u32, norm)
    } else {
        tracing::warn!(
            "{}: missing; assuming 16 kHz input with normalization",
            pre_path.display()
        );
        (16000, true)
    })
}

/// `vocab.json` (token → id) as a list indexed by id, `vocab_size` long (see
/// [`w2v_engine::ctc::tokens_from_vocab_json`]).
fn vocab_from_json(
    path: &Path,
    json: &serde_json::Value,
    vocab_size: usize,
) -> Result<Vec<String>, ExportError> {
    w2v_engine::ctc::tokens_from_vocab_json(json, Some(vocab_size)).map_err(|reason| {
        ExportError::Vocab {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// sha256 over the weight files, in order.
fn hash_files(files: &[PathBuf]) -> Result<String, ExportError> {
    w2v_engine::fs::sha256_files(files).map_err(|e| CheckpointError::io(&e.path, e.source).into())
}

/// Export `src` to an ONNX model at `output`: a Hugging Face `Wav2Vec2ForCTC` folder at any
/// precision, or an fp32 model made by `w2v export` (a fine-tuned one, say) reduced to fp16 or
/// int8 (see [`exported`]). The output is written atomically: on any error nothing is left at
/// `output`.
pub fn export(
    src: &Path,
    output: &Path,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let start = Instant::now();
    check_options(options)?;
    if let Some(opset) = options
        .opset
        .filter(|o| !(MIN_OPSET..=MAX_OPSET).contains(o))
    {
        return Err(ExportError::Opset { opset });
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(ExportError::Write {
                path: output.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("directory {} does not exist", parent.display()),
                ),
            });
        }
    }
    let fairseq = src.is_file() && checkpoint::fairseq::is_torch_archive(src);
    if options.dict.is_some() && !fairseq {
        return Err(ExportError::Unsupported(
            "--dict applies to fairseq checkpoints (.pt) only".into(),
        ));
    }
    let (mut g, mut info, weight_files, fp32_source) = if fairseq {
        let (model, info) = build_fairseq(src, options)?;
        (model, info, vec![src.to_path_buf()], None)
    } else if src.is_file() {
        let m = exported::read(src)?;
        if options.precision == Precision::Fp32 && !options.fp16_weights {
            return Err(ExportError::SourceModel {
                path: src.to_path_buf(),
                reason: "is already an fp32 model; an ONNX source is re-exported at --precision \
                         fp16 or int8, or at fp32 with --fp16-weights"
                    .into(),
            });
        }
        if let Some(opset) = options.opset.filter(|&o| o != m.opset) {
            return Err(ExportError::SourceModel {
                path: src.to_path_buf(),
                reason: format!(
                    "has opset {}, and a re-quantized model keeps it (--opset {opset}); export \
                     from the Hugging Face folder for another opset",
                    m.opset
                ),
            });
        }
        let mut info = m.info;
        info.exporter_version = env!("CARGO_PKG_VERSION").into();
        info.raw.insert(
            model_info::keys::QUANTIZATION_SOURCE_MODEL_SHA256.into(),
            m.sha256,
        );
        (m.graph, info, vec![src.to_path_buf()], Some(src))
    } else if src.is_dir() {
        let (model, info, weight_files) = build_hf_folder(src, options)?;
        (model, info, weight_files, None)
    } else {
        return Err(ExportError::NoFolder {
            path: src.to_path_buf(),
        });
    };
    info.precision = options.precision.as_str().into();
    let opset = g.opset();
    let parameters = g.parameter_count();
    let mut report = None;
    if options.precision == Precision::Fp32 {
        if options.fp16_weights {
            let saved = precision::f16_storage(&mut g, precision::F16_STORAGE_MIN_ELEMENTS);
            tracing::info!(saved_bytes = saved, "weights stored as float16");
            info.raw
                .insert(model_info::keys::WEIGHT_STORAGE.into(), "fp16".into());
        }
        write_graph(&g, &info, output)?;
    } else {
        report = quantize::export_reduced(g, &mut info, output, options, fp32_source)?;
    }
    let output_bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
    // Re-read what was written so the summary shows exactly what the runtime will see.
    let info = ModelInfo::read(output).map_err(|e| ExportError::Write {
        path: output.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(ExportSummary {
        source: src.to_path_buf(),
        output: output.to_path_buf(),
        weight_files,
        parameters,
        output_bytes,
        precision: options.precision.as_str().into(),
        target: (options.precision == Precision::Int8).then(|| options.target.as_str().into()),
        opset,
        seconds: start.elapsed().as_secs_f64(),
        report,
        info,
    })
}

/// The float32 model of a Hugging Face folder with its feature encoder laid out as
/// `--quantize-conv` lays it out before quantizing ([`wav2vec2::feature_encoder_as_matmuls`]):
/// the parity tests hold that rewrite to the PyTorch references on its own.
#[doc(hidden)]
pub fn export_time_major_fp32(src: &Path, output: &Path) -> Result<(), ExportError> {
    let (mut g, info, _) = build_hf_folder(src, &ExportOptions::default())?;
    let cfg = Wav2Vec2Config::parse(src, &info.config.to_string())?;
    wav2vec2::feature_encoder_as_matmuls(&mut g, &cfg)?;
    write_graph(&g, &info, output)
}

/// The float32 graph and metadata of a Hugging Face folder, and its weight files.
fn build_hf_folder(
    src: &Path,
    options: &ExportOptions,
) -> Result<(graph::GraphBuilder, ModelInfo, Vec<PathBuf>), ExportError> {
    let config_path = src.join("config.json");
    if config_path.is_file() && Wav2Vec2Config::read(&config_path)?.is_pretrained_only() {
        return build_hf_pretrained(src, &config_path, options);
    }
    if options.new_head.is_some() {
        return Err(head_given_twice(src));
    }
    let files = read_folder_files(src)?;
    let (sd, weight_files) = checkpoint::load_state_dict(src)?;
    let source_sha256 = hash_files(&weight_files)?;
    tracing::info!(tensors = sd.len(), "read checkpoint");
    let (g, info) = build_graph(src, files, sd, source_sha256, options)?;
    Ok((g, info, weight_files))
}

/// A pre-trained Hugging Face folder (`Wav2Vec2ForPreTraining` / `Wav2Vec2Model`) with a new
/// CTC head (`options.new_head`).
fn build_hf_pretrained(
    src: &Path,
    config_path: &Path,
    options: &ExportOptions,
) -> Result<(graph::GraphBuilder, ModelInfo, Vec<PathBuf>), ExportError> {
    let Some(head) = &options.new_head else {
        return Err(no_ctc_head(src, "no lm_head", "vocab.json"));
    };
    let config = Wav2Vec2Config::read(config_path)?;
    let (sample_rate, do_normalize) = read_preprocessor(src)?;
    let (mut sd, weight_files) = checkpoint::load_state_dict(src)?;
    if sd.contains_key("lm_head.weight") {
        return Err(head_given_twice(src));
    }
    let (config, vocab) = head.attach(src, &config, &mut sd)?;
    let files = FolderFiles {
        config,
        word_delimiter: vocab.iter().any(|t| t == "|").then(|| "|".to_string()),
        vocab,
        sample_rate,
        do_normalize,
    };
    let source_sha256 = hash_files(&weight_files)?;
    let (g, info) = build_graph(src, files, sd, source_sha256, options)?;
    Ok((g, info, weight_files))
}

/// The float32 graph and metadata of a fine-tuned fairseq wav2vec 2.0 CTC checkpoint, with the
/// vocabulary of its fairseq dictionary (`options.dict`, or the one beside the checkpoint): the
/// same model and metadata as the export of its transformers conversion, except that input
/// normalization follows the checkpoint's `task.normalize` (the conversion script always turns
/// it on).
fn build_fairseq(
    src: &Path,
    options: &ExportOptions,
) -> Result<(graph::GraphBuilder, ModelInfo), ExportError> {
    let ckpt = checkpoint::fairseq::read(src)?;
    tracing::info!(
        tensors = ckpt.state_dict.len(),
        form = ckpt.sections.form,
        "read fairseq checkpoint"
    );
    let mut ckpt = ckpt;
    if !ckpt.has_ctc_head() {
        let Some(head) = &options.new_head else {
            return Err(no_ctc_head(src, "no w2v_encoder.proj", "dict.ltr.txt"));
        };
        if options.dict.is_some() {
            return Err(ExportError::Unsupported(
                "--dict names a fine-tuned checkpoint's dictionary; a new head's vocabulary is \
                 given with --vocab"
                    .into(),
            ));
        }
        let base = config::from_fairseq(src, &ckpt.sections, 2)?;
        let (config, vocab) = head.attach(src, &base, &mut ckpt.state_dict)?;
        return build_fairseq_graph(src, config, vocab, ckpt, options);
    }
    if options.new_head.is_some() {
        return Err(head_given_twice(src));
    }
    let head = &ckpt.state_dict["lm_head.weight"];
    let outputs = head.shape.first().copied().unwrap_or(0);
    let dict_path = match &options.dict {
        Some(d) => d.clone(),
        None => {
            checkpoint::fairseq::dictionary_beside(src).ok_or_else(|| ExportError::MissingFile {
                path: src.with_file_name("dict.ltr.txt"),
                what: "fairseq dictionary beside the checkpoint; give one with --dict",
            })?
        }
    };
    let vocab = checkpoint::fairseq::read_dictionary(&dict_path)?;
    if vocab.len() != outputs {
        return Err(ExportError::Vocab {
            path: dict_path,
            reason: format!(
                "has {} symbols with fairseq's 4 special ones, but the checkpoint's CTC head has \
                 {outputs} outputs",
                vocab.len()
            ),
        });
    }
    let config = config::from_fairseq(src, &ckpt.sections, outputs)?;
    build_fairseq_graph(src, config, vocab, ckpt, options)
}

/// The graph of a fairseq checkpoint `src` with its resolved config and vocabulary: sample rate
/// and normalization from its task section, the checkpoint file's hash as the source.
fn build_fairseq_graph(
    src: &Path,
    config: Wav2Vec2Config,
    vocab: Vec<String>,
    ckpt: checkpoint::fairseq::Checkpoint,
    options: &ExportOptions,
) -> Result<(graph::GraphBuilder, ModelInfo), ExportError> {
    let files = FolderFiles {
        config,
        word_delimiter: vocab.iter().any(|t| t == "|").then(|| "|".to_string()),
        vocab,
        sample_rate: fairseq_sample_rate(src, &ckpt.sections.task)?,
        do_normalize: fairseq_normalize(&ckpt.sections.task),
    };
    let source_sha256 = hash_files(&[src.to_path_buf()])?;
    build_graph(src, files, ckpt.state_dict, source_sha256, options)
}

/// A fairseq task's `sample_rate` (default 16 kHz).
fn fairseq_sample_rate(
    src: &Path,
    task: &serde_json::Map<String, serde_json::Value>,
) -> Result<u32, ExportError> {
    match task.get("sample_rate").filter(|v| !v.is_null()) {
        None => Ok(16000),
        Some(v) => v
            .as_u64()
            .filter(|&r| r > 0 && r <= 192_000)
            .map(|r| r as u32)
            .ok_or_else(|| {
                ExportError::Unsupported(format!(
                    "{}: task.sample_rate = {v} is not a usable sample rate",
                    src.display()
                ))
            }),
    }
}

/// A fairseq task's `normalize` (default false, as fairseq's).
fn fairseq_normalize(task: &serde_json::Map<String, serde_json::Value>) -> bool {
    task.get("normalize")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// The float32 graph of `sd` under `files.config`, and the model's metadata.
fn build_graph(
    src: &Path,
    files: FolderFiles,
    sd: checkpoint::StateDict,
    source_sha256: String,
    options: &ExportOptions,
) -> Result<(graph::GraphBuilder, ModelInfo), ExportError> {
    let cfg = &files.config;
    let model = wav2vec2::Wav2Vec2Graph::build(cfg, sd, options.opset.unwrap_or(DEFAULT_OPSET))
        .map_err(|e| ExportError::InCheckpoint {
            path: src.to_path_buf(),
            source: Box::new(e),
        })?;
    let (frame_stride, receptive_field) =
        model_info::conv_stride_and_receptive_field(&cfg.conv_layers());
    let pad_token_id = cfg.pad_token_id.unwrap_or(0).min(cfg.vocab_size - 1);
    let mut raw = BTreeMap::new();
    if let Some(embed) = &model.masked_spec_embed {
        let text: Vec<String> = embed.iter().map(f32::to_string).collect();
        raw.insert(model_info::keys::MASKED_SPEC_EMBED.into(), text.join(","));
    }
    let info = ModelInfo {
        format_version: FORMAT_VERSION,
        model_type: MODEL_TYPE_WAV2VEC2_CTC.into(),
        config: cfg.raw.clone(),
        vocab: files.vocab,
        sample_rate: files.sample_rate,
        do_normalize: files.do_normalize,
        frame_stride,
        receptive_field,
        uses_attention_mask: cfg.uses_attention_mask(),
        pad_token_id,
        word_delimiter_token: files.word_delimiter,
        precision: Precision::Fp32.as_str().into(),
        source_sha256,
        exporter_version: env!("CARGO_PKG_VERSION").into(),
        raw,
    };
    Ok((model.g, info))
}

fn check_options(options: &ExportOptions) -> Result<(), ExportError> {
    if options.precision != Precision::Int8 {
        if options.target != QuantizationTarget::Cpu {
            return Err(ExportError::Unsupported(
                "--target applies to --precision int8 only".into(),
            ));
        }
        if options.quantize_conv {
            return Err(ExportError::Unsupported(
                "--quantize-conv applies to --precision int8 only".into(),
            ));
        }
    }
    if options.fp16_weights && options.precision != Precision::Fp32 {
        return Err(ExportError::Unsupported(
            "--fp16-weights applies to --precision fp32 only (fp16 and int8 exports always \
             store their float32 weights as float16)"
                .into(),
        ));
    }
    if options.precision == Precision::Fp32
        && (options.max_wer_increase.is_some() || options.eval.is_some())
    {
        return Err(ExportError::Unsupported(
            "--eval and --max-wer-increase apply to --precision fp16 and int8 only".into(),
        ));
    }
    if options.calibration_method != CalibrationMethod::Percentile
        && options.target != QuantizationTarget::TensorRt
    {
        return Err(ExportError::Unsupported(
            "--calibration-method applies to --target tensorrt only".into(),
        ));
    }
    if options.calibration.is_some() && options.target != QuantizationTarget::TensorRt {
        return Err(ExportError::Unsupported(
            "--calibration applies to --target tensorrt only (cpu int8 quantizes activations at run time)"
                .into(),
        ));
    }
    if let Some(m) = options.max_wer_increase {
        if !(m.is_finite() && m >= 0.0) {
            return Err(ExportError::Unsupported(format!(
                "--max-wer-increase must be a non-negative number of percentage points, not {m}"
            )));
        }
        if options.skip_report {
            return Err(ExportError::Unsupported(
                "--max-wer-increase needs the accuracy report".into(),
            ));
        }
    }
    Ok(())
}

/// Write a graph with `info` as its metadata, atomically.
pub(crate) fn write_graph(
    g: &graph::GraphBuilder,
    info: &ModelInfo,
    output: &Path,
) -> Result<(), ExportError> {
    atomic_write(output, |w| {
        g.write_model(w, env!("CARGO_PKG_VERSION"), info.to_metadata_props())
    })
    .map_err(|e| match e {
        AtomicWriteError::Io { path, source } => ExportError::Write { path, source },
        AtomicWriteError::Write(source) => ExportError::Write {
            path: output.to_path_buf(),
            source,
        },
    })
}
