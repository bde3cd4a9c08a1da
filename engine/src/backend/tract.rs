//! The tract backend: pure Rust, CPU, no setup.
//!
//! Plans. tract cannot optimize a graph whose symbolic time axis runs through strided convs into
//! an attention mask, so models with a mask get concrete-shape plans: inputs are padded (with a
//! zero mask, which is exact) up to a whole number of seconds, and one plan is compiled per
//! (batch, padded length) and cached. Models without a mask cannot be padded without changing
//! their per-utterance normalization, so they get one plan with a symbolic length. At most
//! `MAX_PLANS` plans are kept, so memory does not grow with the number of distinct lengths.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::runner::{order_inputs, GraphRunner, HostTensor, TensorView, TensorViewData};
use super::{attention_mask, Backend, BackendError, BackendOptions, Batch, Logits};
use crate::model_info::ModelInfo;

type Plan = Arc<TypedRunnableModel>;

/// Plans kept at once (each holds its own packed weights).
const MAX_PLANS: usize = 4;

/// Compiled plans by key (input shapes), at most [`MAX_PLANS`], least recently used evicted
/// first: the one cache of [`TractBackend`] and [`TractGraph`].
struct PlanCache<K> {
    plans: HashMap<K, Plan>,
    /// Keys of `plans`, least recently used first.
    recent: Vec<K>,
}

impl<K: Clone + Eq + std::hash::Hash> PlanCache<K> {
    fn new() -> Self {
        PlanCache {
            plans: HashMap::new(),
            recent: Vec::new(),
        }
    }

    /// The plan for `key`, compiled by `compile` unless cached.
    fn get_or_compile<E>(
        &mut self,
        key: K,
        compile: impl FnOnce() -> Result<Plan, E>,
    ) -> Result<Plan, E> {
        self.recent.retain(|k| *k != key);
        self.recent.push(key.clone());
        if let Some(p) = self.plans.get(&key) {
            return Ok(p.clone());
        }
        if self.plans.len() >= MAX_PLANS {
            let oldest = self.recent.remove(0);
            self.plans.remove(&oldest);
        }
        let plan = compile()?;
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }
}

pub struct TractBackend {
    path: PathBuf,
    info: ModelInfo,
    model: InferenceModel,
    /// Plans by (batch, plan length).
    plans: PlanCache<(usize, usize)>,
    /// tract could not optimize this model with a symbolic length: use exact-length plans.
    symbolic_failed: bool,
    /// The thread pool matrix products run on (single-threaded when `None`).
    executor: Option<tract_linalg::multithread::Executor>,
}

const NAME: &str = "tract";

impl TractBackend {
    /// Load a model. `options.threads` sizes tract's matrix-product thread pool; `None` uses
    /// every available core, as ONNX Runtime does.
    pub fn load(path: &Path, options: &BackendOptions) -> Result<Self, BackendError> {
        let executor = executor(options);
        let info = ModelInfo::read(path)?;
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| load_err(path, e))?;
        Ok(TractBackend {
            path: path.to_path_buf(),
            info,
            model,
            plans: PlanCache::new(),
            symbolic_failed: false,
            executor,
        })
    }

    /// The input length a plan is compiled for: a whole number of seconds for masked models,
    /// 0 (symbolic) for the others, or the exact length where tract cannot do symbolic.
    fn plan_len(&self, len: usize) -> usize {
        if self.info.uses_attention_mask {
            let bucket = self.info.sample_rate as usize;
            len.div_ceil(bucket).max(1) * bucket
        } else if self.symbolic_failed {
            len
        } else {
            0
        }
    }

    fn plan(&mut self, batch: usize, plan_len: usize) -> Result<Plan, BackendError> {
        let (path, info, model) = (&self.path, &self.info, &self.model);
        self.plans.get_or_compile((batch, plan_len), || {
            tracing::debug!(batch, plan_len, "tract: compiling plan");
            let mut model = model.clone();
            let err = |e: TractError| load_err(path, e);
            let len_dim = if plan_len == 0 {
                model.sym("samples").to_dim()
            } else {
                plan_len.to_dim()
            };
            model = model
                .with_input_fact(0, f32::fact([batch.to_dim(), len_dim.clone()]).into())
                .map_err(err)?;
            if info.uses_attention_mask {
                model = model
                    .with_input_fact(1, i64::fact([batch.to_dim(), len_dim]).into())
                    .map_err(err)?;
            }
            model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(err)
        })
    }
}

/// The thread pool for `options.threads` (every available core when `None`); `None` when one
/// thread is asked for.
fn executor(options: &BackendOptions) -> Option<tract_linalg::multithread::Executor> {
    let threads = options
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    (threads > 1)
        .then(|| tract_linalg::multithread::Executor::multithread_with_name(threads, "w2v-tract"))
}

/// Run `plan` on `executor`'s threads (or this one).
fn run_plan(
    plan: &Plan,
    executor: &Option<tract_linalg::multithread::Executor>,
    inputs: TVec<TValue>,
) -> TractResult<TVec<TValue>> {
    match executor {
        Some(pool) => {
            tract_linalg::multithread::multithread_tract_scope(pool.clone(), || plan.run(inputs))
        }
        None => plan.run(inputs),
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
        if self.info.frames_for_samples(batch.len) == 0 {
            // Shorter than one receptive field: the conv stack yields no frames.
            let vocab = self.info.vocab.len();
            return Ok(Logits {
                data: Vec::new(),
                batch: batch.batch,
                frames: 0,
                vocab,
            });
        }
        let mut plan_len = self.plan_len(batch.len);
        let plan = match self.plan(batch.batch, plan_len) {
            Err(e) if plan_len == 0 => {
                tracing::debug!("tract: no symbolic-length plan ({e}); using exact lengths");
                self.symbolic_failed = true;
                plan_len = self.plan_len(batch.len);
                self.plan(batch.batch, plan_len)?
            }
            other => other?,
        };
        let run_len = if plan_len == 0 { batch.len } else { plan_len };
        let padded;
        let samples = if run_len == batch.len {
            batch.samples
        } else {
            let mut p = vec![0f32; batch.batch * run_len];
            for b in 0..batch.batch {
                p[b * run_len..b * run_len + batch.len]
                    .copy_from_slice(&batch.samples[b * batch.len..(b + 1) * batch.len]);
            }
            padded = p;
            &padded
        };
        let input = Tensor::from_shape(&[batch.batch, run_len], samples).map_err(run_err)?;
        let mut inputs: TVec<TValue> = tvec!(input.into());
        if self.info.uses_attention_mask {
            let padded_batch = Batch {
                samples,
                batch: batch.batch,
                len: run_len,
                lengths: batch.lengths,
            };
            let mask = Tensor::from_shape(&[batch.batch, run_len], &attention_mask(&padded_batch))
                .map_err(run_err)?;
            inputs.push(mask.into());
        }
        let outputs = run_plan(&plan, &self.executor, inputs).map_err(run_err)?;
        let logits = outputs[0].to_plain_array_view::<f32>().map_err(run_err)?;
        let shape = logits.shape().to_vec();
        if shape.len() != 3 {
            return Err(run_err(format!(
                "logits have rank {}, expected 3",
                shape.len()
            )));
        }
        // Frames of the unpadded length only, as if the input had not been padded.
        let frames = self.info.frames_for_samples(batch.len).min(shape[1]);
        let vocab = shape[2];
        let mut data = Vec::with_capacity(shape[0] * frames * vocab);
        for b in 0..shape[0] {
            let row = logits.index_axis(tract_ndarray::Axis(0), b);
            data.extend(row.iter().take(frames * vocab).copied());
        }
        Ok(Logits {
            data,
            batch: shape[0],
            frames,
            vocab,
        })
    }
}

/// Input shapes, and the values of int64 inputs.
type PlanKey = Vec<(Vec<usize>, Vec<i64>)>;

/// Any ONNX graph on tract ([`GraphRunner`]). Plans are compiled for the concrete input shapes of
/// a run and cached (at most `MAX_PLANS`), as [`TractBackend`] does for masked models.
pub struct TractGraph {
    model: InferenceModel,
    inputs: Vec<String>,
    outputs: Vec<String>,
    plans: PlanCache<PlanKey>,
    executor: Option<tract_linalg::multithread::Executor>,
}

impl TractGraph {
    /// Load a serialized ONNX model; `what` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        what: &Path,
        options: &BackendOptions,
    ) -> Result<Self, BackendError> {
        let proto = <crate::onnx_pb::ModelProto as prost::Message>::decode(bytes)
            .map_err(|e| load_err(what, e))?;
        let graph = proto.graph.unwrap_or_default();
        let outputs = graph.output.iter().map(|o| o.name.clone()).collect();
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| load_err(what, e))?;
        // tract's own input order (by input node name), which is what input facts index.
        let inputs = model
            .input_outlets()
            .map_err(|e| load_err(what, e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        Ok(TractGraph {
            model,
            inputs,
            outputs,
            plans: PlanCache::new(),
            executor: executor(options),
        })
    }

    /// This graph with the named tensors (intermediate ones included) as its outputs, in that
    /// order, instead of the model's own: how int8 calibration reads activations, on the same
    /// cached plans as any other run.
    pub fn with_outputs(mut self, names: &[String]) -> Result<Self, BackendError> {
        self.model = self.model.with_outputs_by_name(names).map_err(run_err)?;
        self.outputs = names.to_vec();
        self.plans = PlanCache::new();
        Ok(self)
    }

    /// The plan for these inputs. Int64 inputs (shapes, in the graphs training generates) are
    /// planned as constants: tract needs constant shapes for `Reshape`, `Pad` and the like, so
    /// their values are part of the plan's key.
    fn plan(&mut self, inputs: &[TensorView<'_>]) -> Result<Plan, BackendError> {
        let key: PlanKey = inputs
            .iter()
            .map(|t| {
                let values = match t.data {
                    TensorViewData::I64(d) => d.to_vec(),
                    TensorViewData::F32(_) => Vec::new(),
                };
                (t.shape.to_vec(), values)
            })
            .collect();
        let model = &self.model;
        self.plans.get_or_compile(key, || {
            let mut model = model.clone();
            for (i, t) in inputs.iter().enumerate() {
                let fact: InferenceFact = match t.data {
                    TensorViewData::F32(_) => f32::fact(t.shape).into(),
                    TensorViewData::I64(d) => {
                        Tensor::from_shape(t.shape, d).map_err(run_err)?.into()
                    }
                };
                model = model.with_input_fact(i, fact).map_err(run_err)?;
            }
            model
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(run_err)
        })
    }
}

impl GraphRunner for TractGraph {
    fn name(&self) -> &'static str {
        NAME
    }

    fn input_names(&self) -> &[String] {
        &self.inputs
    }

    fn output_names(&self) -> &[String] {
        &self.outputs
    }

    fn run(&mut self, inputs: &[(&str, TensorView<'_>)]) -> Result<Vec<HostTensor>, BackendError> {
        let order = order_inputs(NAME, &self.inputs, inputs)?;
        let ordered: Vec<TensorView<'_>> = order.iter().map(|&i| inputs[i].1).collect();
        let plan = self.plan(&ordered)?;
        let values: TVec<TValue> = ordered
            .iter()
            .map(|t| {
                match t.data {
                    TensorViewData::F32(d) => Tensor::from_shape(t.shape, d),
                    TensorViewData::I64(d) => Tensor::from_shape(t.shape, d),
                }
                .map(TValue::from)
            })
            .collect::<TractResult<_>>()
            .map_err(run_err)?;
        let outputs = run_plan(&plan, &self.executor, values).map_err(run_err)?;
        outputs
            .iter()
            .map(|v| {
                let shape = v.shape().to_vec();
                // Shapes come out of tract as TDim: every non-float is returned as int64.
                if !v.datum_type().is_float() {
                    let c = v.cast_to::<i64>().map_err(run_err)?;
                    let d = c.to_plain_array_view::<i64>().map_err(run_err)?;
                    Ok(HostTensor::i64(shape, d.iter().copied().collect()))
                } else {
                    let c = v.cast_to::<f32>().map_err(run_err)?;
                    let d = c.to_plain_array_view::<f32>().map_err(run_err)?;
                    Ok(HostTensor::f32(shape, d.iter().copied().collect()))
                }
            })
            .collect()
    }
}
