//! The `Wav2Vec2ForCTC` forward pass as an ONNX graph, block by block.
//!
//! Each block takes its weights by the checkpoint names of transformers' `modeling_wav2vec2.py`,
//! so the weight-name table can be read off this file. Inference-time behaviour only: dropout,
//! layer drop and SpecAugment masking are identities at inference and are not emitted.

use std::collections::BTreeSet;

use w2v_engine::onnx_pb::data_type;

use crate::checkpoint::{StateDict, Tensor};
use crate::graph::{attr_float, attr_int, attr_ints, Dim, GraphBuilder, InitData};
use crate::ExportError;
use w2v_engine::config::{Activation, FeatExtractNorm, Wav2Vec2Config};

/// Checkpoint tensors that exist only for pre-training or SpecAugment and are not part of the
/// CTC forward pass at inference.
const UNUSED_PREFIXES: &[&str] = &["quantizer.", "project_q.", "project_hid."];

/// The checkpoint's tensors, looked up with or without the `wav2vec2.` prefix, shape-checked,
/// and tracked so that leftovers can be reported.
pub struct Weights {
    sd: StateDict,
    prefixed: bool,
    taken: BTreeSet<String>,
    /// Every tensor is zeros of the asked shape: builds the graph's structure alone, for
    /// [`crate::exported`] to check an exported model against and fill with its weights.
    placeholders: bool,
}

impl Weights {
    pub fn new(sd: StateDict) -> Self {
        let prefixed = sd.keys().any(|k| k.starts_with("wav2vec2."));
        Weights {
            sd,
            prefixed,
            taken: BTreeSet::new(),
            placeholders: false,
        }
    }

    /// Zeros for every tensor asked for, named with or without the `wav2vec2.` prefix. Optional
    /// tensors are absent, so the positional conv takes its plain (weight-norm folded) weight,
    /// which is what an exported graph stores.
    pub fn placeholders(prefixed: bool) -> Self {
        Weights {
            sd: StateDict::new(),
            prefixed,
            taken: BTreeSet::new(),
            placeholders: true,
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefixed && !name.starts_with("lm_head.") {
            format!("wav2vec2.{name}")
        } else {
            name.to_string()
        }
    }

    /// Take a tensor by its name inside the `wav2vec2.` module (or `lm_head.*`), checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ExportError> {
        let key = self.key(name);
        if self.placeholders {
            self.taken.insert(key);
            return Ok(Tensor::new(
                shape.to_vec(),
                vec![0.0; shape.iter().product()],
            ));
        }
        let t = self
            .sd
            .remove(&key)
            .ok_or_else(|| ExportError::MissingTensor { name: key.clone() })?;
        if t.shape != shape {
            return Err(ExportError::TensorShape {
                name: key,
                expected: shape.to_vec(),
                actual: t.shape,
            });
        }
        self.taken.insert(key);
        Ok(t)
    }

    /// Like [`Weights::take`], but `None` when the tensor is absent.
    pub fn take_optional(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<Tensor>, ExportError> {
        if self.sd.contains_key(&self.key(name)) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.sd.contains_key(&self.key(name))
    }

    /// Tensors nobody took that are not known to be inference-irrelevant.
    pub fn leftovers(&self) -> Vec<String> {
        self.sd
            .keys()
            .filter(|k| !UNUSED_PREFIXES.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect()
    }
}

/// The feature encoder's conv layers as (output channels, kernel, stride).
fn conv_specs(cfg: &Wav2Vec2Config) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    cfg.conv_dim
        .iter()
        .zip(&cfg.conv_kernel)
        .zip(&cfg.conv_stride)
        .map(|((&c, &k), &s)| (c, k, s))
}

/// `[out, in]` (torch Linear) to `[in, out]` (ONNX MatMul's right operand).
fn transpose_2d(t: Tensor) -> Tensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut data = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            data[c * rows + r] = t.data[r * cols + c];
        }
    }
    Tensor::new(vec![cols, rows], data)
}

/// torch's `weight_norm(dim=2)`: w = g · v / ‖v‖, the norm taken over dims 0 and 1 for each k.
fn weight_norm_dim2(g: &Tensor, v: &Tensor) -> Tensor {
    let (o, i, k) = (v.shape[0], v.shape[1], v.shape[2]);
    let mut norms = vec![0f64; k];
    for (idx, x) in v.data.iter().enumerate() {
        norms[idx % k] += (*x as f64) * (*x as f64);
    }
    let scale: Vec<f32> = (0..k)
        .map(|kk| g.data[kk] / (norms[kk].sqrt() as f32))
        .collect();
    let data = v
        .data
        .iter()
        .enumerate()
        .map(|(idx, x)| x * scale[idx % k])
        .collect();
    Tensor::new(vec![o, i, k], data)
}

pub struct Wav2Vec2Graph<'a> {
    pub g: GraphBuilder,
    pub w: Weights,
    cfg: &'a Wav2Vec2Config,
    /// The checkpoint's `masked_spec_embed` (SpecAugment's fill vector, one value per model
    /// channel), when it has one: not part of the inference graph, kept in the metadata for
    /// fine-tuning ([`w2v_engine::model_info::keys::MASKED_SPEC_EMBED`]).
    pub masked_spec_embed: Option<Vec<f32>>,
}

impl<'a> Wav2Vec2Graph<'a> {
    /// Build the full graph: `input_values` (+ `attention_mask`) → `logits`.
    pub fn build(cfg: &'a Wav2Vec2Config, sd: StateDict, opset: i64) -> Result<Self, ExportError> {
        Self::build_with(cfg, Weights::new(sd), opset)
    }

    /// [`Wav2Vec2Graph::build`] from any weight source (see [`Weights::placeholders`]).
    pub fn build_with(
        cfg: &'a Wav2Vec2Config,
        weights: Weights,
        opset: i64,
    ) -> Result<Self, ExportError> {
        let mut m = Wav2Vec2Graph {
            g: GraphBuilder::new(opset),
            w: weights,
            cfg,
            masked_spec_embed: None,
        };
        m.masked_spec_embed =
            m.w.take_optional("masked_spec_embed", &[cfg.hidden_size])?
                .map(|t| t.data);
        let batch = Dim::Symbolic("batch");
        let input = m.g.input(
            "input_values",
            data_type::FLOAT,
            &[batch, Dim::Symbolic("samples")],
        );
        let mask = if cfg.uses_attention_mask() {
            Some(m.g.input(
                "attention_mask",
                data_type::INT64,
                &[Dim::Symbolic("batch"), Dim::Symbolic("samples")],
            ))
        } else {
            None
        };

        let features = m.feature_encoder(&input)?;
        let hidden = m.feature_projection(&features)?;
        let frame_mask = mask.as_ref().map(|mask| m.frame_mask(mask, &features));
        let hidden = m.encoder(&hidden, frame_mask.as_deref())?;
        m.lm_head(&hidden)?;

        let leftovers = m.w.leftovers();
        if !leftovers.is_empty() {
            return Err(ExportError::UnexpectedTensors { names: leftovers });
        }
        Ok(m)
    }

    fn activation(&mut self, x: &str, act: Activation) -> String {
        let g = &mut self.g;
        match act {
            Activation::Relu => g.node("Relu", &[x], vec![]),
            Activation::Silu => {
                let s = g.node("Sigmoid", &[x], vec![]);
                g.node("Mul", &[x, &s], vec![])
            }
            Activation::Gelu => {
                // (0.5 · x) · (1 + erf(x / √2)), in the order ONNX Runtime's Gelu fusion
                // matches whatever produces x: written as (x · (1 + erf)) · 0.5 it is not fused
                // when x comes from a Mul (the int8 encoder's dequantization), which left six
                // unfused GELUs of 16 k x 512 in the --quantize-conv model. Halving is exact in
                // float, so the two orders give identical values.
                let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
                let one = g.scalar(1.0);
                let half = g.scalar(0.5);
                let h = g.node("Mul", &[x, &half], vec![]);
                let d = g.node("Div", &[x, &sqrt2], vec![]);
                let e = g.node("Erf", &[&d], vec![]);
                let a = g.node("Add", &[&e, &one], vec![]);
                g.node("Mul", &[&h, &a], vec![])
            }
            Activation::GeluTanh => {
                // 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
                let c = g.scalar((2.0 / std::f32::consts::PI).sqrt());
                let k = g.scalar(0.044715);
                let one = g.scalar(1.0);
                let half = g.scalar(0.5);
                let x2 = g.node("Mul", &[x, x], vec![]);
                let x3 = g.node("Mul", &[&x2, x], vec![]);
                let kx3 = g.node("Mul", &[&x3, &k], vec![]);
                let inner = g.node("Add", &[x, &kx3], vec![]);
                let scaled = g.node("Mul", &[&inner, &c], vec![]);
                let t = g.node("Tanh", &[&scaled], vec![]);
                let a = g.node("Add", &[&t, &one], vec![]);
                let m = g.node("Mul", &[x, &a], vec![]);
                g.node("Mul", &[&m, &half], vec![])
            }
        }
    }

    /// `nn.LayerNorm` over the last axis.
    fn layer_norm(
        &mut self,
        x: &str,
        scope: &str,
        dim: usize,
        eps: f64,
    ) -> Result<String, ExportError> {
        let w = self.w.take(&format!("{scope}.weight"), &[dim])?;
        let b = self.w.take(&format!("{scope}.bias"), &[dim])?;
        let w = self.g.weight(&self.w.key(&format!("{scope}.weight")), w);
        let b = self.g.weight(&self.w.key(&format!("{scope}.bias")), b);
        let was = self.g.f32_island(true);
        let y = self.g.node(
            "LayerNormalization",
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
        );
        self.g.f32_island(was);
        Ok(y)
    }

    /// `nn.GroupNorm(C, C)`: each channel normalized over time (eps 1e-5, affine), on [B, C, T]
    /// or, `time_major`, on [B, T, C]. Written out in two passes rather than as
    /// `InstanceNormalization`, whose ONNX Runtime kernel loses about 3e-6 relative accuracy,
    /// enough to move logits by 1e-4.
    fn group_norm_per_channel(
        &mut self,
        x: &str,
        scope: &str,
        c: usize,
        time_major: bool,
    ) -> Result<String, ExportError> {
        let w = self.w.take(&format!("{scope}.weight"), &[c])?;
        let b = self.w.take(&format!("{scope}.bias"), &[c])?;
        // Channels-first: [C] → [C, 1] so they broadcast over time.
        let shape = if time_major { vec![c] } else { vec![c, 1] };
        let w = self.g.weight(
            &self.w.key(&format!("{scope}.weight")),
            Tensor::new(shape.clone(), w.data),
        );
        let b = self.g.weight(
            &self.w.key(&format!("{scope}.bias")),
            Tensor::new(shape, b.data),
        );
        // Squares of conv outputs and their mean overflow or lose precision in float16.
        let was = self.g.f32_island(true);
        // Means over time: ReduceMean on the last axis channels-first; time-major, a
        // [B, 1, T] x [B, T, C] matmul with a row of ones, since ONNX Runtime's ReduceMean over
        // a middle axis took 40 ms per [32 k, 512] pass against 6 ms for the matmul.
        let ones_row = time_major.then(|| {
            let t = self.g.node(
                "Shape",
                &[x],
                vec![attr_int("start", 1), attr_int("end", 2)],
            );
            let one_one = self.g.ints(&[1, 1]);
            let shape = self
                .g
                .node("Concat", &[&one_one, &t], vec![attr_int("axis", 0)]);
            let one = self.g.scalar(1.0);
            let ones = self.g.node("Expand", &[&one, &shape], vec![]);
            let n = self
                .g
                .node("Cast", &[&t], vec![attr_int("to", data_type::FLOAT as i64)]);
            (ones, n)
        });
        let mean_over_time = |g: &mut GraphBuilder, v: &str| match &ones_row {
            Some((ones, n)) => {
                let sum = g.node("MatMul", &[ones, v], vec![]);
                g.node("Div", &[&sum, n], vec![])
            }
            None => g.reduce_mean(v, &[2], true),
        };
        // The per-channel factor weight / std is formed on the per-channel statistics, so the
        // activations are scaled once (one full-size pass fewer than dividing by std, then
        // multiplying).
        let mean = mean_over_time(&mut self.g, x);
        let d = self.g.node("Sub", &[x, &mean], vec![]);
        let sq = self.g.node("Mul", &[&d, &d], vec![]);
        let var = mean_over_time(&mut self.g, &sq);
        let eps = self.g.scalar(1e-5);
        let ve = self.g.node("Add", &[&var, &eps], vec![]);
        let sd = self.g.node("Sqrt", &[&ve], vec![]);
        let factor = self.g.node("Div", &[&w, &sd], vec![]);
        let scaled = self.g.node("Mul", &[&d, &factor], vec![]);
        let y = self.g.node("Add", &[&scaled, &b], vec![]);
        self.g.f32_island(was);
        Ok(y)
    }

    /// `nn.Linear`: x · Wᵀ + b, with Wᵀ stored pre-transposed. `scale` is folded into W and b.
    fn linear(
        &mut self,
        x: &str,
        scope: &str,
        in_dim: usize,
        out_dim: usize,
        scale: Option<f32>,
    ) -> Result<String, ExportError> {
        let w = self
            .w
            .take(&format!("{scope}.weight"), &[out_dim, in_dim])?;
        let b = self.w.take(&format!("{scope}.bias"), &[out_dim])?;
        let mut wt = transpose_2d(w);
        let mut b = b;
        if let Some(s) = scale {
            wt.data.iter_mut().for_each(|v| *v *= s);
            b.data.iter_mut().for_each(|v| *v *= s);
        }
        let wname = self
            .g
            .weight(&format!("{}.T", self.w.key(&format!("{scope}.weight"))), wt);
        let bname = self.g.weight(&self.w.key(&format!("{scope}.bias")), b);
        let mm = self.g.node("MatMul", &[x, &wname], vec![]);
        Ok(self.g.node("Add", &[&mm, &bname], vec![]))
    }

    /// `feature_extractor.conv_layers.N.conv`: a valid strided 1-D `Conv` on [B, C, T].
    fn conv(
        &mut self,
        x: &str,
        scope: &str,
        in_ch: usize,
        out_ch: usize,
        k: usize,
        s: usize,
    ) -> Result<String, ExportError> {
        let w = self
            .w
            .take(&format!("{scope}.conv.weight"), &[out_ch, in_ch, k])?;
        let wn = self
            .g
            .weight(&self.w.key(&format!("{scope}.conv.weight")), w);
        let mut inputs = vec![x.to_string(), wn];
        if self.cfg.conv_bias {
            let b = self.w.take(&format!("{scope}.conv.bias"), &[out_ch])?;
            inputs.push(self.g.weight(&self.w.key(&format!("{scope}.conv.bias")), b));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.node(
            "Conv",
            &refs,
            vec![
                attr_ints("kernel_shape", &[k as i64]),
                attr_ints("strides", &[s as i64]),
            ],
        ))
    }

    /// Conv layer `i`'s norm, if it has one: group norm on the first layer only
    /// (`feat_extract_norm: group`), or layer norm over channels on every layer (`layer`), on
    /// [B, C, T] or, `time_major`, [B, T, C].
    fn conv_norm(
        &mut self,
        x: &str,
        scope: &str,
        i: usize,
        channels: usize,
        time_major: bool,
    ) -> Result<String, ExportError> {
        let scope = format!("{scope}.layer_norm");
        match self.cfg.feat_extract_norm() {
            FeatExtractNorm::Group if i == 0 => {
                self.group_norm_per_channel(x, &scope, channels, time_major)
            }
            FeatExtractNorm::Group => Ok(x.to_string()),
            FeatExtractNorm::Layer if time_major => self.layer_norm(x, &scope, channels, 1e-5),
            FeatExtractNorm::Layer => {
                let perm = || vec![attr_ints("perm", &[0, 2, 1])];
                let t = self.g.node("Transpose", &[x], perm());
                let n = self.layer_norm(&t, &scope, channels, 1e-5)?;
                Ok(self.g.node("Transpose", &[&n], perm()))
            }
        }
    }

    /// `feature_extractor.conv_layers.N`: raw audio [B, S] → features [B, T, C].
    fn feature_encoder(&mut self, input: &str) -> Result<String, ExportError> {
        let cfg = self.cfg;
        self.g.set_scope("feature_extractor");
        // Float32 under fp16: seven stacked convs with GELU accumulate float16 rounding into the
        // largest share of the logit error (max |diff| 0.023 → 0.005 on the fixtures), for 5% of
        // the parameters.
        let was = self.g.f32_island(true);
        let axes = self.g.ints(&[1]);
        let mut x = self.g.node("Unsqueeze", &[input, &axes], vec![]);
        let mut in_ch = 1;
        for (i, (out_ch, k, s)) in conv_specs(cfg).enumerate() {
            let scope = format!("feature_extractor.conv_layers.{i}");
            self.g.set_scope(&scope);
            x = self.conv(&x, &scope, in_ch, out_ch, k, s)?;
            x = self.conv_norm(&x, &scope, i, out_ch, false)?;
            x = self.activation(&x, cfg.feat_extract_activation());
            in_ch = out_ch;
        }
        let y = self
            .g
            .node("Transpose", &[&x], vec![attr_ints("perm", &[0, 2, 1])]);
        self.g.f32_island(was);
        Ok(y)
    }

    /// The feature encoder time-major ([B, T, C] throughout), each convolution an im2col
    /// `MatMul` with a `[k·C_in, C_out]` weight: the form [`feature_encoder_as_matmuls`] puts in
    /// place for the int8 CPU pass with `--quantize-conv` (integer matmul kernels are fast on
    /// both runtimes, integer convolutions are not). Same arithmetic as
    /// [`Self::feature_encoder`], and no transposes around the layer norms.
    fn feature_encoder_time_major(&mut self, input: &str) -> Result<String, ExportError> {
        let cfg = self.cfg;
        self.g.set_scope("feature_extractor");
        let was = self.g.f32_island(true);
        // Raw audio as [B, S, 1]: one input channel, time-major like the rest. The first layer
        // is an im2col matmul too (float32: the int8 pass skips it), so no transpose of its
        // [B, C, T] output (32 k x 512 at 10 s) is needed before the layers that follow.
        let axes = self.g.ints(&[2]);
        let mut x = self.g.node("Unsqueeze", &[input, &axes], vec![]);
        let mut in_ch = 1;
        for (i, (out_ch, k, s)) in conv_specs(cfg).enumerate() {
            let scope = format!("feature_extractor.conv_layers.{i}");
            self.g.set_scope(&scope);
            if k > 2 * s {
                return Err(ExportError::Unsupported(format!(
                    "--quantize-conv: conv layer {i} has kernel {k} > 2 x stride {s}"
                )));
            }
            let w = self
                .w
                .take(&format!("{scope}.conv.weight"), &[out_ch, in_ch, k])?;
            // W[o, c, j] → Wm[j·C_in + c, o]: the row order of the im2col columns.
            let mut wm = vec![0f32; k * in_ch * out_ch];
            for o in 0..out_ch {
                for c in 0..in_ch {
                    for j in 0..k {
                        wm[(j * in_ch + c) * out_ch + o] = w.data[(o * in_ch + c) * k + j];
                    }
                }
            }
            let wn = self.g.weight(
                &format!("{}.as_matmul", self.w.key(&format!("{scope}.conv.weight"))),
                Tensor::new(vec![k * in_ch, out_ch], wm),
            );
            let cols = self.im2col(&x, in_ch, k, s);
            x = self.g.node("MatMul", &[&cols, &wn], vec![]);
            if cfg.conv_bias {
                let b = self.w.take(&format!("{scope}.conv.bias"), &[out_ch])?;
                let b = self.g.weight(&self.w.key(&format!("{scope}.conv.bias")), b);
                x = self.g.node("Add", &[&x, &b], vec![]);
            }
            x = self.conv_norm(&x, &scope, i, out_ch, true)?;
            x = self.activation(&x, cfg.feat_extract_activation());
            in_ch = out_ch;
        }
        self.g.f32_island(was);
        Ok(x)
    }

    /// im2col of a valid (unpadded) strided 1-D convolution over [B, T, C], for kernels up to
    /// twice the stride: frame t's columns are input frames t·s … t·s + k − 1, i.e. block t of
    /// the input cut into blocks of s frames, then the first k − s frames of block t + 1.
    /// Reshapes and slices only (no strided slices, which tract cannot stream); → [B, T', k·C]
    /// with T' = (T − k) / s + 1, rows ordered tap-major.
    fn im2col(&mut self, x: &str, c: usize, k: usize, s: usize) -> String {
        let g = &mut self.g;
        let t = g.node(
            "Shape",
            &[x],
            vec![attr_int("start", 1), attr_int("end", 2)],
        );
        let kk = g.ints(&[k as i64]);
        let ss = g.ints(&[s as i64]);
        let one = g.ints(&[1]);
        let d = g.node("Sub", &[&t, &kk], vec![]);
        let q = g.node("Div", &[&d, &ss], vec![]);
        let frames = g.node("Add", &[&q, &one], vec![]);
        let n = g.node("Mul", &[&frames, &ss], vec![]);
        let zero = g.ints(&[0]);
        let axis1 = g.ints(&[1]);
        let head = g.node("Slice", &[x, &zero, &n, &axis1], vec![]);
        let width = g.ints(&[(s * c) as i64]);
        let shape = g.node(
            "Concat",
            &[&zero, &frames, &width],
            vec![attr_int("axis", 0)],
        );
        let blocks = g.node("Reshape", &[&head, &shape], vec![]);
        if k == s {
            return blocks;
        }
        if k < s {
            let axis2 = g.ints(&[2]);
            let end = g.ints(&[(k * c) as i64]);
            return g.node("Slice", &[&blocks, &zero, &end, &axis2], vec![]);
        }
        let extra = (k - s) * c;
        let starts = g.ints(&[1, 0]);
        let ends = g.ints(&[i64::MAX, extra as i64]);
        let axes = g.ints(&[1, 2]);
        let next = g.node("Slice", &[&blocks, &starts, &ends, &axes], vec![]);
        let tail_len = g.ints(&[(k - s) as i64]);
        let tail_end = g.node("Add", &[&n, &tail_len], vec![]);
        let tail = g.node("Slice", &[x, &n, &tail_end, &axis1], vec![]);
        let tail_shape = g.ints(&[0, 1, extra as i64]);
        let tail = g.node("Reshape", &[&tail, &tail_shape], vec![]);
        let later = g.node("Concat", &[&next, &tail], vec![attr_int("axis", 1)]);
        g.node("Concat", &[&blocks, &later], vec![attr_int("axis", 2)])
    }

    /// `feature_projection`: LayerNorm then Linear to the model width.
    fn feature_projection(&mut self, features: &str) -> Result<String, ExportError> {
        let c = *self.cfg.conv_dim.last().expect("validated");
        self.g.set_scope("feature_projection");
        let n = self.layer_norm(
            features,
            "feature_projection.layer_norm",
            c,
            self.cfg.layer_norm_eps,
        )?;
        self.linear(
            &n,
            "feature_projection.projection",
            c,
            self.cfg.hidden_size,
            None,
        )
    }

    /// The frame-level padding mask [B, T] (float 1/0) from the sample-level attention mask,
    /// as `_get_feature_vector_attention_mask` computes it.
    fn frame_mask(&mut self, mask: &str, features: &str) -> String {
        self.g.set_scope("attention_mask");
        let was = self.g.f32_island(true);
        let g = &mut self.g;
        let axes = g.ints(&[1]);
        let mut len = g.node("ReduceSum", &[mask, &axes], vec![attr_int("keepdims", 0)]);
        for &(k, s) in &self.cfg.conv_layers() {
            let k = g.int_scalar(k as i64);
            let s = g.int_scalar(s as i64);
            let one = g.int_scalar(1);
            let d = g.node("Sub", &[&len, &k], vec![]);
            let q = g.node("Div", &[&d, &s], vec![]);
            len = g.node("Add", &[&q, &one], vec![]);
        }
        let shape = g.node("Shape", &[features], vec![]);
        let idx = g.int_scalar(1);
        let frames = g.node("Gather", &[&shape, &idx], vec![attr_int("axis", 0)]);
        let zero = g.int_scalar(0);
        let step = g.int_scalar(1);
        let positions = g.node("Range", &[&zero, &frames, &step], vec![]);
        let ax0 = g.ints(&[0]);
        let pos = g.node("Unsqueeze", &[&positions, &ax0], vec![]);
        let ax1 = g.ints(&[1]);
        let len = g.node("Unsqueeze", &[&len, &ax1], vec![]);
        let valid = g.node("Less", &[&pos, &len], vec![]);
        let m = g.node(
            "Cast",
            &[&valid],
            vec![attr_int("to", data_type::FLOAT as i64)],
        );
        g.f32_island(was);
        m
    }

    /// `pos_conv_embed`: grouped conv with weight norm, "same" padding, activation.
    fn positional_conv(&mut self, x: &str) -> Result<String, ExportError> {
        let cfg = self.cfg;
        let scope = "encoder.pos_conv_embed.conv";
        self.g.set_scope("encoder.pos_conv_embed");
        let (h, k, groups) = (
            cfg.hidden_size,
            cfg.num_conv_pos_embeddings,
            cfg.num_conv_pos_embedding_groups,
        );
        let v_shape = [h, h / groups, k];
        // (weight-norm magnitude, direction), or the plain weight of a checkpoint with weight
        // norm already removed (and of an exported model being re-quantized)
        let weight = if self.w.contains(&format!("{scope}.weight_g")) {
            let g_t = self.w.take(&format!("{scope}.weight_g"), &[1, 1, k])?;
            let v_t = self.w.take(&format!("{scope}.weight_v"), &v_shape)?;
            weight_norm_dim2(&g_t, &v_t)
        } else if self
            .w
            .contains(&format!("{scope}.parametrizations.weight.original0"))
        {
            let g_t = self.w.take(
                &format!("{scope}.parametrizations.weight.original0"),
                &[1, 1, k],
            )?;
            let v_t = self.w.take(
                &format!("{scope}.parametrizations.weight.original1"),
                &v_shape,
            )?;
            weight_norm_dim2(&g_t, &v_t)
        } else {
            self.w.take(&format!("{scope}.weight"), &v_shape)?
        };
        let b = self.w.take(&format!("{scope}.bias"), &[h])?;
        // A wide grouped conv summing 128 taps per output: kept in float32 under fp16.
        let was = self.g.f32_island(true);
        let wn = self
            .g
            .weight(&self.w.key(&format!("{scope}.weight")), weight);
        let bn = self.g.weight(&self.w.key(&format!("{scope}.bias")), b);
        let t = self
            .g
            .node("Transpose", &[x], vec![attr_ints("perm", &[0, 2, 1])]);
        let pad = (k / 2) as i64;
        let mut y = self.g.node(
            "Conv",
            &[&t, &wn, &bn],
            vec![
                attr_ints("kernel_shape", &[k as i64]),
                attr_ints("pads", &[pad, pad]),
                attr_int("group", groups as i64),
            ],
        );
        if k % 2 == 0 {
            // Wav2Vec2SamePadLayer drops the last frame for even kernels.
            let starts = self.g.ints(&[0]);
            let ends = self.g.ints(&[-1]);
            let axes = self.g.ints(&[2]);
            y = self.g.node("Slice", &[&y, &starts, &ends, &axes], vec![]);
        }
        let y = self.activation(&y, cfg.feat_extract_activation());
        let y = self
            .g
            .node("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1])]);
        self.g.f32_island(was);
        Ok(y)
    }

    /// `encoder.layers.N.attention`: multi-head self-attention with an optional additive mask.
    fn attention(
        &mut self,
        x: &str,
        scope: &str,
        bias: Option<&str>,
    ) -> Result<String, ExportError> {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        let scaling = (hd as f32).powf(-0.5);
        let q = self.linear(x, &format!("{scope}.q_proj"), h, h, Some(scaling))?;
        let k = self.linear(x, &format!("{scope}.k_proj"), h, h, None)?;
        let v = self.linear(x, &format!("{scope}.v_proj"), h, h, None)?;
        let split = self.g.ints(&[0, 0, heads as i64, hd as i64]);
        let q = self.g.node("Reshape", &[&q, &split], vec![]);
        let q = self
            .g
            .node("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = self.g.node("Reshape", &[&k, &split], vec![]);
        let k = self
            .g
            .node("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = self.g.node("Reshape", &[&v, &split], vec![]);
        let v = self
            .g
            .node("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let mut scores = self.g.node("MatMul", &[&q, &k], vec![]);
        // The mask bias (float32 min) and the softmax stay float32 under fp16.
        let was = self.g.f32_island(true);
        if let Some(bias) = bias {
            scores = self.g.node("Add", &[&scores, bias], vec![]);
        }
        let p = self
            .g
            .node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        self.g.f32_island(was);
        let ctx = self.g.node("MatMul", &[&p, &v], vec![]);
        let ctx = self
            .g
            .node("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let merge = self.g.ints(&[0, 0, h as i64]);
        let ctx = self.g.node("Reshape", &[&ctx, &merge], vec![]);
        self.linear(&ctx, &format!("{scope}.out_proj"), h, h, None)
    }

    /// `encoder.layers.N.feed_forward`.
    fn feed_forward(&mut self, x: &str, scope: &str) -> Result<String, ExportError> {
        let (h, i) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let y = self.linear(x, &format!("{scope}.intermediate_dense"), h, i, None)?;
        let y = self.activation(&y, self.cfg.hidden_act());
        self.linear(&y, &format!("{scope}.output_dense"), i, h, None)
    }

    /// `encoder`: padding, positional conv, and the Transformer layers (post-LN, or pre-LN when
    /// `do_stable_layer_norm`).
    fn encoder(&mut self, hidden: &str, frame_mask: Option<&str>) -> Result<String, ExportError> {
        let cfg = self.cfg;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        self.g.set_scope("encoder");
        let mut x = hidden.to_string();
        let mut bias = None;
        if let Some(mask) = frame_mask {
            // Padded frames are zeroed, and masked out of attention with finfo(float32).min.
            let ax = self.g.ints(&[2]);
            let m3 = self.g.node("Unsqueeze", &[mask, &ax], vec![]);
            x = self.g.node("Mul", &[&x, &m3], vec![]);
            let was = self.g.f32_island(true);
            let one = self.g.scalar(1.0);
            let min = self.g.scalar(f32::MIN);
            let inv = self.g.node("Sub", &[&one, mask], vec![]);
            let add = self.g.node("Mul", &[&inv, &min], vec![]);
            let ax12 = self.g.ints(&[1, 2]);
            bias = Some(self.g.node("Unsqueeze", &[&add, &ax12], vec![]));
            self.g.f32_island(was);
        }
        let pos = self.positional_conv(&x)?;
        self.g.set_scope("encoder");
        x = self.g.node("Add", &[&x, &pos], vec![]);
        if !cfg.do_stable_layer_norm {
            x = self.layer_norm(&x, "encoder.layer_norm", h, eps)?;
        }
        for l in 0..cfg.num_hidden_layers {
            let scope = format!("encoder.layers.{l}");
            self.g.set_scope(&scope);
            if cfg.do_stable_layer_norm {
                let n = self.layer_norm(&x, &format!("{scope}.layer_norm"), h, eps)?;
                let a = self.attention(&n, &format!("{scope}.attention"), bias.as_deref())?;
                x = self.g.node("Add", &[&x, &a], vec![]);
                let n = self.layer_norm(&x, &format!("{scope}.final_layer_norm"), h, eps)?;
                let f = self.feed_forward(&n, &format!("{scope}.feed_forward"))?;
                x = self.g.node("Add", &[&x, &f], vec![]);
            } else {
                let a = self.attention(&x, &format!("{scope}.attention"), bias.as_deref())?;
                let r = self.g.node("Add", &[&x, &a], vec![]);
                x = self.layer_norm(&r, &format!("{scope}.layer_norm"), h, eps)?;
                let f = self.feed_forward(&x, &format!("{scope}.feed_forward"))?;
                let r = self.g.node("Add", &[&x, &f], vec![]);
                x = self.layer_norm(&r, &format!("{scope}.final_layer_norm"), h, eps)?;
            }
        }
        if cfg.do_stable_layer_norm {
            self.g.set_scope("encoder");
            x = self.layer_norm(&x, "encoder.layer_norm", h, eps)?;
        }
        Ok(x)
    }

    /// `lm_head`: per-frame vocabulary logits, the graph output.
    fn lm_head(&mut self, hidden: &str) -> Result<(), ExportError> {
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        self.g.set_scope("lm_head");
        let w = self.w.take("lm_head.weight", &[v, h])?;
        let b = self.w.take("lm_head.bias", &[v])?;
        let wt = self.g.weight("lm_head.weight.T", transpose_2d(w));
        let bn = self.g.weight("lm_head.bias", b);
        // Small (hidden × vocab), and float16 output rounding alone would be 4e-3 at |logit| ≈ 10:
        // the logits are computed in float32 under fp16.
        let was = self.g.f32_island(true);
        let mm = self.g.node("MatMul", &[hidden, &wt], vec![]);
        self.g.node_named("Add", &[&mm, &bn], vec![], "logits");
        self.g.f32_island(was);
        self.g.output(
            "logits",
            data_type::FLOAT,
            &[
                Dim::Symbolic("batch"),
                Dim::Symbolic("frames"),
                Dim::Fixed(v),
            ],
        );
        Ok(())
    }
}

/// Replace the feature encoder of a built float32 graph (from a Hugging Face folder or read back
/// from an exported model) by its time-major im2col-`MatMul` form
/// (`Wav2Vec2Graph::feature_encoder_time_major`), using the graph's own weights. The rest of
/// the graph is untouched; the encoder's output keeps its [B, T, C] meaning.
pub fn feature_encoder_as_matmuls(
    g: &mut GraphBuilder,
    cfg: &Wav2Vec2Config,
) -> Result<(), ExportError> {
    const SCOPE: &str = "feature_extractor";
    let internal = |what: &str| {
        ExportError::Unsupported(format!("--quantize-conv: unexpected graph ({what})"))
    };
    let nodes = std::mem::take(&mut g.nodes);
    let keep = std::mem::take(&mut g.keep_f32);
    let n_enc = nodes
        .iter()
        .take_while(|n| n.name.starts_with(SCOPE))
        .count();
    if n_enc == 0 || nodes[n_enc..].iter().any(|n| n.name.starts_with(SCOPE)) {
        return Err(internal(
            "the feature encoder is not the graph's first nodes",
        ));
    }
    let input = nodes[0].input[0].clone();
    let old_out = nodes[n_enc - 1].output[0].clone();
    // The encoder's weights, back as checkpoint tensors.
    let used: BTreeSet<&str> = nodes[..n_enc]
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut sd = StateDict::new();
    for init in std::mem::take(&mut g.initializers) {
        if init.constant || !used.contains(init.name.as_str()) {
            g.initializers.push(init);
            continue;
        }
        match init.data {
            InitData::F32(mut t) => {
                if t.shape.len() == 2 && t.shape[1] == 1 {
                    t.shape.truncate(1); // group-norm [C, 1] → [C]
                }
                sd.insert(init.name, t);
            }
            _ => return Err(internal("a feature-encoder weight is not float32")),
        }
    }
    let opset = g.opset();
    let mut m = Wav2Vec2Graph {
        g: std::mem::replace(g, GraphBuilder::new(opset)),
        w: Weights::new(sd),
        cfg,
        masked_spec_embed: None,
    };
    let out = m.feature_encoder_time_major(&input)?;
    let leftovers = m.w.leftovers();
    if !leftovers.is_empty() {
        return Err(ExportError::UnexpectedTensors { names: leftovers });
    }
    *g = m.g;
    for (mut node, k) in nodes.into_iter().zip(keep).skip(n_enc) {
        for i in node.input.iter_mut().filter(|i| **i == old_out) {
            *i = out.clone();
        }
        g.nodes.push(node);
        g.keep_f32.push(k);
    }
    // The old encoder's constants (axes, scalars) are no longer used.
    let used: BTreeSet<String> = g.nodes.iter().flat_map(|n| n.input.clone()).collect();
    g.initializers.retain(|i| used.contains(&i.name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_norm_matches_definition() {
        // v: [2, 1, 2]; for k=0 the norm over (o, i) is sqrt(3² + 4²) = 5.
        let v = Tensor::new(vec![2, 1, 2], vec![3.0, 1.0, 4.0, 0.0]);
        let g = Tensor::new(vec![1, 1, 2], vec![10.0, 2.0]);
        let w = weight_norm_dim2(&g, &v);
        assert_eq!(w.data, vec![6.0, 2.0, 8.0, 0.0]);
    }

    #[test]
    fn transpose_2d_swaps_axes() {
        let t = Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let u = transpose_2d(t);
        assert_eq!(u.shape, vec![3, 2]);
        assert_eq!(u.data, vec![1., 4., 2., 5., 3., 6.]);
    }
}
