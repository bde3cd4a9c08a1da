//! CTC prefix beam search with an n-gram language model and hotwords.
//!
//! The search follows pyctcdecode's (`BeamSearchDecoderCTC`): a beam is a prefix of completed
//! words, the partial word being spelled and the last token emitted (the blank included), which
//! tells a repeated token (collapsed) from a new one; beams reaching the same prefix merge by
//! summing their probabilities. Per frame only tokens with log-probability at least
//! `token_min_logp`, and the frame's best token, are tried; beams more than `-beam_prune_logp`
//! below the best and beyond the best `beam_width` are dropped. Log-probabilities are clipped to
//! `[ln 1e-15, 0]`, as pyctcdecode does.
//!
//! A beam's score is its acoustic log-probability plus, when a word is completed, `alpha ·
//! ln(10) · log10 p_LM(word | words before) + beta` (`--lm-weight`, `--word-score`; a word the
//! LM does not know also gets `unk_score` added to its log10 probability, pyctcdecode's
//! convention), plus `unk_score` for a partial word that starts no known word (scaled by its
//! length beyond 6 characters), plus the hotword bonus. The sentence end adds `log10 p(</s>)`.
//!
//! Two modes differ in details:
//!
//! * [`Mode::PyCtcDecode`] reproduces pyctcdecode 0.5's top transcript on the same log-probs and
//!   settings: its hotword scorer (every word of a phrase is a separate hotword, order ignored;
//!   see [`UnigramHotwords`]), its known-unigram rule (the ARPA 1-grams with a back-off field),
//!   and its scoring of a transcript that ends in a word delimiter (an empty word, scored as
//!   `<unk>`, before `</s>`).
//! * [`Mode::Native`] (the default) uses phrase-aware hotwords ([`ContextGraph`]: order
//!   enforced, partial credit taken back), never prunes a token that continues a beam's hotword
//!   (so a hotword the acoustics rank below `token_min_logp` can still win), scores only `</s>`
//!   after a trailing delimiter, and counts all 1-grams as known words.
//!
//! With a word list ([`BeamDecoder::with_words`], `--words`), native mode spells only listed
//! words: a partial word that begins no listed word ends its beam, and a partial word scores the
//! best unigram LM score of the words it can still become (LM lookahead, see [`words`]), which its
//! real LM score replaces when the word ends.
//!
//! Word times and confidences come from the best path of each hypothesis, exactly as greedy
//! decoding reports them ([`crate::ctc::segment_words`]). With beam width 1, no LM and no
//! hotwords the result is greedy decoding's.

use rustc_hash::FxHashMap as HashMap;
use std::collections::hash_map::Entry;

use crate::ctc::{
    collapse_tokens, log_softmax_in_place, segment_words, TokenKind, Transcript, Vocabulary,
};
use crate::hotwords::{ContextGraph, GraphState, UnigramHotwords};
use crate::lm::{LmState, NgramLm, WordId};

pub mod words;
use words::{Prefix, WordList};

/// pyctcdecode's clipping floor: `ln(1e-15)`.
const MIN_LOGP: f64 = -34.538_776_394_910_684;
/// log(10), to turn log10 LM scores into natural-log units.
const LN_10: f64 = std::f64::consts::LN_10;
/// Partial words longer than this many characters get a proportionally larger unknown-word
/// penalty (pyctcdecode's `AVG_TOKEN_LEN`).
const AVG_WORD_LEN: usize = 6;

/// Which details of the search to follow (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Native,
    PyCtcDecode,
}

/// Search settings; the defaults are pyctcdecode's.
#[derive(Clone, Debug)]
pub struct BeamOptions {
    pub beam_width: usize,
    /// Beams scoring this far below the best (natural log) are dropped.
    pub beam_prune_logp: f64,
    /// Tokens below this log-probability are not tried (except the frame's best, and in native
    /// mode hotword continuations).
    pub token_min_logp: f64,
    /// LM weight alpha (applied to natural-log LM scores).
    pub lm_weight: f64,
    /// Score per completed word, beta.
    pub word_score: f64,
    /// Added to the log10 LM score of a word the LM does not know, and the penalty of a partial
    /// word that starts no known word.
    pub unk_score: f64,
    /// Default bonus per completed hotword (phrases may set their own).
    pub hotword_weight: f64,
    /// How many hypotheses to return.
    pub nbest: usize,
    pub mode: Mode,
    /// After each frame, keep only the best of the beams that share their last `order - 1`
    /// words (at least one; all words without an LM), partial word and last token: they can no
    /// longer be told apart by the LM, so only the best can win. pyctcdecode's `decode` does
    /// this (`prune_history=True`), its `decode_beams` does not; it costs beam diversity, so
    /// only the top hypothesis is reliable with it.
    pub prune_history: bool,
}

impl Default for BeamOptions {
    fn default() -> Self {
        BeamOptions {
            beam_width: 100,
            beam_prune_logp: -10.0,
            token_min_logp: -5.0,
            lm_weight: 0.5,
            word_score: 1.5,
            unk_score: -10.0,
            hotword_weight: 10.0,
            nbest: 1,
            mode: Mode::Native,
            prune_history: false,
        }
    }
}

/// One hypothesis of [`BeamDecoder::decode`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hypothesis {
    #[serde(flatten)]
    pub transcript: Transcript,
    /// The search score (acoustic + LM + hotwords), natural log.
    pub score: f64,
    /// The acoustic part: log-probability of the prefix (summed over merged paths).
    pub logit_score: f64,
}

/// The language model as the decoder uses it: the ARPA model and the known words.
pub struct LanguageModel {
    lm: NgramLm,
    /// Sorted lower-case known words (for partial-word checks), `None`: every partial word is
    /// unknown (pyctcdecode without unigrams).
    unigrams: Option<Vec<String>>,
    /// Whether the unigram list is non-empty (pyctcdecode checks words against it only then).
    check_list: bool,
    /// The same words' bytes end to end, and where each starts (one more: the end), so that
    /// narrowing a prefix's range reads one array instead of following each word's pointer.
    flat: Vec<u8>,
    starts: Vec<u32>,
}

impl LanguageModel {
    /// Known words: the ARPA's 1-grams (except `<s>`, `</s>`, `<unk>`); in pyctcdecode's mode
    /// only those with a back-off field, as its `load_unigram_set_from_arpa` reads them.
    pub fn new(lm: NgramLm, mode: Mode) -> Self {
        let mut words: Vec<String> = (0..lm.vocab_len() as WordId)
            .filter(|&id| id != lm.unk() && id != lm.bos() && id != lm.eos())
            .filter(|&id| mode == Mode::Native || lm.unigram_has_backoff(id))
            .map(|id| lm.word(id).to_string())
            .collect();
        words.sort();
        words.dedup();
        LanguageModel::assemble(lm, Some(words))
    }

    /// With an explicit list of known words (pyctcdecode's `unigrams` argument): `None` for
    /// none at all. Words the LM does not have are dropped, as pyctcdecode does.
    pub fn with_unigrams(lm: NgramLm, unigrams: Option<&[&str]>) -> Self {
        let unigrams = unigrams.map(|list| {
            let mut words: Vec<String> = list
                .iter()
                .map(|w| w.to_lowercase())
                .filter(|w| lm.contains(w) || w == "<s>" || w == "</s>")
                .collect();
            words.sort();
            words.dedup();
            words
        });
        LanguageModel::assemble(lm, unigrams)
    }

    fn assemble(lm: NgramLm, unigrams: Option<Vec<String>>) -> Self {
        let check_list = unigrams.as_ref().is_some_and(|u| !u.is_empty());
        let (mut flat, mut starts) = (Vec::new(), vec![0u32]);
        for w in unigrams.iter().flatten() {
            flat.extend_from_slice(w.as_bytes());
            starts.push(flat.len() as u32);
        }
        LanguageModel {
            lm,
            unigrams,
            check_list,
            flat,
            starts,
        }
    }

    pub fn model(&self) -> &NgramLm {
        &self.lm
    }

    fn is_known(&self, word: &str) -> bool {
        match &self.unigrams {
            Some(list) if self.check_list => {
                list.binary_search_by(|w| w.as_str().cmp(word)).is_ok()
            }
            _ => true,
        }
    }

    /// The known words beginning with the empty prefix: all of them (none without a list).
    fn known_root(&self) -> (u32, u32) {
        (0, self.unigrams.as_ref().map_or(0, |l| l.len() as u32))
    }

    /// `range` holds the known words beginning with a prefix of `len` bytes; the sub-range of
    /// those that continue it with `piece`. (The sorted list makes each a contiguous range, so
    /// a partial word's known-word test is one narrowing of its parent's range.)
    fn narrow_known(&self, (lo, hi): (u32, u32), len: usize, piece: &str) -> (u32, u32) {
        let Some(list) = &self.unigrams else {
            return (0, 0);
        };
        let part = &list[lo as usize..hi as usize];
        let piece = piece.as_bytes();
        let (from, to) = if let [c] = piece {
            // One byte (every character vocabulary): compare the byte after the prefix alone.
            let next = |i: usize| {
                let at = self.starts[i] as usize + len;
                if at < self.starts[i + 1] as usize {
                    i32::from(self.flat[at])
                } else {
                    -1
                }
            };
            let c = i32::from(*c);
            let (lo, hi) = (lo as usize, hi as usize);
            let search = |mut a: usize, mut b: usize, below: &dyn Fn(usize) -> bool| {
                while a < b {
                    let mid = a + (b - a) / 2;
                    if below(mid) {
                        a = mid + 1;
                    } else {
                        b = mid;
                    }
                }
                a
            };
            let from = search(lo, hi, &|i| next(i) < c);
            let to = search(from, hi, &|i| next(i) == c);
            (from - lo, to - lo)
        } else {
            fn rest(w: &str, len: usize) -> &[u8] {
                w.as_bytes().get(len..).unwrap_or_default()
            }
            let from = part.partition_point(|w| rest(w, len) < piece);
            (
                from,
                from + part[from..].partition_point(|w| rest(w, len).starts_with(piece)),
            )
        };
        (lo + from as u32, lo + to as u32)
    }
}

/// Hotwords in the form the mode uses.
pub enum Hotwords {
    Graph(ContextGraph),
    Unigrams(UnigramHotwords),
}

/// A reusable decoder: vocabulary, optional LM and hotwords, options.
pub struct BeamDecoder<'a> {
    vocab: &'a Vocabulary,
    lm: Option<&'a LanguageModel>,
    hotwords: Option<&'a Hotwords>,
    words: Option<&'a WordList>,
    opts: BeamOptions,
}

const NONE: u32 = u32::MAX;

/// A completed-words prefix: node of a word trie, with its LM score and state.
struct TextNode {
    /// Cumulative LM score (alpha-scaled, natural log, with beta per word).
    lm: f64,
    lm_state: Option<LmState>,
    /// Number of hotword words (pyctcdecode mode).
    hot: u32,
    /// The text node this one extends by `word` (the root points to itself).
    parent: u32,
    word: u32,
}

/// A partial word: node of a token trie.
struct PartialNode {
    /// The node it extends by `token` (the root: itself); its text is the tokens' lower-case
    /// pieces along the way ([`Search::partial_text`]), built only when needed.
    parent: u32,
    token: u32,
    /// Length of the text in bytes and in characters.
    bytes: u32,
    chars: usize,
    /// Score of the partial word (unknown-word penalty or hotword credit), computed lazily.
    score: Option<f64>,
    /// With a word list: the tokens that keep it a listed word's prefix (the delimiter when it
    /// is a listed word, and the blank), computed lazily.
    next: Option<Vec<u32>>,
    /// Its id in [`Search::words`] once it has been completed as a word.
    word: Option<u32>,
    /// The LM's known words it begins ([`LanguageModel::narrow_known`]).
    known: (u32, u32),
}

/// One token emitted at one frame, linked to the previous emission of its path.
#[derive(Clone, Copy)]
struct Emission {
    parent: u32,
    token: u32,
    frame: u32,
    prob: f32,
}

#[derive(Clone)]
struct Beam {
    text: u32,
    partial: u32,
    /// Last token (blank included); `NONE` at the start and after finalizing.
    last: u32,
    logit: f64,
    hot_state: GraphState,
    /// Hotword credit so far (native mode).
    hot_score: f64,
    /// The partial word's score ([`Search::partial_score`] of `partial`), carried along so that
    /// scoring a beam does not visit its partial node.
    pscore: f64,
    /// Last recorded emission of the path kept for this beam (`NONE`: none yet).
    hist: u32,
    /// The token this frame emitted on that path, not yet recorded (`NONE`: none): only the
    /// beams that survive pruning are recorded.
    emit: u32,
    /// Search score, filled by `score`.
    score: f64,
    /// Position among this frame's beams: ties in score keep this order (pyctcdecode's sort is
    /// stable).
    seq: u32,
}

struct Search<'d, 'a> {
    d: &'d BeamDecoder<'a>,
    texts: Vec<TextNode>,
    text_children: HashMap<(u32, u32), u32>,
    partials: Vec<PartialNode>,
    /// Per partial node, its children by token with their scores (few: a linear scan beats
    /// hashing).
    partial_children: Vec<Vec<(u32, u32, f64)>>,

    words: Vec<String>,
    /// Per word of `words`: its LM id and whether it counts as known (filled when first scored).
    word_lm: Vec<Option<(WordId, bool)>>,
    word_ids: HashMap<String, u32>,
    /// Each token's text in lower case (what a partial word is spelled with).
    pieces: Vec<String>,
    hist: Vec<Emission>,
    /// Cache of final scores per (final text node) in pyctcdecode's end-of-sentence scoring.
    final_lm: HashMap<u32, f64>,
}

impl<'a> BeamDecoder<'a> {
    pub fn new(
        vocab: &'a Vocabulary,
        lm: Option<&'a LanguageModel>,
        hotwords: Option<&'a Hotwords>,
        opts: BeamOptions,
    ) -> Self {
        // A zero LM weight disables the LM in native mode (pyctcdecode keeps beta and the
        // unknown-word penalties); a phrase graph that earns nothing is no hotwords.
        let lm = lm.filter(|_| opts.mode == Mode::PyCtcDecode || opts.lm_weight != 0.0);
        let hotwords = hotwords.filter(|h| match h {
            Hotwords::Graph(g) => !g.is_inert(),
            // pyctcdecode's scorer changes partial-word scores even at weight 0: kept.
            Hotwords::Unigrams(u) => !u.is_empty(),
        });
        BeamDecoder {
            vocab,
            lm,
            hotwords,
            words: None,
            opts,
        }
    }

    /// Spell only the words of `words` (native mode; see the [module docs](self)).
    pub fn with_words(mut self, words: Option<&'a WordList>) -> Self {
        self.words = words;
        self
    }

    pub fn options(&self) -> &BeamOptions {
        &self.opts
    }

    /// Decode row-major logits (or log-probabilities) `[frames, vocab.len()]`; a trailing
    /// partial row is ignored. Returns up to `nbest` hypotheses, best first (at least one: an
    /// empty transcript for empty input). NaN logits count as `-inf`.
    pub fn decode(
        &self,
        logits: &[f32],
        seconds_per_frame: f64,
        time_offset: f64,
    ) -> Vec<Hypothesis> {
        let v = self.vocab.len();
        let frames = logits.len().checked_div(v).unwrap_or(0);
        let mut s = Search {
            d: self,
            texts: vec![TextNode {
                lm: 0.0,
                lm_state: self.lm.map(|l| l.lm.begin_sentence()),
                hot: 0,
                parent: 0,
                word: 0,
            }],
            text_children: HashMap::default(),
            partials: vec![PartialNode {
                parent: 0,
                token: NONE,
                bytes: 0,
                chars: 0,
                score: Some(0.0),
                next: None,
                word: None,
                known: self.lm.map_or((0, 0), |l| l.known_root()),
            }],
            partial_children: vec![Vec::new()],

            words: Vec::new(),
            word_lm: Vec::new(),
            word_ids: HashMap::default(),
            pieces: (0..v)
                .map(|t| self.vocab.token(t).unwrap_or_default().to_lowercase())
                .collect(),
            hist: Vec::new(),
            final_lm: HashMap::default(),
        };
        let graph = match self.hotwords {
            Some(Hotwords::Graph(g)) if self.opts.mode == Mode::Native => Some(g),
            _ => None,
        };
        let mut beams = vec![Beam {
            text: 0,
            partial: 0,
            last: NONE,
            logit: 0.0,
            hot_state: graph.map_or(0, |g| g.start()),
            hot_score: 0.0,
            pscore: 0.0,
            hist: NONE,
            emit: NONE,
            score: 0.0,
            seq: 0,
        }];
        // Unclipped log-probabilities (for confidences) and clipped ones (for the search).
        let mut index: HashMap<(u32, u32, u32), usize> = HashMap::default();
        let mut children: Vec<(u32, f64)> = Vec::new();
        let mut lp = vec![0f64; v];
        let mut lp64 = vec![0f64; v];
        let mut tokens: Vec<usize> = Vec::with_capacity(v);
        let mut is_candidate = vec![false; v];
        let mut next: Vec<Beam> = Vec::new();
        for t in 0..frames {
            log_softmax_f64(&logits[t * v..(t + 1) * v], &mut lp, &mut lp64);
            // Candidate tokens: above the threshold, the best, hotword continuations.
            is_candidate.fill(false);
            let best = lp64
                .iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > lp64[b] { i } else { b });
            is_candidate[best] = true;
            for (i, &x) in lp64.iter().enumerate() {
                if x >= self.opts.token_min_logp {
                    is_candidate[i] = true;
                }
            }
            if let Some(g) = graph {
                for b in &beams {
                    for tok in g.continuations(b.hot_state) {
                        if tok < v {
                            is_candidate[tok] = true;
                        }
                    }
                }
            }
            if self.words.is_some() && self.opts.mode == Mode::Native {
                // A listed word's letters are tried even where the acoustics rank them below
                // token_min_logp (as the word list alone would find them).
                for b in &beams {
                    for &tok in s.word_continuations(b.partial) {
                        is_candidate[tok as usize] = true;
                    }
                }
            }
            tokens.clear();
            if self.opts.mode == Mode::PyCtcDecode {
                // pyctcdecode iterates a Python set of the indices: its slot order, which
                // decides the order in which merged paths are summed and equal scores rank.
                tokens.extend((0..v).filter(|&i| lp64[i] >= self.opts.token_min_logp));
                python_set_order(&mut tokens, best);
            } else {
                tokens.extend((0..v).filter(|&i| is_candidate[i]));
            }

            next.clear();
            index.clear();
            // Each beam's existing partial-word children by token, looked up once per frame.
            children.clear();
            children.resize(beams.len() * v, (NONE, 0.0));
            for (j, b) in beams.iter().enumerate() {
                for &(t, c, score) in &s.partial_children[b.partial as usize] {
                    children[j * v + t as usize] = (c, score);
                }
            }
            for &tok in &tokens {
                let p = lp64[tok];
                let kind = self.vocab.kind(tok);
                for (j, b) in beams.iter().enumerate() {
                    let mut nb = b.clone();
                    nb.logit += p;
                    let mut emitted = None;
                    match kind {
                        // Transparent, but kept in the path so that it does not split repeats.
                        TokenKind::Dropped => emitted = Some(tok),
                        TokenKind::Blank => nb.last = tok as u32,
                        _ if b.last == tok as u32 => emitted = Some(tok),
                        TokenKind::Delimiter => {
                            nb.last = tok as u32;
                            if b.partial != 0 {
                                nb.text = s.complete_word(b.text, b.partial);
                                nb.partial = 0;
                                nb.pscore = 0.0;
                                if let Some(g) = graph {
                                    let (d, st) = g.step(b.hot_state, g.delimiter().unwrap_or(tok));
                                    nb.hot_score += d;
                                    nb.hot_state = st;
                                }
                            }
                            emitted = Some(tok);
                        }
                        TokenKind::Text => {
                            nb.last = tok as u32;
                            (nb.partial, nb.pscore) = match children[j * v + tok] {
                                (NONE, _) => {
                                    let c = s.extend_partial(b.partial, tok);
                                    (c, s.partial_score(c))
                                }
                                known => known,
                            };
                            if let Some(g) = graph {
                                let (d, st) = g.step(b.hot_state, tok);
                                nb.hot_score += d;
                                nb.hot_state = st;
                            }
                            emitted = Some(tok);
                        }
                    }
                    nb.emit = emitted.map_or(NONE, |tok| tok as u32);
                    match index.entry((nb.text, nb.partial, nb.last)) {
                        Entry::Occupied(e) => {
                            let i = *e.get();
                            // Times follow the most probable of the merged paths.
                            if nb.logit > next[i].logit {
                                next[i].hist = nb.hist;
                                next[i].emit = nb.emit;
                            }
                            next[i].logit = log_add(next[i].logit, nb.logit);
                        }
                        Entry::Vacant(e) => {
                            e.insert(next.len());
                            nb.seq = next.len() as u32;
                            next.push(nb);
                        }
                    }
                }
            }
            for b in next.iter_mut() {
                b.score = s.score(b);
            }
            std::mem::swap(&mut beams, &mut next);
            prune(&mut beams, self.opts.beam_prune_logp, self.opts.beam_width);
            if self.opts.prune_history {
                s.prune_history(&mut beams);
            }
            // Record this frame's emissions of the surviving paths.
            for b in beams.iter_mut() {
                if b.emit != NONE {
                    let tok = b.emit as usize;
                    s.hist.push(Emission {
                        parent: b.hist,
                        token: b.emit,
                        frame: t as u32,
                        prob: lp[tok].exp() as f32,
                    });
                    b.hist = s.hist.len() as u32 - 1;
                    b.emit = NONE;
                }
            }
        }

        // Finalize: the partial word becomes a word, the sentence ends.
        next.clear();
        let mut final_index: HashMap<u32, usize> = HashMap::default();
        let mut scored_word: Vec<(u32, u32)> = Vec::new();
        for b in &beams {
            let mut nb = b.clone();
            if b.partial != 0 {
                nb.text = s.complete_word(b.text, b.partial);
                if let Some(g) = graph {
                    if let Some(d) = g.delimiter() {
                        // The word ends here: a phrase may complete with it.
                        let (delta, st) = g.step(b.hot_state, d);
                        nb.hot_score += delta;
                        nb.hot_state = st;
                    }
                }
            }
            if let Some(g) = graph {
                nb.hot_score += g.finish(nb.hot_state);
                nb.hot_state = g.start();
            }
            nb.partial = 0;
            nb.last = NONE;
            match final_index.get(&nb.text) {
                Some(&i) => {
                    if nb.logit > next[i].logit {
                        next[i].hist = nb.hist;
                    }
                    next[i].logit = log_add(next[i].logit, nb.logit);
                    // pyctcdecode 0.5 keeps the last merged beam's fields: its last word (or
                    // none) is the one scored with `</s>`.
                    scored_word[i] = (b.text, b.partial);
                }
                None => {
                    final_index.insert(nb.text, next.len());
                    scored_word.push((b.text, b.partial));
                    nb.seq = next.len() as u32;
                    next.push(nb);
                }
            }
        }
        for (b, &(prev_text, partial)) in next.iter_mut().zip(&scored_word) {
            b.score = s.final_score(b, prev_text, partial);
        }
        prune(&mut next, self.opts.beam_prune_logp, self.opts.beam_width);
        let mut out: Vec<Hypothesis> = next
            .iter()
            .take(self.opts.nbest.max(1))
            .map(|b| Hypothesis {
                transcript: s.transcript(b.hist, frames, seconds_per_frame, time_offset),
                score: b.score,
                logit_score: b.logit,
            })
            .collect();
        if out.is_empty() {
            out.push(Hypothesis {
                transcript: Transcript::default(),
                score: 0.0,
                logit_score: 0.0,
            });
        }
        out
    }
}

/// A beam-search configuration that owns its language model and hotwords (what `--decoder
/// beam`, `--lm`, `--hotwords` set up once for many utterances).
pub struct BeamSetup {
    /// Shared: a request's own hotwords decode with the same LM (`Arc`, not a copy).
    pub lm: Option<std::sync::Arc<LanguageModel>>,
    pub hotwords: Option<Hotwords>,
    /// Spell only these words (`--words` with beam search).
    pub words: Option<std::sync::Arc<WordList>>,
    pub options: BeamOptions,
}

impl BeamSetup {
    /// Decode one utterance's logits `[frames, vocab.len()]`; see [`BeamDecoder::decode`].
    pub fn decode(
        &self,
        vocab: &Vocabulary,
        logits: &[f32],
        seconds_per_frame: f64,
        time_offset: f64,
    ) -> Vec<Hypothesis> {
        BeamDecoder::new(
            vocab,
            self.lm.as_deref(),
            self.hotwords.as_ref(),
            self.options.clone(),
        )
        .with_words(self.words.as_deref())
        .decode(logits, seconds_per_frame, time_offset)
    }
}

/// Natural-log softmax of one frame in float64 (as pyctcdecode computes it from the same
/// float32 logits) into `raw`, and clipped to `[ln 1e-15, 0]` into `clipped`. NaN counts as
/// `-inf`; frames without a finite maximum use [`log_softmax_in_place`]'s conventions.
fn log_softmax_f64(row: &[f32], raw: &mut [f64], clipped: &mut [f64]) {
    let max = row
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max.is_finite() {
        let max = f64::from(max);
        for (r, &x) in raw.iter_mut().zip(row) {
            *r = if x.is_nan() {
                0.0
            } else {
                (f64::from(x) - max).exp()
            };
        }
        let log_sum = numpy_sum(raw).ln();
        for (r, &x) in raw.iter_mut().zip(row) {
            *r = if x.is_nan() {
                f64::NEG_INFINITY
            } else {
                (f64::from(x) - max) - log_sum
            };
        }
    } else {
        let mut f = row.to_vec();
        log_softmax_in_place(&mut f);
        for (r, &x) in raw.iter_mut().zip(&f) {
            *r = f64::from(x);
        }
    }
    for (c, &r) in clipped.iter_mut().zip(raw.iter()) {
        *c = r.clamp(MIN_LOGP, 0.0);
    }
}

/// `np.sum` of a contiguous float64 row: numpy's pairwise summation (eight running sums in
/// blocks of up to 128 values, halves above that), whose rounding pyctcdecode's log-softmax
/// inherits.
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &x| s + x)
    } else if n <= 128 {
        let mut r = [0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += a[i + j];
            }
            i += 8;
        }
        let mut s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            s += x;
        }
        s
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// Drop beams more than `-prune_logp` below the best, then keep the best `width` (stable: ties
/// keep their order, as Python's `heapq.nlargest`).
fn prune(beams: &mut Vec<Beam>, prune_logp: f64, width: usize) {
    let Some(max) = beams.iter().map(|b| b.score).reduce(f64::max) else {
        return;
    };
    // (A beam at -inf spelled something the word list does not allow.)
    beams.retain(|b| b.score > f64::NEG_INFINITY && b.score >= max + prune_logp);
    // Best first, ties in their order of creation: a stable sort, done as a selection of the
    // best `width` and a sort of those alone.
    let order = |a: &Beam, b: &Beam| b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq));
    let width = width.max(1);
    if beams.len() > width {
        beams.select_nth_unstable_by(width - 1, order);
        beams.truncate(width);
    }
    beams.sort_unstable_by(order);
}

/// Reorders `tokens` (ascending token ids) as CPython 3 iterates
/// `set(np.where(logp >= token_min_logp)[0]) | {best}`, pyctcdecode's candidate set: the ids are
/// added one by one to a new set, the set is copied, then `best` is added (CPython's
/// `setobject.c`: open addressing over 2^k slots, hash(i) = i for small ints, 10 linear probes,
/// then perturbed jumps; a table 3/5 full grows). Iteration is in slot order.
fn python_set_order(tokens: &mut Vec<usize>, best: usize) {
    const LINEAR_PROBES: usize = 9;
    const MIN_SIZE: usize = 8;
    struct PySet {
        table: Vec<Option<usize>>,
        used: usize,
    }
    impl PySet {
        fn with_size(size: usize) -> Self {
            PySet {
                table: vec![None; size],
                used: 0,
            }
        }
        fn mask(&self) -> usize {
            self.table.len() - 1
        }
        /// Slot for `key`, which must not be present (`set_insert_clean`), or its own slot.
        fn slot(&self, key: usize) -> usize {
            let mask = self.mask();
            let (mut i, mut perturb) = (key & mask, key);
            loop {
                let probes = if i + LINEAR_PROBES <= mask {
                    LINEAR_PROBES
                } else {
                    0
                };
                for j in i..=i + probes {
                    match self.table[j] {
                        None => return j,
                        Some(k) if k == key => return j,
                        Some(_) => {}
                    }
                }
                perturb >>= 5;
                i = (i * 5 + 1 + perturb) & mask;
            }
        }
        fn resize(&mut self, min_used: usize) {
            let mut size = MIN_SIZE;
            while size <= min_used {
                size <<= 1;
            }
            let old = std::mem::replace(&mut self.table, vec![None; size]);
            for k in old.into_iter().flatten() {
                let j = self.slot(k);
                self.table[j] = Some(k);
            }
        }
        /// `set_add_entry`.
        fn add(&mut self, key: usize) {
            let j = self.slot(key);
            if self.table[j].is_some() {
                return;
            }
            self.table[j] = Some(key);
            self.used += 1;
            if self.used * 5 >= self.mask() * 3 {
                let used = self.used;
                self.resize(if used > 50_000 { used * 2 } else { used * 4 });
            }
        }
        /// `set_copy` (via `set_merge` into an empty set).
        fn copy(&self) -> PySet {
            let mut new = PySet::with_size(MIN_SIZE);
            if self.used * 5 >= new.mask() * 3 {
                new.resize(self.used * 2);
            }
            if new.table.len() == self.table.len() {
                new.table.clone_from(&self.table);
            } else {
                for k in self.table.iter().flatten() {
                    let j = new.slot(*k);
                    new.table[j] = Some(*k);
                }
            }
            new.used = self.used;
            new
        }
        /// `set_merge` of a one-element set into a non-empty one.
        fn merge_one(&mut self, key: usize) {
            if (self.used + 1) * 5 >= self.mask() * 3 {
                self.resize((self.used + 1) * 2);
            }
            self.add(key);
        }
    }
    let mut set = PySet::with_size(MIN_SIZE);
    for &t in tokens.iter() {
        set.add(t);
    }
    let mut set = if set.used == 0 {
        PySet::with_size(MIN_SIZE)
    } else {
        set.copy()
    };
    if set.used == 0 {
        set.add(best);
    } else {
        set.merge_one(best);
    }
    tokens.clear();
    tokens.extend(set.table.iter().flatten());
}

/// log(exp(a) + exp(b)), pyctcdecode's `_sum_log_scores`.
fn log_add(a: f64, b: f64) -> f64 {
    // `log(1 + x)`, not `ln_1p`: the same rounding as pyctcdecode, so that paths merged in the
    // same order give bit-identical scores (ties between beams are common on flat logits).
    if a >= b {
        a + (1.0 + (b - a).exp()).ln()
    } else {
        b + (1.0 + (a - b).exp()).ln()
    }
}

impl Search<'_, '_> {
    /// pyctcdecode's `_prune_history` over beams sorted best first (see
    /// [`BeamOptions::prune_history`]).
    fn prune_history(&self, beams: &mut Vec<Beam>) {
        let history = self
            .d
            .lm
            .map_or(1, |l| l.lm.order().saturating_sub(1).max(1));
        let mut seen = std::collections::HashSet::new();
        beams.retain(|b| {
            let mut words = Vec::with_capacity(history);
            let mut n = b.text;
            while n != 0 && words.len() < history {
                let node = &self.texts[n as usize];
                words.push(node.word);
                n = node.parent;
            }
            seen.insert((words, b.partial, b.last))
        });
    }

    /// The tokens that keep `partial` a prefix of a listed word (see [`PartialNode::next`]).
    fn word_continuations(&mut self, partial: u32) -> &[u32] {
        if self.partials[partial as usize].next.is_none() {
            let list = self.d.words.expect("a word list");
            let text = &self.partial_text(partial);
            let vocab = self.d.vocab;
            let next: Vec<u32> = (0..vocab.len())
                .filter(|&tok| match vocab.kind(tok) {
                    TokenKind::Blank => true,
                    TokenKind::Delimiter => list.contains(text),
                    TokenKind::Text => {
                        let piece = vocab.token(tok).unwrap_or_default().to_lowercase();
                        list.prefix(&format!("{text}{piece}")) != Prefix::Dead
                    }
                    TokenKind::Dropped => false,
                })
                .map(|tok| tok as u32)
                .collect();
            self.partials[partial as usize].next = Some(next);
        }
        self.partials[partial as usize]
            .next
            .as_deref()
            .unwrap_or_default()
    }

    /// The lower-case text of a partial word.
    fn partial_text(&self, mut partial: u32) -> String {
        let mut pieces = Vec::new();
        while partial != 0 {
            let node = &self.partials[partial as usize];
            pieces.push(self.pieces[node.token as usize].as_str());
            partial = node.parent;
        }
        pieces.reverse();
        pieces.concat()
    }

    fn extend_partial(&mut self, partial: u32, tok: usize) -> u32 {
        if let Some(&(_, c, _)) = self.partial_children[partial as usize]
            .iter()
            .find(|&&(t, _, _)| t == tok as u32)
        {
            return c;
        }
        let piece = &self.pieces[tok];
        let parent = &self.partials[partial as usize];
        let known = match self.d.lm {
            Some(l) => l.narrow_known(parent.known, parent.bytes as usize, piece),
            None => (0, 0),
        };
        let node = PartialNode {
            parent: partial,
            token: tok as u32,
            bytes: parent.bytes + piece.len() as u32,
            chars: parent.chars + piece.chars().count(),
            score: None,
            next: None,
            word: None,
            known,
        };
        let id = self.partials.len() as u32;
        self.partials.push(node);
        self.partial_children.push(Vec::new());
        let score = self.partial_score(id);
        self.partial_children[partial as usize].push((tok as u32, id, score));

        id
    }

    fn word_id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.word_ids.get(text) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(text.to_string());
        self.word_lm.push(None);
        self.word_ids.insert(text.to_string(), id);
        id
    }

    /// The text node of `text` followed by the partial word `partial`, LM-scored.
    fn complete_word(&mut self, text: u32, partial: u32) -> u32 {
        let word = match self.partials[partial as usize].word {
            Some(id) => id,
            None => {
                let w = self.partial_text(partial);
                let id = self.word_id(&w);
                self.partials[partial as usize].word = Some(id);
                id
            }
        };
        if let Some(&c) = self.text_children.get(&(text, word)) {
            return c;
        }
        if let (Some(l), None) = (self.d.lm, self.word_lm[word as usize]) {
            let w = &self.words[word as usize];
            let id = l.lm.index(w);
            self.word_lm[word as usize] = Some((id, l.is_known(w) && id != l.lm.unk()));
        }
        let parent = &self.texts[text as usize];
        let w = &self.words[word as usize];
        let (mut lm, lm_state) = match (self.d.lm, &parent.lm_state, self.word_lm[word as usize]) {
            (Some(l), Some(st), Some((id, known))) => {
                let (p, next) = self.lm_log10(l, st, id, known);
                let s = self.d.opts.lm_weight * p * LN_10 + self.d.opts.word_score;
                (parent.lm + s, Some(next))
            }
            _ => (parent.lm, None),
        };
        if self.d.words.is_some_and(|list| !list.contains(w)) {
            lm = f64::NEG_INFINITY; // not a listed word: the beam ends
        }
        let hot = parent.hot
            + match self.d.hotwords {
                Some(Hotwords::Unigrams(u)) if u.is_hotword(w) => 1,
                _ => 0,
            };
        let id = self.texts.len() as u32;
        self.texts.push(TextNode {
            lm,
            lm_state,
            hot,
            parent: text,
            word,
        });
        self.text_children.insert((text, word), id);
        id
    }

    /// LM score of one word (pyctcdecode's `LanguageModel.score`, without `</s>`), in log10
    /// before scaling: `log10 p + unk_score` for unknown words.
    fn lm_word_log10(&self, l: &LanguageModel, state: &LmState, word: &str) -> (f64, LmState) {
        let id = l.lm.index(word);
        self.lm_log10(l, state, id, l.is_known(word) && id != l.lm.unk())
    }

    /// [`Search::lm_word_log10`] of a word already looked up: its LM id, and whether it counts
    /// as known.
    fn lm_log10(
        &self,
        l: &LanguageModel,
        state: &LmState,
        id: WordId,
        known: bool,
    ) -> (f64, LmState) {
        let (p, next) = l.lm.score(state, id);
        let mut p = f64::from(p);
        if !known {
            p += self.d.opts.unk_score;
        }
        (p, next)
    }

    fn partial_score(&mut self, partial: u32) -> f64 {
        if let Some(s) = self.partials[partial as usize].score {
            return s;
        }
        let unigram_hot = match self.d.hotwords {
            Some(Hotwords::Unigrams(u)) => u.partial(&self.partial_text(partial)),
            _ => None,
        };
        let node = &self.partials[partial as usize];
        let s = match (unigram_hot, self.d.lm) {
            (Some(h), _) => h,
            (None, lm) if self.d.words.is_some() => {
                match self
                    .d
                    .words
                    .map(|list| list.prefix(&self.partial_text(partial)))
                {
                    Some(Prefix::Live(best)) if lm.is_some() => {
                        self.d.opts.lm_weight * f64::from(best) * LN_10
                    }
                    Some(Prefix::Live(_)) => 0.0,
                    _ => f64::NEG_INFINITY,
                }
            }
            (None, Some(l)) => {
                if l.unigrams.is_some() && node.known.0 < node.known.1 {
                    0.0
                } else {
                    let mut s = self.d.opts.unk_score;
                    if node.chars > AVG_WORD_LEN {
                        s = s * node.chars as f64 / AVG_WORD_LEN as f64;
                    }
                    s
                }
            }
            (None, None) => 0.0,
        };
        self.partials[partial as usize].score = Some(s);
        s
    }

    fn hot_text_score(&self, text: u32) -> f64 {
        match self.d.hotwords {
            Some(Hotwords::Unigrams(u)) => u.weight() * f64::from(self.texts[text as usize].hot),
            _ => 0.0,
        }
    }

    fn score(&mut self, b: &Beam) -> f64 {
        b.logit
            + self.texts[b.text as usize].lm
            + self.hot_text_score(b.text)
            + b.pscore
            + b.hot_score
    }

    /// The final score of a beam whose text is `b.text`, completed from `prev_text` and the
    /// partial word `partial` (0: none).
    fn final_score(&mut self, b: &Beam, prev_text: u32, partial: u32) -> f64 {
        let base = b.logit + self.hot_text_score(b.text) + b.hot_score;
        let Some(l) = self.d.lm else {
            // (-inf for a last word the word list does not have; 0 otherwise)
            return base + self.texts[b.text as usize].lm;
        };
        if let Some(&lm) = self.final_lm.get(&b.text) {
            return base + lm;
        }
        let opts = &self.d.opts;
        let lm = match self.d.opts.mode {
            Mode::PyCtcDecode => {
                // The last word is scored with `</s>`; an empty last word too (as `<unk>`).
                let prev = &self.texts[prev_text as usize];
                let state = prev.lm_state.clone().unwrap_or_default();
                let word = if partial == 0 {
                    String::new()
                } else {
                    self.partial_text(partial)
                };
                let (p, next) = if word.is_empty() {
                    let (p, next) = l.lm.score(&state, l.lm.unk());
                    (f64::from(p) + opts.unk_score, next)
                } else {
                    self.lm_word_log10(l, &state, &word)
                };
                let end = f64::from(l.lm.score(&next, l.lm.eos()).0);
                prev.lm + opts.lm_weight * (p + end) * LN_10 + opts.word_score
            }
            Mode::Native => {
                let node = &self.texts[b.text as usize];
                let state = node.lm_state.clone().unwrap_or_default();
                let end = f64::from(l.lm.score(&state, l.lm.eos()).0);
                node.lm + opts.lm_weight * end * LN_10
            }
        };
        self.final_lm.insert(b.text, lm);
        base + lm
    }

    /// The transcript of the emission path ending at `hist`.
    fn transcript(
        &self,
        mut hist: u32,
        frames: usize,
        seconds_per_frame: f64,
        time_offset: f64,
    ) -> Transcript {
        let blank = self.d.vocab.blank_id();
        let mut path = vec![(blank, 0.0f32); frames];
        while hist != NONE {
            let e = self.hist[hist as usize];
            path[e.frame as usize] = (e.token as usize, e.prob);
            hist = e.parent;
        }
        let spans = collapse_tokens(&path, self.d.vocab);
        Transcript::from_words(segment_words(
            &spans,
            self.d.vocab,
            seconds_per_frame,
            time_offset,
        ))
    }
}

#[cfg(test)]
mod tests;
