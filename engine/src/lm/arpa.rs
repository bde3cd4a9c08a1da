//! ARPA back-off n-gram language models, scored as KenLM scores them.
//!
//! [`NgramLm::load`] reads an ARPA file of any order (`\data\`, `ngram N=COUNT` lines, one
//! `\N-grams:` section per order, `\end\`). Fields may be separated by tabs or spaces; each entry
//! is `log10(p) w1 .. wN [log10(backoff)]`, the back-off absent on the highest order.
//!
//! # Scoring
//!
//! [`NgramLm::score`] is the standard back-off rule (Katz's, and KenLM's `FullScore`):
//! `log p(w | c)` is the log-probability of the longest n-gram `c[k..] w` in the file, plus the
//! back-off weights of all longer context suffixes `c[j..]` (`j < k`) that are in the file.
//! N-grams whose prefix is missing (as KenLM's `test.arpa` has) need nothing special. A word not
//! among the unigrams is `<unk>`; a file without `<unk>` gets one with log10 probability -100,
//! as KenLM substitutes; the same for missing `<s>` and `</s>`.
//!
//! Words are matched case-insensitively: the file's words are stored in lower case (Unicode
//! `to_lowercase`) and queries are lowered too, because Hugging Face character vocabularies are
//! upper case and LMs are usually lower case. When two spellings of the file fold to one word the
//! first wins (a warning counts the n-grams dropped for it).
//!
//! # Memory and speed
//!
//! The file is streamed line by line, never held whole. Per word: its UTF-8 bytes, 4 bytes of
//! offset, 9 bytes of unigram data and at most 11 bytes of hash slots; per n-gram of order `n`:
//! `4n + 8` bytes (word ids, probability, back-off) and at most 11 bytes of hash slots (tables are
//! sized from the header's counts to a power of two at most 8/3 of the count). Since an ARPA line
//! of order `n` has at least `2n + 2` bytes, memory is at most about 6x the file size in the
//! worst case (one-letter words), and below 1.5x for real files; loading is linear in the file
//! size (one hash insert per entry). Lookups are open-addressing hash probes on exact keys (no
//! false positives).

use std::io::BufRead;
use std::path::Path;

/// A word's index in the model's vocabulary.
pub type WordId = u32;

/// The ARPA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Default log10 probability of `<unk>`, `<s>` or `</s>` when the file lacks them (KenLM's).
pub const MISSING_WORD_LOG10: f32 = -100.0;

/// The words before the next one: at most `order - 1` ids, most recent last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LmState {
    words: Vec<WordId>,
}

impl LmState {
    /// The context words, oldest first.
    pub fn words(&self) -> &[WordId] {
        &self.words
    }
}

/// An n-gram language model read from an ARPA file.
#[derive(Debug)]
pub struct NgramLm {
    vocab: WordTable,
    /// Per word id: unigram log10 probability and back-off.
    unigram_prob: Vec<f32>,
    unigram_backoff: Vec<f32>,
    /// Per word id: whether its unigram line carried a back-off field (pyctcdecode's rule for
    /// which words count as "known unigrams").
    unigram_has_backoff: Vec<bool>,
    /// `tables[n - 2]` holds the n-grams of order `n >= 2`.
    tables: Vec<NgramTable>,
    unk: WordId,
    bos: WordId,
    eos: WordId,
}

impl NgramLm {
    /// Read an ARPA file; errors name the file, the line and the problem.
    pub fn load(path: &Path) -> Result<Self, LmError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| LmError::Io {
            path: shown.clone(),
            source,
        })?;
        let start = std::time::Instant::now();
        let lm = Self::read(std::io::BufReader::with_capacity(1 << 16, file), &shown)?;
        tracing::info!(
            file = %shown,
            order = lm.order(),
            words = lm.vocab.len(),
            ngrams = ?lm.counts(),
            ms = start.elapsed().as_secs_f64() * 1e3,
            "loaded ARPA language model"
        );
        Ok(lm)
    }

    /// Parse ARPA text from memory; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, LmError> {
        Self::read(text.as_bytes(), path)
    }

    /// Parse ARPA from any reader; `path` names it in errors.
    pub fn read<R: BufRead>(reader: R, path: &str) -> Result<Self, LmError> {
        Parser::new(path).run(reader)
    }

    /// The highest n-gram order.
    pub fn order(&self) -> usize {
        self.tables.len() + 1
    }

    /// Number of n-grams per order (index 0: unigrams), including added `<unk>`, `<s>`, `</s>`.
    pub fn counts(&self) -> Vec<usize> {
        std::iter::once(self.vocab.len())
            .chain(self.tables.iter().map(NgramTable::len))
            .collect()
    }

    /// The id of `word` (case-insensitive), or `None` when it is not a unigram of the file.
    pub fn word_id(&self, word: &str) -> Option<WordId> {
        if word.chars().any(char::is_uppercase) {
            self.vocab.get(&word.to_lowercase())
        } else {
            self.vocab.get(word)
        }
    }

    /// The id of `word`, `<unk>`'s for words not in the file.
    pub fn index(&self, word: &str) -> WordId {
        self.word_id(word).unwrap_or(self.unk)
    }

    /// Whether `word` (case-insensitive) is a unigram of the file other than `<unk>`.
    pub fn contains(&self, word: &str) -> bool {
        self.word_id(word).is_some_and(|id| id != self.unk)
    }

    /// The word of `id`, in lower case.
    pub fn word(&self, id: WordId) -> &str {
        self.vocab.word(id)
    }

    /// Number of distinct words (unigrams, including `<unk>`, `<s>`, `</s>`).
    pub fn vocab_len(&self) -> usize {
        self.vocab.len()
    }

    /// Whether word `id`'s unigram line had a back-off field.
    pub fn unigram_has_backoff(&self, id: WordId) -> bool {
        self.unigram_has_backoff
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }

    pub fn unk(&self) -> WordId {
        self.unk
    }

    pub fn bos(&self) -> WordId {
        self.bos
    }

    pub fn eos(&self) -> WordId {
        self.eos
    }

    /// The state at the start of a sentence (context `<s>`).
    pub fn begin_sentence(&self) -> LmState {
        LmState {
            words: if self.order() > 1 {
                vec![self.bos]
            } else {
                Vec::new()
            },
        }
    }

    /// The empty context.
    pub fn null_context(&self) -> LmState {
        LmState::default()
    }

    /// log10 p(`word` | `state`) and the state after `word`.
    pub fn score(&self, state: &LmState, word: WordId) -> (f32, LmState) {
        let log10 = self.log10_prob(state.words(), word);
        let keep = self.order() - 1;
        let mut words = Vec::with_capacity(keep);
        if keep > 0 {
            let ctx = state.words();
            let from = (ctx.len() + 1).saturating_sub(keep);
            if from < ctx.len() {
                words.extend_from_slice(&ctx[from..]);
            }
            words.push(word);
        }
        (log10, LmState { words })
    }

    /// log10 p(`word` | `context`), `context` oldest first (only its last `order - 1` words
    /// count).
    pub fn log10_prob(&self, context: &[WordId], word: WordId) -> f32 {
        let ctx = &context[context.len().saturating_sub(self.order() - 1)..];
        let len = ctx.len();
        // The longest n-gram `ctx[len - k..] word` in the file.
        let mut found = 0;
        let mut prob = self.unigram_prob.get(word as usize).copied().unwrap_or(
            self.unigram_prob
                .get(self.unk as usize)
                .copied()
                .unwrap_or(MISSING_WORD_LOG10),
        );
        for k in (1..=len).rev() {
            if let Some(e) = self.tables[k - 1].find(&ctx[len - k..], word) {
                prob = self.tables[k - 1].prob[e];
                found = k;
                break;
            }
        }
        // Back-offs of the longer contexts that exist.
        for j in found + 1..=len {
            let c = &ctx[len - j..];
            prob += if j == 1 {
                self.unigram_backoff
                    .get(c[0] as usize)
                    .copied()
                    .unwrap_or(0.0)
            } else {
                let (head, last) = c.split_at(j - 1);
                self.tables[j - 2]
                    .find(head, last[0])
                    .map_or(0.0, |e| self.tables[j - 2].backoff[e])
            };
        }
        prob
    }

    /// log10 probability of a whole sentence of words, with `<s>` before it when `bos` and
    /// `</s>` after it when `eos`.
    pub fn sentence_log10(&self, words: &[&str], bos: bool, eos: bool) -> f32 {
        let mut state = if bos {
            self.begin_sentence()
        } else {
            self.null_context()
        };
        let mut total = 0.0;
        for w in words {
            let (s, next) = self.score(&state, self.index(w));
            total += s;
            state = next;
        }
        if eos {
            total += self.score(&state, self.eos).0;
        }
        total
    }
}

/// Interned words: one string with offsets, and an open-addressing hash of their ids.
#[derive(Debug, Default)]
struct WordTable {
    text: String,
    offsets: Vec<u32>,
    slots: Vec<u32>,
}

impl WordTable {
    fn with_capacity(words: usize) -> Self {
        WordTable {
            text: String::new(),
            offsets: {
                let mut o = Vec::with_capacity(words + 1);
                o.push(0);
                o
            },
            slots: vec![0; slot_count(words)],
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn word(&self, id: WordId) -> &str {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.text[a as usize..b as usize],
            _ => "",
        }
    }

    fn hash(word: &str) -> u64 {
        let mut h = FxHasher::default();
        for chunk in word.as_bytes().chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            h.add(u64::from_le_bytes(buf));
        }
        h.add(word.len() as u64);
        h.finish()
    }

    fn get(&self, word: &str) -> Option<WordId> {
        let mask = self.slots.len() - 1;
        let mut i = (Self::hash(word) as usize) & mask;
        loop {
            match self.slots[i] {
                0 => return None,
                s if self.word(s - 1) == word => return Some(s - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Insert `word`; `Err(existing id)` if present.
    fn insert(&mut self, word: &str) -> Result<WordId, WordId> {
        if (self.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (Self::hash(word) as usize) & mask;
        loop {
            match self.slots[i] {
                0 => break,
                s if self.word(s - 1) == word => return Err(s - 1),
                _ => i = (i + 1) & mask,
            }
        }
        let id = self.len() as WordId;
        self.text.push_str(word);
        self.offsets.push(self.text.len() as u32);
        self.slots[i] = id + 1;
        Ok(id)
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; (self.slots.len() * 2).max(4)];
        let mask = slots.len() - 1;
        for id in 0..self.len() as WordId {
            let mut i = (Self::hash(self.word(id)) as usize) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = id + 1;
        }
        self.slots = slots;
    }
}

/// The n-grams of one order `n >= 2`: flat keys, values, and open-addressing slots.
#[derive(Debug)]
struct NgramTable {
    n: usize,
    keys: Vec<WordId>,
    prob: Vec<f32>,
    backoff: Vec<f32>,
    slots: Vec<u32>,
}

impl NgramTable {
    fn with_capacity(n: usize, count: usize) -> Self {
        NgramTable {
            n,
            keys: Vec::with_capacity(n * count),
            prob: Vec::with_capacity(count),
            backoff: Vec::with_capacity(count),
            slots: vec![0; slot_count(count)],
        }
    }

    fn len(&self) -> usize {
        self.prob.len()
    }

    fn hash(head: &[WordId], last: WordId) -> u64 {
        let mut h = FxHasher::default();
        for &w in head {
            h.add(u64::from(w));
        }
        h.add(u64::from(last));
        h.finish()
    }

    fn key(&self, e: usize) -> (&[WordId], WordId) {
        let k = &self.keys[e * self.n..(e + 1) * self.n];
        (&k[..self.n - 1], k[self.n - 1])
    }

    /// The entry of `head ++ [last]` (`head.len() == n - 1`).
    fn find(&self, head: &[WordId], last: WordId) -> Option<usize> {
        debug_assert_eq!(head.len() + 1, self.n);
        let mask = self.slots.len() - 1;
        let mut i = (Self::hash(head, last) as usize) & mask;
        loop {
            match self.slots[i] {
                0 => return None,
                s => {
                    let e = s as usize - 1;
                    if self.key(e) == (head, last) {
                        return Some(e);
                    }
                    i = (i + 1) & mask;
                }
            }
        }
    }

    /// Insert; `false` (and nothing changes) if the n-gram is already there.
    fn insert(&mut self, ids: &[WordId], prob: f32, backoff: f32) -> bool {
        let (head, last) = ids.split_at(self.n - 1);
        if (self.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (Self::hash(head, last[0]) as usize) & mask;
        loop {
            match self.slots[i] {
                0 => break,
                s if self.key(s as usize - 1) == (head, last[0]) => return false,
                _ => i = (i + 1) & mask,
            }
        }
        self.slots[i] = self.len() as u32 + 1;
        self.keys.extend_from_slice(ids);
        self.prob.push(prob);
        self.backoff.push(backoff);
        true
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; (self.slots.len() * 2).max(4)];
        let mask = slots.len() - 1;
        for e in 0..self.len() {
            let (head, last) = self.key(e);
            let mut i = (Self::hash(head, last) as usize) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = e as u32 + 1;
        }
        self.slots = slots;
    }
}

/// A power of two at least 4/3 of `count` (load factor <= 3/4), hence at most 8/3 of it.
fn slot_count(count: usize) -> usize {
    (count + count / 3 + 1).next_power_of_two().max(4)
}

/// The Fx hash (rustc's), finished with a multiply-shift so the low bits are well mixed.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(Self::K);
    }

    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }
}

enum Section {
    /// Before `\data\`.
    Preamble,
    /// `ngram N=COUNT` lines.
    Counts,
    /// Inside `\n-grams:`, `seen` entries read so far.
    Entries {
        n: usize,
        seen: usize,
    },
    /// After the last entry of order `n`, expecting `\n+1-grams:` or `\end\`.
    Between {
        n: usize,
    },
    End,
}

struct Parser<'a> {
    path: &'a str,
    line: usize,
    counts: Vec<usize>,
    lm: Option<NgramLm>,
    /// Entries dropped because their words fold to an n-gram already read.
    duplicates: usize,
}

impl<'a> Parser<'a> {
    fn new(path: &'a str) -> Self {
        Parser {
            path,
            line: 0,
            counts: Vec::new(),
            lm: None,
            duplicates: 0,
        }
    }

    fn err(&self, reason: impl Into<String>) -> LmError {
        LmError::Parse {
            path: self.path.into(),
            line: self.line,
            reason: reason.into(),
        }
    }

    fn run<R: BufRead>(mut self, mut reader: R) -> Result<NgramLm, LmError> {
        let mut section = Section::Preamble;
        let mut buf = Vec::new();
        let mut ids: Vec<WordId> = Vec::new();
        loop {
            buf.clear();
            let read = reader.read_until(b'\n', &mut buf).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    self.err(e.to_string())
                } else {
                    LmError::Io {
                        path: self.path.into(),
                        source: e,
                    }
                }
            })?;
            if read == 0 {
                break;
            }
            self.line += 1;
            let text = std::str::from_utf8(&buf).map_err(|_| self.err("not UTF-8 text"))?;
            let line = text.trim();
            if line.is_empty() {
                continue;
            }
            section = match section {
                Section::Preamble if line == "\\data\\" => Section::Counts,
                // Text before `\data\` (SRILM writes comments there) is skipped.
                Section::Preamble => Section::Preamble,
                Section::Counts => {
                    if let Some(rest) = line.strip_prefix("ngram ") {
                        self.count_line(rest)?;
                        Section::Counts
                    } else if self.counts.is_empty() {
                        return Err(self.err(format!(
                            "expected `ngram N=COUNT` after \\data\\, found {line:?}"
                        )));
                    } else {
                        self.start_model();
                        self.section_header(line, 1)?;
                        Section::Entries { n: 1, seen: 0 }
                    }
                }
                Section::Entries { n, seen } if line.starts_with('\\') => {
                    return Err(self.err(format!(
                        "{line:?}: the {n}-gram section has {seen} entries, the header announced {}",
                        self.counts[n - 1]
                    )));
                }
                Section::Entries { n, seen } => {
                    self.entry(line, n, &mut ids)?;
                    if seen + 1 == self.counts[n - 1] {
                        Section::Between { n }
                    } else {
                        Section::Entries { n, seen: seen + 1 }
                    }
                }
                Section::Between { n } if n == self.counts.len() => {
                    if line == "\\end\\" {
                        Section::End
                    } else {
                        return Err(self.err(format!(
                            "expected \\end\\ after the {n} {n}-grams announced, found {line:?}"
                        )));
                    }
                }
                Section::Between { n } => {
                    self.section_header(line, n + 1)?;
                    Section::Entries { n: n + 1, seen: 0 }
                }
                Section::End => Section::End,
            };
        }
        match section {
            Section::End => {}
            Section::Preamble => return Err(self.err("no \\data\\ line: not an ARPA file")),
            Section::Counts => return Err(self.err("ends after the n-gram counts")),
            Section::Entries { n, seen } => {
                return Err(self.err(format!(
                    "ends inside the {n}-gram section ({seen} of {} entries)",
                    self.counts[n - 1]
                )))
            }
            Section::Between { .. } => return Err(self.err("ends without \\end\\")),
        }
        let mut lm = self.lm.take().expect("a model once past the counts");
        for (word, slot) in [("<unk>", 0), ("<s>", 1), ("</s>", 2)] {
            let id = match lm.vocab.get(word) {
                Some(id) => id,
                None => {
                    tracing::warn!(
                        file = self.path,
                        "no {word} in the ARPA file: log10 probability {MISSING_WORD_LOG10}"
                    );
                    let id = lm.vocab.insert(word).unwrap_or_else(|id| id);
                    lm.unigram_prob.push(MISSING_WORD_LOG10);
                    lm.unigram_backoff.push(0.0);
                    lm.unigram_has_backoff.push(false);
                    id
                }
            };
            match slot {
                0 => lm.unk = id,
                1 => lm.bos = id,
                _ => lm.eos = id,
            }
        }
        if self.duplicates > 0 {
            tracing::warn!(
                file = self.path,
                dropped = self.duplicates,
                "n-grams repeated (or spelled in another case) were dropped; the first is kept"
            );
        }
        Ok(lm)
    }

    fn count_line(&mut self, rest: &str) -> Result<(), LmError> {
        let parsed = rest.split_once('=').and_then(|(n, c)| {
            Some((
                n.trim().parse::<usize>().ok()?,
                c.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((n, count)) = parsed else {
            return Err(self.err(format!("bad n-gram count line `ngram {rest}`")));
        };
        if n != self.counts.len() + 1 {
            return Err(self.err(format!(
                "n-gram counts out of order: `ngram {n}=` where {} was expected",
                self.counts.len() + 1
            )));
        }
        if count == 0 {
            return Err(self.err(format!("`ngram {n}=0`: an order without n-grams")));
        }
        if n > 64 {
            return Err(self.err(format!("order {n} is beyond the supported 64")));
        }
        self.counts.push(count);
        Ok(())
    }

    fn start_model(&mut self) {
        let words = self.counts[0] + 3;
        // Capacities are hints: a header may announce more than the file has (that is an
        // error found later), so do not trust huge counts for allocation.
        let cap = |c: usize| c.min(1 << 24);
        self.lm = Some(NgramLm {
            vocab: WordTable::with_capacity(cap(words)),
            unigram_prob: Vec::with_capacity(cap(words)),
            unigram_backoff: Vec::with_capacity(cap(words)),
            unigram_has_backoff: Vec::with_capacity(cap(words)),
            tables: self.counts[1..]
                .iter()
                .enumerate()
                .map(|(i, &c)| NgramTable::with_capacity(i + 2, cap(c)))
                .collect(),
            unk: 0,
            bos: 0,
            eos: 0,
        });
    }

    fn section_header(&self, line: &str, n: usize) -> Result<(), LmError> {
        if line == format!("\\{n}-grams:") {
            Ok(())
        } else {
            Err(self.err(format!("expected \\{n}-grams:, found {line:?}")))
        }
    }

    fn entry(&mut self, line: &str, n: usize, ids: &mut Vec<WordId>) -> Result<(), LmError> {
        let highest = n == self.counts.len();
        let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
        let prob = self.number(fields.next().unwrap_or_default(), "probability")?;
        let prob = if prob > 0.0 {
            tracing::warn!(
                file = self.path,
                line = self.line,
                "positive log10 probability {prob} read as 0"
            );
            0.0
        } else {
            prob
        };
        let mut words: [&str; 64] = [""; 64];
        let mut got = 0;
        for f in fields.by_ref().take(n) {
            words[got] = f;
            got += 1;
        }
        let backoff_field = fields.next();
        if got < n || fields.next().is_some() || (highest && backoff_field.is_some()) {
            return Err(self.err(format!(
                "a {n}-gram line needs `log10(p)`, {n} word{}{}: {line:?}",
                if n == 1 { "" } else { "s" },
                if highest {
                    " and no back-off (highest order)"
                } else {
                    " and an optional back-off"
                }
            )));
        }
        let backoff = match backoff_field {
            Some(b) => self.number(b, "back-off")?,
            None => 0.0,
        };
        let lm = self.lm.as_mut().expect("a model once past the counts");
        if n == 1 {
            let word = words[0].to_lowercase();
            match lm.vocab.insert(&word) {
                Ok(_) => {
                    lm.unigram_prob.push(prob);
                    lm.unigram_backoff.push(backoff);
                    lm.unigram_has_backoff.push(backoff_field.is_some());
                }
                Err(_) => self.duplicates += 1,
            }
            return Ok(());
        }
        ids.clear();
        for w in &words[..n] {
            let vocab = &self
                .lm
                .as_ref()
                .expect("a model once past the counts")
                .vocab;
            let id = if w.chars().any(char::is_uppercase) {
                vocab.get(&w.to_lowercase())
            } else {
                vocab.get(w)
            };
            match id {
                Some(id) => ids.push(id),
                None => {
                    return Err(
                        self.err(format!("word {w:?} of a {n}-gram is not among the 1-grams"))
                    )
                }
            }
        }
        let lm = self.lm.as_mut().expect("a model once past the counts");
        if !lm.tables[n - 2].insert(ids, prob, backoff) {
            self.duplicates += 1;
        }
        Ok(())
    }

    fn number(&self, field: &str, what: &str) -> Result<f32, LmError> {
        match field.parse::<f32>() {
            Ok(x) if !x.is_nan() && x != f32::INFINITY => Ok(x),
            _ => Err(self.err(format!("bad {what} {field:?}"))),
        }
    }
}

#[cfg(test)]
mod tests;
