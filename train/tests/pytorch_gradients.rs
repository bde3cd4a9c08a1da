//! Whole-model gradients against PyTorch: each fixture checkpoint is exported, differentiated by
//! `autodiff`, run forward → CTC (Rust) → backward on ONNX Runtime and on tract, and every
//! parameter's gradient is compared with the float64 PyTorch reference that
//! tools/fixtures/gen_grads.py stored (grads.safetensors beside the checkpoint).
//!
//! Error measure, per parameter: ‖g − g_ref‖₂ / ‖g_ref‖₂ over all its elements, required ≤
//! [`MAX_RELATIVE_ERROR`]. The only exception are the attention key biases, whose exact gradient
//! is zero (softmax is invariant to the constant q·b_k they add to every score of a query row):
//! both sides must be below [`ZERO_GRADIENT`] in norm. The CTC loss must match to
//! [`LOSS_TOLERANCE`] relative.

use std::path::Path;

use prost::Message;
use safetensors::{Dtype, SafeTensors};
use w2v_engine::backend::ort::{OrtGraph, OrtOptions};
use w2v_engine::backend::tract::TractGraph;
use w2v_engine::backend::{BackendError, BackendOptions, GraphRunner, TensorView};
use w2v_engine::onnx_pb::ModelProto;
use w2v_export::ExportOptions;
use w2v_test_support::paths::wav2vec2_fixture as fixture;
use w2v_test_support::Tier;
use w2v_train::autodiff::TrainingGraphs;
use w2v_train::ctc::{ctc_loss, LogitsView, Reduction};
use w2v_train::gradients::{GradientRunner, RunnerFactory};
use w2v_train::parameters;

/// Gradients of a whole float32 model (forward, CTC, backward through every layer) against the
/// float64 reference: errors accumulate over the layers, so the bound is this test's own.
const MAX_RELATIVE_ERROR: f64 = 1e-3;
const ZERO_GRADIENT: f64 = 1e-5;
/// The CTC loss, float32 against float64 (used relatively here, the number of the tier).
const LOSS_TOLERANCE: f64 = Tier::F32VsF64.f64();

fn tensor<'a>(st: &'a SafeTensors<'a>, name: &str) -> (Vec<usize>, Dtype, &'a [u8]) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (t.shape().to_vec(), t.dtype(), t.data())
}

fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let (_, dtype, data) = tensor(st, name);
    assert_eq!(dtype, Dtype::F64, "{name}");
    data.chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i64>) {
    let (shape, dtype, data) = tensor(st, name);
    assert_eq!(dtype, Dtype::I64, "{name}");
    let v = data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (shape, v)
}

/// The PyTorch parameter an ONNX weight was exported from, and how to turn the PyTorch gradient
/// into the ONNX weight's: linear weights are stored transposed (`.T`), the query projection has
/// the attention scaling 1/√d folded into weight and bias (so its gradient is divided by it),
/// per-channel group-norm affine parameters are stored as [C, 1].
fn reference_gradient(
    st: &SafeTensors<'_>,
    onnx_name: &str,
    shape: &[usize],
    head_dim: usize,
    prefixed_refs: bool,
) -> Vec<f64> {
    let base = onnx_name.strip_prefix("wav2vec2.").unwrap_or(onnx_name);
    let (torch, transposed) = match base.strip_suffix(".T") {
        Some(b) => (b, true),
        None => (base, false),
    };
    let key = if prefixed_refs && !torch.starts_with("lm_head.") {
        format!("grad.wav2vec2.{torch}")
    } else {
        format!("grad.{torch}")
    };
    let mut g = f64s(st, &key);
    if transposed {
        let (rows, cols) = (shape[1], shape[0]); // torch [out, in]; ONNX [in, out]
        let mut t = vec![0f64; g.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = g[r * cols + c];
            }
        }
        g = t;
    }
    if torch.contains(".q_proj.") {
        let scaling = (head_dim as f64).powf(-0.5);
        g.iter_mut().for_each(|v| *v /= scaling);
    }
    assert_eq!(
        g.len(),
        shape.iter().product::<usize>(),
        "{onnx_name}: size"
    );
    g
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

fn check_variant(variant: &str, runner: &str, make: &RunnerFactory<'_>, freeze_fe: bool) {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("model.onnx");
    w2v_export::export(&fixture(variant), &onnx, &ExportOptions::default()).unwrap();
    let model = ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    let graphs = TrainingGraphs::build(&model, |t| parameters::is_trainable(t, freeze_fe))
        .unwrap_or_else(|e| panic!("{variant}: {e}"));
    let inits = &model.graph.as_ref().unwrap().initializer;
    let params: Vec<Vec<f32>> = graphs
        .parameters
        .iter()
        .map(|p| {
            let t = inits.iter().find(|t| t.name == p.name).unwrap();
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture(variant).join("config.json")).unwrap())
            .unwrap();
    let head_dim = (config["hidden_size"].as_u64().unwrap()
        / config["num_attention_heads"].as_u64().unwrap()) as usize;
    let blank = config["pad_token_id"].as_u64().unwrap_or(0) as usize;

    let bytes = std::fs::read(fixture(variant).join("grads.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (xshape, _, xdata) = tensor(&st, "input_values");
    let x: Vec<f32> = xdata
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mask = st
        .names()
        .contains(&"attention_mask")
        .then(|| i64s(&st, "attention_mask").1);
    let mut inputs = vec![("input_values", TensorView::f32(&xshape, &x))];
    if let Some(m) = &mask {
        inputs.push(("attention_mask", TensorView::i64(&xshape, m)));
    }
    let (lshape, labels) = i64s(&st, "labels");
    let targets: Vec<Vec<usize>> = labels
        .chunks(lshape[1])
        .map(|r| r.iter().filter(|&&v| v >= 0).map(|&v| v as usize).collect())
        .collect();
    let frames: Vec<usize> = i64s(&st, "frame_lengths")
        .1
        .iter()
        .map(|&v| v as usize)
        .collect();

    let mut r = GradientRunner::new(graphs, make).unwrap_or_else(|e| panic!("{variant}: {e}"));
    let fwd = r.forward(&inputs, &params).unwrap();
    let shape = fwd.output.shape.clone();
    let logits = fwd.output.as_f32().unwrap();
    let ctc = ctc_loss(
        LogitsView {
            data: logits,
            batch: shape[0],
            frames: shape[1],
            vocab: shape[2],
        },
        &frames,
        &targets,
        blank,
        Reduction::Mean,
    )
    .unwrap();
    let loss_ref = f64s(&st, "loss")[0];
    assert!(
        (ctc.loss - loss_ref).abs() <= LOSS_TOLERANCE * loss_ref.abs(),
        "{variant} on {runner}: loss {} vs PyTorch {loss_ref}",
        ctc.loss
    );
    let grads = r.backward(&fwd, &ctc.grad, &inputs, &params).unwrap();
    let prefixed = st.names().iter().any(|n| n.starts_with("grad.wav2vec2."));
    let mut worst = (0f64, String::new());
    let mut checked = 0;
    for (p, g) in r.parameters().iter().zip(&grads) {
        let reference = reference_gradient(&st, &p.name, &p.shape, head_dim, prefixed);
        let diff = norm(g.iter().zip(&reference).map(|(&a, &b)| a as f64 - b));
        let ref_norm = norm(reference.iter().copied());
        if p.name.contains("k_proj.bias") {
            let got = norm(g.iter().map(|&v| v as f64));
            assert!(
                got <= ZERO_GRADIENT && ref_norm <= ZERO_GRADIENT,
                "{variant} on {runner}: {} should have a zero gradient: ‖g‖ {got:.2e}, ‖ref‖ {ref_norm:.2e}",
                p.name
            );
            continue;
        }
        let rel = diff / ref_norm;
        assert!(
            rel <= MAX_RELATIVE_ERROR,
            "{variant} on {runner}: {} relative error {rel:.2e} (‖ref‖ {ref_norm:.3e})",
            p.name
        );
        if rel > worst.0 {
            worst = (rel, p.name.clone());
        }
        checked += 1;
    }
    let expected_frozen = if freeze_fe {
        inits
            .iter()
            .filter(|t| parameters::is_weight(t) && parameters::in_feature_encoder(&t.name))
            .count()
    } else {
        0
    };
    assert_eq!(
        r.parameters().len() + expected_frozen,
        inits.iter().filter(|t| parameters::is_weight(t)).count()
    );
    eprintln!(
        "{variant} on {runner} (feature encoder {}): {checked} parameters, loss {:.6} (PyTorch {loss_ref:.6}), worst relative error {:.2e} ({})",
        if freeze_fe { "frozen" } else { "trained" },
        ctc.loss,
        worst.0,
        worst.1
    );
}

fn ort(bytes: &[u8], what: &str) -> Result<Box<dyn GraphRunner>, BackendError> {
    Ok(Box::new(OrtGraph::from_bytes(
        bytes,
        Path::new(what),
        &OrtOptions::default(),
    )?))
}

fn tract(bytes: &[u8], what: &str) -> Result<Box<dyn GraphRunner>, BackendError> {
    Ok(Box::new(TractGraph::from_bytes(
        bytes,
        Path::new(what),
        &BackendOptions::default(),
    )?))
}

#[test]
fn group_norm_gradients_match_pytorch_on_ort() {
    check_variant("base-safetensors", "ort", &ort, false);
    check_variant("base-safetensors", "ort", &ort, true);
}

#[test]
fn layer_norm_gradients_match_pytorch_on_ort() {
    check_variant("large-stable-sharded", "ort", &ort, false);
    check_variant("layer-noprefix-bin", "ort", &ort, false);
}

#[test]
fn group_norm_gradients_match_pytorch_on_tract() {
    check_variant("base-safetensors", "tract", &tract, false);
}

#[test]
fn layer_norm_gradients_match_pytorch_on_tract() {
    check_variant("large-stable-sharded", "tract", &tract, false);
}
