//! Audio capture: where live audio comes from.
//!
//! * [`AudioSource`]: anything that yields mono `f32` samples at a fixed rate, a block at a time;
//! * [`FileSource`]: samples already decoded (by `w2v_engine::audio`) replayed at real time, as a
//!   microphone would deliver them, or as fast as the consumer reads (tests, batch runs);
//! * `Microphone` (cargo feature `microphone`, off by default because building it needs
//!   pkg-config and ALSA's headers): a capture device through cpal (ALSA on Linux). Every build
//!   can read a live stream from standard input instead (`w2v listen --input -`).
//!
//! The microphone's real-time callback never allocates and never locks: it mixes each frame to
//! mono and pushes it into a fixed-capacity single-producer/single-consumer ring
//! ([`sample_ring`], heapless' lock-free `spsc::Queue`). When the consumer falls behind and the
//! ring is full, the newest samples are dropped and counted ([`AudioSource::overruns`]); nothing
//! blocks the audio thread.
//!
//! Capture lives in board support (not the engine) because it is about the machine: its devices,
//! its audio stack, the native library it links. The engine only ever sees samples.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Samples the ring holds: 2.7 s at 48 kHz, 8.2 s at 16 kHz (512 KiB of `f32`).
pub const RING_CAPACITY: usize = 1 << 17;

/// Why capture failed. One line each.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CaptureError {
    #[error("no audio input device found{}", found_list(.found))]
    NoDevice { found: Vec<String> },
    #[error("no audio input device named {name:?}{}", found_list(.found))]
    NoSuchDevice { name: String, found: Vec<String> },
    #[error("cannot list audio input devices: {reason}")]
    Host { reason: String },
    #[error("audio input device {device:?}: {reason}")]
    Open { device: String, reason: String },
    #[error("audio input device {device:?} stopped: {reason}")]
    Disconnected { device: String, reason: String },
    #[error(
        "this w2v was built without microphone support: rebuild with `cargo build --release \
         --features microphone` (needs pkg-config and libasound2-dev), or pipe audio in: \
         `arecord -f S16_LE -r 16000 -c 1 | w2v listen --input - --rate 16000`"
    )]
    NotBuilt,
    /// A stream being read (standard input, say) failed; the message names it.
    #[error("{0}")]
    Stream(String),
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        " (the system lists no capture devices)".into()
    } else {
        format!(" (devices found: {})", found.join(", "))
    }
}

/// A stream of mono samples.
pub trait AudioSource {
    /// A short description for logs ("file a.wav", "microphone default").
    fn name(&self) -> &str;
    /// Samples per second of what [`AudioSource::read`] yields.
    fn sample_rate(&self) -> u32;
    /// Wait for the next samples and append them to `out`. `Ok(false)` at the end of the stream
    /// (nothing appended).
    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, CaptureError>;
    /// Samples lost so far because the reader fell behind the device.
    fn overruns(&self) -> u64;
}

/// How a [`FileSource`] paces its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Each block is delivered once the time it covers has passed since the first read, like
    /// a microphone's.
    RealTime,
    /// Blocks are delivered as fast as they are read.
    FullSpeed,
}

/// Decoded audio replayed block by block.
pub struct FileSource {
    name: String,
    samples: Vec<f32>,
    rate: u32,
    pos: usize,
    block: usize,
    pacing: Pacing,
    started: Option<Instant>,
}

impl FileSource {
    /// `samples` (mono) at `rate` Hz, in blocks of 10 ms.
    pub fn new(name: impl Into<String>, samples: Vec<f32>, rate: u32, pacing: Pacing) -> Self {
        FileSource {
            name: name.into(),
            samples,
            rate,
            pos: 0,
            block: (rate as usize / 100).max(1),
            pacing,
            started: None,
        }
    }

    /// Deliver blocks of `samples` samples instead.
    pub fn with_block(mut self, samples: usize) -> Self {
        self.block = samples.max(1);
        self
    }

    /// When the first block was read (real-time playback's time zero).
    pub fn started(&self) -> Option<Instant> {
        self.started
    }
}

impl AudioSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, CaptureError> {
        if self.pos >= self.samples.len() {
            return Ok(false);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let end = (self.pos + self.block).min(self.samples.len());
        if self.pacing == Pacing::RealTime && self.rate > 0 {
            let due = started + Duration::from_secs_f64(end as f64 / f64::from(self.rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        out.extend_from_slice(&self.samples[self.pos..end]);
        self.pos = end;
        Ok(true)
    }

    fn overruns(&self) -> u64 {
        0
    }
}

/// The writing end of a sample ring: for the real-time thread. Never allocates or blocks.
pub struct RingProducer {
    queue: heapless::spsc::Producer<'static, f32>,
    overruns: Arc<AtomicU64>,
}

/// The reading end of a sample ring.
pub struct RingConsumer {
    queue: heapless::spsc::Consumer<'static, f32>,
    overruns: Arc<AtomicU64>,
}

/// A fixed-capacity SPSC sample ring of [`RING_CAPACITY`] samples.
///
/// The queue is allocated once and lives for the rest of the process (the real-time callback
/// must own its end with a `'static` lifetime); a program opens one per capture stream.
pub fn sample_ring() -> (RingProducer, RingConsumer) {
    let queue: &'static mut heapless::spsc::Queue<f32, RING_CAPACITY> =
        Box::leak(Box::new(heapless::spsc::Queue::new()));
    let (p, c) = queue.split();
    let overruns = Arc::new(AtomicU64::new(0));
    (
        RingProducer {
            queue: p,
            overruns: overruns.clone(),
        },
        RingConsumer { queue: c, overruns },
    )
}

impl RingProducer {
    /// Push samples; those that do not fit are dropped and counted as overruns.
    #[inline]
    pub fn push(&mut self, samples: impl IntoIterator<Item = f32>) {
        let mut dropped = 0u64;
        for s in samples {
            if self.queue.enqueue(s).is_err() {
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.overruns.fetch_add(dropped, Ordering::Relaxed);
        }
    }
}

impl RingConsumer {
    /// Move every queued sample to `out`; returns how many.
    pub fn drain_into(&mut self, out: &mut Vec<f32>) -> usize {
        let n = self.queue.len();
        out.reserve(n);
        let mut moved = 0;
        while let Some(s) = self.queue.dequeue() {
            out.push(s);
            moved += 1;
        }
        moved
    }

    /// Samples dropped by the producer so far.
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }
}

/// Mix interleaved frames of `channels` samples to mono (the mean), without allocating.
#[inline]
pub fn mix_to_mono(interleaved: &[f32], channels: usize) -> impl Iterator<Item = f32> + '_ {
    let channels = channels.max(1);
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(move |frame| frame.iter().sum::<f32>() * scale)
}

#[cfg(feature = "microphone")]
pub use microphone::{input_device_names, Microphone};

#[cfg(not(feature = "microphone"))]
/// Without the `microphone` feature there are no devices to list.
pub fn input_device_names() -> Result<Vec<String>, CaptureError> {
    Err(CaptureError::NotBuilt)
}

#[cfg(feature = "microphone")]
mod microphone {
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
    use cpal::{ErrorKind, SampleFormat, SizedSample};

    use super::{sample_ring, AudioSource, CaptureError, RingConsumer, RingProducer};

    /// How often the reader looks at the ring when it was empty.
    const POLL: Duration = Duration::from_millis(5);

    /// alsa-lib prints its own diagnostics to stderr (a container without a sound card gets a
    /// dozen lines when the default device is opened); route them, for this thread, into a
    /// buffer that is logged at debug level, so that errors reach the user as one line.
    struct QuietAlsa(
        #[cfg(target_os = "linux")] Option<std::rc::Rc<std::cell::RefCell<alsa::Output>>>,
    );

    impl QuietAlsa {
        fn new() -> Self {
            #[cfg(target_os = "linux")]
            return QuietAlsa(alsa::Output::local_error_handler().ok());
            #[cfg(not(target_os = "linux"))]
            QuietAlsa()
        }
    }

    impl Drop for QuietAlsa {
        fn drop(&mut self) {
            #[cfg(target_os = "linux")]
            if let Some(out) = &self.0 {
                let text = out.borrow().to_string();
                if !text.trim().is_empty() {
                    tracing::debug!(alsa = %text.trim(), "alsa-lib diagnostics");
                }
            }
        }
    }

    /// The input devices of the default host, by cpal device id (what `--device` takes).
    pub fn input_device_names() -> Result<Vec<String>, CaptureError> {
        let _quiet = QuietAlsa::new();
        let host = cpal::default_host();
        let devices = host.input_devices().map_err(|e| CaptureError::Host {
            reason: e.to_string(),
        })?;
        Ok(devices.map(|d| device_name(&d)).collect())
    }

    /// A device's id (`alsa:hw:CARD=…`), or its description's name when it has none.
    fn device_name(d: &cpal::Device) -> String {
        d.id()
            .map(|id| id.to_string())
            .or_else(|_| d.description().map(|desc| desc.name().to_string()))
            .unwrap_or_else(|_| "(unnamed)".into())
    }

    /// Whether a stream error ends capture (as opposed to a glitch to log).
    pub(super) fn is_fatal(kind: ErrorKind) -> bool {
        !matches!(
            kind,
            ErrorKind::Xrun | ErrorKind::DeviceChanged | ErrorKind::RealtimeDenied
        )
    }

    /// A capture device, read through the sample ring.
    pub struct Microphone {
        name: String,
        rate: u32,
        ring: RingConsumer,
        failure: Arc<OnceLock<String>>,
        // Dropping the stream stops capture; kept last so the ring outlives nothing it needs.
        _stream: cpal::Stream,
    }

    impl Microphone {
        /// Open `device` (by name or cpal device id), or the default input device.
        pub fn open(device: Option<&str>) -> Result<Self, CaptureError> {
            let _quiet = QuietAlsa::new();
            let host = cpal::default_host();
            let devices: Vec<cpal::Device> = host
                .input_devices()
                .map_err(|e| CaptureError::Host {
                    reason: e.to_string(),
                })?
                .collect();
            let names: Vec<String> = devices.iter().map(device_name).collect();
            let chosen = match device {
                Some(want) => devices
                    .into_iter()
                    .find(|d| {
                        device_name(d) == want
                            || d.id().is_ok_and(|id| id.id() == want)
                            || d.description().is_ok_and(|desc| desc.name() == want)
                    })
                    .ok_or_else(|| CaptureError::NoSuchDevice {
                        name: want.into(),
                        found: names.clone(),
                    })?,
                None => host
                    .default_input_device()
                    .or_else(|| devices.into_iter().next())
                    .ok_or(CaptureError::NoDevice {
                        found: names.clone(),
                    })?,
            };
            let name = device_name(&chosen);
            let open_err = |e: cpal::Error| CaptureError::Open {
                device: name.clone(),
                reason: e.to_string(),
            };
            let config = chosen.default_input_config().map_err(open_err)?;
            let channels = usize::from(config.channels());
            let rate = config.sample_rate();
            let (producer, consumer) = sample_ring();
            let failure = Arc::new(OnceLock::new());
            let stream = match config.sample_format() {
                SampleFormat::F32 => build::<f32>(&chosen, &config, channels, producer, &failure),
                SampleFormat::I16 => build::<i16>(&chosen, &config, channels, producer, &failure),
                SampleFormat::I32 => build::<i32>(&chosen, &config, channels, producer, &failure),
                SampleFormat::U16 => build::<u16>(&chosen, &config, channels, producer, &failure),
                SampleFormat::U8 => build::<u8>(&chosen, &config, channels, producer, &failure),
                SampleFormat::I8 => build::<i8>(&chosen, &config, channels, producer, &failure),
                SampleFormat::F64 => build::<f64>(&chosen, &config, channels, producer, &failure),
                other => {
                    return Err(CaptureError::Open {
                        device: name.clone(),
                        reason: format!("unsupported sample format {other}"),
                    })
                }
            }
            .map_err(open_err)?;
            stream.play().map_err(open_err)?;
            tracing::info!(device = %name, rate, channels, "microphone open");
            Ok(Microphone {
                name,
                rate,
                ring: consumer,
                failure,
                _stream: stream,
            })
        }
    }

    fn build<T>(
        device: &cpal::Device,
        config: &cpal::SupportedStreamConfig,
        channels: usize,
        mut producer: RingProducer,
        failure: &Arc<OnceLock<String>>,
    ) -> Result<cpal::Stream, cpal::Error>
    where
        T: SizedSample,
        f32: cpal::FromSample<T>,
    {
        let failure = failure.clone();
        // The real-time callback: convert, mix down, push. No allocation, no lock.
        let data = move |data: &[T], _: &cpal::InputCallbackInfo| {
            let frames = data.chunks_exact(channels).map(|frame| {
                frame.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() / channels as f32
            });
            producer.push(frames);
        };
        let error = move |e: cpal::Error| {
            if is_fatal(e.kind()) {
                let _ = failure.set(e.to_string());
            } else {
                tracing::debug!(error = %e, "audio input glitch");
            }
        };
        device.build_input_stream::<T, _, _>(config.config(), data, error, None)
    }

    impl AudioSource for Microphone {
        fn name(&self) -> &str {
            &self.name
        }

        fn sample_rate(&self) -> u32 {
            self.rate
        }

        fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, CaptureError> {
            loop {
                if let Some(reason) = self.failure.get() {
                    return Err(CaptureError::Disconnected {
                        device: self.name.clone(),
                        reason: reason.clone(),
                    });
                }
                if self.ring.drain_into(out) > 0 {
                    return Ok(true);
                }
                std::thread::sleep(POLL);
            }
        }

        fn overruns(&self) -> u64 {
            self.ring.overruns()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_passes_samples_in_order_between_threads() {
        let (mut p, mut c) = sample_ring();
        let n = 3 * RING_CAPACITY;
        let producer = std::thread::spawn(move || {
            let mut sent = 0usize;
            while sent < n {
                // Push in callback-sized blocks, waiting when the ring is nearly full so that
                // nothing is dropped in this test.
                let block = 480.min(n - sent);
                while p.queue.capacity() - p.queue.len() <= block {
                    std::thread::yield_now();
                }
                p.push((sent..sent + block).map(|i| i as f32));
                sent += block;
            }
        });
        let mut got = Vec::new();
        while got.len() < n {
            c.drain_into(&mut got);
        }
        producer.join().unwrap();
        assert_eq!(c.overruns(), 0);
        assert!(got.iter().enumerate().all(|(i, &x)| x == i as f32));
    }

    #[test]
    fn ring_counts_overruns_and_keeps_the_oldest() {
        let (mut p, mut c) = sample_ring();
        let cap = p.queue.capacity();
        p.push((0..cap + 1000).map(|i| i as f32));
        assert_eq!(c.overruns(), 1000);
        let mut got = Vec::new();
        assert_eq!(c.drain_into(&mut got), cap);
        assert_eq!(got[cap - 1], (cap - 1) as f32);
        p.push([1.0, 2.0]);
        got.clear();
        assert_eq!(c.drain_into(&mut got), 2);
        assert_eq!(c.overruns(), 1000);
    }

    #[test]
    fn file_source_full_speed_delivers_everything_in_blocks() {
        let samples: Vec<f32> = (0..1234).map(|i| i as f32).collect();
        let mut s = FileSource::new("x", samples.clone(), 16000, Pacing::FullSpeed).with_block(100);
        assert_eq!(s.sample_rate(), 16000);
        let mut out = Vec::new();
        let mut reads = 0;
        while s.read(&mut out).unwrap() {
            reads += 1;
        }
        assert_eq!(reads, 13);
        assert_eq!(out, samples);
        assert!(!s.read(&mut out).unwrap());
        assert_eq!(s.overruns(), 0);
    }

    #[test]
    fn file_source_real_time_takes_the_audio_duration() {
        // 0.3 s of audio at 1 kHz in 10 ms blocks.
        let mut s = FileSource::new("x", vec![0.0; 300], 1000, Pacing::RealTime);
        let t = Instant::now();
        let mut out = Vec::new();
        let first = s.read(&mut out).unwrap();
        assert!(first);
        // The first block is due 10 ms after the start.
        assert!(t.elapsed() >= Duration::from_millis(10));
        while s.read(&mut out).unwrap() {}
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(out.len(), 300);
    }

    #[test]
    fn mono_mix() {
        let v: Vec<f32> = mix_to_mono(&[1.0, 3.0, -1.0, 1.0, 5.0], 2).collect();
        assert_eq!(v, [2.0, 0.0]);
        assert_eq!(mix_to_mono(&[0.5], 0).collect::<Vec<_>>(), [0.5]);
    }

    #[test]
    fn errors_list_devices() {
        let e = CaptureError::NoSuchDevice {
            name: "usb".into(),
            found: vec!["default".into(), "hw:0".into()],
        };
        assert_eq!(
            e.to_string(),
            "no audio input device named \"usb\" (devices found: default, hw:0)"
        );
        let e = CaptureError::NoDevice { found: vec![] };
        assert_eq!(
            e.to_string(),
            "no audio input device found (the system lists no capture devices)"
        );
    }

    #[cfg(feature = "microphone")]
    #[test]
    fn glitches_are_not_fatal_disconnects_are() {
        use cpal::ErrorKind;
        assert!(!microphone::is_fatal(ErrorKind::Xrun));
        assert!(!microphone::is_fatal(ErrorKind::DeviceChanged));
        assert!(microphone::is_fatal(ErrorKind::DeviceNotAvailable));
        assert!(microphone::is_fatal(ErrorKind::StreamInvalidated));
    }
}
