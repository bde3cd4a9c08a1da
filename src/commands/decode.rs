//! `w2v decode`: decode saved log-probabilities (`.npy`), as `transcribe --dump-logits` writes
//! them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use w2v_engine::beam::Hypothesis;
use w2v_engine::ctc::{greedy_decode, Transcript, Vocabulary};
use w2v_engine::npy::read_logits;
use w2v_engine::ModelInfo;

use super::decoder::DecoderArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Float32 .npy logits or log-probabilities, [frames, vocab] or [1, frames, vocab].
    #[arg(long = "logits", value_name = "A.npy", required = true)]
    logits: Vec<PathBuf>,
    /// The vocabulary: a model made by `w2v export` (.onnx) or a Hugging Face vocab.json.
    #[arg(long, value_name = "MODEL.onnx|vocab.json")]
    vocab: PathBuf,
    #[command(flatten)]
    decoder: DecoderArgs,
    /// Hypotheses per input (beam search; with --json they are listed under "nbest").
    #[arg(long, default_value_t = 1)]
    nbest: usize,
    /// Seconds per logits frame for word times (default: the model's, 0.02 for vocab.json).
    #[arg(long)]
    frame_seconds: Option<f64>,
    /// One JSON object per input: file, text, words (times, confidence), nbest.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    file: &'a Path,
    text: &'a str,
    words: &'a [w2v_engine::ctc::Word],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nbest: Vec<Alternative<'a>>,
}

#[derive(Serialize)]
struct Alternative<'a> {
    text: &'a str,
    score: f64,
    logit_score: f64,
}

/// The vocabulary and frame duration of `--vocab`.
fn vocabulary(path: &Path) -> Result<(Vocabulary, f64)> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let vocab = Vocabulary::from_vocab_json_file(path).map_err(anyhow::Error::msg)?;
        Ok((vocab, 0.02))
    } else {
        let info = ModelInfo::read(path)?;
        Ok((Vocabulary::from_model_info(&info), info.seconds_per_frame()))
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (vocab, model_spf) = vocabulary(&args.vocab)?;
    let spf = args.frame_seconds.unwrap_or(model_spf);
    if !(spf.is_finite() && spf > 0.0) {
        bail!("--frame-seconds must be a positive number");
    }
    let beam = args.decoder.options(None).beam_setup(&vocab, args.nbest)?;
    let stdout = std::io::stdout();
    for path in &args.logits {
        let logits = read_logits(path)?;
        if logits.vocab != vocab.len() {
            bail!(
                "{}: logits have {} columns, the vocabulary ({}) has {} tokens",
                path.display(),
                logits.vocab,
                args.vocab.display(),
                vocab.len()
            );
        }
        if let Some(i) = logits.data.iter().position(|x| x.is_nan()) {
            bail!(
                "{}: NaN logit at frame {}, token {}",
                path.display(),
                i / logits.vocab,
                i % logits.vocab
            );
        }
        let hyps: Vec<Hypothesis> = match &beam {
            Some(b) => b.decode(&vocab, &logits.data, spf, 0.0),
            None => vec![Hypothesis {
                transcript: greedy_decode(&logits.data, &vocab, spf, 0.0),
                score: 0.0,
                logit_score: 0.0,
            }],
        };
        let best: &Transcript = &hyps[0].transcript;
        let mut out = stdout.lock();
        if args.json {
            let line = Line {
                file: path,
                text: &best.text,
                words: &best.words,
                nbest: if beam.is_some() {
                    hyps.iter()
                        .map(|h| Alternative {
                            text: &h.transcript.text,
                            score: h.score,
                            logit_score: h.logit_score,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            };
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        } else {
            writeln!(out, "{}", best.text).context("writing stdout")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
