//! The fine-tuning loop: batches by audio seconds, forward → CTC → backward, gradient
//! accumulation and clipping, AdamW on the tri-stage schedule, and the complete training state
//! (for checkpoints that resume bit for bit).

use std::collections::BTreeMap;

use w2v_engine::backend::{BackendError, TensorView};
use w2v_engine::model_info::ModelInfo;
use w2v_engine::onnx_pb::{ModelProto, StringStringEntryProto};

use crate::autodiff::{AutodiffError, TrainingGraphs};
use crate::ctc::{ctc_loss, CtcError, LogitsView, Reduction};
use crate::gradients::{GradientRunner, RunnerFactory};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, TriStage};
use crate::parameters;
use crate::regularize::{self, InstrumentError, Masking};
use crate::rng::SplitMix64;

/// One labelled utterance, ready for the model: normalized as it expects, labels encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub samples: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Fine-tuning settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Optimizer updates.
    pub steps: u64,
    /// Peak learning rate of the tri-stage schedule.
    pub lr: f64,
    /// Padded audio per forward pass, in seconds (at least one utterance).
    pub batch_seconds: f64,
    /// Forward/backward passes summed into each update.
    pub accumulation: u32,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    pub adam: AdamWConfig,
    /// Seeds the data order.
    pub seed: u64,
    pub freeze_feature_encoder: bool,
    /// Only the CTC head trains for this many first updates (fairseq's
    /// `freeze_finetune_updates`); the Transformer's AdamW moments start afterwards.
    pub freeze_transformer_steps: u64,
    /// Time and channel masking of the Transformer input.
    pub masking: Masking,
    /// LayerDrop: probability of skipping each Transformer layer in an update.
    pub layer_drop: f64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            steps: 1000,
            lr: 5e-5,
            batch_seconds: 16.0,
            accumulation: 1,
            max_grad_norm: 1.0,
            adam: AdamWConfig::default(),
            seed: 0,
            freeze_feature_encoder: true,
            freeze_transformer_steps: 0,
            masking: Masking::NONE,
            layer_drop: 0.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Ctc(#[from] CtcError),
    #[error("the model is not a w2v model: {0}")]
    Model(String),
    #[error(transparent)]
    Masking(#[from] InstrumentError),
    #[error("no training examples")]
    NoData,
    #[error("checkpoint does not match this model and settings: {0}")]
    Mismatch(String),
}

/// The model's `masked_spec_embed` from its metadata ([`w2v_engine::model_info::keys::MASKED_SPEC_EMBED`]),
/// or zeros for models exported without one (a checkpoint trained without SpecAugment).
fn masked_spec_embed(model: &ModelProto, hidden: usize) -> Result<Vec<f32>, TrainError> {
    let key = w2v_engine::model_info::keys::MASKED_SPEC_EMBED;
    let Some(e) = model.metadata_props.iter().find(|e| e.key == key) else {
        return Ok(vec![0.0; hidden]);
    };
    e.value
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<Vec<f32>, _>>()
        .map_err(|err| TrainError::Model(format!("{key}: {err}")))
}

/// The extra inputs of the instrumented training graphs ([`regularize`]): time and channel
/// keep-masks and LayerDrop gates, with their shapes.
struct RegularizationInputs {
    time: Vec<f32>,
    time_shape: [usize; 3],
    channel: Vec<f32>,
    channel_shape: [usize; 3],
    gates: Vec<f32>,
}

impl RegularizationInputs {
    fn new(
        batch: usize,
        frames: usize,
        hidden: usize,
        time: Vec<f32>,
        channel: Vec<f32>,
        gates: Vec<f32>,
    ) -> Self {
        RegularizationInputs {
            time,
            time_shape: [batch, frames, 1],
            channel,
            channel_shape: [batch, 1, hidden],
            gates,
        }
    }

    /// The training graphs' inputs: `samples` (`shape`), the attention `mask` where the model
    /// takes one, the keep-masks when `masking`, and one LayerDrop gate per name in `gate_names`.
    #[allow(clippy::too_many_arguments)]
    fn graph_inputs<'a>(
        &'a self,
        shape: &'a [usize; 2],
        samples: &'a [f32],
        mask: &'a [i64],
        uses_attention_mask: bool,
        masking: bool,
        gate_names: &'a [String],
    ) -> Vec<(&'a str, TensorView<'a>)> {
        let mut inputs = vec![("input_values", TensorView::f32(shape, samples))];
        if uses_attention_mask {
            inputs.push(("attention_mask", TensorView::i64(shape, mask)));
        }
        if masking {
            inputs.push((
                regularize::TIME_KEEP,
                TensorView::f32(&self.time_shape, &self.time),
            ));
            inputs.push((
                regularize::CHANNEL_KEEP,
                TensorView::f32(&self.channel_shape, &self.channel),
            ));
        }
        for (name, g) in gate_names.iter().zip(&self.gates) {
            inputs.push((
                name.as_str(),
                TensorView::f32(&[1], std::slice::from_ref(g)),
            ));
        }
        inputs
    }
}

/// Everything that determines the rest of a run: resuming from it continues bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingState {
    /// Updates done.
    pub step: u64,
    pub rng: SplitMix64,
    pub epoch: u64,
    /// This epoch's example order, and how far into it we are.
    pub order: Vec<u32>,
    pub cursor: usize,
    /// Parameter values, in [`GradientRunner::parameters`] order.
    pub params: Vec<Vec<f32>>,
    pub optimizer: AdamW,
}

/// What one update did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub step: u64,
    /// Mean CTC loss over the update's batches (per-utterance loss / target length).
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub utterances: usize,
    /// Utterances whose transcript no alignment fits (zero loss and gradient).
    pub infeasible: usize,
}

pub struct Trainer {
    runner: GradientRunner,
    info: ModelInfo,
    /// Model width (channels of the Transformer input), for the channel masks.
    hidden: usize,
    /// Per parameter: whether it belongs to the CTC head (trains while the Transformer is frozen).
    head: Vec<bool>,
    /// The LayerDrop gate inputs, one per Transformer layer (empty without LayerDrop).
    layer_gates: Vec<String>,
    config: TrainerConfig,
    schedule: TriStage,
    pub state: TrainingState,
}

/// `model` with weights stored as float16 (`w2v export --fp16-weights`) widened back to float32
/// initializers, so that they are found, trained and written as float32 weights; `model` itself
/// when it has none.
fn widened(model: &ModelProto) -> std::borrow::Cow<'_, ModelProto> {
    let stored_f16 = model.graph.as_ref().is_some_and(|g| {
        g.initializer
            .iter()
            .any(|t| t.data_type == w2v_engine::onnx_pb::data_type::FLOAT16)
    });
    if !stored_f16 {
        return std::borrow::Cow::Borrowed(model);
    }
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        w2v_engine::onnx_pb::widen_f16_storage(g);
    }
    m.metadata_props
        .retain(|e| e.key != w2v_engine::model_info::keys::WEIGHT_STORAGE);
    std::borrow::Cow::Owned(m)
}

impl Trainer {
    /// Prepare fine-tuning of `model` (an fp32 w2v model); `make` loads graphs on the backend
    /// the caller chose.
    pub fn new(
        model: &ModelProto,
        config: TrainerConfig,
        examples: usize,
        make: &RunnerFactory<'_>,
    ) -> Result<Self, TrainError> {
        if examples == 0 {
            return Err(TrainError::NoData);
        }
        let widened_model = widened(model);
        let model = &*widened_model;
        let info = ModelInfo::from_metadata_props("model", &model.metadata_props)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let freeze = config.freeze_feature_encoder;
        let hidden = info
            .model_config()
            .map_err(|e| TrainError::Model(e.to_string()))?
            .hidden_size;
        let mut source = std::borrow::Cow::Borrowed(model);
        if config.masking.is_active() {
            let embed = masked_spec_embed(model, hidden)?;
            source = std::borrow::Cow::Owned(regularize::instrument(&source, &embed, hidden)?);
        }
        let mut layer_gates = Vec::new();
        if config.layer_drop > 0.0 {
            let (m, layers) = regularize::instrument_layer_drop(&source)?;
            source = std::borrow::Cow::Owned(m);
            layer_gates = (0..layers).map(regularize::layer_keep).collect();
        }
        let graphs = TrainingGraphs::build(&source, |t| parameters::is_trainable(t, freeze))?;
        let inits = &model
            .graph
            .as_ref()
            .ok_or(AutodiffError::NoGraph)?
            .initializer;
        let params: Vec<Vec<f32>> = graphs
            .parameters
            .iter()
            .map(|p| {
                let t = inits
                    .iter()
                    .find(|t| t.name == p.name)
                    .expect("a parameter");
                if t.raw_data.is_empty() {
                    t.float_data.clone()
                } else {
                    t.raw_data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                        .collect()
                }
            })
            .collect();
        let sizes: Vec<usize> = params.iter().map(Vec::len).collect();
        let head = graphs
            .parameters
            .iter()
            .map(|p| parameters::in_ctc_head(&p.name))
            .collect();
        let runner = GradientRunner::new(graphs, make)?;
        let mut rng = SplitMix64(config.seed);
        let mut order: Vec<u32> = (0..examples as u32).collect();
        rng.shuffle(&mut order);
        let state = TrainingState {
            step: 0,
            rng,
            epoch: 0,
            order,
            cursor: 0,
            params,
            optimizer: AdamW::new(config.adam, &sizes),
        };
        Ok(Trainer {
            runner,
            info,
            hidden,
            head,
            layer_gates,
            schedule: TriStage::paper(config.lr, config.steps),
            config,
            state,
        })
    }

    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn parameters(&self) -> &[crate::autodiff::Parameter] {
        self.runner.parameters()
    }

    /// Replace the state (resuming a checkpoint); checks it fits this model and data set.
    pub fn restore(&mut self, state: TrainingState, examples: usize) -> Result<(), TrainError> {
        let sizes: Vec<usize> = self.state.params.iter().map(Vec::len).collect();
        let got: Vec<usize> = state.params.iter().map(Vec::len).collect();
        if sizes != got {
            return Err(TrainError::Mismatch("parameter shapes differ".into()));
        }
        if state.order.len() != examples {
            return Err(TrainError::Mismatch(format!(
                "it was made for {} examples, the data has {examples}",
                state.order.len()
            )));
        }
        self.state = state;
        Ok(())
    }

    /// The next batch: examples in this epoch's order until `batch_seconds` of padded audio.
    fn next_batch(&mut self, data: &[Example]) -> Vec<usize> {
        let budget = (self.config.batch_seconds * self.info.sample_rate as f64) as usize;
        let mut batch: Vec<usize> = Vec::new();
        let mut longest = 0;
        loop {
            if self.state.cursor == self.state.order.len() {
                if !batch.is_empty() {
                    break; // an epoch's last batch may be short
                }
                self.state.epoch += 1;
                self.state.cursor = 0;
                self.state.rng.shuffle(&mut self.state.order);
            }
            let i = self.state.order[self.state.cursor] as usize;
            let len = longest.max(data[i].samples.len());
            if !batch.is_empty() && len * (batch.len() + 1) > budget {
                break;
            }
            batch.push(i);
            longest = len;
            self.state.cursor += 1;
        }
        batch
    }

    /// One forward/backward pass over `batch`: returns (Σ per-utterance normalized loss,
    /// infeasible count) and adds the gradient of the batch's mean loss, scaled by `scale`.
    fn accumulate(
        &mut self,
        data: &[Example],
        batch: &[usize],
        scale: f32,
        grads: &mut Option<Vec<Vec<f32>>>,
    ) -> Result<(f64, usize), TrainError> {
        let len = batch
            .iter()
            .map(|&i| data[i].samples.len())
            .max()
            .unwrap_or(0);
        let b = batch.len();
        let mut samples = vec![0f32; b * len];
        let mut mask = vec![0i64; b * len];
        for (row, &i) in batch.iter().enumerate() {
            let s = &data[i].samples;
            samples[row * len..row * len + s.len()].copy_from_slice(s);
            mask[row * len..row * len + s.len()].fill(1);
        }
        let shape = [b, len];
        let padded_frames = self.info.frames_for_samples(len);
        let valid: Vec<usize> = batch
            .iter()
            .map(|&i| self.info.frames_for_samples(data[i].samples.len()))
            .collect();
        let reg = if self.config.masking.is_active() || !self.layer_gates.is_empty() {
            let (time, channel) = regularize::sample(
                &self.config.masking,
                &valid,
                padded_frames,
                self.hidden,
                &mut self.state.rng,
            );
            let gates = regularize::sample_layer_keep(
                self.layer_gates.len(),
                self.config.layer_drop,
                &mut self.state.rng,
            );
            RegularizationInputs::new(b, padded_frames, self.hidden, time, channel, gates)
        } else {
            RegularizationInputs::new(b, padded_frames, self.hidden, vec![], vec![], vec![])
        };
        let inputs = reg.graph_inputs(
            &shape,
            &samples,
            &mask,
            self.info.uses_attention_mask,
            self.config.masking.is_active(),
            &self.layer_gates,
        );
        let params = &self.state.params;
        let fwd = self.runner.forward(&inputs, params)?;
        let lshape = fwd.output.shape.clone();
        let logits = fwd.output.as_f32().unwrap_or_default();
        let frames: Vec<usize> = valid.iter().map(|&f| f.min(lshape[1])).collect();
        let targets: Vec<Vec<usize>> = batch.iter().map(|&i| data[i].labels.clone()).collect();
        let ctc = ctc_loss(
            LogitsView {
                data: logits,
                batch: lshape[0],
                frames: lshape[1],
                vocab: lshape[2],
            },
            &frames,
            &targets,
            self.info.pad_token_id,
            Reduction::Mean,
        )?;
        let g = self.runner.backward(&fwd, &ctc.grad, &inputs, params)?;
        match grads {
            None => {
                let mut g = g;
                if scale != 1.0 {
                    g.iter_mut().flatten().for_each(|v| *v *= scale);
                }
                *grads = Some(g);
            }
            Some(acc) => {
                for (a, g) in acc.iter_mut().zip(&g) {
                    for (a, g) in a.iter_mut().zip(g) {
                        *a += g * scale;
                    }
                }
            }
        }
        Ok((ctc.loss * b as f64, ctc.infeasible.len()))
    }

    /// One optimizer update (of `accumulation` batches).
    pub fn step(&mut self, data: &[Example]) -> Result<StepReport, TrainError> {
        if data.len() != self.state.order.len() {
            return Err(TrainError::Mismatch("the data set changed size".into()));
        }
        let passes = self.config.accumulation.max(1);
        let mut grads = None;
        let (mut loss, mut utterances, mut infeasible) = (0.0, 0, 0);
        for _ in 0..passes {
            let batch = self.next_batch(data);
            let (l, inf) = self.accumulate(data, &batch, 1.0 / passes as f32, &mut grads)?;
            loss += l;
            utterances += batch.len();
            infeasible += inf;
        }
        let mut grads = grads.expect("at least one pass");
        let grad_norm = clip_grad_norm(&mut grads, self.config.max_grad_norm);
        let lr = self.schedule.lr(self.state.step);
        // Only the CTC head trains for the first `freeze_transformer_steps` updates; the other
        // parameters' AdamW steps count from when they start (PyTorch's per-parameter step).
        let n = self.config.freeze_transformer_steps;
        let frozen = self.state.step < n;
        let train: Vec<bool> = self.head.iter().map(|&h| h || !frozen).collect();
        let since: Vec<u64> = self.head.iter().map(|&h| if h { 0 } else { n }).collect();
        self.state
            .optimizer
            .update_some(&mut self.state.params, &grads, lr, &train, &since);
        self.state.step += 1;
        Ok(StepReport {
            step: self.state.step,
            loss: loss / utterances as f64,
            lr,
            grad_norm,
            utterances,
            infeasible,
        })
    }

    /// The current model's logits `[frames, vocab]` (row-major) for one normalized utterance,
    /// with no masking: for evaluation during training.
    pub fn logits(&mut self, samples: &[f32]) -> Result<(Vec<f32>, usize), TrainError> {
        let shape = [1, samples.len()];
        let mask = vec![1i64; samples.len()];
        let frames = self.info.frames_for_samples(samples.len());
        let reg = RegularizationInputs::new(
            1,
            frames,
            self.hidden,
            vec![1.0; frames],
            vec![1.0; self.hidden],
            vec![1.0; self.layer_gates.len()],
        );
        let inputs = reg.graph_inputs(
            &shape,
            samples,
            &mask,
            self.info.uses_attention_mask,
            self.config.masking.is_active(),
            &self.layer_gates,
        );
        let fwd = self.runner.forward(&inputs, &self.state.params)?;
        let vocab = fwd.output.shape.last().copied().unwrap_or(0);
        Ok((fwd.output.as_f32().unwrap_or_default().to_vec(), vocab))
    }

    /// `base` with its trainable weights replaced by the current values and `extra` metadata
    /// entries added (lineage); weights it stored as float16 come back as float32.
    pub fn updated_model(&self, base: &ModelProto, extra: &BTreeMap<String, String>) -> ModelProto {
        let mut m = widened(base).into_owned();
        if let Some(g) = m.graph.as_mut() {
            for (p, v) in self.runner.parameters().iter().zip(&self.state.params) {
                if let Some(t) = g.initializer.iter_mut().find(|t| t.name == p.name) {
                    t.float_data.clear();
                    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                }
            }
        }
        for (k, v) in extra {
            m.metadata_props.retain(|e| e.key != *k);
            m.metadata_props.push(StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
            });
        }
        m
    }
}
