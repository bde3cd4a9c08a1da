use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use w2v::engine::manifest::read_manifest;
use w2v::engine::metrics::{char_errors, word_errors, EditCounts};

use super::decoder::DecoderArgs;
use super::model::ModelArgs;
use super::transcribe::{is_model_failure, open_recognizer, progress_bar};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// TSV of `path<TAB>transcript` rows (paths relative to the TSV; header and extra columns allowed).
    #[arg(long)]
    data: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Also print each utterance's reference and hypothesis.
    #[arg(long)]
    show: bool,
    /// Decode constrained to the words listed in this file, as `w2v transcribe --words`.
    #[arg(long, value_name = "WORDS.txt")]
    words: Option<PathBuf>,
    #[command(flatten)]
    decoder: DecoderArgs,
    /// Tune the beam search on this data instead: every --lm-weights x --word-scores setting
    /// (needs --lm), best first. The model runs once per utterance. Tune on dev, report on test.
    #[arg(long, requires = "lm")]
    tune: bool,
    /// With --tune: the LM weights tried.
    #[arg(long, value_delimiter = ',', default_values_t = w2v::tune::TuneOptions::default().lm_weights)]
    lm_weights: Vec<f64>,
    /// With --tune: the word scores tried.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, default_values_t = w2v::tune::TuneOptions::default().word_scores)]
    word_scores: Vec<f64>,
}

/// `--tune`: the grid's error rates, best first.
fn run_tune(args: &Args, rows: &[w2v::engine::manifest::Utterance]) -> Result<ExitCode> {
    let options = w2v::Options {
        runtime: args.model.runtime(),
        ..w2v::Options::default()
    };
    let mut recognizer = w2v::Recognizer::open(args.model.path()?, &options)?;
    let grid = w2v::tune::TuneOptions {
        lm_weights: args.lm_weights.clone(),
        word_scores: args.word_scores.clone(),
    };
    let mut bar = None;
    let report = w2v::tune::tune(
        &mut recognizer,
        rows,
        &args.decoder.options(None),
        &grid,
        &mut |done, total| {
            bar.get_or_insert_with(|| progress_bar(total as u64, "tuning"))
                .set_position(done as u64)
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "utterances: {} ({} failed); best first:",
            report.utterances, report.failed
        );
        println!("lm-weight  word-score  WER      CER");
        for p in &report.points {
            println!(
                "{:9}  {:10}  {:6.2}%  {:6.2}%",
                p.lm_weight,
                p.word_score,
                p.wer * 100.0,
                p.cer * 100.0
            );
        }
        if let Some(best) = report.points.first() {
            println!(
                "best: --lm-weight {} --word-score {}",
                best.lm_weight, best.word_score
            );
        }
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Serialize)]
struct Report {
    model: String,
    backend: &'static str,
    /// `greedy`, `lexicon` with `--words`, or `beam`.
    decoding: &'static str,
    /// The `--words` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    words_file: Option<String>,
    /// The `--lm` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    lm_file: Option<String>,
    utterances: usize,
    failed: usize,
    wer: f64,
    cer: f64,
    words: EditCounts,
    chars: EditCounts,
    audio_seconds: f64,
    compute_seconds: f64,
    real_time_factor: f64,
    wall_seconds: f64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let rows = read_manifest(&args.data)?;
    if args.tune {
        return run_tune(&args, &rows);
    }
    let mut t = open_recognizer(
        &args.model,
        &args.decoder,
        args.words.as_deref(),
        w2v::DEFAULT_CHUNK_SECONDS,
    )?;
    let start = Instant::now();
    let bar = progress_bar(rows.len() as u64, "evaluating");
    let (mut words, mut chars) = (EditCounts::default(), EditCounts::default());
    let (mut audio_s, mut compute_s, mut failed) = (0.0, 0.0, 0);
    for row in &rows {
        match t.transcribe_file(&row.path).map_err(anyhow::Error::from) {
            Ok(tr) => {
                words += word_errors(&row.transcript, &tr.text);
                chars += char_errors(&row.transcript, &tr.text);
                audio_s += tr.duration;
                compute_s += tr.compute_seconds;
                if args.show {
                    bar.suspend(|| {
                        println!(
                            "{}\n  ref: {}\n  hyp: {}",
                            row.path.display(),
                            row.transcript,
                            tr.text
                        )
                    });
                }
            }
            Err(e) if is_model_failure(&e) => return Err(e),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e:#}"));
                failed += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = Report {
        model: t.model_path().display().to_string(),
        backend: t.backend_name(),
        decoding: t.decoding(),
        words_file: args.words.as_ref().map(|p| p.display().to_string()),
        lm_file: args.decoder.lm.as_ref().map(|p| p.display().to_string()),
        utterances: rows.len() - failed,
        failed,
        wer: words.rate(),
        cer: chars.rate(),
        words,
        chars,
        audio_seconds: audio_s,
        compute_seconds: compute_s,
        real_time_factor: if audio_s > 0.0 {
            compute_s / audio_s
        } else {
            0.0
        },
        wall_seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "utterances: {} ({} failed)",
            report.utterances, report.failed
        );
        if let Some(file) = &report.words_file {
            println!("decoding: constrained to the words in {file}");
        }
        println!(
            "WER: {:.2}% ({} errors / {} words: {} sub, {} del, {} ins)",
            report.wer * 100.0,
            words.errors(),
            words.reference_len,
            words.substitutions,
            words.deletions,
            words.insertions
        );
        println!(
            "CER: {:.2}% ({} errors / {} chars)",
            report.cer * 100.0,
            chars.errors(),
            chars.reference_len
        );
        println!(
            "audio {:.1} s, compute {:.1} s, real-time factor {:.3}",
            report.audio_seconds, report.compute_seconds, report.real_time_factor
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
