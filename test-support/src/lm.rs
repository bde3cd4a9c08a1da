//! A large synthetic n-gram LM in ARPA text, for the LM loading budget test and the beam search
//! benchmark: `unigrams` 4-5 letter words (spellable with any Latin-letter CTC vocabulary) with
//! back-offs, plus `<s>`, `</s>`, `<unk>`, and `bigrams` bigrams.

/// The `i`-th word: base-26 letters, 4 of them, a fifth from 456 976 on.
pub fn word(mut i: u32) -> String {
    let mut w = String::new();
    for _ in 0..4 {
        w.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
    }
    if i > 0 {
        w.push((b'a' + (i % 26) as u8) as char);
    }
    w
}

/// The ARPA text (about 4.7 MB for 200 000 unigrams and 20 000 bigrams).
pub fn synthetic_bigram_arpa(unigrams: u32, bigrams: u32) -> String {
    let mut text = format!(
        "\\data\\\nngram 1={}\nngram 2={bigrams}\n\n\\1-grams:\n",
        unigrams + 3
    );
    text.push_str("-1.5\t<s>\t-0.3\n-1.2\t</s>\n-5.0\t<unk>\n");
    for i in 0..unigrams {
        text.push_str(&format!(
            "-{}.{:04}\t{}\t-0.{:03}\n",
            3 + i % 4,
            i % 9973,
            word(i),
            i % 997
        ));
    }
    text.push_str("\n\\2-grams:\n");
    for i in 0..bigrams {
        text.push_str(&format!(
            "-0.{:04}\t{} {}\n",
            i % 9973,
            word(i * 7 % unigrams.max(1)),
            word(i % unigrams.max(1))
        ));
    }
    text.push_str("\n\\end\\\n");
    text
}

/// pyctcdecode's `TEST_LOGITS` (its own test suite): "bugs" and "bunny" mixed 0.49 / 0.51, a
/// space, then a clear "bunny". Per frame, `(label, probability)`; `""` is the CTC blank.
pub const BUGS_BUNNY_FRAMES: [&[(&str, f64)]; 13] = [
    &[("b", 1.0)],
    &[("u", 1.0)],
    &[("g", 0.49), ("n", 0.51)],
    &[("s", 0.49), ("", 0.51)],
    &[("", 0.49), ("n", 0.51)],
    &[("", 0.49), ("y", 0.51)],
    &[(" ", 1.0)],
    &[("b", 1.0)],
    &[("u", 1.0)],
    &[("n", 1.0)],
    &[("", 1.0)],
    &[("n", 1.0)],
    &[("y", 1.0)],
];
