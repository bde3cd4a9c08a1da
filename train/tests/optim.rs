//! AdamW against torch.optim.AdamW (trajectory from tools/fixtures/gen_optim_cases.py).

use w2v_test_support::Tier;
use w2v_train::optim::{AdamW, AdamWConfig};

/// float32 parameters after a few updates: agreement to a few float32 ulps of O(1) values.
const TOLERANCE: f64 = Tier::ExactF32.f64();

#[test]
fn adamw_matches_pytorch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/adamw.json"
    ))
    .unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vecs = |v: &serde_json::Value| -> Vec<Vec<f32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    let mut params = vecs(&j["init"]);
    let config = AdamWConfig {
        beta1: j["beta1"].as_f64().unwrap(),
        beta2: j["beta2"].as_f64().unwrap(),
        eps: j["eps"].as_f64().unwrap(),
        weight_decay: j["weight_decay"].as_f64().unwrap(),
    };
    let sizes: Vec<usize> = params.iter().map(Vec::len).collect();
    let mut opt = AdamW::new(config, &sizes);
    for (i, step) in j["steps"].as_array().unwrap().iter().enumerate() {
        opt.update(
            &mut params,
            &vecs(&step["grads"]),
            step["lr"].as_f64().unwrap(),
        );
        for (p, r) in params
            .iter()
            .flatten()
            .zip(vecs(&step["params"]).iter().flatten())
        {
            assert!(
                (*p as f64 - *r as f64).abs() <= TOLERANCE,
                "step {i}: {p} vs torch {r}"
            );
        }
    }
}
