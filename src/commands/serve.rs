//! `w2v serve`: the recognizer over HTTP (OpenAI-style transcriptions, a WebSocket stream,
//! Prometheus metrics) and the Wyoming protocol.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use w2v::serve::{serve, shutdown_signal, ServeOptions};
use w2v::{Options, StreamOptions};

use super::decoder::DecoderArgs;
use super::model::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// HTTP address: POST /v1/audio/transcriptions, GET /v1/models, /health, /metrics, and the
    /// /v1/listen WebSocket (e.g. 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Wyoming address for Home Assistant (e.g. 0.0.0.0:10300).
    #[arg(long, value_name = "ADDR")]
    wyoming: Option<SocketAddr>,
    /// Recognizers, i.e. requests transcribed at once [default: the number of cores].
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Requests that may wait for a recognizer; more are answered "busy" (HTTP 503).
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Longest audio per request or stream, in seconds.
    #[arg(long, default_value_t = 300.0)]
    max_audio_seconds: f64,
    /// Largest upload, in megabytes.
    #[arg(long, default_value_t = 50)]
    max_upload_mb: usize,
    /// Deadline of one request, from arrival to answer, in seconds.
    #[arg(long, default_value_t = 120.0)]
    request_timeout: f64,
    /// Streams (WebSocket, Wyoming) silent for this long are closed, in seconds.
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
    /// Command grammar for WebSocket streams (as `w2v listen --commands`).
    #[arg(long)]
    commands: Option<PathBuf>,
    /// Only output words from this list (as `w2v transcribe --words`).
    #[arg(long, value_name = "WORDS.txt")]
    words: Option<PathBuf>,
    #[command(flatten)]
    decoder: DecoderArgs,
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{what} {s}: expected a positive number of seconds"))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut options = ServeOptions::new(args.model.path()?);
    options.recognizer = Options {
        runtime: args.model.runtime(),
        decoder: args.decoder.options(args.words.as_deref()),
        ..Options::default()
    };
    options.http = args.http;
    options.wyoming = args.wyoming;
    if let Some(n) = args.max_concurrent {
        options.max_concurrent = n;
    }
    options.max_queue = args.max_queue;
    options.max_audio_seconds = args.max_audio_seconds;
    options.max_upload_bytes = args.max_upload_mb.saturating_mul(1 << 20);
    options.request_timeout = seconds("request-timeout", args.request_timeout)?;
    options.idle_timeout = seconds("idle-timeout", args.idle_timeout)?;
    options.stream = StreamOptions {
        commands: args.commands,
        ..StreamOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        options,
        |bound| {
            // One JSON line on stdout with the addresses (ports resolved), for scripts.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(bound).unwrap_or_default());
            let _ = out.flush();
        },
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
