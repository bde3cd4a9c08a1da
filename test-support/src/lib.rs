//! Helpers shared by the w2v test suites (the binary's end-to-end tests and each crate's
//! integration tests), so that a fixture moves or a tolerance changes in one place.
//!
//! - [`paths`]: the repository root and the committed fixtures, samples and models in it, and
//!   where the ONNX Runtime library is;
//! - [`tolerance`]: the named tolerance tiers every numeric comparison uses, and comparisons of
//!   arrays that report the worst element.
//!
//! Used only as a dev-dependency; it depends on no w2v crate (and on nothing outside `std`), so
//! every crate's tests can use it.

pub mod lm;
pub mod paths;
pub mod tolerance;

pub use tolerance::{assert_close, max_abs_diff, Tier, Worst};
