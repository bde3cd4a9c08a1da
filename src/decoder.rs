//! Decoder options: greedy (best path), a word list (lexicon-constrained), or CTC prefix beam
//! search with an n-gram language model and hotwords; and their wiring to the engine.

use std::path::PathBuf;
use std::sync::Arc;

use w2v_engine::beam::words::WordList;
use w2v_engine::beam::{BeamOptions, BeamSetup, Hotwords, LanguageModel, Mode};
use w2v_engine::ctc::Vocabulary;
use w2v_engine::hotwords::{load_hotwords, ContextGraph, UnigramHotwords};
use w2v_engine::lexicon::Lexicon;
use w2v_engine::lm::NgramLm;

use crate::error::{Error, Result};

/// Which search turns logits into words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderKind {
    /// Best path (argmax per frame).
    Greedy,
    /// CTC prefix beam search (optionally with a language model and hotwords).
    Beam,
}

/// How to decode. The default is greedy decoding with free spelling.
///
/// ```
/// use w2v::DecoderOptions;
///
/// // Beam search with a domain LM and a hotword list (as `--lm ... --hotwords ...`).
/// let options = DecoderOptions {
///     lm: Some("commands.arpa".into()),
///     hotwords: Some("names.txt".into()),
///     lm_weight: 0.8,
///     ..DecoderOptions::default()
/// };
/// assert_eq!(options.beam_width, 100);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderOptions {
    /// `None`: greedy, or beam when `lm` or `hotwords` is set.
    pub decoder: Option<DecoderKind>,
    /// Only output words from this list (spaces or newlines, `#` comments): alone, the
    /// best-scoring sequence of them (CTC Viterbi over the list); with beam search (`lm`,
    /// `hotwords` or `decoder: Beam`), a word trie in the beam with LM lookahead.
    pub words: Option<PathBuf>,
    /// Beam search: beams kept per frame.
    pub beam_width: usize,
    /// ARPA n-gram language model (words matched case-insensitively).
    pub lm: Option<PathBuf>,
    /// LM weight alpha, applied to natural-log LM scores (0 turns the LM off).
    pub lm_weight: f64,
    /// Score per word, beta.
    pub word_score: f64,
    /// Added to the log10 LM score of unknown words, and the penalty of a partial word that
    /// starts no known word.
    pub unk_score: f64,
    /// Tokens below this log-probability are not tried (except each frame's best, and hotword
    /// continuations).
    pub token_min_logp: f64,
    /// Beams this far (natural log) below the best are dropped.
    pub beam_prune_logp: f64,
    /// Phrases to favour, one per line, optionally ending in ` :WEIGHT`.
    pub hotwords: Option<PathBuf>,
    /// Bonus per completed hotword word (natural log).
    pub hotword_weight: f64,
    /// Reproduce pyctcdecode 0.5's search exactly instead of the native refinements.
    pub pyctcdecode: bool,
}

/// The engine's defaults ([`BeamOptions::default`], pyctcdecode's), which the command line's
/// flags show too.
impl Default for DecoderOptions {
    fn default() -> Self {
        let beam = BeamOptions::default();
        DecoderOptions {
            decoder: None,
            words: None,
            beam_width: beam.beam_width,
            lm: None,
            lm_weight: beam.lm_weight,
            word_score: beam.word_score,
            unk_score: beam.unk_score,
            token_min_logp: beam.token_min_logp,
            beam_prune_logp: beam.beam_prune_logp,
            hotwords: None,
            hotword_weight: beam.hotword_weight,
            pyctcdecode: false,
        }
    }
}

/// A decoder ready to run: the loaded word list, or beam search with its loaded LM and hotwords
/// (both `None`: greedy).
pub struct LoadedDecoder {
    pub lexicon: Option<Arc<Lexicon>>,
    pub beam: Option<Arc<BeamSetup>>,
}

impl DecoderOptions {
    /// Load the word list, LM and hotwords for a model with vocabulary `vocab`; `nbest`
    /// transcripts per utterance from a beam search.
    pub fn load(&self, vocab: &Vocabulary, nbest: usize) -> Result<LoadedDecoder> {
        let lexicon = match &self.words {
            Some(path) => {
                let lex = Lexicon::load(path, vocab)?;
                tracing::info!(words = lex.words().len(), file = %path.display(), "word list");
                Some(lex)
            }
            None => None,
        };
        let mut beam = self.beam_setup(vocab, nbest)?;
        match (lexicon, &mut beam) {
            // With beam search the word list becomes a word trie with LM lookahead in the beam.
            (Some(lex), Some(setup)) => {
                if setup.options.mode == Mode::PyCtcDecode {
                    return Err(Error::invalid(
                        "--words is not part of pyctcdecode's search: drop --pyctcdecode or --words",
                    ));
                }
                setup.words = Some(Arc::new(WordList::new(
                    lex.words(),
                    setup.lm.as_deref().map(LanguageModel::model),
                    setup.options.unk_score,
                )));
                Ok(LoadedDecoder {
                    lexicon: None,
                    beam: beam.map(Arc::new),
                })
            }
            // Alone, the best-scoring sequence of listed words (CTC Viterbi over the word list).
            (lexicon, _) => Ok(LoadedDecoder {
                lexicon: lexicon.map(Arc::new),
                beam: beam.map(Arc::new),
            }),
        }
    }

    /// The beam search to run, `None` for greedy decoding. Loads the LM and hotwords.
    pub fn beam_setup(&self, vocab: &Vocabulary, nbest: usize) -> Result<Option<BeamSetup>> {
        let wants_beam = self.lm.is_some() || self.hotwords.is_some();
        match self.decoder {
            Some(DecoderKind::Greedy) if wants_beam => {
                return Err(Error::invalid("--lm and --hotwords need --decoder beam"))
            }
            Some(DecoderKind::Greedy) => return Ok(None),
            None if !wants_beam => return Ok(None),
            _ => {}
        }
        if self.beam_width == 0 {
            return Err(Error::invalid("--beam-width must be at least 1"));
        }
        let mode = if self.pyctcdecode {
            Mode::PyCtcDecode
        } else {
            Mode::Native
        };
        let lm = match &self.lm {
            Some(path) => Some(Arc::new(LanguageModel::new(NgramLm::load(path)?, mode))),
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
            words: None,
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
                // As pyctcdecode: `decode` (one transcript) prunes the history, `decode_beams`
                // (n-best lists) does not.
                prune_history: mode == Mode::PyCtcDecode && nbest <= 1,
                mode,
            },
        }))
    }
}
