//! Fine-tune a model on labelled audio on this device, then transcribe with the result.
//!
//! ```sh
//! cargo run --release --example finetune -- [MODEL.onnx] [DATA.tsv] [STEPS]
//! ```
//! Defaults: the shipped model, `samples/samples.tsv` (`path<TAB>transcript`), 3 steps. The
//! `w2v finetune` command adds checkpoints, `--resume`, evaluation and progress on top.

use std::collections::BTreeMap;

use prost::Message;
use w2v::engine::model_info::ModelInfo;
use w2v::engine::onnx_pb::ModelProto;
use w2v::train::data::load_examples;
use w2v::train::trainer::{Trainer, TrainerConfig};
use w2v::{Options, Recognizer, RuntimeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_path = w2v::resolve_model(args.next().as_deref().map(std::path::Path::new))?;
    let data = args.next().unwrap_or_else(|| "samples/samples.tsv".into());
    let steps: u64 = args.next().map_or(Ok(3), |s| s.parse())?;

    let info = ModelInfo::read(&model_path)?;
    let model = ModelProto::decode(std::fs::read(&model_path)?.as_slice())?;
    let data = load_examples(data.as_ref(), &info, true, &mut |_, _| {})?;
    // Training graphs run on the backend the runtime options choose (tract here).
    let make = w2v::runtime::graph_runner_factory(&RuntimeOptions::default())?;
    let config = TrainerConfig {
        steps,
        lr: 1e-5,
        batch_seconds: 4.0,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(&model, config, data.examples.len(), &*make)?;
    for _ in 0..steps {
        let r = trainer.step(&data.examples)?;
        println!("step {} loss {:.4} lr {:.2e}", r.step, r.loss, r.lr);
    }

    let out =
        std::env::temp_dir().join(format!("w2v-finetune-example-{}.onnx", std::process::id()));
    let tuned = trainer.updated_model(&model, &BTreeMap::new());
    w2v::engine::fs::atomic_write_bytes(&out, &tuned.encode_to_vec())?;
    let mut recognizer = Recognizer::open(&out, &Options::default())?;
    let text = recognizer
        .transcribe_file("samples/zero-zero-six-seven.wav")?
        .text;
    std::fs::remove_file(&out)?;
    println!("{text}");
    Ok(())
}
