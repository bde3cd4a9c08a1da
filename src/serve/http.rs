//! The HTTP side: OpenAI-style transcriptions, models, health, metrics, and the WebSocket
//! stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use super::pool::JobError;
use super::{pcm_to_mono, Shared};
use crate::error::{Error, Result};
use crate::{ListenEvent, Transcript};

/// Serve HTTP on `listener` until `stop` turns true; in-flight requests finish.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let limit = shared.options.max_upload_bytes;
    let sessions = Arc::new(tokio::sync::RwLock::new(()));
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/listen", get(listen))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(AppState {
            shared: shared.clone(),
            stop: stop.clone(),
            sessions: sessions.clone(),
        });
    let mut stop = stop;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { super::stopped(&mut stop).await })
        .await
        .map_err(|e| Error::invalid(format!("HTTP server failed: {e}")))?;
    // Upgraded connections are not axum's to wait for: the WebSocket streams send their final
    // result (they end their audio at the stop signal) before the server exits.
    let grace = shared.options.request_timeout;
    if tokio::time::timeout(grace, sessions.write()).await.is_err() {
        tracing::warn!(
            "WebSocket streams still open after {} s: closing them",
            grace.as_secs_f64()
        );
    }
    Ok(())
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    /// Each open WebSocket stream holds a read lock; shutdown takes the write lock.
    sessions: Arc<tokio::sync::RwLock<()>>,
}

/// An error answer in OpenAI's shape: `{"error": {"message", "type", "code"}}`.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": null,
                "code": self.status.as_u16(),
            }})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Busy(b) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                b.to_string(),
            ),
            JobError::Failed(m) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", m)
            }
        }
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "upload larger than the server's limit (--max-upload-bytes)",
        );
    }
    ApiError::bad_request(format!("malformed multipart upload: {}", e.body_text()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(s: &str) -> std::result::Result<Self, ApiError> {
        Ok(match s.trim() {
            "json" | "" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            "verbose_json" => ResponseFormat::VerboseJson,
            other => {
                return Err(ApiError::bad_request(format!(
                    "response_format {other:?}: expected json, text, srt, vtt or verbose_json"
                )))
            }
        })
    }
}

/// The fields of a transcription request.
struct Upload {
    name: String,
    bytes: Bytes,
    format: ResponseFormat,
    /// `prompt`: phrases to favour (hotwords), separated by commas, semicolons, periods or
    /// newlines.
    prompt: Vec<String>,
}

async fn read_upload(multipart: Multipart) -> std::result::Result<Upload, ApiError> {
    let mut multipart = multipart;
    let mut file = None;
    let mut format = ResponseFormat::Json;
    let mut prompt = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let name = field.file_name().unwrap_or("upload").to_string();
                let bytes = field.bytes().await.map_err(multipart_error)?;
                file = Some((name, bytes));
            }
            "response_format" => {
                format = ResponseFormat::parse(&field.text().await.map_err(multipart_error)?)?
            }
            "prompt" => {
                let text = field.text().await.map_err(multipart_error)?;
                prompt = text
                    .split([',', ';', '.', '\n'])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            // model, language, temperature, timestamp_granularities[]: accepted; the server has
            // one model and one language, and word times are always computed.
            _ => {
                field.bytes().await.map_err(multipart_error)?;
            }
        }
    }
    let (name, bytes) =
        file.ok_or_else(|| ApiError::bad_request("no `file` field in the upload"))?;
    Ok(Upload {
        name,
        bytes,
        format,
        prompt,
    })
}

async fn transcriptions(
    State(app): State<AppState>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Response {
    let t0 = Instant::now();
    let s = app.shared.clone();
    let deadline = s.options.request_timeout;
    let answer = tokio::time::timeout(deadline, async {
        let multipart = multipart.map_err(|e| {
            ApiError::new(
                e.status(),
                "invalid_request_error",
                format!("expected a multipart/form-data upload: {}", e.body_text()),
            )
        })?;
        let upload = read_upload(multipart).await?;
        transcribe_upload(&s, upload).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than the server's {} s deadline",
                deadline.as_secs_f64()
            ),
        ))
    });
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::SERVICE_UNAVAILABLE {
                s.metrics.busy();
            }
            tracing::info!(status = e.status.as_u16(), "{}", e.message);
            e.into_response()
        }
    };
    s.metrics.request(
        "transcriptions",
        response.status().as_u16(),
        t0.elapsed().as_secs_f64(),
    );
    response
}

async fn transcribe_upload(
    s: &Arc<Shared>,
    upload: Upload,
) -> std::result::Result<Response, ApiError> {
    let max_seconds = s.options.max_audio_seconds;
    let Upload {
        name,
        bytes,
        format,
        prompt,
    } = upload;
    let result = s
        .pool
        .run(move |r| -> std::result::Result<Transcript, ApiError> {
            let rate = r.sample_rate();
            let samples = crate::engine::audio::load_bytes(bytes.to_vec(), &name, rate)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let seconds = samples.len() as f64 / f64::from(rate);
            if seconds > max_seconds {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!(
                        "{name}: {seconds:.1} s of audio; the server takes at most {max_seconds} s \
                         (--max-audio-seconds)"
                    ),
                ));
            }
            let phrases: Vec<&str> = prompt.iter().map(String::as_str).collect();
            r.transcribe_with_hotwords(&samples, rate, &phrases)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        e.to_string(),
                    )
                })
        })
        .await??;
    s.metrics
        .transcribed(result.duration, result.compute_seconds);
    Ok(render(&result, format, &s.options.language))
}

fn render(t: &Transcript, format: ResponseFormat, language: &str) -> Response {
    let text = |body: String| {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    };
    match format {
        ResponseFormat::Json => Json(json!({ "text": t.text })).into_response(),
        ResponseFormat::Text => text(format!("{}\n", t.text)),
        ResponseFormat::Srt => text(crate::subtitles::srt(&t.words)),
        ResponseFormat::Vtt => text(crate::subtitles::vtt(&t.words)),
        ResponseFormat::VerboseJson => {
            let words: Vec<_> = t
                .words
                .iter()
                .map(|w| {
                    json!({"word": w.text, "start": w.start, "end": w.end, "probability": w.confidence})
                })
                .collect();
            let segments: Vec<_> = crate::subtitles::cues(&t.words)
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({"id": i, "seek": 0, "start": c.start, "end": c.end, "text": c.text,
                           "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
                           "compression_ratio": 0.0, "no_speech_prob": 0.0})
                })
                .collect();
            Json(json!({
                "task": "transcribe",
                "language": language,
                "duration": t.duration,
                "text": t.text,
                "words": words,
                "segments": segments,
            }))
            .into_response()
        }
    }
}

async fn models(State(app): State<AppState>) -> Response {
    let s = &app.shared;
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "w2v",
        }],
    }))
    .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    let s = &app.shared;
    Json(json!({
        "status": "ok",
        "model": s.model_name,
        "backend": s.backend,
        "sample_rate": s.sample_rate,
        "in_flight": s.pool.admitted(),
        "max_concurrent": s.pool.max_concurrent(),
    }))
    .into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    let s = &app.shared;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(s.pool.admitted(), s.pool.max_concurrent()),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such endpoint: POST /v1/audio/transcriptions, GET /v1/models, /v1/listen \
         (WebSocket), /health, /metrics",
    )
    .into_response()
}

/// What the stream's worker sends to the socket.
enum Outgoing {
    Event(ListenEvent),
    Final(String),
    Error(&'static str, String),
}

/// `GET /v1/listen?rate=16000`: a WebSocket. The client sends binary messages of 16-bit
/// little-endian mono PCM at `rate` and a text message `{"type": "stop"}` (or a close) at the
/// end; the server sends `{"type": "event", ...}` per utterance as the voice-activity detector
/// closes it (with `--commands`, accepted commands and rejections), then `{"type": "final",
/// "text": ...}`, or `{"type": "error", "code", "message"}`, and closes.
async fn listen(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let rate = match query.get("rate").map(|r| r.parse::<u32>()) {
        None => 16_000,
        Some(Ok(r)) if (1_000..=192_000).contains(&r) => r,
        Some(_) => {
            return ApiError::bad_request("rate: expected a sample rate in Hz (1000 to 192000)")
                .into_response()
        }
    };
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            let _open = app.sessions.clone().read_owned().await;
            let t0 = Instant::now();
            let outcome = ws_session(socket, app.shared.clone(), rate, app.stop).await;
            app.shared
                .metrics
                .request("listen", outcome, t0.elapsed().as_secs_f64());
        })
}

async fn send_json(socket: &mut WebSocket, value: serde_json::Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

/// One WebSocket stream; returns its outcome for the metrics.
async fn ws_session(
    mut socket: WebSocket,
    s: Arc<Shared>,
    rate: u32,
    mut stop: watch::Receiver<bool>,
) -> &'static str {
    let waited = tokio::time::timeout(s.options.request_timeout, s.pool.lease()).await;
    let lease = match waited {
        Ok(Ok(l)) => l,
        Err(_) => {
            send_json(
                &mut socket,
                json!({"type": "error", "code": "timeout",
                       "message": "no recognizer became free within the server's deadline"}),
            )
            .await;
            close(&mut socket, 1013, "timeout").await;
            return "timeout";
        }
        Ok(Err(busy)) => {
            s.metrics.busy();
            send_json(
                &mut socket,
                json!({"type": "error", "code": "busy", "message": busy.to_string()}),
            )
            .await;
            close(&mut socket, 1013, "busy").await;
            return "busy";
        }
    };
    let (audio_tx, mut audio_rx) = tokio::sync::mpsc::channel::<Vec<f32>>(32);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Outgoing>(32);
    let options = s.options.stream.clone();
    let max_samples = s.max_samples(rate);
    let max_seconds = s.options.max_audio_seconds;
    tokio::task::spawn_blocking(move || {
        let mut lease = lease;
        let mut stream = match lease.recognizer().stream(&options) {
            Ok(st) => st,
            Err(e) => {
                let _ = out_tx.blocking_send(Outgoing::Error("server_error", e.to_string()));
                return;
            }
        };
        let mut total = 0;
        // Until the socket side drops its sender: the end of the audio or a vanished client.
        while let Some(samples) = audio_rx.blocking_recv() {
            total += samples.len();
            if total > max_samples {
                let _ = out_tx.blocking_send(Outgoing::Error(
                    "too_long",
                    format!("the stream is longer than {max_seconds} s (--max-audio-seconds)"),
                ));
                return;
            }
            match stream.accept_waveform(rate, &samples) {
                Ok(events) => {
                    for e in events {
                        if out_tx.blocking_send(Outgoing::Event(e.clone())).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = out_tx.blocking_send(Outgoing::Error("server_error", e.to_string()));
                    return;
                }
            }
        }
        match stream.flush() {
            Ok(events) => {
                for e in events {
                    let _ = out_tx.blocking_send(Outgoing::Event(e.clone()));
                }
            }
            Err(e) => {
                let _ = out_tx.blocking_send(Outgoing::Error("server_error", e.to_string()));
                return;
            }
        }
        let _ = out_tx.blocking_send(Outgoing::Final(stream.result().text));
    });

    let idle = s.options.idle_timeout;
    let mut audio_tx = Some(audio_tx);
    loop {
        tokio::select! {
            incoming = tokio::time::timeout(idle, socket.recv()), if audio_tx.is_some() => {
                match incoming {
                    Err(_) => {
                        send_json(&mut socket, json!({"type": "error", "code": "idle",
                            "message": format!("no audio for {} s", idle.as_secs_f64())})).await;
                        close(&mut socket, 1000, "idle").await;
                        return "idle";
                    }
                    // The client went away: dropping the sender ends the worker.
                    Ok(None) | Ok(Some(Err(_))) => return "disconnected",
                    Ok(Some(Ok(Message::Binary(bytes)))) => {
                        let Some(samples) = pcm_to_mono(&bytes, 2, 1) else {
                            send_json(&mut socket, json!({"type": "error", "code": "bad_audio",
                                "message": "binary messages must be whole 16-bit little-endian samples"})).await;
                            close(&mut socket, 1003, "bad audio").await;
                            return "bad_audio";
                        };
                        if let Some(tx) = &audio_tx {
                            if tx.send(samples).await.is_err() {
                                // The worker stopped (an error it is about to report).
                                audio_tx = None;
                            }
                        }
                    }
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let stop_message = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                            .is_some_and(|t| t == "stop" || t == "end");
                        if stop_message {
                            audio_tx = None;
                        } else {
                            send_json(&mut socket, json!({"type": "error", "code": "bad_message",
                                "message": "text messages: {\"type\": \"stop\"} ends the audio"})).await;
                        }
                    }
                    Ok(Some(Ok(Message::Close(_)))) => audio_tx = None,
                    Ok(Some(Ok(_))) => {} // ping and pong: axum answers pings
                }
            }
            out = out_rx.recv() => {
                match out {
                    Some(Outgoing::Event(e)) => {
                        let mut value = serde_json::to_value(&e).unwrap_or_default();
                        value["type"] = json!("event");
                        if !send_json(&mut socket, value).await {
                            return "disconnected";
                        }
                    }
                    Some(Outgoing::Final(text)) => {
                        send_json(&mut socket, json!({"type": "final", "text": text})).await;
                        close(&mut socket, 1000, "done").await;
                        return "ok";
                    }
                    Some(Outgoing::Error(code, message)) => {
                        send_json(&mut socket, json!({"type": "error", "code": code, "message": message})).await;
                        close(&mut socket, 1011, code).await;
                        return "error";
                    }
                    None => return "error",
                }
            }
            _ = super::stopped(&mut stop), if audio_tx.is_some() => {
                // Shutting down: end the audio here and send what was heard.
                audio_tx = None;
            }
        }
    }
}
