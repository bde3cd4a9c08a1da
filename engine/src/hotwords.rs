//! Hotwords: phrases the beam search favours (`--hotwords FILE`).
//!
//! A hotword file has one phrase per line, optionally ending in ` :WEIGHT` (sherpa-onnx's
//! spelling) to override `--hotword-weight` for that phrase; blank lines and `#` comments are
//! skipped. Phrases are spelled in the model's vocabulary (case-insensitively), words joined by
//! the word delimiter.
//!
//! [`ContextGraph`] is an Aho-Corasick automaton over the phrases' tokens, as sherpa-onnx's
//! context graph: a beam carries a graph state; each token it emits that continues a phrase earns
//! `weight / (tokens in the word)` (so a completed word is worth `weight`, natural-log units);
//! when the beam leaves a partly matched phrase (a token that does not continue it, or the end of
//! the utterance) that partial credit is taken back, so only completed phrases, in order, keep
//! their bonus. Completing a phrase locks its credit in. [`ContextGraph::continuations`] lists
//! the tokens that would continue a state, which the decoder never prunes.

use std::path::Path;

use crate::ctc::{TokenKind, Vocabulary};
use crate::grammar::{read_text_file, spell, GrammarError};

/// One phrase of a hotword file.
#[derive(Clone, Debug, PartialEq)]
pub struct Hotword {
    /// The phrase's words as written (whitespace-normalized).
    pub words: Vec<String>,
    /// Its bonus per completed word; `None`: the decoder's `--hotword-weight`.
    pub weight: Option<f64>,
    /// Its line in the file (1-based), for errors.
    pub line: usize,
}

/// Read a hotword file (see the [module docs](self)).
pub fn load_hotwords(path: &Path) -> Result<Vec<Hotword>, GrammarError> {
    let text = read_text_file(path)?;
    parse_hotwords(&text, &path.display().to_string())
}

/// Parse the text of a hotword file; `path` names it in errors.
pub fn parse_hotwords(text: &str, path: &str) -> Result<Vec<Hotword>, GrammarError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let mut content = raw.split('#').next().unwrap_or_default().trim();
        let mut weight = None;
        if let Some((phrase, w)) = content.rsplit_once(" :") {
            let w = w.trim();
            match w.parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    weight = Some(x);
                    content = phrase.trim();
                }
                _ => {
                    return Err(GrammarError::BadLine {
                        path: path.into(),
                        line: i + 1,
                        what: format!("weight {w:?} is not a number"),
                    })
                }
            }
        }
        let words: Vec<String> = content.split_whitespace().map(str::to_string).collect();
        if !words.is_empty() {
            out.push(Hotword {
                words,
                weight,
                line: i + 1,
            });
        }
    }
    if out.is_empty() {
        return Err(GrammarError::NoHotwords { path: path.into() });
    }
    Ok(out)
}

const ROOT: u32 = 0;

#[derive(Clone, Debug)]
struct Node {
    children: Vec<(usize, u32)>,
    fail: u32,
    /// Credit accumulated from the root along the path to this node.
    acc: f64,
    /// Whether a phrase ends here.
    is_end: bool,
    /// Bonus locked in on reaching this node: the credit of the phrases that end here or at a
    /// node on its output (suffix) chain.
    output: f64,
}

/// The hotword phrases compiled into an Aho-Corasick automaton over token ids.
#[derive(Clone, Debug)]
pub struct ContextGraph {
    nodes: Vec<Node>,
    phrases: usize,
    /// The state at a word boundary (after the delimiter), where utterances start.
    start: u32,
    /// The token that stands for every word boundary.
    delimiter: Option<usize>,
}

/// The token that marks word boundaries in the graph: the vocabulary's word delimiter, else its
/// first delimiter-kind token (`" "`, `"▁"`).
fn delimiter_of(vocab: &Vocabulary) -> Option<usize> {
    vocab
        .word_delimiter_id()
        .or_else(|| (0..vocab.len()).find(|&i| vocab.kind(i) == TokenKind::Delimiter))
}

/// A beam's position in the [`ContextGraph`].
pub type GraphState = u32;

impl ContextGraph {
    /// Compile phrases; `default_weight` for those without their own. Words that the vocabulary
    /// cannot spell are an error naming the file, the phrase and the character.
    pub fn new(
        hotwords: &[Hotword],
        default_weight: f64,
        vocab: &Vocabulary,
        path: &str,
    ) -> Result<Self, GrammarError> {
        let mut g = ContextGraph {
            nodes: vec![Node {
                children: Vec::new(),
                fail: ROOT,
                acc: 0.0,
                is_end: false,
                output: 0.0,
            }],
            phrases: 0,
            start: ROOT,
            delimiter: None,
        };
        for hw in hotwords {
            let weight = hw.weight.unwrap_or(default_weight);
            // Phrases start and end at word boundaries: `|w1|w2|` (without a delimiter in the
            // vocabulary, just the words' tokens).
            let delimiter = delimiter_of(vocab);
            let mut tokens: Vec<(usize, f64)> = delimiter.map(|d| (d, 0.0)).into_iter().collect();
            for (k, word) in hw.words.iter().enumerate() {
                let ids = spell(word, vocab).map_err(|what| GrammarError::OutOfVocabulary {
                    path: path.into(),
                    line: hw.line,
                    phrase: hw.words.join(" "),
                    what,
                })?;
                if k > 0 {
                    tokens.extend(delimiter.map(|d| (d, 0.0)));
                }
                let share = weight / ids.len().max(1) as f64;
                tokens.extend(ids.into_iter().map(|id| (id, share)));
            }
            tokens.extend(delimiter.map(|d| (d, 0.0)));
            g.insert(&tokens);
        }
        g.fill_fail_links();
        g.delimiter = delimiter_of(vocab);
        g.start = match g.delimiter {
            Some(d) => g.child(ROOT, d).unwrap_or(ROOT),
            None => ROOT,
        };
        Ok(g)
    }

    fn insert(&mut self, tokens: &[(usize, f64)]) {
        if tokens.is_empty() {
            return;
        }
        let mut n = ROOT;
        for &(tok, score) in tokens {
            n = match self.child(n, tok) {
                Some(c) => {
                    // Shared prefixes earn the larger of the phrases' scores (sherpa-onnx).
                    let parent_acc = self.nodes[n as usize].acc;
                    let c_node = &mut self.nodes[c as usize];
                    c_node.acc = c_node.acc.max(parent_acc + score);
                    c
                }
                None => {
                    let c = self.nodes.len() as u32;
                    let acc = self.nodes[n as usize].acc + score;
                    self.nodes.push(Node {
                        children: Vec::new(),
                        fail: ROOT,
                        acc,
                        is_end: false,
                        output: 0.0,
                    });
                    self.nodes[n as usize].children.push((tok, c));
                    c
                }
            };
        }
        self.nodes[n as usize].is_end = true;
        self.phrases += 1;
    }

    fn fill_fail_links(&mut self) {
        // An end node locks in its accumulated credit (final now that all phrases are in).
        for node in &mut self.nodes {
            node.output = if node.is_end { node.acc } else { 0.0 };
        }
        let mut queue = std::collections::VecDeque::new();
        let first: Vec<u32> = self.nodes[ROOT as usize]
            .children
            .iter()
            .map(|&(_, c)| c)
            .collect();
        for c in first {
            self.nodes[c as usize].fail = ROOT;
            queue.push_back(c);
        }
        while let Some(n) = queue.pop_front() {
            let children = self.nodes[n as usize].children.clone();
            for (tok, c) in children {
                let mut f = self.nodes[n as usize].fail;
                let fail = loop {
                    if let Some(x) = self.child(f, tok) {
                        break x;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = self.nodes[f as usize].fail;
                };
                self.nodes[c as usize].fail = fail;
                // A phrase ending at the fail node (a suffix of this path) also completes here.
                let suffix_output = self.nodes[fail as usize].output;
                self.nodes[c as usize].output += suffix_output;
                queue.push_back(c);
            }
        }
    }

    fn child(&self, n: u32, tok: usize) -> Option<u32> {
        self.nodes[n as usize]
            .children
            .iter()
            .find(|&&(t, _)| t == tok)
            .map(|&(_, c)| c)
    }

    /// Number of phrases compiled.
    pub fn len(&self) -> usize {
        self.phrases
    }

    pub fn is_empty(&self) -> bool {
        self.phrases == 0
    }

    /// Whether no phrase earns anything (all weights 0): such a graph changes nothing.
    pub fn is_inert(&self) -> bool {
        self.nodes.iter().all(|n| n.acc == 0.0 && n.output == 0.0)
    }

    /// The token the decoder feeds at each word boundary (whichever delimiter it saw).
    pub fn delimiter(&self) -> Option<usize> {
        self.delimiter
    }

    /// The start state (a word boundary).
    pub fn start(&self) -> GraphState {
        self.start
    }

    /// Emit `token` from `state`: the score change (partial credit gained or taken back, plus
    /// any phrase completed) and the next state.
    pub fn step(&self, state: GraphState, token: usize) -> (f64, GraphState) {
        let mut n = state;
        let next = loop {
            if let Some(c) = self.child(n, token) {
                break c;
            }
            if n == ROOT {
                break ROOT;
            }
            n = self.nodes[n as usize].fail;
        };
        let from = &self.nodes[state as usize];
        let to = &self.nodes[next as usize];
        (to.acc - from.acc + to.output, next)
    }

    /// At the end of the utterance: the partial credit taken back.
    pub fn finish(&self, state: GraphState) -> f64 {
        -self.nodes[state as usize].acc
    }

    /// Tokens that continue a phrase from `state` (including starting one anew).
    pub fn continuations(&self, state: GraphState) -> impl Iterator<Item = usize> + '_ {
        let here = self.nodes[state as usize].children.iter();
        let root = if state == ROOT {
            [].iter()
        } else {
            self.nodes[ROOT as usize].children.iter()
        };
        here.chain(root).map(|&(t, _)| t)
    }
}

/// pyctcdecode's `HotwordScorer`, for the pyctcdecode-compatible mode: every word of the text
/// that is one of the phrases' words earns `weight` (word order and phrases ignored); a partial
/// word that is a prefix of one earns `weight × len(partial) / len(shortest such word)`.
#[derive(Clone, Debug, Default)]
pub struct UnigramHotwords {
    /// Lower-case words, sorted, deduplicated.
    words: Vec<String>,
    weight: f64,
}

impl UnigramHotwords {
    pub fn new(hotwords: &[Hotword], weight: f64) -> Self {
        let mut words: Vec<String> = hotwords
            .iter()
            .flat_map(|h| h.words.iter().map(|w| w.to_lowercase()))
            .collect();
        words.sort();
        words.dedup();
        UnigramHotwords { words, weight }
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether a completed (lower-case) word is a hotword.
    pub fn is_hotword(&self, word: &str) -> bool {
        self.words
            .binary_search_by(|w| w.as_str().cmp(word))
            .is_ok()
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// Credit of a (lower-case) partial word, `None` when it starts no hotword.
    pub fn partial(&self, partial: &str) -> Option<f64> {
        let from = self.words.partition_point(|w| w.as_str() < partial);
        let shortest = self.words[from..]
            .iter()
            .take_while(|w| w.starts_with(partial))
            .map(|w| w.chars().count())
            .min()?;
        Some(self.weight * partial.chars().count() as f64 / shortest as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctc::base_960h;

    fn graph(text: &str, weight: f64) -> ContextGraph {
        let hw = parse_hotwords(text, "HW.txt").unwrap();
        ContextGraph::new(&hw, weight, &base_960h(), "HW.txt").unwrap()
    }

    fn run(g: &ContextGraph, tokens: &str) -> f64 {
        let v = base_960h();
        let mut s = g.start();
        let mut total = 0.0;
        for c in tokens.chars().chain(std::iter::once('|')) {
            let id = v.id(&c.to_string()).unwrap();
            let (d, n) = g.step(s, id);
            total += d;
            s = n;
        }
        total + g.finish(s)
    }

    #[test]
    fn file_format() {
        let hw = parse_hotwords("bugs bunny :2.5\n# c\n\n  elmer   fudd  \n", "HW.txt").unwrap();
        assert_eq!(hw.len(), 2);
        assert_eq!(hw[0].words, ["bugs", "bunny"]);
        assert_eq!(hw[0].weight, Some(2.5));
        assert_eq!(hw[1].weight, None);
        let e = parse_hotwords("# only a comment\n\n", "HW.txt").unwrap_err();
        assert!(e.to_string().starts_with("HW.txt: "), "{e}");
        let e = parse_hotwords("a :x\n", "HW.txt").unwrap_err().to_string();
        assert!(e.starts_with("HW.txt:1: "), "{e}");
    }

    #[test]
    fn completed_phrases_keep_credit_partial_ones_lose_it() {
        let g = graph("bugs bunny", 8.0);
        // Completed: two words, 8 each.
        assert!((run(&g, "BUGS|BUNNY") - 16.0).abs() < 1e-9);
        // Partial: nothing left.
        assert!(run(&g, "BUGS|BUN").abs() < 1e-9);
        assert!(run(&g, "BUGS|BOB").abs() < 1e-9);
        // Word order is enforced.
        assert!(run(&g, "BUNNY|BUGS").abs() < 1e-9);
        // A failed start followed by a real match (Aho-Corasick fail links).
        assert!((run(&g, "BU|BUGS|BUNNY|X") - 16.0).abs() < 1e-9);
        // Only whole words count.
        assert!(run(&g, "BUGSY|BUNNY").abs() < 1e-9);
        assert!(run(&g, "XBUGS|BUNNY").abs() < 1e-9);
        // Twice.
        assert!((run(&g, "BUGS|BUNNY|BUGS|BUNNY") - 32.0).abs() < 1e-9);
    }

    #[test]
    fn suffix_phrases_and_continuations() {
        let g = graph("a b\nb :4", 3.0);
        // "b" completes at the end of "a b" through the output chain, and "a b" too.
        assert!((run(&g, "A|B") - 10.0).abs() < 1e-9);
        assert!((run(&g, "B") - 4.0).abs() < 1e-9);
        assert!(run(&g, "A").abs() < 1e-9);
        let v = base_960h();
        let id = |t: &str| v.id(t).unwrap();
        let mut c: Vec<usize> = g.continuations(g.start()).collect();
        c.sort();
        c.dedup();
        let mut want = vec![id("A"), id("B"), id("|")];
        want.sort();
        assert_eq!(c, want);
    }

    #[test]
    fn unigram_scorer_is_pyctcdecodes() {
        let hw = parse_hotwords("bugs bunny\nbun", "HW.txt").unwrap();
        let s = UnigramHotwords::new(&hw, 10.0);
        assert!(s.is_hotword("bunny") && s.is_hotword("bun") && !s.is_hotword("bu"));
        assert_eq!(s.partial("bu"), Some(10.0 * 2.0 / 3.0));
        assert_eq!(s.partial("bug"), Some(10.0 * 3.0 / 4.0));
        assert_eq!(s.partial("x"), None);
    }
}
