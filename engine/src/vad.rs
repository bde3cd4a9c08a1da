//! Voice activity detection: cut a stream of samples into utterances.
//!
//! Energy-based, in fixed frames (10 ms by default, as WebRTC's VAD frames audio), against an
//! adaptive noise floor:
//!
//! * the floor is the minimum frame energy over the last `noise_window_ms` (minimum statistics:
//!   it follows a noise that rises or falls within one window, and speech, which always has dips,
//!   barely moves it);
//! * an utterance starts after `start_ms` of frames at least `start_db` above the floor (and above
//!   `min_level_db` absolute), and continues while frames stay `continue_db` above it (the lower
//!   threshold is the hysteresis that keeps weak consonants inside the word);
//! * frames more than `peak_drop_db` below the speech level are never speech. The level is the
//!   loudest recent frame, decaying by `level_decay_db_per_s`: a room noisier than the floor
//!   estimate, or breath and rustle after a word, then neither holds the utterance open nor
//!   starts a new one right after it (speech is a loud event; 35 dB below it is not speech);
//! * after `pause_ms` of quiet a [`VadEvent::Pause`] offers the utterance so far (a caller may
//!   decide early, e.g. when a command is already complete); after `hangover_ms` the utterance
//!   ends with [`VadEvent::End`];
//! * each utterance carries `pre_roll_ms` of audio from before its start and up to `tail_ms`
//!   after its last voiced frame (CTC models want a little context on both sides);
//! * utterances with less than `min_speech_ms` of voiced frames are dropped (clicks, bumps);
//!   `max_utterance_ms` cuts an utterance that never pauses.
//!
//! Memory is bounded by the configuration: the current utterance (at most `max_utterance_ms`)
//! and the pre-roll; buffers are reused between utterances.

use std::collections::VecDeque;

use serde::Serialize;

/// Thresholds and timings of the detector. Times are in milliseconds, levels in dB (relative to
/// full scale for `min_level_db`, relative to the noise floor otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VadConfig {
    pub frame_ms: u32,
    pub start_db: f32,
    pub continue_db: f32,
    /// Frames more than this below the speech level are never speech.
    pub peak_drop_db: f32,
    /// How fast the speech level falls back after loud frames.
    pub level_decay_db_per_s: f32,
    pub min_level_db: f32,
    pub start_ms: u32,
    pub pause_ms: u32,
    pub hangover_ms: u32,
    pub pre_roll_ms: u32,
    pub tail_ms: u32,
    pub min_speech_ms: u32,
    pub max_utterance_ms: u32,
    pub noise_window_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            frame_ms: 10,
            start_db: 10.0,
            continue_db: 6.0,
            peak_drop_db: 35.0,
            level_decay_db_per_s: 5.0,
            min_level_db: -55.0,
            start_ms: 30,
            pause_ms: 100,
            hangover_ms: 400,
            pre_roll_ms: 200,
            tail_ms: 100,
            min_speech_ms: 100,
            max_utterance_ms: 6000,
            noise_window_ms: 3000,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VadConfigError {
    #[error("VAD frame length must be 1..=100 ms, got {0} ms")]
    Frame(u32),
    #[error("VAD pause ({pause} ms) must not be longer than the hangover ({hangover} ms)")]
    PauseAfterHangover { pause: u32, hangover: u32 },
    #[error(
        "VAD start threshold ({start} dB) must be at least the continue threshold ({cont} dB)"
    )]
    Thresholds { start: f32, cont: f32 },
    #[error(
        "VAD maximum utterance length ({0} ms) must be longer than the minimum speech ({1} ms)"
    )]
    Lengths(u32, u32),
    #[error("VAD peak drop must be a positive number of dB, got {0}")]
    PeakDrop(f32),
    #[error("VAD level decay must be a non-negative number of dB per second, got {0}")]
    LevelDecay(f32),
    #[error("sample rate must be positive")]
    Rate,
}

/// Why an utterance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `hangover_ms` of quiet.
    Silence,
    /// The utterance reached `max_utterance_ms`.
    MaxLength,
    /// The stream ended ([`Vad::flush`]).
    EndOfStream,
}

/// A stretch of audio that holds speech.
#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    /// Stream position (in samples) of `samples[0]`.
    pub start: u64,
    pub samples: Vec<f32>,
    /// Stream position of the first voiced frame.
    pub speech_start: u64,
    /// Stream position one past the last voiced frame.
    pub speech_end: u64,
}

impl Utterance {
    /// Stream position one past the last sample.
    pub fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum VadEvent {
    /// `pause_ms` of quiet after speech: the utterance so far (it may still continue).
    Pause(Utterance),
    /// The utterance is over.
    End(Utterance, EndReason),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Quiet {
        run: usize,
    },
    Speech {
        voiced: usize,
        quiet: usize,
        speech_start: u64,
        speech_end: u64,
    },
}

/// The streaming detector. Feed samples with [`Vad::push`]; call [`Vad::flush`] at the end.
pub struct Vad {
    config: VadConfig,
    frame: usize,
    frames_start: usize,
    frames_pause: usize,
    frames_hangover: usize,
    frames_min_speech: usize,
    max_samples: usize,
    tail: usize,
    pending: Vec<f32>,
    /// Stream position of the first sample not yet in a complete frame.
    pos: u64,
    /// The last pre-roll + start run of samples while quiet.
    history: VecDeque<f32>,
    history_cap: usize,
    current: Vec<f32>,
    current_start: u64,
    state: State,
    /// Minimum frame energy of each finished block of the noise window, and of the open block.
    block_min: Vec<f32>,
    block_next: usize,
    open_min: f32,
    open_count: usize,
    /// Speech level (dBFS): the loudest recent frame, decaying.
    level: f32,
    /// Decay of `level` per frame, in dB.
    level_decay: f32,
    block_frames: usize,
}

fn frames_for(ms: u32, frame_ms: u32) -> usize {
    (ms as usize).div_ceil(frame_ms as usize)
}

impl Vad {
    pub fn new(config: VadConfig, sample_rate: u32) -> Result<Self, VadConfigError> {
        if sample_rate == 0 {
            return Err(VadConfigError::Rate);
        }
        if config.peak_drop_db.is_nan() || config.peak_drop_db <= 0.0 {
            return Err(VadConfigError::PeakDrop(config.peak_drop_db));
        }
        if config.level_decay_db_per_s.is_nan() || config.level_decay_db_per_s < 0.0 {
            return Err(VadConfigError::LevelDecay(config.level_decay_db_per_s));
        }
        if config.frame_ms == 0 || config.frame_ms > 100 {
            return Err(VadConfigError::Frame(config.frame_ms));
        }
        if config.pause_ms > config.hangover_ms {
            return Err(VadConfigError::PauseAfterHangover {
                pause: config.pause_ms,
                hangover: config.hangover_ms,
            });
        }
        if config.start_db < config.continue_db {
            return Err(VadConfigError::Thresholds {
                start: config.start_db,
                cont: config.continue_db,
            });
        }
        if config.max_utterance_ms <= config.min_speech_ms {
            return Err(VadConfigError::Lengths(
                config.max_utterance_ms,
                config.min_speech_ms,
            ));
        }
        let ms = |m: u32| (u64::from(m) * u64::from(sample_rate) / 1000) as usize;
        let frame = ms(config.frame_ms).max(1);
        let frames_start = frames_for(config.start_ms, config.frame_ms).max(1);
        let history_cap = ms(config.pre_roll_ms) + frames_start * frame;
        let window_frames = frames_for(config.noise_window_ms, config.frame_ms).max(8);
        const BLOCKS: usize = 8;
        Ok(Vad {
            config,
            frame,
            frames_start,
            frames_pause: frames_for(config.pause_ms, config.frame_ms).max(1),
            frames_hangover: frames_for(config.hangover_ms, config.frame_ms).max(1),
            frames_min_speech: frames_for(config.min_speech_ms, config.frame_ms),
            max_samples: ms(config.max_utterance_ms).max(frame),
            tail: ms(config.tail_ms.min(config.hangover_ms)),
            pending: Vec::with_capacity(frame),
            pos: 0,
            history: VecDeque::with_capacity(history_cap),
            history_cap,
            current: Vec::new(),
            current_start: 0,
            state: State::Quiet { run: 0 },
            block_min: vec![f32::INFINITY; BLOCKS],
            block_next: 0,
            open_min: f32::INFINITY,
            open_count: 0,
            level: f32::NEG_INFINITY,
            level_decay: config.level_decay_db_per_s * config.frame_ms as f32 / 1000.0,
            block_frames: window_frames.div_ceil(BLOCKS),
        })
    }

    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Samples per analysis frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Stream position (samples) up to which audio has been analysed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Whether an utterance is open.
    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// The current noise floor estimate in dBFS (`-inf` before the first frame).
    pub fn noise_floor_db(&self) -> f32 {
        let m = self.block_min.iter().copied().fold(self.open_min, f32::min);
        if m.is_finite() {
            m
        } else {
            f32::NEG_INFINITY
        }
    }

    /// Analyse `samples`, appending the events they complete to `events`.
    pub fn push(&mut self, samples: &[f32], events: &mut Vec<VadEvent>) {
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.frame - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.frame {
                let frame = std::mem::take(&mut self.pending);
                self.process_frame(&frame, events);
                self.pending = frame;
                self.pending.clear();
            }
        }
    }

    /// End of stream: close an open utterance (partial frames count as analysed audio).
    pub fn flush(&mut self, events: &mut Vec<VadEvent>) {
        if let State::Speech { .. } = self.state {
            let pending = std::mem::take(&mut self.pending);
            self.current.extend_from_slice(&pending);
            self.pos += pending.len() as u64;
            self.finish(EndReason::EndOfStream, events);
        } else {
            self.pos += self.pending.len() as u64;
        }
        self.pending.clear();
    }

    /// Close the open utterance without an event (the caller has already handled it, e.g. a
    /// command decided at a pause). Detection restarts from quiet.
    pub fn end_utterance(&mut self) {
        if self.in_speech() {
            self.current.clear();
            self.history.clear();
            self.state = State::Quiet { run: 0 };
        }
    }

    fn energy_db(frame: &[f32]) -> f32 {
        let sum: f64 = frame.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        (10.0 * (sum / frame.len() as f64 + 1e-12).log10()) as f32
    }

    fn update_noise(&mut self, e: f32) {
        self.open_min = self.open_min.min(e);
        self.open_count += 1;
        if self.open_count == self.block_frames {
            self.block_min[self.block_next] = self.open_min;
            self.block_next = (self.block_next + 1) % self.block_min.len();
            self.open_min = f32::INFINITY;
            self.open_count = 0;
        }
    }

    fn process_frame(&mut self, frame: &[f32], events: &mut Vec<VadEvent>) {
        let e = Self::energy_db(frame);
        let floor = self.noise_floor_db();
        // Before any noise estimate, the first frame is the floor.
        let floor = if floor.is_finite() { floor } else { e };
        self.level = (self.level - self.level_decay).max(e);
        let loud = e > self.config.min_level_db && e > self.level - self.config.peak_drop_db;
        let start_voiced = loud && e > floor + self.config.start_db;
        let cont_voiced = loud && e > floor + self.config.continue_db;
        self.update_noise(e);
        self.pos += frame.len() as u64;
        match self.state {
            State::Quiet { run } => {
                if self.history.len() + frame.len() > self.history_cap {
                    let drop = (self.history.len() + frame.len()).saturating_sub(self.history_cap);
                    self.history.drain(..drop.min(self.history.len()));
                }
                self.history.extend(frame.iter().copied());
                let run = if start_voiced { run + 1 } else { 0 };
                if run >= self.frames_start {
                    self.current.clear();
                    self.current.extend(self.history.iter().copied());
                    self.history.clear();
                    self.current_start = self.pos - self.current.len() as u64;
                    let speech_start = self.pos - (run * self.frame) as u64;
                    self.state = State::Speech {
                        voiced: run,
                        quiet: 0,
                        speech_start,
                        speech_end: self.pos,
                    };
                } else {
                    self.state = State::Quiet { run };
                }
            }
            State::Speech {
                voiced,
                quiet,
                speech_start,
                speech_end,
            } => {
                self.current.extend_from_slice(frame);
                let (voiced, quiet, speech_end) = if cont_voiced {
                    (voiced + 1, 0, self.pos)
                } else {
                    (voiced, quiet + 1, speech_end)
                };
                self.state = State::Speech {
                    voiced,
                    quiet,
                    speech_start,
                    speech_end,
                };
                if quiet >= self.frames_hangover {
                    self.finish(EndReason::Silence, events);
                } else if self.current.len() >= self.max_samples {
                    self.finish(EndReason::MaxLength, events);
                } else if quiet == self.frames_pause && voiced >= self.frames_min_speech {
                    events.push(VadEvent::Pause(self.utterance()));
                }
            }
        }
    }

    /// The open utterance, cut `tail` samples after its last voiced frame.
    fn utterance(&self) -> Utterance {
        let State::Speech {
            speech_start,
            speech_end,
            ..
        } = self.state
        else {
            unreachable!("utterance() is only called in speech");
        };
        let keep = ((speech_end + self.tail as u64).saturating_sub(self.current_start) as usize)
            .min(self.current.len());
        Utterance {
            start: self.current_start,
            samples: self.current[..keep].to_vec(),
            speech_start,
            speech_end,
        }
    }

    fn finish(&mut self, reason: EndReason, events: &mut Vec<VadEvent>) {
        if let State::Speech { voiced, .. } = self.state {
            if voiced >= self.frames_min_speech {
                events.push(VadEvent::End(self.utterance(), reason));
            } else {
                tracing::debug!(
                    voiced_ms = voiced as u32 * self.config.frame_ms,
                    "VAD: dropped an utterance shorter than min_speech_ms"
                );
            }
        }
        self.current.clear();
        self.history.clear();
        self.state = State::Quiet { run: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16000;

    /// Deterministic white noise at amplitude `a` (uniform in [-a, a]).
    fn noise(n: usize, a: f32, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
            })
            .collect()
    }

    fn tone(n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|i| a * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / RATE as f32).sin())
            .collect()
    }

    fn ms(m: usize) -> usize {
        m * RATE as usize / 1000
    }

    fn run(vad: &mut Vad, audio: &[f32], chunk: usize) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for c in audio.chunks(chunk) {
            vad.push(c, &mut events);
        }
        vad.flush(&mut events);
        events
    }

    fn ends(events: &[VadEvent]) -> Vec<(&Utterance, EndReason)> {
        events
            .iter()
            .filter_map(|e| match e {
                VadEvent::End(u, r) => Some((u, *r)),
                _ => None,
            })
            .collect()
    }

    /// Noise, a "word", noise, a second word, noise: two utterances at the right places.
    #[test]
    fn finds_two_utterances_in_noise() {
        let mut seed = 1;
        let mut audio = noise(ms(1000), 0.003, &mut seed);
        let w1 = audio.len();
        audio.extend(
            tone(ms(400), 0.3)
                .iter()
                .zip(noise(ms(400), 0.003, &mut seed))
                .map(|(a, b)| a + b),
        );
        let w1_end = audio.len();
        audio.extend(noise(ms(800), 0.003, &mut seed));
        let w2 = audio.len();
        audio.extend(tone(ms(600), 0.1));
        let w2_end = audio.len();
        audio.extend(noise(ms(1000), 0.003, &mut seed));

        for chunk in [1, 160, 333, 4096] {
            let mut vad = Vad::new(VadConfig::default(), RATE).unwrap();
            let events = run(&mut vad, &audio, chunk);
            let e = ends(&events);
            assert_eq!(e.len(), 2, "chunk {chunk}: {events:?}");
            let frame = ms(10) as i64;
            for ((u, reason), (s, end)) in e.iter().zip([(w1, w1_end), (w2, w2_end)]) {
                assert_eq!(*reason, EndReason::Silence);
                // Voiced span within one frame of the truth (plus the 30 ms start run).
                assert!((u.speech_start as i64 - s as i64).abs() <= frame, "{chunk}");
                assert!((u.speech_end as i64 - end as i64).abs() <= frame, "{chunk}");
                // Pre-roll before, tail after, samples are the stream's.
                assert_eq!(u.speech_start - u.start, ms(200) as u64);
                assert_eq!(u.end(), u.speech_end + ms(100) as u64);
                assert_eq!(u.samples[..], audio[u.start as usize..u.end() as usize]);
            }
            // One pause per utterance, 100 ms after its speech, before its end.
            let pauses = events
                .iter()
                .filter(|e| matches!(e, VadEvent::Pause(_)))
                .count();
            assert_eq!(pauses, 2, "chunk {chunk}");
        }
    }

    /// A loud word followed by a noisy tail (breath, a fan starting): 38 dB below the word but
    /// 12 dB above the floor estimate. The tail neither holds the utterance open nor starts a
    /// new one, and a word 20 dB quieter a second later is still found.
    #[test]
    fn a_tail_far_below_the_word_is_not_speech() {
        let mut seed = 3;
        let mut audio = noise(ms(1000), 0.002, &mut seed);
        audio.extend(tone(ms(400), 0.5));
        let w1_end = audio.len();
        audio.extend(noise(ms(600), 0.008, &mut seed));
        audio.extend(noise(ms(1000), 0.002, &mut seed));
        let w2 = audio.len();
        audio.extend(tone(ms(400), 0.05));
        let w2_end = audio.len();
        audio.extend(noise(ms(1000), 0.002, &mut seed));
        let frame = ms(10) as i64;

        let mut vad = Vad::new(VadConfig::default(), RATE).unwrap();
        let events = run(&mut vad, &audio, 160);
        let e = ends(&events);
        assert_eq!(e.len(), 2, "{events:?}");
        assert!((e[0].0.speech_end as i64 - w1_end as i64).abs() <= frame);
        assert!((e[1].0.speech_start as i64 - w2 as i64).abs() <= 4 * frame);
        assert!((e[1].0.speech_end as i64 - w2_end as i64).abs() <= frame);
        // The pause comes 100 ms after the word, not after the tail.
        let VadEvent::Pause(p) = &events[0] else {
            panic!("{events:?}")
        };
        assert!((p.speech_end as i64 - w1_end as i64).abs() <= frame);

        // Without the rule (the floor alone), the tail is part of the first word.
        let config = VadConfig {
            peak_drop_db: f32::INFINITY,
            ..VadConfig::default()
        };
        let mut vad = Vad::new(config, RATE).unwrap();
        let events = run(&mut vad, &audio, 160);
        let e = ends(&events);
        assert!(e[0].0.speech_end as usize > w1_end + ms(500), "{events:?}");
    }

    #[test]
    fn clicks_are_dropped_and_long_speech_is_cut() {
        let mut seed = 7;
        let mut audio = noise(ms(500), 0.002, &mut seed);
        audio.extend(tone(ms(50), 0.5)); // a click: 50 ms < min_speech 100 ms
        audio.extend(noise(ms(800), 0.002, &mut seed));
        let mut vad = Vad::new(VadConfig::default(), RATE).unwrap();
        assert!(ends(&run(&mut vad, &audio, 160)).is_empty());

        let config = VadConfig {
            max_utterance_ms: 1000,
            ..VadConfig::default()
        };
        let mut audio = noise(ms(500), 0.002, &mut seed);
        audio.extend(tone(ms(2500), 0.3));
        let mut vad = Vad::new(config, RATE).unwrap();
        let events = run(&mut vad, &audio, 160);
        let e = ends(&events);
        assert!(e.len() >= 2, "{e:?}");
        assert_eq!(e[0].1, EndReason::MaxLength);
        assert!(e[0].0.samples.len() <= ms(1000));
        assert_eq!(e.last().unwrap().1, EndReason::EndOfStream);
    }

    #[test]
    fn noise_floor_adapts_to_a_louder_room() {
        // 1 s quiet, then 8 s of much louder steady noise, then a word well above that noise.
        let mut seed = 3;
        let mut audio = noise(ms(1000), 0.001, &mut seed);
        audio.extend(noise(ms(8000), 0.03, &mut seed));
        let word = audio.len();
        audio.extend(
            tone(ms(500), 0.4)
                .iter()
                .zip(noise(ms(500), 0.03, &mut seed))
                .map(|(a, b)| a + b),
        );
        audio.extend(noise(ms(1000), 0.03, &mut seed));
        let mut vad = Vad::new(VadConfig::default(), RATE).unwrap();
        let events = run(&mut vad, &audio, 160);
        let e = ends(&events);
        // The noise onset may open one utterance (cut at the max length or when the floor
        // catches up), but the floor follows within the window and the word is found.
        let last = e.last().expect("the word").0;
        assert!(
            (last.speech_start as i64 - word as i64).abs() <= ms(10) as i64,
            "{e:?}"
        );
        assert!(e.len() <= 3, "{}", e.len());
        let floor = vad.noise_floor_db();
        let noise_db = 10.0 * (0.03f32 * 0.03 / 3.0).log10();
        assert!(
            (floor - noise_db).abs() < 3.0,
            "floor {floor} vs {noise_db}"
        );
    }

    #[test]
    fn early_end_and_bad_configs() {
        let mut seed = 5;
        let mut audio = noise(ms(500), 0.002, &mut seed);
        audio.extend(tone(ms(300), 0.3));
        audio.extend(noise(ms(200), 0.002, &mut seed));
        let mut vad = Vad::new(VadConfig::default(), RATE).unwrap();
        let mut events = Vec::new();
        vad.push(&audio, &mut events);
        assert!(matches!(events.as_slice(), [VadEvent::Pause(_)]));
        assert!(vad.in_speech());
        vad.end_utterance();
        assert!(!vad.in_speech());
        vad.flush(&mut events);
        assert_eq!(events.len(), 1);

        let bad = |c: VadConfig| Vad::new(c, RATE).err().unwrap().to_string();
        let d = VadConfig::default();
        assert!(bad(VadConfig { pause_ms: 500, ..d }).contains("pause"));
        assert!(bad(VadConfig { frame_ms: 0, ..d }).contains("frame"));
        assert!(bad(VadConfig { start_db: 3.0, ..d }).contains("threshold"));
        assert!(bad(VadConfig {
            peak_drop_db: 0.0,
            ..d
        })
        .contains("peak drop"));
        assert!(bad(VadConfig {
            level_decay_db_per_s: f32::NAN,
            ..d
        })
        .contains("level decay"));
        assert!(Vad::new(d, 0).is_err());
    }
}
