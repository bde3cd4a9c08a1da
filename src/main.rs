//! The `w2v` command line: argument parsing and wiring only. The work lives in the crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(
    name = "w2v",
    version,
    about = "Offline wav2vec 2.0 speech recognition for edge devices"
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export a Hugging Face Wav2Vec2ForCTC folder to a self-describing ONNX model.
    Export(commands::export::Args),
    /// Print the metadata of a w2v ONNX model.
    Inspect(commands::inspect::Args),
    /// Transcribe audio files.
    Transcribe(commands::transcribe::Args),
    /// Word and character error rates on a labelled data set.
    Eval(commands::eval::Args),
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("W2V_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Export(a) => commands::export::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Transcribe(a) => commands::transcribe::run(a),
        Command::Eval(a) => commands::eval::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the whole cause chain, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
