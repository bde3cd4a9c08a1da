//! Word n-gram language models: ARPA files ([`arpa`]) and their estimation from text
//! ([`build`]).
//!
//! Scores are log10 probabilities, as in ARPA files and KenLM; the beam-search decoder
//! ([`crate::beam`]) converts them to natural-log units.

pub mod arpa;
pub mod build;

pub use arpa::{LmError, LmState, NgramLm, WordId};
pub use build::{build_arpa, BuildError, BuildSummary};
