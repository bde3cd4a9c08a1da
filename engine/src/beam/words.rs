//! A word list as a constraint on the beam search, with LM lookahead (flashlight's lexicon
//! decoder): a partial word must begin a listed word, a word may end only where a listed word
//! ends, and a partial word is scored by the best unigram LM score among the words it can still
//! become ("smeared" over the prefix), so that a beam spelling a likely word is not pruned before
//! its word ends. When the word ends, the lookahead gives way to the word's real LM score in its
//! context.

use crate::lm::NgramLm;

/// The listed words, sorted, with each word's lookahead score and a range-maximum tree over them
/// (the words beginning with a prefix are one contiguous range of the sorted list).
pub struct WordList {
    words: Vec<String>,
    /// Segment tree over the words' log10 unigram scores (leaves at `n..2n`).
    tree: Vec<f32>,
}

/// What a partial word can still become.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prefix {
    /// No listed word begins with it: the beam ends here.
    Dead,
    /// Some listed word begins with it; the best log10 unigram score among them (0 without an
    /// LM).
    Live(f32),
}

impl WordList {
    /// `words` in any case and order (duplicates allowed); `lm` scores each word as a unigram
    /// (`unk_score` added, as in the search, for words the LM does not know).
    pub fn new(words: &[String], lm: Option<&NgramLm>, unk_score: f64) -> Self {
        let mut words: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        words.sort();
        words.dedup();
        let n = words.len();
        let mut tree = vec![f32::NEG_INFINITY; 2 * n.max(1)];
        for (i, w) in words.iter().enumerate() {
            tree[n + i] = match lm {
                Some(lm) => {
                    let id = lm.index(w);
                    let (p, _) = lm.score(&lm.null_context(), id);
                    if id == lm.unk() {
                        p + unk_score as f32
                    } else {
                        p
                    }
                }
                None => 0.0,
            };
        }
        for i in (1..n).rev() {
            tree[i] = tree[2 * i].max(tree[2 * i + 1]);
        }
        WordList { words, tree }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether `word` (lower case) is listed.
    pub fn contains(&self, word: &str) -> bool {
        self.words
            .binary_search_by(|w| w.as_str().cmp(word))
            .is_ok()
    }

    /// What the lower-case partial word `prefix` can still become.
    pub fn prefix(&self, prefix: &str) -> Prefix {
        let lo = self.words.partition_point(|w| w.as_str() < prefix);
        let hi = lo + self.words[lo..].partition_point(|w| w.starts_with(prefix));
        if lo == hi {
            return Prefix::Dead;
        }
        Prefix::Live(self.range_max(lo, hi))
    }

    /// Maximum of the leaves `lo..hi`.
    fn range_max(&self, lo: usize, hi: usize) -> f32 {
        let n = self.words.len();
        let (mut l, mut r) = (lo + n, hi + n);
        let mut best = f32::NEG_INFINITY;
        while l < r {
            if l & 1 == 1 {
                best = best.max(self.tree[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                best = best.max(self.tree[r]);
            }
            l >>= 1;
            r >>= 1;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lm() -> NgramLm {
        NgramLm::parse(
            "\\data\\\nngram 1=6\n\n\\1-grams:\n-1.0\t<s>\n-1.0\t</s>\n-3.0\t<unk>\n\
             -0.5\tgo\n-2.0\tgolf\n-1.5\tleft\n\n\\end\\\n",
            "test.arpa",
        )
        .unwrap()
    }

    #[test]
    fn prefixes_know_their_words_and_their_best_unigram() {
        let words: Vec<String> = ["GO", "golf", "left", "lefty", "go"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let lm = lm();
        let list = WordList::new(&words, Some(&lm), -10.0);
        assert_eq!(list.len(), 4);
        assert!(list.contains("go") && list.contains("lefty") && !list.contains("gol"));
        // "g" can become go (-0.5) or golf (-2.0): the best is smeared over the prefix.
        assert_eq!(list.prefix("g"), Prefix::Live(-0.5));
        assert_eq!(list.prefix("gol"), Prefix::Live(-2.0));
        // lefty is not in the LM: unk (-3) plus the unknown-word score (-10).
        assert_eq!(list.prefix("lefty"), Prefix::Live(-13.0));
        assert_eq!(list.prefix("left"), Prefix::Live(-1.5));
        assert_eq!(list.prefix(""), Prefix::Live(-0.5));
        assert_eq!(list.prefix("x"), Prefix::Dead);
        assert_eq!(list.prefix("golfs"), Prefix::Dead);
        let plain = WordList::new(&words, None, -10.0);
        assert_eq!(plain.prefix("le"), Prefix::Live(0.0));
    }

    #[test]
    fn range_max_equals_a_scan() {
        let words: Vec<String> = (0..37).map(|i| format!("w{i:03}")).collect();
        let list = WordList::new(&words, None, 0.0);
        let mut list = list;
        for (i, leaf) in list.tree[37..].iter_mut().enumerate() {
            *leaf = ((i * 7919) % 101) as f32;
        }
        for i in (1..37).rev() {
            list.tree[i] = list.tree[2 * i].max(list.tree[2 * i + 1]);
        }
        for lo in 0..37 {
            for hi in lo + 1..=37 {
                let scan = list.tree[37 + lo..37 + hi]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(list.range_max(lo, hi), scan, "{lo}..{hi}");
            }
        }
    }
}
