//! A small ONNX graph builder and a streaming model writer.
//!
//! Nodes are named after the checkpoint scope they implement (`encoder.layers.3.attention/MatMul_2`),
//! so an error or a profile points back at the block it came from. Initializers keep their float32
//! data until the model is written, and are encoded one at a time, so writing a model needs only
//! one tensor's worth of extra memory.

use std::io::Write;

use prost::Message;
pub use w2v_engine::onnx_pb::{attr_float, attr_int, attr_ints};
use w2v_engine::onnx_pb::{
    data_type, dimension, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    TypeProtoTensor, ValueInfoProto,
};

use crate::checkpoint::Tensor;

/// Initializer contents.
pub enum InitData {
    F32(Tensor),
    I64 {
        shape: Vec<usize>,
        data: Vec<i64>,
    },
    /// Half-precision weights (`--precision fp16`).
    F16 {
        shape: Vec<usize>,
        data: Vec<half::f16>,
    },
    /// Quantized weights (`--precision int8`).
    I8 {
        shape: Vec<usize>,
        data: Vec<i8>,
    },
}

impl InitData {
    /// Stored size in bytes.
    pub fn byte_len(&self) -> usize {
        match self {
            InitData::F32(t) => t.data.len() * 4,
            InitData::I64 { data, .. } => data.len() * 8,
            InitData::F16 { data, .. } => data.len() * 2,
            InitData::I8 { data, .. } => data.len(),
        }
    }
}

pub struct Initializer {
    pub name: String,
    pub data: InitData,
    /// Made by the graph itself (scalars, shapes, axes), not a model weight.
    pub constant: bool,
}

impl Initializer {
    pub(crate) fn to_proto(&self) -> TensorProto {
        let (dims, data_type, raw_data) = match &self.data {
            InitData::F32(t) => (
                &t.shape,
                data_type::FLOAT,
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            InitData::I64 { shape, data } => (
                shape,
                data_type::INT64,
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            InitData::F16 { shape, data } => (
                shape,
                data_type::FLOAT16,
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            InitData::I8 { shape, data } => (
                shape,
                data_type::INT8,
                data.iter().map(|&v| v as u8).collect(),
            ),
        };
        TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: self.name.clone(),
            raw_data,
            ..Default::default()
        }
    }
}

/// A dimension of a graph input or output.
pub enum Dim {
    Fixed(usize),
    Symbolic(&'static str),
}

pub struct GraphBuilder {
    opset: i64,
    pub(crate) nodes: Vec<NodeProto>,
    /// For each node: it must compute in float32 under reduced precision (see [`GraphBuilder::f32_island`]).
    pub(crate) keep_f32: Vec<bool>,
    pub(crate) initializers: Vec<Initializer>,
    pub(crate) inputs: Vec<ValueInfoProto>,
    pub(crate) outputs: Vec<ValueInfoProto>,
    scope: String,
    counter: usize,
    island: bool,
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Symbolic(s) => dimension::Value::DimParam(s.to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// A builder for a graph of the given ONNX opset (some ops change signature across opsets).
    pub fn new(opset: i64) -> Self {
        GraphBuilder {
            opset,
            nodes: Vec::new(),
            keep_f32: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            scope: String::new(),
            counter: 0,
            island: false,
        }
    }

    /// Mark the nodes added from now on (until turned off) as numerically unsafe in float16:
    /// the fp16 pass keeps them in float32 (normalizations, softmax, large constants). Returns
    /// the previous setting, so islands can nest.
    pub fn f32_island(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.island, on)
    }

    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// `ReduceMean` over `axes` (an attribute before opset 18, an input from 18 on).
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let keep = attr_int("keepdims", keepdims as i64);
        if self.opset < 18 {
            self.node("ReduceMean", &[x], vec![attr_ints("axes", axes), keep])
        } else {
            let a = self.ints(axes);
            self.node("ReduceMean", &[x, &a], vec![keep])
        }
    }

    /// Name the nodes added from now on after a checkpoint scope.
    pub fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }

    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem_type, dims));
    }

    /// A float32 weight, named by its checkpoint name (or a derived one).
    pub fn weight(&mut self, name: &str, t: Tensor) -> String {
        self.initializers.push(Initializer {
            name: name.to_string(),
            data: InitData::F32(t),
            constant: false,
        });
        name.to_string()
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.initializers.push(Initializer {
            name: name.clone(),
            data: InitData::F32(Tensor::new(vec![], vec![value])),
            constant: true,
        });
        name
    }

    /// A 1-D int64 constant (shapes, axes, slice bounds).
    pub fn ints(&mut self, data: &[i64]) -> String {
        let name = self.fresh("ints");
        self.initializers.push(Initializer {
            name: name.clone(),
            data: InitData::I64 {
                shape: vec![data.len()],
                data: data.to_vec(),
            },
            constant: true,
        });
        name
    }

    /// A 0-D int64 constant.
    pub fn int_scalar(&mut self, value: i64) -> String {
        let name = self.fresh("int");
        self.initializers.push(Initializer {
            name: name.clone(),
            data: InitData::I64 {
                shape: vec![],
                data: vec![value],
            },
            constant: true,
        });
        name
    }

    fn fresh(&mut self, op: &str) -> String {
        self.counter += 1;
        if self.scope.is_empty() {
            format!("{op}_{}", self.counter)
        } else {
            format!("{}/{op}_{}", self.scope, self.counter)
        }
    }

    /// Add a single-output node and return its output name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(op);
        self.node_named(op, inputs, attrs, &out);
        out
    }

    /// Add a node whose output has a given name (graph outputs).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, out: &str) {
        self.push_node(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn push_node(&mut self, node: NodeProto) {
        self.nodes.push(node);
        self.keep_f32.push(self.island);
    }

    /// An initializer of any type.
    pub(crate) fn push_initializer(&mut self, name: &str, data: InitData) -> String {
        self.initializers.push(Initializer {
            name: name.to_string(),
            data,
            constant: false,
        });
        name.to_string()
    }

    /// Bytes of weight data in the graph's initializers (the bulk of the file size).
    pub fn weight_bytes(&self) -> usize {
        self.initializers.iter().map(|i| i.data.byte_len()).sum()
    }

    pub fn initializers(&self) -> &[Initializer] {
        &self.initializers
    }

    /// Number of float parameters in the graph's initializers.
    pub fn parameter_count(&self) -> usize {
        self.initializers
            .iter()
            .map(|i| match &i.data {
                InitData::F32(t) => t.data.len(),
                InitData::F16 { data, .. } => data.len(),
                InitData::I8 { data, .. } => data.len(),
                InitData::I64 { .. } => 0,
            })
            .sum()
    }

    /// Serialize as an ONNX model. The graph's initializers are streamed one by one.
    pub fn write_model(
        &self,
        w: &mut impl Write,
        producer_version: &str,
        metadata: Vec<StringStringEntryProto>,
    ) -> std::io::Result<()> {
        let header = ModelProto {
            ir_version: ir_version_for_opset(self.opset),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: self.opset,
            }],
            producer_name: "w2v".into(),
            producer_version: producer_version.into(),
            graph: None,
            metadata_props: metadata,
            ..Default::default()
        };
        let body = GraphProto {
            node: self.nodes.clone(),
            name: "wav2vec2_ctc".into(),
            input: self.inputs.clone(),
            output: self.outputs.clone(),
            ..Default::default()
        };
        // Field 5 (initializer) and field 7 (graph) are length-delimited: key = tag << 3 | 2.
        const INITIALIZER_KEY: u64 = (5 << 3) | 2;
        const GRAPH_KEY: u64 = (7 << 3) | 2;
        let init_len: usize = self
            .initializers
            .iter()
            .map(|i| {
                let n = i.to_proto().encoded_len();
                prost::encoding::encoded_len_varint(INITIALIZER_KEY)
                    + prost::encoding::encoded_len_varint(n as u64)
                    + n
            })
            .sum();
        let body_len = body.encoded_len() + init_len;

        let mut buf = Vec::new();
        header.encode(&mut buf).map_err(std::io::Error::other)?;
        prost::encoding::encode_varint(GRAPH_KEY, &mut buf);
        prost::encoding::encode_varint(body_len as u64, &mut buf);
        body.encode(&mut buf).map_err(std::io::Error::other)?;
        w.write_all(&buf)?;
        for init in &self.initializers {
            let proto = init.to_proto();
            buf.clear();
            prost::encoding::encode_varint(INITIALIZER_KEY, &mut buf);
            proto
                .encode_length_delimited(&mut buf)
                .map_err(std::io::Error::other)?;
            w.write_all(&buf)?;
        }
        Ok(())
    }
}

/// The ONNX IR version that goes with an opset (onnx/helper.py's VERSION_TABLE).
fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}
