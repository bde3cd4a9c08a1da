//! File decoding through Symphonia.

use std::fs::File;
use std::io::ErrorKind;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use symphonia::core::codecs::audio::well_known as codec_ids;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use super::{AudioError, DecodedAudio};

/// Decode an audio file of any supported format and mix its channels to mono (their mean).
///
/// Never panics: a panic inside a decoder is caught and reported as [`AudioError::Decode`].
pub fn decode_file(path: &Path) -> Result<DecodedAudio, AudioError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(AudioError::NotFound { path: shown })
        }
        Err(e) => {
            return Err(AudioError::Io {
                path: shown,
                source: e,
            })
        }
    };
    if meta.is_dir() {
        return Err(AudioError::IsDirectory { path: shown });
    }
    if meta.len() == 0 {
        return Err(AudioError::EmptyFile { path: shown });
    }
    let file = File::open(path).map_err(|e| AudioError::Io {
        path: shown.clone(),
        source: e,
    })?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);

    decode_guarded(Box::new(file), extension.as_deref(), shown)
}

/// Decode audio already in memory (an upload), as [`decode_file`] decodes a file; `name` (the
/// upload's file name, if any) names it in errors and its extension hints the format.
pub fn decode_bytes(bytes: Vec<u8>, name: &str) -> Result<DecodedAudio, AudioError> {
    let shown = name.to_string();
    if bytes.is_empty() {
        return Err(AudioError::EmptyFile { path: shown });
    }
    let extension = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    decode_guarded(
        Box::new(std::io::Cursor::new(bytes)),
        extension.as_deref(),
        shown,
    )
}

/// [`decode_source`] with a decoder panic turned into [`AudioError::Decode`].
fn decode_guarded(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    shown: String,
) -> Result<DecodedAudio, AudioError> {
    match catch_unwind(AssertUnwindSafe(|| {
        decode_source(source, extension, &shown)
    })) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(AudioError::Decode {
                path: shown,
                seconds: 0.0,
                reason: format!("decoder failed internally: {}", one_line(&what)),
            })
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn decode_source(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    path: &str,
) -> Result<DecodedAudio, AudioError> {
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }

    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| header_error(e, path))?;

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::NoAudioTrack {
            path: path.to_string(),
        })?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::NoAudioTrack {
            path: path.to_string(),
        })?
        .clone();

    // Timestamps count samples (FLAC, WAV, MP3, OGG, ...): a jump forward between packets means
    // the reader skipped corrupt data, which is reported rather than silently dropped.
    let sample_accurate = track
        .time_base
        .is_some_and(|tb| tb.numer.get() == 1 && Some(tb.denom.get()) == params.sample_rate);

    // FLAC's STREAMINFO states the exact length: fewer samples means the file was cut short (at a
    // frame boundary, so the reader saw no error). Other containers' lengths may be estimates.
    let declared_frames = track
        .num_frames
        .filter(|_| params.codec == codec_ids::CODEC_ID_FLAC);

    // `verify` checks FLAC's MD5 of the decoded audio at the end; other codecs ignore it.
    let options = AudioDecoderOptions::default().verify(true);
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &options)
        .map_err(|e| match e {
            SymError::Unsupported(_) => AudioError::UnsupportedCodec {
                path: path.to_string(),
                codec: codec_name(params.codec),
            },
            other => AudioError::InvalidHeader {
                path: path.to_string(),
                reason: format!(
                    "cannot set up the {} decoder: {other}",
                    codec_name(params.codec)
                ),
            },
        })?;
    let codec = decoder.codec_info().short_name.to_string();

    let mut samples: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    // (sample rate, channels), fixed by the first decoded buffer.
    let mut spec: Option<(u32, usize)> = None;
    let mut frames: u64 = 0;
    // Where the next packet should start, in track time-base units.
    let mut next_pts: Option<i64> = None;
    let seconds = |frames: u64, spec: Option<(u32, usize)>| -> f64 {
        let rate = spec.map(|s| s.0).or(params.sample_rate).unwrap_or(0);
        if rate == 0 {
            0.0
        } else {
            frames as f64 / f64::from(rate)
        }
    };

    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(SymError::ResetRequired) => {
                return Err(AudioError::UnsupportedStream {
                    path: path.to_string(),
                    reason: format!(
                        "stream parameters change at {:.3} s (chained streams are not supported)",
                        seconds(frames, spec)
                    ),
                })
            }
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                return Err(AudioError::Decode {
                    path: path.to_string(),
                    seconds: seconds(frames, spec),
                    reason: "file is truncated (ends in the middle of a packet)".to_string(),
                })
            }
            Err(e) => {
                return Err(AudioError::Decode {
                    path: path.to_string(),
                    seconds: seconds(frames, spec),
                    reason: one_line(&e.to_string()),
                })
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let pts = packet.pts.get();
        if let (true, Some(expected), Some((rate, _))) = (sample_accurate, next_pts, spec) {
            if pts > expected {
                return Err(AudioError::Decode {
                    path: path.to_string(),
                    seconds: seconds(frames, spec),
                    reason: format!(
                        "corrupt data: {:.3} s of audio could not be decoded",
                        (pts - expected) as f64 / f64::from(rate)
                    ),
                });
            }
        }
        next_pts = Some(pts.saturating_add(i64::try_from(packet.dur.get()).unwrap_or(i64::MAX)));
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(e) => {
                return Err(AudioError::Decode {
                    path: path.to_string(),
                    seconds: seconds(frames, spec),
                    reason: one_line(&e.to_string()),
                })
            }
        };
        let n_frames = buf.frames();
        if n_frames == 0 {
            continue;
        }
        let rate = buf.spec().rate();
        let channels = buf.spec().channels().count();
        match spec {
            None => {
                if rate == 0 {
                    return Err(AudioError::InvalidHeader {
                        path: path.to_string(),
                        reason: "sample rate is 0 Hz".to_string(),
                    });
                }
                if channels == 0 {
                    return Err(AudioError::InvalidHeader {
                        path: path.to_string(),
                        reason: "stream has 0 channels".to_string(),
                    });
                }
                spec = Some((rate, channels));
            }
            Some((r, c)) if r != rate || c != channels => {
                return Err(AudioError::UnsupportedStream {
                    path: path.to_string(),
                    reason: format!(
                        "format changes at {:.3} s from {r} Hz/{c} ch to {rate} Hz/{channels} ch",
                        seconds(frames, spec)
                    ),
                });
            }
            Some(_) => {}
        }

        buf.copy_to_vec_interleaved::<f32>(&mut interleaved);
        if let Some(i) = interleaved.iter().position(|v| !v.is_finite()) {
            let v = interleaved[i];
            return Err(AudioError::NonFinite {
                path: path.to_string(),
                what: if v.is_nan() { "NaN" } else { "infinite" },
                seconds: seconds(frames + (i / channels) as u64, spec),
            });
        }
        mix_to_mono(&interleaved, channels, &mut samples);
        frames += n_frames as u64;
    }

    if let Some(declared) = declared_frames {
        if frames < declared {
            return Err(AudioError::Decode {
                path: path.to_string(),
                seconds: seconds(frames, spec),
                reason: format!(
                    "file is truncated: the header declares {:.3} s of audio",
                    seconds(declared, spec)
                ),
            });
        }
    }
    if decoder.finalize().verify_ok == Some(false) {
        return Err(AudioError::Decode {
            path: path.to_string(),
            seconds: seconds(frames, spec),
            reason: "corrupt data: the decoded audio does not match the file's MD5 checksum"
                .to_string(),
        });
    }

    let Some((sample_rate, channels)) = spec else {
        return Err(AudioError::ZeroLength {
            path: path.to_string(),
        });
    };
    if samples.is_empty() {
        return Err(AudioError::ZeroLength {
            path: path.to_string(),
        });
    }
    Ok(DecodedAudio {
        samples,
        sample_rate,
        channels,
        codec,
    })
}

/// Append the per-frame mean of `channels` interleaved channels to `out`.
fn mix_to_mono(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

/// Map an error from probing / opening the container.
fn header_error(e: SymError, path: &str) -> AudioError {
    let path = path.to_string();
    match e {
        // The container was recognized but its codec or sample format is not one we decode.
        SymError::Unsupported(what)
            if what.contains("format")
                && !what.contains("riff form")
                && !what.contains("probe") =>
        {
            AudioError::UnsupportedCodec {
                path,
                codec: what.to_string(),
            }
        }
        SymError::Unsupported(what)
            if what.contains("compression type") || what.contains("sub-type") =>
        {
            AudioError::UnsupportedCodec {
                path,
                codec: what.to_string(),
            }
        }
        SymError::Unsupported(_) => AudioError::UnknownFormat { path },
        SymError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            AudioError::TruncatedHeader { path }
        }
        SymError::IoError(io) => AudioError::Io { path, source: io },
        other => AudioError::InvalidHeader {
            path,
            reason: one_line(&other.to_string()),
        },
    }
}

/// A readable name for a codec Symphonia has no decoder for.
fn codec_name(id: AudioCodecId) -> String {
    let known = [
        (codec_ids::CODEC_ID_OPUS, "Opus"),
        (codec_ids::CODEC_ID_SPEEX, "Speex"),
        (codec_ids::CODEC_ID_MUSEPACK, "Musepack"),
        (codec_ids::CODEC_ID_AAC, "AAC"),
        (codec_ids::CODEC_ID_AC3, "AC-3"),
        (codec_ids::CODEC_ID_EAC3, "E-AC-3"),
        (codec_ids::CODEC_ID_AC4, "AC-4"),
        (codec_ids::CODEC_ID_DCA, "DTS"),
        (codec_ids::CODEC_ID_WMA, "WMA"),
        (codec_ids::CODEC_ID_ATRAC3, "ATRAC3"),
        (codec_ids::CODEC_ID_ATRAC3PLUS, "ATRAC3plus"),
        (codec_ids::CODEC_ID_WAVPACK, "WavPack"),
        (codec_ids::CODEC_ID_MONKEYS_AUDIO, "Monkey's Audio"),
        (codec_ids::CODEC_ID_TTA, "TTA"),
        (codec_ids::CODEC_ID_TRUEHD, "TrueHD"),
        (codec_ids::CODEC_ID_ADPCM_G722, "G.722 ADPCM"),
        (codec_ids::CODEC_ID_ADPCM_G726, "G.726 ADPCM"),
        (codec_ids::CODEC_ID_ADPCM_G726LE, "G.726 ADPCM"),
    ];
    match known.iter().find(|(k, _)| *k == id) {
        Some((_, name)) => (*name).to_string(),
        None => format!("codec id {id}"),
    }
}
