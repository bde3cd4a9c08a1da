//! Reduced-precision exports of the committed fixtures, run in ONNX Runtime and tract against the
//! PyTorch float32 reference logits (tools/fixtures/wav2vec2/*/references.safetensors).
//!
//! fp16: max |logit diff| ≤ 1e-2 and ≥ 99% argmax agreement. int8: ≥ 97% argmax agreement on the
//! frames whose reference top-2 margin exceeds 0.1.

use std::path::Path;

mod common;
use common::{cases, fixtures};

use w2v_engine::backend::ort::{OrtBackend, OrtOptions};
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::{Backend, BackendOptions, ModelInfo};
use w2v_export::quantize::keys;
use w2v_export::report::top2;
use w2v_export::{export_hf_folder, ExportError, ExportOptions, Precision, Target};

#[derive(Default, Debug)]
struct Agreement {
    frames: usize,
    agree: usize,
    confident: usize,
    confident_agree: usize,
    max_diff: f32,
}

impl Agreement {
    fn all(&self) -> f64 {
        100.0 * self.agree as f64 / self.frames.max(1) as f64
    }
    fn confident(&self) -> f64 {
        100.0 * self.confident_agree as f64 / self.confident.max(1) as f64
    }
}

/// Run every reference case of `dir` through `backend` and compare with the fp32 references.
fn agreement(backend: &mut dyn Backend, dir: &Path, what: &str) -> Agreement {
    let mut a = Agreement::default();
    for case in cases(dir) {
        let batch = case.batch();
        let got = backend
            .run(&batch)
            .unwrap_or_else(|e| panic!("{what}/{}: {e}", case.name));
        assert_eq!(got.data.len(), case.logits.len(), "{what}/{}", case.name);
        for (g, r) in got.data.iter().zip(&case.logits) {
            assert!(g.is_finite(), "{what}/{}: non-finite logit", case.name);
            a.max_diff = a.max_diff.max((g - r).abs());
        }
        for (g, r) in got
            .data
            .chunks(got.vocab)
            .zip(case.logits.chunks(got.vocab))
        {
            let (ar, margin) = top2(r);
            let same = top2(g).0 == ar;
            a.frames += 1;
            a.agree += same as usize;
            if margin > 0.1 {
                a.confident += 1;
                a.confident_agree += same as usize;
            }
        }
    }
    a
}

fn export(dir: &Path, out: &Path, options: &ExportOptions) -> w2v_export::ExportSummary {
    export_hf_folder(dir, out, options)
        .unwrap_or_else(|e| panic!("{}: export failed: {e}", dir.display()))
}

#[test]
fn fp16_matches_fp32_references_in_ort_and_tract() {
    let out = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let onnx = out.path().join(format!("{name}.fp16.onnx"));
        let options = ExportOptions {
            precision: Precision::Fp16,
            ..Default::default()
        };
        let summary = export(&dir, &onnx, &options);
        assert_eq!(summary.precision, "fp16");
        let info = ModelInfo::read(&onnx).unwrap();
        assert_eq!(info.precision, "fp16");
        assert!(info.raw.contains_key(keys::REPORT));
        assert!(!info.raw.contains_key(keys::TARGET));
        let report = summary.report.expect("fp16 exports report");
        eprintln!("{name}: {}", report.summary_line());
        assert!(report.quantized_bytes < report.fp32_bytes);

        let mut ort = OrtBackend::load(&onnx, &OrtOptions::default()).unwrap();
        let a = agreement(&mut ort, &dir, &format!("ort/{name}"));
        eprintln!("ort/{name} fp16: {a:?}");
        assert!(a.max_diff <= 1e-2, "ort/{name}: max |diff| {}", a.max_diff);
        assert!(a.all() >= 99.0, "ort/{name}: argmax agreement {}", a.all());

        // tract runs float16 too, less accurately than ONNX Runtime (about 0.015 max |diff| on
        // the fixtures, where ONNX Runtime gives 0.005), so its bound is looser.
        let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
        let a = agreement(&mut tract, &dir, &format!("tract/{name}"));
        eprintln!("tract/{name} fp16: {a:?}");
        assert!(
            a.max_diff <= 3e-2,
            "tract/{name}: max |diff| {}",
            a.max_diff
        );
        assert!(
            a.all() >= 99.0,
            "tract/{name}: argmax agreement {}",
            a.all()
        );
    }
}

#[test]
fn int8_cpu_agrees_with_fp32_references_in_ort_and_tract() {
    let out = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let onnx = out.path().join(format!("{name}.int8.onnx"));
        let options = ExportOptions {
            precision: Precision::Int8,
            ..Default::default()
        };
        let summary = export(&dir, &onnx, &options);
        assert_eq!(summary.target.as_deref(), Some("cpu"));
        let info = ModelInfo::read(&onnx).unwrap();
        assert_eq!(info.precision, "int8");
        assert_eq!(info.raw[keys::TARGET], "cpu");
        let report = summary.report.expect("int8 exports report");
        eprintln!("{name}: {}", report.summary_line());
        assert!(report.confident_argmax_agreement >= 97.0);

        let mut ort = OrtBackend::load(&onnx, &OrtOptions::default()).unwrap();
        let a = agreement(&mut ort, &dir, &format!("ort/{name}"));
        eprintln!(
            "ort/{name} int8: {a:?} ({:.2}% / {:.2}%)",
            a.all(),
            a.confident()
        );
        assert!(a.confident() >= 97.0, "ort/{name}: {}", a.confident());

        let mut tract = TractBackend::load(&onnx, &BackendOptions::default()).unwrap();
        let a = agreement(&mut tract, &dir, &format!("tract/{name}"));
        eprintln!(
            "tract/{name} int8: {a:?} ({:.2}% / {:.2}%)",
            a.all(),
            a.confident()
        );
        assert!(a.confident() >= 97.0, "tract/{name}: {}", a.confident());
    }
}

#[test]
fn int8_tensorrt_qdq_runs_in_ort_and_tract() {
    let out = tempfile::tempdir().unwrap();
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let onnx = out.path().join(format!("{name}.qdq.onnx"));
        let options = ExportOptions {
            precision: Precision::Int8,
            target: Target::Tensorrt,
            ..Default::default()
        };
        let summary = export(&dir, &onnx, &options);
        assert_eq!(summary.target.as_deref(), Some("tensorrt"));
        let info = ModelInfo::read(&onnx).unwrap();
        assert_eq!(info.raw[keys::TARGET], "tensorrt");
        assert!(info.raw[keys::CALIBRATION].contains("percentile"));
        for (what, backend) in [
            (
                "ort",
                Box::new(OrtBackend::load(&onnx, &OrtOptions::default()).unwrap())
                    as Box<dyn Backend>,
            ),
            (
                "tract",
                Box::new(TractBackend::load(&onnx, &BackendOptions::default()).unwrap()),
            ),
        ] {
            let mut backend = backend;
            let a = agreement(&mut backend, &dir, &format!("{what}/{name}"));
            eprintln!(
                "{what}/{name} qdq: {a:?} ({:.2}% / {:.2}%)",
                a.all(),
                a.confident()
            );
            assert!(a.confident() >= 97.0, "{what}/{name}: {}", a.confident());
        }
    }
}

#[test]
fn max_wer_increase_refuses_and_writes_nothing() {
    let dir = &fixtures()[1];
    let out = tempfile::tempdir().unwrap();
    let onnx = out.path().join("refused.onnx");
    // On the synthetic set the int8 transcripts of this random model differ from the fp32 ones
    // (25% WER against them), so a zero allowance must fail.
    let options = ExportOptions {
        precision: Precision::Int8,
        max_wer_increase: Some(0.0),
        ..Default::default()
    };
    match export_hf_folder(dir, &onnx, &options) {
        Err(ExportError::WerIncrease {
            increase, report, ..
        }) => {
            assert!(increase > 0.0);
            assert_eq!(report.wer_increase_points, increase);
        }
        other => panic!("expected a WER refusal, got {:?}", other.map(|s| s.output)),
    }
    assert!(!onnx.exists());
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no temporary left"
    );

    let options = ExportOptions {
        max_wer_increase: Some(1000.0),
        ..options
    };
    let summary = export(dir, &onnx, &options);
    let info = ModelInfo::read(&onnx).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&info.raw[keys::REPORT]).unwrap();
    assert_eq!(
        stored["wer_increase_points"].as_f64(),
        Some(summary.report.unwrap().wer_increase_points)
    );
}

#[test]
fn invalid_option_combinations_are_refused() {
    let dir = &fixtures()[1];
    let out = tempfile::tempdir().unwrap();
    let onnx = out.path().join("x.onnx");
    for options in [
        ExportOptions {
            precision: Precision::Int8,
            quantize_conv: true,
            ..Default::default()
        },
        ExportOptions {
            target: Target::Tensorrt,
            ..Default::default()
        },
        ExportOptions {
            max_wer_increase: Some(1.0),
            ..Default::default()
        },
        ExportOptions {
            precision: Precision::Fp16,
            max_wer_increase: Some(-1.0),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            export_hf_folder(dir, &onnx, &options),
            Err(ExportError::Unsupported(_))
        ));
        assert!(!onnx.exists());
    }
}
