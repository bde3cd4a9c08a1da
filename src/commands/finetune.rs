//! `w2v finetune`: CTC fine-tuning of an fp32 model on labelled audio (wiring only; the work is in
//! the train crate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prost::Message;
use serde::Serialize;
use w2v_engine::audio;
use w2v_engine::ctc::Vocabulary;
use w2v_engine::fs::atomic_write;
use w2v_engine::manifest::read_manifest;
use w2v_engine::model_info::ModelInfo;
use w2v_engine::onnx_pb::ModelProto;
use w2v_train::checkpoint;
use w2v_train::trainer::{Example, Trainer, TrainerConfig};

use super::model::{graph_runner_factory, ModelArgs};
use super::transcribe::progress_bar;

/// The checkpoint's file name inside the output folder.
const CHECKPOINT_FILE: &str = "checkpoint.w2vckpt";
/// The fine-tuned model's file name inside the output folder.
const MODEL_FILE: &str = "model.onnx";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// TSV of `path<TAB>transcript` rows to train on.
    #[arg(long)]
    data: PathBuf,
    /// Folder for the checkpoint and the fine-tuned model (created if missing).
    #[arg(long)]
    output: PathBuf,
    /// Optimizer updates.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Peak learning rate (tri-stage schedule: 10% warm-up, 40% hold, 50% decay).
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Padded audio per forward pass, in seconds.
    #[arg(long, default_value_t = 16.0)]
    batch_seconds: f64,
    /// Batches summed into each update.
    #[arg(long, default_value_t = 1)]
    accumulate: u32,
    /// Write a checkpoint every N updates (and at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also train the convolutional feature encoder (frozen by default).
    #[arg(long)]
    train_feature_encoder: bool,
    /// Continue from the checkpoint in --output (same settings required).
    #[arg(long)]
    resume: bool,
    /// Fail on the first unreadable or unusable row instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Print the result (and one line per update) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct StepLine {
    step: u64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    output: String,
    steps: u64,
    examples: usize,
    skipped_unreadable: usize,
    skipped_too_short: usize,
    first_loss: Option<f64>,
    final_loss: Option<f64>,
    wall_seconds: f64,
    /// Peak resident memory of the process (VmHWM), in MiB; absent where not measurable.
    peak_memory_mb: Option<f64>,
}

/// Read the TSV rows into examples; unreadable audio and clips too short for their transcript are
/// skipped (counted) unless `strict`; characters outside the vocabulary are always an error.
fn load_examples(
    data: &Path,
    info: &ModelInfo,
    strict: bool,
) -> Result<(Vec<Example>, usize, usize)> {
    let rows = read_manifest(data)?;
    let vocab = Vocabulary::from_model_info(info);
    let mut unknown: Vec<char> = Vec::new();
    let mut labels = Vec::with_capacity(rows.len());
    for row in &rows {
        match vocab.encode(&row.transcript) {
            Ok(l) => labels.push(l),
            Err(chars) => {
                for c in chars {
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                }
                labels.push(Vec::new());
            }
        }
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
        bail!(
            "{}: transcripts use characters outside the model's vocabulary: {}",
            data.display(),
            list.join(", ")
        );
    }
    let bar = progress_bar(rows.len() as u64, "reading audio");
    let (mut examples, mut unreadable, mut too_short) = (Vec::new(), 0, 0);
    for (row, labels) in rows.iter().zip(labels) {
        bar.inc(1);
        let mut samples = match audio::load(&row.path, info.sample_rate) {
            Ok(s) => s,
            Err(e) if strict => return Err(e.into()),
            Err(e) => {
                tracing::warn!("skipping {}: {e}", row.path.display());
                unreadable += 1;
                continue;
            }
        };
        let frames = info.frames_for_samples(samples.len());
        let repeats = labels.windows(2).filter(|w| w[0] == w[1]).count();
        if frames < labels.len() + repeats || frames == 0 {
            let msg = format!(
                "{}: {:.2} s of audio ({frames} frames) is too short for its {}-token transcript",
                row.path.display(),
                samples.len() as f64 / info.sample_rate as f64,
                labels.len()
            );
            if strict {
                bail!(msg);
            }
            tracing::warn!("skipping {msg}");
            too_short += 1;
            continue;
        }
        if info.do_normalize {
            audio::normalize(&mut samples);
        }
        examples.push(Example { samples, labels });
    }
    bar.finish_and_clear();
    if examples.is_empty() {
        bail!("{}: no usable examples", data.display());
    }
    Ok((examples, unreadable, too_short))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let model_path = super::model::resolve_model(args.model.model.as_deref())?;
    if model_path.is_dir() {
        bail!(
            "{}: is a directory; export it first with `w2v export` (fine-tuning reads the fp32 ONNX model)",
            model_path.display()
        );
    }
    let bytes = std::fs::read(&model_path)
        .with_context(|| format!("{}: cannot read model", model_path.display()))?;
    let info = ModelInfo::read(&model_path)?;
    if info.precision != "fp32" {
        bail!(
            "{}: a {} model; fine-tuning needs fp32 weights (export with --precision fp32, \
             fine-tune, then re-quantize)",
            model_path.display(),
            info.precision
        );
    }
    let model = ModelProto::decode(bytes.as_slice())
        .with_context(|| format!("{}: not an ONNX model", model_path.display()))?;
    let (examples, unreadable, too_short) = load_examples(&args.data, &info, args.strict)?;
    let data_hash = w2v_engine::fs::sha256_hex(&std::fs::read(&args.data)?);
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create folder", args.output.display()))?;
    let ckpt_path = args.output.join(CHECKPOINT_FILE);

    let config = TrainerConfig {
        steps: args.steps,
        lr: args.lr,
        batch_seconds: args.batch_seconds,
        accumulation: args.accumulate,
        seed: args.seed,
        freeze_feature_encoder: !args.train_feature_encoder,
        ..TrainerConfig::default()
    };
    let make = graph_runner_factory(&args.model)?;
    let mut trainer = Trainer::new(&model, config, examples.len(), &*make)
        .with_context(|| model_path.display().to_string())?;
    if args.resume {
        if !ckpt_path.is_file() {
            bail!("{}: no checkpoint to resume from", ckpt_path.display());
        }
        let state = checkpoint::load(&ckpt_path, &trainer)?;
        trainer.restore(state, examples.len())?;
        tracing::info!(step = trainer.state.step, "resumed");
    }

    install_sigint_handler();

    let bar = progress_bar(args.steps, "fine-tuning");
    bar.set_position(trainer.state.step);
    let (mut first_loss, mut final_loss) = (None, None);
    while trainer.state.step < args.steps {
        let r = trainer.step(&examples)?;
        first_loss.get_or_insert(r.loss);
        final_loss = Some(r.loss);
        bar.set_position(r.step);
        bar.set_message(format!("loss {:.3} lr {:.2e}", r.loss, r.lr));
        if args.json {
            let line = StepLine {
                step: r.step,
                loss: r.loss,
                lr: r.lr,
                grad_norm: r.grad_norm,
            };
            bar.suspend(|| println!("{}", serde_json::to_string(&line).unwrap_or_default()));
        }
        let stop = INTERRUPTED.load(Ordering::SeqCst);
        if r.step % args.checkpoint_every.max(1) == 0 || r.step == args.steps || stop {
            checkpoint::save(&ckpt_path, &trainer)?;
        }
        if stop {
            bar.finish_and_clear();
            eprintln!(
                "interrupted at step {}; checkpoint in {} (continue with --resume)",
                r.step,
                ckpt_path.display()
            );
            return Ok(ExitCode::from(130));
        }
    }
    bar.finish_and_clear();

    let mut lineage = BTreeMap::new();
    lineage.insert("w2v.finetune.base_sha256".into(), w2v_engine::fs::sha256_hex(&bytes));
    lineage.insert("w2v.finetune.data_sha256".into(), data_hash);
    lineage.insert("w2v.finetune.steps".into(), args.steps.to_string());
    let out_model = args.output.join(MODEL_FILE);
    let tuned = trainer.updated_model(&model, &lineage);
    atomic_write(&out_model, |w| {
        use std::io::Write;
        w.write_all(&tuned.encode_to_vec())
    })?;
    let report = Report {
        model: model_path.display().to_string(),
        output: out_model.display().to_string(),
        steps: trainer.state.step,
        examples: examples.len(),
        skipped_unreadable: unreadable,
        skipped_too_short: too_short,
        first_loss,
        final_loss,
        wall_seconds: start.elapsed().as_secs_f64(),
        peak_memory_mb: w2v_engine::bench::peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "fine-tuned {} steps on {} examples ({} unreadable, {} too short skipped): loss {} → {}; {:.1} s, peak memory {}; wrote {}",
            report.steps,
            report.examples,
            unreadable,
            too_short,
            first_loss.map_or("-".into(), |l| format!("{l:.3}")),
            final_loss.map_or("-".into(), |l| format!("{l:.3}")),
            report.wall_seconds,
            report
                .peak_memory_mb
                .map_or("unknown".into(), |m| format!("{m:.0} MB")),
            report.output
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Set by SIGINT (Ctrl-C): finish the current update, checkpoint, stop.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_sigint_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
