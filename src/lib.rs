//! w2v: offline wav2vec 2.0 speech recognition for edge devices.
//!
//! This crate is the front door: [`Recognizer`] opens an exported model (`w2v export`) on tract
//! (pure Rust, the default) or ONNX Runtime (CPU, CUDA, TensorRT) with the same choices the
//! `w2v` command line makes, and transcribes samples, files or a live stream.
//!
//! ```
//! use w2v::{Options, Recognizer};
//!
//! // The shipped model on tract; Recognizer::open("model.onnx", &options) opens another.
//! let mut recognizer = Recognizer::open_default(&Options::default())?;
//! let transcript = recognizer.transcribe_file("samples/zero-zero-six-seven.wav")?;
//! println!("{}", transcript.text); // ZERO ZERO SIX SEVEN
//! for word in &transcript.words {
//!     println!("{:.2}-{:.2} s {} ({:.2})", word.start, word.end, word.text, word.confidence);
//! }
//! # Ok::<(), w2v::Error>(())
//! ```
//!
//! ONNX Runtime with TensorRT, as `w2v transcribe --backend ort --provider tensorrt` runs it
//! (the ONNX Runtime library comes from `tools/fetch-ort.sh` or `ORT_DYLIB_PATH`):
//!
//! ```no_run
//! use w2v::{BackendKind, Options, ProviderRequest, Recognizer, RuntimeOptions};
//!
//! let options = Options {
//!     runtime: RuntimeOptions {
//!         backend: BackendKind::Ort,
//!         provider: ProviderRequest::TensorRt,
//!         ..RuntimeOptions::default()
//!     },
//!     ..Options::default()
//! };
//! let mut recognizer = Recognizer::open("model.int8.onnx", &options)?;
//! println!("{:?}", recognizer.execution_providers()); // [TensorRt, Cuda, Cpu]
//! # Ok::<(), w2v::Error>(())
//! ```
//!
//! The layers underneath are their own crates, re-exported for what the front door does not
//! cover: [`engine`] (audio, backends, decoders, streaming), [`export`] (checkpoints to ONNX),
//! [`train`] (on-device fine-tuning), [`board_support`] (boards, providers, capture).

mod decoder;
mod error;
mod recognizer;
pub mod runtime;
#[cfg(feature = "serve")]
pub mod serve;
pub mod subtitles;
pub mod tune;

pub use decoder::{DecoderKind, DecoderOptions, LoadedDecoder};
pub use error::{Error, Result};
pub use recognizer::{
    Options, Recognizer, Stream, StreamOptions, StreamResult, Transcript, DEFAULT_CHUNK_SECONDS,
    DEFAULT_SPEECH_GATE,
};
pub use runtime::{
    provider_availability, resolve_model, BackendKind, OptLevel, RuntimeOptions, DEFAULT_MODEL_FILE,
};
pub use w2v_board_support::{Provider, ProviderRequest};
pub use w2v_engine::ctc::Word;
pub use w2v_engine::listen::{EventKind, ListenEvent};
pub use w2v_engine::vad::VadConfig;

/// Lower layer: boards, execution-provider policy, telemetry, audio capture. Public for what the
/// front door does not cover; its API follows the front door's needs and may change.
pub use w2v_board_support as board_support;
/// Lower layer: audio, backends, CTC and beam decoding, LMs, voice activity, streaming. Public
/// for what the front door does not cover (a decoder of your own on [`Recognizer`]'s logits, a
/// custom audio source); its API may change.
pub use w2v_engine as engine;
/// Lower layer: checkpoint readers, the ONNX graph builder, quantization
/// ([`export::export`] is what `w2v export` runs).
pub use w2v_export as export;
/// Lower layer: on-device fine-tuning (`examples/finetune.rs` shows the flow).
pub use w2v_train as train;

// The server moves recognizers between threads.
const _: () = {
    const fn send<T: Send>() {}
    send::<Recognizer>();
};

/// Decode an audio file (WAV, FLAC, MP3, OGG/Vorbis) to mono samples at `rate` Hz.
///
/// ```
/// let samples = w2v::load_audio("samples/zero-zero-six-seven.wav", 16_000)?;
/// assert!(samples.len() > 16_000);
/// # Ok::<(), w2v::Error>(())
/// ```
pub fn load_audio(path: impl AsRef<std::path::Path>, rate: u32) -> Result<Vec<f32>> {
    Ok(w2v_engine::audio::load(path.as_ref(), rate)?)
}
