//! `w2v listen`: voice commands (or free transcripts) from a microphone or a file.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use w2v::board_support::{AudioSource, CaptureError, FileSource, Pacing};
use w2v::engine::audio::{self, PcmStream, StreamHint};
use w2v::{EventKind, ListenEvent, Options, Recognizer, StreamOptions, VadConfig};

use super::decoder::DecoderArgs;
use super::model::ModelArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Listen to an audio file instead of a microphone; `-` reads a live stream from standard
    /// input: WAV, or raw 16-bit little-endian PCM with --rate (`arecord -f S16_LE -r 16000 -c 1
    /// | w2v listen --input - --rate 16000`).
    #[arg(long, conflicts_with = "device")]
    input: Option<PathBuf>,
    /// With `--input -`: the sample rate of raw PCM (checked against a WAV header's).
    #[arg(long)]
    rate: Option<u32>,
    /// With `--input -`: interleaved channels of raw PCM (default 1; mixed to mono).
    #[arg(long)]
    channels: Option<u16>,
    /// Capture device, by name or id (default: the system's default input; `w2v doctor` lists
    /// the devices).
    #[arg(long)]
    device: Option<String>,
    /// Command grammar: one phrase per line, optionally `phrase => program args...`. Without it,
    /// every utterance is transcribed freely.
    #[arg(long)]
    commands: Option<PathBuf>,
    /// Minimum confidence (0 to 1) of an accepted command, the phrase's posterior probability;
    /// below it the utterance is reported as rejected. The default was chosen on the default
    /// model's dev speakers.
    #[arg(long, default_value_t = w2v::engine::listen::DEFAULT_THRESHOLD, value_parser = parse_unit)]
    threshold: f32,
    /// Without --commands: free transcripts only use words from this list (as `w2v transcribe
    /// --words`).
    #[arg(long, value_name = "WORDS.txt", conflicts_with = "commands")]
    words: Option<PathBuf>,
    #[command(flatten)]
    decoder: DecoderArgs,
    /// Run each accepted command's action (program and arguments, no shell).
    #[arg(long, requires = "commands")]
    exec: bool,
    /// One JSON object per event and line.
    #[arg(long)]
    json: bool,
    /// With --input: deliver the file at real time, as a microphone would (default: as fast as
    /// possible).
    #[arg(long, requires = "input")]
    realtime: bool,
    /// Decide commands only after the full hangover, never early at the pause.
    #[arg(long)]
    no_early: bool,
    /// Speech gate in front of the model: `silero` runs Silero VAD (shipped, MIT) over each
    /// utterance the energy VAD cuts and drops it unless some 32 ms of it reach
    /// --speech-gate-threshold; `off` sends every utterance to the model.
    #[arg(long, value_enum, default_value_t = SpeechGateArg::default())]
    speech_gate: SpeechGateArg,
    /// Speech gate: the speech probability (0 to 1) an utterance must reach.
    #[arg(long, default_value_t = w2v::engine::speech_gate::DEFAULT_THRESHOLD, value_parser = parse_unit)]
    speech_gate_threshold: f32,
    /// VAD: level above the noise floor that starts speech, in dB.
    #[arg(long, default_value_t = 10.0)]
    vad_start_db: f32,
    /// VAD: level above the noise floor that keeps speech going, in dB.
    #[arg(long, default_value_t = 6.0)]
    vad_continue_db: f32,
    /// VAD: frames this far below the speech level (the loudest recent frame) are not speech,
    /// in dB: noise in the room or breath after a word then does not hold the utterance open
    /// (`inf` turns it off).
    #[arg(long, default_value_t = 35.0)]
    vad_peak_drop_db: f32,
    /// VAD: frames quieter than this (dB full scale) are never speech.
    #[arg(long, default_value_t = -55.0, allow_hyphen_values = true)]
    vad_min_level_db: f32,
    /// VAD: quiet after speech that ends an utterance, in ms.
    #[arg(long, default_value_t = 400)]
    hangover_ms: u32,
    /// VAD: quiet after speech at which a command may be decided early, in ms.
    #[arg(long, default_value_t = 100)]
    pause_ms: u32,
    /// VAD: shortest speech kept, in ms.
    #[arg(long, default_value_t = 100)]
    min_speech_ms: u32,
    /// VAD: longest utterance, in ms (longer speech is cut).
    #[arg(long, default_value_t = 6000)]
    max_utterance_ms: u32,
}

fn parse_unit(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    #[serde(flatten)]
    event: &'a ListenEvent,
    /// Wall-clock seconds since the input started when the event was printed.
    decided_at: f64,
}

/// Standard input as an [`AudioSource`]: a WAV or raw PCM stream decoded as it arrives.
struct StdinSource(PcmStream<std::io::Stdin>);

impl AudioSource for StdinSource {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool, CaptureError> {
        self.0
            .read(out)
            .map_err(|e| CaptureError::Stream(e.to_string()))
    }

    fn overruns(&self) -> u64 {
        0
    }
}

fn open_source(args: &Args, rate: u32) -> Result<Box<dyn AudioSource>> {
    if args.input.as_deref() == Some(std::path::Path::new("-")) {
        if args.realtime {
            bail!("--realtime replays a file at real time; standard input is paced by its writer");
        }
        let hint = StreamHint {
            rate: args.rate,
            channels: args.channels,
        };
        return Ok(Box::new(StdinSource(PcmStream::open(
            "stdin",
            std::io::stdin(),
            hint,
        )?)));
    }
    if args.rate.is_some() || args.channels.is_some() {
        bail!("--rate and --channels describe raw PCM on standard input (--input -)");
    }
    if let Some(path) = &args.input {
        let samples = audio::load(path, rate)?;
        let pacing = if args.realtime {
            Pacing::RealTime
        } else {
            Pacing::FullSpeed
        };
        return Ok(Box::new(FileSource::new(
            path.display().to_string(),
            samples,
            rate,
            pacing,
        )));
    }
    open_microphone(args.device.as_deref())
}

#[cfg(feature = "microphone")]
fn open_microphone(device: Option<&str>) -> Result<Box<dyn AudioSource>> {
    Ok(Box::new(w2v_board_support::Microphone::open(device)?))
}

#[cfg(not(feature = "microphone"))]
fn open_microphone(_device: Option<&str>) -> Result<Box<dyn AudioSource>> {
    Err(w2v_board_support::CaptureError::NotBuilt.into())
}

/// `--speech-gate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SpeechGateArg {
    /// Silero VAD (models/silero_vad.onnx, built in).
    Silero,
    /// No gate: every utterance the energy VAD cuts goes to the model.
    Off,
}

impl Default for SpeechGateArg {
    fn default() -> Self {
        if w2v::DEFAULT_SPEECH_GATE.is_some() {
            SpeechGateArg::Silero
        } else {
            SpeechGateArg::Off
        }
    }
}

impl std::fmt::Display for SpeechGateArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    // Each utterance is one inference of at most --max-utterance-ms (plus VAD padding).
    let longest = f64::from(args.max_utterance_ms) / 1000.0 + 1.0;
    let options = Options {
        runtime: args.model.runtime(),
        decoder: args.decoder.options(args.words.as_deref()),
        chunk_seconds: longest,
    };
    let mut recognizer = Recognizer::open(args.model.path()?, &options)?;
    let rate = recognizer.sample_rate();
    let stream_options = StreamOptions {
        commands: args.commands.clone(),
        threshold: args.threshold,
        early_decision: !args.no_early,
        speech_gate: match args.speech_gate {
            SpeechGateArg::Silero => Some(args.speech_gate_threshold),
            SpeechGateArg::Off => None,
        },
        vad: VadConfig {
            start_db: args.vad_start_db,
            continue_db: args.vad_continue_db,
            peak_drop_db: args.vad_peak_drop_db,
            min_level_db: args.vad_min_level_db,
            hangover_ms: args.hangover_ms,
            pause_ms: args.pause_ms,
            min_speech_ms: args.min_speech_ms,
            max_utterance_ms: args.max_utterance_ms,
            ..VadConfig::default()
        },
    };
    let mut stream = recognizer.stream(&stream_options)?;
    stream.warm_up()?;
    let mut source = open_source(&args, rate)?;
    let source_rate = source.sample_rate();
    tracing::info!(source = source.name(), rate = source_rate, "listening");

    let mut out = Output {
        json: args.json,
        exec: args.exec,
        children: Vec::new(),
        t0: Instant::now(),
    };
    let mut block = Vec::new();
    let mut reported_overruns = 0;
    // Wall-clock zero: when reading starts (a file replayed at real time starts its clock at
    // the first read, a microphone is already running).
    out.t0 = Instant::now();
    loop {
        block.clear();
        if !source.read(&mut block)? {
            break;
        }
        let overruns = source.overruns();
        if overruns > reported_overruns {
            eprintln!(
                "warning: {}: {} samples dropped so far (the listener fell behind the device)",
                source.name(),
                overruns
            );
            reported_overruns = overruns;
        }
        let events = stream
            .accept_waveform(source_rate, &block)
            .with_context(|| source.name().to_string())?;
        out.emit(events)?;
        stream.clear();
    }
    out.emit(stream.flush()?)?;
    out.wait_children();
    Ok(ExitCode::SUCCESS)
}

struct Output {
    json: bool,
    exec: bool,
    children: Vec<(String, Child)>,
    t0: Instant,
}

impl Output {
    fn emit(&mut self, events: &[ListenEvent]) -> Result<()> {
        if events.is_empty() {
            self.reap();
            return Ok(());
        }
        let decided_at = self.t0.elapsed().as_secs_f64();
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        for ev in events {
            if self.json {
                serde_json::to_writer(
                    &mut lock,
                    &JsonEvent {
                        event: ev,
                        decided_at,
                    },
                )?;
                writeln!(lock)?;
            } else {
                writeln!(lock, "{}", text_line(ev))?;
            }
            lock.flush()?;
            if self.exec && ev.kind == EventKind::Command {
                if let (Some(action), Some(command)) = (&ev.action, &ev.command) {
                    self.spawn(command, action);
                }
            }
        }
        self.reap();
        Ok(())
    }

    /// Start an action: the program with its arguments, no shell, not waited for here.
    fn spawn(&mut self, command: &str, action: &[String]) {
        let Some((program, rest)) = action.split_first() else {
            return;
        };
        match Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(child) => self.children.push((command.to_string(), child)),
            Err(e) => eprintln!("warning: command {command:?}: cannot run {program:?}: {e}"),
        }
    }

    fn reap(&mut self) {
        self.children
            .retain_mut(|(command, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    report_status(command, status);
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            });
    }

    fn wait_children(&mut self) {
        for (command, mut child) in self.children.drain(..) {
            if let Ok(status) = child.wait() {
                report_status(&command, status);
            }
        }
    }
}

fn report_status(command: &str, status: std::process::ExitStatus) {
    if !status.success() {
        eprintln!("warning: command {command:?}: action exited with {status}");
    }
}

fn text_line(ev: &ListenEvent) -> String {
    let span = format!("{:7.2} {:7.2}", ev.start, ev.end);
    match ev.kind {
        EventKind::Command => format!(
            "{span}  {}  ({:.2})",
            ev.command.as_deref().unwrap_or_default(),
            ev.confidence
        ),
        EventKind::Transcript => format!("{span}  {}", ev.text),
        _ => format!(
            "{span}  rejected ({}): {:?}, best {:?} ({:.2})",
            kind_name(ev.kind),
            ev.text,
            ev.candidate.as_deref().unwrap_or_default(),
            ev.confidence
        ),
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Command => "command",
        EventKind::OutOfGrammar => "out of grammar",
        EventKind::LowConfidence => "low confidence",
        EventKind::NoSpeech => "no speech",
        EventKind::Transcript => "transcript",
    }
}
