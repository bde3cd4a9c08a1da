//! `w2v serve` end to end: the real binary on loopback, driven over HTTP (a plain HTTP/1.1
//! client written here, so that malformed requests can be sent too), WebSocket (tungstenite)
//! and Wyoming (its wire format). The Python clients (`openai`, `wyoming`, `websockets`) are
//! exercised by tools/serve/test_clients.py in CI.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::repo;
use serde_json::{json, Value};
use w2v_test_support::paths::{self, README_SAMPLE, README_TRANSCRIPT};

struct Server {
    child: Child,
    http: Option<SocketAddr>,
    wyoming: Option<SocketAddr>,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_w2v"))
            .current_dir(repo())
            .args(["serve", "--http", "127.0.0.1:0", "--wyoming", "127.0.0.1:0"])
            .args(extra)
            .env_remove("W2V_LOG")
            .env_remove("W2V_MODEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start w2v serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let bound: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("first line {line:?} is not the addresses: {e}"));
        let addr = |k: &str| bound[k].as_str().map(|a| a.parse().unwrap());
        Server {
            http: addr("http"),
            wyoming: addr("wyoming"),
            child,
            _stdout: stdout,
        }
    }

    fn http(&self) -> SocketAddr {
        self.http.unwrap()
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("w2v serve did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send raw bytes as a request (`Connection: close`) and read the whole answer.
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let headers = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = bytes[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 4 + n..];
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

const BOUNDARY: &str = "w2vTestBoundary";

/// A multipart/form-data body: `(name, filename, bytes)` parts.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post(addr: SocketAddr, content_type: &str, body: &[u8]) -> Answer {
    let mut request = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(addr, &request)
}

fn transcribe(addr: SocketAddr, file: &[u8], name: &str, format: Option<&str>) -> Answer {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> =
        vec![("model", None, b"whisper-1"), ("file", Some(name), file)];
    if let Some(f) = format {
        parts.push(("response_format", None, f.as_bytes()));
    }
    post(
        addr,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &multipart(&parts),
    )
}

fn sample() -> Vec<u8> {
    std::fs::read(paths::sample(README_SAMPLE)).unwrap()
}

fn sample_pcm() -> Vec<u8> {
    let samples = w2v::load_audio(paths::sample(README_SAMPLE), 16_000).unwrap();
    samples
        .iter()
        .flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// The Wyoming wire format, as the `wyoming` package writes it.
fn wyoming_event(kind: &str, data: Value, payload: &[u8]) -> Vec<u8> {
    let data = data.to_string().into_bytes();
    let mut header = json!({"type": kind, "version": "1.5.3", "data_length": data.len()});
    if !payload.is_empty() {
        header["payload_length"] = json!(payload.len());
    }
    let mut out = header.to_string().into_bytes();
    out.push(b'\n');
    out.extend(data);
    out.extend_from_slice(payload);
    out
}

fn read_wyoming(r: &mut BufReader<TcpStream>) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut header: Value = serde_json::from_str(&line).unwrap();
    if let Some(n) = header["data_length"].as_u64() {
        let mut data = vec![0; n as usize];
        r.read_exact(&mut data).unwrap();
        let extra: Value = serde_json::from_slice(&data).unwrap();
        header["data"] = extra;
    }
    if let Some(n) = header["payload_length"].as_u64() {
        let mut skip = vec![0; n as usize];
        r.read_exact(&mut skip).unwrap();
    }
    header
}

fn wyoming_transcribe(addr: SocketAddr, pcm: &[u8]) -> Value {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let format = json!({"rate": 16000, "width": 2, "channels": 1});
    w.write_all(&wyoming_event("transcribe", json!({"language": "en"}), &[]))
        .unwrap();
    w.write_all(&wyoming_event("audio-start", format.clone(), &[]))
        .unwrap();
    for chunk in pcm.chunks(2048) {
        w.write_all(&wyoming_event("audio-chunk", format.clone(), chunk))
            .unwrap();
    }
    w.write_all(&wyoming_event("audio-stop", json!({}), &[]))
        .unwrap();
    read_wyoming(&mut r)
}

#[test]
fn http_and_wyoming_transcribe_the_readme_sample() {
    let server = Server::start(&["--max-concurrent", "1"]);
    let addr = server.http();

    let a = transcribe(addr, &sample(), "sample.wav", None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json(), json!({"text": README_TRANSCRIPT}));
    let a = transcribe(addr, &sample(), "sample.wav", Some("text"));
    assert_eq!(a.text(), format!("{README_TRANSCRIPT}\n"));
    let a = transcribe(addr, &sample(), "sample.wav", Some("srt"));
    assert!(a.text().starts_with("1\n00:00:00,"), "{}", a.text());
    let a = transcribe(addr, &sample(), "sample.wav", Some("vtt"));
    assert!(a.text().starts_with("WEBVTT\n\n"), "{}", a.text());
    let v = transcribe(addr, &sample(), "sample.wav", Some("verbose_json")).json();
    assert_eq!(v["text"], README_TRANSCRIPT);
    let words = v["words"].as_array().unwrap();
    assert_eq!(words.len(), 4);
    assert_eq!(words[0]["word"], "ZERO");
    assert!(words[0]["start"].as_f64().unwrap() < words[3]["start"].as_f64().unwrap());
    assert!(v["duration"].as_f64().unwrap() > 2.0);

    // `prompt` is used as hotwords: a held-out "zero" the model spells "ERO" alone.
    let zero = std::fs::read(common::speech("fsdd/0_george_0.wav")).unwrap();
    assert_eq!(
        transcribe(addr, &zero, "zero.wav", None).json()["text"],
        "ERO"
    );
    let with_prompt = post(
        addr,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &multipart(&[
            ("file", Some("zero.wav"), &zero),
            ("prompt", None, b"Zero, one; two."),
        ]),
    );
    assert_eq!(with_prompt.json()["text"], "ZERO", "{}", with_prompt.text());

    let health = get(addr, "/health").json();
    assert_eq!(health["status"], "ok");
    let models = get(addr, "/v1/models").json();
    assert_eq!(models["data"][0]["id"], "w2v-default");

    // Wyoming: describe, then a transcription.
    let wy = server.wyoming.unwrap();
    let s = TcpStream::connect(wy).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&wyoming_event("describe", json!({}), &[]))
        .unwrap();
    let info = read_wyoming(&mut r);
    assert_eq!(info["type"], "info");
    assert_eq!(info["data"]["asr"][0]["models"][0]["languages"][0], "en");
    assert_eq!(info["data"]["asr"][0]["installed"], true);
    let t = wyoming_transcribe(wy, &sample_pcm());
    assert_eq!(t["type"], "transcript", "{t}");
    assert_eq!(t["data"]["text"], README_TRANSCRIPT);

    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains("w2v_requests_total{endpoint=\"transcriptions\",outcome=\"200\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("w2v_requests_total{endpoint=\"wyoming\",outcome=\"ok\"} 1"));
    assert!(
        metrics.contains("w2v_real_time_factor_count 8"),
        "{metrics}"
    );
}

#[test]
fn bad_input_gets_an_error_answer_and_others_are_unaffected() {
    let server = Server::start(&[
        "--max-concurrent",
        "1",
        "--max-upload-mb",
        "1",
        "--max-audio-seconds",
        "3",
    ]);
    let addr = server.http();
    let form = format!("multipart/form-data; boundary={BOUNDARY}");
    let error = |a: &Answer, status: u16, words: &[&str]| {
        assert_eq!(a.status, status, "{}", a.text());
        let message = a.json()["error"]["message"].as_str().unwrap().to_string();
        for w in words {
            assert!(message.contains(w), "{message:?} lacks {w:?}");
        }
    };
    // Not audio: names the upload.
    error(
        &transcribe(addr, b"this is not audio at all", "notes.txt", None),
        400,
        &["notes.txt"],
    );
    // No file field.
    error(
        &post(addr, &form, &multipart(&[("model", None, b"x")])),
        400,
        &["no `file` field"],
    );
    // Not multipart.
    let a = post(addr, "application/json", b"{\"file\": 1}");
    assert!(a.status == 400 || a.status == 415, "{a:?}");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("multipart"));
    // A body cut short by the client: the multipart parser reports it.
    error(
        &post(
            addr,
            &form,
            &multipart(&[("file", Some("a.wav"), &sample())])[..4000],
        ),
        400,
        &["multipart"],
    );
    // Over the upload limit.
    let big = vec![0u8; 2 << 20];
    error(
        &transcribe(addr, &big, "big.wav", None),
        413,
        &["--max-upload-bytes"],
    );
    // Audio longer than --max-audio-seconds (the sample is 3.3 s).
    error(
        &transcribe(addr, &sample(), "sample.wav", None),
        413,
        &["sample.wav", "--max-audio-seconds"],
    );
    // An unknown response format.
    error(
        &transcribe(addr, &sample(), "sample.wav", Some("yaml")),
        400,
        &["yaml"],
    );
    // A client that sends half a request and vanishes.
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!(
                "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: {form}\r\n\
                 Content-Length: 100000\r\n\r\n--{BOUNDARY}\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    }
    // Malformed Wyoming input: an error event, then the connection closes.
    let wy = server.wyoming.unwrap();
    let s = TcpStream::connect(wy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"{this is not json\n").unwrap();
    let e = read_wyoming(&mut r);
    assert_eq!(e["type"], "error");
    assert!(e["data"]["text"]
        .as_str()
        .unwrap()
        .contains("malformed header"));
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the error"
    );
    // Wyoming audio in a width it cannot take.
    let s = TcpStream::connect(wy).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&wyoming_event(
        "audio-start",
        json!({"rate": 16000, "width": 3, "channels": 1}),
        &[],
    ))
    .unwrap();
    assert_eq!(read_wyoming(&mut r)["data"]["code"], "bad-format");

    // Everyone else is still served.
    let short = {
        let pcm = sample_pcm();
        pcm[..(pcm.len() * 2 / 3) & !1].to_vec()
    };
    let t = wyoming_transcribe(wy, &short);
    assert_eq!(t["type"], "transcript", "{t}");
    assert_eq!(get(addr, "/health").json()["status"], "ok");
    let metrics = get(addr, "/metrics").text();
    assert!(metrics.contains("outcome=\"413\"} 2"), "{metrics}");
}

/// A WebSocket stream with a command grammar; while it holds the only recognizer, an upload is
/// answered "busy" (503 with Retry-After) instead of queueing without bound.
#[test]
fn websocket_streams_commands_and_a_full_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let grammar = dir.path().join("commands.txt");
    std::fs::write(&grammar, "go up\ngo down\nno\nstop\nzero zero six seven\n").unwrap();
    let server = Server::start(&[
        "--max-concurrent",
        "1",
        "--max-queue",
        "0",
        "--commands",
        grammar.to_str().unwrap(),
    ]);
    let addr = server.http();
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/v1/listen?rate=16000")).expect("WebSocket");
    // The stream holds the recognizer once its session starts (/health counts it in flight):
    // an upload then is refused at once.
    let mut in_flight = 0;
    for _ in 0..300 {
        in_flight = get(addr, "/health").json()["in_flight"].as_u64().unwrap();
        if in_flight == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        in_flight, 1,
        "the WebSocket stream never took the recognizer"
    );
    let busy = transcribe(addr, &sample(), "sample.wav", None);
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert!(busy.headers.to_ascii_lowercase().contains("retry-after: 1"));
    assert!(busy.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("busy"));

    let mut pcm = Vec::new();
    for name in ["go-up.wav", "no-stop.wav"] {
        let s = w2v::load_audio(paths::sample(name), 16_000).unwrap();
        pcm.extend(s.iter().flat_map(|x| ((x * 32767.0) as i16).to_le_bytes()));
        // A second of silence ends the utterance.
        pcm.extend(std::iter::repeat_n(0u8, 2 * 16_000));
    }
    for chunk in pcm.chunks(3200) {
        ws.send(tungstenite::Message::Binary(chunk.to_vec().into()))
            .unwrap();
    }
    ws.send(tungstenite::Message::Text(r#"{"type": "stop"}"#.into()))
        .unwrap();
    let mut events = Vec::new();
    let fin = loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str().unwrap() {
                    "event" => events.push(v),
                    "final" => break v,
                    other => panic!("{other}: {v}"),
                }
            }
            tungstenite::Message::Close(_) => panic!("closed before the final message"),
            _ => {}
        }
    };
    assert_eq!(events[0]["kind"], "command", "{events:?}");
    assert_eq!(events[0]["command"], "go up");
    assert!(events.len() >= 2, "{events:?}");
    assert!(fin["text"].as_str().unwrap().starts_with("go up"), "{fin}");
    drop(ws);
    // The recognizer is back: uploads work again.
    let mut ok = false;
    for _ in 0..50 {
        if transcribe(addr, &sample(), "sample.wav", None).status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "the stream's recognizer returned to the pool");
}

/// SIGTERM stops accepting and lets the request in flight finish.
#[test]
fn shutdown_finishes_the_request_in_flight() {
    let server = Server::start(&["--max-concurrent", "1"]);
    let addr = server.http();
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/v1/listen")).unwrap();
    let pcm = sample_pcm();
    for chunk in pcm.chunks(3200) {
        ws.send(tungstenite::Message::Binary(chunk.to_vec().into()))
            .unwrap();
    }
    // Let the server take the audio, then stop it mid-stream.
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.child.id();
    unsafe_kill(pid);
    let fin = loop {
        match ws.read().expect("the stream is finished, not cut") {
            tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "final" {
                    break v;
                }
            }
            tungstenite::Message::Close(_) => panic!("closed without the final message"),
            _ => {}
        }
    };
    assert_eq!(fin["text"], README_TRANSCRIPT);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn nothing_to_serve_is_a_one_line_error() {
    let run = common::w2v(["serve"]);
    assert!(!run.success());
    assert!(run.stderr.contains("--http"), "{}", run.stderr);
}
