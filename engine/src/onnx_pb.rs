//! The subset of `onnx.proto` (ONNX IR version 8/9) that w2v reads and writes.
//!
//! Hand-written prost messages with the official field numbers, so the build needs no `protoc`.
//! Fields we never use are simply absent: prost skips unknown fields when decoding, which is also
//! what makes [`ModelMetadataOnly`] cheap (it never copies the graph's weights).

/// `onnx.TensorProto.DataType`.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
}

/// `onnx.AttributeProto.AttributeType`.
pub mod attribute_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

/// An `INT` attribute.
pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

/// An `INTS` attribute.
pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

/// A `FLOAT` attribute.
pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// A `ModelProto` view that decodes only the header fields and `metadata_props`: the graph (and
/// so every weight) is skipped as an unknown length-delimited field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetadataOnly {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dimension {
    #[prost(oneof = "dimension::Value", tags = "1, 2")]
    pub value: Option<dimension::Value>,
}

pub mod dimension {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(int64, tag = "1")]
        DimValue(i64),
        #[prost(string, tag = "2")]
        DimParam(String),
    }
}

/// Undo float16 weight storage: every float16 initializer read only through a `Cast` to float32
/// (how `w2v export --fp16-weights`, fp16 and int8 exports store weights that compute in float32)
/// becomes a float32 initializer of the same name, the `Cast` is removed and its readers read
/// the initializer. The graph computes exactly what it did (the cast was exact), and code that
/// looks for float32 weight initializers (re-quantizing, fine-tuning) finds them. Returns how
/// many initializers were widened.
pub fn widen_f16_storage(graph: &mut GraphProto) -> usize {
    use std::collections::HashMap;
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for node in &graph.node {
        for input in &node.input {
            *readers.entry(input.as_str()).or_default() += 1;
        }
    }
    let f16: HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .filter(|(_, t)| t.data_type == data_type::FLOAT16)
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    // Cast output -> initializer index, for the casts that are a stored weight's only reader.
    let mut widened: HashMap<String, usize> = HashMap::new();
    let mut drop_node = vec![false; graph.node.len()];
    for (n, node) in graph.node.iter().enumerate() {
        let to_f32 = node.op_type == "Cast"
            && node.domain_is_default()
            && node
                .attribute
                .iter()
                .any(|a| a.name == "to" && a.i == i64::from(data_type::FLOAT));
        let [input] = node.input.as_slice() else {
            continue;
        };
        let [output] = node.output.as_slice() else {
            continue;
        };
        if let Some(&i) = f16.get(input.as_str()).filter(|_| to_f32) {
            if readers.get(input.as_str()) == Some(&1)
                && !graph.output.iter().any(|o| o.name == *output)
            {
                widened.insert(output.clone(), i);
                drop_node[n] = true;
            }
        }
    }
    if widened.is_empty() {
        return 0;
    }
    for &i in widened.values() {
        let t = &mut graph.initializer[i];
        let bits: Vec<u16> = if t.raw_data.is_empty() {
            t.int32_data.iter().map(|&v| v as u16).collect()
        } else {
            t.raw_data
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        t.raw_data = bits
            .into_iter()
            .flat_map(|b| half::f16::from_bits(b).to_f32().to_le_bytes())
            .collect();
        t.int32_data.clear();
        t.data_type = data_type::FLOAT;
    }
    let mut keep = drop_node.iter().map(|d| !d);
    graph.node.retain(|_| keep.next().unwrap_or(true));
    graph.value_info.retain(|v| !widened.contains_key(&v.name));
    for node in &mut graph.node {
        for input in &mut node.input {
            if let Some(&i) = widened.get(input.as_str()) {
                *input = graph.initializer[i].name.clone();
            }
        }
    }
    widened.len()
}

impl NodeProto {
    fn domain_is_default(&self) -> bool {
        self.domain.is_empty() || self.domain == "ai.onnx"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_tensor(name: &str, values: &[f32]) -> TensorProto {
        TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::FLOAT16,
            name: name.into(),
            raw_data: values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        }
    }

    fn cast_to_f32(input: &str, output: &str) -> NodeProto {
        node(
            "Cast",
            &[input],
            output,
            vec![attr_int("to", data_type::FLOAT as i64)],
        )
    }

    #[test]
    fn stored_weights_become_float32_initializers() {
        let w = [0.5f32, -1.25, 3.0e-3, 65504.0];
        let mut g = GraphProto {
            node: vec![
                cast_to_f32("w", "w/to_fp32"),
                node("MatMul", &["x", "w/to_fp32"], "y", vec![]),
                // Read by two nodes: left as it is.
                cast_to_f32("shared", "shared/to_fp32"),
                node("Add", &["y", "shared/to_fp32"], "z", vec![]),
                node("Mul", &["z", "shared"], "out", vec![]),
                // A Cast to float16 is not storage.
                node("Cast", &["v"], "v16", vec![attr_int("to", 10)]),
            ],
            initializer: vec![
                f16_tensor("w", &w),
                f16_tensor("shared", &[1.0]),
                f16_tensor("v", &[2.0]),
            ],
            ..Default::default()
        };
        assert_eq!(widen_f16_storage(&mut g), 1);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "Cast", "Add", "Mul", "Cast"]);
        assert_eq!(g.node[0].input, ["x", "w"]);
        let t = &g.initializer[0];
        assert_eq!(t.data_type, data_type::FLOAT);
        let got: Vec<f32> = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        // Each value is exactly its float16 rounding (3e-3 is not a float16).
        let want: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(got, want);
        assert_eq!(g.initializer[1].data_type, data_type::FLOAT16);
        assert_eq!(g.initializer[2].data_type, data_type::FLOAT16);
        // Nothing left to widen.
        assert_eq!(widen_f16_storage(&mut g), 0);
    }
}
