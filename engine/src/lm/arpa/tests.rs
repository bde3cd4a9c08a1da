//! KenLM's `lm/model_test.cc` expectations on its `lm/test.arpa` (copied to
//! `engine/tests/data/lm/`), and the parser's behaviour on damaged files.

// The numbers are KenLM's, copied from test.arpa and model_test.cc (0.30103 is its back-off, not
// log10(2); 3.141592 and 2.718281 are probabilities it chose), so they stay as written.
#![allow(clippy::approx_constant)]

use super::*;

const TEST_ARPA: &str = include_str!("../../../tests/data/lm/kenlm_test.arpa");
const TEST_NOUNK_ARPA: &str = include_str!("../../../tests/data/lm/kenlm_test_nounk.arpa");

fn model() -> NgramLm {
    NgramLm::parse(TEST_ARPA, "test.arpa").unwrap()
}

/// Score `steps` one after the other from `state`, each `(word, expected log10 p)`, as KenLM's
/// `AppendTest` does; returns the final state.
fn append(lm: &NgramLm, mut state: LmState, steps: &[(&str, f32)]) -> LmState {
    for &(word, want) in steps {
        let (got, next) = lm.score(&state, lm.index(word));
        assert!(
            (got - want).abs() < 1e-4,
            "{word:?} after {:?}: log10 p {got}, KenLM says {want}",
            state
                .words()
                .iter()
                .map(|&w| lm.word(w))
                .collect::<Vec<_>>()
        );
        state = next;
    }
    state
}

#[test]
fn header_and_special_words() {
    let lm = model();
    assert_eq!(lm.order(), 5);
    assert_eq!(lm.counts(), [37, 47, 11, 6, 4]);
    assert_eq!(lm.word(lm.unk()), "<unk>");
    assert_eq!(lm.word(lm.bos()), "<s>");
    assert_eq!(lm.word(lm.eos()), "</s>");
    assert!(lm.contains("looking") && !lm.contains("not_found") && !lm.contains("<unk>"));
    assert_eq!(lm.index("not_found"), lm.unk());
    assert!(lm.unigram_has_backoff(lm.index("a")));
    assert!(!lm.unigram_has_backoff(lm.index("foo")));
}

#[test]
fn kenlm_starters() {
    let lm = model();
    append(&lm, lm.begin_sentence(), &[("looking", -0.4846522)]);
    // , probability plus <s> backoff
    append(&lm, lm.begin_sentence(), &[(",", -1.383514 + -0.4149733)]);
    // <unk> probability plus <s> backoff
    append(
        &lm,
        lm.begin_sentence(),
        &[("this_is_not_found", -1.995635 + -0.4149733)],
    );
}

#[test]
fn kenlm_continuation() {
    let lm = model();
    let preserve = append(
        &lm,
        lm.begin_sentence(),
        &[
            ("looking", -0.484652),
            ("on", -0.348837),
            ("a", -0.0155266),
            ("little", -0.00306122),
        ],
    );
    append(
        &lm,
        preserve.clone(),
        &[
            ("the", -4.04005),
            ("biarritz", -1.9889),
            ("not_found", -2.29666),
            ("more", -1.20632 - 20.0),
            (".", -0.51363),
            ("</s>", -0.0191651),
        ],
    );
    append(
        &lm,
        preserve,
        &[("more", -0.00181395), ("loin", -0.0432557)],
    );
}

#[test]
fn kenlm_blanks() {
    // N-grams whose prefixes are missing from the file ("also would consider higher looking"
    // without "would consider"): KenLM fills in blanks; plain back-off scoring agrees.
    let lm = model();
    let preserve = append(
        &lm,
        lm.null_context(),
        &[("also", -1.687872), ("would", -2.0), ("consider", -3.0)],
    );
    append(
        &lm,
        preserve.clone(),
        &[("higher", -4.0), ("looking", -5.0)],
    );
    append(&lm, preserve, &[("not_found", -1.995635 - 7.0 - 0.30103)]);
    let higher_looking = append(
        &lm,
        lm.null_context(),
        &[("higher", -1.509559), ("looking", -1.285941 - 0.30103)],
    );
    append(
        &lm,
        higher_looking.clone(),
        &[("not_found", -1.995635 - 0.4771212)],
    );
    append(&lm, higher_looking, &[("consider", -1.687872 - 0.4771212)]);
    append(
        &lm,
        lm.null_context(),
        &[
            ("would", -1.687872),
            ("consider", -1.687872 - 0.30103),
            ("higher", -1.509559 - 0.30103),
            ("looking", -1.285941 - 0.30103),
        ],
    );
}

#[test]
fn kenlm_unknowns() {
    let lm = model();
    let preserve = append(&lm, lm.null_context(), &[("not_found", -1.995635)]);
    append(
        &lm,
        preserve.clone(),
        &[("not_found2", -15.0), ("not_found3", -15.0 - 2.0)],
    );
    append(&lm, preserve, &[("however", -4.0), ("not_found3", -6.0)]);
}

#[test]
fn kenlm_minimal_state() {
    let lm = model();
    append(&lm, lm.null_context(), &[("baz", -6.535897)]);
    append(
        &lm,
        lm.null_context(),
        &[("foo", -3.141592), ("bar", -6.0), ("bar", -2.718281 + 3.0)],
    );
    append(
        &lm,
        lm.null_context(),
        &[("to", -1.687872), ("look", -0.2922095), ("a", -7.0)],
    );
}

#[test]
fn kenlm_stateless() {
    // model_test.cc's `Stateless`: word `w` of the sentence given its `provide` predecessors.
    let lm = model();
    let words = [
        "<s>",
        "looking",
        "on",
        "a",
        "little",
        "the",
        "biarritz",
        "not_found",
        "more",
        ".",
        "</s>",
    ];
    let ids: Vec<WordId> = words.iter().map(|w| lm.index(w)).collect();
    for (w, provide, want) in [
        (1usize, 1usize, -0.484652f32),
        (2, 3, -0.348837),
        (2, 2, -0.348837),
        (2, 1, -0.4638903),
        (3, 4, -0.0155266),
        (4, 5, -0.00306122),
        (5, 5, -4.04005),
        (5, 0, -1.687872),
        (6, 1, -1.9889),
        (7, 1, -2.29666),
        (7, 0, -1.995635),
    ] {
        // Context words before `<s>` (KenLM reads past the array there) do not exist.
        let got = lm.log10_prob(&ids[w.saturating_sub(provide)..w], ids[w]);
        assert!(
            (got - want).abs() < 1e-4,
            "{} given {provide} words: {got}, KenLM says {want}",
            words[w]
        );
    }
}

#[test]
fn missing_unk_scores_minus_100() {
    let lm = NgramLm::parse(TEST_NOUNK_ARPA, "test_nounk.arpa").unwrap();
    let (p, _) = lm.score(&lm.null_context(), lm.index("not_found"));
    assert_eq!(p, MISSING_WORD_LOG10);
    assert_eq!(lm.word(lm.unk()), "<unk>");
}

#[test]
fn words_match_case_insensitively() {
    let lm = model();
    assert_eq!(lm.index("LOOKING"), lm.index("looking"));
    assert_eq!(
        lm.sentence_log10(&["LOOKING", "On"], true, false),
        lm.sentence_log10(&["looking", "on"], true, false)
    );
    // An upper-case file matches lower-case queries too.
    let upper = NgramLm::parse(
        &TEST_ARPA
            .to_uppercase()
            .replace("\\DATA\\", "\\data\\")
            .replace("NGRAM", "ngram")
            .replace("-GRAMS:", "-grams:")
            .replace("\\END\\", "\\end\\"),
        "upper.arpa",
    )
    .unwrap();
    assert_eq!(upper.index("looking"), upper.index("LOOKING"));
    assert!(
        (upper.sentence_log10(&["looking", "on"], true, true)
            - lm.sentence_log10(&["looking", "on"], true, true))
        .abs()
            < 1e-6
    );
}

#[test]
fn spaces_work_as_separators_and_preamble_is_skipped() {
    let text = "written by a tool\n\n\\data\\\nngram 1=3\nngram  2 = 1\n\n\\1-grams:\n-1 <s> -0.5\n-0.5 a  -0.25\n-0.2 </s>\n\n\\2-grams:\n-0.1 <s> a\n\n\\end\\\n";
    let lm = NgramLm::parse(text, "t.arpa").unwrap();
    assert_eq!(lm.counts(), [4, 1]); // <unk> added
    assert!((lm.sentence_log10(&["a"], true, false) + 0.1).abs() < 1e-6);
    assert!((lm.sentence_log10(&["a", "a"], true, false) - (-0.1 - 0.25 - 0.5)).abs() < 1e-6);
}

fn parse_err(text: &str) -> String {
    NgramLm::parse(text, "bad.arpa").unwrap_err().to_string()
}

#[test]
fn malformed_files_name_line_and_reason() {
    let e = parse_err("hello\n");
    assert!(
        e.starts_with("bad.arpa:1: ") && e.contains("\\data\\"),
        "{e}"
    );
    let e = parse_err("\\data\\\nngram 1=2\n\n\\1-grams:\n-1 a\nx b\n\\end\\\n");
    assert!(e.starts_with("bad.arpa:6: bad probability \"x\""), "{e}");
    let e = parse_err(
        "\\data\\\nngram 1=1\nngram 2=1\n\\1-grams:\n-1 a\n\\2-grams:\n-1 a b\n\\end\\\n",
    );
    assert!(e.starts_with("bad.arpa:7: ") && e.contains("\"b\""), "{e}");
    let e = parse_err("\\data\\\nngram 1=2\n\\1-grams:\n-1 a\n\\end\\\n");
    assert!(
        e.starts_with("bad.arpa:5: ") && e.contains("1 entries"),
        "{e}"
    );
    let e = parse_err("\\data\\\nngram 1=1\n\\1-grams:\n-1 a\n");
    assert!(e.contains("without \\end\\") && e.contains(":4:"), "{e}");
    let e = parse_err("\\data\\\nngram 2=1\n");
    assert!(e.contains("out of order"), "{e}");
    let e = parse_err("\\data\\\nngram 1=1\n\\1-grams:\n-1 a -1 extra\n\\end\\\n");
    assert!(e.contains("1-gram line"), "{e}");
    let e = parse_err("\\data\\\nngram 1=1\n\\1-grams:\nNaN a\n\\end\\\n");
    assert!(e.contains("bad probability"), "{e}");
    let e = NgramLm::read(
        &b"\\data\\\nngram 1=1\n\\1-grams:\n-1 \xff\n"[..],
        "bin.arpa",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "bin.arpa:4: not UTF-8 text");
    let e = NgramLm::load(Path::new("/nonexistent/x.arpa"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/x.arpa: cannot read"), "{e}");
}

/// A small deterministic generator (no extra test dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let bytes = TEST_ARPA.as_bytes();
    // Every truncation: an error unless the cut only removed what follows `\end\`.
    let end = TEST_ARPA.find("\\end\\").unwrap() + "\\end\\".len();
    for cut in 0..bytes.len() {
        let r = NgramLm::read(&bytes[..cut], "cut.arpa");
        assert_eq!(r.is_ok(), cut >= end, "cut at {cut}: {:?}", r.err());
    }
    // Random byte edits, line deletions and duplications.
    let mut rng = Lcg(7);
    let lines: Vec<&str> = TEST_ARPA.lines().collect();
    let alphabet = b"\\-=.0123456789 \t\nabnrgm:<>s\xff";
    for _ in 0..3000 {
        let mut m = bytes.to_vec();
        for _ in 0..1 + rng.next() % 4 {
            let at = rng.next() % m.len();
            match rng.next() % 3 {
                0 => m[at] = alphabet[rng.next() % alphabet.len()],
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, alphabet[rng.next() % alphabet.len()]),
            }
        }
        let _ = NgramLm::read(&m[..], "mutated.arpa");
        let mut l = lines.clone();
        let at = rng.next() % l.len();
        if rng.next().is_multiple_of(2) {
            l.remove(at);
        } else {
            l.insert(at, lines[rng.next() % lines.len()]);
        }
        let text = l.join("\n");
        if let Err(e) = NgramLm::parse(&text, "lines.arpa") {
            assert!(e.to_string().starts_with("lines.arpa:"), "{e}");
        }
    }
}

/// The budget: a 4 MB, 200k-word ARPA loads in <= 300 ms and <= 64 MB. Run with
/// `cargo test -p w2v-engine --release --lib lm::arpa::tests::load_budget -- --ignored
/// --nocapture` (debug builds are several times slower).
#[test]
#[ignore]
fn load_budget() {
    let text = w2v_test_support::lm::synthetic_bigram_arpa(200_000, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.arpa");
    std::fs::write(&path, &text).unwrap();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    drop(text);
    let before = rss();
    let start = std::time::Instant::now();
    let lm = NgramLm::load(&path).unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let grown_mb = (rss().saturating_sub(before)) as f64 / 1024.0;
    let size_mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    println!(
        "{size_mb:.1} MB ARPA, {} words: {ms:.0} ms, RSS +{grown_mb:.1} MB",
        lm.vocab_len()
    );
    assert!(size_mb > 4.0);
    assert!(grown_mb <= 64.0, "{grown_mb} MB");
}
