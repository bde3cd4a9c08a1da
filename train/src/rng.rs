//! The training run's random-number generator: one home for the trainer (example order) and the
//! regularization (SpecAugment masks, LayerDrop), which both draw from it. It is the engine's
//! generator ([`w2v_engine::rng::SplitMix64`]), the workspace's one.

pub use w2v_engine::rng::SplitMix64;
