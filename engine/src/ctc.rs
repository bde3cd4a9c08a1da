//! CTC decoding of wav2vec 2.0 logits.
//!
//! The pieces are public on their own so that other decoders (beam search, command grammars,
//! the chunk stitcher) can reuse them:
//!
//! 1. [`log_softmax`] / [`frame_argmax`] / [`best_path`]: per-frame scores from raw logits;
//! 2. [`collapse_tokens`]: CTC collapsing of a frame path into [`TokenSpan`]s;
//! 3. [`segment_words`]: token spans to timed, scored [`Word`]s;
//! 4. [`Transcript::from_words`]: the final text.
//!
//! [`greedy_decode`] chains them for best-path decoding.
//!
//! # Text conventions
//!
//! The text matches Hugging Face `Wav2Vec2CTCTokenizer.decode(ids, skip_special_tokens=True)`
//! (transformers 4.x) of the argmax ids, with whitespace tidied:
//!
//! * the blank (pad) id separates repeats and is then dropped: `L _ L` is `LL`, `L L` is `L`;
//! * the other special tokens (`<s>`, `</s>`, `<pad>`, `<unk>`, and the `[PAD]`/`[UNK]` spelling
//!   of XLS-R vocabularies) are removed *before* repeats are collapsed, as
//!   `skip_special_tokens=True` does: they are transparent, so `L <unk> L` is `L`. `<unk>` is
//!   dropped rather than printed because the ASR pipeline decodes with `skip_special_tokens=True`
//!   and a literal `<unk>` would count as a word in WER;
//! * the word-delimiter token, a token made only of whitespace (`" "`), and a lone `"▁"` all
//!   separate words; leading, trailing and repeated delimiters produce no empty words, so the
//!   text is the words joined by single spaces (Hugging Face keeps double spaces here);
//! * a vocabulary with no delimiter at all yields a single word.

use serde::Serialize;

use crate::model_info::ModelInfo;

/// A decoded word with its time span and confidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Word {
    pub text: String,
    /// Seconds: the first frame of the word's first token.
    pub start: f64,
    /// Seconds: one past the last frame of the word's last token.
    pub end: f64,
    /// Mean, over the frames that emitted the word's tokens (blank, delimiter and dropped special
    /// frames excluded), of the probability the decoder gave the emitted token; in `[0, 1]`.
    pub confidence: f32,
}

/// The result of decoding one utterance (or chunk).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Transcript {
    /// The words joined by single spaces.
    pub text: String,
    pub words: Vec<Word>,
}

impl Transcript {
    /// A transcript whose text is `words` joined by single spaces.
    pub fn from_words(words: Vec<Word>) -> Self {
        let text = words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Transcript { text, words }
    }
}

/// What a token id means to the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// The CTC blank (the pad token of wav2vec 2.0 vocabularies).
    Blank,
    /// A word boundary.
    Delimiter,
    /// A special token (`<s>`, `<unk>`, ...) or an id outside the vocabulary: ignored entirely.
    Dropped,
    /// A token that contributes its text to a word.
    Text,
}

/// Special tokens that never reach the text (besides the blank, whatever its spelling).
pub const DROPPED_TOKENS: &[&str] = &["<s>", "</s>", "<pad>", "<unk>", "[PAD]", "[UNK]"];

/// A CTC vocabulary: token strings by id, the blank id and the word delimiter.
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    blank_id: usize,
    word_delimiter_id: Option<usize>,
}

impl Vocabulary {
    /// `tokens[id]` is the string of token `id`; `blank_id` is the CTC blank (pad) id;
    /// `word_delimiter` is the token that separates words (usually `"|"`), if any.
    ///
    /// Besides `word_delimiter`, any whitespace-only token and a lone `"▁"` separate words.
    /// A `word_delimiter` that is not in `tokens` is ignored.
    ///
    /// # Panics
    ///
    /// If `blank_id` is not a valid id (`blank_id >= tokens.len()`).
    pub fn new(tokens: Vec<String>, blank_id: usize, word_delimiter: Option<String>) -> Self {
        assert!(
            blank_id < tokens.len(),
            "CTC blank id {blank_id} is outside the vocabulary of {} tokens",
            tokens.len()
        );
        let word_delimiter_id = word_delimiter.and_then(|d| tokens.iter().position(|t| *t == d));
        let kinds = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                if id == blank_id {
                    TokenKind::Blank
                } else if Some(id) == word_delimiter_id
                    || t == "▁"
                    || (!t.is_empty() && t.chars().all(char::is_whitespace))
                {
                    TokenKind::Delimiter
                } else if DROPPED_TOKENS.contains(&t.as_str()) {
                    TokenKind::Dropped
                } else {
                    TokenKind::Text
                }
            })
            .collect();
        Vocabulary {
            tokens,
            kinds,
            blank_id,
            word_delimiter_id,
        }
    }

    /// The vocabulary a w2v model carries in its metadata.
    pub fn from_model_info(info: &ModelInfo) -> Self {
        Vocabulary::new(
            info.vocab.clone(),
            info.pad_token_id,
            info.word_delimiter_token.clone(),
        )
    }

    /// A Hugging Face `vocab.json` file: the blank is `<pad>` (or `[PAD]`, `<blank>`, `""`), the
    /// word delimiter `|` when present. Errors name the file.
    pub fn from_vocab_json_file(path: &std::path::Path) -> Result<Self, String> {
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{shown}: not JSON: {e}"))?;
        let tokens = tokens_from_vocab_json(&json, None).map_err(|e| format!("{shown}: {e}"))?;
        let blank = ["<pad>", "[PAD]", "<blank>", ""]
            .iter()
            .find_map(|b| tokens.iter().position(|t| t == b))
            .ok_or_else(|| format!("{shown}: no <pad> token to use as the CTC blank"))?;
        Ok(Vocabulary::new(tokens, blank, Some("|".into())))
    }

    /// Number of tokens, which is also the width of a logits row.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn blank_id(&self) -> usize {
        self.blank_id
    }

    /// The id of the configured word-delimiter token, if it is in the vocabulary.
    pub fn word_delimiter_id(&self) -> Option<usize> {
        self.word_delimiter_id
    }

    /// The string of token `id`.
    pub fn token(&self, id: usize) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// The id of the token spelled `token`.
    pub fn id(&self, token: &str) -> Option<usize> {
        self.tokens.iter().position(|t| t == token)
    }

    /// How the decoder treats `id`; ids outside the vocabulary are [`TokenKind::Dropped`].
    pub fn kind(&self, id: usize) -> TokenKind {
        self.kinds.get(id).copied().unwrap_or(TokenKind::Dropped)
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The label ids of a transcript, for training: each whitespace-separated word spelled by
    /// [`Vocabulary::spell`], runs of whitespace as the word delimiter, leading and trailing
    /// whitespace dropped. `Err` lists the characters the vocabulary cannot spell, each once, in
    /// order of appearance (a space when there is no word delimiter).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, Vec<char>> {
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for (i, word) in text.split_whitespace().enumerate() {
            if i > 0 {
                match self.word_delimiter_id {
                    Some(d) => ids.push(d),
                    None if !missing.contains(&' ') => missing.push(' '),
                    None => {}
                }
            }
            if let Ok(w) = self.spell(word) {
                ids.extend(w);
                continue;
            }
            // Character by character, to name every character that cannot be spelled.
            for c in word.chars() {
                match self.spell(c.encode_utf8(&mut [0; 4])) {
                    Ok(w) => ids.extend(w),
                    Err(_) if !missing.contains(&c) => missing.push(c),
                    Err(_) => {}
                }
            }
        }
        if missing.is_empty() {
            Ok(ids)
        } else {
            Err(missing)
        }
    }

    /// Spell one word (no whitespace) in the vocabulary's text tokens: the longest token at each
    /// position, trying the word as written, then upper-case, then lower-case (character
    /// vocabularies are usually one case). The one text-to-token spelling, of training
    /// transcripts ([`Vocabulary::encode`]) and of grammar, lexicon and hotword phrases.
    /// `Err` is the first character of the word as written that cannot be spelled.
    pub fn spell(&self, word: &str) -> Result<Vec<usize>, char> {
        let mut first_err = None;
        for candidate in [word.to_string(), word.to_uppercase(), word.to_lowercase()] {
            match self.spell_exact(&candidate) {
                Ok(ids) => return Ok(ids),
                Err(c) => {
                    first_err.get_or_insert(c);
                }
            }
        }
        Err(first_err.unwrap_or_default())
    }

    fn spell_exact(&self, word: &str) -> Result<Vec<usize>, char> {
        let mut ids = Vec::new();
        let mut rest = word;
        while !rest.is_empty() {
            let best = (0..self.len())
                .filter(|&id| self.kind(id) == TokenKind::Text)
                .filter_map(|id| {
                    let t = self.token(id)?;
                    (!t.is_empty() && rest.starts_with(t)).then_some((id, t.len()))
                })
                .max_by_key(|&(id, len)| (len, std::cmp::Reverse(id)));
            match best {
                Some((id, len)) => {
                    ids.push(id);
                    rest = &rest[len..];
                }
                None => return Err(rest.chars().next().unwrap_or_default()),
            }
        }
        Ok(ids)
    }
}

/// Hugging Face `vocab.json` (token → id) as a list indexed by id: `vocab_size` long when given
/// (ids the file does not name, as a checkpoint may reserve more logits than tokens, decode to
/// nothing), else one past the largest id. `Err` says what is wrong.
pub fn tokens_from_vocab_json(
    json: &serde_json::Value,
    vocab_size: Option<usize>,
) -> Result<Vec<String>, String> {
    let map = json
        .as_object()
        .ok_or("expected a JSON object of token → id")?;
    // Multilingual checkpoints nest vocabularies by language; we need a flat one.
    if map.values().any(|v| v.is_object()) {
        return Err("per-language (nested) vocabularies are not supported".into());
    }
    let mut ids = Vec::with_capacity(map.len());
    for (token, id) in map {
        let id = id
            .as_u64()
            .ok_or_else(|| format!("token {token:?} has a non-integer id {id}"))?;
        ids.push((token, id as usize));
    }
    let size = match vocab_size {
        Some(n) => n,
        None => ids.iter().map(|&(_, id)| id + 1).max().unwrap_or(0),
    };
    if size > 1 << 24 {
        return Err(format!(
            "a vocabulary of {size} tokens is implausibly large"
        ));
    }
    let mut vocab = vec![String::new(); size];
    let mut seen = vec![false; size];
    for (token, id) in ids {
        if id >= size {
            return Err(format!(
                "token {token:?} has id {id}, but the model has only {size} logits"
            ));
        }
        if seen[id] {
            return Err(format!("id {id} is used by more than one token"));
        }
        seen[id] = true;
        vocab[id] = token.clone();
    }
    Ok(vocab)
}

/// Natural-log softmax of one frame of logits, in place.
///
/// Numerically stable (the maximum is subtracted first). NaN logits count as `-inf`; if some
/// logits are `+inf`, they share all the probability. A frame with no usable logit (all NaN or
/// `-inf`) carries no information and becomes uniform.
pub fn log_softmax_in_place(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = row
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        let uniform = -(row.len() as f32).ln();
        row.fill(uniform);
        return;
    }
    if max == f32::INFINITY {
        let count = row.iter().filter(|&&x| x == f32::INFINITY).count();
        let share = -(count as f32).ln();
        for x in row.iter_mut() {
            *x = if *x == f32::INFINITY {
                share
            } else {
                f32::NEG_INFINITY
            };
        }
        return;
    }
    let sum: f32 = row
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (x - max).exp())
        .sum();
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            (*x - max) - log_sum
        };
    }
}

/// Natural-log softmax of one frame of logits; see [`log_softmax_in_place`].
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let mut out = row.to_vec();
    log_softmax_in_place(&mut out);
    out
}

/// The most likely id of one frame and its softmax probability, or `None` for a frame with no
/// usable logit (empty, all NaN or all `-inf`). NaN logits are never chosen; ties go to the lower
/// id.
pub fn frame_argmax(row: &[f32]) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (id, &x) in row.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((id, x));
        }
    }
    let (id, max) = best?;
    if max == f32::NEG_INFINITY {
        return None;
    }
    let prob = if max == f32::INFINITY {
        1.0 / row.iter().filter(|&&x| x == f32::INFINITY).count() as f32
    } else {
        // exp(0) = 1 for the maximum itself, so the sum is at least 1.
        let sum: f32 = row
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| (x - max).exp())
            .sum();
        1.0 / sum
    };
    Some((id, prob))
}

/// The frame-level best path of row-major logits `[frames, vocab_size]`: for every frame, the
/// argmax id and its softmax probability (see [`frame_argmax`]). A frame with no usable logit is
/// reported as `(blank_id, 0.0)`, the only way a probability can be 0. A trailing partial row is
/// ignored.
pub fn best_path(logits: &[f32], vocab_size: usize, blank_id: usize) -> Vec<(usize, f32)> {
    if vocab_size == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(vocab_size)
        .map(|row| frame_argmax(row).unwrap_or((blank_id, 0.0)))
        .collect()
}

/// One emitted token after CTC collapsing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenSpan {
    pub id: usize,
    /// First frame that emitted the token.
    pub start_frame: usize,
    /// One past the last frame that emitted the token.
    pub end_frame: usize,
    /// Frames in `start_frame..end_frame` that emitted the token (dropped special tokens in
    /// between are not counted).
    pub emitting_frames: usize,
    /// Sum of the token's probability over its emitting frames.
    pub prob_sum: f64,
}

impl TokenSpan {
    /// Mean probability over the emitting frames.
    pub fn confidence(&self) -> f32 {
        if self.emitting_frames == 0 {
            0.0
        } else {
            (self.prob_sum / self.emitting_frames as f64) as f32
        }
    }
}

/// CTC collapsing of a frame path of `(id, probability)`, frame `i` at index `i`.
///
/// Dropped tokens ([`TokenKind::Dropped`]) are removed first and do not separate repeats; then
/// runs of the same id merge into one span and blanks are removed. Delimiter spans are kept (for
/// [`segment_words`]).
pub fn collapse_tokens(path: &[(usize, f32)], vocab: &Vocabulary) -> Vec<TokenSpan> {
    let mut spans: Vec<TokenSpan> = Vec::new();
    let mut prev: Option<usize> = None;
    for (frame, &(id, prob)) in path.iter().enumerate() {
        match vocab.kind(id) {
            TokenKind::Dropped => continue,
            TokenKind::Blank => {}
            TokenKind::Delimiter | TokenKind::Text => match spans.last_mut() {
                Some(last) if prev == Some(id) => {
                    last.end_frame = frame + 1;
                    last.emitting_frames += 1;
                    last.prob_sum += f64::from(prob);
                }
                _ => spans.push(TokenSpan {
                    id,
                    start_frame: frame,
                    end_frame: frame + 1,
                    emitting_frames: 1,
                    prob_sum: f64::from(prob),
                }),
            },
        }
        prev = Some(id);
    }
    spans
}

/// Groups token spans into words at delimiter spans.
///
/// A word's text is its tokens' strings concatenated; `start = time_offset + start_frame ×
/// seconds_per_frame` of its first token, `end = time_offset + end_frame × seconds_per_frame` of
/// its last; its confidence is the mean token probability over all its emitting frames. Blank
/// and dropped spans are ignored; words with empty text are skipped.
pub fn segment_words(
    spans: &[TokenSpan],
    vocab: &Vocabulary,
    seconds_per_frame: f64,
    time_offset: f64,
) -> Vec<Word> {
    struct Open {
        text: String,
        start_frame: usize,
        end_frame: usize,
        frames: usize,
        prob_sum: f64,
    }
    let close = |open: Open| -> Option<Word> {
        if open.text.is_empty() {
            return None;
        }
        let confidence = if open.frames == 0 {
            0.0
        } else {
            (open.prob_sum / open.frames as f64) as f32
        };
        Some(Word {
            text: open.text,
            start: time_offset + open.start_frame as f64 * seconds_per_frame,
            end: time_offset + open.end_frame as f64 * seconds_per_frame,
            confidence: confidence.clamp(0.0, 1.0),
        })
    };

    let mut words = Vec::new();
    let mut open: Option<Open> = None;
    for span in spans {
        match vocab.kind(span.id) {
            TokenKind::Blank | TokenKind::Dropped => {}
            TokenKind::Delimiter => words.extend(open.take().and_then(close)),
            TokenKind::Text => {
                let text = vocab.token(span.id).unwrap_or_default();
                let word = open.get_or_insert_with(|| Open {
                    text: String::new(),
                    start_frame: span.start_frame,
                    end_frame: span.end_frame,
                    frames: 0,
                    prob_sum: 0.0,
                });
                word.text.push_str(text);
                word.end_frame = span.end_frame;
                word.frames += span.emitting_frames;
                word.prob_sum += span.prob_sum;
            }
        }
    }
    words.extend(open.and_then(close));
    words
}

/// Greedy (best-path) decoding of row-major logits `[frames, vocab.len()]`.
///
/// `seconds_per_frame` is the frame stride divided by the sample rate (0.02 s for wav2vec 2.0 at
/// 16 kHz); `time_offset` is added to all times (the start of the chunk in chunked audio). Word
/// confidence is the mean, over the word's non-blank emitting frames, of the softmax probability
/// of the chosen token. NaN logits are ignored; a frame with none usable counts as blank. A
/// trailing partial row is ignored. See the [module docs](self) for the text conventions.
pub fn greedy_decode(
    logits: &[f32],
    vocab: &Vocabulary,
    seconds_per_frame: f64,
    time_offset: f64,
) -> Transcript {
    let path = best_path(logits, vocab.len(), vocab.blank_id());
    let spans = collapse_tokens(&path, vocab);
    Transcript::from_words(segment_words(&spans, vocab, seconds_per_frame, time_offset))
}

/// facebook/wav2vec2-base-960h's vocabulary (`vocab.json` by id), for the crate's unit tests.
#[cfg(test)]
pub(crate) fn base_960h() -> Vocabulary {
    const BASE_960H: [&str; 32] = [
        "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D",
        "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
    ];
    Vocabulary::new(
        BASE_960H.iter().map(|s| s.to_string()).collect(),
        0,
        Some("|".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits where frame `i` has logit `high` for `ids[i]` and 0 elsewhere.
    fn one_hot(ids: &[usize], vocab_size: usize, high: f32) -> Vec<f32> {
        let mut logits = vec![0.0; ids.len() * vocab_size];
        for (frame, &id) in ids.iter().enumerate() {
            logits[frame * vocab_size + id] = high;
        }
        logits
    }

    /// Decodes a path of token strings ("_" is the blank) with one-hot logits.
    fn decode_tokens(path: &[&str]) -> Transcript {
        let vocab = base_960h();
        let ids: Vec<usize> = path
            .iter()
            .map(|t| if *t == "_" { 0 } else { vocab.id(t).expect(t) })
            .collect();
        greedy_decode(&one_hot(&ids, vocab.len(), 10.0), &vocab, 0.02, 0.0)
    }

    #[test]
    fn encode_spells_transcripts_case_insensitively() {
        let v = base_960h();
        let ids = v.encode("  it's  ok ").unwrap();
        let tokens: Vec<&str> = ids.iter().map(|&i| v.token(i).unwrap()).collect();
        assert_eq!(tokens, ["I", "T", "'", "S", "|", "O", "K"]);
        assert_eq!(v.encode("é2 1é"), Err(vec!['é', '2', '1']));
        // One spelling: a word of a transcript is what `spell` (grammars, lexicons) gives.
        assert_eq!(v.encode("It's").unwrap(), v.spell("It's").unwrap());
        assert_eq!(v.spell("oké"), Err('o'));
        assert_eq!(v.spell("OKé"), Err('é'));
    }

    #[test]
    fn hello_world_base_960h() {
        let path = [
            "_", "_", "H", "H", "_", "E", "_", "L", "L", "_", "L", "O", "O", "_", "|", "|", "_",
            "W", "_", "O", "R", "R", "_", "L", "_", "D", "D", "_", "|", "_",
        ];
        let t = decode_tokens(&path);
        assert_eq!(t.text, "HELLO WORLD");
        let words: Vec<&str> = t.words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(words, ["HELLO", "WORLD"]);
        // HELLO: H at frame 2 .. O ends after frame 12; WORLD: W at 17 .. D ends after 26.
        assert!((t.words[0].start - 0.04).abs() < 1e-12);
        assert!((t.words[0].end - 0.26).abs() < 1e-12);
        assert!((t.words[1].start - 0.34).abs() < 1e-12);
        assert!((t.words[1].end - 0.54).abs() < 1e-12);
    }

    #[test]
    fn repeats_need_a_blank_between_them() {
        assert_eq!(decode_tokens(&["L", "_", "L"]).text, "LL");
        assert_eq!(decode_tokens(&["L", "L"]).text, "L");
        assert_eq!(
            decode_tokens(&["L", "L", "L", "_", "_", "L", "L"]).text,
            "LL"
        );
        assert_eq!(decode_tokens(&["A", "L", "L", "O"]).text, "ALO");
    }

    #[test]
    fn word_delimiters() {
        // Leading, trailing, doubled and blank-separated delimiters make no empty words.
        let t = decode_tokens(&["|", "|", "H", "_", "|", "_", "|", "O", "|", "|", "_", "|"]);
        assert_eq!(t.text, "H O");
        assert_eq!(t.words.len(), 2);
        assert_eq!(decode_tokens(&["|", "_", "|"]), Transcript::default());
        // A delimiter separates identical letters into two words.
        assert_eq!(decode_tokens(&["A", "|", "A"]).text, "A A");
    }

    #[test]
    fn special_tokens_are_dropped_and_transparent() {
        assert_eq!(
            decode_tokens(&["<s>", "H", "<unk>", "I", "</s>"]).text,
            "HI"
        );
        // Removed before collapsing, as skip_special_tokens=True does: L <s> L is one L.
        assert_eq!(
            decode_tokens(&["L", "<s>", "L", "<unk>", "L", "</s>", "O"]).text,
            "LO"
        );
        assert_eq!(
            decode_tokens(&["<unk>", "|", "<unk>"]),
            Transcript::default()
        );
        // A dropped token inside a word does not split it; its frame counts for nothing.
        let t = decode_tokens(&["H", "<unk>", "I"]);
        assert_eq!(t.words.len(), 1);
        assert!((t.words[0].end - 0.06).abs() < 1e-12);
    }

    #[test]
    fn times_and_confidences_are_exact() {
        // Vocab: blank, "|", "a", "b". Probabilities are set directly through log-probs.
        let vocab = Vocabulary::new(
            ["<pad>", "|", "a", "b"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            0,
            Some("|".into()),
        );
        let rows: [[f32; 4]; 7] = [
            [0.9, 0.05, 0.03, 0.02], // blank
            [0.1, 0.1, 0.8, 0.0],    // a 0.8
            [0.2, 0.0, 0.6, 0.2],    // a 0.6
            [0.6, 0.1, 0.2, 0.1],    // blank (not counted)
            [0.25, 0.0, 0.25, 0.5],  // b 0.5
            [0.1, 0.7, 0.1, 0.1],    // | (ends the word)
            [0.05, 0.05, 0.1, 0.8],  // b 0.8
        ];
        let logits: Vec<f32> = rows.iter().flatten().map(|p| p.ln()).collect();
        let t = greedy_decode(&logits, &vocab, 0.02, 10.0);
        assert_eq!(t.text, "ab b");
        let ab = &t.words[0];
        assert_eq!(ab.text, "ab");
        assert!((ab.start - 10.02).abs() < 1e-12, "{}", ab.start);
        assert!((ab.end - 10.10).abs() < 1e-12, "{}", ab.end);
        assert!(
            (ab.confidence - (0.8 + 0.6 + 0.5) / 3.0).abs() < 1e-6,
            "{}",
            ab.confidence
        );
        let b = &t.words[1];
        assert!((b.start - 10.12).abs() < 1e-12 && (b.end - 10.14).abs() < 1e-12);
        assert!((b.confidence - 0.8).abs() < 1e-6);

        let path = best_path(&logits, 4, 0);
        assert_eq!(
            path.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0, 2, 2, 0, 3, 1, 3]
        );
        assert!((path[1].1 - 0.8).abs() < 1e-6);
    }

    #[test]
    fn empty_input() {
        let vocab = base_960h();
        assert_eq!(greedy_decode(&[], &vocab, 0.02, 0.0), Transcript::default());
        assert!(best_path(&[], 32, 0).is_empty());
        // All blank.
        assert_eq!(decode_tokens(&["_", "_", "_"]), Transcript::default());
        // A partial row is ignored.
        assert_eq!(
            greedy_decode(&[1.0; 31], &vocab, 0.02, 0.0),
            Transcript::default()
        );
    }

    #[test]
    fn nan_and_infinite_logits_do_not_panic() {
        let vocab = base_960h();
        let mut logits = one_hot(&[11, 10], 32, 5.0);
        logits[0] = f32::NAN; // a NaN beside the H
        logits.extend([f32::NAN; 32]); // a frame with nothing usable: blank
        logits.extend(one_hot(&[10], 32, 5.0));
        let t = greedy_decode(&logits, &vocab, 0.02, 0.0);
        assert_eq!(t.text, "HII");
        assert!(t.words[0].confidence > 0.0 && t.words[0].confidence <= 1.0);

        assert_eq!(frame_argmax(&[f32::NAN, f32::NAN]), None);
        assert_eq!(frame_argmax(&[f32::NEG_INFINITY; 3]), None);
        assert_eq!(frame_argmax(&[0.0, f32::INFINITY, 1.0]), Some((1, 1.0)));
        assert_eq!(
            frame_argmax(&[f32::INFINITY, f32::INFINITY]),
            Some((0, 0.5))
        );
        assert_eq!(best_path(&[f32::NAN; 4], 4, 2), [(2, 0.0)]);
    }

    #[test]
    fn log_softmax_is_stable() {
        let l = log_softmax(&[1000.0, 1000.0, f32::NAN, f32::NEG_INFINITY]);
        assert!((l[0] - (-std::f32::consts::LN_2)).abs() < 1e-6);
        assert_eq!(l[1], l[0]);
        assert_eq!(l[2], f32::NEG_INFINITY);
        assert_eq!(l[3], f32::NEG_INFINITY);
        let l = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((l[2] - l[1] - 1.0).abs() < 1e-6);
        let l = log_softmax(&[f32::NAN; 4]);
        assert!(l.iter().all(|&x| (x - (-(4f32).ln())).abs() < 1e-6));
        let l = log_softmax(&[f32::INFINITY, 0.0]);
        assert_eq!(l, [0.0, f32::NEG_INFINITY]);
        assert!(log_softmax(&[]).is_empty());
    }

    #[test]
    fn space_delimited_and_undelimited_vocabularies() {
        let tokens = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // No "|", but a literal " " token.
        let vocab = Vocabulary::new(tokens(&["<pad>", " ", "a", "b"]), 0, None);
        let logits = one_hot(&[1, 2, 1, 3, 3, 1], 4, 8.0);
        let t = greedy_decode(&logits, &vocab, 0.02, 0.0);
        assert_eq!(t.text, "a b");
        assert_eq!(t.words.len(), 2);
        // "▁" convention.
        let vocab = Vocabulary::new(tokens(&["[PAD]", "▁", "a", "b", "[UNK]"]), 0, None);
        let logits = one_hot(&[2, 4, 1, 3], 5, 8.0);
        assert_eq!(greedy_decode(&logits, &vocab, 0.02, 0.0).text, "a b");
        // No delimiter at all (e.g. Chinese characters): one word.
        let vocab = Vocabulary::new(tokens(&["<pad>", "你", "好"]), 0, Some("|".into()));
        assert_eq!(vocab.word_delimiter_id(), None);
        let logits = one_hot(&[1, 0, 2, 2], 3, 8.0);
        let t = greedy_decode(&logits, &vocab, 0.02, 0.0);
        assert_eq!(t.text, "你好");
        assert_eq!(t.words.len(), 1);
        assert!((t.words[0].end - 0.08).abs() < 1e-12);
    }

    #[test]
    fn collapse_and_segment_are_reusable() {
        let vocab = base_960h();
        let path = [
            (11, 0.5),
            (11, 0.7),
            (0, 0.9),
            (1, 0.9),
            (10, 0.4),
            (4, 0.8),
        ];
        let spans = collapse_tokens(&path, &vocab);
        assert_eq!(spans.len(), 3);
        assert_eq!(
            (
                spans[0].start_frame,
                spans[0].end_frame,
                spans[0].emitting_frames
            ),
            (0, 2, 2)
        );
        assert!((spans[0].confidence() - 0.6).abs() < 1e-6);
        assert_eq!((spans[1].id, spans[1].start_frame), (10, 4));
        assert_eq!(spans[2].id, 4);
        let words = segment_words(&spans, &vocab, 0.5, 1.0);
        assert_eq!(words.len(), 1);
        assert_eq!(words[0].text, "HI");
        assert_eq!((words[0].start, words[0].end), (1.0, 3.5));
        assert_eq!(vocab.kind(99), TokenKind::Dropped);
    }

    #[test]
    fn serializes() {
        let t = decode_tokens(&["H", "I"]);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["text"], "HI");
        assert_eq!(json["words"][0]["text"], "HI");
    }
}
