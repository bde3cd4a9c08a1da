//! Training checkpoints: the complete [`TrainingState`] plus the settings it was made with, so
//! that `--resume` continues bit for bit.
//!
//! Layout: the magic `W2VCKPT1`, a little-endian u64 header length, a JSON header (settings,
//! step, RNG, epoch, data order, cursor, optimizer step, parameter names and sizes), then for
//! each parameter its values, AdamW first moments and second moments as little-endian f32.
//! Written with [`w2v_engine::fs::atomic_write`]: a crash leaves the previous checkpoint intact.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use w2v_engine::fs::{atomic_write, AtomicWriteError};

use crate::optim::{AdamW, AdamWConfig};
use crate::rng::SplitMix64;
use crate::trainer::{Trainer, TrainerConfig, TrainingState};

const MAGIC: &[u8; 8] = b"W2VCKPT1";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Write(#[from] AtomicWriteError<std::io::Error>),
    #[error("{path}: cannot read checkpoint: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a w2v checkpoint ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: made with different settings ({what}); resume with the same ones")]
    Settings { path: PathBuf, what: String },
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Settings {
    steps: u64,
    lr: f64,
    batch_seconds: f64,
    accumulation: u32,
    max_grad_norm: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    seed: u64,
    freeze_feature_encoder: bool,
    #[serde(default)]
    freeze_transformer_steps: u64,
    #[serde(default)]
    mask_time: (f64, usize),
    #[serde(default)]
    mask_channel: (f64, usize),
    #[serde(default)]
    layer_drop: f64,
}

impl From<&TrainerConfig> for Settings {
    fn from(c: &TrainerConfig) -> Self {
        Settings {
            steps: c.steps,
            lr: c.lr,
            batch_seconds: c.batch_seconds,
            accumulation: c.accumulation,
            max_grad_norm: c.max_grad_norm,
            beta1: c.adam.beta1,
            beta2: c.adam.beta2,
            eps: c.adam.eps,
            weight_decay: c.adam.weight_decay,
            seed: c.seed,
            freeze_feature_encoder: c.freeze_feature_encoder,
            freeze_transformer_steps: c.freeze_transformer_steps,
            mask_time: (c.masking.time_prob, c.masking.time_length),
            mask_channel: (c.masking.channel_prob, c.masking.channel_length),
            layer_drop: c.layer_drop,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    settings: Settings,
    step: u64,
    rng: u64,
    epoch: u64,
    order: Vec<u32>,
    cursor: usize,
    optimizer_step: u64,
    parameters: Vec<(String, usize)>,
}

fn write_f32s(w: &mut impl Write, v: &[f32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(v.len() * 4);
    for x in v {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&buf)
}

fn read_f32s(r: &mut impl Read, n: usize) -> std::io::Result<Vec<f32>> {
    let mut buf = vec![0u8; n * 4];
    r.read_exact(&mut buf)?;
    Ok(buf
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect())
}

/// Write `trainer`'s state to `path` atomically.
pub fn save(path: &Path, trainer: &Trainer) -> Result<(), CheckpointError> {
    let s = &trainer.state;
    let header = Header {
        settings: Settings::from(trainer.config()),
        step: s.step,
        rng: s.rng.0,
        epoch: s.epoch,
        order: s.order.clone(),
        cursor: s.cursor,
        optimizer_step: s.optimizer.step,
        parameters: trainer
            .parameters()
            .iter()
            .zip(&s.params)
            .map(|(p, v)| (p.name.clone(), v.len()))
            .collect(),
    };
    let json = serde_json::to_vec(&header).map_err(std::io::Error::other);
    atomic_write(path, |w| {
        let json = json?;
        w.write_all(MAGIC)?;
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        for ((p, m), v) in s.params.iter().zip(&s.optimizer.m).zip(&s.optimizer.v) {
            write_f32s(w, p)?;
            write_f32s(w, m)?;
            write_f32s(w, v)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Read a checkpoint made for `trainer` (same parameters, same settings).
pub fn load(path: &Path, trainer: &Trainer) -> Result<TrainingState, CheckpointError> {
    let read = |source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    };
    let format = |reason: String| CheckpointError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut r = std::io::BufReader::new(std::fs::File::open(path).map_err(read)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| format("too short".into()))?;
    if &magic != MAGIC {
        return Err(format("bad magic".into()));
    }
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(read)?;
    let len = u64::from_le_bytes(len) as usize;
    if len > 1 << 30 {
        return Err(format(format!("header of {len} bytes")));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json).map_err(read)?;
    let h: Header = serde_json::from_slice(&json).map_err(|e| format(e.to_string()))?;
    let want = Settings::from(trainer.config());
    if h.settings != want {
        return Err(CheckpointError::Settings {
            path: path.to_path_buf(),
            what: format!("checkpoint {:?}, now {want:?}", h.settings),
        });
    }
    let expected: Vec<(String, usize)> = trainer
        .parameters()
        .iter()
        .map(|p| (p.name.clone(), p.shape.iter().product()))
        .collect();
    if h.parameters != expected {
        return Err(CheckpointError::Settings {
            path: path.to_path_buf(),
            what: "different trainable parameters".into(),
        });
    }
    let mut params = Vec::new();
    let mut m = Vec::new();
    let mut v = Vec::new();
    for (_, n) in &h.parameters {
        params.push(read_f32s(&mut r, *n).map_err(read)?);
        m.push(read_f32s(&mut r, *n).map_err(read)?);
        v.push(read_f32s(&mut r, *n).map_err(read)?);
    }
    let config: AdamWConfig = trainer.config().adam;
    Ok(TrainingState {
        step: h.step,
        rng: SplitMix64(h.rng),
        epoch: h.epoch,
        order: h.order,
        cursor: h.cursor,
        params,
        optimizer: AdamW {
            config,
            step: h.optimizer_step,
            m,
            v,
        },
    })
}
