//! `w2v serve`: the recognizer over the network.
//!
//! - HTTP ([`http`]): `POST /v1/audio/transcriptions` as OpenAI's API (multipart `file`,
//!   `response_format` json, text, srt, vtt or verbose_json with word times), `GET /v1/models`,
//!   `GET /health`, `GET /metrics` (Prometheus), and `GET /v1/listen`, a WebSocket that takes
//!   16-bit PCM and sends each utterance's event (transcript, or command with a grammar) as JSON.
//! - Wyoming ([`wyoming`]): Home Assistant's protocol for speech-to-text services over TCP
//!   (`describe` -> `info`; `transcribe`, `audio-start`, `audio-chunk`..., `audio-stop` ->
//!   `transcript`).
//!
//! Every job runs on one of `max_concurrent` recognizers opened at start ([`pool`]); up to
//! `max_queue` more wait, and anything beyond is answered "busy" at once, so memory stays
//! bounded under any load. Uploads and audio are limited in size and duration, each request has a
//! deadline, and a shutdown signal (SIGINT, SIGTERM) stops accepting and lets in-flight requests
//! finish.

pub mod http;
pub mod metrics;
pub mod pool;
pub mod wyoming;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::{Options, Recognizer, StreamOptions};
use metrics::Metrics;
use pool::Pool;

/// What `w2v serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The model file.
    pub model: PathBuf,
    /// How each recognizer runs and decodes.
    pub recognizer: Options,
    /// HTTP (and WebSocket) address, e.g. `127.0.0.1:8080` (port 0: any free port).
    pub http: Option<SocketAddr>,
    /// Wyoming TCP address, e.g. `0.0.0.0:10300`.
    pub wyoming: Option<SocketAddr>,
    /// Recognizers, i.e. jobs that run at once.
    pub max_concurrent: usize,
    /// Jobs that may wait for a recognizer; more are answered "busy".
    pub max_queue: usize,
    /// Longest audio accepted per request or stream, in seconds.
    pub max_audio_seconds: f64,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: usize,
    /// Deadline of one request, from arrival to answer (queueing included).
    pub request_timeout: Duration,
    /// A stream (WebSocket, Wyoming) that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// How WebSocket streams cut and decide utterances (a command grammar, VAD settings).
    pub stream: StreamOptions,
    /// The language reported to clients.
    pub language: String,
}

impl ServeOptions {
    /// The defaults of `w2v serve` for `model`.
    pub fn new(model: PathBuf) -> Self {
        ServeOptions {
            model,
            recognizer: Options::default(),
            http: None,
            wyoming: None,
            max_concurrent: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_queue: 64,
            max_audio_seconds: 300.0,
            max_upload_bytes: 50 << 20,
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(30),
            stream: StreamOptions::default(),
            language: "en".into(),
        }
    }
}

/// The addresses the server listens on (port 0 resolved).
#[derive(Clone, Debug, Serialize)]
pub struct Bound {
    pub http: Option<SocketAddr>,
    pub wyoming: Option<SocketAddr>,
}

/// What every connection shares.
pub(crate) struct Shared {
    pub pool: Arc<Pool>,
    pub metrics: Metrics,
    pub options: ServeOptions,
    /// The model's name for clients (`w2v-<file stem>`).
    pub model_name: String,
    pub sample_rate: u32,
    pub backend: &'static str,
}

impl Shared {
    /// Longest audio accepted, in samples at `rate`.
    pub fn max_samples(&self, rate: u32) -> usize {
        (self.options.max_audio_seconds * f64::from(rate)) as usize
    }
}

/// Open `max_concurrent` recognizers, bind the listeners, call `ready` with the addresses, and
/// serve until `shutdown` resolves; then stop accepting and let in-flight requests finish (up to
/// `request_timeout`).
///
/// ```no_run
/// use w2v::serve::{serve, shutdown_signal, ServeOptions};
///
/// # async fn run() -> Result<(), w2v::Error> {
/// let mut options = ServeOptions::new(w2v::resolve_model(None)?);
/// options.http = Some("127.0.0.1:8080".parse().unwrap());
/// options.wyoming = Some("0.0.0.0:10300".parse().unwrap());
/// serve(options, |bound| println!("listening on {bound:?}"), shutdown_signal()).await
/// # }
/// ```
pub async fn serve(
    options: ServeOptions,
    ready: impl FnOnce(&Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if options.http.is_none() && options.wyoming.is_none() {
        return Err(Error::invalid(
            "nothing to serve: give --http ADDR, --wyoming ADDR or both",
        ));
    }
    if options.max_concurrent == 0 {
        return Err(Error::invalid("--max-concurrent must be at least 1"));
    }
    if !(options.max_audio_seconds.is_finite() && options.max_audio_seconds > 0.0) {
        return Err(Error::invalid(
            "--max-audio-seconds must be a positive number",
        ));
    }
    let mut recognizer = options.recognizer.clone();
    if recognizer.runtime.threads.is_none() {
        // Share the cores between the recognizers instead of each taking them all.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        recognizer.runtime.threads = Some((cores / options.max_concurrent).max(1));
    }
    let mut recognizers = Vec::with_capacity(options.max_concurrent);
    for _ in 0..options.max_concurrent {
        let mut r = Recognizer::open(&options.model, &recognizer)?;
        // The first inference pays for plan compilation and arenas: not a client's request.
        r.transcribe(&vec![0.0; r.sample_rate() as usize], r.sample_rate())?;
        recognizers.push(r);
    }
    // A grammar that does not load is an error now, not at the first WebSocket client.
    if options.stream.commands.is_some() {
        recognizers[0].stream(&options.stream)?;
    }
    let first = &recognizers[0];
    let model_name = format!(
        "w2v-{}",
        options
            .model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy())
    );
    let shared = Arc::new(Shared {
        sample_rate: first.sample_rate(),
        backend: first.backend_name(),
        pool: Pool::new(recognizers, options.max_queue),
        metrics: Metrics::default(),
        model_name,
        options,
    });

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen on {addr}: {e}")))
    };
    let http_listener = match shared.options.http {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let wyoming_listener = match shared.options.wyoming {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let bound = Bound {
        http: http_listener.as_ref().and_then(|l| l.local_addr().ok()),
        wyoming: wyoming_listener.as_ref().and_then(|l| l.local_addr().ok()),
    };
    tracing::info!(?bound, model = %shared.options.model.display(), "serving");
    ready(&bound);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = http_listener {
        tasks.spawn(http::run(l, shared.clone(), stop_rx.clone()));
    }
    if let Some(l) = wyoming_listener {
        tasks.spawn(wyoming::run(l, shared.clone(), stop_rx.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(Error::invalid(format!("server task failed: {e}"))),
        }
    }
    Ok(())
}

/// Resolves when the server is told to stop.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Wyoming's and the WebSocket's PCM (`width` 1, 2 or 4 bytes per little-endian integer sample,
/// `channels` interleaved) to mono floats. `None` for another width, or a payload that is not
/// whole frames.
pub(crate) fn pcm_to_mono(bytes: &[u8], width: usize, channels: usize) -> Option<Vec<f32>> {
    if !matches!(width, 1 | 2 | 4) {
        return None;
    }
    crate::engine::audio::integer_pcm_to_mono(bytes, width, channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_conversion() {
        let s16: Vec<u8> = [0i16, 16384, -32768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(pcm_to_mono(&s16, 2, 1), Some(vec![0.0, 0.5, -1.0]));
        // Stereo frames are averaged.
        assert_eq!(pcm_to_mono(&s16[..4], 2, 2), Some(vec![0.25]));
        assert_eq!(pcm_to_mono(&s16[..3], 2, 1), None);
        assert_eq!(pcm_to_mono(&s16, 3, 1), None);
        assert_eq!(pcm_to_mono(&s16, 2, 0), None);
        assert_eq!(pcm_to_mono(&[128, 0], 1, 1), Some(vec![0.0, -1.0]));
    }
}
