//! Every op's gradient rule, in one match: [`gradient`].
//!
//! The table covers exactly the ops `export/src/wav2vec2.rs` emits (opsets 17–21, both
//! feature-encoder norms, every activation). Ops that only compute shapes or the padding mask
//! (`Shape`, `Gather`, `Range`, `Less`, int `Cast`) carry no gradient: they never lie on a path
//! from a parameter to the logits, and [`super::TrainingGraphs::build`] refuses a graph where one does.

use w2v_engine::onnx_pb::{attr_int, attr_ints, data_type, NodeProto};

use super::{attr, input, output, AutodiffError, Emitter};

/// Ops that never carry a gradient (shape arithmetic and the padding mask).
pub const NON_DIFFERENTIABLE: &[&str] = &["Shape", "Gather", "Range", "Less", "Cast"];

/// Ops with a gradient rule in [`gradient`].
pub const DIFFERENTIABLE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sqrt",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Softmax",
    "Transpose",
    "Reshape",
    "Unsqueeze",
    "MatMul",
    "Conv",
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "Slice",
];

/// How many inputs the rule of `op` in [`gradient`] reads (at least).
fn min_inputs(op: &str) -> usize {
    match op {
        "Add" | "Sub" | "Mul" | "Div" | "MatMul" | "Conv" => 2,
        "Slice" => 3,
        _ => 1,
    }
}

/// The gradients of `node`'s inputs given `g`, the gradient of its (first) output. Entry i is
/// `Some(name)` for input i when `wants[i]` (the input leads back to a trainable parameter),
/// `None` otherwise. Forward tensors are referred to by name; the graph split decides which of
/// them the backward graph receives from the forward one.
pub fn gradient(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    wants: &[bool],
) -> Result<Vec<Option<String>>, AutodiffError> {
    // Every input the op's rule reads below exists (checked once, so `x(i)` cannot panic).
    input(node, min_inputs(&node.op_type) - 1)?;
    let x = |i: usize| node.input[i].as_str();
    let y = output(node, 0)?;
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let mut out: Vec<Option<String>> = vec![None; node.input.len()];
    let unsupported = |reason: &str| AutodiffError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason: reason.to_string(),
    };
    match node.op_type.as_str() {
        "Add" => {
            for (i, o) in out.iter_mut().enumerate().take(2) {
                if want(i) {
                    *o = Some(e.unbroadcast(g, y, x(i))?);
                }
            }
        }
        "Sub" => {
            if want(0) {
                out[0] = Some(e.unbroadcast(g, y, x(0))?);
            }
            if want(1) {
                let n = e.node("Neg", &[g], vec![]);
                out[1] = Some(e.unbroadcast(&n, y, x(1))?);
            }
        }
        "Mul" => {
            // d(a·b) = g·b da + g·a db (a and b may be the same tensor: both add up).
            for (i, other) in [(0, 1), (1, 0)] {
                if want(i) {
                    let m = e.node("Mul", &[g, x(other)], vec![]);
                    out[i] = Some(e.unbroadcast(&m, y, x(i))?);
                }
            }
        }
        "Div" => {
            // y = a / b: da = g / b, db = −g·y / b.
            if want(0) {
                let d = e.node("Div", &[g, x(1)], vec![]);
                out[0] = Some(e.unbroadcast(&d, y, x(0))?);
            }
            if want(1) {
                let gy = e.node("Mul", &[g, y], vec![]);
                let d = e.node("Div", &[&gy, x(1)], vec![]);
                let n = e.node("Neg", &[&d], vec![]);
                out[1] = Some(e.unbroadcast(&n, y, x(1))?);
            }
        }
        "Sqrt" => {
            // d√x = g / (2√x).
            let half = e.scalar(0.5);
            let h = e.node("Mul", &[g, &half], vec![]);
            out[0] = Some(e.node("Div", &[&h, y], vec![]));
        }
        "Erf" => {
            // d erf(x) = g · 2/√π · exp(−x²).
            let xx = e.node("Mul", &[x(0), x(0)], vec![]);
            let n = e.node("Neg", &[&xx], vec![]);
            let ex = e.node("Exp", &[&n], vec![]);
            let c = e.scalar(std::f32::consts::FRAC_2_SQRT_PI);
            let s = e.node("Mul", &[&ex, &c], vec![]);
            out[0] = Some(e.node("Mul", &[g, &s], vec![]));
        }
        "Tanh" => {
            // d tanh = g · (1 − y²).
            let yy = e.node("Mul", &[y, y], vec![]);
            let one = e.scalar(1.0);
            let d = e.node("Sub", &[&one, &yy], vec![]);
            out[0] = Some(e.node("Mul", &[g, &d], vec![]));
        }
        "Sigmoid" => {
            // dσ = g · y · (1 − y).
            let one = e.scalar(1.0);
            let d = e.node("Sub", &[&one, y], vec![]);
            let yd = e.node("Mul", &[y, &d], vec![]);
            out[0] = Some(e.node("Mul", &[g, &yd], vec![]));
        }
        "Relu" => {
            // g where x > 0, else 0.
            let zero = e.scalar(0.0);
            let pos = e.node("Greater", &[x(0), &zero], vec![]);
            out[0] = Some(e.node("Where", &[&pos, g, &zero], vec![]));
        }
        "Softmax" => {
            // dx = y · (g − Σ_axis g·y).
            let rank = e.rank(y)?;
            let axis = attr(node, "axis").map_or(-1, |a| a.i);
            let axis = if axis < 0 { axis + rank as i64 } else { axis };
            let gy = e.node("Mul", &[g, y], vec![]);
            let s = e.reduce_sum(&gy, &[axis], true);
            let d = e.node("Sub", &[g, &s], vec![]);
            out[0] = Some(e.node("Mul", &[y, &d], vec![]));
        }
        "Transpose" => {
            let rank = e.rank(x(0))?;
            let perm: Vec<i64> = match attr(node, "perm") {
                Some(a) => a.ints.clone(),
                None => (0..rank as i64).rev().collect(),
            };
            let mut inv = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            out[0] = Some(e.node("Transpose", &[g], vec![attr_ints("perm", &inv)]));
        }
        "Reshape" | "Unsqueeze" => {
            let s = e.shape_of(x(0));
            out[0] = Some(e.node("Reshape", &[g, &s], vec![]));
        }
        "MatMul" => matmul(e, node, g, want(0), want(1), &mut out)?,
        "Conv" => conv(e, node, g, wants, &mut out)?,
        "LayerNormalization" => layer_norm(e, node, g, wants, &mut out)?,
        "ReduceMean" | "ReduceSum" => {
            let xs = e.shape(x(0))?.clone();
            let axes = e.shapes.reduce_axes(node, e.opset, xs.rank())?;
            let keep = attr(node, "keepdims").map_or(1, |a| a.i) != 0;
            let gk = if keep {
                g.to_string()
            } else {
                let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                e.unsqueeze(g, &ax)
            };
            let s = e.shape_of(x(0));
            let mut d = e.node("Expand", &[&gk, &s], vec![]);
            if node.op_type == "ReduceMean" {
                let known: Option<usize> = axes.iter().map(|&a| xs.dims[a]).product();
                let inv_n = match known {
                    Some(n) => e.scalar(1.0 / n as f32),
                    None => {
                        // n = |x| / |y|, from the sizes of the forward tensors.
                        let sx = e.fwd_node("Size", &[x(0)], vec![]);
                        let sy = e.fwd_node("Size", &[y], vec![]);
                        let to = vec![attr_int("to", data_type::FLOAT as i64)];
                        let fx = e.node("Cast", &[&sx], to.clone());
                        let fy = e.node("Cast", &[&sy], to);
                        e.node("Div", &[&fy, &fx], vec![])
                    }
                };
                d = e.node("Mul", &[&d, &inv_n], vec![]);
            }
            out[0] = Some(d);
        }
        "Slice" => {
            // Zero-pad the gradient back to the input's extent along the sliced axes.
            let rank = e.rank(x(0))?;
            let starts = e.shapes.int_const(node, 1)?.to_vec();
            let axes: Vec<usize> = if node.input.len() > 3 && !node.input[3].is_empty() {
                e.shapes
                    .int_const(node, 3)?
                    .iter()
                    .map(|&a| (if a < 0 { a + rank as i64 } else { a }) as usize)
                    .collect()
            } else {
                (0..starts.len()).collect()
            };
            if node.input.len() > 4 && e.shapes.int_const(node, 4)?.iter().any(|&s| s != 1) {
                return Err(unsupported("steps other than 1"));
            }
            if starts.iter().any(|&s| s < 0) {
                return Err(unsupported("negative starts"));
            }
            // pads = [begin_0.., end_0..]. The end pad is −end for a negative end, dim − end
            // for a known dim, else dim_x(a) − dim_y(a) − start_a at run time (constant pads
            // where possible: tract requires them).
            let ends = e.shapes.int_const(node, 2)?.to_vec();
            let xdims = e.shape(x(0))?.dims.clone();
            let mut begin = vec![0i64; rank];
            let mut end_pad: Vec<Option<i64>> = vec![Some(0); rank];
            for ((&a, &s), &t) in axes.iter().zip(&starts).zip(&ends) {
                begin[a] = s;
                end_pad[a] = match (t, xdims[a]) {
                    (t, _) if t < 0 => Some(-t),
                    (t, Some(d)) => Some(d as i64 - t.min(d as i64)),
                    (t, None) if t >= i64::MAX / 2 => Some(0),
                    _ => None,
                };
            }
            let b = e.ints(&begin);
            let pads = match end_pad.iter().copied().collect::<Option<Vec<i64>>>() {
                Some(end) => {
                    let mut p = begin.clone();
                    p.extend(end);
                    e.ints(&p)
                }
                None => {
                    let sx = e.shape_of(x(0));
                    let sy = e.shape_of(y);
                    let diff = e.node("Sub", &[&sx, &sy], vec![]);
                    let end = e.node("Sub", &[&diff, &b], vec![]);
                    e.node("Concat", &[&b, &end], vec![attr_int("axis", 0)])
                }
            };
            out[0] = Some(e.node("Pad", &[g, &pads], vec![]));
        }
        op if NON_DIFFERENTIABLE.contains(&op) => {
            return Err(unsupported(
                "carries no gradient but lies between a parameter and the output",
            ))
        }
        op => return Err(AutodiffError::NoRule(op.to_string())),
    }
    Ok(out)
}

/// `a @ b` with `b` of rank 2 (a weight) or of `a`'s rank (attention).
fn matmul(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    want_a: bool,
    want_b: bool,
    out: &mut [Option<String>],
) -> Result<(), AutodiffError> {
    let (a, b) = (input(node, 0)?, input(node, 1)?);
    let (sa, sb) = (e.shape(a)?.clone(), e.shape(b)?.clone());
    let (ra, rb) = (sa.rank(), sb.rank());
    let same_batch = ra == rb
        && sa.dims[..ra - 2]
            .iter()
            .zip(&sb.dims[..rb - 2])
            .all(|(x, y)| x == y || (*x != Some(1) && *y != Some(1)));
    if !(same_batch || (rb == 2 && ra >= 2)) {
        return Err(AutodiffError::Unsupported {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: format!("operand shapes {:?} and {:?}", sa.dims, sb.dims),
        });
    }
    let swap = |r: usize| -> Vec<i64> {
        let mut p: Vec<i64> = (0..r as i64).collect();
        p.swap(r - 2, r - 1);
        p
    };
    if want_a {
        let bt = e.node("Transpose", &[b], vec![attr_ints("perm", &swap(rb))]);
        let d = e.node("MatMul", &[g, &bt], vec![]);
        out[0] = Some(d);
    }
    if want_b {
        if same_batch {
            let at = e.node("Transpose", &[a], vec![attr_ints("perm", &swap(ra))]);
            out[1] = Some(e.node("MatMul", &[&at, g], vec![]));
        } else {
            // Σ over all leading axes at once: [-1, K]ᵀ · [-1, N].
            let bd = e.shape(b)?.dims.clone();
            let (Some(k), Some(n)) = (bd[0], bd[1]) else {
                return Err(AutodiffError::Unsupported {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    reason: "a rank-2 right operand of dynamic shape".into(),
                });
            };
            let ak = e.ints(&[-1, k as i64]);
            let gn = e.ints(&[-1, n as i64]);
            let a2 = e.node("Reshape", &[a, &ak], vec![]);
            let g2 = e.node("Reshape", &[g, &gn], vec![]);
            out[1] = Some(e.node("Gemm", &[&a2, &g2], vec![attr_int("transA", 1)]));
        }
    }
    Ok(())
}

/// 1-D `Conv(x [B, C, T], w [O, C/G, K], b [O])` with strides, pads and groups.
fn conv(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    wants: &[bool],
    out: &mut [Option<String>],
) -> Result<(), AutodiffError> {
    let unsupported = |reason: &str| AutodiffError::Unsupported {
        node: node.name.clone(),
        op: node.op_type.clone(),
        reason: reason.to_string(),
    };
    let ints = |name: &str, default: Vec<i64>| attr(node, name).map_or(default, |a| a.ints.clone());
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let (x, w) = (input(node, 0)?, input(node, 1)?);
    if attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return Err(unsupported("auto_pad"));
    }
    if ints("dilations", vec![1]).iter().any(|&d| d != 1) {
        return Err(unsupported("dilations"));
    }
    let stride = ints("strides", vec![1])[0];
    let pads = ints("pads", vec![0, 0]);
    let groups = attr(node, "group").map_or(1, |a| a.i);
    let wd = e.shape(w)?.dims.clone();
    let (Some(o), Some(ci), Some(k)) = (wd[0], wd[1], wd[2]) else {
        return Err(unsupported("weights of dynamic shape"));
    };
    let (o, ci, k) = (o as i64, ci as i64, k as i64);
    if want(0) {
        // The transposed convolution, zero-padded at the end up to the input length (a strided
        // conv ignores the last (T + pads − K) mod stride input samples).
        let mut d = e.node(
            "ConvTranspose",
            &[g, w],
            vec![
                attr_ints("strides", &[stride]),
                attr_ints("pads", &pads),
                attr_int("group", groups),
                attr_ints("kernel_shape", &[k]),
            ],
        );
        let tx_known = e.shape(x)?.dims[2];
        let padded_len = tx_known.map(|t| t as i64 + pads[0] + pads[1] - k);
        if let Some(rest) = padded_len.map(|l| l.rem_euclid(stride)) {
            // Known input length: a constant pad (or none).
            if rest > 0 {
                let p = e.ints(&[0, 0, 0, 0, 0, rest]);
                d = e.node("Pad", &[&d, &p], vec![]);
            }
        } else if stride > 1 {
            let tx = e.dim_of(x, 2);
            let td = e.dim_of(&d, 2);
            let missing = e.node("Sub", &[&tx, &td], vec![]);
            let zeros = e.ints(&[0, 0, 0, 0, 0]);
            let p = e.node("Concat", &[&zeros, &missing], vec![attr_int("axis", 0)]);
            d = e.node("Pad", &[&d, &p], vec![]);
        }
        out[0] = Some(d);
    }
    if want(1) {
        // dW[g·Oᵢ+o, i, k] = Σ_b Σ_t dY[b, g·Oᵢ+o, t] · x[b, g·Cᵢ+i, t·s + k − p]: a grouped conv
        // of x (channels as batch, batch as channels) with dY as its kernel, dilated by the
        // stride, cut to the kernel length.
        let oi = o / groups;
        let t = e.dim_of(x, 2);
        let tg = e.dim_of(output(node, 0)?, 2);
        // x [B, G·Cᵢ, T] → [B, G, Cᵢ, T] → [Cᵢ, G, B, T] → [Cᵢ, G·B, T].
        let s4 = e.ints(&[0, groups, ci, -1]);
        let x4 = e.node("Reshape", &[x, &s4], vec![]);
        let xt = e.node("Transpose", &[&x4], vec![attr_ints("perm", &[2, 1, 0, 3])]);
        let head = e.ints(&[ci, -1]);
        let xs = e.node("Concat", &[&head, &t], vec![attr_int("axis", 0)]);
        let xr = e.node("Reshape", &[&xt, &xs], vec![]);
        // dY [B, G·Oᵢ, T'] → [B, G, Oᵢ, T'] → [G, Oᵢ, B, T'] → [G·Oᵢ, B, T'].
        let g4s = e.ints(&[0, groups, oi, -1]);
        let g4 = e.node("Reshape", &[g, &g4s], vec![]);
        let gt = e.node("Transpose", &[&g4], vec![attr_ints("perm", &[1, 2, 0, 3])]);
        let ghead = e.ints(&[o, -1]);
        let gs = e.node("Concat", &[&ghead, &tg], vec![attr_int("axis", 0)]);
        let gr = e.node("Reshape", &[&gt, &gs], vec![]);
        let c = e.node(
            "Conv",
            &[&xr, &gr],
            vec![
                attr_ints("dilations", &[stride]),
                attr_ints("pads", &pads),
                attr_int("group", groups),
            ],
        );
        // [Cᵢ, O, L ≥ K] → [Cᵢ, O, K] → [O, Cᵢ, K].
        let (s0, s1, ax) = (e.ints(&[0]), e.ints(&[k]), e.ints(&[2]));
        let cut = e.node("Slice", &[&c, &s0, &s1, &ax], vec![]);
        out[1] = Some(e.node("Transpose", &[&cut], vec![attr_ints("perm", &[1, 0, 2])]));
    }
    if want(2) {
        out[2] = Some(e.reduce_sum(g, &[0, 2], false));
    }
    Ok(())
}

/// `LayerNormalization` over the last axis. x̂ and 1/σ are recomputed from x (cheaper to keep
/// than to save); dx = (1/σ)·(gγ − mean(gγ) − x̂·mean(gγ·x̂)), dγ = Σ g·x̂, dβ = Σ g.
fn layer_norm(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    wants: &[bool],
    out: &mut [Option<String>],
) -> Result<(), AutodiffError> {
    let x = input(node, 0)?;
    let rank = e.rank(x)?;
    let axis = attr(node, "axis").map_or(-1, |a| a.i);
    if axis != -1 && axis != rank as i64 - 1 {
        return Err(AutodiffError::Unsupported {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: format!("axis {axis} (only the last axis)"),
        });
    }
    let want = |i: usize| wants.get(i).copied().unwrap_or(false);
    let eps = attr(node, "epsilon").map_or(1e-5, |a| a.f);
    let last = [rank as i64 - 1];
    let mean = e.reduce_mean(x, &last, true);
    let d = e.node("Sub", &[x, &mean], vec![]);
    let dd = e.node("Mul", &[&d, &d], vec![]);
    let var = e.reduce_mean(&dd, &last, true);
    let eps = e.scalar(eps);
    let ve = e.node("Add", &[&var, &eps], vec![]);
    let sd = e.node("Sqrt", &[&ve], vec![]);
    let xhat = e.node("Div", &[&d, &sd], vec![]);
    let leading: Vec<i64> = (0..rank as i64 - 1).collect();
    if want(0) {
        let gg = e.node("Mul", &[g, input(node, 1)?], vec![]);
        let m1 = e.reduce_mean(&gg, &last, true);
        let gx = e.node("Mul", &[&gg, &xhat], vec![]);
        let m2 = e.reduce_mean(&gx, &last, true);
        let t = e.node("Mul", &[&xhat, &m2], vec![]);
        let a = e.node("Sub", &[&gg, &m1], vec![]);
        let b = e.node("Sub", &[&a, &t], vec![]);
        out[0] = Some(e.node("Div", &[&b, &sd], vec![]));
    }
    if want(1) {
        let gx = e.node("Mul", &[g, &xhat], vec![]);
        out[1] = Some(e.reduce_sum(&gx, &leading, false));
    }
    if want(2) {
        out[2] = Some(e.reduce_sum(g, &leading, false));
    }
    Ok(())
}
