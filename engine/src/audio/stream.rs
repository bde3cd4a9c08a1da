//! Streaming PCM input: WAV, or raw little-endian 16-bit PCM, read incrementally from any
//! reader (standard input fed by `arecord`, a pipe, a socket) and mixed to mono a block at a
//! time.
//!
//! Files go through [`super::decode_file`] (Symphonia, every format, whole file at once). A live
//! stream has no end to wait for, so this reader parses the WAV header itself and then hands out
//! samples as they arrive. A WAV header written to a pipe cannot know its length: `arecord`
//! declares ~2 GiB (`0x7fff_fffe` and the like), other writers 0 or `0xffff_ffff`; such a data
//! chunk is read to the end of the stream. A data chunk with a real length that ends early is
//! truncated, and an error.

use std::io::{ErrorKind, Read};

use super::AudioError;

/// Data-chunk sizes at or above this (or 0) mean "unknown length: read to the end".
const STREAMING_DATA_SIZE: u32 = 0x7fff_0000;
/// Bytes of non-audio chunks skipped before giving up on finding `data`.
const MAX_HEADER_BYTES: u64 = 16 << 20;
/// Sample rates accepted (Hz).
const RATES: std::ops::RangeInclusive<u32> = 1_000..=768_000;
/// Channels accepted.
const MAX_CHANNELS: u16 = 64;

/// How samples are stored in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SampleFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleFormat {
    /// Little-endian integer PCM of `width` bytes per sample (8-bit unsigned, as WAV stores it).
    fn integer(width: usize) -> Option<Self> {
        Some(match width {
            1 => SampleFormat::U8,
            2 => SampleFormat::I16,
            3 => SampleFormat::I24,
            4 => SampleFormat::I32,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        match self {
            SampleFormat::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            SampleFormat::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            SampleFormat::I24 => {
                (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
            }
            SampleFormat::I32 => {
                i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0
            }
            SampleFormat::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            SampleFormat::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
        }
    }
}

/// What the caller knows about the stream before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamHint {
    /// The sample rate of raw PCM (required for raw; checked against a WAV header's).
    pub rate: Option<u32>,
    /// Interleaved channels of raw PCM (default 1; checked against a WAV header's).
    pub channels: Option<u16>,
}

/// A stream of WAV or raw PCM, decoded to mono `f32` as it arrives.
pub struct PcmStream<R> {
    name: String,
    reader: R,
    rate: u32,
    channels: usize,
    format: SampleFormat,
    /// Data bytes the header declared and not yet read; `None`: read to the end.
    remaining: Option<u64>,
    declared: Option<u64>,
    /// Bytes read but not yet decoded (less than one frame after each read).
    pending: Vec<u8>,
    block_frames: usize,
    is_wav: bool,
    done: bool,
}

impl<R: Read> PcmStream<R> {
    /// Read the header (if the stream starts with `RIFF`) and get ready to stream. Without a
    /// WAV header the stream is raw signed 16-bit little-endian PCM at `hint.rate`. `name`
    /// names the stream in errors (`stdin`, say).
    pub fn open(
        name: impl Into<String>,
        mut reader: R,
        hint: StreamHint,
    ) -> Result<Self, AudioError> {
        let name = name.into();
        if let Some(rate) = hint.rate {
            check_rate(&name, rate, "--rate")?;
        }
        if let Some(c) = hint.channels {
            check_channels(&name, c)?;
        }
        let mut magic = Vec::with_capacity(4);
        read_up_to(&mut reader, &mut magic, 4, &name)?;
        if magic.is_empty() {
            return Err(AudioError::EmptyFile { path: name });
        }
        if magic.as_slice() == b"RIFF" {
            return Self::open_wav(name, reader, hint);
        }
        let known = [
            (&b"fLaC"[..], "FLAC"),
            (b"OggS", "OGG"),
            (b"ID3", "MP3"),
            (b"FORM", "AIFF"),
            (b"RIFX", "big-endian WAV"),
            (b"RF64", "RF64"),
        ];
        if let Some((_, what)) = known.iter().find(|(m, _)| magic.starts_with(m)) {
            return Err(AudioError::UnsupportedStream {
                path: name,
                reason: format!(
                    "{what} cannot be streamed: stream WAV or raw 16-bit PCM, or give a file path"
                ),
            });
        }
        let Some(rate) = hint.rate else {
            return Err(AudioError::UnsupportedStream {
                path: name,
                reason: "not a WAV stream (no RIFF header); for raw 16-bit little-endian PCM \
                         give its sample rate (--rate)"
                    .into(),
            });
        };
        let channels = usize::from(hint.channels.unwrap_or(1));
        Ok(Self::new(
            name,
            reader,
            rate,
            channels,
            SampleFormat::I16,
            None,
            magic,
            false,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        reader: R,
        rate: u32,
        channels: usize,
        format: SampleFormat,
        declared: Option<u64>,
        pending: Vec<u8>,
        is_wav: bool,
    ) -> Self {
        PcmStream {
            name,
            reader,
            rate,
            channels,
            format,
            remaining: declared,
            declared,
            pending,
            block_frames: (rate as usize / 100).max(1),
            is_wav,
            done: false,
        }
    }

    fn open_wav(name: String, mut reader: R, hint: StreamHint) -> Result<Self, AudioError> {
        let truncated = |name: &str| AudioError::TruncatedHeader {
            path: name.to_string(),
        };
        let invalid = |name: &str, reason: String| AudioError::InvalidHeader {
            path: name.to_string(),
            reason,
        };
        let mut head = [0u8; 8];
        read_exact_or(&mut reader, &mut head, &name, truncated)?;
        if &head[4..8] != b"WAVE" {
            return Err(invalid(&name, "RIFF stream is not WAVE".into()));
        }
        let mut fmt: Option<(SampleFormat, u16, u32)> = None;
        let mut skipped = 0u64;
        loop {
            let mut chunk = [0u8; 8];
            read_exact_or(&mut reader, &mut chunk, &name, truncated)?;
            let id = [chunk[0], chunk[1], chunk[2], chunk[3]];
            let size = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            match &id {
                b"fmt " => {
                    if !(16..=1024).contains(&size) {
                        return Err(invalid(&name, format!("fmt chunk of {size} bytes")));
                    }
                    let mut body = vec![0u8; size as usize + (size as usize & 1)];
                    read_exact_or(&mut reader, &mut body, &name, truncated)?;
                    fmt = Some(parse_fmt(&name, &body)?);
                }
                b"data" => {
                    let Some((format, channels, rate)) = fmt else {
                        return Err(invalid(&name, "data chunk before the fmt chunk".into()));
                    };
                    if let Some(r) = hint.rate.filter(|&r| r != rate) {
                        return Err(invalid(
                            &name,
                            format!("the WAV header says {rate} Hz, --rate says {r} Hz"),
                        ));
                    }
                    if let Some(c) = hint.channels.filter(|&c| c != channels) {
                        return Err(invalid(
                            &name,
                            format!("the WAV header says {channels} channels, --channels says {c}"),
                        ));
                    }
                    let declared =
                        (size != 0 && size < STREAMING_DATA_SIZE).then_some(u64::from(size));
                    return Ok(Self::new(
                        name,
                        reader,
                        rate,
                        usize::from(channels),
                        format,
                        declared,
                        Vec::new(),
                        true,
                    ));
                }
                _ => {
                    let len = u64::from(size) + u64::from(size & 1);
                    skipped += len;
                    if skipped > MAX_HEADER_BYTES {
                        return Err(invalid(
                            &name,
                            format!("no data chunk in the first {MAX_HEADER_BYTES} bytes"),
                        ));
                    }
                    let copied = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())
                        .map_err(|e| io_error(&name, e))?;
                    if copied < len {
                        return Err(truncated(&name));
                    }
                }
            }
        }
    }

    /// The stream's sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.rate
    }

    /// Interleaved channels in the stream (mixed to mono by [`PcmStream::read`]).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The name given to [`PcmStream::open`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait for the next samples (up to 10 ms of them) and append them, mixed to mono, to
    /// `out`. `Ok(false)` at the end of the stream, with nothing appended.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        let frame = self.channels * self.format.bytes();
        loop {
            if self.pending.len() >= frame {
                self.decode_pending(out);
                return Ok(true);
            }
            if self.done {
                return self.finish();
            }
            let mut want = self.block_frames * frame - self.pending.len();
            if let Some(r) = self.remaining {
                want = want.min(usize::try_from(r).unwrap_or(usize::MAX));
            }
            if want == 0 {
                self.done = true;
                continue;
            }
            let before = self.pending.len();
            self.pending.resize(before + want, 0);
            let n = loop {
                match self.reader.read(&mut self.pending[before..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.pending.truncate(before);
                        return Err(io_error(&self.name, e));
                    }
                }
            };
            self.pending.truncate(before + n);
            if n == 0 {
                self.done = true;
            } else if let Some(r) = &mut self.remaining {
                *r -= n as u64;
            }
        }
    }

    /// Decode every whole frame in `pending`, keeping the remainder.
    fn decode_pending(&mut self, out: &mut Vec<f32>) {
        let whole = mix_frames(self.format, self.channels, &self.pending, out);
        self.pending.drain(..whole);
    }

    /// The end of the stream: an error if it ended inside a frame or short of the declared data.
    fn finish(&mut self) -> Result<bool, AudioError> {
        if let (Some(declared), Some(left)) = (self.declared, self.remaining) {
            if left > 0 {
                return Err(AudioError::Decode {
                    path: self.name.clone(),
                    seconds: self.seconds_read(declared - left),
                    reason: format!(
                        "truncated WAV: the data chunk declares {declared} bytes, the stream \
                         ended after {}",
                        declared - left
                    ),
                });
            }
        }
        if !self.pending.is_empty() {
            let what = if self.is_wav { "WAV data" } else { "raw PCM" };
            return Err(AudioError::Decode {
                path: self.name.clone(),
                seconds: 0.0,
                reason: format!(
                    "{what} ends inside a sample frame ({} stray bytes; a frame is {} bytes)",
                    self.pending.len(),
                    self.channels * self.format.bytes()
                ),
            });
        }
        Ok(false)
    }

    fn seconds_read(&self, bytes: u64) -> f64 {
        let frame = (self.channels * self.format.bytes()) as f64;
        bytes as f64 / frame / f64::from(self.rate)
    }
}

/// Append the whole frames of `bytes` (`channels` interleaved samples of `format`), mixed to
/// mono (their mean), to `out`; returns the bytes used.
fn mix_frames(format: SampleFormat, channels: usize, bytes: &[u8], out: &mut Vec<f32>) -> usize {
    let width = format.bytes();
    let frame = channels * width;
    let whole = bytes.len() / frame * frame;
    let scale = 1.0 / channels as f32;
    out.extend(
        bytes[..whole]
            .chunks_exact(frame)
            .map(|f| f.chunks_exact(width).map(|s| format.decode(s)).sum::<f32>() * scale),
    );
    whole
}

/// Little-endian integer PCM (`width` 1 to 4 bytes per sample, `channels` interleaved) mixed
/// to mono, as a stream decodes it. `None` for another width, no channels, or bytes that are
/// not whole frames.
pub fn integer_pcm_to_mono(bytes: &[u8], width: usize, channels: usize) -> Option<Vec<f32>> {
    let format = SampleFormat::integer(width)?;
    if channels == 0 || !bytes.len().is_multiple_of(width * channels) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / (width * channels));
    mix_frames(format, channels, bytes, &mut out);
    Some(out)
}

fn parse_fmt(name: &str, b: &[u8]) -> Result<(SampleFormat, u16, u32), AudioError> {
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let invalid = |reason: String| AudioError::InvalidHeader {
        path: name.to_string(),
        reason,
    };
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let rate = u32_at(4);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == 0xfffe {
        // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the real tag.
        if b.len() < 26 {
            return Err(invalid("WAVE_FORMAT_EXTENSIBLE fmt chunk too short".into()));
        }
        tag = u16_at(24);
    }
    check_channels(name, channels)?;
    check_rate(name, rate, "the WAV header's rate")?;
    let format = match (tag, bits) {
        (1, 8) => SampleFormat::U8,
        (1, 16) => SampleFormat::I16,
        (1, 24) => SampleFormat::I24,
        (1, 32) => SampleFormat::I32,
        (3, 32) => SampleFormat::F32,
        (3, 64) => SampleFormat::F64,
        _ => {
            return Err(AudioError::UnsupportedStream {
                path: name.to_string(),
                reason: format!(
                    "WAV format tag {tag} with {bits}-bit samples (streams take 8/16/24/32-bit \
                     integer or 32/64-bit float PCM)"
                ),
            })
        }
    };
    if usize::from(block_align) != usize::from(channels) * format.bytes() {
        return Err(invalid(format!(
            "block align {block_align} for {channels} channels of {bits}-bit samples"
        )));
    }
    Ok((format, channels, rate))
}

fn check_rate(name: &str, rate: u32, what: &str) -> Result<(), AudioError> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(AudioError::UnsupportedStream {
            path: name.to_string(),
            reason: format!(
                "{what} is {rate} Hz (supported: {} to {} Hz)",
                RATES.start(),
                RATES.end()
            ),
        })
    }
}

fn check_channels(name: &str, channels: u16) -> Result<(), AudioError> {
    if (1..=MAX_CHANNELS).contains(&channels) {
        Ok(())
    } else {
        Err(AudioError::UnsupportedStream {
            path: name.to_string(),
            reason: format!("{channels} channels (supported: 1 to {MAX_CHANNELS})"),
        })
    }
}

fn io_error(name: &str, source: std::io::Error) -> AudioError {
    AudioError::Io {
        path: name.to_string(),
        source,
    }
}

/// Read until `out` holds `n` bytes or the stream ends.
fn read_up_to(
    r: &mut impl Read,
    out: &mut Vec<u8>,
    n: usize,
    name: &str,
) -> Result<(), AudioError> {
    let copied = std::io::copy(&mut r.take(n as u64), out).map_err(|e| io_error(name, e))?;
    debug_assert!(copied as usize <= n);
    Ok(())
}

fn read_exact_or(
    r: &mut impl Read,
    buf: &mut [u8],
    name: &str,
    short: impl Fn(&str) -> AudioError,
) -> Result<(), AudioError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(short(name)),
        Err(e) => Err(io_error(name, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV header for `data_len` bytes of PCM (`tag` 1) or float (3) samples.
    fn wav_header(tag: u16, channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&(36u32.wrapping_add(data_len)).to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&tag.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        h.extend_from_slice(&align.to_le_bytes());
        h.extend_from_slice(&bits.to_le_bytes());
        // A LIST chunk of odd length (padded), as some writers add, before the data.
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&[1, 2, 3, 0]);
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_len.to_le_bytes());
        h
    }

    /// A reader that hands out at most `step` bytes per call, as a pipe may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all<R: Read>(s: &mut PcmStream<R>) -> Result<Vec<f32>, AudioError> {
        let mut out = Vec::new();
        while s.read(&mut out)? {}
        Ok(out)
    }

    fn i16_bytes(v: &[i16]) -> Vec<u8> {
        v.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn wav_16_bit_stereo_is_mixed_to_mono_in_any_read_sizes() {
        let pcm = i16_bytes(&[16384, 0, -32768, -32768, 100, 300]);
        let mut bytes = wav_header(1, 2, 16_000, 16, pcm.len() as u32);
        bytes.extend_from_slice(&pcm);
        for step in [1, 3, 7, 4096] {
            let mut s = PcmStream::open(
                "stdin",
                Trickle { data: &bytes, step },
                StreamHint::default(),
            )
            .unwrap();
            assert_eq!((s.sample_rate(), s.channels()), (16_000, 2));
            let got = read_all(&mut s).unwrap();
            assert_eq!(got, vec![0.25, -1.0, 200.0 / 32768.0], "step {step}");
        }
    }

    #[test]
    fn float_and_24_bit_and_8_bit_wav() {
        let mut f = wav_header(3, 1, 8_000, 32, 8);
        f.extend(0.5f32.to_le_bytes());
        f.extend((-0.25f32).to_le_bytes());
        let mut s = PcmStream::open("f", f.as_slice(), StreamHint::default()).unwrap();
        assert_eq!(read_all(&mut s).unwrap(), vec![0.5, -0.25]);

        let mut p = wav_header(1, 1, 8_000, 24, 6);
        p.extend([0x00, 0x00, 0x40, 0x00, 0x00, 0x80]); // 0.5, -1.0
        let mut s = PcmStream::open("p", p.as_slice(), StreamHint::default()).unwrap();
        assert_eq!(read_all(&mut s).unwrap(), vec![0.5, -1.0]);

        let mut u = wav_header(1, 1, 8_000, 8, 2);
        u.extend([192, 128]);
        let mut s = PcmStream::open("u", u.as_slice(), StreamHint::default()).unwrap();
        assert_eq!(read_all(&mut s).unwrap(), vec![0.5, 0.0]);
    }

    #[test]
    fn streaming_wav_header_reads_to_the_end_and_stops_at_a_declared_length() {
        // arecord to a pipe declares ~2 GiB: read what comes.
        let pcm = i16_bytes(&[1000; 480]);
        let mut live = wav_header(1, 1, 16_000, 16, 0x7fff_fffe);
        live.extend_from_slice(&pcm);
        let mut s = PcmStream::open("stdin", live.as_slice(), StreamHint::default()).unwrap();
        assert_eq!(read_all(&mut s).unwrap().len(), 480);
        // A declared length ends the audio even if other chunks follow.
        let mut file = wav_header(1, 1, 16_000, 16, 4);
        file.extend_from_slice(&i16_bytes(&[1, 2]));
        file.extend_from_slice(b"LIST\x04\x00\x00\x00abcd");
        let mut s = PcmStream::open("stdin", file.as_slice(), StreamHint::default()).unwrap();
        assert_eq!(read_all(&mut s).unwrap().len(), 2);
    }

    #[test]
    fn raw_pcm_needs_a_rate_and_reads_in_10_ms_blocks() {
        let pcm = i16_bytes(&[-16384; 400]);
        let err = PcmStream::open("stdin", pcm.as_slice(), StreamHint::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("stdin: ") && err.contains("--rate"),
            "{err}"
        );
        let hint = StreamHint {
            rate: Some(16_000),
            channels: None,
        };
        let mut s = PcmStream::open("stdin", pcm.as_slice(), hint).unwrap();
        // Blocks of at most 10 ms, whatever has arrived; all of it, then the end.
        let mut sizes = Vec::new();
        let mut block = Vec::new();
        while s.read(&mut block).unwrap() {
            assert!(block.iter().all(|&v| v == -0.5));
            sizes.push(block.len());
            block.clear();
        }
        assert!(sizes.iter().all(|&n| (1..=160).contains(&n)), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 400);
        assert!(!s.read(&mut block).unwrap() && block.is_empty());
    }

    #[test]
    fn bad_streams_are_one_line_errors() {
        let hint = StreamHint::default();
        let rate = |r| StreamHint {
            rate: Some(r),
            channels: None,
        };
        let open_err = |bytes: &[u8], hint: StreamHint| {
            PcmStream::open("stdin", bytes, hint)
                .err()
                .expect("an error")
                .to_string()
        };
        let full = {
            let mut b = wav_header(1, 1, 16_000, 16, 8);
            b.extend_from_slice(&i16_bytes(&[1, 2, 3, 4]));
            b
        };
        // Empty input, a header cut anywhere, garbage, other containers, wrong rates.
        assert!(open_err(b"", hint).contains("empty"));
        for cut in [5, 12, 20, 30, 40, 52] {
            let e = open_err(&full[..cut], hint);
            assert!(e.contains("truncated"), "cut at {cut}: {e}");
        }
        assert!(open_err(b"\x89PNG\r\n\x1a\n garbage", hint).contains("--rate"));
        assert!(open_err(b"fLaC\0\0\0\x22", rate(16_000)).contains("FLAC"));
        assert!(open_err(&full, rate(8_000)).contains("16000 Hz"));
        assert!(open_err(b"\0\0\0\0", rate(0)).contains("0 Hz"));
        let mut weird = wav_header(1, 1, 16_000, 16, 8);
        weird[24..28].copy_from_slice(&3u32.to_le_bytes()); // 3 Hz
        assert!(open_err(&weird, hint).contains("3 Hz"));
        let mut adpcm = wav_header(1, 1, 16_000, 16, 8);
        adpcm[20..22].copy_from_slice(&2u16.to_le_bytes());
        assert!(open_err(&adpcm, hint).contains("format tag 2"));
        for e in [open_err(b"", hint), open_err(&full[..20], hint)] {
            assert!(e.starts_with("stdin: ") && !e.contains('\n'), "{e}");
        }

        // Data shorter than declared, and raw PCM ending inside a sample.
        let mut s = PcmStream::open("stdin", &full[..full.len() - 2], hint).unwrap();
        let e = read_all(&mut s).err().unwrap().to_string();
        assert!(
            e.contains("truncated WAV") && e.contains("declares 8 bytes"),
            "{e}"
        );
        let mut s = PcmStream::open("stdin", &[1u8, 2, 3][..], rate(16_000)).unwrap();
        let e = read_all(&mut s).err().unwrap().to_string();
        assert!(e.contains("inside a sample frame"), "{e}");
    }

    #[test]
    fn mutated_headers_never_panic() {
        let mut base = wav_header(1, 2, 16_000, 16, 8);
        base.extend_from_slice(&i16_bytes(&[1, 2, 3, 4]));
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let mut b = base.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % b.len();
                b[i] = (x >> 8) as u8;
            }
            let cut = (x >> 16) as usize % (b.len() + 1);
            if let Ok(mut s) = PcmStream::open("stdin", &b[..cut], StreamHint::default()) {
                let _ = read_all(&mut s);
            }
        }
    }
}
