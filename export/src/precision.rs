//! Reduced-precision rewrites of the float32 graph that [`crate::wav2vec2`] builds.
//!
//! There is one graph definition; `--precision fp16` and `--precision int8` are passes over the
//! builder's nodes and initializers:
//!
//! * [`to_fp16`]: float16 weights and compute, except the nodes the graph marks as float32
//!   islands (the convolutional feature encoder with its GroupNorm/LayerNorm, every LayerNorm,
//!   softmax with the attention-mask bias, the positional conv, the mask arithmetic with
//!   `f32::MIN`, and `lm_head`). `Cast` nodes are inserted where a value crosses between the two,
//!   and at the graph edges, so inputs and outputs stay float32.
//! * [`to_int8`]: every `MatMul` with a 2-D weight initializer (the Transformer's q/k/v/out and
//!   feed-forward, the feature projection, `lm_head`) becomes
//!   `DynamicQuantizeLinear → MatMulInteger → Cast → Mul(x_scale · w_scale)`, with per-output-channel
//!   symmetric int8 weights (zero point 0) and dynamically quantized uint8 activations. Both ONNX
//!   Runtime (which fuses the pattern into `DynamicQuantizeMatMul`) and tract run it with integer
//!   kernels. Convolutions stay float32 unless `--quantize-conv`, for which
//!   [`crate::wav2vec2::feature_encoder_as_matmuls`] first rewrites the feature encoder
//!   time-major with each conv an im2col `MatMul`; those matmuls (all but the first conv's, whose
//!   input is the raw audio) are then quantized like the others, except that each row (output
//!   frame) of their input is first divided by its own range and each output row multiplied
//!   back (`row_normalized_int8_matmul`): one range per utterance quantized quiet frames too
//!   coarsely. Integer matmul kernels are fast on both runtimes; ONNX Runtime's `ConvInteger`
//!   is not.
//! * No CPU saturates its integer dot products ([`INT8_PAIR_MAX`]): a matmul weight's two
//!   neighbouring rows, which the kernels add in one step, sum to at most 128 in magnitude
//!   ([`quantize_per_column`]), and a convolution's weights are at most 64
//!   ([`quantize_per_channel`]).
//! * [`to_qdq`]: the same ops as explicit symmetric `QuantizeLinear`/`DequantizeLinear` pairs
//!   (int8, zero point 0, per-channel weights, calibrated per-tensor activation scales), the form
//!   TensorRT builds int8 engines from.
//! * [`f16_storage`], after either: the large weights that still compute in float32 (the feature
//!   encoder's convolutions, the positional conv) are *stored* as float16 and widened by a `Cast`
//!   that runtimes fold into a float32 constant at load. Compute stays float32, the files shrink
//!   by half of those weights (a base model's 36 MB of them), and the weights change by at most
//!   float16's relative rounding (2⁻¹¹), far below what the quantized matmuls already change.

use std::collections::{BTreeMap, HashMap, HashSet};

use w2v_engine::onnx_pb::{data_type, NodeProto};

use crate::graph::{attr_int, attr_ints, GraphBuilder, InitData};

/// The element type of a value, as far as the passes care.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ty {
    F32,
    F16,
    /// Integers and booleans: never cast.
    Other,
}

fn elem_ty(elem_type: i32) -> Ty {
    match elem_type {
        data_type::FLOAT => Ty::F32,
        data_type::FLOAT16 => Ty::F16,
        _ => Ty::Other,
    }
}

fn onnx_type(t: Ty) -> i64 {
    match t {
        Ty::F16 => data_type::FLOAT16 as i64,
        _ => data_type::FLOAT as i64,
    }
}

/// Ops whose output is never a float whatever their inputs.
const NON_FLOAT_OUTPUT: &[&str] = &["Shape", "Less", "Greater", "Equal", "LessOrEqual", "Not"];
/// Ops that look at their inputs' shapes only: no cast needed.
const SHAPE_ONLY: &[&str] = &["Shape"];

fn cast_node(name: &str, input: &str, output: &str, to: Ty) -> NodeProto {
    NodeProto {
        input: vec![input.to_string()],
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: "Cast".into(),
        attribute: vec![attr_int("to", onnx_type(to))],
        ..Default::default()
    }
}

fn plain_node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op.to_string(),
        ..Default::default()
    }
}

/// What [`to_fp16`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fp16Stats {
    pub f16_nodes: usize,
    pub f32_nodes: usize,
    pub casts: usize,
}

/// Rewrite a float32 graph to float16 with float32 islands; see the module docs.
pub fn to_fp16(g: &mut GraphBuilder) -> Fp16Stats {
    let nodes = std::mem::take(&mut g.nodes);
    let keep = std::mem::take(&mut g.keep_f32);
    let prec = |i: usize| if keep[i] { Ty::F32 } else { Ty::F16 };

    // Which float32 initializers feed float16 and float32 computations.
    let init_index: HashMap<String, usize> = g
        .initializers
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(i.data, InitData::F32(_)))
        .map(|(n, i)| (i.name.clone(), n))
        .collect();
    let mut uses: HashMap<&str, HashSet<Ty>> = HashMap::new();
    for (n, node) in nodes.iter().enumerate() {
        if SHAPE_ONLY.contains(&node.op_type.as_str()) {
            continue;
        }
        for inp in &node.input {
            if init_index.contains_key(inp) {
                uses.entry(inp).or_default().insert(prec(n));
            }
        }
    }
    let mut ty: HashMap<String, Ty> = HashMap::new();
    for vi in &g.inputs {
        let t = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .map_or(Ty::Other, |t| elem_ty(t.elem_type));
        ty.insert(vi.name.clone(), t);
    }
    // Float16 copies of initializers that float32 nodes also read.
    let mut f16_copy: HashMap<String, String> = HashMap::new();
    let mut extra = Vec::new();
    for init in &mut g.initializers {
        let InitData::F32(t) = &init.data else {
            ty.insert(init.name.clone(), Ty::Other);
            continue;
        };
        let used = uses.get(init.name.as_str());
        let in16 = used.is_some_and(|u| u.contains(&Ty::F16));
        let in32 = used.is_some_and(|u| u.contains(&Ty::F32));
        let half = || InitData::F16 {
            shape: t.shape.clone(),
            data: t.data.iter().map(|&v| half::f16::from_f32(v)).collect(),
        };
        if in16 && in32 {
            let name = format!("{}.fp16", init.name);
            extra.push((name.clone(), half()));
            f16_copy.insert(init.name.clone(), name.clone());
            ty.insert(name, Ty::F16);
            ty.insert(init.name.clone(), Ty::F32);
        } else if in16 {
            init.data = half();
            ty.insert(init.name.clone(), Ty::F16);
        } else {
            ty.insert(init.name.clone(), Ty::F32);
        }
    }
    for (name, data) in extra {
        g.push_initializer(&name, data);
    }

    let mut stats = Fp16Stats::default();
    let mut out_nodes = Vec::with_capacity(nodes.len() * 5 / 4);
    let mut out_keep = Vec::with_capacity(nodes.len() * 5 / 4);
    let mut casts: HashMap<(String, Ty), String> = HashMap::new();
    for (n, mut node) in nodes.into_iter().enumerate() {
        let p = prec(n);
        let op = node.op_type.clone();
        let mut any_float = false;
        if !SHAPE_ONLY.contains(&op.as_str()) {
            for inp in node.input.iter_mut() {
                let t = ty.get(inp.as_str()).copied().unwrap_or(Ty::Other);
                if t == Ty::Other || inp.is_empty() {
                    continue;
                }
                any_float = true;
                if t == p {
                    continue;
                }
                if p == Ty::F16 {
                    if let Some(copy) = f16_copy.get(inp.as_str()) {
                        *inp = copy.clone();
                        continue;
                    }
                }
                let key = (inp.clone(), p);
                let cast = casts.entry(key).or_insert_with(|| {
                    let out = format!("{inp}/to_{}", if p == Ty::F16 { "fp16" } else { "fp32" });
                    out_nodes.push(cast_node(&out, inp, &out, p));
                    out_keep.push(p == Ty::F32);
                    stats.casts += 1;
                    ty.insert(out.clone(), p);
                    out
                });
                *inp = cast.clone();
            }
        }
        let out_ty = if op == "Cast" {
            let to = node.attribute.iter_mut().find(|a| a.name == "to");
            match to {
                Some(a) if a.i == data_type::FLOAT as i64 && p == Ty::F16 => {
                    a.i = data_type::FLOAT16 as i64;
                    Ty::F16
                }
                Some(a) => elem_ty(a.i as i32),
                None => Ty::Other,
            }
        } else if NON_FLOAT_OUTPUT.contains(&op.as_str()) || !any_float {
            Ty::Other
        } else {
            p
        };
        if out_ty != Ty::Other {
            if p == Ty::F16 {
                stats.f16_nodes += 1;
            } else {
                stats.f32_nodes += 1;
            }
        }
        for o in &node.output {
            ty.insert(o.clone(), out_ty);
        }
        out_nodes.push(node);
        out_keep.push(keep[n]);
    }

    // Float32 at the graph outputs.
    for vi in &g.outputs {
        let want = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .map_or(Ty::Other, |t| elem_ty(t.elem_type));
        let have = ty.get(&vi.name).copied().unwrap_or(Ty::Other);
        if want == Ty::Other || have == want {
            continue;
        }
        let inner = format!(
            "{}/{}",
            vi.name,
            if have == Ty::F16 { "fp16" } else { "fp32" }
        );
        for node in &mut out_nodes {
            for o in node.output.iter_mut().chain(node.input.iter_mut()) {
                if *o == vi.name {
                    *o = inner.clone();
                }
            }
            if node.name == vi.name {
                node.name = inner.clone();
            }
        }
        out_nodes.push(cast_node(&vi.name, &inner, &vi.name, want));
        out_keep.push(true);
        stats.casts += 1;
    }
    g.nodes = out_nodes;
    g.keep_f32 = out_keep;
    stats
}

/// Smallest float32 initializer [`f16_storage`] stores as float16: biases and normalization
/// parameters stay exact.
pub const F16_STORAGE_MIN_ELEMENTS: usize = 1024;

/// Store every float32 initializer of at least `min_elements` whose values fit float16 as
/// float16, read through a `Cast` back to float32 (see the module docs). Returns the bytes saved.
pub fn f16_storage(g: &mut GraphBuilder, min_elements: usize) -> usize {
    let mut widened: HashMap<String, String> = HashMap::new();
    let mut casts = Vec::new();
    for init in &mut g.initializers {
        let InitData::F32(t) = &init.data else {
            continue;
        };
        if t.data.len() < min_elements || t.data.iter().any(|v| !v.is_finite() || v.abs() > 65504.0)
        {
            continue;
        }
        init.data = InitData::F16 {
            shape: t.shape.clone(),
            data: t.data.iter().map(|&v| half::f16::from_f32(v)).collect(),
        };
        let out = format!("{}/to_fp32", init.name);
        casts.push(cast_node(&out, &init.name, &out, Ty::F32));
        widened.insert(init.name.clone(), out);
    }
    let saved: usize = g
        .initializers
        .iter()
        .filter(|i| widened.contains_key(&i.name))
        .map(|i| i.data.byte_len())
        .sum();
    for node in &mut g.nodes {
        for inp in node.input.iter_mut() {
            if let Some(w) = widened.get(inp.as_str()) {
                *inp = w.clone();
            }
        }
    }
    let n = casts.len();
    g.nodes.splice(0..0, casts);
    g.keep_f32.splice(0..0, std::iter::repeat_n(true, n));
    saved
}

/// The largest sum |q1| + |q2| of two int8 weights that one integer dot-product step adds.
///
/// ONNX Runtime multiplies uint8 activations (0..=255) by int8 weights. On x86 CPUs without VNNI
/// (AVX2-only laptops and servers) its kernels use `vpmaddubsw`, which adds the products of two
/// weights into a *saturating* int16: 255 · (|q1| + |q2|) must stay within 32767, so
/// |q1| + |q2| ≤ 128. Full-range weights (127 + 127) break that and silently change the result
/// on those CPUs only; VNNI and ARM kernels accumulate in int32 and are exact anyway.
pub const INT8_PAIR_MAX: i32 = 128;

/// The largest magnitude of a convolution's int8 weight: [-64, 64] ("7-bit" weights, ONNX
/// Runtime's `reduce_range`), so that *any* two of them satisfy [`INT8_PAIR_MAX`]: which two a
/// convolution kernel pairs depends on the runtime's weight layout (ONNX Runtime may reorder a
/// conv's weights channels-last).
pub const INT8_CONV_WEIGHT_MAX: i8 = 64;

/// Per-channel symmetric int8 quantization of a convolution weight of `shape` along `axis`:
/// `(q, scale)`, with `w ≈ q · scale[c]` for the element's index `c` on `axis`, and `q` in
/// [-[`INT8_CONV_WEIGHT_MAX`], [`INT8_CONV_WEIGHT_MAX`]].
pub fn quantize_per_channel(data: &[f32], shape: &[usize], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let qmax = f32::from(INT8_CONV_WEIGHT_MAX);
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let channel = |idx: usize| (idx / inner) % channels;
    let mut max = vec![0f32; channels];
    for (idx, v) in data.iter().enumerate() {
        let m = &mut max[channel(idx)];
        *m = m.max(v.abs());
    }
    let scale: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / qmax } else { 1.0 })
        .collect();
    let q = data
        .iter()
        .enumerate()
        .map(|(idx, v)| {
            (v / scale[channel(idx)])
                .round_ties_even()
                .clamp(-qmax, qmax) as i8
        })
        .collect();
    (q, scale)
}

/// Per-output-channel symmetric int8 quantization of a `[K, N]` matmul weight: `(q, scale[N])`.
///
/// Integer matmul kernels pair neighbouring rows: ONNX Runtime packs `K` in groups of four and
/// `vpmaddubsw` adds rows `2i` and `2i + 1` of a column. Each column's scale is therefore set by
/// its largest such pair, `scale = max |w[2i]| + |w[2i+1]| over i, / 127`, so that after
/// rounding (at most ½ each) every pair keeps |q1| + |q2| ≤ 128 = [`INT8_PAIR_MAX`]. A column
/// whose largest weight has small neighbours keeps nearly all of int8's range (a scale close to
/// max / 127); the worst case, two equal maxima side by side, is [-64, 64] as for convolutions.
pub fn quantize_per_column(data: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    debug_assert_eq!(data.len(), k * n);
    let mut pair_max = vec![0f32; n];
    for i in (0..k).step_by(2) {
        for (c, m) in pair_max.iter_mut().enumerate() {
            let a = data[i * n + c].abs();
            let b = if i + 1 < k {
                data[(i + 1) * n + c].abs()
            } else {
                0.0
            };
            *m = m.max(a + b);
        }
    }
    let scale: Vec<f32> = pair_max
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = data
        .iter()
        .enumerate()
        .map(|(idx, v)| (v / scale[idx % n]).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

/// A node whose weight a quantization pass rewrites, with the weight's initializer index.
#[derive(Clone, Copy)]
struct WeightOp {
    node: usize,
    weight: usize,
    /// The weight's output-channel axis: 1 for a `[K, N]` matmul weight, 0 for `[O, I, k]` conv.
    axis: usize,
}

/// The nodes a quantization pass rewrites: every `MatMul` whose right operand is a 2-D float32
/// initializer (the Transformer's projections and feed-forward, the feature projection,
/// `lm_head`) and, with `convs`, every convolution of the feature encoder (not the positional
/// conv, a wide grouped conv kept float32 like the other islands of the fp16 pass).
fn weight_ops(g: &GraphBuilder, convs: bool) -> Vec<WeightOp> {
    let init_index: HashMap<&str, usize> = g
        .initializers
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(&i.data, InitData::F32(_)))
        .map(|(n, i)| (i.name.as_str(), n))
        .collect();
    let rank = |i: usize| match &g.initializers[i].data {
        InitData::F32(t) => t.shape.len(),
        _ => 0,
    };
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(n, node)| {
            let w = *init_index.get(node.input.get(1)?.as_str())?;
            let axis = match node.op_type.as_str() {
                // The feature encoder's im2col matmuls (`wav2vec2::feature_encoder_as_matmuls`)
                // only with `convs`, and never the first, whose input is the raw audio.
                "MatMul" if node.name.starts_with(FEATURE_ENCODER) => {
                    if !(convs && rank(w) == 2 && !node.name.starts_with(FIRST_CONV)) {
                        return None;
                    }
                    1
                }
                "MatMul" if node.input.len() == 2 && rank(w) == 2 => 1,
                "Conv" if convs && rank(w) == 3 && node.name.starts_with(FEATURE_ENCODER) => 0,
                _ => return None,
            };
            Some(WeightOp {
                node: n,
                weight: w,
                axis,
            })
        })
        .collect()
}

/// The checkpoint scope of the feature encoder's nodes (see [`crate::graph`] on node names).
const FEATURE_ENCODER: &str = "feature_extractor.";
/// The scope of the first conv layer's nodes.
const FIRST_CONV: &str = "feature_extractor.conv_layers.0/";

/// What [`to_int8`] or [`to_qdq`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantStats {
    /// Matmuls rewritten.
    pub matmuls: usize,
    /// Convolutions rewritten.
    pub convs: usize,
    /// Weights quantized to int8.
    pub int8_parameters: usize,
    /// Mean relative weight reconstruction error ‖w − q·s‖ / ‖w‖ over the quantized weights.
    pub weight_rel_error: f64,
}

impl QuantStats {
    fn new(g: &GraphBuilder, ops: &[WeightOp]) -> Self {
        let convs = ops
            .iter()
            .filter(|o| g.nodes[o.node].name.starts_with(FEATURE_ENCODER))
            .count();
        QuantStats {
            matmuls: ops.len() - convs,
            convs,
            ..Default::default()
        }
    }
}

/// Quantize the weights of the given ops in place (float32 → int8 plus a `{name}.scale`
/// initializer of per-channel float32 scales, `[channels]`). Returns the scale initializers'
/// names by weight name.
fn quantize_weights(
    g: &mut GraphBuilder,
    ops: &[WeightOp],
    stats: &mut QuantStats,
) -> HashMap<String, String> {
    let mut scales = HashMap::new();
    let mut err_sum = 0f64;
    for op in ops {
        let name = g.initializers[op.weight].name.clone();
        if scales.contains_key(&name) {
            continue;
        }
        let InitData::F32(t) = &g.initializers[op.weight].data else {
            unreachable!("weight_ops selects float32 weights");
        };
        let shape = t.shape.clone();
        let (q, s) = match shape[..] {
            [k, n] if op.axis == 1 => quantize_per_column(&t.data, k, n),
            _ => quantize_per_channel(&t.data, &shape, op.axis),
        };
        let inner: usize = shape[op.axis + 1..].iter().product();
        let (mut num, mut den) = (0f64, 0f64);
        for (idx, (&w, &qv)) in t.data.iter().zip(&q).enumerate() {
            let d = w as f64 - qv as f64 * s[(idx / inner) % s.len()] as f64;
            num += d * d;
            den += (w as f64) * (w as f64);
        }
        err_sum += if den > 0.0 { (num / den).sqrt() } else { 0.0 };
        stats.int8_parameters += q.len();
        g.initializers[op.weight].data = InitData::I8 { shape, data: q };
        let scale_name = format!("{name}.scale");
        let scale_shape = vec![s.len()];
        g.push_initializer(
            &scale_name,
            InitData::F32(crate::checkpoint::Tensor::new(scale_shape, s)),
        );
        scales.insert(name, scale_name);
    }
    if !scales.is_empty() {
        stats.weight_rel_error = err_sum / scales.len() as f64;
    }
    scales
}

/// Dynamic int8 quantization of the weight matmuls (and, with `convs`, the feature encoder's
/// im2col matmuls); see the module docs.
pub fn to_int8(g: &mut GraphBuilder, convs: bool) -> QuantStats {
    // Only matmuls: without `convs` the encoder keeps its float32 `Conv`s; with it, the first
    // conv layer (raw audio in) is left a float32 matmul by `weight_ops`.
    let ops: Vec<WeightOp> = weight_ops(g, convs)
        .into_iter()
        .filter(|o| g.nodes[o.node].op_type == "MatMul")
        .collect();
    let mut stats = QuantStats::new(g, &ops);
    let scales = quantize_weights(g, &ops, &mut stats);
    let targets: HashSet<usize> = ops.iter().map(|o| o.node).collect();
    let nodes = std::mem::take(&mut g.nodes);
    let mut out_nodes = Vec::with_capacity(nodes.len() + 5 * targets.len());
    // One DynamicQuantizeLinear per activation, shared by q, k and v.
    let mut quantized: HashMap<String, [String; 3]> = HashMap::new();
    // The row-range constants, made once if any encoder matmul is quantized.
    let mut row_consts: Option<RowConsts> = None;
    for (n, node) in nodes.into_iter().enumerate() {
        if !targets.contains(&n) {
            out_nodes.push(node);
            continue;
        }
        let (x, w, y) = (&node.input[0], &node.input[1], &node.output[0]);
        if node.name.starts_with(FEATURE_ENCODER) {
            let consts = row_consts.get_or_insert_with(|| RowConsts {
                eps: g.scalar(1e-12),
                axes: (g.opset() >= 18).then(|| g.ints(&[-1])),
            });
            row_normalized_int8_matmul(&mut out_nodes, &node.name, [x, w, y], &scales[w], consts);
            continue;
        }
        let xq = quantized
            .entry(x.clone())
            .or_insert_with(|| dynamic_quantize(&mut out_nodes, &node.name, x))
            .clone();
        int8_matmul(&mut out_nodes, &node.name, &xq, w, &scales[w], y);
    }
    g.keep_f32 = vec![false; out_nodes.len()];
    g.nodes = out_nodes;
    stats
}

/// `DynamicQuantizeLinear` of `x`, named after the matmul `base`: its `[q, scale, zero_point]`.
fn dynamic_quantize(out: &mut Vec<NodeProto>, base: &str, x: &str) -> [String; 3] {
    let dq = format!("{base}/DynamicQuantizeLinear");
    let outs = [
        format!("{dq}:q"),
        format!("{dq}:scale"),
        format!("{dq}:zero_point"),
    ];
    out.push(plain_node(
        "DynamicQuantizeLinear",
        &dq,
        &[x],
        &[&outs[0], &outs[1], &outs[2]],
    ));
    outs
}

/// `y = float(MatMulInteger(xq, w, x_zero_point)) · (x_scale · w_scale)`, the pattern ONNX
/// Runtime fuses into `DynamicQuantizeMatMul`.
fn int8_matmul(
    out: &mut Vec<NodeProto>,
    base: &str,
    [xq, xs, xz]: &[String; 3],
    w: &str,
    w_scale: &str,
    y: &str,
) {
    let acc = format!("{base}/MatMulInteger");
    out.push(plain_node("MatMulInteger", &acc, &[xq, w, xz], &[&acc]));
    let accf = format!("{base}/Cast");
    out.push(cast_node(&accf, &acc, &accf, Ty::F32));
    let s = format!("{base}/scale");
    out.push(plain_node("Mul", &s, &[xs, w_scale], &[&s]));
    out.push(plain_node("Mul", y, &[&accf, &s], &[y]));
}

/// The constants [`row_normalized_int8_matmul`] shares across the encoder's matmuls: the
/// smallest range (`eps`) and, from opset 18 on, the reduction axes input (an attribute before).
struct RowConsts {
    eps: String,
    axes: Option<String>,
}

/// One of the feature encoder's im2col matmuls, quantized with per-row (per output frame)
/// activation ranges: each row of `x` is divided by its own range (max − min, at least `eps`),
/// the result is quantized per tensor ([`dynamic_quantize`] and [`int8_matmul`], which ONNX
/// Runtime fuses into `DynamicQuantizeMatMul`), and each output row is multiplied back by its
/// range. A per-tensor range over a whole utterance quantizes quiet frames coarsely, which cost
/// the shipped model 5.7 points of command-word WER; the per-row form matches fp32 there.
/// `DynamicQuantizeLinear` is used rather than a per-axis `QuantizeLinear` because tract only
/// accepts constant `QuantizeLinear` scales.
fn row_normalized_int8_matmul(
    out: &mut Vec<NodeProto>,
    base: &str,
    [x, w, y]: [&str; 3],
    w_scale: &str,
    consts: &RowConsts,
) {
    let name = |part: &str| format!("{base}/{part}");
    let reduce = |op: &str, out_name: &str| {
        let mut n = plain_node(op, out_name, &[x], &[out_name]);
        n.attribute.push(attr_int("keepdims", 1));
        match &consts.axes {
            Some(a) => n.input.push(a.clone()),
            None => n.attribute.push(attr_ints("axes", &[-1])),
        }
        n
    };
    let (mx, mn, span, range, xn) = (
        name("row_max"),
        name("row_min"),
        name("row_span"),
        name("row_range"),
        name("row_normalized"),
    );
    out.push(reduce("ReduceMax", &mx));
    out.push(reduce("ReduceMin", &mn));
    out.push(plain_node("Sub", &span, &[&mx, &mn], &[&span]));
    out.push(plain_node("Max", &range, &[&span, &consts.eps], &[&range]));
    out.push(plain_node("Div", &xn, &[x, &range], &[&xn]));
    let xq = dynamic_quantize(out, base, &xn);
    let y0 = name("row_normalized_output");
    int8_matmul(out, base, &xq, w, w_scale, &y0);
    out.push(plain_node("Mul", y, &[&y0, &range], &[y]));
}

/// Names of the activations (inputs) of the ops [`to_qdq`] quantizes, in graph order: the
/// tensors it needs calibrated scales for.
pub fn qdq_activation_names(g: &GraphBuilder, convs: bool) -> Vec<String> {
    let mut seen = HashSet::new();
    weight_ops(g, convs)
        .into_iter()
        .map(|o| g.nodes[o.node].input[0].clone())
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// Explicit symmetric QDQ quantization of the weight matmuls (and, with `convs`, the feature
/// encoder's convolutions): the TensorRT form; see the module docs. `activation_scales` gives
/// each activation's per-tensor scale (`amax / 127`) by the names [`qdq_activation_names`]
/// returns; an op whose activation has none is left in float32.
pub fn to_qdq(
    g: &mut GraphBuilder,
    activation_scales: &BTreeMap<String, f32>,
    convs: bool,
) -> QuantStats {
    let ops: Vec<WeightOp> = weight_ops(g, convs)
        .into_iter()
        .filter(|o| activation_scales.contains_key(&g.nodes[o.node].input[0]))
        .collect();
    let mut stats = QuantStats::new(g, &ops);
    let scales = quantize_weights(g, &ops, &mut stats);
    let axes: HashMap<usize, usize> = ops.iter().map(|o| (o.node, o.axis)).collect();
    let nodes = std::mem::take(&mut g.nodes);
    let mut out_nodes = Vec::with_capacity(nodes.len() + 3 * axes.len());
    let mut new_inits: Vec<(String, InitData)> = Vec::new();
    let mut dequantized: HashMap<String, String> = HashMap::new();
    let zero_i8 = |n: usize| InitData::I8 {
        shape: if n == 0 { vec![] } else { vec![n] },
        data: vec![0; n.max(1)],
    };
    for (n, mut node) in nodes.into_iter().enumerate() {
        let Some(&axis) = axes.get(&n) else {
            out_nodes.push(node);
            continue;
        };
        let x = node.input[0].clone();
        let w = node.input[1].clone();
        let xd = dequantized
            .entry(x.clone())
            .or_insert_with(|| {
                let base = format!("{}/act", node.name);
                let s = format!("{base}.scale");
                let z = format!("{base}.zero_point");
                new_inits.push((
                    s.clone(),
                    InitData::F32(crate::checkpoint::Tensor::new(
                        vec![],
                        vec![activation_scales[&x]],
                    )),
                ));
                new_inits.push((z.clone(), zero_i8(0)));
                let q = format!("{base}/QuantizeLinear");
                let d = format!("{base}/DequantizeLinear");
                out_nodes.push(plain_node("QuantizeLinear", &q, &[&x, &s, &z], &[&q]));
                out_nodes.push(plain_node("DequantizeLinear", &d, &[&q, &s, &z], &[&d]));
                d
            })
            .clone();
        let channels = match &g.initializers.iter().find(|i| i.name == w).map(|i| &i.data) {
            Some(InitData::I8 { shape, .. }) => shape[axis],
            _ => unreachable!("quantized above"),
        };
        let wz = format!("{w}.zero_point");
        if !new_inits.iter().any(|(name, _)| *name == wz) {
            new_inits.push((wz.clone(), zero_i8(channels)));
        }
        let wd = format!("{}/weight/DequantizeLinear", node.name);
        let mut deq = plain_node("DequantizeLinear", &wd, &[&w, &scales[&w], &wz], &[&wd]);
        deq.attribute.push(attr_int("axis", axis as i64));
        out_nodes.push(deq);
        node.input[0] = xd;
        node.input[1] = wd;
        out_nodes.push(node);
    }
    for (name, data) in new_inits {
        g.push_initializer(&name, data);
    }
    g.keep_f32 = vec![false; out_nodes.len()];
    g.nodes = out_nodes;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_quantization_along_the_first_axis() {
        // A conv weight [O=2, I=1, k=3]: one scale per output channel.
        let w = [1.0, -0.4, 0.0, 2.0, -2.0, 1.2];
        let (q, s) = quantize_per_channel(&w, &[2, 1, 3], 0);
        assert_eq!(s, vec![1.0 / 64.0, 2.0 / 64.0]);
        assert_eq!(q, vec![64, -26, 0, 64, -64, 38]);
    }

    /// The largest |q1| + |q2| over the pairs an integer matmul kernel adds (rows `2i` and `2i + 1`
    /// of each column of a `[K, N]` weight).
    fn max_row_pair_sum(q: &[i8], k: usize, n: usize) -> i32 {
        let mut max = 0;
        for i in (0..k).step_by(2) {
            for c in 0..n {
                let a = i32::from(q[i * n + c]).abs();
                let b = if i + 1 < k {
                    i32::from(q[(i + 1) * n + c]).abs()
                } else {
                    0
                };
                max = max.max(a + b);
            }
        }
        max
    }

    #[test]
    fn per_column_quantization_is_symmetric_and_bounds_row_pairs() {
        // [K=3, N=3]: column 0's largest pair is rows 0+1 (1.0 + 2.0), column 1's a lone 0.5 with
        // a small neighbour, column 2 is all zero; row 2 pairs with nothing.
        let w = [1.0, -0.5, 0.0, -2.0, 0.1, 0.0, 2.5, 0.0, 0.0];
        let (q, s) = quantize_per_column(&w, 3, 3);
        assert_eq!(s, vec![3.0 / 127.0, 0.6 / 127.0, 1.0]);
        assert_eq!(q[3], -85); // -2.0 / (3/127) = -84.67
        assert_eq!(q[6], 106); // 2.5 / (3/127) = 105.8: a lone row keeps its range
        assert_eq!(q[1], -106);
        assert_eq!(q[2], 0);
        for (i, (&w, &q)) in w.iter().zip(&q).enumerate() {
            assert!((w - q as f32 * s[i % 3]).abs() <= s[i % 3] / 2.0 + 1e-7);
        }
        assert!(max_row_pair_sum(&q, 3, 3) <= INT8_PAIR_MAX);
        // Equal maxima side by side: the worst case, 7-bit-like.
        let (q, _) = quantize_per_column(&[1.0, -1.0], 2, 1);
        assert_eq!(q, vec![64, -64]);
        // Rounding never pushes a pair past 128: random columns.
        let mut x = 0x1234_5678u32;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let (k, n) = (64, 32);
        let w: Vec<f32> = (0..k * n).map(|_| rand()).collect();
        let (q, _) = quantize_per_column(&w, k, n);
        assert!(max_row_pair_sum(&q, k, n) <= INT8_PAIR_MAX);
    }

    #[test]
    fn large_float32_weights_are_stored_as_float16_behind_a_cast() {
        use crate::checkpoint::Tensor;
        let mut g = GraphBuilder::new(17);
        let x = g.input("x", data_type::FLOAT, &[]);
        let big = g.weight("big", Tensor::new(vec![4, 512], vec![0.1; 2048]));
        let small = g.weight("small", Tensor::new(vec![4], vec![0.5; 4]));
        let huge = g.weight("out_of_range", Tensor::new(vec![2048], vec![1e6; 2048]));
        let y = g.node("MatMul", &[&x, &big], vec![]);
        let z = g.node("Add", &[&y, &small], vec![]);
        let w = g.node("Mul", &[&z, &huge], vec![]);
        let v = g.node("Add", &[&w, &big], vec![]);
        let nodes = g.nodes.len();
        let saved = f16_storage(&mut g, F16_STORAGE_MIN_ELEMENTS);
        assert_eq!(saved, 2048 * 2);
        let data = |name: &str| &g.initializers.iter().find(|i| i.name == name).unwrap().data;
        assert!(
            matches!(data("big"), InitData::F16 { data, .. } if data[0] == half::f16::from_f32(0.1))
        );
        assert!(matches!(data("small"), InitData::F32(_)));
        assert!(
            matches!(data("out_of_range"), InitData::F32(_)),
            "beyond float16's range"
        );
        // One Cast, first, and both readers of `big` read its float32 output.
        assert_eq!(g.nodes.len(), nodes + 1);
        assert_eq!(g.keep_f32.len(), g.nodes.len());
        assert_eq!(g.nodes[0].op_type, "Cast");
        assert_eq!(g.nodes[0].input, ["big"]);
        let cast = g.nodes[0].output[0].clone();
        let readers: Vec<_> = g.nodes.iter().filter(|n| n.input.contains(&cast)).collect();
        assert_eq!(readers.len(), 2);
        assert!(!g.nodes[1..]
            .iter()
            .any(|n| n.input.iter().any(|i| i == "big")));
        let _ = v;
    }
}
