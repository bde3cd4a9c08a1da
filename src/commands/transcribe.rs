use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use w2v::{Options, Recognizer, Transcript};

use super::decoder::DecoderArgs;
use super::model::ModelArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The transcript, one line per file (prefixed by the file name when there are several).
    Text,
    /// One JSON object per file and line: text, words with times and confidence, timing.
    Json,
    /// SubRip subtitles.
    Srt,
}

#[derive(clap::Args)]
pub struct Args {
    /// Audio files (WAV, FLAC, MP3, OGG/Vorbis; any sample rate and channel count).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Window length for long audio, in seconds.
    #[arg(long, default_value_t = 30.0)]
    chunk_seconds: f64,
    /// Only output words from this list (separated by spaces or newlines, `#` comments): the
    /// best-scoring sequence of them, instead of free spelling (lexicon-constrained decoding);
    /// with beam search (--decoder beam, --lm, --hotwords), a word trie with LM lookahead.
    #[arg(long, value_name = "WORDS.txt")]
    words: Option<PathBuf>,
    #[command(flatten)]
    decoder: DecoderArgs,
    /// Also save each file's logits as DIR/<file name>.npy (float32, [frames, vocab]), for
    /// `w2v decode`.
    #[arg(long, value_name = "DIR")]
    dump_logits: Option<PathBuf>,
}

/// The recognizer the flags describe: the model on its runtime, with the decoder loaded.
pub fn open_recognizer(
    model: &ModelArgs,
    decoder: &DecoderArgs,
    words: Option<&Path>,
    chunk_seconds: f64,
) -> Result<Recognizer> {
    let options = Options {
        runtime: model.runtime(),
        decoder: decoder.options(words),
        chunk_seconds,
    };
    Ok(Recognizer::open(model.path()?, &options)?)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    file: &'a Path,
    #[serde(flatten)]
    transcript: &'a Transcript,
}

pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if len < 2 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Whether a file's error is the model's (it cannot be loaded or run at all: tract builds its
/// plan per input length, so a model it cannot load fails at the first file, not at open), which
/// stops a multi-file run instead of failing every file the same way.
pub fn is_model_failure(e: &anyhow::Error) -> bool {
    e.downcast_ref::<w2v::Error>()
        .is_some_and(w2v::Error::is_model_failure)
}

/// [`Recognizer::transcribe_file`], saving the logits as `dir/<file name>.npy`.
fn transcribe_and_dump(r: &mut Recognizer, path: &Path, dir: &Path) -> Result<Transcript> {
    let (tr, logits) = r.transcribe_file_with_logits(path)?;
    let name = path.file_name().unwrap_or(path.as_os_str());
    let mut out_name = name.to_os_string();
    out_name.push(".npy");
    let out = dir.join(out_name);
    let bytes = w2v::engine::npy::encode_logits(logits.row(0), logits.frames, logits.vocab);
    w2v::engine::fs::atomic_write_bytes(&out, &bytes)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(tr)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut t = open_recognizer(
        &args.model,
        &args.decoder,
        args.words.as_deref(),
        args.chunk_seconds,
    )?;
    if let Some(dir) = &args.dump_logits {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    }
    let bar = progress_bar(args.files.len() as u64, "transcribing");
    let many = args.files.len() > 1;
    let mut failures = Vec::new();
    let stdout = std::io::stdout();
    for path in &args.files {
        let result = match &args.dump_logits {
            Some(dir) => transcribe_and_dump(&mut t, path, dir),
            None => t.transcribe_file(path).map_err(anyhow::Error::from),
        };
        match result {
            Ok(tr) => {
                let mut out = stdout.lock();
                match args.format {
                    Format::Text if many => writeln!(out, "{}: {}", path.display(), tr.text)?,
                    Format::Text => writeln!(out, "{}", tr.text)?,
                    Format::Json => writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&JsonLine {
                            file: path,
                            transcript: &tr
                        })?
                    )?,
                    Format::Srt => write!(out, "{}", w2v::subtitles::srt(&tr.words))?,
                }
            }
            Err(e) if is_model_failure(&e) => return Err(e),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e:#}"));
                failures.push(path.clone());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} of {} files failed: {}",
        failures.len(),
        args.files.len(),
        failures
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::FAILURE)
}
