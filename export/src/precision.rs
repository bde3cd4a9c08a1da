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
//!   kernels. Convolutions stay float32.
//! * [`to_qdq`]: the same matmuls as explicit symmetric `QuantizeLinear`/`DequantizeLinear` pairs
//!   (int8, zero point 0, per-channel weights, calibrated per-tensor activation scales), the form
//!   TensorRT builds int8 engines from.

use std::collections::{BTreeMap, HashMap, HashSet};

use w2v_engine::onnx_pb::{data_type, AttributeProto, NodeProto};

use crate::graph::{attr_int, GraphBuilder, InitData};

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

/// Per-output-channel symmetric int8 quantization of a `[K, N]` weight: `(q, scale[N])`, with
/// `w[k, n] ≈ q[k, n] · scale[n]` and `q` in [-127, 127].
pub fn quantize_per_column(data: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut max = vec![0f32; n];
    for row in data.chunks_exact(n) {
        for (m, v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scale: Vec<f32> = max
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let mut q = Vec::with_capacity(k * n);
    for row in data.chunks_exact(n) {
        for (v, s) in row.iter().zip(&scale) {
            q.push((v / s).round_ties_even().clamp(-127.0, 127.0) as i8);
        }
    }
    (q, scale)
}

/// The weight matmuls a quantization pass rewrites: `(node index, weight initializer index)`
/// for every `MatMul` whose right operand is a 2-D float32 initializer.
fn weight_matmuls(g: &GraphBuilder) -> Vec<(usize, usize)> {
    let init_index: HashMap<&str, usize> = g
        .initializers
        .iter()
        .enumerate()
        .filter(|(_, i)| matches!(&i.data, InitData::F32(t) if t.shape.len() == 2))
        .map(|(n, i)| (i.name.as_str(), n))
        .collect();
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| node.op_type == "MatMul" && node.input.len() == 2)
        .filter_map(|(n, node)| init_index.get(node.input[1].as_str()).map(|&i| (n, i)))
        .collect()
}

/// What [`to_int8`] or [`to_qdq`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantStats {
    /// Matmuls rewritten.
    pub matmuls: usize,
    /// Weights quantized to int8.
    pub int8_parameters: usize,
    /// Mean relative weight reconstruction error ‖w − q·s‖ / ‖w‖ over the quantized weights.
    pub weight_rel_error: f64,
}

/// Quantize the weights of the given matmuls in place (`[K, N]` → int8 plus a `{name}.scale`
/// initializer of `[N]` float32 scales). Returns the scale initializers' names by weight name.
fn quantize_weights(
    g: &mut GraphBuilder,
    matmuls: &[(usize, usize)],
    stats: &mut QuantStats,
) -> HashMap<String, String> {
    let mut scales = HashMap::new();
    let mut err_sum = 0f64;
    for &(_, i) in matmuls {
        let name = g.initializers[i].name.clone();
        if scales.contains_key(&name) {
            continue;
        }
        let InitData::F32(t) = &g.initializers[i].data else {
            unreachable!("weight_matmuls selects float32 weights");
        };
        let (k, n) = (t.shape[0], t.shape[1]);
        let (q, s) = quantize_per_column(&t.data, k, n);
        let (mut num, mut den) = (0f64, 0f64);
        for (idx, (&w, &qv)) in t.data.iter().zip(&q).enumerate() {
            let d = w as f64 - qv as f64 * s[idx % n] as f64;
            num += d * d;
            den += (w as f64) * (w as f64);
        }
        err_sum += if den > 0.0 { (num / den).sqrt() } else { 0.0 };
        stats.int8_parameters += q.len();
        g.initializers[i].data = InitData::I8 {
            shape: vec![k, n],
            data: q,
        };
        let scale_name = format!("{name}.scale");
        g.push_initializer(
            &scale_name,
            InitData::F32(crate::checkpoint::Tensor::new(vec![n], s)),
        );
        scales.insert(name, scale_name);
    }
    if !scales.is_empty() {
        stats.weight_rel_error = err_sum / scales.len() as f64;
    }
    scales
}

/// Dynamic int8 quantization of the weight matmuls; see the module docs.
pub fn to_int8(g: &mut GraphBuilder) -> QuantStats {
    let matmuls = weight_matmuls(g);
    let mut stats = QuantStats {
        matmuls: matmuls.len(),
        ..Default::default()
    };
    let scales = quantize_weights(g, &matmuls, &mut stats);
    let targets: HashSet<usize> = matmuls.iter().map(|&(n, _)| n).collect();
    let nodes = std::mem::take(&mut g.nodes);
    let keep = std::mem::take(&mut g.keep_f32);
    let mut out_nodes = Vec::with_capacity(nodes.len() + 5 * targets.len());
    // One DynamicQuantizeLinear per activation, shared by q, k and v.
    let mut quantized: HashMap<String, [String; 3]> = HashMap::new();
    for (n, node) in nodes.into_iter().enumerate() {
        if !targets.contains(&n) {
            out_nodes.push(node);
            continue;
        }
        let (x, w, y) = (&node.input[0], &node.input[1], &node.output[0]);
        let [xq, xs, xz] = quantized
            .entry(x.clone())
            .or_insert_with(|| {
                let base = format!("{}/DynamicQuantizeLinear", node.name);
                let outs = [
                    format!("{base}:q"),
                    format!("{base}:scale"),
                    format!("{base}:zero_point"),
                ];
                out_nodes.push(plain_node(
                    "DynamicQuantizeLinear",
                    &base,
                    &[x],
                    &[&outs[0], &outs[1], &outs[2]],
                ));
                outs
            })
            .clone();
        let base = &node.name;
        let acc = format!("{base}/MatMulInteger");
        out_nodes.push(plain_node("MatMulInteger", &acc, &[&xq, w, &xz], &[&acc]));
        let accf = format!("{base}/Cast");
        out_nodes.push(cast_node(&accf, &acc, &accf, Ty::F32));
        let s = format!("{base}/scale");
        out_nodes.push(plain_node("Mul", &s, &[&xs, &scales[w]], &[&s]));
        out_nodes.push(plain_node("Mul", y, &[&accf, &s], &[y]));
    }
    g.keep_f32 = vec![false; out_nodes.len()];
    drop(keep);
    g.nodes = out_nodes;
    stats
}

/// Names of the activations (left operands) of the weight matmuls, in graph order: the tensors
/// [`to_qdq`] needs calibrated scales for.
pub fn qdq_activation_names(g: &GraphBuilder) -> Vec<String> {
    let mut seen = HashSet::new();
    weight_matmuls(g)
        .into_iter()
        .map(|(n, _)| g.nodes[n].input[0].clone())
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// Explicit symmetric QDQ quantization of the weight matmuls (the TensorRT form); see the module
/// docs. `activation_scales` gives each activation's per-tensor scale (`amax / 127`) by the names
/// [`qdq_activation_names`] returns; an activation without one is left in float32.
pub fn to_qdq(g: &mut GraphBuilder, activation_scales: &BTreeMap<String, f32>) -> QuantStats {
    let matmuls: Vec<(usize, usize)> = weight_matmuls(g)
        .into_iter()
        .filter(|&(n, _)| activation_scales.contains_key(&g.nodes[n].input[0]))
        .collect();
    let mut stats = QuantStats {
        matmuls: matmuls.len(),
        ..Default::default()
    };
    let scales = quantize_weights(g, &matmuls, &mut stats);
    let targets: HashSet<usize> = matmuls.iter().map(|&(n, _)| n).collect();
    let nodes = std::mem::take(&mut g.nodes);
    let mut out_nodes = Vec::with_capacity(nodes.len() + 3 * targets.len());
    let mut new_inits: Vec<(String, InitData)> = Vec::new();
    let mut dequantized: HashMap<String, String> = HashMap::new();
    let axis = |a: i64| AttributeProto {
        name: "axis".into(),
        r#type: w2v_engine::onnx_pb::attribute_type::INT,
        i: a,
        ..Default::default()
    };
    let zero_i8 = |n: usize| InitData::I8 {
        shape: if n == 0 { vec![] } else { vec![n] },
        data: vec![0; n.max(1)],
    };
    for (n, mut node) in nodes.into_iter().enumerate() {
        if !targets.contains(&n) {
            out_nodes.push(node);
            continue;
        }
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
        let cols = match &g.initializers.iter().find(|i| i.name == w).map(|i| &i.data) {
            Some(InitData::I8 { shape, .. }) => shape[1],
            _ => unreachable!("quantized above"),
        };
        let wz = format!("{w}.zero_point");
        new_inits.push((wz.clone(), zero_i8(cols)));
        let wd = format!("{}/weight/DequantizeLinear", node.name);
        let mut deq = plain_node("DequantizeLinear", &wd, &[&w, &scales[&w], &wz], &[&wd]);
        deq.attribute.push(axis(1));
        out_nodes.push(deq);
        node.input = vec![xd, wd];
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
    fn per_column_quantization_is_symmetric_and_exact_at_the_max() {
        // [K=2, N=3]
        let w = [1.0, -0.5, 0.0, -2.0, 0.25, 0.0];
        let (q, s) = quantize_per_column(&w, 2, 3);
        assert_eq!(s, vec![2.0 / 127.0, 0.5 / 127.0, 1.0]);
        assert_eq!(q[3], -127);
        assert_eq!(q[1], -127);
        assert_eq!(q[2], 0);
        for (i, (&w, &q)) in w.iter().zip(&q).enumerate() {
            assert!((w - q as f32 * s[i % 3]).abs() <= s[i % 3] / 2.0 + 1e-7);
        }
    }
}
