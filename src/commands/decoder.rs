//! The decoder flags shared by `transcribe`, `eval` and `decode`, and their wiring to the
//! engine's beam search.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::ValueEnum;
use w2v_engine::beam::{BeamOptions, BeamSetup, Hotwords, LanguageModel, Mode};
use w2v_engine::ctc::Vocabulary;
use w2v_engine::hotwords::{load_hotwords, ContextGraph, UnigramHotwords};
use w2v_engine::lm::NgramLm;

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
    #[arg(long, default_value_t = 100)]
    pub beam_width: usize,
    /// ARPA n-gram language model (words matched case-insensitively).
    #[arg(long, value_name = "LM.arpa")]
    pub lm: Option<PathBuf>,
    /// LM weight alpha, applied to natural-log LM scores (0 turns the LM off).
    #[arg(long, default_value_t = 0.5, allow_hyphen_values = true)]
    pub lm_weight: f64,
    /// Score per word, beta.
    #[arg(long, default_value_t = 1.5, allow_hyphen_values = true)]
    pub word_score: f64,
    /// Added to the log10 LM score of unknown words, and the penalty of a partial word that
    /// starts no known word.
    #[arg(long, default_value_t = -10.0, allow_hyphen_values = true)]
    pub unk_score: f64,
    /// Tokens below this log-probability are not tried (except each frame's best, and hotword
    /// continuations).
    #[arg(long, default_value_t = -5.0, allow_hyphen_values = true)]
    pub token_min_logp: f64,
    /// Beams this far (natural log) below the best are dropped.
    #[arg(long, default_value_t = -10.0, allow_hyphen_values = true)]
    pub beam_prune_logp: f64,
    /// Phrases to favour, one per line, optionally ending in ` :WEIGHT`.
    #[arg(long, value_name = "HOTWORDS.txt")]
    pub hotwords: Option<PathBuf>,
    /// Bonus per completed hotword word (natural log).
    #[arg(long, default_value_t = 10.0, allow_hyphen_values = true)]
    pub hotword_weight: f64,
    /// Reproduce pyctcdecode 0.5's search exactly (its per-word hotwords, its known-word rule,
    /// its end-of-sentence scoring) instead of the native refinements.
    #[arg(long)]
    pub pyctcdecode: bool,
}

impl DecoderArgs {
    /// The beam search to run, `None` for greedy decoding. Loads the LM and hotwords.
    pub fn setup(&self, vocab: &Vocabulary, nbest: usize) -> Result<Option<BeamSetup>> {
        let wants_beam = self.lm.is_some() || self.hotwords.is_some();
        match self.decoder {
            Some(DecoderKind::Greedy) if wants_beam => {
                bail!("--lm and --hotwords need --decoder beam")
            }
            Some(DecoderKind::Greedy) => return Ok(None),
            None if !wants_beam => return Ok(None),
            _ => {}
        }
        if self.beam_width == 0 {
            bail!("--beam-width must be at least 1");
        }
        let mode = if self.pyctcdecode {
            Mode::PyCtcDecode
        } else {
            Mode::Native
        };
        let lm = match &self.lm {
            Some(path) => Some(LanguageModel::new(NgramLm::load(path)?, mode)),
            None => None,
        };
        let hotwords = match &self.hotwords {
            Some(path) => {
                let list = load_hotwords(path)?;
                tracing::info!(phrases = list.len(), file = %path.display(), "hotwords");
                Some(match mode {
                    Mode::PyCtcDecode => {
                        Hotwords::Unigrams(UnigramHotwords::new(&list, self.hotword_weight))
                    }
                    Mode::Native => Hotwords::Graph(ContextGraph::new(
                        &list,
                        self.hotword_weight,
                        vocab,
                        &path.display().to_string(),
                    )?),
                })
            }
            None => None,
        };
        Ok(Some(BeamSetup {
            lm,
            hotwords,
            options: BeamOptions {
                beam_width: self.beam_width,
                beam_prune_logp: self.beam_prune_logp,
                token_min_logp: self.token_min_logp,
                lm_weight: self.lm_weight,
                word_score: self.word_score,
                unk_score: self.unk_score,
                hotword_weight: self.hotword_weight,
                nbest: nbest.max(1),
                mode,
            },
        }))
    }
}
