//! Static element types and shapes of a graph's tensors, as far as they are known before a run.
//!
//! Gradient rules need ranks, and which axes of an operand were broadcast (a `[C, 1]` norm
//! weight against `[B, C, T]` activations). Dimensions that depend on the input length or batch
//! are `None`; everything else (parameter shapes, reduced axes kept as 1, model widths) is known.

use std::collections::HashMap;

use w2v_engine::onnx_pb::{data_type, dimension, GraphProto, NodeProto, TensorProto};

use super::{attr, AutodiffError};

/// A tensor's static description: element type (ONNX `DataType`) and dims (`None` = dynamic).
#[derive(Clone, Debug, PartialEq)]
pub struct StaticShape {
    pub elem: i32,
    pub dims: Vec<Option<usize>>,
}

impl StaticShape {
    pub fn rank(&self) -> usize {
        self.dims.len()
    }
}

/// The static shapes of every tensor of a graph, and the values of its small int64 constants.
pub struct Shapes {
    pub shapes: HashMap<String, StaticShape>,
    pub int_consts: HashMap<String, Vec<i64>>,
}

/// The int64 values of an initializer (raw or typed storage).
pub fn int64_values(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != data_type::INT64 {
        return None;
    }
    if !t.raw_data.is_empty() {
        Some(
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        )
    } else {
        Some(t.int64_data.clone())
    }
}

fn broadcast(a: &[Option<usize>], b: &[Option<usize>]) -> Vec<Option<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = (i + a.len())
                .checked_sub(r)
                .map(|j| a[j])
                .unwrap_or(Some(1));
            let db = (i + b.len())
                .checked_sub(r)
                .map(|j| b[j])
                .unwrap_or(Some(1));
            match (da, db) {
                (Some(1), d) | (d, Some(1)) => d,
                (Some(x), _) | (_, Some(x)) => Some(x),
                (None, None) => None,
            }
        })
        .collect()
}

fn norm_axis(axis: i64, rank: usize) -> usize {
    if axis < 0 {
        (axis + rank as i64) as usize
    } else {
        axis as usize
    }
}

impl Shapes {
    /// Infer shapes for `graph` (nodes in topological order, as ONNX requires).
    pub fn infer(graph: &GraphProto, opset: i64) -> Result<Self, AutodiffError> {
        let mut s = Shapes {
            shapes: HashMap::new(),
            int_consts: HashMap::new(),
        };
        for t in &graph.initializer {
            s.shapes.insert(
                t.name.clone(),
                StaticShape {
                    elem: t.data_type,
                    dims: t.dims.iter().map(|&d| Some(d as usize)).collect(),
                },
            );
            if let Some(v) = int64_values(t) {
                s.int_consts.insert(t.name.clone(), v);
            }
        }
        for i in &graph.input {
            let tt = i.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
            let elem = tt.map_or(data_type::FLOAT, |t| t.elem_type);
            let dims = tt
                .and_then(|t| t.shape.as_ref())
                .map(|sh| {
                    sh.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(dimension::Value::DimValue(v)) => Some(v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            s.shapes
                .entry(i.name.clone())
                .or_insert(StaticShape { elem, dims });
        }
        for node in &graph.node {
            let out = s.node_output(node, opset)?;
            s.shapes.insert(super::output(node, 0)?.to_string(), out);
        }
        Ok(s)
    }

    pub fn get(&self, name: &str) -> Result<&StaticShape, AutodiffError> {
        self.shapes
            .get(name)
            .ok_or_else(|| AutodiffError::UnknownTensor(name.to_string()))
    }

    /// The value of an int64 constant input (axes, shapes, slice bounds).
    pub fn int_const(&self, node: &NodeProto, input: usize) -> Result<&[i64], AutodiffError> {
        node.input
            .get(input)
            .and_then(|n| self.int_consts.get(n))
            .map(Vec::as_slice)
            .ok_or_else(|| AutodiffError::Unsupported {
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason: format!("input {input} must be an int64 constant"),
            })
    }

    /// A reduction's axes (attribute or constant input, depending on op and opset), normalized.
    pub fn reduce_axes(
        &self,
        node: &NodeProto,
        opset: i64,
        rank: usize,
    ) -> Result<Vec<usize>, AutodiffError> {
        let axes_is_input = match node.op_type.as_str() {
            "ReduceSum" => opset >= 13,
            _ => opset >= 18,
        };
        let axes: Vec<i64> = if axes_is_input {
            if node.input.len() > 1 && !node.input[1].is_empty() {
                self.int_const(node, 1)?.to_vec()
            } else {
                (0..rank as i64).collect()
            }
        } else {
            attr(node, "axes")
                .map(|a| a.ints.clone())
                .unwrap_or_else(|| (0..rank as i64).collect())
        };
        let mut axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect();
        axes.sort_unstable();
        Ok(axes)
    }

    fn node_output(&self, node: &NodeProto, opset: i64) -> Result<StaticShape, AutodiffError> {
        let input = |i: usize| self.get(super::input(node, i)?);
        let unsupported = |reason: &str| AutodiffError::Unsupported {
            node: node.name.clone(),
            op: node.op_type.clone(),
            reason: reason.to_string(),
        };
        let int = |name: &str, default: i64| attr(node, name).map_or(default, |a| a.i);
        Ok(match node.op_type.as_str() {
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (input(0)?, input(1)?);
                StaticShape {
                    elem: a.elem,
                    dims: broadcast(&a.dims, &b.dims),
                }
            }
            "Less" | "Greater" | "Equal" => StaticShape {
                elem: data_type::BOOL,
                dims: broadcast(&input(0)?.dims, &input(1)?.dims),
            },
            "Sqrt" | "Erf" | "Tanh" | "Sigmoid" | "Relu" | "Softmax" | "Neg" | "Exp"
            | "LayerNormalization" => input(0)?.clone(),
            "Cast" => StaticShape {
                elem: int("to", data_type::FLOAT as i64) as i32,
                dims: input(0)?.dims.clone(),
            },
            "Shape" => StaticShape {
                elem: data_type::INT64,
                dims: vec![Some(input(0)?.rank())],
            },
            "Gather" => {
                let (data, idx) = (input(0)?, input(1)?);
                let axis = norm_axis(int("axis", 0), data.rank());
                let mut dims = data.dims[..axis].to_vec();
                dims.extend(idx.dims.iter().copied());
                dims.extend(data.dims[axis + 1..].iter().copied());
                StaticShape {
                    elem: data.elem,
                    dims,
                }
            }
            "Range" => StaticShape {
                elem: input(0)?.elem,
                dims: vec![None],
            },
            "Unsqueeze" => {
                let x = input(0)?;
                let axes = if opset >= 13 {
                    self.int_const(node, 1)?.to_vec()
                } else {
                    attr(node, "axes")
                        .map(|a| a.ints.clone())
                        .unwrap_or_default()
                };
                let rank = x.rank() + axes.len();
                let mut axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, rank)).collect();
                axes.sort_unstable();
                let mut src = x.dims.iter();
                let dims = (0..rank)
                    .map(|i| {
                        if axes.contains(&i) {
                            Some(1)
                        } else {
                            *src.next().expect("rank")
                        }
                    })
                    .collect();
                StaticShape { elem: x.elem, dims }
            }
            "Transpose" => {
                let x = input(0)?;
                let perm: Vec<usize> = match attr(node, "perm") {
                    Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
                    None => (0..x.rank()).rev().collect(),
                };
                StaticShape {
                    elem: x.elem,
                    dims: perm.iter().map(|&p| x.dims[p]).collect(),
                }
            }
            "Reshape" => {
                let x = input(0)?;
                let spec = self.int_const(node, 1)?;
                let mut dims: Vec<Option<usize>> = spec
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match d {
                        0 => x.dims.get(i).copied().flatten(),
                        -1 => None,
                        d => Some(d as usize),
                    })
                    .collect();
                // Resolve -1 when every other size is known.
                if let Some(pos) = spec.iter().position(|&d| d == -1) {
                    let total: Option<usize> = x.dims.iter().copied().product();
                    let rest: Option<usize> = dims
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != pos)
                        .map(|(_, d)| *d)
                        .product();
                    if let (Some(t), Some(r)) = (total, rest) {
                        dims[pos] = (r > 0).then(|| t / r);
                    }
                }
                StaticShape { elem: x.elem, dims }
            }
            "MatMul" => {
                let (a, b) = (input(0)?, input(1)?);
                if a.rank() < 2 || b.rank() < 2 {
                    return Err(unsupported("operands of rank < 2"));
                }
                let mut dims = broadcast(&a.dims[..a.rank() - 2], &b.dims[..b.rank() - 2]);
                dims.push(a.dims[a.rank() - 2]);
                dims.push(b.dims[b.rank() - 1]);
                StaticShape { elem: a.elem, dims }
            }
            "Conv" => {
                let (x, w) = (input(0)?, input(1)?);
                if x.rank() != 3 {
                    return Err(unsupported("only 1-D convolutions"));
                }
                let ints = |name: &str, default: Vec<i64>| {
                    attr(node, name).map_or(default, |a| a.ints.clone())
                };
                let (s, p) = (ints("strides", vec![1])[0], ints("pads", vec![0, 0]));
                let t = match (x.dims[2], w.dims[2]) {
                    (Some(t), Some(k)) => {
                        Some(((t as i64 + p[0] + p[1] - k as i64) / s + 1).max(0) as usize)
                    }
                    _ => None,
                };
                StaticShape {
                    elem: x.elem,
                    dims: vec![x.dims[0], w.dims[0], t],
                }
            }
            "ReduceMean" | "ReduceSum" => {
                let x = input(0)?;
                let axes = self.reduce_axes(node, opset, x.rank())?;
                let keep = int("keepdims", 1) != 0;
                let dims = x
                    .dims
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                        (true, true) => Some(Some(1)),
                        (true, false) => None,
                        (false, _) => Some(d),
                    })
                    .collect();
                StaticShape { elem: x.elem, dims }
            }
            "Slice" => {
                let x = input(0)?;
                let axes: Vec<usize> = if node.input.len() > 3 {
                    self.int_const(node, 3)?
                        .iter()
                        .map(|&a| norm_axis(a, x.rank()))
                        .collect()
                } else {
                    (0..self.int_const(node, 1)?.len()).collect()
                };
                let mut dims = x.dims.clone();
                for a in axes {
                    dims[a] = None;
                }
                StaticShape { elem: x.elem, dims }
            }
            _ => return Err(AutodiffError::NoRule(node.op_type.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy_rules() {
        assert_eq!(
            broadcast(&[None, Some(4), Some(1)], &[Some(4), Some(5)]),
            vec![None, Some(4), Some(5)]
        );
        assert_eq!(broadcast(&[Some(1)], &[None]), vec![None]);
    }
}
