//! ASR scoring: transcript normalization, word error rate and character error rate.
//!
//! Counts follow jiwer 4 (which aligns with rapidfuzz's `Levenshtein.opcodes`): the same
//! optimal alignment is chosen among equal-cost ones, so substitution/deletion/insertion counts
//! match jiwer, not only their sum. Both sides are normalized with [`normalize_transcript`]
//! first (jiwer's defaults do not normalize; feed it normalized text to compare).

use std::ops::AddAssign;

use serde::Serialize;

/// Normalizes a transcript for scoring:
///
/// * lowercase (Unicode-aware, `str::to_lowercase`; no NFC/NFKC composition is applied);
/// * apostrophes (`'`, `’`, `ʼ`) between two word characters are kept as `'` (`don't`, `don’t`
///   → `don't`); other apostrophes are removed (`'quoted'` → `quoted`, `dogs'` → `dogs`);
/// * whitespace, control characters, hyphens and dashes, slashes, underscores, `|` and `…`
///   separate words (`well-known` → `well known`);
/// * other punctuation is removed without separating: ASCII punctuation and symbols, and the
///   punctuation of Latin-1, General/Supplemental Punctuation, CJK, full-width, Arabic,
///   Devanagari, Armenian, Hebrew, Greek, Thai, Ethiopic, Myanmar and Khmer (`U.S.A.` → `usa`,
///   `你好，世界。` → `你好世界`); non-ASCII symbols (`€`, emoji) are kept;
/// * whitespace is collapsed to single spaces and trimmed.
pub fn normalize_transcript(s: &str) -> String {
    let lower: Vec<char> = s.to_lowercase().chars().collect();
    let is_word = |i: Option<&char>| i.is_some_and(|&c| class(c) == Class::Word);
    let mut out = String::with_capacity(s.len());
    for (i, &c) in lower.iter().enumerate() {
        match class(c) {
            Class::Word => out.push(c),
            Class::Separator => out.push(' '),
            Class::Punctuation => {}
            Class::Apostrophe => {
                if i > 0 && is_word(lower.get(i - 1)) && is_word(lower.get(i + 1)) {
                    out.push('\'');
                }
            }
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Apostrophe,
    Separator,
    Punctuation,
}

fn class(c: char) -> Class {
    if matches!(c, '\'' | '\u{2019}' | '\u{02BC}') {
        return Class::Apostrophe;
    }
    if c.is_whitespace() || c.is_control() || is_separator(c) {
        return Class::Separator;
    }
    if c.is_ascii_punctuation() || is_unicode_punctuation(c) {
        return Class::Punctuation;
    }
    Class::Word
}

fn is_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '/' | '\\' | '_' | '|'
            | '\u{058A}' // Armenian hyphen
            | '\u{05BE}' // Hebrew maqaf
            | '\u{1806}' // Mongolian todo soft hyphen
            | '\u{2010}'
            ..='\u{2015}' // hyphens and dashes
            | '\u{2026}' // ellipsis
            | '\u{2044}' // fraction slash
            | '\u{2053}' // swung dash
            | '\u{2212}' // minus sign
            | '\u{2E17}' | '\u{2E3A}' | '\u{2E3B}' // double oblique hyphen, two- and three-em dash
            | '\u{301C}' | '\u{30A0}' // wave dash, katakana-hiragana double hyphen
            | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' // small/full-width dashes
            | '\u{FF0F}' | '\u{FF3C}' | '\u{FF3F}' // full-width slash, backslash, low line
    )
}

fn is_unicode_punctuation(c: char) -> bool {
    matches!(
        c,
        '¡' | '§' | '«' | '¶' | '·' | '»' | '¿'
            | '\u{037E}' | '\u{0387}' // Greek question mark, ano teleia
            | '\u{055A}'..='\u{055F}' | '\u{0589}' // Armenian
            | '\u{05C0}' | '\u{05C3}' | '\u{05C6}' | '\u{05F3}' | '\u{05F4}' // Hebrew
            | '\u{060C}' | '\u{060D}' | '\u{061B}' | '\u{061E}' | '\u{061F}' // Arabic
            | '\u{066A}'..='\u{066D}' | '\u{06D4}'
            | '\u{0964}' | '\u{0965}' // Devanagari danda
            | '\u{0E4F}' | '\u{0E5A}' | '\u{0E5B}' // Thai
            | '\u{104A}' | '\u{104B}' // Myanmar
            | '\u{1360}'..='\u{1368}' // Ethiopic
            | '\u{17D4}'..='\u{17D6}' | '\u{17D8}'..='\u{17DA}' // Khmer
            | '\u{2016}'..='\u{2027}' // General Punctuation: quotes, bullets, ...
            | '\u{2030}'..='\u{205E}'
            | '\u{2E00}'..='\u{2E7F}' // Supplemental Punctuation
            | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301F}'
            | '\u{3030}' | '\u{303D}' | '\u{30FB}' // CJK
            | '\u{FE10}'..='\u{FE19}' | '\u{FE30}'..='\u{FE4F}' | '\u{FE50}'..='\u{FE6B}'
            | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}'
            | '\u{FF5B}'..='\u{FF65}' // full-width and half-width forms
    )
}

/// Edit operations between a reference and a hypothesis; add them up over a corpus with `+=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EditCounts {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    /// Reference tokens (hits + substitutions + deletions).
    pub reference_len: usize,
}

impl EditCounts {
    /// Substitutions + deletions + insertions.
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Reference tokens aligned to an identical hypothesis token.
    pub fn hits(&self) -> usize {
        self.reference_len
            .saturating_sub(self.substitutions + self.deletions)
    }

    /// `errors / reference_len`. With an empty reference it is, as in jiwer, the number of
    /// inserted tokens: 0.0 for an empty hypothesis, 1.0 per hypothesis token otherwise. The rate
    /// of summed counts is the corpus rate (total errors over total reference tokens).
    pub fn rate(&self) -> f64 {
        if self.reference_len == 0 {
            self.errors() as f64
        } else {
            self.errors() as f64 / self.reference_len as f64
        }
    }
}

impl AddAssign for EditCounts {
    fn add_assign(&mut self, other: Self) {
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
        self.reference_len += other.reference_len;
    }
}

/// Word-level edit counts of the [normalized](normalize_transcript) texts (WER = `.rate()`).
pub fn word_errors(reference: &str, hypothesis: &str) -> EditCounts {
    let reference = normalize_transcript(reference);
    let hypothesis = normalize_transcript(hypothesis);
    let reference: Vec<&str> = reference.split(' ').filter(|w| !w.is_empty()).collect();
    let hypothesis: Vec<&str> = hypothesis.split(' ').filter(|w| !w.is_empty()).collect();
    edit_counts(&reference, &hypothesis)
}

/// Character-level edit counts (CER = `.rate()`), jiwer's convention: over the characters
/// (Unicode scalar values) of the [normalized](normalize_transcript) texts, the single spaces
/// between words included.
pub fn char_errors(reference: &str, hypothesis: &str) -> EditCounts {
    let reference: Vec<char> = normalize_transcript(reference).chars().collect();
    let hypothesis: Vec<char> = normalize_transcript(hypothesis).chars().collect();
    edit_counts(&reference, &hypothesis)
}

/// Above this many dynamic-programming cells (16 MiB of `u32`), the alignment is counted in two
/// rows of memory instead of backtracked through the full matrix: the total stays exact, but
/// among equal-cost alignments the split between S, D and I may differ from jiwer's.
pub const MAX_BACKTRACE_CELLS: usize = 1 << 22;

/// Levenshtein edit counts turning `reference` into `hypothesis`.
///
/// Common prefixes and suffixes are matched first, then the alignment is backtracked from the
/// end as rapidfuzz does (deletion, then insertion, then substitution/match when several are
/// optimal), which reproduces jiwer's counts (for inputs up to [`MAX_BACKTRACE_CELLS`]).
pub fn edit_counts<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> EditCounts {
    let prefix = reference
        .iter()
        .zip(hypothesis)
        .take_while(|(a, b)| a == b)
        .count();
    let (r, h) = (&reference[prefix..], &hypothesis[prefix..]);
    let suffix = r
        .iter()
        .rev()
        .zip(h.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (r, h) = (&r[..r.len() - suffix], &h[..h.len() - suffix]);

    let cells = (r.len() + 1).checked_mul(h.len() + 1);
    let (substitutions, deletions, insertions) = if r.is_empty() || h.is_empty() {
        (0, r.len(), h.len())
    } else if cells.is_some_and(|c| c <= MAX_BACKTRACE_CELLS) {
        backtrace(r, h)
    } else {
        two_rows(r, h)
    };
    EditCounts {
        substitutions,
        deletions,
        insertions,
        reference_len: reference.len(),
    }
}

/// Full matrix, backtracked like rapidfuzz's `recover_alignment`.
fn backtrace<T: PartialEq>(r: &[T], h: &[T]) -> (usize, usize, usize) {
    let (n, m) = (r.len(), h.len());
    let width = m + 1;
    let mut d = vec![0u32; (n + 1) * width];
    for (j, cell) in d[..width].iter_mut().enumerate() {
        *cell = j as u32;
    }
    for i in 1..=n {
        let row = i * width;
        d[row] = i as u32;
        for j in 1..=m {
            let diag = d[row - width + j - 1] + u32::from(r[i - 1] != h[j - 1]);
            let del = d[row - width + j] + 1;
            let ins = d[row + j - 1] + 1;
            d[row + j] = diag.min(del).min(ins);
        }
    }
    let at = |i: usize, j: usize| d[i * width + j];

    let (mut s, mut del, mut ins) = (0, 0, 0);
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if at(i, j) == at(i - 1, j) + 1 {
            del += 1;
            i -= 1;
        } else {
            j -= 1;
            if j > 0 && at(i, j) + 1 == at(i - 1, j) {
                ins += 1;
            } else {
                i -= 1;
                if r[i] != h[j] {
                    s += 1;
                }
            }
        }
    }
    del += i;
    ins += j;
    debug_assert_eq!((s + del + ins) as u32, at(n, m));
    (s, del, ins)
}

/// Two rows of cells carrying the counts of one optimal path each (ties: substitution/match,
/// then deletion, then insertion).
fn two_rows<T: PartialEq>(r: &[T], h: &[T]) -> (usize, usize, usize) {
    #[derive(Clone, Copy)]
    struct Cell {
        cost: usize,
        s: usize,
        d: usize,
        i: usize,
    }
    let mut prev: Vec<Cell> = (0..=h.len())
        .map(|j| Cell {
            cost: j,
            s: 0,
            d: 0,
            i: j,
        })
        .collect();
    let mut cur = prev.clone();
    for (i, a) in r.iter().enumerate() {
        cur[0] = Cell {
            cost: i + 1,
            s: 0,
            d: i + 1,
            i: 0,
        };
        for (j, b) in h.iter().enumerate() {
            let diag = prev[j];
            let diag = if a == b {
                diag
            } else {
                Cell {
                    cost: diag.cost + 1,
                    s: diag.s + 1,
                    ..diag
                }
            };
            let up = prev[j + 1];
            let up = Cell {
                cost: up.cost + 1,
                d: up.d + 1,
                ..up
            };
            let left = cur[j];
            let left = Cell {
                cost: left.cost + 1,
                i: left.i + 1,
                ..left
            };
            let mut best = diag;
            if up.cost < best.cost {
                best = up;
            }
            if left.cost < best.cost {
                best = left;
            }
            cur[j + 1] = best;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let last = prev[h.len()];
    (last.s, last.d, last.i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdi(c: EditCounts) -> (usize, usize, usize) {
        (c.substitutions, c.deletions, c.insertions)
    }

    #[test]
    fn known_word_cases_match_jiwer() {
        // Expected (S, D, I) from jiwer 4.0.0 (rapidfuzz 3.14.6), `jiwer.process_words(r, h)`.
        let cases = [
            ("the cat sat on the mat", "the cat sit on mat", (1, 1, 0)),
            ("a b", "b c", (2, 0, 0)),
            ("hello world", "hello big world", (0, 0, 1)),
            ("one two three four", "four three two one", (2, 1, 1)),
            ("i don't know", "i do not know", (1, 0, 1)),
            ("a b c d e", "x a b c y z", (2, 0, 1)),
            ("b d a a a c", "a b a a d d a b a", (1, 1, 4)),
            ("d a a b a d a b a", "b c d b a c b a", (4, 1, 0)),
            ("c a a a", "b d d c d d c c b", (3, 0, 5)),
            ("b a c", "d c d c a a d b", (2, 0, 5)),
            ("b d d a a c", "c d d a a", (1, 1, 0)),
            ("d a a c d", "d c a d", (1, 1, 0)),
            ("b a d a b c", "b d", (0, 4, 0)),
            ("d a b d d c b", "c d c d b b", (2, 2, 1)),
            ("b b", "b a d", (1, 0, 1)),
            ("c c a", "d c", (1, 1, 0)),
            ("b a d d d d", "a d d a b a", (2, 1, 1)),
            ("d b a c", "a a a b a c a a b", (1, 0, 5)),
            ("b c c c d a a", "d d d c a b a", (5, 0, 0)),
            ("c d b a b c", "a c", (0, 4, 0)),
            ("c c", "c b", (1, 0, 0)),
            ("c b b b d b b d c", "", (0, 9, 0)),
        ];
        for (r, h, expected) in cases {
            let c = word_errors(r, h);
            assert_eq!(sdi(c), expected, "{r:?} / {h:?}");
            assert_eq!(c.reference_len, r.split_whitespace().count());
        }
        let c = word_errors("the cat sat on the mat", "the cat sit on mat");
        assert!((c.rate() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.hits(), 4);
    }

    #[test]
    fn known_char_cases_match_jiwer() {
        // Expected (S, D, I, CER) from jiwer 4.0.0, `jiwer.process_characters(r, h)`.
        let cases = [
            (
                "the cat sat on the mat",
                "the cat sit on mat",
                (1, 4, 0),
                0.22727272727272727,
            ),
            ("a b", "b c", (2, 0, 0), 0.6666666666666666),
            (
                "hello world",
                "hello big world",
                (0, 0, 4),
                0.36363636363636365,
            ),
            (
                "one two three four",
                "four three two one",
                (5, 4, 4),
                0.7222222222222222,
            ),
            (
                "i don't know",
                "i do not know",
                (1, 0, 1),
                0.16666666666666666,
            ),
            ("kitten", "sitting", (2, 0, 1), 0.5),
            (
                "the quick brown fox",
                "the quack brown box jumps",
                (2, 0, 6),
                8.0 / 19.0,
            ),
            ("don't stop", "dont stop", (0, 1, 0), 0.1),
        ];
        for (r, h, expected, cer) in cases {
            let c = char_errors(r, h);
            assert_eq!(sdi(c), expected, "{r:?} / {h:?}");
            assert!(
                (c.rate() - cer).abs() < 1e-12,
                "{r:?} / {h:?}: {}",
                c.rate()
            );
        }
    }

    #[test]
    fn empty_reference_or_hypothesis() {
        // jiwer: empty reference gives wer = number of insertions.
        let c = word_errors("", "a b");
        assert_eq!((sdi(c), c.reference_len), ((0, 0, 2), 0));
        assert_eq!(c.rate(), 2.0);
        let c = word_errors("", "");
        assert_eq!(c, EditCounts::default());
        assert_eq!(c.rate(), 0.0);
        let c = word_errors("a b", "");
        assert_eq!(sdi(c), (0, 2, 0));
        assert_eq!(c.rate(), 1.0);
        // Punctuation-only text normalizes to nothing.
        assert_eq!(word_errors("...", " !? "), EditCounts::default());
        let c = char_errors("ab", "");
        assert_eq!((sdi(c), c.rate()), ((0, 2, 0), 1.0));
    }

    #[test]
    fn corpus_accumulation() {
        let mut total = EditCounts::default();
        total += word_errors("a b c d", "a x c d");
        total += word_errors("e f", "e f g");
        total += word_errors("", "h");
        assert_eq!(
            total,
            EditCounts {
                substitutions: 1,
                deletions: 0,
                insertions: 2,
                reference_len: 6
            }
        );
        assert!((total.rate() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_transcript("  Hello,   WORLD!  "), "hello world");
        assert_eq!(normalize_transcript("I don't know."), "i don't know");
        assert_eq!(normalize_transcript("I DON’T know"), "i don't know");
        assert_eq!(
            normalize_transcript("'quoted' and \"double\""),
            "quoted and double"
        );
        assert_eq!(
            normalize_transcript("rock 'n' roll, the dogs' toys"),
            "rock n roll the dogs toys"
        );
        assert_eq!(
            normalize_transcript("well-known co—operation and/or x_y"),
            "well known co operation and or x y"
        );
        assert_eq!(
            normalize_transcript("U.S.A. (etc.); 50% & more?"),
            "usa etc 50 more"
        );
        assert_eq!(
            normalize_transcript("wait…what\tnow\nthen"),
            "wait what now then"
        );
        // Unicode case and punctuation.
        assert_eq!(
            normalize_transcript("ÉCOLE Ärger STRAẞE"),
            "école ärger straße"
        );
        assert_eq!(normalize_transcript("ΟΔΥΣΣΕΥΣ"), "οδυσσευς");
        assert_eq!(normalize_transcript("«Привет, МИР!»"), "привет мир");
        assert_eq!(normalize_transcript("你好，世界。"), "你好世界");
        assert_eq!(normalize_transcript("¿Qué tal? ¡Bien!"), "qué tal bien");
        assert_eq!(normalize_transcript("مرحبا، كيف حالك؟"), "مرحبا كيف حالك");
        assert_eq!(normalize_transcript("नमस्ते। क्या हाल है॥"), "नमस्ते क्या हाल है");
        assert_eq!(normalize_transcript(""), "");
        assert_eq!(normalize_transcript("'"), "");
        // Scoring uses it on both sides.
        assert_eq!(word_errors("Hello, World!", "hello world").errors(), 0);
    }

    /// A small deterministic generator for the property tests.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn distance(a: &[u8], b: &[u8]) -> usize {
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, x) in a.iter().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, y) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(x != y))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }

    #[test]
    fn counts_are_optimal_and_consistent() {
        let mut state = 42;
        for _ in 0..2000 {
            let alphabet = 1 + lcg(&mut state) % 4;
            let n = (lcg(&mut state) % 12) as usize;
            let m = (lcg(&mut state) % 12) as usize;
            let a: Vec<u8> = (0..n).map(|_| (lcg(&mut state) % alphabet) as u8).collect();
            let b: Vec<u8> = (0..m).map(|_| (lcg(&mut state) % alphabet) as u8).collect();
            let c = edit_counts(&a, &b);
            let dist = distance(&a, &b);
            assert_eq!(c.errors(), dist, "{a:?} {b:?}");
            // Every alignment consumes all of both sides.
            assert_eq!(c.reference_len - c.deletions + c.insertions, m);
            assert!(c.hits() + c.substitutions + c.deletions == n);
            let (s, d, i) = two_rows(&a, &b);
            assert_eq!(s + d + i, dist);
            assert_eq!(n - d + i, m);
        }
    }

    #[test]
    fn large_inputs_fall_back_to_two_rows() {
        let mut state = 7;
        let a: Vec<u8> = (0..2500).map(|_| (lcg(&mut state) % 3) as u8).collect();
        let b: Vec<u8> = (0..2500).map(|_| (lcg(&mut state) % 3) as u8).collect();
        const { assert!(2501 * 2501 > MAX_BACKTRACE_CELLS) };
        let c = edit_counts(&a, &b);
        assert_eq!(c.errors(), distance(&a, &b));
        assert_eq!(c.reference_len - c.deletions + c.insertions, b.len());
    }
}
