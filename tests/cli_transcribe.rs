//! End-to-end tests of `w2v transcribe` and `w2v eval` through the real binary, with tiny random
//! fixture models exported per test (their transcripts are gibberish, so the tests check
//! structure, timing and agreement between backends, not words).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use tempfile::TempDir;
use w2v_test_support::Tier;

/// Real speech files of several rates and lengths.
const SPEECH: [&str; 4] = [
    "fsdd/0_george_0.wav",                       // 8 kHz, 0.3 s
    "speech_commands/yes/a7216980_nohash_3.wav", // 16 kHz, 1 s
    "sentences/2830-3980-0043.wav",              // 16 kHz, 2 s
    "sentences/english-one-two-three.wav",       // 44.1 kHz, 2.7 s
];

/// A tempdir holding the exported `variant`.
fn model(variant: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let m = export_fixture(variant, dir.path());
    (dir, m)
}

fn transcribe(model: &Path, extra: &[&str], files: &[&Path]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("transcribe"),
        OsStr::new("--model"),
        model.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    args.extend(files.iter().map(|f| f.as_os_str()));
    w2v(args)
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

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// Check one `--format json` line for `file`.
fn check_json_line(v: &Value, file: &Path) {
    assert_eq!(v["file"], shown(file));
    let text = v["text"].as_str().expect("text");
    let duration = num(v, "duration");
    let want = wav_duration(file);
    assert!(
        (duration - want).abs() < 2e-3,
        "{}: duration {duration}, the file holds {want} s",
        file.display()
    );
    let compute = num(v, "compute_seconds");
    assert!(compute >= 0.0);
    let rtf = num(v, "real_time_factor");
    assert!(
        (rtf - compute / duration).abs() <= 1e-9 + 1e-6 * rtf.abs(),
        "real_time_factor {rtf} vs {compute} / {duration}"
    );
    let words = v["words"].as_array().expect("words");
    let mut prev_end = 0.0;
    for w in words {
        let (start, end) = (num(w, "start"), num(w, "end"));
        let c = num(w, "confidence");
        assert!(!w["text"].as_str().unwrap().is_empty(), "{w}");
        assert!(0.0 <= start && start <= end, "{w}");
        assert!(
            start >= prev_end - 1e-9,
            "words overlap or are out of order: {v}"
        );
        assert!(
            end <= duration + 0.02 + 1e-9,
            "{w} ends after the audio ({duration} s)"
        );
        assert!((0.0..=1.0).contains(&c), "{w}");
        prev_end = end;
    }
    let joined: Vec<&str> = words.iter().map(|w| w["text"].as_str().unwrap()).collect();
    assert_eq!(text, joined.join(" "), "text vs words");
}

fn speech_files() -> Vec<PathBuf> {
    SPEECH.iter().map(|s| speech(s)).collect()
}

// ---------------------------------------------------------------------------------------------
// Output formats

#[test]
fn json_format() {
    let (_d, m) = model("base-safetensors");
    let files = speech_files();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    // One file.
    let run = transcribe(&m, &["--format", "json"], &refs[..1]);
    assert_ok(&run);
    let lines = json_lines(&run);
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    check_json_line(&lines[0], refs[0]);
    // Several: one line each, in order.
    let run = transcribe(&m, &["--format", "json"], &refs);
    assert_ok(&run);
    let lines = json_lines(&run);
    assert_eq!(lines.len(), refs.len(), "{}", run.stdout);
    for (v, f) in lines.iter().zip(&refs) {
        check_json_line(v, f);
    }
    assert!(
        lines
            .iter()
            .any(|v| !v["words"].as_array().unwrap().is_empty()),
        "no file produced any words: the structure checks checked nothing"
    );
}

/// `HH:MM:SS,mmm` in seconds.
fn srt_time(s: &str) -> f64 {
    let bytes = s.as_bytes();
    assert!(
        s.len() == 12 && bytes[2] == b':' && bytes[5] == b':' && bytes[8] == b',',
        "bad SRT time {s:?}"
    );
    let n = |r: std::ops::Range<usize>| -> f64 { s[r].parse::<u32>().unwrap() as f64 };
    n(0..2) * 3600.0 + n(3..5) * 60.0 + n(6..8) + n(9..12) / 1000.0
}

/// Parse SubRip: blocks of index, `start --> end`, text lines, then a blank line.
/// Returns (start, end, text) of each cue.
fn parse_srt(s: &str) -> Vec<(f64, f64, String)> {
    if s.is_empty() {
        return Vec::new();
    }
    assert!(
        s.ends_with("\n\n"),
        "SRT should end with a blank line: {s:?}"
    );
    let mut cues = Vec::new();
    for (i, block) in s.trim_end_matches('\n').split("\n\n").enumerate() {
        let lines: Vec<&str> = block.lines().collect();
        assert!(lines.len() >= 3, "short SRT block {block:?}");
        assert_eq!(lines[0], (i + 1).to_string(), "cue index in {block:?}");
        let (a, b) = lines[1]
            .split_once(" --> ")
            .unwrap_or_else(|| panic!("bad SRT timing line {:?}", lines[1]));
        let (start, end) = (srt_time(a), srt_time(b));
        assert!(start <= end, "{block:?}");
        let text = lines[2..].join(" ");
        assert!(!text.trim().is_empty(), "{block:?}");
        cues.push((start, end, text));
    }
    cues
}

#[test]
fn srt_format() {
    let (_d, m) = model("base-safetensors");
    for f in speech_files() {
        let run = transcribe(&m, &["--format", "srt"], &[&f]);
        assert_ok(&run);
        let cues = parse_srt(&run.stdout);
        let json = transcribe(&m, &["--format", "json"], &[&f]);
        assert_ok(&json);
        let v = &json_lines(&json)[0];
        let words = v["words"].as_array().unwrap();
        // The cues hold the same words, in order, at the same times.
        let cue_text: Vec<&str> = cues.iter().map(|c| c.2.as_str()).collect();
        assert_eq!(
            cue_text.join(" "),
            v["text"].as_str().unwrap(),
            "{}",
            f.display()
        );
        if let (Some(first), Some(last)) = (words.first(), words.last()) {
            assert!((cues[0].0 - num(first, "start")).abs() < 1.5e-3);
            assert!((cues.last().unwrap().1 - num(last, "end")).abs() < 1.5e-3);
        } else {
            assert!(run.stdout.is_empty(), "{}", run.stdout);
        }
        let mut prev = 0.0;
        for (start, end, _) in &cues {
            assert!(*start >= prev - 1e-9 && end >= start);
            prev = *end;
        }
    }
}

#[test]
fn text_format() {
    let (_d, m) = model("base-safetensors");
    let files = speech_files();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let json = transcribe(&m, &["--format", "json"], &refs);
    assert_ok(&json);
    let texts: Vec<String> = json_lines(&json)
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();

    // One file: just the transcript (the default format).
    let run = transcribe(&m, &[], &refs[..1]);
    assert_ok(&run);
    assert_eq!(run.stdout, format!("{}\n", texts[0]));

    // Several: one line per file, prefixed by its name.
    let run = transcribe(&m, &["--format", "text"], &refs);
    assert_ok(&run);
    let want: String = refs
        .iter()
        .zip(&texts)
        .map(|(f, t)| format!("{}: {t}\n", f.display()))
        .collect();
    assert_eq!(run.stdout, want);
}

// ---------------------------------------------------------------------------------------------
// Backends agree

fn words_of(v: &Value) -> Vec<(String, f64, f64, f64)> {
    v["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["text"].as_str().unwrap().to_string(),
                num(w, "start"),
                num(w, "end"),
                num(w, "confidence"),
            )
        })
        .collect()
}

fn assert_backends_agree(variant: &str, files: &[PathBuf], extra: &[&str]) {
    let (_d, m) = model(variant);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut out = Vec::new();
    for backend in ["tract", "ort"] {
        let mut args = vec!["--backend", backend, "--format", "json"];
        args.extend_from_slice(extra);
        let run = transcribe(&m, &args, &refs);
        assert_ok(&run);
        out.push(json_lines(&run));
    }
    assert_eq!(out[0].len(), refs.len());
    assert_eq!(out[1].len(), refs.len());
    for ((t, o), f) in out[0].iter().zip(&out[1]).zip(&refs) {
        check_json_line(t, f);
        check_json_line(o, f);
        let what = format!("{variant} {extra:?} {}", f.display());
        assert_eq!(
            t["text"], o["text"],
            "{what}: text differs between tract and ort"
        );
        assert_eq!(t["duration"], o["duration"], "{what}");
        let (tw, ow) = (words_of(t), words_of(o));
        assert_eq!(tw.len(), ow.len(), "{what}: words differ");
        for (a, b) in tw.iter().zip(&ow) {
            // Text and times are decided by the argmax: identical. Confidences are softmax
            // probabilities from two float implementations of the same fp32 graph: its tier.
            assert_eq!((&a.0, a.1, a.2), (&b.0, b.1, b.2), "{what}: word differs");
            assert!(
                (a.3 - b.3).abs() < Tier::Fp32Graph.f64(),
                "{what}: confidence {a:?} vs {b:?}"
            );
        }
    }
    // The text output is byte-identical.
    let text: Vec<String> = ["tract", "ort"]
        .iter()
        .map(|backend| {
            let mut args = vec!["--backend", *backend];
            args.extend_from_slice(extra);
            let run = transcribe(&m, &args, &refs);
            assert_ok(&run);
            run.stdout
        })
        .collect();
    assert_eq!(
        text[0], text[1],
        "{variant}: text output differs between backends"
    );
}

#[test]
fn tract_and_ort_agree_group_norm_model() {
    assert_backends_agree("base-safetensors", &speech_files(), &[]);
}

#[test]
fn tract_and_ort_agree_layer_norm_model_with_attention_mask() {
    assert_backends_agree("large-stable-sharded", &speech_files(), &[]);
}

#[test]
fn tract_and_ort_agree_on_chunked_long_audio() {
    // 29 s of 8 kHz speech in 5 s windows: many windows, stitched.
    let files = vec![speech("sentences/1272-128104-0004-8k.wav")];
    assert_backends_agree("base-safetensors", &files, &["--chunk-seconds", "5"]);
}

// ---------------------------------------------------------------------------------------------
// Bad audio

/// Transcribe the single bad file `file` with both backends: one error line naming it (plus
/// the failure summary), nothing on stdout.
fn bad_audio(file: &Path, phrases: &[&str]) {
    let (_d, m) = model("base-safetensors");
    for backend in ["tract", "ort"] {
        let run = transcribe(&m, &["--backend", backend], &[file]);
        assert_transcribe_failures(&run, &[(file, phrases)], 1);
        assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    }
}

#[test]
fn empty_file() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("empty.wav");
    std::fs::write(&f, b"").unwrap();
    bad_audio(&f, &["empty"]);
}

#[test]
fn zero_length_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("zero.wav");
    std::fs::write(&f, pcm16_wav(16000, &[])).unwrap();
    bad_audio(&f, &["zero length"]);
}

#[test]
fn truncated_header() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("truncated.wav");
    let wav = pcm16_wav(16000, &[0; 1000]);
    std::fs::write(&f, &wav[..30]).unwrap();
    bad_audio(&f, &["truncated"]);
}

#[test]
fn text_file_is_not_audio() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["notes.txt", "notes.wav"] {
        let f = tmp.path().join(name);
        std::fs::write(&f, "this is a text file, not audio\n".repeat(4)).unwrap();
        bad_audio(&f, &["not an audio file"]);
    }
}

#[test]
fn unsupported_codec_in_ogg() {
    let f = repo().join("engine/tests/data/audio/bad/opus.ogg");
    bad_audio(&f, &["codec", "Opus"]);
}

#[test]
fn unsupported_codec_in_wav() {
    // A well-formed WAV whose payload is MPEG audio (format tag 0x55): the container is fine,
    // the codec is what is not supported.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("mp3-in-wav.wav");
    std::fs::write(&f, wav_bytes(0x55, 1, 16000, 16, &[0u8; 3200])).unwrap();
    bad_audio(&f, &["codec"]);
}

#[test]
fn nan_and_inf_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let mut samples = tone(16000, 0.5);
    samples[4000] = f32::NAN;
    let f = tmp.path().join("nan.wav");
    std::fs::write(&f, f32_wav(16000, &samples)).unwrap();
    bad_audio(&f, &["NaN", "0.250"]);

    samples[4000] = f32::NEG_INFINITY;
    let f = tmp.path().join("inf.wav");
    std::fs::write(&f, f32_wav(16000, &samples)).unwrap();
    bad_audio(&f, &["infinite"]);
}

#[test]
fn corrupt_flac() {
    let f = repo().join("engine/tests/data/audio/bad/corrupt_mid.flac");
    bad_audio(&f, &["corrupt"]);
}

#[test]
fn directory_and_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    bad_audio(tmp.path(), &["directory"]);
    bad_audio(&tmp.path().join("missing.wav"), &["no such file"]);
}

#[test]
fn float_wav_tone_transcribes() {
    // The NaN test's file minus the NaN: the failure above is the NaN, not the format.
    let (_d, m) = model("base-safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("tone.wav");
    std::fs::write(&f, f32_wav(16000, &tone(16000, 0.5))).unwrap();
    let run = transcribe(&m, &["--format", "json"], &[&f]);
    assert_ok(&run);
    check_json_line(&json_lines(&run)[0], &f);
}

#[test]
fn audio_shorter_than_one_frame() {
    // Fewer samples than the 400-sample receptive field: no frame, so an empty transcript
    // (the same on both backends, for models with and without an attention mask), never a
    // panic or an abort. 400 samples make exactly one frame.
    let tmp = tempfile::tempdir().unwrap();
    for variant in ["base-safetensors", "large-stable-sharded"] {
        let (_d, m) = model(variant);
        for (rate, n) in [
            (16000u32, 1usize),
            (16000, 100),
            (16000, 399),
            (8000, 1),
            (16000, 400),
        ] {
            let f = tmp.path().join(format!("short-{rate}-{n}.wav"));
            std::fs::write(&f, pcm16_wav(rate, &vec![1000; n])).unwrap();
            for backend in ["tract", "ort"] {
                let run = transcribe(&m, &["--backend", backend, "--format", "json"], &[&f]);
                assert_no_panic(&run);
                assert_ok(&run);
                let v = &json_lines(&run)[0];
                check_json_line(v, &f);
                let what = format!("{variant} {backend} {}", f.display());
                if n < 400 {
                    assert_eq!(v["text"], "", "{what}");
                    assert_eq!(v["words"], Value::Array(vec![]), "{what}");
                } else {
                    assert!(v["words"].as_array().unwrap().len() <= 1, "{what}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad models

fn bad_model(model: &Path, phrases: &[&str]) {
    let f = speech(SPEECH[0]);
    let name = shown(model);
    let mut want = vec![name.as_str()];
    want.extend_from_slice(phrases);
    for backend in ["tract", "ort"] {
        let run = transcribe(model, &["--backend", backend], &[&f]);
        assert_one_error(&run, &want);
        assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    }
}

#[test]
fn model_that_is_a_text_file() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("model.onnx");
    std::fs::write(&m, "not a model at all\n").unwrap();
    bad_model(&m, &["not an ONNX model"]);
}

#[test]
fn onnx_model_without_w2v_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("other.onnx");
    std::fs::write(&m, bare_onnx(&[])).unwrap();
    bad_model(&m, &["metadata"]);
    std::fs::write(&m, bare_onnx(&[("author", "someone else")])).unwrap();
    bad_model(&m, &["metadata"]);
}

#[test]
fn truncated_model() {
    let (d, m) = model("base-safetensors");
    let bytes = std::fs::read(&m).unwrap();
    let cut = d.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    bad_model(&cut, &[]);
}

#[test]
fn missing_model_and_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    bad_model(&tmp.path().join("missing.onnx"), &["no such model file"]);
    bad_model(tmp.path(), &["directory"]);
}

// ---------------------------------------------------------------------------------------------
// Good and bad files in one run

#[test]
fn good_files_are_transcribed_despite_bad_ones() {
    let (_d, m) = model("base-safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let text = tmp.path().join("text.wav");
    std::fs::write(&text, "hello, this is not audio\n").unwrap();
    let good = speech_files();
    let files: Vec<&Path> = vec![&good[0], &empty, &good[1], &text, &good[2]];
    let good_refs: Vec<&Path> = vec![&good[0], &good[1], &good[2]];

    let alone = transcribe(&m, &["--format", "json"], &good_refs);
    assert_ok(&alone);
    let texts: Vec<String> = json_lines(&alone)
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();

    for backend in ["tract", "ort"] {
        let run = transcribe(&m, &["--backend", backend], &files);
        assert_transcribe_failures(
            &run,
            &[(&empty, &["empty"]), (&text, &["not an audio file"])],
            5,
        );
        let want: String = good_refs
            .iter()
            .zip(&texts)
            .map(|(f, t)| format!("{}: {t}\n", f.display()))
            .collect();
        assert_eq!(run.stdout, want, "{backend}");

        let run = transcribe(&m, &["--backend", backend, "--format", "json"], &files);
        assert_transcribe_failures(
            &run,
            &[(&empty, &["empty"]), (&text, &["not an audio file"])],
            5,
        );
        let lines = json_lines(&run);
        assert_eq!(lines.len(), 3);
        for (v, f) in lines.iter().zip(&good_refs) {
            check_json_line(v, f);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// eval

/// Five labelled utterances from ../shared/data: (relative path, transcript).
fn eval_rows() -> Vec<(String, String)> {
    let wanted = [
        "fsdd/0_george_0.wav",
        "fsdd/0_george_1.wav",
        "speech_commands/yes/a7216980_nohash_3.wav",
        "sentences/2830-3980-0043.wav",
        "sentences/cards-001.wav",
    ];
    let tsv = std::fs::read_to_string(shared_data().join("transcripts.tsv")).unwrap();
    let rows: Vec<(String, String)> = wanted
        .iter()
        .map(|w| {
            let line = tsv
                .lines()
                .find(|l| l.split('\t').next() == Some(w))
                .unwrap_or_else(|| panic!("{w} is not in transcripts.tsv"));
            let mut f = line.split('\t');
            (f.next().unwrap().to_string(), f.next().unwrap().to_string())
        })
        .collect();
    rows
}

/// `rows` as a headerless manifest of absolute paths into ../shared/data.
fn write_absolute_manifest(rows: &[(String, String)], tsv: &Path) {
    let data = shared_data();
    let text: String = rows
        .iter()
        .map(|(p, t)| format!("{}\t{t}\n", data.join(p).display()))
        .collect();
    std::fs::write(tsv, text).unwrap();
}

fn eval(model: &Path, data: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("eval"),
        OsStr::new("--model"),
        model.as_os_str(),
        OsStr::new("--data"),
        data.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    w2v(args)
}

fn check_eval_report(r: &Value, utterances: u64, failed: u64) {
    assert_eq!(r["utterances"], utterances, "{r}");
    assert_eq!(r["failed"], failed, "{r}");
    for key in [
        "wer",
        "cer",
        "real_time_factor",
        "audio_seconds",
        "compute_seconds",
    ] {
        assert!(num(r, key) >= 0.0, "{key} in {r}");
        assert!(num(r, key).is_finite(), "{key} in {r}");
    }
    let rtf = num(r, "real_time_factor");
    let (audio, compute) = (num(r, "audio_seconds"), num(r, "compute_seconds"));
    assert!((rtf - compute / audio).abs() <= 1e-9 + 1e-6 * rtf, "{r}");
    // wer = (S + D + I) / N over words.
    let w = &r["words"];
    let errors = num(w, "substitutions") + num(w, "deletions") + num(w, "insertions");
    assert!(
        (num(r, "wer") - errors / num(w, "reference_len")).abs() < 1e-9,
        "{r}"
    );
}

#[test]
fn eval_absolute_and_relative_manifests_agree() {
    let (_d, m) = model("base-safetensors");
    let rows = eval_rows();
    let data = shared_data();
    let tmp = tempfile::tempdir().unwrap();

    // Absolute paths, no header.
    let abs = tmp.path().join("abs.tsv");
    write_absolute_manifest(&rows, &abs);
    let run = eval(&m, &abs, &["--json"]);
    assert_ok(&run);
    let a = parse_json(&run);
    check_eval_report(&a, 5, 0);
    let want_audio: f64 = rows.iter().map(|(p, _)| wav_duration(&data.join(p))).sum();
    assert!((num(&a, "audio_seconds") - want_audio).abs() < 1e-2, "{a}");
    let ref_words: usize = rows.iter().map(|(_, t)| t.split_whitespace().count()).sum();
    assert_eq!(a["words"]["reference_len"], ref_words as u64, "{a}");

    // Paths relative to the TSV, with a header and extra columns, as transcripts.tsv has.
    let set = tmp.path().join("set");
    for (p, _) in &rows {
        let dst = set.join(p);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(data.join(p), dst).unwrap();
    }
    let rel = set.join("data.tsv");
    let mut text = String::from("path\ttranscript\tsample_rate\tsource\n");
    for (p, t) in &rows {
        text.push_str(&format!("{p}\t{t}\t16000\ttest\n"));
    }
    std::fs::write(&rel, text).unwrap();
    let run = eval(&m, &rel, &["--json"]);
    assert_ok(&run);
    let r = parse_json(&run);
    check_eval_report(&r, 5, 0);
    for key in [
        "utterances",
        "wer",
        "cer",
        "words",
        "chars",
        "audio_seconds",
    ] {
        assert_eq!(a[key], r[key], "{key}: absolute vs relative manifest");
    }

    // The same numbers on ONNX Runtime.
    let run = eval(&m, &rel, &["--json", "--backend", "ort"]);
    assert_ok(&run);
    let o = parse_json(&run);
    assert_eq!(o["backend"], "ort");
    for key in ["utterances", "wer", "cer", "words", "chars"] {
        assert_eq!(a[key], o[key], "{key}: tract vs ort");
    }

    // The text report.
    let run = eval(&m, &rel, &[]);
    assert_ok(&run);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert_eq!(lines[0], "utterances: 5 (0 failed)");
    assert!(lines[1].starts_with("WER: ") && lines[2].starts_with("CER: "));
}

#[test]
fn eval_row_with_a_missing_file_counts_as_failed() {
    let (_d, m) = model("base-safetensors");
    let data = shared_data();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.wav");
    let mut text: String = eval_rows()
        .iter()
        .map(|(p, t)| format!("{}\t{t}\n", data.join(p).display()))
        .collect();
    text.push_str(&format!("{}\tgone\n", missing.display()));
    let tsv = tmp.path().join("data.tsv");
    std::fs::write(&tsv, text).unwrap();
    let run = eval(&m, &tsv, &["--json"]);
    assert_one_error(&run, &[&shown(&missing), "no such file"]);
    let r = parse_json(&run);
    check_eval_report(&r, 5, 1);
}

#[test]
fn eval_bad_manifests() {
    let (_d, m) = model("base-safetensors");
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("missing.tsv");
    let run = eval(&m, &missing, &["--json"]);
    assert_one_error(&run, &[&shown(&missing)]);
    assert!(run.stdout.is_empty());

    let bad = tmp.path().join("bad.tsv");
    std::fs::write(&bad, "a.wav\thello\nno tab on this line\n").unwrap();
    let run = eval(&m, &bad, &["--json"]);
    assert_one_error(&run, &[&format!("{}:2", bad.display())]);
    assert!(run.stdout.is_empty());

    let empty = tmp.path().join("empty.tsv");
    std::fs::write(&empty, "path\ttranscript\n").unwrap();
    let run = eval(&m, &empty, &["--json"]);
    assert_one_error(&run, &[&shown(&empty), "no utterances"]);
    assert!(run.stdout.is_empty());
}

/// A model whose graph a backend cannot build (an op no runtime knows) is the model's failure,
/// not each file's: tract builds its plan per input length, at the first file, and that must
/// stop `transcribe` and `eval` with one error line naming the model, as loading does for ORT.
#[test]
fn a_model_no_backend_can_build_is_one_error_not_one_per_file() {
    use prost::Message;
    let (d, m) = model("base-safetensors");
    let mut proto =
        w2v_engine::onnx_pb::ModelProto::decode(std::fs::read(&m).unwrap().as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "Erf" || n.op_type == "Gelu")
        .expect("the exported graph has a GELU");
    node.op_type = "NoSuchOp".to_string();
    let bad = d.path().join("unbuildable.onnx");
    std::fs::write(&bad, proto.encode_to_vec()).unwrap();
    let name = shown(&bad);

    let rows = eval_rows();
    let data = shared_data();
    let tsv = d.path().join("data.tsv");
    write_absolute_manifest(&rows, &tsv);
    let files: Vec<PathBuf> = rows.iter().map(|(p, _)| data.join(p)).collect();
    let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    for backend in ["tract", "ort"] {
        let run = eval(&bad, &tsv, &["--backend", backend, "--json"]);
        assert_one_error(&run, &[&name, "NoSuchOp"]);
        assert!(run.stdout.is_empty(), "{backend} stdout: {}", run.stdout);
        let run = transcribe(&bad, &["--backend", backend], &files);
        assert_one_error(&run, &[&name, "NoSuchOp"]);
    }
}
