//! The `w2v` command line: argument parsing and wiring only. The work lives in the crates.

use std::io::IsTerminal;
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
    /// Export a Hugging Face Wav2Vec2ForCTC folder or a fairseq wav2vec 2.0 CTC checkpoint to a
    /// self-describing ONNX model.
    Export(commands::export::Args),
    /// Print the metadata of a w2v ONNX model.
    Inspect(commands::inspect::Args),
    /// Transcribe audio files.
    Transcribe(commands::transcribe::Args),
    /// Decode saved logits (.npy): greedy or beam search with an n-gram LM and hotwords.
    Decode(commands::decode::Args),
    /// Language models: `w2v lm build CORPUS.txt -o LM.arpa` (modified Kneser-Ney).
    Lm(commands::lm::Args),
    /// Word and character error rates on a labelled data set.
    Eval(commands::eval::Args),
    /// Fine-tune an fp32 model on labelled audio (CTC), on this device.
    Finetune(commands::finetune::Args),
    /// Time a model: load, first inference, compute per input length, memory, GFLOP/s.
    Bench(commands::bench::Args),
    /// Voice commands (or free transcripts) from a microphone or a file, utterance by utterance.
    Listen(commands::listen::Args),
    /// Report the platform, ONNX Runtime and its execution providers, audio input, default model.
    Doctor(commands::doctor::Args),
    /// Serve the model over HTTP (OpenAI-style transcriptions, WebSocket streaming, metrics) and
    /// the Wyoming protocol (Home Assistant).
    #[cfg(feature = "serve")]
    Serve(commands::serve::Args),
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // Quiet by default: our own warnings only. Libraries (symphonia, ort) report failures that
    // reach the user as our one-line errors anyway; `-v` shows everything.
    let default = if verbose == 0 {
        "off,w2v=warn,w2v_engine=warn,w2v_export=warn,w2v_train=warn,w2v_board_support=warn"
    } else {
        level
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("W2V_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// One line: the error and each cause not already spelled out by the message before it (our
/// error types include their cause in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`w2v transcribe ... | head`) like other Unix tools, instead
    // of panicking in println!.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Export(a) => commands::export::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Transcribe(a) => commands::transcribe::run(a),
        Command::Decode(a) => commands::decode::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Lm(a) => commands::lm::run(a),
        Command::Finetune(a) => commands::finetune::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Doctor(a) => commands::doctor::run(a),
        Command::Listen(a) => commands::listen::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => commands::serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
