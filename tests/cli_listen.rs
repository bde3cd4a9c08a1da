//! End-to-end tests of `w2v listen` through the real binary with a tiny random fixture model
//! (its words are gibberish, so these tests check segmentation, output, actions and errors; the
//! recognition quality with the shipped model is `tests/listen_accuracy.rs`).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::stream::{self, Lcg, RATE};
use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn model() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture("base-safetensors", dir.path());
    (dir, m)
}

fn listen(model: &Path, args: &[&OsStr]) -> Run {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("listen"),
        OsStr::new("--model"),
        model.as_os_str(),
    ];
    all.extend_from_slice(args);
    w2v(all)
}

/// `w2v listen` on `wav` with `commands` at threshold 0, which accepts the best phrase whatever
/// the (random) model says, plus `extra` arguments.
fn accept_all(model: &Path, wav: &Path, commands: &Path, extra: &[&OsStr]) -> Run {
    let mut args = vec![
        OsStr::new("--input"),
        wav.as_os_str(),
        OsStr::new("--commands"),
        commands.as_os_str(),
        OsStr::new("--threshold"),
        OsStr::new("0"),
    ];
    args.extend_from_slice(extra);
    listen(model, &args)
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("w2v {:?}: not a JSON line ({e}): {l}", run.args))
        })
        .collect()
}

/// Two real clips ("yes", then FSDD "zero" at 8 kHz) in quiet background noise, written as a
/// 16 kHz WAV. Returns the file and each clip's place in seconds.
fn two_clip_stream(dir: &Path) -> (PathBuf, Vec<(f64, f64)>) {
    let (audio, spans) = two_clip_audio();
    let wav = dir.join("two.wav");
    stream::write_wav(&wav, &audio);
    (wav, spans)
}

/// The samples of [`two_clip_stream`] and each clip's place in seconds.
fn two_clip_audio() -> (Vec<f32>, Vec<(f64, f64)>) {
    let mut rng = Lcg(42);
    let mut audio = stream::noise(RATE as usize, 0.002, &mut rng);
    let mut spans = Vec::new();
    for rel in [
        "speech_commands/yes/a7216980_nohash_3.wav",
        "fsdd/0_george_0.wav",
    ] {
        let clip = stream::load(&speech(rel));
        let at = audio.len();
        spans.push((
            at as f64 / f64::from(RATE),
            (at + clip.len()) as f64 / f64::from(RATE),
        ));
        audio.extend(clip);
        audio.extend(stream::noise(RATE as usize * 3 / 2, 0.002, &mut rng));
    }
    (audio, spans)
}

#[test]
fn every_utterance_becomes_one_event_at_its_place() {
    let (dir, m) = model();
    let (wav, spans) = two_clip_stream(dir.path());
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "# two commands\nyes => true\nzero\n").unwrap();
    let run = accept_all(&m, &wav, &commands, &[OsStr::new("--json")]);
    assert_ok(&run);
    let events = json_lines(&run);
    assert_eq!(events.len(), 2, "{}", run.stdout);
    for (e, (s, t)) in events.iter().zip(&spans) {
        let (start, end) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        assert!(start < end, "{e}");
        // Within the clip, give or take the VAD's pre-roll and tail.
        assert!(start >= s - 0.25 && end <= t + 0.25, "{e} vs clip {s}..{t}");
        assert_eq!(e["rejected"], false);
        assert_eq!(e["kind"], "command");
        let command = e["command"].as_str().unwrap();
        assert!(command == "yes" || command == "zero", "{e}");
        let c = e["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{e}");
        assert!(e["text"].is_string() && e["decided_at"].is_number());
        if command == "yes" {
            assert_eq!(e["action"], serde_json::json!(["true"]));
        } else {
            assert!(e["action"].is_null());
        }
    }
    // The same run in text mode: one line per event.
    let run = accept_all(&m, &wav, &commands, &[]);
    assert_ok(&run);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
}

#[test]
fn a_high_threshold_rejects_instead_of_forcing() {
    let (dir, m) = model();
    let (wav, _) = two_clip_stream(dir.path());
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "yes\nzero\n").unwrap();
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            commands.as_os_str(),
            OsStr::new("--threshold"),
            OsStr::new("1"),
            OsStr::new("--json"),
        ],
    );
    assert_ok(&run);
    let events = json_lines(&run);
    assert_eq!(events.len(), 2, "{}", run.stdout);
    for e in &events {
        assert_eq!(e["rejected"], true, "{e}");
        assert!(e["command"].is_null() && e["action"].is_null(), "{e}");
        let kind = e["kind"].as_str().unwrap();
        assert!(
            ["out_of_grammar", "low_confidence", "no_speech"].contains(&kind),
            "{e}"
        );
        assert!(e["confidence"].as_f64().unwrap() < 1.0);
    }
}

/// A phrase's own threshold (`yes :1`) overrides `--threshold`: at threshold 0 the random model
/// has every utterance accepted as the only phrase, unless that phrase asks for certainty.
#[test]
fn a_phrase_threshold_overrides_the_listener_threshold() {
    let (dir, m) = model();
    let (wav, _) = two_clip_stream(dir.path());
    let commands = dir.path().join("COMMANDS.txt");
    let events_for = |text: &str| {
        std::fs::write(&commands, text).unwrap();
        let run = accept_all(&m, &wav, &commands, &[OsStr::new("--json")]);
        assert_ok(&run);
        json_lines(&run)
    };
    let plain = events_for("yes\n");
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert!(plain.iter().all(|e| e["command"] == "yes"), "{plain:?}");
    let strict = events_for("yes :1 => echo never\n");
    assert_eq!(strict.len(), 2, "{strict:?}");
    assert!(strict.iter().all(|e| e["rejected"] == true), "{strict:?}");

    std::fs::write(&commands, "yes :1.5\n").unwrap();
    let run = accept_all(&m, &wav, &commands, &[]);
    assert_one_error(&run, &["COMMANDS.txt:1", "threshold", "1.5"]);
}

#[test]
fn exec_runs_the_action_without_a_shell() {
    let (dir, m) = model();
    let (wav, _) = two_clip_stream(dir.path());
    let fired = dir.path().join("fired; echo not-a-shell");
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, format!("go => touch \"{}\"\n", fired.display())).unwrap();
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            commands.as_os_str(),
            OsStr::new("--threshold"),
            OsStr::new("0"),
            OsStr::new("--exec"),
        ],
    );
    assert_ok(&run);
    // The `;` reached touch as part of the file name: no shell was involved.
    assert!(fired.is_file(), "{}", run.stdout);

    // A program that does not exist: a warning naming it, and listening goes on.
    std::fs::write(&commands, "go => /nonexistent/program --flag\n").unwrap();
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            commands.as_os_str(),
            OsStr::new("--threshold"),
            OsStr::new("0"),
            OsStr::new("--exec"),
        ],
    );
    assert!(run.success(), "{run:?}");
    assert_no_panic(&run);
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    for l in lines {
        assert!(
            l.starts_with("warning: command \"go\": cannot run \"/nonexistent/program\""),
            "{l}"
        );
    }
    assert_eq!(run.stdout.lines().count(), 2);
}

/// A word followed by half a second of noise 42 dB below its loudest 10 ms (breath, a fan
/// starting) but well above the room's noise floor: the command is decided 100 ms after the
/// word, not after the noise, and the noise is no second utterance. With
/// `--vad-peak-drop-db inf` (the noise floor alone) the noise holds the command back.
#[test]
fn noise_far_below_the_word_does_not_hold_the_command_back() {
    let (dir, m) = model();
    let clip = stream::load(&speech("speech_commands/yes/a7216980_nohash_3.wav"));
    let (s, e) = stream::speech_span(&clip);
    let peak_rms = clip
        .chunks(160)
        .map(|f| (f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32).sqrt())
        .fold(0.0, f32::max);
    let loudest = clip.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    // The word with its loudest 10 ms at about -9 dBFS (no clipping).
    let gain = (0.35 / peak_rms).min(0.99 / loudest);
    let mut rng = Lcg(11);
    let mut audio = stream::noise(RATE as usize, 0.0005, &mut rng);
    audio.extend(clip[s..e].iter().map(|x| x * gain));
    let word_end = audio.len() as f64 / f64::from(RATE);
    // Uniform noise of amplitude a has RMS a / sqrt(3).
    let tail = peak_rms * gain * 10f32.powf(-42.0 / 20.0) * 3f32.sqrt();
    audio.extend(stream::noise(RATE as usize / 2, tail, &mut rng));
    audio.extend(stream::noise(RATE as usize * 3 / 2, 0.0005, &mut rng));
    let wav = dir.path().join("tail.wav");
    stream::write_wav(&wav, &audio);
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "yes\n").unwrap();
    let run_with = |extra: &[&OsStr]| {
        let mut args = vec![OsStr::new("--json")];
        args.extend_from_slice(extra);
        let run = accept_all(&m, &wav, &commands, &args);
        assert_ok(&run);
        json_lines(&run)
    };

    let events = run_with(&[]);
    assert_eq!(events.len(), 1, "{events:?}");
    let late = events[0]["decided_at_stream"].as_f64().unwrap() - word_end;
    assert!(
        (0.1..0.35).contains(&late),
        "decided {late:.3} s after the word"
    );

    let events = run_with(&[OsStr::new("--vad-peak-drop-db"), OsStr::new("inf")]);
    assert!(!events.is_empty());
    let late = events[0]["decided_at_stream"].as_f64().unwrap() - word_end;
    assert!(late > 0.55, "decided {late:.3} s after the word");
}

/// Background noise loud enough for the energy VAD (a real recording: running machinery) is
/// stopped by the speech gate before the model sees it, while the word next to it passes; with
/// `--speech-gate off` both reach the (random) model, which at threshold 0 accepts anything.
#[test]
fn the_speech_gate_keeps_noise_from_the_model() {
    let (dir, m) = model();
    let mut rng = Lcg(5);
    let mut audio = stream::noise(RATE as usize, 0.0005, &mut rng);
    let noise = stream::load(&speech("speech_commands/_silence_/1043.wav"));
    let peak = noise.iter().fold(0f32, |a, x| a.max(x.abs()));
    audio.extend(noise.iter().map(|x| x * 0.5 / peak));
    let noise_span = (1.0, audio.len() as f64 / f64::from(RATE));
    audio.extend(stream::noise(RATE as usize, 0.0005, &mut rng));
    audio.extend(stream::load(&speech(
        "speech_commands/yes/a7216980_nohash_3.wav",
    )));
    audio.extend(stream::noise(RATE as usize, 0.0005, &mut rng));
    let wav = dir.path().join("noise-then-yes.wav");
    stream::write_wav(&wav, &audio);
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "yes\nno\n").unwrap();
    let in_noise = |e: &Value| {
        let mid = (e["start"].as_f64().unwrap() + e["end"].as_f64().unwrap()) / 2.0;
        mid > noise_span.0 - 0.1 && mid < noise_span.1 + 0.1
    };

    let run = accept_all(&m, &wav, &commands, &[OsStr::new("--json")]);
    assert_ok(&run);
    let events = json_lines(&run);
    let (noise, word): (Vec<&Value>, Vec<&Value>) = events.iter().partition(|e| in_noise(e));
    assert!(!noise.is_empty() && !word.is_empty(), "{events:?}");
    for e in &noise {
        assert_eq!(e["kind"], "no_speech", "{e}");
        assert_eq!(e["rejected"], true, "{e}");
        assert!(e["speech"].as_f64().unwrap() < 0.5, "{e}");
    }
    assert!(word
        .iter()
        .any(|e| e["rejected"] == false && e["speech"].as_f64().unwrap() > 0.9));

    let run = accept_all(
        &m,
        &wav,
        &commands,
        &[
            OsStr::new("--json"),
            OsStr::new("--speech-gate"),
            OsStr::new("off"),
        ],
    );
    assert_ok(&run);
    let events = json_lines(&run);
    assert!(
        events.iter().all(|e| e.get("speech").is_none()),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| in_noise(e) && e["rejected"] == false),
        "without the gate the noise reaches the model: {events:?}"
    );
}

#[test]
fn without_commands_each_utterance_is_transcribed() {
    let (dir, m) = model();
    let (wav, spans) = two_clip_stream(dir.path());
    let run = listen(
        &m,
        &[OsStr::new("--input"), wav.as_os_str(), OsStr::new("--json")],
    );
    assert_ok(&run);
    // The random model may say nothing for an utterance (no event then), never more than one.
    let events = json_lines(&run);
    assert!(events.len() <= 2, "{}", run.stdout);
    for e in &events {
        assert_eq!(e["kind"], "transcript");
        assert_eq!(e["rejected"], false);
        assert!(!e["text"].as_str().unwrap().is_empty());
        let mid = (e["start"].as_f64().unwrap() + e["end"].as_f64().unwrap()) / 2.0;
        assert!(
            spans.iter().any(|(s, t)| mid > s - 0.25 && mid < t + 0.25),
            "{e}"
        );
    }
}

#[test]
fn realtime_playback_takes_the_stream_duration() {
    let (dir, m) = model();
    let mut rng = Lcg(9);
    let mut audio = stream::noise(RATE as usize / 2, 0.002, &mut rng);
    audio.extend(stream::load(&speech(
        "speech_commands/yes/a7216980_nohash_3.wav",
    )));
    audio.extend(stream::noise(RATE as usize, 0.002, &mut rng));
    let wav = dir.path().join("short.wav");
    stream::write_wav(&wav, &audio);
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "yes\n").unwrap();
    let t = std::time::Instant::now();
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--realtime"),
            OsStr::new("--commands"),
            commands.as_os_str(),
            OsStr::new("--threshold"),
            OsStr::new("0"),
            OsStr::new("--json"),
        ],
    );
    let took = t.elapsed().as_secs_f64();
    assert_ok(&run);
    assert!(took >= 2.5, "2.5 s of audio took {took:.2} s");
    let events = json_lines(&run);
    assert_eq!(events.len(), 1, "{}", run.stdout);
    // Decided after the word ended (wall clock since the first audio), not before.
    let decided = events[0]["decided_at"].as_f64().unwrap();
    let end = events[0]["end"].as_f64().unwrap();
    assert!(decided >= end && decided < 2.5 + 1.0, "{}", events[0]);
}

// ---------------------------------------------------------------------------------------------
// Bad input

fn wav_and_commands(dir: &Path, commands: &str) -> (PathBuf, PathBuf) {
    let wav = dir.join("a.wav");
    std::fs::write(&wav, pcm16_wav(16000, &[0; 16000])).unwrap();
    let c = dir.join("COMMANDS.txt");
    std::fs::write(&c, commands).unwrap();
    (wav, c)
}

#[test]
fn missing_or_empty_commands_file() {
    let (dir, m) = model();
    let (wav, _) = wav_and_commands(dir.path(), "");
    let missing = dir.path().join("nope.txt");
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            missing.as_os_str(),
        ],
    );
    assert_one_error(&run, &[&shown(&missing), "no such file"]);

    for text in ["", "\n  \n# just a comment\n"] {
        let (_, c) = wav_and_commands(dir.path(), text);
        let run = listen(
            &m,
            &[
                OsStr::new("--input"),
                wav.as_os_str(),
                OsStr::new("--commands"),
                c.as_os_str(),
            ],
        );
        assert_one_error(&run, &[&shown(&c), "no command phrases"]);
    }
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            dir.path().as_os_str(),
        ],
    );
    assert_one_error(&run, &[&shown(dir.path())]);
}

#[test]
fn phrase_outside_the_vocabulary_is_named() {
    let (dir, m) = model();
    let (wav, c) = wav_and_commands(dir.path(), "yes\nlights on\nturn on 2\n");
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            c.as_os_str(),
        ],
    );
    let line = assert_one_error(
        &run,
        &[
            &shown(&c),
            ":3:",
            "phrase \"turn on 2\"",
            "'2'",
            "vocabulary",
        ],
    );
    assert!(!line.contains("lights"), "{line}");
    let (_, c) = wav_and_commands(dir.path(), "stop => say 'unterminated\n");
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            c.as_os_str(),
        ],
    );
    assert_one_error(&run, &[&shown(&c), "phrase \"stop\"", "unterminated"]);
}

#[test]
fn bad_input_file() {
    let (dir, m) = model();
    let (_, c) = wav_and_commands(dir.path(), "yes\n");
    let missing = dir.path().join("missing.wav");
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            missing.as_os_str(),
            OsStr::new("--commands"),
            c.as_os_str(),
        ],
    );
    assert_one_error(&run, &[&shown(&missing), "no such file"]);
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "this is not audio at all, just some text").unwrap();
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            text.as_os_str(),
            OsStr::new("--commands"),
            c.as_os_str(),
        ],
    );
    assert_one_error(&run, &[&shown(&text), "not an audio file"]);
}

#[test]
fn unknown_capture_device_lists_the_devices_found() {
    let (dir, m) = model();
    let (_, c) = wav_and_commands(dir.path(), "yes\n");
    let run = listen(
        &m,
        &[
            OsStr::new("--device"),
            OsStr::new("no-such-microphone"),
            OsStr::new("--commands"),
            c.as_os_str(),
        ],
    );
    if cfg!(feature = "microphone") {
        let line = assert_one_error(
            &run,
            &["no audio input device named \"no-such-microphone\""],
        );
        assert!(
            line.contains("(devices found: ")
                || line.contains("(the system lists no capture devices)"),
            "{line}"
        );
    } else {
        // The default build has no microphone support: the error says how to get it, and how
        // to do without it.
        assert_one_error(
            &run,
            &[
                "without microphone support",
                "--features microphone",
                "libasound2-dev",
                "--input - --rate 16000",
            ],
        );
    }
}

/// `w2v listen --input -` with `commands`, `extra` arguments and `input` on standard input.
fn listen_stdin(model: &Path, commands: &Path, extra: &[&str], input: Vec<u8>) -> Run {
    let mut args = vec![
        OsStr::new("listen"),
        OsStr::new("--model"),
        model.as_os_str(),
        OsStr::new("--input"),
        OsStr::new("-"),
        OsStr::new("--commands"),
        commands.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    w2v_with_stdin(args, input)
}

/// The events of a JSON run without their wall-clock stamp.
fn events_without_wall_clock(run: &Run) -> Vec<Value> {
    assert_ok(run);
    let mut events = json_lines(run);
    for e in &mut events {
        e.as_object_mut().unwrap().remove("decided_at");
    }
    events
}

#[test]
fn standard_input_streams_wav_or_raw_pcm_like_a_file() {
    let (dir, m) = model();
    let (audio, _) = two_clip_audio();
    let pcm: Vec<i16> = audio
        .iter()
        .map(|&v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    let wav16 = pcm16_wav(RATE, &pcm);
    let file = dir.path().join("two16.wav");
    std::fs::write(&file, &wav16).unwrap();
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, "yes\nzero\n").unwrap();
    let json = OsStr::new("--json");
    let from_file = events_without_wall_clock(&accept_all(&m, &file, &commands, &[json]));
    assert_eq!(from_file.len(), 2, "{from_file:?}");

    let stdin_run = |bytes: Vec<u8>, extra: &[&str]| {
        let all = [&["--threshold", "0", "--json"][..], extra].concat();
        listen_stdin(&m, &commands, &all, bytes)
    };
    // The same WAV piped in; as arecord writes it to a pipe (data length unknown, ~2 GiB
    // declared); and the bare samples as raw 16-bit PCM with --rate.
    let mut live = wav16.clone();
    let data_len = live.windows(4).position(|w| w == b"data").unwrap() + 4;
    live[data_len..data_len + 4].copy_from_slice(&0x7fff_fffeu32.to_le_bytes());
    let raw: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    for (what, bytes, extra) in [
        ("wav", wav16.clone(), &[][..]),
        ("arecord wav", live, &[][..]),
        ("raw", raw.clone(), &["--rate", "16000"][..]),
    ] {
        let got = events_without_wall_clock(&stdin_run(bytes, extra));
        assert_eq!(got, from_file, "{what}");
    }
    // Raw stereo at 8 kHz is mixed down and resampled like any source: both clips are found.
    let stereo8k: Vec<u8> = pcm
        .iter()
        .step_by(2)
        .flat_map(|s| [s.to_le_bytes(), s.to_le_bytes()].concat())
        .collect();
    let got =
        events_without_wall_clock(&stdin_run(stereo8k, &["--rate", "8000", "--channels", "2"]));
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn bad_standard_input_is_one_error_line() {
    let (dir, m) = model();
    let (_, c) = wav_and_commands(dir.path(), "yes\n");
    let wav = pcm16_wav(RATE, &[100; 16000]);
    let run = |bytes: Vec<u8>, extra: &[&str]| listen_stdin(&m, &c, extra, bytes);
    let mut garbage = b"GIF89a".to_vec();
    garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // (what, standard input, extra flags, the error line's parts)
    type Case<'a> = (&'a str, Vec<u8>, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("empty", Vec::new(), vec![], vec!["stdin: ", "empty"]),
        (
            "truncated header",
            wav[..30].to_vec(),
            vec![],
            vec!["stdin: ", "truncated"],
        ),
        (
            "truncated data",
            wav[..wav.len() - 1001].to_vec(),
            vec![],
            vec!["stdin: ", "truncated WAV", "declares 32000 bytes"],
        ),
        (
            "garbage",
            garbage.clone(),
            vec![],
            vec!["stdin: ", "not a WAV", "--rate"],
        ),
        (
            "rate differs from the header",
            wav.clone(),
            vec!["--rate", "8000"],
            vec!["stdin: ", "16000 Hz", "8000 Hz"],
        ),
        (
            "no such rate",
            garbage,
            vec!["--rate", "0"],
            vec!["stdin: ", "0 Hz"],
        ),
        (
            "raw PCM cut inside a sample",
            vec![1, 2, 3],
            vec!["--rate", "16000"],
            vec!["stdin: ", "inside a sample frame"],
        ),
    ];
    for (what, bytes, extra, expected) in cases {
        let r = run(bytes, &extra);
        assert_eq!(r.code, Some(1), "{what}: {r:?}");
        assert_one_error(&r, &expected);
    }
    // --rate describes standard input only.
    let file = dir.path().join("a.wav");
    std::fs::write(&file, &wav).unwrap();
    let r = listen(
        &m,
        &[
            OsStr::new("--input"),
            file.as_os_str(),
            OsStr::new("--rate"),
            OsStr::new("16000"),
        ],
    );
    assert_one_error(&r, &["--rate", "--input -"]);
}

#[test]
fn bad_options_are_usage_errors() {
    let (dir, m) = model();
    let (wav, c) = wav_and_commands(dir.path(), "yes\n");
    let run = listen(
        &m,
        &[
            OsStr::new("--input"),
            wav.as_os_str(),
            OsStr::new("--commands"),
            c.as_os_str(),
            OsStr::new("--threshold"),
            OsStr::new("1.5"),
        ],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("not between 0 and 1"), "{}", run.stderr);
    // --exec needs a grammar; --realtime needs a file.
    let run = listen(
        &m,
        &[OsStr::new("--input"), wav.as_os_str(), OsStr::new("--exec")],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    let run = listen(&m, &[OsStr::new("--realtime")]);
    assert_eq!(run.code, Some(2), "{run:?}");
    // VAD settings that cannot work: a pause longer than the hangover, no peak drop.
    for (flag, value, expected) in [
        ("--pause-ms", "900", ["pause (900 ms)", "hangover (400 ms)"]),
        ("--vad-peak-drop-db", "0", ["peak drop", "got 0"]),
    ] {
        let run = listen(
            &m,
            &[
                OsStr::new("--input"),
                wav.as_os_str(),
                OsStr::new(flag),
                OsStr::new(value),
            ],
        );
        assert_one_error(&run, &expected);
    }
}
