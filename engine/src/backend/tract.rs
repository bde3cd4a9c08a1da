//! The tract backend: pure Rust, CPU, no setup.
//!
//! tract optimizes best (and, for graphs with an attention mask, only loads) with concrete input
//! shapes, so the model is parsed once and an optimized plan is compiled per input shape and
//! cached. Callers keep the number of distinct shapes small (fixed-size chunks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{attention_mask, Backend, BackendError, BackendOptions, Batch, Logits};
use crate::model_info::ModelInfo;

type Plan = Arc<TypedRunnableModel>;

pub struct TractBackend {
    path: PathBuf,
    info: ModelInfo,
    model: InferenceModel,
    plans: HashMap<(usize, usize), Plan>,
}

const NAME: &str = "tract";

impl TractBackend {
    pub fn load(path: &Path, _options: &BackendOptions) -> Result<Self, BackendError> {
        let info = ModelInfo::read(path)?;
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| load_err(path, e))?;
        Ok(TractBackend {
            path: path.to_path_buf(),
            info,
            model,
            plans: HashMap::new(),
        })
    }

    fn plan(&mut self, batch: usize, len: usize) -> Result<Plan, BackendError> {
        if let Some(p) = self.plans.get(&(batch, len)) {
            return Ok(p.clone());
        }
        tracing::debug!(batch, len, "tract: compiling plan");
        let mut model = self.model.clone();
        let err = |e: TractError| load_err(&self.path, e);
        model = model
            .with_input_fact(0, f32::fact([batch, len]).into())
            .map_err(err)?;
        if self.info.uses_attention_mask {
            model = model
                .with_input_fact(1, i64::fact([batch, len]).into())
                .map_err(err)?;
        }
        let plan: Plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(err)?;
        self.plans.insert((batch, len), plan.clone());
        Ok(plan)
    }
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Load {
        backend: NAME,
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    }
}

fn run_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Run {
        backend: NAME,
        reason: format!("{e:#}"),
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn run(&mut self, batch: &Batch<'_>) -> Result<Logits, BackendError> {
        let plan = self.plan(batch.batch, batch.len)?;
        let input =
            Tensor::from_shape(&[batch.batch, batch.len], batch.samples).map_err(run_err)?;
        let mut inputs: TVec<TValue> = tvec!(input.into());
        if self.info.uses_attention_mask {
            let mask = Tensor::from_shape(&[batch.batch, batch.len], &attention_mask(batch))
                .map_err(run_err)?;
            inputs.push(mask.into());
        }
        let outputs = plan.run(inputs).map_err(run_err)?;
        let logits = outputs[0].to_plain_array_view::<f32>().map_err(run_err)?;
        let shape = logits.shape().to_vec();
        if shape.len() != 3 {
            return Err(run_err(format!(
                "logits have rank {}, expected 3",
                shape.len()
            )));
        }
        Ok(Logits {
            data: logits.iter().copied().collect(),
            batch: shape[0],
            frames: shape[1],
            vocab: shape[2],
        })
    }
}
