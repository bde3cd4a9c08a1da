//! Audio front-end throughput: resampling one minute of 44.1 kHz audio to 16 kHz, and the
//! zero-mean / unit-variance normalization of the result.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use w2v_engine::audio;

fn one_minute_44k() -> Vec<f32> {
    let rate = 44100.0f64;
    let mut state = 0x2545_f491u32;
    (0..44100 * 60)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f64 / u32::MAX as f64 - 0.5) * 0.05;
            let t = i as f64 / rate;
            (0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.1 * (2.0 * std::f64::consts::PI * 3100.0 * t).sin()
                + noise) as f32
        })
        .collect()
}

fn frontend(c: &mut Criterion) {
    let x = one_minute_44k();
    let mut group = c.benchmark_group("frontend");
    group.sample_size(20);
    group.throughput(Throughput::Elements(x.len() as u64));
    group.bench_function("resample_60s_44k1_to_16k", |b| {
        b.iter(|| audio::resample(black_box(&x), 44100, 16000))
    });
    let y = audio::resample(&x, 44100, 16000);
    group.throughput(Throughput::Elements(y.len() as u64));
    group.bench_function("normalize_60s_16k", |b| {
        b.iter_batched_ref(
            || y.clone(),
            |v| audio::normalize(black_box(v)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, frontend);
criterion_main!(benches);
