//! Command grammars: a fixed set of phrases, scored against CTC logits by forced alignment.
//!
//! A [`CommandSet`] is read from a `COMMANDS.txt`: one phrase per line, optionally followed by
//! its own threshold (`:0.8`, instead of the listener's) and by `=> action` (a program and its
//! arguments, split like a shell would split them but never run through one). Blank lines and lines starting with `#` are ignored. Every phrase is spelled in
//! the model's vocabulary when the set is read, so a phrase the model cannot say is an error that
//! names it, not a command that silently never fires.
//!
//! # Scoring
//!
//! For an utterance's logits (`[frames, vocab]`, log-softmaxed per frame) and a phrase spelled as
//! tokens `w1 | w2 | …`:
//!
//! * the *posterior* `P(phrase | audio)` is the CTC forward sum over every frame path that
//!   spells exactly the phrase (blanks anywhere, repeated letters merged, any number of word
//!   delimiters before, between and after its words, none inside a word). CTC's label
//!   distribution sums to 1 over all spellings, so this is the probability that the utterance's
//!   transcript is the phrase, against every other letter string: a filler over all letters,
//!   without a beam. Whatever else explains the audio (another command, a word outside the
//!   grammar, letters the model half hears) takes its probability from the phrase;
//! * `confidence = P(phrase | audio)^(1 / words)`, in `[0, 1]`: the posterior per word, so that
//!   a three-word phrase is held to the same threshold as a single word;
//! * for diagnosis, the Viterbi score of the phrase's best alignment (`L_phrase`, which also gives
//!   the command's span), the free best path `L_free`, their per-token ratio *match*
//!   `exp((L_phrase - L_free) / n)` and the *acoustic* mean posterior of the aligned letters
//!   (the listener's confidence before the posterior replaced it: measured on the dev streams it
//!   let through about twice as many out-of-grammar words at the same recall).
//!
//! Out-of-grammar speech makes the model spell other letters, so every phrase's posterior
//! collapses; a command the model is unsure of spreads its probability over the spellings it
//! hesitates between. Both are reported as rejections below the caller's threshold rather than
//! forced onto the nearest command.

use std::fmt;

use serde::Serialize;

use crate::ctc::{log_softmax_in_place, Vocabulary};

/// One phrase of a grammar, spelled in the model's vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Phrase {
    /// The phrase as written in the commands file (trimmed, inner whitespace collapsed).
    pub text: String,
    /// What to run when the phrase is recognized: program and arguments (no shell).
    pub action: Option<Vec<String>>,
    /// 1-based line in the commands file.
    pub line: usize,
    /// The phrase's own minimum confidence (`phrase :0.8`), instead of the listener's threshold.
    pub threshold: Option<f32>,
    /// The phrase's words, each as token ids (without delimiters).
    words: Vec<Vec<usize>>,
}

impl Phrase {
    /// The phrase's words, each spelled as token ids.
    pub fn words(&self) -> &[Vec<usize>] {
        &self.words
    }

    /// Number of tokens the score is normalized by: the letters plus one delimiter between
    /// consecutive words.
    pub fn token_count(&self) -> usize {
        self.words.iter().map(Vec::len).sum::<usize>() + self.words.len().saturating_sub(1)
    }

    /// Whether this phrase's words are a strict prefix of `other`'s (`"go"` of `"go left"`).
    pub fn is_strict_prefix_of(&self, other: &Phrase) -> bool {
        self.words.len() < other.words.len() && other.words.starts_with(&self.words)
    }
}

/// Why a commands file was rejected. Messages are one line and start with the file's name.
#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    #[error("{path}: no such file")]
    NotFound { path: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: is not UTF-8 text")]
    NotText { path: String },
    #[error(
        "{path}: no command phrases (write one phrase per line, optionally `phrase => action`)"
    )]
    Empty { path: String },
    #[error("{path}:{line}: phrase {phrase:?}: {what} is not in the model's vocabulary")]
    OutOfVocabulary {
        path: String,
        line: usize,
        phrase: String,
        what: String,
    },
    #[error("{path}:{line}: {what}")]
    BadLine {
        path: String,
        line: usize,
        what: String,
    },
    #[error(
        "{path}: no hotword phrases (write one phrase per line, optionally ending in ` :WEIGHT`)"
    )]
    NoHotwords { path: String },
    #[error("{path}: no words (list them separated by spaces or newlines; `#` starts a comment)")]
    NoWords { path: String },
    #[error("{path}:{line}: word {word:?}: {what} is not in the model's vocabulary")]
    WordOutOfVocabulary {
        path: String,
        line: usize,
        word: String,
        what: String,
    },
    #[error("{path}:{line}: `=> action` has no phrase before it")]
    MissingPhrase { path: String, line: usize },
    #[error("{path}:{line}: phrase {phrase:?}: `=>` is not followed by an action")]
    MissingAction {
        path: String,
        line: usize,
        phrase: String,
    },
    #[error("{path}:{line}: phrase {phrase:?}: action has an unterminated {quote} quote")]
    UnterminatedQuote {
        path: String,
        line: usize,
        phrase: String,
        quote: char,
    },
    #[error("{path}:{line}: phrase {phrase:?} is already on line {first}")]
    Duplicate {
        path: String,
        line: usize,
        phrase: String,
        first: usize,
    },
    #[error("{path}: the model's vocabulary has no word delimiter, so phrase {phrase:?} (line {line}) cannot have several words")]
    NoDelimiter {
        path: String,
        line: usize,
        phrase: String,
    },
}

/// The phrases of a commands file, compiled for one vocabulary.
#[derive(Clone, Debug)]
pub struct CommandSet {
    phrases: Vec<Phrase>,
    blank: usize,
    delimiter: Option<usize>,
}

impl CommandSet {
    /// Read and compile a commands file.
    pub fn load(path: &std::path::Path, vocab: &Vocabulary) -> Result<Self, GrammarError> {
        let text = read_text_file(path)?;
        Self::parse(&text, &path.display().to_string(), vocab)
    }

    /// Compile the text of a commands file; `path` names it in errors.
    pub fn parse(text: &str, path: &str, vocab: &Vocabulary) -> Result<Self, GrammarError> {
        let mut phrases: Vec<Phrase> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let (phrase_part, action_part) = match content.split_once("=>") {
                Some((p, a)) => (p, Some(a)),
                None => (content, None),
            };
            let mut words_text: Vec<&str> = phrase_part.split_whitespace().collect();
            // A trailing `:0.8` is the phrase's own threshold.
            let mut threshold = None;
            if let Some(t) = words_text.last().and_then(|w| w.strip_prefix(':')) {
                match t.parse::<f32>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => threshold = Some(v),
                    _ => {
                        return Err(GrammarError::BadLine {
                            path: path.into(),
                            line,
                            what: format!(
                                "threshold `:{t}` is not a number from 0 to 1 (write `phrase :0.8`)"
                            ),
                        })
                    }
                }
                words_text.pop();
            }
            if words_text.is_empty() {
                return Err(GrammarError::MissingPhrase {
                    path: path.into(),
                    line,
                });
            }
            let phrase_text = words_text.join(" ");
            let action = match action_part {
                None => None,
                Some(a) => {
                    let args =
                        split_action(a).map_err(|quote| GrammarError::UnterminatedQuote {
                            path: path.into(),
                            line,
                            phrase: phrase_text.clone(),
                            quote,
                        })?;
                    if args.is_empty() {
                        return Err(GrammarError::MissingAction {
                            path: path.into(),
                            line,
                            phrase: phrase_text,
                        });
                    }
                    Some(args)
                }
            };
            if words_text.len() > 1 && vocab.word_delimiter_id().is_none() {
                return Err(GrammarError::NoDelimiter {
                    path: path.into(),
                    line,
                    phrase: phrase_text,
                });
            }
            let mut words = Vec::with_capacity(words_text.len());
            for w in &words_text {
                words.push(
                    spell(w, vocab).map_err(|what| GrammarError::OutOfVocabulary {
                        path: path.into(),
                        line,
                        phrase: phrase_text.clone(),
                        what,
                    })?,
                );
            }
            if let Some(first) = phrases.iter().find(|p| p.words == words) {
                return Err(GrammarError::Duplicate {
                    path: path.into(),
                    line,
                    phrase: phrase_text,
                    first: first.line,
                });
            }
            phrases.push(Phrase {
                text: phrase_text,
                action,
                line,
                threshold,
                words,
            });
        }
        if phrases.is_empty() {
            return Err(GrammarError::Empty { path: path.into() });
        }
        Ok(CommandSet {
            phrases,
            blank: vocab.blank_id(),
            delimiter: vocab.word_delimiter_id(),
        })
    }

    pub fn phrases(&self) -> &[Phrase] {
        &self.phrases
    }

    /// Score every phrase against one utterance's raw logits (`[frames, vocab]`, row-major).
    /// The result is sorted best first (ties keep file order). Empty for zero frames.
    pub fn score(&self, logits: &[f32], vocab_size: usize) -> Vec<PhraseScore> {
        let logp = log_probs(logits, vocab_size);
        self.score_log_probs(&logp, vocab_size)
    }

    /// [`CommandSet::score`] on logits already log-softmaxed per frame.
    pub fn score_log_probs(&self, logp: &[f32], vocab_size: usize) -> Vec<PhraseScore> {
        if vocab_size == 0 || logp.len() < vocab_size {
            return Vec::new();
        }
        let free = free_log_likelihood(logp, vocab_size);
        let mut scores: Vec<PhraseScore> = self
            .phrases
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let topo = Topology::new(&p.words, self.blank, self.delimiter);
                let n = p.token_count().max(1) as f64;
                let log_posterior =
                    log_posterior(&p.words, self.blank, self.delimiter, logp, vocab_size);
                match topo.viterbi(logp, vocab_size) {
                    None => PhraseScore {
                        index,
                        log_likelihood: f64::NEG_INFINITY,
                        free_log_likelihood: free,
                        log_posterior,
                        match_score: 0.0,
                        acoustic: 0.0,
                        confidence: 0.0,
                        first_frame: 0,
                        end_frame: 0,
                    },
                    Some(a) => {
                        let match_score = ((a.log_likelihood - free) / n).exp().clamp(0.0, 1.0);
                        let acoustic = a.acoustic.clamp(0.0, 1.0);
                        let per_word = log_posterior / p.words.len().max(1) as f64;
                        PhraseScore {
                            index,
                            log_likelihood: a.log_likelihood,
                            free_log_likelihood: free,
                            log_posterior,
                            match_score,
                            acoustic,
                            confidence: per_word.exp().clamp(0.0, 1.0) as f32,
                            first_frame: a.first_frame,
                            end_frame: a.end_frame,
                        }
                    }
                }
            })
            .collect();
        scores.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then(a.index.cmp(&b.index))
        });
        scores
    }
}

/// How well one phrase explains an utterance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhraseScore {
    /// Index of the phrase in [`CommandSet::phrases`].
    pub index: usize,
    /// Log-probability (nats) of the phrase's best alignment; `-inf` if the utterance has fewer
    /// frames than the phrase needs.
    pub log_likelihood: f64,
    /// Log-probability of the unconstrained best path.
    pub free_log_likelihood: f64,
    /// `ln P(phrase | audio)`: the CTC forward sum over every path that spells the phrase.
    pub log_posterior: f64,
    /// `exp((log_likelihood - free_log_likelihood) / tokens)`, in `[0, 1]` (diagnosis).
    pub match_score: f64,
    /// Mean posterior of the aligned letters, in `[0, 1]` (diagnosis).
    pub acoustic: f64,
    /// `P(phrase | audio)^(1 / words)`, in `[0, 1]`: what the threshold applies to.
    pub confidence: f32,
    /// First frame the alignment gives to a letter of the phrase.
    pub first_frame: usize,
    /// One past the last frame given to a letter of the phrase.
    pub end_frame: usize,
}

/// Row-wise log-softmax of `[frames, vocab]` logits (a trailing partial row is dropped).
pub fn log_probs(logits: &[f32], vocab_size: usize) -> Vec<f32> {
    if vocab_size == 0 {
        return Vec::new();
    }
    let mut out = logits[..logits.len() / vocab_size * vocab_size].to_vec();
    for row in out.chunks_exact_mut(vocab_size) {
        log_softmax_in_place(row);
    }
    out
}

/// Log-probability of the frame-wise best path (the sum of every frame's maximum).
fn free_log_likelihood(logp: &[f32], vocab_size: usize) -> f64 {
    logp.chunks_exact(vocab_size)
        .map(|row| {
            f64::from(
                row.iter()
                    .copied()
                    .filter(|x| !x.is_nan())
                    .fold(f32::NEG_INFINITY, f32::max),
            )
        })
        .sum()
}

/// The UTF-8 text of a commands or word-list file, with the errors naming it.
pub(crate) fn read_text_file(path: &std::path::Path) -> Result<String, GrammarError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => GrammarError::NotFound {
            path: shown.clone(),
        },
        _ => GrammarError::Io {
            path: shown.clone(),
            source: e,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| GrammarError::NotText { path: shown })
}

/// [`Vocabulary::spell`]'s failure, in the words of a [`GrammarError`].
pub(crate) fn spell(word: &str, vocab: &Vocabulary) -> Result<Vec<usize>, String> {
    vocab.spell(word).map_err(|c| format!("character {c:?}"))
}

/// Split an action into program and arguments: whitespace separates, `'…'` and `"…"` quote
/// (no escapes inside single quotes; `\` escapes the next character elsewhere). Err(quote) for an
/// unterminated quote.
fn split_action(s: &str) -> Result<Vec<String>, char> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_arg = true;
                let quote = c;
                loop {
                    match chars.next() {
                        None => return Err(quote),
                        Some(q) if q == quote => break,
                        Some('\\') if quote == '"' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        Some(x) => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_arg = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_arg {
                    args.push(std::mem::take(&mut cur));
                    in_arg = false;
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur);
    }
    Ok(args)
}

/// `ln P(phrase | audio)`: the CTC forward algorithm over the phrase's letters, with a blank
/// state between and around them. A state at a word boundary (before the first word, between
/// words, after the last) also emits the word delimiter, so that any number of delimiters may
/// stand there; inside a word only blanks may. Neighbouring letters that are equal need their
/// state between them; others may skip it. `-inf` when the utterance is too short.
fn log_posterior(
    words: &[Vec<usize>],
    blank: usize,
    delimiter: Option<usize>,
    logp: &[f32],
    vocab: usize,
) -> f64 {
    let letters: Vec<usize> = words.iter().flatten().copied().collect();
    let frames = logp.len() / vocab.max(1);
    if letters.is_empty() || frames == 0 {
        return f64::NEG_INFINITY;
    }
    let k = letters.len();
    let mut boundary = vec![false; k + 1];
    boundary[0] = true;
    boundary[k] = true;
    let mut at = 0;
    for w in &words[..words.len() - 1] {
        at += w.len();
        boundary[at] = true;
    }
    let lp = |t: usize, id: usize| -> f64 {
        let v = logp[t * vocab + id];
        if v.is_nan() {
            f64::NEG_INFINITY
        } else {
            f64::from(v)
        }
    };
    // State 2i: the gap before letter i (gap k after the last); state 2i+1: letter i.
    let emit = |t: usize, s: usize| -> f64 {
        if s % 2 == 1 {
            return lp(t, letters[s / 2]);
        }
        match delimiter {
            Some(d) if boundary[s / 2] => log_add(lp(t, blank), lp(t, d)),
            _ => lp(t, blank),
        }
    };
    let states = 2 * k + 1;
    let neg = f64::NEG_INFINITY;
    let mut alpha = vec![neg; states];
    alpha[0] = emit(0, 0);
    alpha[1] = emit(0, 1);
    let mut next = vec![neg; states];
    for t in 1..frames {
        for s in 0..states {
            let mut a = alpha[s];
            if s >= 1 {
                a = log_add(a, alpha[s - 1]);
            }
            if s >= 3 && s % 2 == 1 && letters[s / 2] != letters[s / 2 - 1] {
                a = log_add(a, alpha[s - 2]);
            }
            next[s] = if a == neg { neg } else { a + emit(t, s) };
        }
        std::mem::swap(&mut alpha, &mut next);
    }
    log_add(alpha[states - 1], alpha[states - 2])
}

/// `ln(exp(a) + exp(b))`.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// The CTC alignment graph of one phrase: blanks around every token, delimiters optional.
struct Topology {
    /// Token id of each state.
    tokens: Vec<usize>,
    /// Whether a path may pass over the state without visiting it (blanks, optional delimiters).
    skippable: Vec<bool>,
    /// Whether the state is a letter of the phrase (counts for the acoustic score and the span).
    letter: Vec<bool>,
}

struct Alignment {
    log_likelihood: f64,
    acoustic: f64,
    first_frame: usize,
    end_frame: usize,
}

impl Topology {
    fn new(words: &[Vec<usize>], blank: usize, delimiter: Option<usize>) -> Self {
        let mut t = Topology {
            tokens: Vec::new(),
            skippable: Vec::new(),
            letter: Vec::new(),
        };
        let mut push = |t: &mut Topology, id: usize, skippable: bool, letter: bool| {
            t.tokens.push(id);
            t.skippable.push(skippable);
            t.letter.push(letter);
        };
        push(&mut t, blank, true, false);
        let delim = |t: &mut Topology, push: &mut dyn FnMut(&mut Topology, usize, bool, bool)| {
            if let Some(d) = delimiter {
                push(t, d, true, false);
                push(t, blank, true, false);
            }
        };
        delim(&mut t, &mut push);
        for (w, word) in words.iter().enumerate() {
            if w > 0 {
                delim(&mut t, &mut push);
            }
            for &id in word {
                push(&mut t, id, false, true);
                push(&mut t, blank, true, false);
            }
        }
        delim(&mut t, &mut push);
        t
    }

    /// Best alignment of `logp` (`[frames, vocab]`, log-softmaxed) to the phrase, or `None` if it
    /// has too few frames for the phrase.
    fn viterbi(&self, logp: &[f32], vocab: usize) -> Option<Alignment> {
        let frames = logp.len() / vocab;
        let s_len = self.tokens.len();
        if frames == 0 {
            return None;
        }
        // Predecessors of each state: itself, the one before, and further back over skippable
        // states as long as the tokens differ (equal neighbours need a blank between them).
        let preds: Vec<Vec<usize>> = (0..s_len)
            .map(|s| {
                let mut p = vec![s];
                if s > 0 {
                    p.push(s - 1);
                }
                let mut k = s;
                while k >= 2 && self.skippable[k - 1] {
                    k -= 1;
                    let from = k - 1;
                    if self.tokens[from] != self.tokens[s] || self.skippable[s] {
                        if !p.contains(&from) {
                            p.push(from);
                        }
                    } else {
                        break;
                    }
                }
                p
            })
            .collect();
        let start_ok: Vec<bool> = (0..s_len)
            .map(|s| self.skippable[..s].iter().all(|&x| x))
            .collect();
        let end_ok: Vec<bool> = (0..s_len)
            .map(|s| self.skippable[s + 1..].iter().all(|&x| x))
            .collect();
        let neg = f64::NEG_INFINITY;
        let mut score = vec![neg; s_len];
        let mut back = vec![0u32; frames * s_len];
        let lp = |t: usize, s: usize| -> f64 {
            let v = logp[t * vocab + self.tokens[s]];
            if v.is_nan() {
                neg
            } else {
                f64::from(v)
            }
        };
        for s in 0..s_len {
            if start_ok[s] {
                score[s] = lp(0, s);
                back[s] = s as u32;
            }
        }
        let mut next = vec![neg; s_len];
        for t in 1..frames {
            for s in 0..s_len {
                let (mut best, mut arg) = (neg, s);
                for &p in &preds[s] {
                    if score[p] > best {
                        best = score[p];
                        arg = p;
                    }
                }
                next[s] = best + lp(t, s);
                back[t * s_len + s] = arg as u32;
            }
            std::mem::swap(&mut score, &mut next);
        }
        let (mut best, mut state) = (neg, usize::MAX);
        for s in 0..s_len {
            if end_ok[s] && score[s] > best {
                best = score[s];
                state = s;
            }
        }
        if state == usize::MAX || best == neg {
            return None;
        }
        // Trace back for the letters' frames.
        let mut path = vec![0usize; frames];
        for t in (0..frames).rev() {
            path[t] = state;
            state = back[t * s_len + state] as usize;
        }
        let (mut sum, mut count) = (0.0f64, 0usize);
        let (mut first, mut end) = (usize::MAX, 0usize);
        for (t, &s) in path.iter().enumerate() {
            if self.letter[s] {
                sum += lp(t, s).exp();
                count += 1;
                first = first.min(t);
                end = t + 1;
            }
        }
        Some(Alignment {
            log_likelihood: best,
            acoustic: if count == 0 { 0.0 } else { sum / count as f64 },
            first_frame: if first == usize::MAX { 0 } else { first },
            end_frame: end,
        })
    }
}

impl fmt::Display for Phrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        crate::ctc::base_960h()
    }

    /// Logits for a frame path written as tokens ("_" = blank): the path's token gets
    /// probability `p`, the rest shares `1 - p` evenly.
    fn logits_for(path: &[&str], p: f32) -> Vec<f32> {
        let v = vocab();
        let rest = (1.0 - p) / (v.len() - 1) as f32;
        let mut out = Vec::new();
        for t in path {
            let id = if *t == "_" { 0 } else { v.id(t).expect(t) };
            for j in 0..v.len() {
                out.push(if j == id { p.ln() } else { rest.ln() });
            }
        }
        out
    }

    fn set(text: &str) -> CommandSet {
        CommandSet::parse(text, "COMMANDS.txt", &vocab()).unwrap()
    }

    fn path(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn parses_phrases_actions_comments() {
        let s = set("# lights\nturn on => lamp --on\n\n  turn   off =>  lamp \"--level\" '0 %'\nseven four two\n");
        let p = s.phrases();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].text, "turn on");
        assert_eq!(
            p[0].action.as_deref(),
            Some(&["lamp".into(), "--on".into()][..])
        );
        assert_eq!(p[0].line, 2);
        assert_eq!(p[1].text, "turn off");
        assert_eq!(
            p[1].action.as_deref(),
            Some(&["lamp".to_string(), "--level".into(), "0 %".into()][..])
        );
        assert_eq!(p[2].action, None);
        let v = vocab();
        let t = |c: &str| v.id(c).unwrap();
        assert_eq!(
            p[0].words(),
            [vec![t("T"), t("U"), t("R"), t("N")], vec![t("O"), t("N")]]
        );
        assert_eq!(p[0].token_count(), 7);
        assert_eq!(p[2].token_count(), 5 + 4 + 3 + 2);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let v = vocab();
        let err = |text: &str| {
            CommandSet::parse(text, "cmds.txt", &v)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(""),
            "cmds.txt: no command phrases (write one phrase per line, optionally `phrase => action`)"
        );
        assert!(err("# only a comment\n\n").contains("no command phrases"));
        assert_eq!(
            err("yes\nturn ön\n"),
            "cmds.txt:2: phrase \"turn ön\": character 'ö' is not in the model's vocabulary"
        );
        assert_eq!(
            err("go 2\n"),
            "cmds.txt:1: phrase \"go 2\": character '2' is not in the model's vocabulary"
        );
        assert_eq!(
            err("=> ls\n"),
            "cmds.txt:1: `=> action` has no phrase before it"
        );
        assert_eq!(
            err("stop =>   \n"),
            "cmds.txt:1: phrase \"stop\": `=>` is not followed by an action"
        );
        assert_eq!(
            err("stop => say 'hi\n"),
            "cmds.txt:1: phrase \"stop\": action has an unterminated ' quote"
        );
        assert_eq!(
            err("Stop\nyes\nSTOP\n"),
            "cmds.txt:3: phrase \"STOP\" is already on line 1"
        );
        for e in [err(""), err("a\nb ö")] {
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn multiword_needs_a_delimiter() {
        let v = Vocabulary::new(
            ["<pad>", "A", "B"].iter().map(|s| s.to_string()).collect(),
            0,
            None,
        );
        assert!(CommandSet::parse("ab", "c", &v).is_ok());
        let e = CommandSet::parse("a b", "c", &v).unwrap_err().to_string();
        assert!(
            e.contains("no word delimiter") && e.contains("\"a b\""),
            "{e}"
        );
    }

    #[test]
    fn multichar_tokens_spell_longest_first() {
        let v = Vocabulary::new(
            ["<pad>", "▁", "o", "n", "on", "of", "f"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            0,
            None,
        );
        let s = CommandSet::parse("off\non", "c", &v).unwrap();
        assert_eq!(s.phrases()[0].words(), [vec![5, 6]]);
        assert_eq!(s.phrases()[1].words(), [vec![4]]);
    }

    #[test]
    fn a_trailing_colon_number_is_the_phrase_threshold() {
        let s = set("on :0.8 => lights on\ngo left :1\nstop\n");
        let p = s.phrases();
        assert_eq!((p[0].text.as_str(), p[0].threshold), ("on", Some(0.8)));
        assert_eq!(
            p[0].action.as_deref(),
            Some(&["lights".into(), "on".into()][..])
        );
        assert_eq!((p[1].text.as_str(), p[1].threshold), ("go left", Some(1.0)));
        assert_eq!(p[2].threshold, None);
        for bad in ["on :x\n", "on :1.5\n", "on :-0.1\n", ":0.5\n"] {
            let e = CommandSet::parse(bad, "C.txt", &vocab())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("C.txt:1"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_spoken_phrase_wins_with_full_match() {
        let s = set("go\nno\nstop\ngo left\n");
        // The model says "GO" cleanly, with blanks around and a trailing delimiter.
        let logits = logits_for(&path("_ _ G G _ O O _ | _"), 0.9);
        let scores = s.score(&logits, 32);
        assert_eq!(scores.len(), 4);
        let best = &scores[0];
        assert_eq!(s.phrases()[best.index].text, "go");
        // The phrase's alignment is the free path: match 1, acoustic = 0.9. The posterior sums
        // the free path (0.9^10 = 0.35) and the paths that trade a frame for a neighbour.
        assert!((best.match_score - 1.0).abs() < 1e-6, "{best:?}");
        assert!((best.acoustic - 0.9).abs() < 1e-5, "{best:?}");
        assert!(best.confidence > 0.35 && best.confidence < 1.0, "{best:?}");
        assert!((f64::from(best.confidence) - best.log_posterior.exp()).abs() < 1e-6);
        assert_eq!((best.first_frame, best.end_frame), (2, 7));
        // "no" differs in one letter: two frames pay log(0.9 / rest) each, over 2 tokens.
        let no = scores.iter().find(|x| x.index == 1).unwrap();
        let rest = 0.1f64 / 31.0;
        let want = ((2.0 * (rest.ln() - 0.9f64.ln())) / 2.0).exp();
        assert!((no.match_score - want).abs() < 1e-6, "{no:?} vs {want}");
        assert!(no.confidence < 0.01);
        // "go left" needs four letters the audio lacks.
        let go_left = scores.iter().find(|x| x.index == 3).unwrap();
        assert!(go_left.confidence < 0.05, "{go_left:?}");
    }

    #[test]
    fn viterbi_and_posterior_match_brute_force() {
        // Exhaustive check on a tiny vocabulary: the best alignment score equals the maximum,
        // over every frame path whose CTC collapse (repeats merged, blanks removed) is the
        // phrase with any choice of optional delimiters (between words and at both ends), of the
        // path's log-probability; the posterior equals the sum, over every frame path that
        // spells the phrase with any number of delimiters at word boundaries, of its probability.
        let v = Vocabulary::new(
            ["<pad>", "|", "a", "b"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            0,
            Some("|".into()),
        );
        let s = CommandSet::parse("ab a\naa\n", "c", &v).unwrap();
        let frames = 6;
        // Deterministic pseudo-random logits.
        let mut x = 12345u64;
        let logits: Vec<f32> = (0..frames * 4)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) * 6.0 - 3.0
            })
            .collect();
        let logp = log_probs(&logits, 4);
        let scores = s.score_log_probs(&logp, 4);
        for (idx, phrase) in s.phrases().iter().enumerate() {
            // Every allowed token sequence: each of the words+1 delimiter slots on or off.
            let slots = phrase.words().len() + 1;
            let allowed: Vec<Vec<usize>> = (0..1usize << slots)
                .map(|mask| {
                    let mut seq = Vec::new();
                    for (w, word) in phrase.words().iter().enumerate() {
                        if mask >> w & 1 == 1 {
                            seq.push(1);
                        }
                        seq.extend(word);
                    }
                    if mask >> (slots - 1) & 1 == 1 {
                        seq.push(1);
                    }
                    seq
                })
                .collect();
            // Letter count before each boundary (start, between words, end).
            let mut boundaries = vec![0usize];
            for word in phrase.words() {
                boundaries.push(boundaries.last().unwrap() + word.len());
            }
            let letters: Vec<usize> = phrase.words().iter().flatten().copied().collect();
            let spells = |collapsed: &[usize]| {
                let mut i = 0;
                for &tok in collapsed {
                    if tok == 1 {
                        if !boundaries.contains(&i) {
                            return false;
                        }
                    } else if letters.get(i) == Some(&tok) {
                        i += 1;
                    } else {
                        return false;
                    }
                }
                i == letters.len()
            };
            let mut best = f64::NEG_INFINITY;
            let mut sum = 0.0f64;
            for code in 0..4usize.pow(frames as u32) {
                let ids: Vec<usize> = (0..frames)
                    .map(|t| code / 4usize.pow(t as u32) % 4)
                    .collect();
                let mut collapsed: Vec<usize> = Vec::new();
                let mut prev = None;
                for &i in &ids {
                    if i != 0 && prev != Some(i) {
                        collapsed.push(i);
                    }
                    prev = Some(i);
                }
                let ll: f64 = ids
                    .iter()
                    .enumerate()
                    .map(|(t, &i)| f64::from(logp[t * 4 + i]))
                    .sum();
                if allowed.contains(&collapsed) {
                    best = best.max(ll);
                }
                if spells(&collapsed) {
                    sum += ll.exp();
                }
            }
            assert!(best.is_finite(), "{}: no path", phrase.text);
            let score = scores.iter().find(|x| x.index == idx).unwrap();
            let got = score.log_likelihood;
            assert!(
                (got - best).abs() < 1e-4,
                "{}: viterbi {got} vs brute force {best}",
                phrase.text
            );
            let post = score.log_posterior.exp();
            assert!(
                (post - sum).abs() < 1e-9 + 1e-6 * sum,
                "{}: posterior {post} vs brute force {sum}",
                phrase.text
            );
        }
    }

    #[test]
    fn repeated_letters_need_a_blank() {
        let s = set("see\n");
        // "SE" without a blank between the two E frames reads as one E: the phrase "SEE" must
        // spend a frame on a blank or a second E after a blank; with only 2 frames it cannot fit.
        let logits = logits_for(&path("S E"), 0.9);
        let scores = s.score(&logits, 32);
        assert_eq!(scores[0].log_likelihood, f64::NEG_INFINITY);
        assert_eq!(scores[0].confidence, 0.0);
        assert_eq!(scores[0].log_posterior, f64::NEG_INFINITY);
        let logits = logits_for(&path("S E _ E"), 0.9);
        let scores = s.score(&logits, 32);
        // The one path that spells SEE in 4 frames: 0.9^4.
        assert!(
            (scores[0].confidence - 0.6561).abs() < 1e-4,
            "{:?}",
            scores[0]
        );
    }

    #[test]
    fn out_of_grammar_speech_scores_low() {
        let s = set("yes\nno\nup\ndown\nstop\ngo\n");
        // The model clearly says "LEFT".
        let logits = logits_for(&path("_ L L _ E _ F F _ T _ |"), 0.95);
        let scores = s.score(&logits, 32);
        assert!(scores[0].confidence < 0.05, "{:?}", scores[0]);
        // Nothing but blanks (noise the model ignored): every phrase must invent letters.
        let logits = logits_for(&path("_ _ _ _ _ _ _ _"), 0.95);
        assert!(s.score(&logits, 32)[0].confidence < 0.05);
        // Empty input.
        assert!(s.score(&[], 32).is_empty());
    }

    #[test]
    fn prefixes() {
        let s = set("go\ngo left\ngood\n");
        let p = s.phrases();
        assert!(p[0].is_strict_prefix_of(&p[1]));
        assert!(!p[1].is_strict_prefix_of(&p[0]));
        assert!(!p[0].is_strict_prefix_of(&p[2]));
        assert!(!p[0].is_strict_prefix_of(&p[0]));
    }

    #[test]
    fn split_action_quotes_and_escapes() {
        assert_eq!(split_action("  a  b\tc ").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_action(r#"say "a b" 'c d' e\ f"#).unwrap(),
            ["say", "a b", "c d", "e f"]
        );
        assert_eq!(split_action(r#"x "" y"#).unwrap(), ["x", "", "y"]);
        assert_eq!(split_action("x \"abc").unwrap_err(), '"');
        assert!(split_action("   ").unwrap().is_empty());
    }
}
