//! Lexicon-constrained CTC decoding: the best frame path whose transcript is a sequence of words
//! from a list, as Vosk's grammar mode restricts its output.
//!
//! A word list (`--words WORDS.txt`: words separated by spaces or newlines, `#` comments) is
//! spelled in the model's vocabulary and compiled into a character trie. Decoding is a Viterbi
//! search over the CTC topology of "any sequence of these words": in each trie node the decoder is
//! either still emitting the node's token or in blank frames after it; from there it may take a
//! child's token, or, at the end of a word, the word delimiter or the first token of any word (an
//! implicit word boundary: small models often skip the delimiter). Repeated tokens need a blank
//! between them, as CTC collapsing demands. The result is one best alignment, so word times and
//! confidences come out exactly as for greedy decoding ([`crate::ctc::segment_words`]).
//!
//! Per frame the work is the number of trie nodes times their arcs (a few hundred operations for
//! a command vocabulary); memory is one back pointer per frame and state.

use crate::ctc::{log_softmax_in_place, segment_words, TokenSpan, Transcript, Vocabulary};
use crate::grammar::{read_text_file, spell, GrammarError};

const NONE: u32 = u32::MAX;

/// The compiled word list.
#[derive(Clone, Debug)]
pub struct Lexicon {
    words: Vec<String>,
    /// Trie nodes; 0 is the root. The delimiter state, if any, is `nodes.len()`.
    nodes: Vec<Node>,
    blank: usize,
    delimiter: Option<usize>,
    /// Per state: `(token, destination state, implicit word boundary)`.
    arcs: Vec<Vec<(usize, u32, bool)>>,
}

#[derive(Clone, Debug)]
struct Node {
    /// The token on the arc into this node (`usize::MAX` for the root).
    token: usize,
    children: Vec<(usize, u32)>,
    /// Index into `words` when a word ends here.
    word: Option<u32>,
}

impl Lexicon {
    /// Read and compile a word list.
    pub fn load(path: &std::path::Path, vocab: &Vocabulary) -> Result<Self, GrammarError> {
        let text = read_text_file(path)?;
        Self::parse(&text, &path.display().to_string(), vocab)
    }

    /// Compile the text of a word list; `path` names it in errors.
    pub fn parse(text: &str, path: &str, vocab: &Vocabulary) -> Result<Self, GrammarError> {
        let mut lex = Lexicon {
            words: Vec::new(),
            nodes: vec![Node {
                token: usize::MAX,
                children: Vec::new(),
                word: None,
            }],
            blank: vocab.blank_id(),
            delimiter: vocab.word_delimiter_id(),
            arcs: Vec::new(),
        };
        for (i, raw) in text.lines().enumerate() {
            let content = raw.split('#').next().unwrap_or_default();
            for word in content.split_whitespace() {
                let ids = spell(word, vocab).map_err(|what| GrammarError::WordOutOfVocabulary {
                    path: path.into(),
                    line: i + 1,
                    word: word.into(),
                    what,
                })?;
                lex.insert(&ids, vocab);
            }
        }
        if lex.words.is_empty() {
            return Err(GrammarError::NoWords { path: path.into() });
        }
        lex.arcs = lex.compile_arcs();
        Ok(lex)
    }

    fn insert(&mut self, ids: &[usize], vocab: &Vocabulary) {
        let mut n = 0usize;
        for &id in ids {
            n = match self.nodes[n].children.iter().find(|&&(t, _)| t == id) {
                Some(&(_, child)) => child as usize,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node {
                        token: id,
                        children: Vec::new(),
                        word: None,
                    });
                    self.nodes[n].children.push((id, child as u32));
                    child
                }
            };
        }
        if self.nodes[n].word.is_none() {
            let text: String = ids.iter().filter_map(|&id| vocab.token(id)).collect();
            self.nodes[n].word = Some(self.words.len() as u32);
            self.words.push(text);
        }
    }

    /// The words, as the vocabulary spells them, in the order first listed.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    fn delimiter_state(&self) -> Option<u32> {
        self.delimiter.map(|_| self.nodes.len() as u32)
    }

    fn states(&self) -> usize {
        self.nodes.len() + usize::from(self.delimiter.is_some())
    }

    fn token_of(&self, state: usize) -> usize {
        match self.nodes.get(state) {
            Some(n) => n.token,
            None => self.delimiter.expect("the delimiter state exists"),
        }
    }

    fn is_final(&self, state: usize) -> bool {
        match self.nodes.get(state) {
            Some(n) => state == 0 || n.word.is_some(),
            None => true,
        }
    }

    fn compile_arcs(&self) -> Vec<Vec<(usize, u32, bool)>> {
        let root = &self.nodes[0].children;
        (0..self.states())
            .map(|s| {
                let mut arcs = Vec::new();
                match self.nodes.get(s) {
                    Some(n) => {
                        arcs.extend(n.children.iter().map(|&(t, d)| (t, d, false)));
                        if s != 0 && n.word.is_some() {
                            // Next word: after the delimiter, or directly (implicit boundary).
                            if let (Some(d), Some(ds)) = (self.delimiter, self.delimiter_state()) {
                                arcs.push((d, ds, false));
                                arcs.extend(root.iter().map(|&(t, c)| (t, c, true)));
                            }
                        }
                    }
                    None => arcs.extend(root.iter().map(|&(t, c)| (t, c, false))),
                }
                arcs
            })
            .collect()
    }

    /// Decode row-major logits `[frames, vocab.len()]` (a trailing partial row is ignored) into
    /// the best transcript made of the listed words; times and confidences as
    /// [`crate::ctc::greedy_decode`] gives them. All-blank audio gives an empty transcript.
    pub fn decode(
        &self,
        logits: &[f32],
        vocab: &Vocabulary,
        seconds_per_frame: f64,
        time_offset: f64,
    ) -> Transcript {
        let v = vocab.len();
        if v == 0 {
            return Transcript::default();
        }
        let frames = logits.len() / v;
        let states = self.states();
        // Phase index: 2·s = emitting s's token, 2·s + 1 = blank after it (the root only blank).
        let n = 2 * states;
        let mut score = vec![f32::NEG_INFINITY; n];
        score[1] = 0.0;
        let mut next = vec![f32::NEG_INFINITY; n];
        // Back pointer per frame and phase: the previous phase, with the top bit set when the
        // step crossed an implicit word boundary.
        let mut back = vec![NONE; frames * n];
        let mut lp = vec![0f32; v];
        const BOUNDARY: u32 = 1 << 31;
        for t in 0..frames {
            lp.copy_from_slice(&logits[t * v..(t + 1) * v]);
            log_softmax_in_place(&mut lp);
            next.fill(f32::NEG_INFINITY);
            let bp = &mut back[t * n..(t + 1) * n];
            let mut relax = |to: usize, value: f32, from: usize, boundary: bool| {
                if value > next[to] {
                    next[to] = value;
                    bp[to] = from as u32 | if boundary { BOUNDARY } else { 0 };
                }
            };
            for s in 0..states {
                let tok = self.token_of(s);
                let (e, b) = (2 * s, 2 * s + 1);
                if score[e].is_finite() {
                    relax(e, score[e] + lp[tok], e, false);
                    relax(b, score[e] + lp[self.blank], e, false);
                    for &(c, d, boundary) in &self.arcs[s] {
                        if c != tok {
                            relax(2 * d as usize, score[e] + lp[c], e, boundary);
                        }
                    }
                }
                if score[b].is_finite() {
                    relax(b, score[b] + lp[self.blank], b, false);
                    for &(c, d, boundary) in &self.arcs[s] {
                        relax(2 * d as usize, score[b] + lp[c], b, boundary);
                    }
                }
            }
            std::mem::swap(&mut score, &mut next);
        }
        let Some(mut phase) = (0..n)
            .filter(|&p| self.is_final(p / 2) && score[p].is_finite())
            .max_by(|&a, &b| score[a].total_cmp(&score[b]))
        else {
            return Transcript::default();
        };
        // Back-track the phase of every frame.
        let mut path = vec![(0usize, false); frames];
        for t in (0..frames).rev() {
            let bp = back[t * n + phase];
            path[t] = (phase, bp & BOUNDARY != 0);
            phase = (bp & !BOUNDARY) as usize;
        }
        let mut spans: Vec<TokenSpan> = Vec::new();
        let mut prev_phase = 1usize;
        for (t, &(p, boundary)) in path.iter().enumerate() {
            if p % 2 == 0 {
                let tok = self.token_of(p / 2);
                let row = &logits[t * v..(t + 1) * v];
                lp.copy_from_slice(row);
                log_softmax_in_place(&mut lp);
                let prob = f64::from(lp[tok].exp());
                match spans.last_mut() {
                    Some(last) if prev_phase == p => {
                        last.end_frame = t + 1;
                        last.emitting_frames += 1;
                        last.prob_sum += prob;
                    }
                    _ => {
                        if boundary {
                            if let Some(d) = self.delimiter {
                                spans.push(TokenSpan {
                                    id: d,
                                    start_frame: t,
                                    end_frame: t,
                                    emitting_frames: 0,
                                    prob_sum: 0.0,
                                });
                            }
                        }
                        spans.push(TokenSpan {
                            id: tok,
                            start_frame: t,
                            end_frame: t + 1,
                            emitting_frames: 1,
                            prob_sum: prob,
                        });
                    }
                }
            }
            prev_phase = p;
        }
        Transcript::from_words(segment_words(&spans, vocab, seconds_per_frame, time_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctc::{base_960h, greedy_decode};

    /// Logits with `high` for the given token at each frame (by token text; "" is blank).
    fn frames(vocab: &Vocabulary, tokens: &[&str], high: f32) -> Vec<f32> {
        let mut out = vec![0f32; tokens.len() * vocab.len()];
        for (t, tok) in tokens.iter().enumerate() {
            let id = if tok.is_empty() {
                vocab.blank_id()
            } else {
                vocab.id(tok).unwrap()
            };
            out[t * vocab.len() + id] = high;
        }
        out
    }

    fn lexicon(words: &str) -> Lexicon {
        Lexicon::parse(words, "WORDS.txt", &base_960h()).unwrap()
    }

    #[test]
    fn a_misspelling_is_pulled_onto_the_nearest_listed_word() {
        let vocab = base_960h();
        // Greedy reads "TREE"; the lexicon has "three", not "tree".
        let x = frames(&vocab, &["T", "", "R", "E", "", "E", ""], 8.0);
        assert_eq!(greedy_decode(&x, &vocab, 0.02, 0.0).text, "TREE");
        let lex = lexicon("one two three # digits\nfour");
        let t = lex.decode(&x, &vocab, 0.02, 0.0);
        assert_eq!(t.text, "THREE");
        assert_eq!(t.words.len(), 1);
        assert!(t.words[0].confidence > 0.0 && t.words[0].confidence < 1.0);
    }

    #[test]
    fn words_follow_with_or_without_the_delimiter() {
        let vocab = base_960h();
        let lex = lexicon("go\nno left");
        let with = frames(&vocab, &["G", "O", "|", "L", "E", "F", "T"], 8.0);
        assert_eq!(lex.decode(&with, &vocab, 0.02, 0.0).text, "GO LEFT");
        let without = frames(&vocab, &["N", "O", "", "N", "O", ""], 8.0);
        let t = lex.decode(&without, &vocab, 0.02, 1.0);
        assert_eq!(t.text, "NO NO");
        assert_eq!(t.words[1].start, 1.0 + 3.0 * 0.02);
    }

    #[test]
    fn a_repeated_letter_needs_a_blank_between() {
        let vocab = base_960h();
        // "EE" without a blank is one E: "THRE" is not a word, so the best listed word wins
        // only by paying for the second E somewhere.
        let lex = lexicon("three");
        let x = frames(&vocab, &["T", "H", "R", "E", "E", ""], 8.0);
        let t = lex.decode(&x, &vocab, 0.02, 0.0);
        assert_eq!(t.text, "THREE");
    }

    #[test]
    fn silence_decodes_to_nothing() {
        let vocab = base_960h();
        let lex = lexicon("yes no");
        let x = frames(&vocab, &["", "", "", ""], 8.0);
        assert_eq!(lex.decode(&x, &vocab, 0.02, 0.0), Transcript::default());
        assert_eq!(lex.decode(&[], &vocab, 0.02, 0.0), Transcript::default());
    }

    #[test]
    fn bad_word_lists_are_named() {
        let vocab = base_960h();
        let e = Lexicon::parse("yes\nnö", "W.txt", &vocab)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("W.txt:2: "), "{e}");
        assert!(e.contains('ö'), "{e}");
        let e = Lexicon::parse("# nothing\n\n", "W.txt", &vocab).unwrap_err();
        assert!(
            matches!(&e, GrammarError::NoWords { path } if path == "W.txt"),
            "{e}"
        );
        assert_eq!(lexicon("Yes yes YES no").words(), ["YES", "NO"]);
    }
}
