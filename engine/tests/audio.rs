//! Audio front end: decoding of every supported format, mono mix-down, resampling quality,
//! normalization against Hugging Face, and the error for each kind of bad input.
//!
//! The files under tests/data/audio/ come from tools/fixtures/gen_audio_cases.py: a 440 Hz sine
//! at amplitude 0.5 lasting 0.5 s in each format (see that script for rates and codecs).

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use w2v_engine::audio::{self, AudioError, Resampler};
use w2v_test_support::max_abs_diff;

const FREQ: f64 = 440.0;
const AMP: f64 = 0.5;
const SECONDS: f64 = 0.5;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/audio")
        .join(name)
}

fn sine(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Least-squares fit of `a sin + b cos + c` at `freq`: returns (amplitude, phase of the sine,
/// rms of the residual).
fn fit_sine(x: &[f32], rate: u32, freq: f64) -> (f64, f64, f64) {
    let w = 2.0 * PI * freq / f64::from(rate);
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for (i, &y) in x.iter().enumerate() {
        let t = w * i as f64;
        let basis = [t.sin(), t.cos(), 1.0];
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] += basis[r] * basis[c];
            }
            v[r] += basis[r] * f64::from(y);
        }
    }
    let coef = solve3(m, v);
    let mut sse = 0.0;
    for (i, &y) in x.iter().enumerate() {
        let t = w * i as f64;
        let e = f64::from(y) - (coef[0] * t.sin() + coef[1] * t.cos() + coef[2]);
        sse += e * e;
    }
    let amp = coef[0].hypot(coef[1]);
    (amp, coef[1].atan2(coef[0]), (sse / x.len() as f64).sqrt())
}

fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let piv = (col..3)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap();
        m.swap(col, piv);
        v.swap(col, piv);
        for r in 0..3 {
            if r != col {
                let f = m[r][col] / m[col][col];
                let pivot_row = m[col];
                for (x, p) in m[r].iter_mut().zip(pivot_row) {
                    *x -= f * p;
                }
                v[r] -= f * v[col];
            }
        }
    }
    [v[0] / m[0][0], v[1] / m[1][1], v[2] / m[2][2]]
}

/// Frequency from interpolated positive-going zero crossings.
fn zero_crossing_freq(x: &[f32], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for i in 1..x.len() {
        let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(i as f64 - 1.0 + a / (a - b));
        }
    }
    assert!(crossings.len() >= 3, "too few zero crossings");
    let span = crossings.last().unwrap() - crossings[0];
    (crossings.len() - 1) as f64 * f64::from(rate) / span
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Case {
    file: &'static str,
    rate: u32,
    codec: &'static str,
    /// Largest allowed |decoded - exact sine| per sample (lossless formats), None for lossy.
    max_err: Option<f64>,
    /// Amplitude tolerance (absolute) and residual rms tolerance of the fitted sine.
    amp_tol: f64,
    resid_tol: f64,
}

const CASES: &[Case] = &[
    Case {
        file: "sine_u8.wav",
        rate: 8000,
        codec: "pcm_u8",
        max_err: Some(1.0 / 128.0),
        amp_tol: 2e-3,
        resid_tol: 3.5e-3,
    },
    Case {
        file: "sine_s16.wav",
        rate: 16000,
        codec: "pcm_s16le",
        max_err: Some(1.0 / 32768.0),
        amp_tol: 1e-4,
        resid_tol: 2e-5,
    },
    Case {
        file: "sine_s24.wav",
        rate: 16000,
        codec: "pcm_s24le",
        max_err: Some(2.0 / 8_388_608.0),
        amp_tol: 1e-6,
        resid_tol: 1e-6,
    },
    Case {
        file: "sine_s32.wav",
        rate: 16000,
        codec: "pcm_s32le",
        max_err: Some(1e-7),
        amp_tol: 1e-6,
        resid_tol: 1e-6,
    },
    Case {
        file: "sine_f32.wav",
        rate: 16000,
        codec: "pcm_f32le",
        max_err: Some(1e-7),
        amp_tol: 1e-6,
        resid_tol: 1e-6,
    },
    Case {
        file: "sine.flac",
        rate: 22050,
        codec: "flac",
        max_err: Some(1.0 / 32768.0),
        amp_tol: 1e-4,
        resid_tol: 2e-5,
    },
    Case {
        file: "sine.mp3",
        rate: 44100,
        codec: "mp3",
        max_err: None,
        amp_tol: 0.01,
        resid_tol: 5e-3,
    },
    Case {
        file: "sine.ogg",
        rate: 48000,
        codec: "vorbis",
        max_err: None,
        amp_tol: 0.01,
        resid_tol: 5e-3,
    },
];

#[test]
fn decodes_every_format() {
    for case in CASES {
        let d = audio::decode_file(&data(case.file)).unwrap_or_else(|e| panic!("{e}"));
        let expected_len = (f64::from(case.rate) * SECONDS).round() as usize;
        assert_eq!(d.sample_rate, case.rate, "{}", case.file);
        assert_eq!(d.channels, 1, "{}", case.file);
        assert_eq!(d.codec, case.codec, "{}", case.file);
        assert_eq!(d.samples.len(), expected_len, "{}: length", case.file);

        if let Some(max_err) = case.max_err {
            let exact = sine(case.rate, FREQ, AMP, expected_len);
            let worst = max_abs_diff(&d.samples, &exact);
            assert!(
                worst.diff <= max_err,
                "{}: sample error over {max_err:e}: {worst}",
                case.file
            );
        }

        // Skip 10% at each end (codec priming / edges), then fit the sine.
        let edge = d.samples.len() / 10;
        let mid = &d.samples[edge..d.samples.len() - edge];
        let (amp, _, resid) = fit_sine(mid, case.rate, FREQ);
        let zc = zero_crossing_freq(mid, case.rate);
        eprintln!(
            "{:<16} amp {amp:.6} (err {:+.2e})  resid rms {resid:.2e}  zero-crossing freq {zc:.3} Hz",
            case.file,
            amp - AMP
        );
        assert!(
            (amp - AMP).abs() <= case.amp_tol,
            "{}: amplitude {amp}",
            case.file
        );
        assert!(
            resid <= case.resid_tol,
            "{}: residual rms {resid}",
            case.file
        );
        assert!((zc - FREQ).abs() < 0.5, "{}: frequency {zc}", case.file);
    }
}

#[test]
fn stereo_mixes_to_the_mean() {
    let d = audio::decode_file(&data("stereo_s16.wav")).unwrap();
    assert_eq!(d.channels, 2);
    assert_eq!(d.sample_rate, 16000);
    assert_eq!(d.samples.len(), 8000);
    let left = sine(16000, 440.0, 0.5, 8000);
    let right = sine(16000, 1000.0, 0.25, 8000);
    for (i, &s) in d.samples.iter().enumerate() {
        let want = (f64::from(left[i]) + f64::from(right[i])) / 2.0;
        // Each channel is quantized to 16 bits (error <= half a step), so is their mean.
        assert!(
            (f64::from(s) - want).abs() <= 1.0 / 32768.0,
            "sample {i}: {s} vs {want}"
        );
    }
    // Both tones are present at half their channel amplitude.
    let (a440, _, _) = fit_sine(&d.samples, 16000, 440.0);
    let (a1000, _, _) = fit_sine(&d.samples, 16000, 1000.0);
    assert!((a440 - 0.25).abs() < 1e-3, "{a440}");
    assert!((a1000 - 0.125).abs() < 1e-3, "{a1000}");
}

#[test]
fn load_decodes_and_resamples() {
    for file in [
        "sine.mp3",
        "sine.ogg",
        "sine.flac",
        "sine_u8.wav",
        "sine_s16.wav",
    ] {
        let x = audio::load(&data(file), 16000).unwrap();
        assert_eq!(x.len(), 8000, "{file}");
        let mid = &x[800..7200];
        let (amp, _, _) = fit_sine(mid, 16000, FREQ);
        assert!((amp - AMP).abs() < 0.02, "{file}: amplitude {amp}");
        assert!(
            (zero_crossing_freq(mid, 16000) - FREQ).abs() < 0.5,
            "{file}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

fn expect_err(path: &Path, what: &str, check: impl Fn(&AudioError) -> bool) {
    let err = match audio::decode_file(path) {
        Ok(d) => panic!(
            "{}: decoded {} samples, expected an error ({what})",
            path.display(),
            d.samples.len()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(check(&err), "{}: wrong error kind: {msg}", path.display());
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(name), "message does not name the file: {msg}");
    assert!(!msg.contains('\n'), "message is not one line: {msg:?}");
    assert!(msg.contains(what), "message should say {what:?}: {msg}");
    // load() reports the same error.
    let err2 = audio::load(path, 16000).unwrap_err();
    assert_eq!(err2.to_string(), msg);
}

#[test]
fn missing_file() {
    expect_err(&data("no_such_file.wav"), "no such file", |e| {
        matches!(e, AudioError::NotFound { .. })
    });
}

#[test]
fn directory() {
    expect_err(&data("bad"), "is a directory", |e| {
        matches!(e, AudioError::IsDirectory { .. })
    });
}

#[test]
fn empty_file() {
    expect_err(&data("bad/empty.wav"), "empty", |e| {
        matches!(e, AudioError::EmptyFile { .. })
    });
}

#[test]
fn not_audio() {
    expect_err(&data("bad/not_audio.wav"), "not an audio file", |e| {
        matches!(e, AudioError::UnknownFormat { .. })
    });
    // Random bytes, with no extension to hint at anything.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noise.bin");
    let mut state = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..5000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8 & 0x7f // never 0xFF, so no MP3 frame sync can appear
        })
        .collect();
    std::fs::write(&p, bytes).unwrap();
    expect_err(&p, "not an audio file", |e| {
        matches!(e, AudioError::UnknownFormat { .. })
    });
}

#[test]
fn truncated_header() {
    expect_err(&data("bad/truncated_header.wav"), "truncated", |e| {
        matches!(e, AudioError::TruncatedHeader { .. })
    });
}

#[test]
fn zero_length_audio() {
    expect_err(&data("bad/zero_length.wav"), "zero length", |e| {
        matches!(e, AudioError::ZeroLength { .. })
    });
}

#[test]
fn nan_samples() {
    expect_err(&data("bad/nan_f32.wav"), "NaN", |e| {
        matches!(e, AudioError::NonFinite { .. })
    });
}

#[test]
fn infinite_samples() {
    // The same file with the NaN replaced by an ordinary sample: the infinity is reported.
    let mut bytes = std::fs::read(data("bad/nan_f32.wav")).unwrap();
    let at = 44 + 100 * 4;
    bytes[at..at + 4].copy_from_slice(&0.25f32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("inf_f32.wav");
    std::fs::write(&p, bytes).unwrap();
    expect_err(&p, "infinite", |e| {
        matches!(e, AudioError::NonFinite { .. })
    });
}

#[test]
fn unsupported_codec() {
    expect_err(
        &data("bad/opus.ogg"),
        "unsupported audio codec: Opus",
        |e| matches!(e, AudioError::UnsupportedCodec { .. }),
    );
}

#[test]
fn decode_error_mid_stream() {
    expect_err(&data("bad/corrupt_mid.flac"), "decode error at", |e| {
        matches!(e, AudioError::Decode { .. })
    });
}

#[test]
fn truncated_data_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (file, keep) in [
        ("sine.flac", 0.66),   // cut inside a frame
        ("sine.flac", 0.08),   // metadata complete, no whole frame
        ("sine_s16.wav", 0.5), // data chunk shorter than its header says
    ] {
        let bytes = std::fs::read(data(file)).unwrap();
        let p = dir.path().join(format!("cut_{keep}_{file}"));
        std::fs::write(&p, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
        expect_err(&p, "truncated", |e| matches!(e, AudioError::Decode { .. }));
    }
}

/// Truncations and byte flips of every good file: decoding returns Ok or a one-line error naming
/// the file, and never panics.
#[test]
fn mangled_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for case in CASES.iter().map(|c| c.file).chain(["stereo_s16.wav"]) {
        let bytes = std::fs::read(data(case)).unwrap();
        let ext = Path::new(case).extension().unwrap().to_str().unwrap();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for cut in [
            1,
            4,
            11,
            12,
            36,
            44,
            45,
            100,
            300,
            1000,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            if cut < bytes.len() {
                variants.push(bytes[..cut].to_vec());
            }
        }
        let mut state = 0x9e37_79b9u32;
        for _ in 0..40 {
            let mut v = bytes.clone();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = state as usize % v.len();
                v[at] = (state >> 8) as u8;
            }
            variants.push(v);
        }
        for (i, v) in variants.iter().enumerate() {
            let p = dir.path().join(format!("m{i}.{ext}"));
            std::fs::write(&p, v).unwrap();
            let key = match audio::decode_file(&p) {
                Ok(_) => "ok".to_string(),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&p.display().to_string()), "{msg}");
                    assert!(!msg.contains('\n'), "{msg:?}");
                    if msg.contains("internally") {
                        eprintln!("{case} variant {i}: {msg}");
                    }
                    format!("{:?}", std::mem::discriminant(&e))
                }
            };
            *outcomes.entry(key).or_default() += 1;
        }
    }
    eprintln!("{outcomes:?}");
}

// ---------------------------------------------------------------------------------------------
// Resampling

/// Settling region at each end of a resampled signal: the band-limited output of a sine that
/// starts and stops abruptly rings for a few ms (measured: error below -94 dB after 10 ms when
/// downsampling from 22.05-48 kHz, below -98 dB after 20 ms and -120 dB after 30 ms for 8 kHz).
const SETTLE_S: f64 = 0.03;

struct ResampleQuality {
    len: usize,
    /// Largest |output - exact sine at the output times| outside the settling regions.
    max_err: f64,
    /// Largest |output| anywhere, settling regions included.
    peak: f64,
    /// Fitted amplitude and frequency (zero crossings) outside the settling regions.
    amp: f64,
    freq: f64,
}

fn measure(from: u32, to: u32, freq: f64) -> ResampleQuality {
    let x = sine(from, freq, AMP, from as usize); // one second
    let y = audio::resample(&x, from, to);
    let exact = sine(to, freq, AMP, y.len());
    let edge = (SETTLE_S * f64::from(to)) as usize;
    let mid = &y[edge..y.len() - edge];
    let max_err = max_abs_diff(mid, &exact[edge..edge + mid.len()]).diff;
    let peak = y.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
    let (amp, _, _) = fit_sine(mid, to, freq);
    ResampleQuality {
        len: y.len(),
        max_err,
        peak,
        amp,
        freq: zero_crossing_freq(mid, to),
    }
}

#[test]
fn resampling_preserves_sines() {
    for from in [8000, 11025, 22050, 44100, 48000] {
        for (freq, tol_db) in [(440.0, -100.0), (1000.0, -100.0), (3000.0, -100.0)] {
            let q = measure(from, 16000, freq);
            let err_db = db(q.max_err / AMP);
            eprintln!(
                "{from:>5} -> 16000, {freq:>6} Hz: len {}, max err {:.2e} ({err_db:.1} dB), amp err {:+.1e}, \
                 freq {:.3} Hz, peak {:.4}",
                q.len,
                q.max_err,
                q.amp - AMP,
                q.freq,
                q.peak
            );
            assert_eq!(q.len, 16000);
            assert!(
                err_db < tol_db,
                "{from} Hz, {freq} Hz: error {err_db:.1} dB"
            );
            assert!(
                (q.amp - AMP).abs() < 1e-5,
                "{from} Hz, {freq} Hz: amplitude {}",
                q.amp
            );
            assert!(
                (q.freq - freq).abs() < 0.02,
                "{from} Hz, {freq} Hz: frequency {}",
                q.freq
            );
            // Edge transients stay small: the onset/offset ringing of a band-limited cut sine.
            assert!(q.peak < AMP * 1.1, "{from} Hz, {freq} Hz: peak {}", q.peak);
        }
    }
    // Upsampling too.
    let q = measure(16000, 44100, 440.0);
    assert_eq!(q.len, 44100);
    assert!(db(q.max_err / AMP) < -100.0, "{}", q.max_err);
}

#[test]
fn resampling_attenuates_above_nyquist() {
    // Tones above the new Nyquist frequency (8 kHz) must disappear, not alias.
    for (from, freq) in [
        (44100, 8200.0),
        (44100, 8500.0),
        (44100, 10000.0),
        (44100, 20000.0),
        (48000, 9000.0),
        (48000, 12000.0),
        (22050, 8200.0),
    ] {
        let x = sine(from, freq, AMP, from as usize);
        let y = audio::resample(&x, from, 16000);
        let edge = (SETTLE_S * 16000.0) as usize;
        let att = db(rms(&y[edge..y.len() - edge]) / (AMP / 2f64.sqrt()));
        eprintln!("{from} -> 16000, {freq} Hz: output/input rms {att:.1} dB");
        assert!(
            att < -120.0,
            "{from} Hz, {freq} Hz: only {att:.1} dB attenuation"
        );
    }
    // The passband is flat nearly up to Nyquist.
    for (freq, tol_db) in [
        (100.0, 0.001),
        (4000.0, 0.001),
        (7000.0, 0.001),
        (7500.0, 0.01),
    ] {
        let q = measure(44100, 16000, freq);
        let gain = db(q.amp / AMP);
        eprintln!("44100 -> 16000 passband {freq} Hz: gain {gain:+.4} dB");
        assert!(gain.abs() < tol_db, "{freq} Hz: gain {gain} dB");
    }
}

#[test]
fn resampled_length_is_rounded_ratio() {
    for (from, to) in [
        (44100u32, 16000u32),
        (48000, 16000),
        (8000, 16000),
        (22050, 16000),
        (16000, 16000),
    ] {
        for n in [0usize, 1, 2, 3, 5, 440, 441, 1000, 1763, 1764, 1765, 12345] {
            let y = audio::resample(&vec![0.1; n], from, to);
            let want = (n as f64 * f64::from(to) / f64::from(from)).round() as usize;
            assert_eq!(y.len(), want, "{from} -> {to}, n = {n}");
        }
    }
}

#[test]
fn resampler_streaming_matches_one_shot() {
    let from = 44100;
    let x = sine(from, 440.0, AMP, 30_000);
    let whole = audio::resample(&x, from, 16000);
    let mut r = Resampler::new(from, 16000).unwrap();
    for round in 0..2 {
        // The resampler is reusable after flush().
        for piece in [1usize, 7, 100, 1764, 4096, 30_000] {
            let mut out = Vec::new();
            for c in x.chunks(piece) {
                r.process_into(c, &mut out);
            }
            out.extend(r.flush());
            assert_eq!(out, whole, "round {round}, piece size {piece}");
        }
    }
    // Equal rates pass through.
    let mut same = Resampler::new(16000, 16000).unwrap();
    assert_eq!(same.process(&x[..10]), x[..10].to_vec());
    assert!(same.flush().is_empty());
}

#[test]
fn normalize_matches_hugging_face() {
    let text = std::fs::read_to_string(data("normalize_ref.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let mut x = floats("input");
    let want = floats("output");
    audio::normalize(&mut x);
    for (i, (a, b)) in x.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-5, "sample {i}: {a} vs Hugging Face {b}");
    }
}
