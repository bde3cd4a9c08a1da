//! `w2v finetune`: CTC fine-tuning of an fp32 model on labelled audio (wiring only; the work is in
//! the train crate).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use prost::Message;
use serde::Serialize;
use w2v_engine::fs::atomic_write;
use w2v_engine::model_info::{keys, ModelInfo};
use w2v_engine::onnx_pb::ModelProto;
use w2v_train::checkpoint;
use w2v_train::data::{load_eval, load_examples, word_error_rate, LoadedExamples};
use w2v_train::regularize::Masking;
use w2v_train::trainer::{Trainer, TrainerConfig};

use super::model::ModelArgs;
use super::transcribe::progress_bar;
use w2v::runtime::graph_runner_factory;

/// The checkpoint's file name inside the output folder.
const CHECKPOINT_FILE: &str = "checkpoint.w2vckpt";
/// The fine-tuned model's file name inside the output folder.
const MODEL_FILE: &str = "model.onnx";
/// A Hugging Face folder given as `--model` is exported (fp32) to this file in the output folder.
const BASE_MODEL_FILE: &str = "base.onnx";

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
    /// Seed of the data order (and of a new CTC head, --vocab).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Start a pre-trained model (a Hugging Face Wav2Vec2ForPreTraining / Wav2Vec2Model folder
    /// or a fairseq pre-training checkpoint) with a freshly initialized CTC head for this
    /// vocabulary: a vocab.json or a fairseq dictionary (dict.ltr.txt).
    #[arg(long, value_name = "vocab.json|dict.ltr.txt")]
    vocab: Option<PathBuf>,
    /// Also train the convolutional feature encoder (frozen by default).
    #[arg(long)]
    train_feature_encoder: bool,
    /// Only the CTC head trains for the first N updates, then head and Transformer (the
    /// paper's and fairseq's freeze_finetune_updates).
    #[arg(long, default_value_t = 0, value_name = "N")]
    freeze_transformer_steps: u64,
    /// Fraction of frames covered by time masks, spans of --mask-time-length frames filled
    /// with the model's masked_spec_embed (transformers' mask_time_prob) [default: the model's
    /// config, else 0.05].
    #[arg(long, value_name = "P")]
    mask_time_prob: Option<f64>,
    /// Frames per time mask [default: the model's config, else 10].
    #[arg(long, value_name = "N")]
    mask_time_length: Option<usize>,
    /// Fraction of channels zeroed, in spans of --mask-channel-length (transformers'
    /// mask_feature_prob) [default: the model's config, else 0].
    #[arg(long, value_name = "P")]
    mask_channel_prob: Option<f64>,
    /// Channels per channel mask [default: the model's config, else 10].
    #[arg(long, value_name = "N")]
    mask_channel_length: Option<usize>,
    /// LayerDrop: skip each Transformer layer with this probability per update [default: 0;
    /// the model's config `layerdrop` is not applied unless asked for].
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    layer_drop: f64,
    /// No time or channel masking.
    #[arg(long, conflicts_with_all = ["mask_time_prob", "mask_channel_prob"])]
    no_masking: bool,
    /// TSV of `path<TAB>transcript` rows to measure WER on: before training, every
    /// --eval-every updates and at the end (the final WER goes into the model's metadata).
    #[arg(long, value_name = "DATA.tsv")]
    eval: Option<PathBuf>,
    /// Updates between evaluations [default: --checkpoint-every].
    #[arg(long, value_name = "N")]
    eval_every: Option<u64>,
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
    /// Wall time of this update (forward, CTC, backward, optimizer), in seconds.
    seconds: f64,
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    eval_wer: f64,
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
    /// Word error rate on --eval before the first update (absent when resumed) and at the end.
    eval_wer_before: Option<f64>,
    eval_wer: Option<f64>,
    wall_seconds: f64,
    /// Peak resident memory of the process (VmHWM), in MiB; absent where not measurable.
    peak_memory_mb: Option<f64>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let start = Instant::now();
    let mut model_path = args.model.path()?;
    let checkpoint =
        model_path.is_dir() || w2v_export::checkpoint::fairseq::is_torch_archive(&model_path);
    if args.vocab.is_some() && !checkpoint {
        bail!(
            "{}: --vocab gives a pre-trained checkpoint (a Hugging Face folder or fairseq .pt) a \
             new CTC head; an exported model already has one",
            model_path.display()
        );
    }
    if checkpoint {
        // A Hugging Face folder or fairseq checkpoint: export it at fp32 into the output folder
        // first, so the run (and `--resume`) starts from a file whose hash goes into the lineage.
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("{}: cannot create folder", args.output.display()))?;
        let base = args.output.join(BASE_MODEL_FILE);
        let options = w2v_export::ExportOptions {
            new_head: args.vocab.clone().map(|vocab| w2v_export::NewHead {
                vocab,
                seed: args.seed,
            }),
            ..Default::default()
        };
        let summary = w2v_export::export(&model_path, &base, &options)?;
        tracing::info!(
            "exported {} to {} ({} parameters)",
            model_path.display(),
            base.display(),
            summary.parameters
        );
        model_path = base;
    }
    let bytes = std::fs::read(&model_path)
        .with_context(|| format!("{}: cannot read model", model_path.display()))?;
    let info = ModelInfo::read(&model_path)?;
    if info.precision != w2v_engine::Precision::Fp32.as_str() {
        bail!(
            "{}: a {} model; fine-tuning needs fp32 weights (export with --precision fp32, \
             fine-tune, then re-quantize)",
            model_path.display(),
            info.precision
        );
    }
    let model = ModelProto::decode(bytes.as_slice())
        .with_context(|| format!("{}: not an ONNX model", model_path.display()))?;
    let mut bar = None;
    let LoadedExamples {
        examples,
        unreadable,
        too_short,
    } = load_examples(&args.data, &info, args.strict, &mut |done, rows| {
        bar.get_or_insert_with(|| progress_bar(rows as u64, "reading audio"))
            .set_position(done as u64)
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let data_hash = w2v_engine::fs::sha256_hex(&std::fs::read(&args.data)?);
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create folder", args.output.display()))?;
    let ckpt_path = args.output.join(CHECKPOINT_FILE);

    let eval_set = match &args.eval {
        Some(p) => Some(load_eval(p, &info)?),
        None => None,
    };
    let masking = if args.no_masking {
        Masking::NONE
    } else {
        let config = info
            .model_config()
            .with_context(|| format!("{}: model description", model_path.display()))?;
        let from = Masking::from_config(&config);
        Masking {
            time_prob: args.mask_time_prob.unwrap_or(from.time_prob),
            time_length: args.mask_time_length.unwrap_or(from.time_length),
            channel_prob: args.mask_channel_prob.unwrap_or(from.channel_prob),
            channel_length: args.mask_channel_length.unwrap_or(from.channel_length),
        }
    };
    for (what, p) in [
        ("--mask-time-prob", masking.time_prob),
        ("--mask-channel-prob", masking.channel_prob),
        ("--layer-drop", args.layer_drop),
    ] {
        if !(0.0..1.0).contains(&p) {
            bail!("{what} {p}: must be at least 0 and below 1");
        }
    }
    if masking.is_active()
        && !model
            .metadata_props
            .iter()
            .any(|e| e.key == w2v_engine::model_info::keys::MASKED_SPEC_EMBED)
    {
        tracing::warn!(
            "{}: no masked_spec_embed in the model (exported by an older w2v?): time masks fill with zeros",
            model_path.display()
        );
    }
    let config = TrainerConfig {
        steps: args.steps,
        lr: args.lr,
        batch_seconds: args.batch_seconds,
        accumulation: args.accumulate,
        seed: args.seed,
        freeze_feature_encoder: !args.train_feature_encoder,
        freeze_transformer_steps: args.freeze_transformer_steps,
        masking,
        layer_drop: args.layer_drop,
        ..TrainerConfig::default()
    };
    let make = graph_runner_factory(&args.model.runtime())?;
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

    let eval_every = args.eval_every.unwrap_or(args.checkpoint_every).max(1);
    let mut eval_wer_before = None;
    let mut eval_wer = None;
    if let Some(set) = &eval_set {
        if trainer.state.step == 0 {
            let wer = word_error_rate(&mut trainer, set)?;
            eval_wer_before = Some(wer);
            report_eval(args.json, 0, wer, None);
        }
    }

    let bar = progress_bar(args.steps, "fine-tuning");
    bar.set_position(trainer.state.step);
    let (mut first_loss, mut final_loss) = (None, None);
    while trainer.state.step < args.steps {
        let t0 = Instant::now();
        let r = trainer.step(&examples)?;
        let seconds = t0.elapsed().as_secs_f64();
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
                seconds,
            };
            bar.suspend(|| println!("{}", serde_json::to_string(&line).unwrap_or_default()));
        }
        if let Some(set) = &eval_set {
            if r.step % eval_every == 0 || r.step == args.steps {
                let wer = word_error_rate(&mut trainer, set)?;
                eval_wer = Some(wer);
                report_eval(args.json, r.step, wer, Some(&bar));
            }
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
    lineage.insert(
        keys::FINETUNE_BASE_SHA256.into(),
        w2v_engine::fs::sha256_hex(&bytes),
    );
    lineage.insert(keys::FINETUNE_DATA_SHA256.into(), data_hash);
    lineage.insert(keys::FINETUNE_STEPS.into(), args.steps.to_string());
    if let (Some(wer), Some(p)) = (eval_wer, &args.eval) {
        lineage.insert(keys::FINETUNE_EVAL_WER.into(), format!("{wer:.6}"));
        lineage.insert(
            keys::FINETUNE_EVAL_DATA_SHA256.into(),
            w2v_engine::fs::sha256_hex(&std::fs::read(p)?),
        );
    }
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
        eval_wer_before,
        eval_wer,
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

/// One evaluation result: a JSON line with --json, else a line above the progress bar.
fn report_eval(json: bool, step: u64, wer: f64, bar: Option<&indicatif::ProgressBar>) {
    let line = if json {
        serde_json::to_string(&EvalLine {
            step,
            eval_wer: wer,
        })
        .unwrap_or_default()
    } else {
        format!("step {step}: eval WER {:.2} %", 100.0 * wer)
    };
    match bar {
        Some(b) => b.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
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
