//! `w2v listen` with the shipped default model: latency and memory.
//!
//! 1. Latency: a stream of held-out command and digit clips (`tests/common/stream.rs`) played
//!    at real time (`--input … --realtime`); for every correctly recognized command, the wall
//!    clock from the end of its speech (by energy, see `stream::speech_span`) to the printed
//!    event (`decided_at`). Target: p95 < 300 ms.
//! 2. Memory: a 30-minute stream of the same clips at full speed, sampling the process's
//!    resident memory (`/proc/PID/status` VmRSS) every 100 ms; after the first event (the
//!    model and the stream are loaded by then), RSS must not grow by more than 2 % + 4 MB.
//!
//! Run (release build): `cargo bench --bench listen` (options: `-- --latency-seconds N`,
//! `--memory-minutes N`, `--skip-latency`, `--skip-memory`, `--dump DIR` to keep the latency
//! run's stream.wav, clips.tsv, events.jsonl and debug log.txt). Exits non-zero when a target is
//! missed. Needs `models/default.onnx` (or `W2V_MODEL`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stream::{self, COMMANDS, DIGITS, RATE};

struct Options {
    latency_seconds: f64,
    memory_minutes: f64,
    latency: bool,
    memory: bool,
    /// Keep the latency run's stream, clip list, events and debug log here (diagnosis).
    dump: Option<std::path::PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        latency_seconds: 120.0,
        memory_minutes: 30.0,
        latency: true,
        memory: true,
        dump: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--latency-seconds" => {
                i += 1;
                o.latency_seconds = args[i].parse().expect("--latency-seconds N");
            }
            "--memory-minutes" => {
                i += 1;
                o.memory_minutes = args[i].parse().expect("--memory-minutes N");
            }
            "--skip-latency" => o.latency = false,
            "--skip-memory" => o.memory = false,
            "--dump" => {
                i += 1;
                o.dump = Some(args[i].clone().into());
            }
            // cargo bench passes --bench; ignore what we do not know.
            _ => {}
        }
        i += 1;
    }
    o
}

fn w2v() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_w2v"));
    c.current_dir(common::repo()).env_remove("W2V_LOG");
    c
}

/// A stream of about `seconds` seconds built from rounds of the clip set.
fn stream_of(seconds: f64, clips: &[stream::Clip]) -> (Vec<f32>, Vec<stream::Placed>) {
    let (mut audio, mut placed) = stream::build(clips, 1);
    let mut seed = 2;
    while (audio.len() as f64) < seconds * f64::from(RATE) {
        let (a, p) = stream::build(clips, seed);
        let offset = audio.len();
        audio.extend(a);
        placed.extend(p.into_iter().map(|mut x| {
            x.start += offset;
            x.end += offset;
            x.speech_start += offset;
            x.speech_end += offset;
            x
        }));
        seed += 1;
    }
    (audio, placed)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, stream::commands_text()).unwrap();
    let clips = stream::test_clips(&[&COMMANDS[..], &DIGITS[..]].concat());
    let mut set = stream::word_clips(&stream::pick(&clips, &COMMANDS, 4));
    set.extend(stream::word_clips(&stream::pick(&clips, &DIGITS, 2)));
    let mut ok = true;

    if o.latency {
        let (audio, placed) = stream_of(o.latency_seconds, &set);
        let wav = dir.path().join("latency.wav");
        stream::write_wav(&wav, &audio);
        println!(
            "latency: {:.0} s stream, {} clips, real-time playback",
            audio.len() as f64 / f64::from(RATE),
            placed.len()
        );
        let mut cmd = w2v();
        if o.dump.is_some() {
            cmd.env("W2V_LOG", "w2v_engine=debug");
        }
        let out = cmd
            .args(["listen", "--realtime", "--json", "--input"])
            .arg(&wav)
            .arg("--commands")
            .arg(&commands)
            .output()
            .expect("run w2v");
        if let Some(d) = &o.dump {
            std::fs::create_dir_all(d).unwrap();
            std::fs::copy(&wav, d.join("stream.wav")).unwrap();
            std::fs::write(d.join("events.jsonl"), &out.stdout).unwrap();
            std::fs::write(d.join("log.txt"), &out.stderr).unwrap();
            let mut tsv = String::from("word\tpath\tstart\tend\tspeech_start\tspeech_end\n");
            for p in &placed {
                tsv += &format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    p.word,
                    p.path.display(),
                    p.start,
                    p.end,
                    p.speech_start,
                    p.speech_end
                );
            }
            std::fs::write(d.join("clips.tsv"), tsv).unwrap();
        }
        assert!(
            out.status.success(),
            "w2v listen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let s = stream::score(&placed, &events);
        let lat: Vec<f64> = s
            .hits
            .iter()
            .map(|(speech_end, e)| e["decided_at"].as_f64().unwrap() - speech_end)
            .collect();
        // The end-pointing alone: audio heard at the decision, without compute and delivery.
        let heard: Vec<f64> = s
            .hits
            .iter()
            .map(|(speech_end, e)| e["decided_at_stream"].as_f64().unwrap() - speech_end)
            .collect();
        let p50 = stream::percentile(&lat, 0.5);
        let p95 = stream::percentile(&lat, 0.95);
        let max = stream::percentile(&lat, 1.0);
        println!(
            "latency: {} commands recognized (precision {:.3}, recall {:.3}); end of speech -> event: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (target p95 < 300 ms)",
            lat.len(),
            s.precision(),
            s.recall(),
            p50 * 1000.0,
            p95 * 1000.0,
            max * 1000.0
        );
        println!(
            "latency: of which end-pointing (audio heard after the speech when deciding): p50 {:.0} ms, p95 {:.0} ms",
            stream::percentile(&heard, 0.5) * 1000.0,
            stream::percentile(&heard, 0.95) * 1000.0
        );
        if lat.is_empty() || p95 >= 0.3 {
            println!("latency: TARGET MISSED");
            ok = false;
        }
    }

    if o.memory {
        let (audio, placed) = stream_of(o.memory_minutes * 60.0, &set);
        let wav = dir.path().join("memory.wav");
        stream::write_wav(&wav, &audio);
        println!(
            "memory: {:.1} min stream, {} clips, full speed",
            audio.len() as f64 / f64::from(RATE) / 60.0,
            placed.len()
        );
        drop(audio);
        let t = Instant::now();
        let mut child = w2v()
            .args(["listen", "--json", "--input"])
            .arg(&wav)
            .arg("--commands")
            .arg(&commands)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run w2v");
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut first: Option<Instant> = None;
            let mut n = 0usize;
            for line in BufReader::new(stdout).lines() {
                let _ = line.unwrap();
                first.get_or_insert_with(Instant::now);
                n += 1;
            }
            (first, n)
        });
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        while child.try_wait().unwrap().is_none() {
            if let Some(r) = rss_kib(pid) {
                samples.push((Instant::now(), r));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "w2v listen failed");
        let (first, events) = reader.join().unwrap();
        let first = first.expect("no events in the memory stream");
        let steady: Vec<u64> = samples
            .iter()
            .filter(|(at, _)| *at >= first)
            .map(|&(_, r)| r)
            .collect();
        let peak = samples.iter().map(|&(_, r)| r).max().unwrap_or(0);
        assert!(steady.len() >= 4, "run too short to judge memory");
        let start = steady[0];
        let end = *steady.last().unwrap();
        let max = *steady.iter().max().unwrap();
        let growth = end as f64 - start as f64;
        println!(
            "memory: {} events in {:.0} s; RSS after the first event {:.1} MB, at the end {:.1} MB, max {:.1} MB, overall peak {:.1} MB; growth {:+.1} MB",
            events,
            t.elapsed().as_secs_f64(),
            start as f64 / 1024.0,
            end as f64 / 1024.0,
            max as f64 / 1024.0,
            peak as f64 / 1024.0,
            growth / 1024.0
        );
        if growth > start as f64 * 0.02 + 4096.0 {
            println!("memory: TARGET MISSED (RSS grew)");
            ok = false;
        }
    }
    if !ok {
        std::process::exit(1);
    }
}
