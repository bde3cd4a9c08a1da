//! The front door: open a model once, then transcribe samples, files or a live stream.

use std::path::{Path, PathBuf};

use serde::Serialize;
use w2v_board_support::Provider;
use w2v_engine::audio::{self, Resampler};
use w2v_engine::beam::{BeamSetup, Hotwords, Mode};
use w2v_engine::ctc::Vocabulary;
use w2v_engine::grammar::CommandSet;
use w2v_engine::hotwords::{ContextGraph, Hotword, UnigramHotwords};
use w2v_engine::listen::{EventKind, ListenConfig, ListenEvent, Listener};
use w2v_engine::speech_gate::SpeechGate;
use w2v_engine::transcriber::Transcriber;
use w2v_engine::vad::VadConfig;
use w2v_engine::{Backend, Logits, ModelInfo};

use crate::decoder::DecoderOptions;
use crate::error::{Error, Result};
use crate::runtime::{open_backend, resolve_model, OrtSessionReport, RuntimeOptions};

/// A transcript with word times and confidences, and its timing.
pub use w2v_engine::transcriber::FileTranscript as Transcript;

/// How a [`Recognizer`] runs and decodes. `Options::default()` is what `w2v transcribe` does
/// without flags: tract on the CPU, greedy decoding, 30-second windows.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backend, execution providers, threads, TensorRT settings.
    pub runtime: RuntimeOptions,
    /// Greedy, word list, or beam search with an LM and hotwords.
    pub decoder: DecoderOptions,
    /// Window length for long audio, in seconds (longer input is run window by window, with
    /// overlap, and stitched).
    pub chunk_seconds: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: RuntimeOptions::default(),
            decoder: DecoderOptions::default(),
            chunk_seconds: DEFAULT_CHUNK_SECONDS,
        }
    }
}

pub use w2v_engine::transcriber::DEFAULT_CHUNK_SECONDS;

/// A speech recognizer: one model on one runtime, with its decoder loaded.
///
/// ```
/// use w2v::{Options, Recognizer};
///
/// let mut recognizer = Recognizer::open_default(&Options::default())?;
/// let transcript = recognizer.transcribe_file("samples/zero-zero-six-seven.wav")?;
/// assert_eq!(transcript.text, "ZERO ZERO SIX SEVEN");
/// # Ok::<(), w2v::Error>(())
/// ```
pub struct Recognizer {
    transcriber: Transcriber<Box<dyn Backend + Send>>,
    path: PathBuf,
    ort: Option<OrtSessionReport>,
}

impl Recognizer {
    /// Open the model file `model` (made by `w2v export`) as `options` say.
    ///
    /// ```
    /// use w2v::{DecoderOptions, Options, Recognizer};
    ///
    /// // The shipped model, its output restricted to its own word list (`--words`).
    /// let options = Options {
    ///     decoder: DecoderOptions {
    ///         words: Some("models/default.words.txt".into()),
    ///         ..DecoderOptions::default()
    ///     },
    ///     ..Options::default()
    /// };
    /// let mut recognizer = Recognizer::open("models/default.onnx", &options)?;
    /// assert_eq!(recognizer.decoding(), "lexicon");
    /// let text = recognizer.transcribe_file("samples/go-up.wav")?.text;
    /// assert_eq!(text, "GO UP");
    /// # Ok::<(), w2v::Error>(())
    /// ```
    pub fn open(model: impl AsRef<Path>, options: &Options) -> Result<Self> {
        Self::open_at(model.as_ref().to_path_buf(), options)
    }

    /// Open the shipped default model ([`crate::resolve_model`]).
    pub fn open_default(options: &Options) -> Result<Self> {
        Self::open_at(resolve_model(None)?, options)
    }

    fn open_at(path: PathBuf, options: &Options) -> Result<Self> {
        if !(options.chunk_seconds.is_finite() && options.chunk_seconds > 0.0) {
            return Err(Error::invalid(format!(
                "--chunk-seconds {}: expected a positive number of seconds",
                options.chunk_seconds
            )));
        }
        let opened = open_backend(&path, &options.runtime, options.chunk_seconds)?;
        let mut transcriber = Transcriber::new(opened.backend);
        transcriber.plan.chunk_seconds = options.chunk_seconds;
        let loaded = options.decoder.load(transcriber.vocab(), 1)?;
        transcriber.lexicon = loaded.lexicon;
        transcriber.beam = loaded.beam;
        Ok(Recognizer {
            transcriber,
            path,
            ort: opened.ort,
        })
    }

    /// The model's self-description (vocabulary, sample rate, precision, ...).
    pub fn info(&self) -> &ModelInfo {
        self.transcriber.info()
    }

    /// The sample rate the model runs at; other rates are converted.
    pub fn sample_rate(&self) -> u32 {
        self.info().sample_rate
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.path
    }

    /// "tract" or "ort".
    pub fn backend_name(&self) -> &'static str {
        self.transcriber.backend_name()
    }

    /// How transcripts are decoded: `greedy`, `lexicon` (a word list), `beam`, or `beam+words`
    /// (beam search spelling only listed words).
    pub fn decoding(&self) -> &'static str {
        match (&self.transcriber.lexicon, &self.transcriber.beam) {
            (Some(_), _) => "lexicon",
            (None, Some(b)) if b.words.is_some() => "beam+words",
            (None, Some(_)) => "beam",
            (None, None) => "greedy",
        }
    }

    /// With ONNX Runtime: the execution providers registered, in priority order.
    pub fn execution_providers(&self) -> &[Provider] {
        self.ort
            .as_ref()
            .map(|r| r.execution_providers.as_slice())
            .unwrap_or(&[])
    }

    /// With ONNX Runtime: how its session was set up (providers, TensorRT engine and cache).
    pub fn ort_session(&self) -> Option<&OrtSessionReport> {
        self.ort.as_ref()
    }

    /// Transcribe mono samples in `[-1, 1]` at `rate` Hz (converted to the model's rate).
    ///
    /// ```
    /// use w2v::{Options, Recognizer};
    ///
    /// let mut recognizer = Recognizer::open_default(&Options::default())?;
    /// // Telephone-rate audio, as a capture card might deliver it.
    /// let samples = w2v::load_audio("samples/zero-zero-six-seven.wav", 8_000)?;
    /// let transcript = recognizer.transcribe(&samples, 8_000)?;
    /// assert_eq!(transcript.text, "ZERO ZERO SIX SEVEN");
    /// assert!(transcript.words[0].start < transcript.words[1].start);
    /// # Ok::<(), w2v::Error>(())
    /// ```
    pub fn transcribe(&mut self, samples: &[f32], rate: u32) -> Result<Transcript> {
        let samples = self.to_model_rate(samples, rate)?;
        Ok(self.transcriber.transcribe(&samples)?)
    }

    /// [`Recognizer::transcribe`] favouring `phrases` (hotwords, as `--hotwords` does, at the
    /// default weight): beam search with the recognizer's LM, if it has one. Words the model's
    /// vocabulary cannot spell are dropped; with no phrase left, or with a word list (which
    /// decides alone), this is [`Recognizer::transcribe`]. The server's `prompt` field uses it.
    ///
    /// ```
    /// use w2v::{Options, Recognizer};
    ///
    /// let mut recognizer = Recognizer::open_default(&Options::default())?;
    /// let samples = w2v::load_audio("samples/go-up.wav", 16_000)?;
    /// let t = recognizer.transcribe_with_hotwords(&samples, 16_000, &["go up", "stop!"])?;
    /// assert_eq!(t.text, "GO UP");
    /// # Ok::<(), w2v::Error>(())
    /// ```
    pub fn transcribe_with_hotwords(
        &mut self,
        samples: &[f32],
        rate: u32,
        phrases: &[&str],
    ) -> Result<Transcript> {
        let vocab = self.transcriber.vocab();
        let list: Vec<Hotword> = phrases
            .iter()
            .enumerate()
            .map(|(i, p)| Hotword {
                words: p
                    .split_whitespace()
                    .map(|w| {
                        w.chars()
                            .filter(|c| vocab.spell(&c.to_string()).is_ok())
                            .collect::<String>()
                    })
                    .filter(|w| !w.is_empty())
                    .collect(),
                weight: None,
                line: i + 1,
            })
            .filter(|h| !h.words.is_empty())
            .collect();
        if list.is_empty() || self.transcriber.lexicon.is_some() {
            return self.transcribe(samples, rate);
        }
        let base = self.transcriber.beam.clone();
        let options = base.as_ref().map(|b| b.options.clone()).unwrap_or_default();
        // As the recognizer's own hotwords would be: pyctcdecode's per-word ones in its mode.
        let hotwords = match options.mode {
            Mode::PyCtcDecode => {
                Hotwords::Unigrams(UnigramHotwords::new(&list, options.hotword_weight))
            }
            Mode::Native => Hotwords::Graph(ContextGraph::new(
                &list,
                options.hotword_weight,
                vocab,
                "hotwords",
            )?),
        };
        let setup = BeamSetup {
            words: base.as_ref().and_then(|b| b.words.clone()),
            lm: base.and_then(|b| b.lm.clone()),
            hotwords: Some(hotwords),
            options,
        };
        let samples = self.to_model_rate(samples, rate)?;
        Ok(self.transcriber.transcribe_with_beam(&samples, &setup)?)
    }

    /// Decode and transcribe an audio file (WAV, FLAC, MP3, OGG/Vorbis; any rate and channels).
    /// Errors name the file.
    pub fn transcribe_file(&mut self, path: impl AsRef<Path>) -> Result<Transcript> {
        self.transcribe_file_with_logits(path).map(|(t, _)| t)
    }

    /// [`Recognizer::transcribe_file`], also returning the model's stitched logits
    /// `[frames, vocab]` (for `w2v decode`, or a decoder of your own).
    pub fn transcribe_file_with_logits(
        &mut self,
        path: impl AsRef<Path>,
    ) -> Result<(Transcript, Logits)> {
        let path = path.as_ref();
        let samples = audio::load(path, self.sample_rate())?;
        self.transcriber
            .transcribe_keeping_logits(&samples)
            .map_err(|e| in_file(e, path))
    }

    /// The model's vocabulary (for decoding logits yourself).
    pub fn vocabulary(&self) -> &Vocabulary {
        self.transcriber.vocab()
    }

    /// Start a live stream: feed samples as they arrive with [`Stream::accept_waveform`], read
    /// each utterance's event as the voice-activity detector closes it, [`Stream::finish`] at the
    /// end. With `options.commands`, utterances are scored against that grammar and accepted or
    /// rejected; otherwise each is transcribed with the recognizer's decoder (greedy, word list,
    /// or beam search with an LM and hotwords).
    ///
    /// ```
    /// use w2v::{Options, Recognizer, StreamOptions};
    ///
    /// let mut recognizer = Recognizer::open_default(&Options::default())?;
    /// let samples = w2v::load_audio("samples/zero-zero-six-seven.wav", 16_000)?;
    /// let mut stream = recognizer.stream(&StreamOptions::default())?;
    /// for block in samples.chunks(1_600) {
    ///     // 100 ms at a time, as a microphone delivers it.
    ///     for event in stream.accept_waveform(16_000, block)? {
    ///         println!("{:.2}-{:.2} s: {}", event.start, event.end, event.text);
    ///     }
    /// }
    /// assert_eq!(stream.finish()?.text, "ZERO ZERO SIX SEVEN");
    /// # Ok::<(), w2v::Error>(())
    /// ```
    pub fn stream(&mut self, options: &StreamOptions) -> Result<Stream<'_>> {
        let commands = match &options.commands {
            Some(path) => Some(CommandSet::load(path, self.transcriber.vocab())?),
            None => None,
        };
        let config = ListenConfig {
            vad: options.vad,
            threshold: options.threshold,
            early_decision: options.early_decision,
        };
        if commands.is_some() && self.decoding() != "greedy" {
            return Err(Error::invalid(
                "a command grammar decides by its own scoring: --words, --lm and --hotwords \
                 shape free transcripts (listening without --commands)",
            ));
        }
        let gate = match options.speech_gate {
            Some(_) if self.sample_rate() != w2v_engine::speech_gate::SAMPLE_RATE => {
                return Err(Error::invalid(format!(
                    "the speech gate (Silero VAD) reads 16 kHz audio and the model reads {} Hz: \
                     listen with --speech-gate off",
                    self.sample_rate()
                )));
            }
            Some(threshold) => Some(SpeechGate::silero(threshold)?),
            None => None,
        };
        let (lexicon, beam) = (
            self.transcriber.lexicon.clone(),
            self.transcriber.beam.clone(),
        );
        let mut transcriber = Transcriber::new(self.transcriber.backend_mut());
        transcriber.lexicon = lexicon;
        transcriber.beam = beam;
        let mut listener = Listener::with_transcriber(transcriber, commands, config)?;
        if let Some(gate) = gate {
            listener = listener.with_speech_gate(gate);
        }
        Ok(Stream {
            listener,
            resampler: None,
            events: Vec::new(),
            new_from: 0,
        })
    }

    fn to_model_rate<'a>(
        &self,
        samples: &'a [f32],
        rate: u32,
    ) -> Result<std::borrow::Cow<'a, [f32]>> {
        let model_rate = self.sample_rate();
        if rate == model_rate {
            return Ok(samples.into());
        }
        Ok(audio::try_resample(samples, rate, model_rate)?.into())
    }
}

/// A backend error while transcribing `path`, named by the file.
fn in_file(e: w2v_engine::BackendError, path: &Path) -> Error {
    match e {
        w2v_engine::BackendError::Run { backend, reason } => {
            Error::Backend(w2v_engine::BackendError::Run {
                backend,
                reason: format!("{}: {reason}", path.display()),
            })
        }
        e => Error::Backend(e),
    }
}

/// The speech gate's default threshold (Silero's own default), or `None` where the gate is off
/// by default.
pub const DEFAULT_SPEECH_GATE: Option<f32> = Some(w2v_engine::speech_gate::DEFAULT_THRESHOLD);

/// How a [`Stream`] cuts and decides utterances. The defaults are `w2v listen`'s.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Command grammar: one phrase per line, optionally `phrase => program args...`.
    pub commands: Option<PathBuf>,
    /// Minimum confidence (0 to 1) of an accepted command.
    pub threshold: f32,
    /// Decide a command at the first pause when no longer phrase starts with it.
    pub early_decision: bool,
    /// The voice-activity detector's levels and timings.
    pub vad: VadConfig,
    /// Speech gate (Silero VAD) in front of the model: an utterance passes when its highest
    /// speech probability reaches this; `None` sends every utterance the VAD cuts to the model.
    pub speech_gate: Option<f32>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        let listen = ListenConfig::default();
        StreamOptions {
            commands: None,
            threshold: listen.threshold,
            early_decision: listen.early_decision,
            vad: listen.vad,
            speech_gate: DEFAULT_SPEECH_GATE,
        }
    }
}

/// What a stream has decided so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamResult {
    /// The accepted commands and transcripts, in order, separated by spaces.
    pub text: String,
    /// Every decided utterance, rejections included.
    pub events: Vec<ListenEvent>,
}

/// A live stream over a [`Recognizer`]'s model (see [`Recognizer::stream`]).
pub struct Stream<'r> {
    listener: Listener<&'r mut Box<dyn Backend + Send>>,
    resampler: Option<Resampler>,
    events: Vec<ListenEvent>,
    new_from: usize,
}

impl Stream<'_> {
    /// Run the model once on silence so that the first utterance does not pay for the runtime's
    /// first-run work; call before live audio starts.
    pub fn warm_up(&mut self) -> Result<()> {
        Ok(self.listener.warm_up()?)
    }

    /// Feed mono samples at `rate` Hz (the same rate for the whole stream). Returns the
    /// utterances decided by these samples.
    pub fn accept_waveform(&mut self, rate: u32, samples: &[f32]) -> Result<&[ListenEvent]> {
        self.new_from = self.events.len();
        let model_rate = self.listener.sample_rate();
        match &mut self.resampler {
            Some(r) if r.from_rate() != rate => {
                return Err(Error::invalid(format!(
                    "stream: samples at {rate} Hz after {} Hz; one stream has one sample rate",
                    r.from_rate()
                )))
            }
            Some(_) => {}
            None => self.resampler = Some(Resampler::new(rate, model_rate)?),
        }
        let r = self.resampler.as_mut().expect("set above");
        if rate == model_rate {
            // Resampler::process copies through; skip the copy.
            self.listener.push(samples, &mut self.events)?;
        } else {
            let resampled = r.process(samples);
            self.listener.push(&resampled, &mut self.events)?;
        }
        Ok(&self.events[self.new_from..])
    }

    /// Everything decided so far.
    pub fn result(&self) -> StreamResult {
        StreamResult {
            text: accepted_text(&self.events),
            events: self.events.clone(),
        }
    }

    /// End of input: decide an utterance still open and return the whole result.
    pub fn finish(mut self) -> Result<StreamResult> {
        self.flush()?;
        Ok(StreamResult {
            text: accepted_text(&self.events),
            events: self.events,
        })
    }

    /// [`Stream::finish`] without giving up the stream: decide an open utterance and return the
    /// events it adds (for callers that report events one by one).
    pub fn flush(&mut self) -> Result<&[ListenEvent]> {
        self.new_from = self.events.len();
        if let Some(r) = &mut self.resampler {
            let tail = r.flush();
            self.listener.push(&tail, &mut self.events)?;
        }
        self.listener.finish(&mut self.events)?;
        Ok(&self.events[self.new_from..])
    }

    /// Forget the events decided so far (a long-running listener that has handled them keeps
    /// its memory flat).
    pub fn clear(&mut self) {
        self.events.clear();
        self.new_from = 0;
    }

    /// Utterances run through the model so far.
    pub fn utterances(&self) -> u64 {
        self.listener.utterances()
    }
}

fn accepted_text(events: &[ListenEvent]) -> String {
    let words: Vec<&str> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Command => e.command.as_deref(),
            EventKind::Transcript => Some(e.text.as_str()),
            _ => None,
        })
        .filter(|t| !t.is_empty())
        .collect();
    words.join(" ")
}
