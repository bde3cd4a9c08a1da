//! `w2v lm build`: estimate an n-gram language model (modified Kneser-Ney) from a text corpus.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use w2v::engine::lm::build_arpa;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LmCommand,
}

#[derive(clap::Subcommand)]
enum LmCommand {
    /// Estimate an ARPA n-gram LM from text, one sentence per line (interpolated modified
    /// Kneser-Ney, as KenLM's lmplz), for `--lm`.
    Build(BuildArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The corpus: UTF-8 text, one sentence per line, words separated by spaces.
    corpus: PathBuf,
    /// The ARPA file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// The n-gram order.
    #[arg(long, default_value_t = 3)]
    order: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let LmCommand::Build(args) = args.command;
    let text = std::fs::read(&args.corpus)
        .with_context(|| format!("{}: cannot read the corpus", args.corpus.display()))?;
    let text = String::from_utf8(text)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", args.corpus.display()))?;
    let (arpa, summary) =
        build_arpa(&text, args.order).with_context(|| args.corpus.display().to_string())?;
    w2v::engine::fs::atomic_write_bytes(&args.output, arpa.as_bytes())
        .with_context(|| format!("{}: cannot write", args.output.display()))?;
    if !summary.fallback_orders.is_empty() {
        tracing::warn!(
            "{}: too little text to estimate the discounts of order(s) {:?}: used lmplz's \
             fallback (0.5, 1, 1.5)",
            args.corpus.display(),
            summary.fallback_orders
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{}: order {}, {} sentences, {} words, vocabulary {}, n-grams {:?}",
            args.output.display(),
            summary.order,
            summary.sentences,
            summary.tokens,
            summary.vocabulary,
            summary.ngrams
        );
    }
    Ok(ExitCode::SUCCESS)
}
