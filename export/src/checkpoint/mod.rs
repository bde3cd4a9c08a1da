//! Checkpoint readers: Hugging Face weights as safetensors or pytorch `.bin` (optionally sharded),
//! and fairseq `.pt` checkpoints with their dictionaries ([`fairseq`]),
//! read into float32 tensors by name. Loading never executes code from the checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod fairseq;
pub mod pytorch;
pub mod safetensors;

/// A dense float32 tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
}

/// Tensors by their checkpoint name.
pub type StateDict = BTreeMap<String, Tensor>;

/// Element types found in checkpoints; all are converted to float32 on load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Convert `count` little-endian elements starting at `bytes` to f32.
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid {format} file: {reason}")]
    Format {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{path}: refused to load: {reason} (checkpoints may only contain data, never code)")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` has unsupported element type {dtype}")]
    DType {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{dir}: no weights found (expected model.safetensors, pytorch_model.bin or a sharded *.index.json)")]
    NoWeights { dir: PathBuf },
    #[error("{path}: tensor `{name}` appears in more than one weights file")]
    Duplicate { path: PathBuf, name: String },
}

impl CheckpointError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The weight files of a Hugging Face model folder, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(single);
        if p.is_file() {
            return Ok(vec![p]);
        }
    }
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let p = dir.join(index);
        if p.is_file() {
            return shard_files(&p);
        }
    }
    Err(CheckpointError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

/// The shard files named by a sharded checkpoint's index, in first-use order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let text = std::fs::read_to_string(index).map_err(|e| CheckpointError::io(index, e))?;
    let format = |reason: String| CheckpointError::Format {
        path: index.to_path_buf(),
        format: "checkpoint index",
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format("no \"weight_map\" object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format(format!("weight_map[{name:?}] is not a file name")))?;
        // Shards must live beside the index: refuse paths that climb out of the folder.
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(format(format!(
                "shard name {file:?} is not a plain file name"
            )));
        }
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(format("empty weight_map".into()));
    }
    files.sort();
    Ok(files)
}

/// Read one weight file by its extension.
pub fn read_file(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    if !path.is_file() {
        return Err(CheckpointError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => safetensors::read(path),
        _ => pytorch::read(path),
    }
}

/// Read all weights of a model folder (single file or shards) into one state dict.
pub fn load_state_dict(dir: &Path) -> Result<(StateDict, Vec<PathBuf>), CheckpointError> {
    let files = weight_files(dir)?;
    let mut sd = StateDict::new();
    for f in &files {
        for (name, t) in read_file(f)? {
            if sd.insert(name.clone(), t).is_some() {
                return Err(CheckpointError::Duplicate {
                    path: f.clone(),
                    name,
                });
            }
        }
    }
    Ok((sd, files))
}
