//! Estimating an n-gram language model from text: interpolated modified Kneser-Ney smoothing
//! (Chen and Goodman 1998), as KenLM's `lmplz` does it, written as an ARPA file.
//!
//! - Each line of the corpus is a sentence, padded with `<s>` and `</s>`; words are split on
//!   whitespace and kept as written.
//! - The highest order uses raw counts; a lower-order n-gram uses its *continuation* count (the
//!   number of distinct words seen before it), except n-grams that start with `<s>`, which
//!   nothing can precede (raw counts).
//! - Each order has three discounts, for n-grams seen once, twice, and three or more times:
//!   `D_k = k - (k+1) Y t_{k+1} / t_k` with `Y = t_1 / (t_1 + 2 t_2)` and `t_k` the number of
//!   n-grams with (adjusted) count k. When a small corpus makes them undefined or out of range,
//!   lmplz's `--discount_fallback` values (0.5, 1, 1.5) are used and reported.
//! - `p(w | h) = (a(hw) - D(a(hw))) / Σ_x a(hx) + γ(h) p(w | h')`, with
//!   `γ(h) = (D_1 N_1(h·) + D_2 N_2(h·) + D_3 N_3+(h·)) / Σ_x a(hx)` and the unigrams
//!   interpolated with the uniform distribution over the vocabulary (`<unk>` and `</s>`
//!   included, `<s>` never predicted). The ARPA file holds these interpolated probabilities and
//!   `γ` as each context's backoff, so every context's distribution sums to one.

use std::collections::HashMap;
use std::fmt::Write;

/// `<s>` and `</s>` are word ids 0 and 1 (`<unk>` is 2).
const BOS: u32 = 0;
const EOS: u32 = 1;

/// lmplz's `--discount_fallback` discounts for counts 1, 2 and 3+.
pub const FALLBACK_DISCOUNTS: [f64; 3] = [0.5, 1.0, 1.5];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error("order must be between 1 and 6, got {0}")]
    Order(usize),
    #[error("the corpus has no words")]
    Empty,
}

/// What was estimated, for reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BuildSummary {
    pub order: usize,
    pub sentences: usize,
    pub tokens: usize,
    /// Vocabulary, with `<s>`, `</s>` and `<unk>`.
    pub vocabulary: usize,
    /// n-grams per order.
    pub ngrams: Vec<usize>,
    /// Discounts (count 1, 2, 3+) per order.
    pub discounts: Vec<[f64; 3]>,
    /// Orders whose discounts fell back to [`FALLBACK_DISCOUNTS`] (small corpora).
    pub fallback_orders: Vec<usize>,
}

/// Estimate an order-`order` model from `corpus` (one sentence per line) and return the ARPA
/// text and a summary.
pub fn build_arpa(corpus: &str, order: usize) -> Result<(String, BuildSummary), BuildError> {
    if !(1..=6).contains(&order) {
        return Err(BuildError::Order(order));
    }
    let mut words: Vec<String> = vec!["<s>".into(), "</s>".into(), "<unk>".into()];
    let mut ids: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    // Raw counts of every n-gram of every order, keyed by word ids.
    let mut raw: Vec<HashMap<Vec<u32>, u64>> = vec![HashMap::new(); order];
    let (mut sentences, mut tokens) = (0, 0);
    for line in corpus.lines() {
        let mut s = vec![BOS];
        for w in line.split_whitespace() {
            let next = ids.len() as u32;
            let id = *ids.entry(w.to_string()).or_insert_with(|| {
                words.push(w.to_string());
                next
            });
            s.push(id);
        }
        if s.len() == 1 {
            continue;
        }
        s.push(EOS);
        sentences += 1;
        tokens += s.len() - 2;
        for n in 1..=order {
            for g in s.windows(n) {
                // `<s>` is a context, never a word to predict: the unigram is kept only so that
                // it exists as a context.
                *raw[n - 1].entry(g.to_vec()).or_default() += 1;
            }
        }
    }
    if sentences == 0 {
        return Err(BuildError::Empty);
    }
    // Adjusted counts: continuation counts below the highest order, except after <s>.
    let mut adjusted: Vec<HashMap<Vec<u32>, u64>> = vec![HashMap::new(); order];
    adjusted[order - 1] = raw[order - 1].clone();
    for n in (1..order).rev() {
        let mut cont: HashMap<Vec<u32>, u64> = HashMap::new();
        for g in raw[n].keys() {
            *cont.entry(g[1..].to_vec()).or_default() += 1;
        }
        for (g, &c) in &raw[n - 1] {
            let a = if g[0] == BOS {
                c
            } else {
                cont.get(g).copied().unwrap_or(0)
            };
            if a > 0 {
                adjusted[n - 1].insert(g.clone(), a);
            }
        }
    }
    // <s> alone is never predicted.
    adjusted[0].remove(&vec![BOS]);

    let mut discounts = Vec::with_capacity(order);
    let mut fallback_orders = Vec::new();
    for (n, counts) in adjusted.iter().enumerate() {
        let mut t = [0f64; 5];
        for &a in counts.values() {
            if (1..=4).contains(&a) {
                t[a as usize] += 1.0;
            }
        }
        let y = t[1] / (t[1] + 2.0 * t[2]);
        let d: [f64; 3] = std::array::from_fn(|i| {
            let k = (i + 1) as f64;
            k - (k + 1.0) * y * t[i + 2] / t[i + 1]
        });
        // lmplz's range: 0 <= D_k <= k.
        let valid = d
            .iter()
            .enumerate()
            .all(|(i, &x)| x.is_finite() && (0.0..=(i + 1) as f64).contains(&x));
        if valid {
            discounts.push(d);
        } else {
            fallback_orders.push(n + 1);
            discounts.push(FALLBACK_DISCOUNTS);
        }
    }
    let discount = |n: usize, a: u64| discounts[n][(a.min(3) - 1) as usize];

    // Per context: the sum of adjusted counts and gamma.
    let mut gamma: Vec<HashMap<Vec<u32>, f64>> = vec![HashMap::new(); order];
    let mut totals: Vec<HashMap<Vec<u32>, f64>> = vec![HashMap::new(); order];
    for (n, counts) in adjusted.iter().enumerate() {
        let mut mass: HashMap<Vec<u32>, f64> = HashMap::new();
        for (g, &a) in counts {
            let h = g[..g.len() - 1].to_vec();
            *totals[n].entry(h.clone()).or_default() += a as f64;
            *mass.entry(h).or_default() += discount(n, a);
        }
        for (h, m) in mass {
            gamma[n].insert(h.clone(), m / totals[n][&h]);
        }
    }

    // Interpolated probabilities, lowest order first.
    let vocab_size = (words.len() - 1) as f64; // every word but <s>
    let mut prob: Vec<HashMap<Vec<u32>, f64>> = vec![HashMap::new(); order];
    for n in 0..order {
        let mut p_n = HashMap::with_capacity(adjusted[n].len());
        for (g, &a) in &adjusted[n] {
            let h = &g[..g.len() - 1];
            let u = (a as f64 - discount(n, a)) / totals[n][h];
            let lower = if n == 0 {
                1.0 / vocab_size
            } else {
                lower_prob(&prob, &gamma, &g[1..], vocab_size)
            };
            p_n.insert(g.clone(), u + gamma[n][h] * lower);
        }
        if n == 0 {
            // Words never seen (and <unk>) get the uniform share of the unigram's gamma.
            for id in 1..words.len() as u32 {
                p_n.entry(vec![id])
                    .or_insert_with(|| gamma[0][&Vec::new()] / vocab_size);
            }
        }
        prob[n] = p_n;
    }

    // ARPA text: every order's n-grams, sorted for a stable file; <s> with -99 and a backoff.
    let mut out = String::new();
    let mut rows: Vec<Vec<(String, f64, Option<f64>)>> = Vec::with_capacity(order);
    for n in 0..order {
        let mut grams: Vec<&[u32]> = prob[n].keys().map(Vec::as_slice).collect();
        if n == 0 {
            grams.push(&BOS_GRAM);
        }
        grams.sort_by_key(|g| {
            g.iter()
                .map(|&i| words[i as usize].as_str())
                .collect::<Vec<_>>()
        });
        let mut r = Vec::with_capacity(grams.len());
        for g in grams {
            let text = g
                .iter()
                .map(|&i| words[i as usize].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let p = if g == BOS_GRAM { 0.0 } else { prob[n][g] };
            let backoff = if n + 1 < order {
                gamma[n + 1].get(g).copied()
            } else {
                None
            };
            r.push((text, p, backoff));
        }
        rows.push(r);
    }
    out.push_str("\\data\\\n");
    for (n, r) in rows.iter().enumerate() {
        let _ = writeln!(out, "ngram {}={}", n + 1, r.len());
    }
    for (n, r) in rows.iter().enumerate() {
        let _ = write!(out, "\n\\{}-grams:\n", n + 1);
        for (text, p, backoff) in r {
            let lp = if *p > 0.0 { p.log10() } else { -99.0 };
            match backoff {
                Some(b) => {
                    let _ = writeln!(out, "{lp:.7}\t{text}\t{:.7}", b.log10());
                }
                None => {
                    let _ = writeln!(out, "{lp:.7}\t{text}");
                }
            }
        }
    }
    out.push_str("\n\\end\\\n");
    let summary = BuildSummary {
        order,
        sentences,
        tokens,
        vocabulary: words.len(),
        ngrams: rows.iter().map(Vec::len).collect(),
        discounts,
        fallback_orders,
    };
    Ok((out, summary))
}

static BOS_GRAM: [u32; 1] = [BOS];

/// `p(w | h)` for `g = h w` of any order below the one being computed: the stored interpolated
/// probability when `g` was seen, else `gamma(h) p(w | h')` (1 when `h` was never a context).
fn lower_prob(
    prob: &[HashMap<Vec<u32>, f64>],
    gamma: &[HashMap<Vec<u32>, f64>],
    g: &[u32],
    vocab_size: f64,
) -> f64 {
    let n = g.len() - 1;
    if let Some(&p) = prob[n].get(g) {
        return p;
    }
    if n == 0 {
        // Seen in no position a unigram could take: only <unk> and never-seen words.
        return gamma[0].get(&Vec::new()).copied().unwrap_or(0.0) / vocab_size;
    }
    let h = &g[..n];
    let b = gamma[n].get(h).copied().unwrap_or(1.0);
    b * lower_prob(prob, gamma, &g[1..], vocab_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::{NgramLm, WordId};

    const CORPUS: &str = "go up\ngo down\ngo left\ngo right\nstop\nturn on the light\n\
        turn off the light\nturn on the fan\nturn off the fan\ngo up go up\nstop stop\n\
        the light is on\nthe fan is off\nplease stop\nplease go up\n";

    /// Every context's distribution over the vocabulary sums to one, read back through the
    /// ARPA reader's backoff scoring.
    #[test]
    fn each_context_sums_to_one() {
        for order in 1..=4 {
            let (arpa, summary) = build_arpa(CORPUS, order).unwrap();
            let lm = NgramLm::parse(&arpa, "built.arpa").unwrap();
            assert_eq!(lm.order(), order);
            assert_eq!(lm.counts(), summary.ngrams);
            let vocab: Vec<WordId> = (0..lm.vocab_len())
                .map(|i| i as WordId)
                .filter(|&i| lm.word(i) != "<s>")
                .collect();
            // Contexts: <s> alone, every seen (n-1)-gram, and an unseen one.
            let mut contexts: Vec<Vec<&str>> = vec![vec![], vec!["<s>"], vec!["zebra"]];
            for line in arpa.lines().filter(|l| l.split('\t').count() == 3) {
                let words: Vec<&str> = line.split('\t').nth(1).unwrap().split(' ').collect();
                if words.len() < order {
                    contexts.push(words);
                }
            }
            for h in &contexts {
                let ids: Vec<_> = h.iter().map(|w| lm.index(w)).collect();
                let sum: f64 = vocab
                    .iter()
                    .map(|&w| 10f64.powf(f64::from(lm.log10_prob(&ids, w))))
                    .sum();
                assert!(
                    (sum - 1.0).abs() < 1e-4,
                    "order {order}, context {h:?}: {sum}"
                );
            }
        }
    }

    /// The formulas by hand for a corpus small enough to follow: "a b", "a c", "a b".
    #[test]
    fn probabilities_follow_modified_kneser_ney() {
        let (arpa, s) = build_arpa("a b\na c\na b\n", 2).unwrap();
        // Unigram continuation counts a:1 (<s>), b:1, c:1, </s>:2 (b, c): t1 = 3, t2 = 1,
        // t3 = 0, so D_2 and D_3 are undefined and the order falls back to 0.5, 1, 1.5.
        assert_eq!(s.fallback_orders, vec![1]);
        assert_eq!(s.discounts[0], FALLBACK_DISCOUNTS);
        // Bigram raw counts: <s> a:3, a b:2, b </s>:2, a c:1, c </s>:1, so t1 = 2, t2 = 2,
        // t3 = 1: Y = 1/3, D1 = 1 - 2Y = 1/3, D2 = 2 - 3Y/2 = 1.5, D3 = 3 - 0 = 3.
        let d = s.discounts[1];
        for (got, want) in d.iter().zip([1.0 / 3.0, 1.5, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{d:?}");
        }
        let lm = NgramLm::parse(&arpa, "t.arpa").unwrap();
        let p = |h: &[&str], w: &str| {
            let ids: Vec<_> = h.iter().map(|x| lm.index(x)).collect();
            10f64.powf(f64::from(lm.log10_prob(&ids, lm.index(w))))
        };
        // Unigrams: total 5, u(a) = (1 - 0.5)/5, u(</s>) = (2 - 1)/5,
        // gamma = (3 * 0.5 + 1 * 1)/5 = 0.5 spread over |V| = 5 (</s>, <unk>, a, b, c).
        let uniform = 0.5 / 5.0;
        assert!((p(&[], "a") - (0.1 + uniform)).abs() < 1e-6);
        assert!((p(&[], "</s>") - (0.2 + uniform)).abs() < 1e-6);
        assert!((p(&[], "<unk>") - uniform).abs() < 1e-6);
        // After "a": b twice, c once; total 3, u(b|a) = (2 - D2)/3, u(c|a) = (1 - D1)/3,
        // gamma(a) = (D2 + D1)/3.
        let g = (d[1] + d[0]) / 3.0;
        assert!((p(&["a"], "b") - ((2.0 - d[1]) / 3.0 + g * p(&[], "b"))).abs() < 1e-6);
        assert!((p(&["a"], "c") - ((1.0 - d[0]) / 3.0 + g * p(&[], "c"))).abs() < 1e-6);
        assert!((p(&["a"], "</s>") - g * p(&[], "</s>")).abs() < 1e-6);
        // "<s> a" has count 3 = D3: all of p(a|<s>) comes from the unigram.
        assert!((p(&["<s>"], "a") - p(&[], "a")).abs() < 1e-6);
    }

    #[test]
    fn bad_input() {
        assert_eq!(build_arpa("a b", 0).unwrap_err(), BuildError::Order(0));
        assert_eq!(build_arpa("\n  \n", 3).unwrap_err(), BuildError::Empty);
    }
}
