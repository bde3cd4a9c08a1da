//! The decoder flags shared by `transcribe`, `eval` and `decode`, turned into the library's
//! [`DecoderOptions`].

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use w2v::DecoderOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecoderKind {
    /// Best path (argmax per frame).
    Greedy,
    /// CTC prefix beam search (optionally with --lm and --hotwords).
    Beam,
}

#[derive(clap::Args, Clone, Debug)]
pub struct DecoderArgs {
    /// Decoder; default greedy, or beam when --lm or --hotwords is given.
    #[arg(long, value_enum)]
    pub decoder: Option<DecoderKind>,
    /// Beam search: beams kept per frame.
    #[arg(long, default_value_t = defaults().beam_width)]
    pub beam_width: usize,
    /// ARPA n-gram language model (words matched case-insensitively).
    #[arg(long, value_name = "LM.arpa")]
    pub lm: Option<PathBuf>,
    /// LM weight alpha, applied to natural-log LM scores (0 turns the LM off).
    #[arg(long, default_value_t = defaults().lm_weight, allow_hyphen_values = true)]
    pub lm_weight: f64,
    /// Score per word, beta.
    #[arg(long, default_value_t = defaults().word_score, allow_hyphen_values = true)]
    pub word_score: f64,
    /// Added to the log10 LM score of unknown words, and the penalty of a partial word that
    /// starts no known word.
    #[arg(long, default_value_t = defaults().unk_score, allow_hyphen_values = true)]
    pub unk_score: f64,
    /// Tokens below this log-probability are not tried (except each frame's best, and hotword
    /// continuations).
    #[arg(long, default_value_t = defaults().token_min_logp, allow_hyphen_values = true)]
    pub token_min_logp: f64,
    /// Beams this far (natural log) below the best are dropped.
    #[arg(long, default_value_t = defaults().beam_prune_logp, allow_hyphen_values = true)]
    pub beam_prune_logp: f64,
    /// Phrases to favour, one per line, optionally ending in ` :WEIGHT`.
    #[arg(long, value_name = "HOTWORDS.txt")]
    pub hotwords: Option<PathBuf>,
    /// Bonus per completed hotword word (natural log).
    #[arg(long, default_value_t = defaults().hotword_weight, allow_hyphen_values = true)]
    pub hotword_weight: f64,
    /// Reproduce pyctcdecode 0.5's search exactly (its per-word hotwords, its known-word rule,
    /// its end-of-sentence scoring) instead of the native refinements.
    #[arg(long)]
    pub pyctcdecode: bool,
}

/// The library's defaults, shown by `--help`.
fn defaults() -> DecoderOptions {
    DecoderOptions::default()
}

impl DecoderArgs {
    /// The library's decoder options for these flags and `--words`.
    pub fn options(&self, words: Option<&Path>) -> DecoderOptions {
        DecoderOptions {
            decoder: self.decoder.map(|d| match d {
                DecoderKind::Greedy => w2v::DecoderKind::Greedy,
                DecoderKind::Beam => w2v::DecoderKind::Beam,
            }),
            words: words.map(Path::to_path_buf),
            beam_width: self.beam_width,
            lm: self.lm.clone(),
            lm_weight: self.lm_weight,
            word_score: self.word_score,
            unk_score: self.unk_score,
            token_min_logp: self.token_min_logp,
            beam_prune_logp: self.beam_prune_logp,
            hotwords: self.hotwords.clone(),
            hotword_weight: self.hotword_weight,
            pyctcdecode: self.pyctcdecode,
        }
    }
}
