//! Inference of an exported fixture model on both backends (tract, ONNX Runtime), 1 s and 10 s.
//!
//! The fixture is tiny (27 k parameters), so this measures per-call overhead and the front end's
//! convolutions more than matrix throughput; `w2v bench` and tools/ compare full-size models.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use w2v_engine::backend::ort::{OrtBackend, OrtOptions};
use w2v_engine::backend::tract::TractBackend;
use w2v_engine::{Backend, BackendOptions, Batch};
use w2v_export::ExportOptions;

fn inference(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("tiny.onnx");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/fixtures/wav2vec2/base-safetensors");
    w2v_export::export(&src, &onnx, &ExportOptions::default()).unwrap();
    let common = BackendOptions { threads: Some(1) };
    let mut backends: Vec<Box<dyn Backend>> =
        vec![Box::new(TractBackend::load(&onnx, &common).unwrap())];
    match OrtBackend::load(
        &onnx,
        &OrtOptions {
            common,
            ..OrtOptions::default()
        },
    ) {
        Ok(b) => backends.push(Box::new(b)),
        Err(e) => eprintln!("skipping ONNX Runtime: {e}"),
    }
    let mut group = c.benchmark_group("inference_tiny_fixture");
    for seconds in [1usize, 10] {
        let samples: Vec<f32> = (0..seconds * 16000)
            .map(|i| ((i as f32) * 0.05).sin() * 0.3)
            .collect();
        let lengths = [samples.len()];
        for b in backends.iter_mut() {
            let name = b.name();
            group.bench_with_input(
                BenchmarkId::new(name, format!("{seconds}s")),
                &samples,
                |bench, s| bench.iter(|| b.run(&Batch::single(s, &lengths)).unwrap()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
