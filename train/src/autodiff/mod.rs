//! Reverse-mode differentiation of an exported fp32 ONNX graph, in standard ONNX ops.
//!
//! # Design
//!
//! [`TrainingGraphs::build`] turns a model (as `w2v export` writes it) into two graphs that any
//! ONNX runtime can execute (tract, ONNX Runtime on CPU or CUDA):
//!
//! - **forward**: the model's own nodes, with every trainable initializer turned into a graph
//!   input, returning the logits *and* the activations the backward pass needs (plus a few shape
//!   tensors);
//! - **backward**: takes those saved activations, the parameters and `logits_grad` (dL/dlogits,
//!   computed by the CTC loss in Rust between the two runs) and returns `grad:<param>` for every
//!   trainable parameter.
//!
//! This is the fastest arrangement available with standard ops: the forward runs once (no
//! recomputation, unlike a single graph that would have to take dL/dlogits before the logits
//! exist), the backward computes only what reaches a trainable parameter (gradients stop at a
//! frozen feature encoder), and the loss — a dynamic program ONNX has no op for — runs natively
//! in between. The price is copying the saved activations out of one session and into the other,
//! which is memory the backward needs anyway.
//!
//! Gradient rules, one per op, live in [`rules::gradient`]. Each rule references forward tensors
//! by name; after the sweep, whatever forward tensor a backward node references becomes a
//! forward output and a backward input. Rules needing only a shape ask
//! [`Emitter::shape_of`], which saves the small shape tensor instead of the activation.

pub mod rules;
pub mod shapes;

use std::collections::{BTreeMap, HashMap, HashSet};

use w2v_engine::onnx_pb::{
    attr_int, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, TypeProto,
    TypeProtoTensor, ValueInfoProto,
};

use shapes::{Shapes, StaticShape};

/// The backward graph's input carrying dL/d(output).
pub const OUTPUT_GRAD: &str = "logits_grad";
/// The prefix of the backward graph's outputs: `grad:<parameter name>`.
pub const GRAD_PREFIX: &str = "grad:";

#[derive(Debug, thiserror::Error)]
pub enum AutodiffError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("the graph has no output `{0}`")]
    NoOutput(String),
    #[error("no gradient rule for op `{0}`")]
    NoRule(String),
    #[error("node `{node}` ({op}): {reason}")]
    Unsupported {
        node: String,
        op: String,
        reason: String,
    },
    #[error("tensor `{0}` is used before it is defined")]
    UnknownTensor(String),
    #[error("saved tensor `{name}` has element type {elem}, which cannot cross between graphs")]
    SavedType { name: String, elem: i32 },
    /// A node of the (user-supplied) model has fewer inputs or outputs than its op needs.
    #[error(
        "node `{node}` ({op}) has {have} {what}{}, expected at least {want}",
        if *have == 1 { "" } else { "s" }
    )]
    Arity {
        node: String,
        op: String,
        /// `input` or `output`.
        what: &'static str,
        have: usize,
        want: usize,
    },
}

/// Input `i` of `node`, or [`AutodiffError::Arity`] naming the node and op when the model gives
/// it fewer inputs (a malformed model must be an error, not a panic).
pub(crate) fn input(node: &NodeProto, i: usize) -> Result<&str, AutodiffError> {
    checked(node, &node.input, "input", i)
}

/// Output `i` of `node`, or [`AutodiffError::Arity`] (see [`input`]).
pub(crate) fn output(node: &NodeProto, i: usize) -> Result<&str, AutodiffError> {
    checked(node, &node.output, "output", i)
}

fn checked<'a>(
    node: &NodeProto,
    names: &'a [String],
    what: &'static str,
    i: usize,
) -> Result<&'a str, AutodiffError> {
    names
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| AutodiffError::Arity {
            node: node.name.clone(),
            op: node.op_type.clone(),
            what,
            have: names.len(),
            want: i + 1,
        })
}

/// The attribute `name` of `node`, if set.
pub(crate) fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// A trainable parameter: an initializer of the source model.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The forward and backward graphs of one model (see the module docs).
#[derive(Clone, Debug)]
pub struct TrainingGraphs {
    pub forward: ModelProto,
    pub backward: ModelProto,
    /// Trainable parameters: inputs of both graphs, `grad:<name>` outputs of the backward one.
    pub parameters: Vec<Parameter>,
    /// The model output being differentiated (first output of `forward`).
    pub output: String,
    /// Forward outputs after the first that the backward graph takes as inputs, same names.
    pub saved: Vec<String>,
    /// Model inputs (e.g. `input_values`) the backward graph also takes.
    pub backward_model_inputs: Vec<String>,
    /// Whether the backward graph also takes the output itself (under its own name).
    pub backward_takes_output: bool,
}

/// Emits backward nodes (and the few forward-side shape nodes they need).
pub struct Emitter<'a> {
    pub(crate) shapes: &'a Shapes,
    pub(crate) opset: i64,
    bwd: Vec<NodeProto>,
    fwd_extra: Vec<NodeProto>,
    consts: Vec<TensorProto>,
    shape_cache: HashMap<String, String>,
    counter: usize,
}

impl<'a> Emitter<'a> {
    fn new(shapes: &'a Shapes, opset: i64) -> Self {
        Emitter {
            shapes,
            opset,
            bwd: Vec::new(),
            fwd_extra: Vec::new(),
            consts: Vec::new(),
            shape_cache: HashMap::new(),
            counter: 0,
        }
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("grad/{what}_{}", self.counter)
    }

    fn make(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        let out = self.fresh(op);
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out,
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        }
    }

    /// A backward node; returns its output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let n = self.make(op, inputs, attrs);
        let out = n.output[0].clone();
        self.bwd.push(n);
        out
    }

    /// A node run in the forward graph, whose (small) output the backward graph receives.
    pub fn fwd_node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let n = self.make(op, inputs, attrs);
        let out = n.output[0].clone();
        self.fwd_extra.push(n);
        out
    }

    /// The shape of forward tensor `x`: a constant when statically known (runtimes such as
    /// tract need constant shapes for `Reshape`), else computed in the forward graph.
    pub fn shape_of(&mut self, x: &str) -> String {
        if let Some(s) = self.shape_cache.get(x) {
            return s.clone();
        }
        let known: Option<Vec<i64>> = self
            .shapes
            .shapes
            .get(x)
            .and_then(|s| s.dims.iter().map(|d| d.map(|d| d as i64)).collect());
        let s = match known {
            Some(dims) => self.ints(&dims),
            None => self.fwd_node("Shape", &[x], vec![]),
        };
        self.shape_cache.insert(x.to_string(), s.clone());
        s
    }

    /// Dimension `axis` of `x` (forward or backward tensor) as a 1-D int64 tensor of length 1.
    pub fn dim_of(&mut self, x: &str, axis: i64) -> String {
        if let Some(Some(d)) = self.shapes.shapes.get(x).map(|s| s.dims[axis as usize]) {
            return self.ints(&[d as i64]);
        }
        let s = if self.shapes.shapes.contains_key(x) {
            self.shape_of(x)
        } else {
            self.node("Shape", &[x], vec![])
        };
        let idx = self.ints(&[axis]);
        self.node("Gather", &[&s, &idx], vec![attr_int("axis", 0)])
    }

    fn push_const(&mut self, what: &str, t: TensorProto) -> String {
        let name = self.fresh(what);
        self.consts.push(TensorProto {
            name: name.clone(),
            ..t
        });
        name
    }

    /// A 1-D int64 constant.
    pub fn ints(&mut self, v: &[i64]) -> String {
        self.push_const(
            "ints",
            TensorProto {
                dims: vec![v.len() as i64],
                data_type: data_type::INT64,
                raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ..Default::default()
            },
        )
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.push_const(
            "const",
            TensorProto {
                data_type: data_type::FLOAT,
                raw_data: v.to_le_bytes().to_vec(),
                ..Default::default()
            },
        )
    }

    pub fn shape(&self, x: &str) -> Result<&StaticShape, AutodiffError> {
        self.shapes.get(x)
    }

    pub fn rank(&self, x: &str) -> Result<usize, AutodiffError> {
        Ok(self.shapes.get(x)?.rank())
    }

    /// `ReduceSum` over `axes` (an input from opset 13 on).
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let a = self.ints(axes);
        self.node(
            "ReduceSum",
            &[x, &a],
            vec![attr_int("keepdims", keepdims as i64)],
        )
    }

    /// `ReduceMean` over `axes` (an attribute before opset 18, an input from 18 on).
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let keep = attr_int("keepdims", keepdims as i64);
        if self.opset < 18 {
            let ax = w2v_engine::onnx_pb::attr_ints("axes", axes);
            self.node("ReduceMean", &[x], vec![ax, keep])
        } else {
            let a = self.ints(axes);
            self.node("ReduceMean", &[x, &a], vec![keep])
        }
    }

    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.ints(axes);
        self.node("Unsqueeze", &[x, &a], vec![])
    }

    /// Sum gradient `g`, shaped like forward tensor `like` (the broadcast result), down to the
    /// shape of forward tensor `x`: over leading axes `x` lacks, and over axes where `x` is
    /// statically 1 and `like` is not. (A dynamic dim of `x` is never broadcast in exported
    /// graphs: dynamic sizes come from the inputs and agree wherever they meet.)
    pub fn unbroadcast(&mut self, g: &str, like: &str, x: &str) -> Result<String, AutodiffError> {
        let xs = self.shapes.get(x)?.clone();
        let ys = self.shapes.get(like)?.clone();
        let lead = ys.rank().saturating_sub(xs.rank());
        let mut axes: Vec<i64> = (0..lead as i64).collect();
        for (i, d) in xs.dims.iter().enumerate() {
            if *d == Some(1) && ys.dims[lead + i] != Some(1) {
                axes.push((lead + i) as i64);
            }
        }
        if axes.is_empty() {
            return Ok(g.to_string());
        }
        let s = self.reduce_sum(g, &axes, true);
        if lead == 0 {
            return Ok(s);
        }
        let shape = if xs.dims.iter().all(Option::is_some) {
            let d: Vec<i64> = xs.dims.iter().map(|d| d.unwrap_or(0) as i64).collect();
            self.ints(&d)
        } else {
            self.shape_of(x)
        };
        Ok(self.node("Reshape", &[&s, &shape], vec![]))
    }
}

fn value_info(name: &str, elem: i32) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: None,
            }),
        }),
        ..Default::default()
    }
}

/// The model's default-domain opset.
fn opset_of(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(17, |o| o.version)
}

impl TrainingGraphs {
    /// Differentiate `model`'s first output with respect to the float32 initializers for which
    /// `trainable` holds (see [`crate::parameters::is_trainable`]).
    pub fn build(
        model: &ModelProto,
        trainable: impl Fn(&TensorProto) -> bool,
    ) -> Result<Self, AutodiffError> {
        let graph = model.graph.as_ref().ok_or(AutodiffError::NoGraph)?;
        let opset = opset_of(model);
        let output = graph
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| AutodiffError::NoOutput("(none)".into()))?;
        let shapes = Shapes::infer(graph, opset)?;

        let parameters: Vec<Parameter> = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == data_type::FLOAT && trainable(t))
            .map(|t| Parameter {
                name: t.name.clone(),
                shape: t.dims.iter().map(|&d| d as usize).collect(),
            })
            .collect();
        let param_names: HashSet<&str> = parameters.iter().map(|p| p.name.as_str()).collect();

        // Active tensors: those depending on a trainable parameter.
        let mut active: HashSet<String> = param_names.iter().map(|s| s.to_string()).collect();
        for node in &graph.node {
            if rules::NON_DIFFERENTIABLE.contains(&node.op_type.as_str()) {
                continue;
            }
            if node.input.iter().any(|i| active.contains(i)) {
                active.extend(node.output.iter().cloned());
            }
        }
        if !active.contains(&output) {
            return Err(AutodiffError::NoOutput(format!(
                "{output} (it depends on no trainable parameter)"
            )));
        }
        // Nodes on a path from an active tensor to the output.
        let mut needed: HashSet<String> = HashSet::from([output.clone()]);
        let mut on_path = vec![false; graph.node.len()];
        for (i, node) in graph.node.iter().enumerate().rev() {
            if node.output.iter().any(|o| needed.contains(o))
                && node.output.iter().any(|o| active.contains(o))
            {
                on_path[i] = true;
                needed.extend(node.input.iter().filter(|t| active.contains(*t)).cloned());
            }
        }

        // The reverse sweep.
        let mut e = Emitter::new(&shapes, opset);
        let mut grads: BTreeMap<String, Vec<String>> = BTreeMap::new();
        grads.insert(output.clone(), vec![OUTPUT_GRAD.to_string()]);
        let sum = |e: &mut Emitter<'_>, parts: Vec<String>| -> String {
            if parts.len() == 1 {
                parts.into_iter().next().expect("one")
            } else {
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                e.node("Sum", &refs, vec![])
            }
        };
        for (i, node) in graph.node.iter().enumerate().rev() {
            if !on_path[i] {
                continue;
            }
            if node.output.len() != 1 {
                return Err(AutodiffError::Unsupported {
                    node: node.name.clone(),
                    op: node.op_type.clone(),
                    reason: "more than one output".into(),
                });
            }
            let Some(parts) = grads.remove(&node.output[0]) else {
                continue;
            };
            let g = sum(&mut e, parts);
            let wants: Vec<bool> = node
                .input
                .iter()
                .map(|t| active.contains(t) && needed.contains(t))
                .collect();
            let gi = rules::gradient(&mut e, node, &g, &wants)?;
            for (input, gi) in node.input.iter().zip(gi) {
                if let Some(gi) = gi {
                    grads.entry(input.clone()).or_default().push(gi);
                }
            }
        }
        let mut grad_outputs = Vec::new();
        for p in &parameters {
            let name = format!("{GRAD_PREFIX}{}", p.name);
            match grads.remove(&p.name) {
                Some(parts) => {
                    let g = sum(&mut e, parts);
                    e.bwd.push(NodeProto {
                        input: vec![g],
                        output: vec![name.clone()],
                        name: name.clone(),
                        op_type: "Identity".into(),
                        ..Default::default()
                    });
                }
                None => {
                    // Does not reach the output: its gradient is zero.
                    let z = e.scalar(0.0);
                    e.bwd.push(NodeProto {
                        input: vec![p.name.clone(), z],
                        output: vec![name.clone()],
                        name: name.clone(),
                        op_type: "Mul".into(),
                        ..Default::default()
                    });
                }
            }
            grad_outputs.push(name);
        }

        Self::split(model, graph, &shapes, e, parameters, output, grad_outputs)
    }

    /// Assemble the two graphs from the model's nodes and the emitted ones.
    fn split(
        model: &ModelProto,
        graph: &GraphProto,
        shapes: &Shapes,
        e: Emitter<'_>,
        parameters: Vec<Parameter>,
        output: String,
        grad_outputs: Vec<String>,
    ) -> Result<Self, AutodiffError> {
        let param_names: HashSet<&str> = parameters.iter().map(|p| p.name.as_str()).collect();
        let mut forward_nodes = graph.node.clone();
        forward_nodes.extend(e.fwd_extra.iter().cloned());
        let fwd_produced: HashSet<&str> = forward_nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        let model_inputs: Vec<&ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .collect();
        let constants: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .filter(|t| !param_names.contains(t.name.as_str()))
            .chain(e.consts.iter())
            .map(|t| (t.name.as_str(), t))
            .collect();
        let referenced = |nodes: &[NodeProto]| -> Vec<String> {
            let mut seen = HashSet::new();
            let mut v = Vec::new();
            for n in nodes {
                for i in &n.input {
                    if !i.is_empty() && seen.insert(i.clone()) {
                        v.push(i.clone());
                    }
                }
            }
            v
        };

        // What the backward graph needs from outside itself.
        let bwd_refs = referenced(&e.bwd);
        let bwd_produced: HashSet<&str> = e
            .bwd
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        let mut saved = Vec::new();
        let mut backward_model_inputs = Vec::new();
        let mut backward_takes_output = false;
        let mut bwd_inputs = vec![value_info(OUTPUT_GRAD, data_type::FLOAT)];
        let mut bwd_inits = Vec::new();
        for r in &bwd_refs {
            if bwd_produced.contains(r.as_str()) || r == OUTPUT_GRAD {
                continue;
            }
            if param_names.contains(r.as_str()) {
                continue; // every parameter is an input, added below
            } else if let Some(t) = constants.get(r.as_str()) {
                bwd_inits.push((*t).clone());
            } else if fwd_produced.contains(r.as_str()) {
                let elem = match shapes.shapes.get(r) {
                    Some(s) => s.elem,
                    // Forward-side shape nodes.
                    None => data_type::INT64,
                };
                if elem != data_type::FLOAT && elem != data_type::INT64 {
                    return Err(AutodiffError::SavedType {
                        name: r.clone(),
                        elem,
                    });
                }
                if *r == output {
                    backward_takes_output = true;
                } else {
                    saved.push(r.clone());
                }
                bwd_inputs.push(value_info(r, elem));
            } else if let Some(i) = model_inputs.iter().find(|i| i.name == *r) {
                backward_model_inputs.push(r.clone());
                bwd_inputs.push((*i).clone());
            } else {
                return Err(AutodiffError::UnknownTensor(r.clone()));
            }
        }
        for p in &parameters {
            bwd_inputs.push(value_info(&p.name, data_type::FLOAT));
        }

        let fwd_refs: HashSet<String> = referenced(&forward_nodes).into_iter().collect();
        let fwd_inits: Vec<TensorProto> = graph
            .initializer
            .iter()
            .filter(|t| !param_names.contains(t.name.as_str()))
            .chain(e.consts.iter().filter(|t| fwd_refs.contains(&t.name)))
            .cloned()
            .collect();
        let mut fwd_inputs: Vec<ValueInfoProto> = model_inputs.into_iter().cloned().collect();
        fwd_inputs.extend(
            parameters
                .iter()
                .map(|p| value_info(&p.name, data_type::FLOAT)),
        );
        let mut fwd_outputs = vec![graph
            .output
            .iter()
            .find(|o| o.name == output)
            .cloned()
            .ok_or_else(|| AutodiffError::NoOutput(output.clone()))?];
        for s in &saved {
            let elem = shapes.shapes.get(s).map_or(data_type::INT64, |s| s.elem);
            fwd_outputs.push(value_info(s, elem));
        }

        let wrap = |name: &str, g: GraphProto| ModelProto {
            ir_version: model.ir_version,
            opset_import: model.opset_import.clone(),
            producer_name: "w2v-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                name: name.into(),
                ..g
            }),
            ..Default::default()
        };
        let forward = wrap(
            "forward",
            GraphProto {
                node: forward_nodes,
                initializer: fwd_inits,
                input: fwd_inputs,
                output: fwd_outputs,
                ..Default::default()
            },
        );
        let backward = wrap(
            "backward",
            GraphProto {
                node: e.bwd,
                initializer: bwd_inits,
                input: bwd_inputs,
                output: grad_outputs
                    .iter()
                    .map(|g| value_info(g, data_type::FLOAT))
                    .collect(),
                ..Default::default()
            },
        );
        Ok(TrainingGraphs {
            forward,
            backward,
            parameters,
            output,
            saved,
            backward_model_inputs,
            backward_takes_output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use w2v_engine::onnx_pb::{GraphProto, ValueInfoProto};

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_with_too_few_inputs_is_an_error_not_a_panic() {
        // A Conv without its weight: a malformed user-supplied model.
        let conv = NodeProto {
            name: "conv0".into(),
            op_type: "Conv".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![conv.clone()],
                input: vec![value("x")],
                output: vec![value("y")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = TrainingGraphs::build(&model, |_| true).unwrap_err();
        assert!(
            matches!(
                e,
                AutodiffError::Arity {
                    have: 1,
                    want: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "node `conv0` (Conv) has 1 input, expected at least 2"
        );
        // The accessors themselves, for inputs and outputs.
        assert_eq!(input(&conv, 0).unwrap(), "x");
        let e = output(&conv, 1).unwrap_err().to_string();
        assert_eq!(e, "node `conv0` (Conv) has 1 output, expected at least 2");
        let none = NodeProto {
            name: "n".into(),
            op_type: "Relu".into(),
            ..Default::default()
        };
        let e = input(&none, 0).unwrap_err().to_string();
        assert_eq!(e, "node `n` (Relu) has 0 inputs, expected at least 1");
    }
}
