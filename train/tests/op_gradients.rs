//! Each gradient rule on its own: a one-op graph, differentiated by `autodiff`, run on tract and
//! on ONNX Runtime, against central finite differences of the forward graph.
//!
//! The scalar differentiated is L = Σ R·Y for a fixed random R (so the upstream gradient is R).
//! Agreement: ‖g − g_fd‖ / ‖g_fd‖ ≤ [`FD_TOLERANCE`] over the sampled coordinates of every
//! operand, with step [`FD_STEP`] (float32 forward passes; truncation and rounding errors of the
//! differences are both around 1e-4 relative at this step).

use std::path::Path;

use w2v_engine::backend::ort::{OrtGraph, OrtOptions};
use w2v_engine::backend::tract::TractGraph;
use w2v_engine::backend::{BackendError, BackendOptions, GraphRunner};
use w2v_engine::onnx_pb::{
    attr_float, attr_int, attr_ints, data_type, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TypeProto, TypeProtoTensor, ValueInfoProto,
};
use w2v_train::autodiff::{rules, TrainingGraphs};
use w2v_train::gradients::{GradientRunner, RunnerFactory};

const FD_STEP: f32 = 1e-2;
const FD_TOLERANCE: f64 = 5e-3;
/// Coordinates perturbed per operand (all of them when fewer).
const SAMPLES: usize = 24;

/// A small deterministic generator (xorshift64*), so the test needs no crate for randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (self.uniform() + 1.0) * 0.5 * (hi - lo))
            .collect()
    }
}

/// A float operand: its shape and the range its values are drawn from.
struct Operand {
    shape: Vec<usize>,
    lo: f32,
    hi: f32,
}

fn op(shape: &[usize]) -> Operand {
    Operand {
        shape: shape.to_vec(),
        lo: -1.0,
        hi: 1.0,
    }
}

fn positive(shape: &[usize]) -> Operand {
    Operand {
        shape: shape.to_vec(),
        lo: 0.5,
        hi: 2.0,
    }
}

/// An input of the node: a float operand (trainable) or an int64 constant.
enum In {
    F(Operand),
    Ints(Vec<i64>),
}

struct Case {
    name: &'static str,
    op: &'static str,
    opset: i64,
    inputs: Vec<In>,
    attrs: Vec<AttributeProto>,
}

fn model(case: &Case, rng: &mut Rng) -> ModelProto {
    let mut inits = Vec::new();
    let mut names = Vec::new();
    for (i, input) in case.inputs.iter().enumerate() {
        let name = format!("in{i}");
        let t = match input {
            In::F(o) => {
                let n = o.shape.iter().product();
                let mut v = rng.vec(n, o.lo, o.hi);
                if case.op == "Relu" {
                    // Keep clear of the kink at 0, where finite differences are meaningless.
                    v.iter_mut()
                        .for_each(|x| *x = if *x < 0.0 { *x - 0.1 } else { *x + 0.1 });
                }
                TensorProto {
                    dims: o.shape.iter().map(|&d| d as i64).collect(),
                    data_type: data_type::FLOAT,
                    raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    name: name.clone(),
                    ..Default::default()
                }
            }
            In::Ints(v) => TensorProto {
                dims: vec![v.len() as i64],
                data_type: data_type::INT64,
                raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                name: name.clone(),
                ..Default::default()
            },
        };
        inits.push(t);
        names.push(name);
    }
    let node = NodeProto {
        input: names,
        output: vec!["y".into()],
        name: case.name.into(),
        op_type: case.op.into(),
        attribute: case.attrs.clone(),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: case.opset,
        }],
        graph: Some(GraphProto {
            node: vec![node],
            name: case.name.into(),
            initializer: inits,
            output: vec![ValueInfoProto {
                name: "y".into(),
                r#type: Some(TypeProto {
                    tensor_type: Some(TypeProtoTensor {
                        elem_type: data_type::FLOAT,
                        shape: None,
                    }),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cases() -> Vec<Case> {
    use In::{Ints, F};
    let c = |name, op, inputs, attrs| Case {
        name,
        op,
        opset: 17,
        inputs,
        attrs,
    };
    let mut v = vec![
        c(
            "add_bias",
            "Add",
            vec![F(op(&[2, 3, 4])), F(op(&[4]))],
            vec![],
        ),
        c(
            "add_col",
            "Add",
            vec![F(op(&[2, 3, 4])), F(op(&[3, 1]))],
            vec![],
        ),
        c(
            "sub_keepdims",
            "Sub",
            vec![F(op(&[2, 3, 4])), F(op(&[2, 3, 1]))],
            vec![],
        ),
        c(
            "mul_row",
            "Mul",
            vec![F(op(&[2, 3, 4])), F(op(&[1, 4]))],
            vec![],
        ),
        c(
            "mul_scalar",
            "Mul",
            vec![F(op(&[2, 3])), F(op(&[]))],
            vec![],
        ),
        c(
            "div",
            "Div",
            vec![F(op(&[2, 3, 4])), F(positive(&[2, 1, 4]))],
            vec![],
        ),
        c("sqrt", "Sqrt", vec![F(positive(&[3, 5]))], vec![]),
        c("erf", "Erf", vec![F(op(&[3, 5]))], vec![]),
        c("tanh", "Tanh", vec![F(op(&[3, 5]))], vec![]),
        c("sigmoid", "Sigmoid", vec![F(op(&[3, 5]))], vec![]),
        c("relu", "Relu", vec![F(op(&[3, 5]))], vec![]),
        c(
            "softmax",
            "Softmax",
            vec![F(op(&[2, 3, 5]))],
            vec![attr_int("axis", -1)],
        ),
        c(
            "transpose",
            "Transpose",
            vec![F(op(&[2, 3, 4, 5]))],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        ),
        c(
            "reshape",
            "Reshape",
            vec![F(op(&[2, 3, 4])), Ints(vec![0, 0, 2, 2])],
            vec![],
        ),
        c(
            "unsqueeze",
            "Unsqueeze",
            vec![F(op(&[2, 3])), Ints(vec![1])],
            vec![],
        ),
        c(
            "matmul_weight",
            "MatMul",
            vec![F(op(&[2, 3, 4])), F(op(&[4, 5]))],
            vec![],
        ),
        c(
            "matmul_batched",
            "MatMul",
            vec![F(op(&[2, 2, 3, 4])), F(op(&[2, 2, 4, 3]))],
            vec![],
        ),
        c(
            "conv_strided",
            "Conv",
            vec![F(op(&[2, 3, 18])), F(op(&[4, 3, 3])), F(op(&[4]))],
            vec![attr_ints("kernel_shape", &[3]), attr_ints("strides", &[2])],
        ),
        c(
            "conv_stride5_nobias",
            "Conv",
            vec![F(op(&[1, 1, 33])), F(op(&[3, 1, 10]))],
            vec![attr_ints("kernel_shape", &[10]), attr_ints("strides", &[5])],
        ),
        c(
            "conv_grouped_padded",
            "Conv",
            vec![F(op(&[2, 4, 9])), F(op(&[6, 2, 4])), F(op(&[6]))],
            vec![
                attr_ints("kernel_shape", &[4]),
                attr_ints("pads", &[2, 2]),
                attr_int("group", 2),
            ],
        ),
        c(
            "layer_norm",
            "LayerNormalization",
            vec![F(op(&[2, 3, 6])), F(op(&[6])), F(op(&[6]))],
            vec![attr_int("axis", -1), attr_float("epsilon", 1e-5)],
        ),
        c(
            "reduce_mean_attr",
            "ReduceMean",
            vec![F(op(&[2, 3, 5]))],
            vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)],
        ),
        c(
            "reduce_sum_dropped",
            "ReduceSum",
            vec![F(op(&[2, 3, 5])), Ints(vec![0, 2])],
            vec![attr_int("keepdims", 0)],
        ),
        c(
            "slice_last",
            "Slice",
            vec![
                F(op(&[2, 3, 7])),
                Ints(vec![0]),
                Ints(vec![-1]),
                Ints(vec![2]),
            ],
            vec![],
        ),
        c(
            "slice_middle",
            "Slice",
            vec![
                F(op(&[2, 6, 3])),
                Ints(vec![1]),
                Ints(vec![4]),
                Ints(vec![1]),
            ],
            vec![],
        ),
    ];
    v.push(Case {
        name: "reduce_mean_input_axes",
        op: "ReduceMean",
        opset: 18,
        inputs: vec![F(op(&[2, 3, 5])), Ints(vec![-1])],
        attrs: vec![attr_int("keepdims", 1)],
    });
    v
}

fn tract_runner(bytes: &[u8], what: &str) -> Result<Box<dyn GraphRunner>, BackendError> {
    Ok(Box::new(TractGraph::from_bytes(
        bytes,
        Path::new(what),
        &BackendOptions { threads: Some(1) },
    )?))
}

fn ort_runner(bytes: &[u8], what: &str) -> Result<Box<dyn GraphRunner>, BackendError> {
    Ok(Box::new(OrtGraph::from_bytes(
        bytes,
        Path::new(what),
        &OrtOptions::default(),
    )?))
}

fn initial_params(m: &ModelProto, g: &TrainingGraphs) -> Vec<Vec<f32>> {
    let inits = &m.graph.as_ref().unwrap().initializer;
    g.parameters
        .iter()
        .map(|p| {
            let t = inits.iter().find(|t| t.name == p.name).unwrap();
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect()
}

fn check(case: &Case, runner: &str, make: &RunnerFactory<'_>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case.name.len() as u64 * 7919));
    let m = model(case, &mut rng);
    let graphs =
        TrainingGraphs::build(&m, |_| true).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut params = initial_params(&m, &graphs);
    let mut r =
        GradientRunner::new(graphs, make).unwrap_or_else(|e| panic!("{} {runner}: {e}", case.name));
    let fwd = r
        .forward(&[], &params)
        .unwrap_or_else(|e| panic!("{} {runner}: {e}", case.name));
    let upstream = rng.vec(fwd.output.as_f32().unwrap().len(), -1.0, 1.0);
    let grads = r
        .backward(&fwd, &upstream, &[], &params)
        .unwrap_or_else(|e| panic!("{} {runner}: {e}", case.name));
    let loss = |r: &mut GradientRunner, params: &[Vec<f32>]| -> f64 {
        let y = r.forward(&[], params).unwrap().output;
        y.as_f32()
            .unwrap()
            .iter()
            .zip(&upstream)
            .map(|(&y, &u)| y as f64 * u as f64)
            .sum()
    };
    for (pi, g) in grads.iter().enumerate() {
        assert_eq!(
            g.len(),
            params[pi].len(),
            "{}: gradient {pi} has the wrong size",
            case.name
        );
        let n = params[pi].len();
        let coords: Vec<usize> = if n <= SAMPLES {
            (0..n).collect()
        } else {
            (0..SAMPLES)
                .map(|_| (rng.next() % n as u64) as usize)
                .collect()
        };
        let (mut num, mut den) = (0f64, 0f64);
        for &c in &coords {
            let orig = params[pi][c];
            params[pi][c] = orig + FD_STEP;
            let up = loss(&mut r, &params);
            params[pi][c] = orig - FD_STEP;
            let down = loss(&mut r, &params);
            params[pi][c] = orig;
            let fd = (up - down) / (2.0 * FD_STEP as f64);
            num += (g[c] as f64 - fd).powi(2);
            den += fd * fd;
        }
        let rel = num.sqrt() / den.sqrt().max(1e-12);
        assert!(
            rel <= FD_TOLERANCE,
            "{} on {runner}: operand {pi} relative error {rel:.2e} (‖g_fd‖ = {:.3e})",
            case.name,
            den.sqrt()
        );
        assert!(
            den > 1e-6,
            "{}: operand {pi} has a vanishing gradient",
            case.name
        );
    }
}

#[test]
fn every_rule_matches_finite_differences_on_tract() {
    for case in cases() {
        check(&case, "tract", &tract_runner);
    }
}

#[test]
fn every_rule_matches_finite_differences_on_ort() {
    for case in cases() {
        check(&case, "ort", &ort_runner);
    }
}

#[test]
fn every_differentiable_op_has_a_case() {
    let cases = cases();
    for op in rules::DIFFERENTIABLE {
        assert!(
            cases.iter().any(|c| c.op == *op),
            "no finite-difference case for {op}"
        );
    }
}
