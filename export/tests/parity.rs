//! Every committed fixture checkpoint, exported and run in tract and ONNX Runtime, must match the
//! PyTorch reference logits the fixture generator (tools/fixtures/gen_wav2vec2.py) recorded.
//!
//! Tolerance: max |logit difference| ≤ 1e-4, the fp32-graph tier (logits are O(10); this is float32 reordering noise,
//! far below any real error), and identical argmax on every frame whose reference top-2 margin
//! exceeds 2e-4 (closer frames are ties within the tolerance).

use std::path::Path;

mod common;
use common::{cases, compare, fixtures, TIER};

use w2v_engine::backend::ort::{OrtBackend, OrtOptions};
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::{Backend, BackendOptions};
use w2v_export::ExportOptions;
use w2v_test_support::assert_close;

fn run_all(backend: &mut dyn Backend, what: &str, dir: &Path) -> Vec<w2v_engine::Logits> {
    let mut outputs = Vec::new();
    for case in cases(dir) {
        let batch = case.batch();
        let got = backend
            .run(&batch)
            .unwrap_or_else(|e| panic!("{what}/{}: {e}", case.name));
        compare(what, &case, &got);
        outputs.push(got);
    }
    outputs
}

#[test]
fn exported_fixtures_match_pytorch_in_tract_and_ort() {
    let out = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let onnx = out.path().join(format!("{name}.onnx"));
        let summary = w2v_export::export(&dir, &onnx, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: export failed: {e}"));
        assert_eq!(
            summary.info.uses_attention_mask,
            name.contains("layer") || name.contains("large")
        );

        let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
        let from_tract = run_all(&mut tract, &format!("tract/{name}"), &dir);
        let mut ort = OrtBackend::load(&onnx, &OrtOptions::default()).unwrap();
        let from_ort = run_all(&mut ort, &format!("ort/{name}"), &dir);
        // The two runtimes must also agree with each other within the same tolerance.
        for (t, o) in from_tract.iter().zip(&from_ort) {
            assert_eq!((t.batch, t.frames, t.vocab), (o.batch, o.frames, o.vocab));
            assert_close(&format!("{name}: tract vs ort"), &t.data, &o.data, TIER);
        }
    }
}

/// The time-major feature encoder that `--quantize-conv` quantizes (each conv after the first an
/// im2col `MatMul` built from reshapes and slices) is the same function: before any
/// quantization it must match the PyTorch references exactly as the plain export does, on both
/// runtimes, for every fixture (group and layer norm, conv bias on and off, batches with masks).
#[test]
fn time_major_feature_encoder_matches_pytorch_in_tract_and_ort() {
    let out = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let onnx = out.path().join(format!("{name}.time-major.onnx"));
        w2v_export::export_time_major_fp32(&dir, &onnx)
            .unwrap_or_else(|e| panic!("{name}: export failed: {e}"));
        let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
        run_all(&mut tract, &format!("tract/{name} time-major"), &dir);
        let mut ort = OrtBackend::load(&onnx, &OrtOptions::default()).unwrap();
        run_all(&mut ort, &format!("ort/{name} time-major"), &dir);
    }
}
