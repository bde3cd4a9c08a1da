//! An fp32 model made by `w2v export`, read back as the exporter's graph, so that a model
//! (a fine-tuned one, say) can be reduced to fp16 or int8 on the device with the same passes,
//! float32 islands and accuracy report as an export from its Hugging Face folder.
//!
//! The file's graph is not taken on trust. The exporter rebuilds the graph that the model's
//! stored config describes, with placeholder weights, and requires the file's inputs, outputs,
//! nodes and constants to be exactly that graph and its initializers to have the same names,
//! types and shapes; only then are the file's weights moved into it. So which nodes must stay
//! float32 is still decided by the one graph definition (`wav2vec2.rs`), and anything else (an
//! ONNX model from another tool, an edited graph, one from an exporter version whose graph
//! differs) is refused, naming the first difference.

use std::path::{Path, PathBuf};

use prost::Message;
use w2v_engine::model_info::ModelInfoError;
use w2v_engine::onnx_pb::{data_type, ModelProto, TensorProto};
use w2v_engine::ModelInfo;

use crate::checkpoint::Tensor;
use crate::graph::{GraphBuilder, InitData};
use crate::wav2vec2::{Wav2Vec2Graph, Weights};
use crate::{ExportError, MAX_OPSET, MIN_OPSET};
use w2v_engine::config::Wav2Vec2Config;
use w2v_engine::precision::Precision;

/// A float32 model made by `w2v export`, as the exporter's graph.
pub struct ExportedModel {
    pub path: PathBuf,
    pub info: ModelInfo,
    pub graph: GraphBuilder,
    pub opset: i64,
    /// sha256 of the model file, the lineage of what is made from it.
    pub sha256: String,
}

fn type_name(t: i32) -> String {
    match t {
        data_type::FLOAT => "float32".into(),
        data_type::FLOAT16 => "float16".into(),
        data_type::INT8 => "int8".into(),
        data_type::UINT8 => "uint8".into(),
        data_type::INT32 => "int32".into(),
        data_type::INT64 => "int64".into(),
        data_type::BOOL => "bool".into(),
        other => format!("ONNX type {other}"),
    }
}

/// Read `path` and check it is an fp32 model this exporter made; see the module docs.
pub fn read(path: &Path) -> Result<ExportedModel, ExportError> {
    let fail = |reason: String| ExportError::SourceModel {
        path: path.to_path_buf(),
        reason,
    };
    let mut info = ModelInfo::read(path).map_err(|e| match e {
        ModelInfoError::NotOnnx { reason, .. } => fail(format!(
            "neither a Hugging Face model folder nor an ONNX model ({reason})"
        )),
        other => ExportError::ModelInfo(other),
    })?;
    if info.precision != Precision::Fp32.as_str() {
        return Err(fail(format!(
            "has precision {}, not fp32; re-quantize from the fp32 model it was made from",
            info.precision
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let sha256 = w2v_engine::fs::sha256_hex(&bytes);
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| fail(format!("not an ONNX model ({e})")))?;
    drop(bytes);
    let opset = match model.opset_import.as_slice() {
        [o] if o.domain.is_empty() || o.domain == "ai.onnx" => o.version,
        _ => {
            return Err(fail(
                "imports operator sets other than the default one: not made by `w2v export`".into(),
            ))
        }
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(fail(format!(
            "has opset {opset}; this w2v reads and writes {MIN_OPSET}..={MAX_OPSET}"
        )));
    }
    let mut graph = model
        .graph
        .ok_or_else(|| fail("ONNX model has no graph".into()))?;
    // Weights stored as float16 (`--fp16-weights`) are the graph's float32 weights again.
    w2v_engine::onnx_pb::widen_f16_storage(&mut graph);
    info.raw
        .remove(w2v_engine::model_info::keys::WEIGHT_STORAGE);
    let config = Wav2Vec2Config::parse(path, &info.config.to_string())?;
    let prefixed = graph
        .initializer
        .iter()
        .any(|t| t.name.starts_with("wav2vec2."));
    let mut built = Wav2Vec2Graph::build_with(&config, Weights::placeholders(prefixed), opset)
        .map_err(|e| fail(format!("its stored config does not build a graph: {e}")))?
        .g;

    let differs = |what: String| {
        fail(format!(
            "not the graph this w2v ({}) exports for its config: {what}; export it again from \
             its Hugging Face folder",
            env!("CARGO_PKG_VERSION")
        ))
    };
    if graph.input != built.inputs {
        return Err(differs("its inputs differ".into()));
    }
    if graph.output != built.outputs {
        return Err(differs("its outputs differ".into()));
    }
    if let Some((i, (a, b))) = graph
        .node
        .iter()
        .zip(&built.nodes)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Err(differs(format!(
            "node {i} is `{}` ({}), expected `{}` ({})",
            a.name, a.op_type, b.name, b.op_type
        )));
    }
    if graph.node.len() != built.nodes.len() {
        return Err(differs(format!(
            "{} nodes, expected {}",
            graph.node.len(),
            built.nodes.len()
        )));
    }
    if graph.initializer.len() != built.initializers.len() {
        return Err(differs(format!(
            "{} initializers, expected {}",
            graph.initializer.len(),
            built.initializers.len()
        )));
    }
    for (t, init) in graph.initializer.into_iter().zip(&mut built.initializers) {
        if t.name != init.name {
            return Err(differs(format!(
                "initializer `{}` where `{}` was expected",
                t.name, init.name
            )));
        }
        if init.constant {
            if t != init.to_proto() {
                return Err(differs(format!("constant `{}` differs", t.name)));
            }
            continue;
        }
        let InitData::F32(placeholder) = &init.data else {
            unreachable!("the float32 graph's weights are float32");
        };
        let shape = placeholder.shape.clone();
        init.data = InitData::F32(weight(t, shape).map_err(fail)?);
    }
    Ok(ExportedModel {
        path: path.to_path_buf(),
        info,
        graph: built,
        opset,
        sha256,
    })
}

/// The float32 data of a weight initializer of the expected shape.
fn weight(t: TensorProto, shape: Vec<usize>) -> Result<Tensor, String> {
    if t.data_type != data_type::FLOAT {
        return Err(format!(
            "weight `{}` is {}, not float32: not an fp32 model",
            t.name,
            type_name(t.data_type)
        ));
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    if t.dims != dims {
        return Err(format!(
            "weight `{}` has shape {:?}, its config says {:?}",
            t.name, t.dims, dims
        ));
    }
    let n: usize = shape.iter().product();
    let data: Vec<f32> = if t.raw_data.len() == 4 * n {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else if t.raw_data.is_empty() && t.float_data.len() == n {
        t.float_data
    } else {
        return Err(format!(
            "weight `{}` holds {} bytes of data for {n} floats",
            t.name,
            t.raw_data.len().max(4 * t.float_data.len())
        ));
    };
    Ok(Tensor::new(shape, data))
}
