//! The fine-tuning hot paths outside the graphs: the CTC loss and its gradient, gradient
//! clipping and the AdamW update, at the sizes of one update of the recipe's 6-layer default
//! model (5.3 M parameters, shipped until 2026-12-06; the shipped model is that grown to 10
//! layers; a batch of 16 one-second utterances: 49 frames of 32 tokens).

use criterion::{criterion_group, criterion_main, Criterion};
use w2v_train::ctc::{ctc_loss, LogitsView, Reduction};
use w2v_train::optim::{clip_grad_norm, AdamW, AdamWConfig};

/// Parameter tensor sizes of the 6-layer default model's trainable weights (about 5.0 M).
fn sizes() -> Vec<usize> {
    let mut s = vec![256 * 256; 4 * 6]; // q, k, v, out projections of 6 layers
    s.extend(vec![256 * 1024; 2 * 6]); // feed-forward
    s.extend(vec![256 * 16 * 64, 128 * 256, 256 * 32]); // positional conv, projection, head
    s.extend(vec![256; 60]); // biases and norms
    s
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                - 0.5
        })
        .collect()
}

fn train(c: &mut Criterion) {
    let sizes = sizes();
    let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 1)).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 7)).collect();
    let mut opt = AdamW::new(AdamWConfig::default(), &sizes);
    let total: usize = sizes.iter().sum();
    c.bench_function(&format!("adamw_update_{:.1}M", total as f64 / 1e6), |b| {
        b.iter(|| opt.update(&mut params, &grads, 1e-4))
    });
    let mut g = grads.clone();
    c.bench_function("clip_grad_norm", |b| b.iter(|| clip_grad_norm(&mut g, 1.0)));
    let (batch, frames, vocab) = (16, 49, 32);
    let logits = values(batch * frames * vocab, 3);
    let targets: Vec<Vec<usize>> = (0..batch).map(|i| vec![5 + i % 20, 9, 7, 4, 12]).collect();
    let lengths = vec![frames; batch];
    c.bench_function("ctc_loss_and_grad_16x49x32", |b| {
        b.iter(|| {
            ctc_loss(
                LogitsView {
                    data: &logits,
                    batch,
                    frames,
                    vocab,
                },
                &lengths,
                &targets,
                0,
                Reduction::Mean,
            )
            .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = train
}
criterion_main!(benches);
