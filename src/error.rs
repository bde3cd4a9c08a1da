//! The library's one error type.

use std::path::PathBuf;

use w2v_board_support::ProviderError;
use w2v_engine::audio::{AudioError, ResampleError};
use w2v_engine::fs::ReadError;
use w2v_engine::grammar::GrammarError;
use w2v_engine::lm::LmError;
use w2v_engine::model_info::ModelInfoError;
use w2v_engine::vad::VadConfigError;
use w2v_engine::BackendError;

/// Everything that can go wrong opening a model, loading a decoder's files, or transcribing.
/// Each message is one line that names the file (or option) and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No model was given and no shipped model was found.
    #[error("no --model given and no shipped model found (looked at {})", list(.searched))]
    NoDefaultModel { searched: Vec<PathBuf> },
    /// The model path is not a model file.
    #[error("{}: {reason}", .path.display())]
    Model { path: PathBuf, reason: String },
    /// The model's metadata is missing or invalid.
    #[error(transparent)]
    ModelInfo(#[from] ModelInfoError),
    /// The runtime could not load or run the model (or the ONNX Runtime library is missing).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An explicitly requested execution provider is not available here.
    #[error(
        "{0} (set allow_fallback, --allow-fallback on the command line, to run on the CPU instead)"
    )]
    Provider(ProviderError),
    /// An audio file could not be read or decoded.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// Audio at this sample rate cannot be converted to the model's.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// A word list, command grammar or hotword file is invalid.
    #[error(transparent)]
    Grammar(#[from] GrammarError),
    /// An ARPA language model is invalid.
    #[error(transparent)]
    Lm(#[from] LmError),
    /// Invalid voice-activity settings.
    #[error(transparent)]
    Vad(#[from] VadConfigError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// Options that do not go together or are out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid(message.into())
    }

    /// Whether the model itself is at fault (it cannot be loaded or run at all), rather than one
    /// input: a multi-file run stops at such an error instead of failing every file alike.
    pub fn is_model_failure(&self) -> bool {
        matches!(
            self,
            Error::ModelInfo(_)
                | Error::Backend(
                    BackendError::Load { .. }
                        | BackendError::Model(_)
                        | BackendError::OrtLibrary { .. }
                )
        )
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
