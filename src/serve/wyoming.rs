//! The Wyoming protocol (Home Assistant's voice services) over TCP.
//!
//! An event is a JSON header line `{"type", "data"?, "data_length"?, "payload_length"?}`, then
//! `data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload. A
//! speech-to-text service answers `describe` with `info` (one ASR program and its model), and a
//! `transcribe`, `audio-start`, `audio-chunk`..., `audio-stop` sequence with `transcript`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::pool::JobError;
use super::{pcm_to_mono, Shared};
use crate::error::Result;

/// Longest header line accepted.
const MAX_HEADER: usize = 64 << 10;
/// Largest `data` block accepted.
const MAX_DATA: usize = 64 << 10;
/// Largest payload of one event (an audio chunk).
const MAX_PAYLOAD: usize = 4 << 20;
/// The protocol version we speak (the `wyoming` package's, whose events we follow).
const VERSION: &str = "1.5.3";

/// One event.
#[derive(Debug, Default, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

impl Event {
    pub fn new(kind: &str, data: Value) -> Self {
        Event {
            kind: kind.into(),
            data: match data {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            payload: Vec::new(),
        }
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = json!({"type": self.kind, "version": VERSION});
        let data = if self.data.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.data).unwrap_or_default()
        };
        if !data.is_empty() {
            header["data_length"] = json!(data.len());
        }
        if !self.payload.is_empty() {
            header["payload_length"] = json!(self.payload.len());
        }
        let mut out = header.to_string().into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&data);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Why a connection's input cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("header line longer than {MAX_HEADER} bytes")]
    HeaderTooLong,
    #[error("malformed header: {0}")]
    Header(String),
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the connection ended inside an event")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Read the next event; `Ok(None)` at a clean end of the connection.
pub async fn read_event<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::result::Result<Option<Event>, ProtocolError> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_HEADER as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > MAX_HEADER {
            ProtocolError::HeaderTooLong
        } else {
            ProtocolError::Truncated
        });
    }
    let header: Value =
        serde_json::from_slice(&line).map_err(|e| ProtocolError::Header(e.to_string()))?;
    let kind = header
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ProtocolError::Header("no \"type\"".into()))?
        .to_string();
    let mut data = match header.get("data") {
        Some(Value::Object(m)) => m.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(ProtocolError::Header("\"data\" is not an object".into())),
    };
    let length = |key: &str, max: usize| -> std::result::Result<usize, ProtocolError> {
        match header.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => {
                let len = v.as_u64().ok_or_else(|| {
                    ProtocolError::Header(format!("\"{key}\" is not a byte count"))
                })? as usize;
                if len > max {
                    return Err(ProtocolError::TooLarge {
                        what: if key == "data_length" {
                            "data"
                        } else {
                            "payload"
                        },
                        len,
                        max,
                    });
                }
                Ok(len)
            }
        }
    };
    let data_len = length("data_length", MAX_DATA)?;
    let payload_len = length("payload_length", MAX_PAYLOAD)?;
    if data_len > 0 {
        let mut bytes = vec![0; data_len];
        read_exact(reader, &mut bytes).await?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(extra)) => data.extend(extra),
            _ => {
                return Err(ProtocolError::Header(
                    "data block is not a JSON object".into(),
                ))
            }
        }
    }
    let mut payload = vec![0; payload_len];
    read_exact(reader, &mut payload).await?;
    Ok(Some(Event {
        kind,
        data,
        payload,
    }))
}

async fn read_exact<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> std::result::Result<(), ProtocolError> {
    reader.read_exact(buf).await.map(|_| ()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            ProtocolError::Io(e)
        }
    })
}

/// Accept connections until `stop`; then wait for the open ones to finish.
pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let s = shared.clone();
                    let stop = stop.clone();
                    connections.spawn(async move {
                        tracing::debug!(%peer, "wyoming: connection");
                        if let Err(e) = connection(socket, s, stop).await {
                            tracing::info!(%peer, "wyoming: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("wyoming: accept failed: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = super::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let grace = shared.options.request_timeout;
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// The audio of the utterance being received.
struct Audio {
    rate: u32,
    width: usize,
    channels: usize,
    samples: Vec<f32>,
    /// Over --max-audio-seconds: the rest is dropped and an error answers audio-stop.
    too_long: bool,
    started: Instant,
}

fn format_of(data: &Map<String, Value>) -> Option<(u32, usize, usize)> {
    let get = |k: &str| data.get(k).and_then(Value::as_u64);
    Some((
        u32::try_from(get("rate")?).ok()?,
        get("width")? as usize,
        get("channels")? as usize,
    ))
}

fn error_event(code: &str, text: impl Into<String>) -> Event {
    Event::new("error", json!({"text": text.into(), "code": code}))
}

async fn connection(
    socket: TcpStream,
    s: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<(), ProtocolError> {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut audio: Option<Audio> = None;
    loop {
        let event = tokio::select! {
            e = tokio::time::timeout(s.options.idle_timeout, read_event(&mut reader)) => match e {
                Err(_) => return Ok(()), // idle: close
                Ok(Ok(Some(e))) => e,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e @ ProtocolError::Io(_))) | Ok(Err(e @ ProtocolError::Truncated)) => return Err(e),
                Ok(Err(e)) => {
                    // Malformed input: say why, then close (the stream cannot be resynchronized).
                    let _ = write.write_all(&error_event("bad-event", e.to_string()).encode()).await;
                    s.metrics.request("wyoming", "bad_event", 0.0);
                    return Err(e);
                }
            },
            _ = super::stopped(&mut stop), if audio.is_none() => return Ok(()),
        };
        let reply = match event.kind.as_str() {
            "describe" => Some(info(&s)),
            "ping" => Some(Event::new("pong", json!({}))),
            "transcribe" => {
                audio = None;
                None
            }
            "audio-start" => match format_of(&event.data) {
                Some((rate, width, channels))
                    if pcm_to_mono(&[], width, channels).is_some() && rate > 0 =>
                {
                    audio = Some(Audio {
                        rate,
                        width,
                        channels,
                        samples: Vec::new(),
                        too_long: false,
                        started: Instant::now(),
                    });
                    None
                }
                _ => Some(error_event(
                    "bad-format",
                    "audio-start needs rate > 0, width 1, 2 or 4 and channels >= 1",
                )),
            },
            "audio-chunk" => match &mut audio {
                None => Some(error_event(
                    "no-audio-start",
                    "audio-chunk before audio-start",
                )),
                Some(a) => {
                    let (rate, width, channels) =
                        format_of(&event.data).unwrap_or((a.rate, a.width, a.channels));
                    if (rate, width, channels) != (a.rate, a.width, a.channels) {
                        Some(error_event(
                            "bad-format",
                            "audio-chunk format differs from audio-start's",
                        ))
                    } else {
                        match pcm_to_mono(&event.payload, width, channels) {
                            None => Some(error_event(
                                "bad-audio",
                                "audio-chunk payload is not whole frames of the announced format",
                            )),
                            Some(samples) => {
                                if !a.too_long {
                                    a.samples.extend(samples);
                                    if a.samples.len() > s.max_samples(a.rate) {
                                        a.too_long = true;
                                        a.samples = Vec::new();
                                    }
                                }
                                None
                            }
                        }
                    }
                }
            },
            "audio-stop" => match audio.take() {
                None => Some(error_event(
                    "no-audio-start",
                    "audio-stop before audio-start",
                )),
                Some(a) if a.too_long => {
                    s.metrics
                        .request("wyoming", "too_long", a.started.elapsed().as_secs_f64());
                    Some(error_event(
                        "too-long",
                        format!(
                            "audio longer than {} s (--max-audio-seconds)",
                            s.options.max_audio_seconds
                        ),
                    ))
                }
                Some(a) => Some(transcribe(&s, a).await),
            },
            // Events for other services (wake, tts, ...) are not ours: ignored.
            _ => None,
        };
        if let Some(reply) = reply {
            write.write_all(&reply.encode()).await?;
        }
    }
}

async fn transcribe(s: &Arc<Shared>, a: Audio) -> Event {
    let Audio {
        rate,
        samples,
        started,
        ..
    } = a;
    let result = s.pool.run(move |r| r.transcribe(&samples, rate)).await;
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(t)) => {
            s.metrics.transcribed(t.duration, t.compute_seconds);
            s.metrics.request("wyoming", "ok", seconds);
            Event::new(
                "transcript",
                json!({"text": t.text, "language": s.options.language}),
            )
        }
        Ok(Err(e)) => {
            s.metrics.request("wyoming", "error", seconds);
            error_event("transcription-failed", e.to_string())
        }
        Err(e @ JobError::Busy(_)) => {
            s.metrics.busy();
            s.metrics.request("wyoming", "busy", seconds);
            error_event("busy", e.to_string())
        }
        Err(e) => {
            s.metrics.request("wyoming", "error", seconds);
            error_event("transcription-failed", e.to_string())
        }
    }
}

fn info(s: &Shared) -> Event {
    let attribution = json!({"name": "w2v", "url": "https://github.com/w2v/w2v"});
    let version = env!("CARGO_PKG_VERSION");
    Event::new(
        "info",
        json!({
            "asr": [{
                "name": "w2v",
                "attribution": attribution,
                "installed": true,
                "description": "Offline wav2vec 2.0 speech recognition",
                "version": version,
                "models": [{
                    "name": s.model_name,
                    "attribution": attribution,
                    "installed": true,
                    "description": format!("{} on {}", s.options.model.display(), s.backend),
                    "version": version,
                    "languages": [s.options.language],
                }],
                "supports_transcript_streaming": false,
            }],
            "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> std::result::Result<Option<Event>, ProtocolError> {
        let mut r = tokio::io::BufReader::new(bytes);
        read_event(&mut r).await
    }

    #[tokio::test]
    async fn events_round_trip_and_bad_input_is_an_error() {
        let mut e = Event::new(
            "audio-chunk",
            json!({"rate": 16000, "width": 2, "channels": 1}),
        );
        e.payload = vec![1, 2, 3, 4];
        let bytes = e.encode();
        assert_eq!(parse(&bytes).await.unwrap(), Some(e));
        // Data both inline and as a data block are merged (the `wyoming` package sends a block).
        let merged = b"{\"type\":\"x\",\"data\":{\"a\":1},\"data_length\":8}\n{\"b\":2}\n";
        let got = parse(&merged[..]).await.unwrap().unwrap();
        assert_eq!(got.data.get("a"), Some(&json!(1)));
        assert_eq!(got.data.get("b"), Some(&json!(2)));
        assert!(parse(b"").await.unwrap().is_none());
        for bad in [
            &b"not json\n"[..],
            b"{\"data\":{}}\n",
            b"{\"type\":\"x\",\"payload_length\":-1}\n",
            b"{\"type\":\"x\",\"payload_length\":99999999999}\n",
            b"{\"type\":\"x\",\"payload_length\":10}\nabc",
            b"{\"type\":\"x\"",
        ] {
            assert!(
                parse(bad).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b' '; MAX_HEADER + 10];
        assert!(matches!(
            parse(&long).await,
            Err(ProtocolError::HeaderTooLong)
        ));
    }

    /// Mutated, cut and spliced events: every outcome is an event, the end, or an error; never
    /// a panic, and never a read past the input.
    #[tokio::test]
    async fn mutated_events_never_panic() {
        let mut chunk = Event::new(
            "audio-chunk",
            json!({"rate": 16000, "width": 2, "channels": 1}),
        );
        chunk.payload = (0..64).collect();
        let valid: Vec<Vec<u8>> = vec![
            chunk.encode(),
            Event::new("describe", json!({})).encode(),
            Event::new("transcribe", json!({"language": "en", "name": "w2v"})).encode(),
            b"{\"type\":\"x\",\"data\":{\"a\":1},\"data_length\":8}\n{\"b\":2}\n".to_vec(),
        ];
        let mut rng = crate::engine::rng::SplitMix64(7);
        for i in 0..3000 {
            let mut bytes = valid[i % valid.len()].clone();
            match rng.next_u64() % 4 {
                0 => {
                    // Flip a few bytes.
                    for _ in 0..1 + rng.next_u64() % 4 {
                        let at = (rng.next_u64() as usize) % bytes.len();
                        bytes[at] = rng.next_u64() as u8;
                    }
                }
                1 => bytes.truncate((rng.next_u64() as usize) % bytes.len()),
                2 => {
                    let other = &valid[(rng.next_u64() as usize) % valid.len()];
                    let cut = (rng.next_u64() as usize) % other.len();
                    bytes.extend_from_slice(&other[cut..]);
                }
                _ => {
                    // A digit of a length field changed.
                    if let Some(at) = bytes.iter().position(|b| b.is_ascii_digit()) {
                        bytes[at] = b'0' + (rng.next_u64() % 10) as u8;
                    }
                }
            }
            let mut r = tokio::io::BufReader::new(bytes.as_slice());
            // Read events until the end or an error, as a connection does.
            for _ in 0..8 {
                match read_event(&mut r).await {
                    Ok(Some(e)) => assert!(e.payload.len() <= MAX_PAYLOAD),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
