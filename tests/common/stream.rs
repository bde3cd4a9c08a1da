//! Long command streams for `w2v listen`: real clips from `../shared/data` (speakers of the
//! default model's held-out *test* split, `tools/train-default-model/manifest/test.tsv`, so the
//! model never trained on them), separated by quiet background noise and louder noise bursts.
//! Shared by `tests/listen_accuracy.rs` and `benches/listen.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const RATE: u32 = 16000;

/// The voice-command grammar of the accuracy streams (issue #27): the ten Speech Commands words.
pub const COMMANDS: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];

/// Words the model was trained on that are not commands: the digits.
pub const DIGITS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// What a clip in a stream is, for scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// A phrase of the grammar: must be accepted as itself.
    Command,
    /// A word the model knows that is not a command (a digit): must be rejected.
    KnownOog,
    /// A real recording of a word the model never trained on: must be rejected.
    Unseen,
    /// An espeak-ng clip of a word the model never trained on (`tests/data/unseen-words/`).
    UnseenSynth,
    /// A background-noise clip with no speech: must fire nothing.
    Noise,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Command,
        Category::KnownOog,
        Category::Unseen,
        Category::UnseenSynth,
        Category::Noise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Command => "commands",
            Category::KnownOog => "known out-of-grammar words (digits)",
            Category::Unseen => "unseen words, real",
            Category::UnseenSynth => "unseen words, espeak-ng",
            Category::Noise => "noise clips",
        }
    }
}

/// One clip to place in a stream.
#[derive(Clone, Debug)]
pub struct Clip {
    pub path: PathBuf,
    pub word: String,
    pub speaker: String,
    pub category: Category,
    /// Played this many dB louder (peak kept below full scale).
    pub gain_db: f32,
}

/// Which side of the default model's speaker split a stream is built from: dev (tuning) or
/// test (reporting). The model trained on neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The speakers the model trained on: where hard negatives are mined.
    Train,
    Dev,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// Rows (path made absolute, transcript, speaker) of a manifest-style TSV.
fn read_tsv(tsv: &Path) -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string(tsv).unwrap_or_else(|e| panic!("{}: {e}", tsv.display()));
    let dir = tsv.parent().unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let p = dir.join(cols[0]);
            let p = p
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p,
                cols[1].to_string(),
                cols.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// Every clip of a split, by category: the manifest's command words and digits, the
/// negatives' words (digits: known; others: unseen) and noise clips, the committed espeak-ng
/// unseen words. Noise clips come twice: as recorded and 10 dB
/// louder.
pub fn split_clips(split: Split) -> Vec<Clip> {
    let root = w2v_test_support::paths::repo_root();
    let manifest = root.join("tools/train-default-model/manifest");
    let name = split.name();
    let clip = |path: PathBuf, word: String, speaker: String, category| Clip {
        path,
        word,
        speaker,
        category,
        gain_db: 0.0,
    };
    let mut out = Vec::new();
    for (path, word, speaker) in read_tsv(&manifest.join(format!("{name}.tsv"))) {
        if COMMANDS.contains(&word.as_str()) {
            out.push(clip(path, word, speaker, Category::Command));
        } else if DIGITS.contains(&word.as_str()) {
            out.push(clip(path, word, speaker, Category::KnownOog));
        }
    }
    for (path, word, speaker) in read_tsv(&manifest.join(format!("negatives-{name}.tsv"))) {
        if word.is_empty() {
            out.push(clip(
                path.clone(),
                "(noise)".into(),
                speaker.clone(),
                Category::Noise,
            ));
            out.push(Clip {
                gain_db: 10.0,
                ..clip(path, "(noise +10 dB)".into(), speaker, Category::Noise)
            });
        } else if DIGITS.contains(&word.as_str()) {
            out.push(clip(path, word, speaker, Category::KnownOog));
        } else {
            out.push(clip(path, word, speaker, Category::Unseen));
        }
    }
    let synth = root.join(format!("tests/data/unseen-words/{name}.tsv"));
    if split != Split::Train {
        for (path, word, speaker) in read_tsv(&synth) {
            out.push(clip(path, word, speaker, Category::UnseenSynth));
        }
    }
    out
}

/// The command stream of a split: every command clip, 150 digits (all of the split's Speech
/// Commands digits, then FSDD's evenly spread), every unseen word and noise clip.
pub fn command_stream_clips(split: Split) -> Vec<Clip> {
    let all = split_clips(split);
    let mut out: Vec<Clip> = all
        .iter()
        .filter(|c| {
            matches!(
                c.category,
                Category::Command | Category::Unseen | Category::UnseenSynth | Category::Noise
            )
        })
        .cloned()
        .collect();
    let (sc, fsdd): (Vec<&Clip>, Vec<&Clip>) = all
        .iter()
        .filter(|c| c.category == Category::KnownOog)
        .partition(|c| !c.speaker.starts_with("fsdd:"));
    let want = 150usize.saturating_sub(sc.len());
    let step = (fsdd.len() / want.max(1)).max(1);
    out.extend(sc.into_iter().cloned());
    out.extend(fsdd.into_iter().step_by(step).take(want).cloned());
    out
}

/// The no-command stream of a split: every clip that is not a command (all digits, unseen
/// words, noise clips), with gaps of 2.5-6.5 s of background between them (about an hour).
pub fn no_command_stream_clips(split: Split) -> Vec<Clip> {
    split_clips(split)
        .into_iter()
        .filter(|c| c.category != Category::Command)
        .collect()
}

/// The grammar file for [`COMMANDS`].
pub fn commands_text() -> String {
    COMMANDS.iter().map(|w| format!("{w}\n")).collect()
}

/// One clip placed in a stream.
#[derive(Clone, Debug)]
pub struct Placed {
    pub word: String,
    pub path: PathBuf,
    pub speaker: String,
    pub category: Category,
    /// Samples of the clip in the stream, `[start, end)`.
    pub start: usize,
    pub end: usize,
    /// The clip's speech, by energy: last sample of the last 10 ms frame within 30 dB of the
    /// clip's loudest frame (stream position).
    pub speech_end: usize,
    pub speech_start: usize,
}

impl Placed {
    pub fn in_grammar(&self) -> bool {
        self.category == Category::Command
    }
}

/// A deterministic pseudo-random generator (PCG-style LCG), so streams are reproducible.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        self.next_u32() as f32 / (1u64 << 31) as f32
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.next_u32() as usize % n.max(1)
    }
}

/// The default model's test split: (absolute path, word) for the given words.
pub fn test_clips(words: &[&str]) -> Vec<(PathBuf, String)> {
    let manifest =
        w2v_test_support::paths::repo_root().join("tools/train-default-model/manifest/test.tsv");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let dir = manifest.parent().unwrap();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 2 || !words.contains(&cols[1]) {
            continue;
        }
        let p = dir.join(cols[0]);
        let p = p
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p, cols[1].to_string()));
    }
    out
}

/// Up to `per_word` clips of each word, spread over speakers (every k-th clip of the word).
pub fn pick(
    clips: &[(PathBuf, String)],
    words: &[&str],
    per_word: usize,
) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for w in words {
        let of: Vec<&(PathBuf, String)> = clips.iter().filter(|(_, x)| x == w).collect();
        assert!(!of.is_empty(), "no test clips of {w:?}");
        let step = (of.len() / per_word).max(1);
        out.extend(of.iter().step_by(step).take(per_word).map(|c| (*c).clone()));
    }
    out
}

/// Decode a clip to mono 16 kHz.
pub fn load(path: &Path) -> Vec<f32> {
    w2v_engine::audio::load(path, RATE).unwrap_or_else(|e| panic!("{e}"))
}

/// `(speech_start, speech_end)` of a clip in samples, by 10 ms frame energy within 30 dB of the
/// loudest frame.
pub fn speech_span(samples: &[f32]) -> (usize, usize) {
    let frame = (RATE / 100) as usize;
    let db: Vec<f32> = samples
        .chunks(frame)
        .map(|f| 10.0 * (f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32 + 1e-12).log10())
        .collect();
    let peak = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let first = db.iter().position(|&d| d > peak - 30.0).unwrap_or(0);
    let last = db.iter().rposition(|&d| d > peak - 30.0).unwrap_or(0);
    (first * frame, ((last + 1) * frame).min(samples.len()))
}

/// Background noise: white noise at `amp` (uniform amplitude).
pub fn noise(n: usize, amp: f32, rng: &mut Lcg) -> Vec<f32> {
    (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * amp).collect()
}

/// Clips of the given (path, word) pairs: command words are [`Category::Command`], any other
/// word [`Category::KnownOog`].
pub fn word_clips(pairs: &[(PathBuf, String)]) -> Vec<Clip> {
    pairs
        .iter()
        .map(|(path, word)| Clip {
            path: path.clone(),
            word: word.clone(),
            speaker: String::new(),
            category: if COMMANDS.contains(&word.as_str()) {
                Category::Command
            } else {
                Category::KnownOog
            },
            gain_db: 0.0,
        })
        .collect()
}

/// A clip's samples as it is played: decoded to mono 16 kHz and made louder as the clip says
/// (the gain is capped so that the peak stays at 0.9).
pub fn render(clip: &Clip) -> Vec<f32> {
    let mut x = load(&clip.path);
    if clip.gain_db != 0.0 {
        let peak = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-9);
        let gain = 10f32.powf(clip.gain_db / 20.0).min(0.9 / peak);
        x.iter_mut().for_each(|v| *v *= gain);
    }
    x
}

/// How clips are spaced in a stream.
#[derive(Clone, Copy, Debug)]
pub struct Spacing {
    /// Background between clips: uniform in `[min_gap, max_gap]` seconds.
    pub min_gap: f32,
    pub max_gap: f32,
    /// Every third gap holds a 0.4 s burst of louder white noise.
    pub bursts: bool,
}

/// Command streams: 0.8-1.6 s gaps with bursts (the listener's original stream).
pub const COMMAND_SPACING: Spacing = Spacing {
    min_gap: 0.8,
    max_gap: 1.6,
    bursts: true,
};

/// The no-command stream: 2.5-6.5 s gaps, so that it lasts about an hour.
pub const NO_COMMAND_SPACING: Spacing = Spacing {
    min_gap: 2.5,
    max_gap: 6.5,
    bursts: true,
};

/// A stream: 1 s of background, then each clip followed by a gap of background (amplitude
/// 0.002, about -57 dBFS); every third gap holds a 0.4 s burst of louder noise (amplitude 0.03)
/// with at least 0.5 s of background on both sides. Clips are shuffled with `seed`.
pub fn build(clips: &[Clip], seed: u64) -> (Vec<f32>, Vec<Placed>) {
    build_spaced(clips, seed, COMMAND_SPACING)
}

/// [`build`] with the given spacing.
pub fn build_spaced(clips: &[Clip], seed: u64, spacing: Spacing) -> (Vec<f32>, Vec<Placed>) {
    let mut rng = Lcg(seed);
    let mut order: Vec<usize> = (0..clips.len()).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut audio = noise(RATE as usize, 0.002, &mut rng);
    let mut placed = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let c = &clips[i];
        let clip = render(c);
        let (s, e) = speech_span(&clip);
        let start = audio.len();
        audio.extend(
            clip.iter()
                .zip(noise(clip.len(), 0.002, &mut rng))
                .map(|(a, b)| a + b),
        );
        placed.push(Placed {
            word: c.word.clone(),
            path: c.path.clone(),
            speaker: c.speaker.clone(),
            category: c.category,
            start,
            end: audio.len(),
            speech_start: start + s,
            speech_end: start + e,
        });
        let span = spacing.max_gap - spacing.min_gap;
        let gap = (RATE as f32 * (spacing.min_gap + span * rng.unit())) as usize;
        if spacing.bursts && k % 3 == 2 {
            let half = (gap / 2).max(RATE as usize / 2);
            audio.extend(noise(half, 0.002, &mut rng));
            audio.extend(noise(RATE as usize * 4 / 10, 0.03, &mut rng));
            audio.extend(noise(half, 0.002, &mut rng));
        } else {
            audio.extend(noise(gap, 0.002, &mut rng));
        }
    }
    (audio, placed)
}

/// Write mono 16 kHz float samples as a WAV file.
pub fn write_wav(path: &Path, samples: &[f32]) {
    std::fs::write(path, super::f32_wav(RATE, samples)).unwrap();
}

/// Write mono 16 kHz samples as a 16-bit PCM WAV file (half the size of [`write_wav`], for
/// hour-long streams).
pub fn write_wav16(path: &Path, samples: &[f32]) {
    let pcm: Vec<i16> = samples
        .iter()
        .map(|v| (v.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect();
    std::fs::write(path, super::pcm16_wav(RATE, &pcm)).unwrap();
}

/// Scores of a listen run against the placed clips.
#[derive(Debug, Default)]
pub struct Scores {
    pub accepted: usize,
    pub true_accepts: usize,
    pub in_grammar: usize,
    pub recalled: usize,
    pub out_of_grammar: usize,
    pub oog_rejected: usize,
    /// Per category: (clips that fired no command, clips). For commands: clips that fired no
    /// *wrong* command.
    pub by_category: std::collections::BTreeMap<Category, (usize, usize)>,
    /// (clip word or "(noise)", accepted command) for every false accept.
    pub false_accepts: Vec<(String, String)>,
    /// Words of in-grammar clips with no correct accept.
    pub missed: Vec<String>,
    /// Per placed clip: whether a wrong command fired on it.
    pub fired: Vec<bool>,
    /// For each recalled clip: (stream seconds of its speech end, its first correct event).
    pub hits: Vec<(f64, serde_json::Value)>,
}

impl Scores {
    pub fn precision(&self) -> f64 {
        if self.accepted == 0 {
            0.0
        } else {
            self.true_accepts as f64 / self.accepted as f64
        }
    }
    pub fn recall(&self) -> f64 {
        self.recalled as f64 / self.in_grammar.max(1) as f64
    }
    pub fn rejection(&self) -> f64 {
        self.oog_rejected as f64 / self.out_of_grammar.max(1) as f64
    }
    /// Share of a category's clips that fired no (wrong) command, and the count.
    pub fn rejected(&self, c: Category) -> (usize, usize) {
        self.by_category.get(&c).copied().unwrap_or((0, 0))
    }
    /// Accepted events that are not a correct command: false accepts.
    pub fn false_accept_count(&self) -> usize {
        self.accepted - self.true_accepts
    }
}

/// Wilson score interval (95 %) of `k` successes in `n` trials.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.959964);
    let p = k / n;
    let d = 1.0 + z * z / n;
    let c = (p + z * z / (2.0 * n)) / d;
    let h = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// `k/n` as "0.912 (52/57, 95 % 0.81-0.96)".
pub fn rate(k: usize, n: usize) -> String {
    let (lo, hi) = wilson(k, n);
    format!(
        "{:.3} ({k}/{n}, 95 % {lo:.3}-{hi:.3})",
        k as f64 / n.max(1) as f64
    )
}

/// `k` events in `hours` as a rate per hour with its exact Poisson 95 % interval (bisection
/// on the Poisson CDF, summed in log space).
pub fn per_hour(k: usize, hours: f64) -> String {
    // P(X <= k) for X ~ Poisson(mu).
    let cdf = |k: usize, mu: f64| {
        let mut log_term = -mu;
        let mut terms = vec![log_term];
        for i in 1..=k {
            log_term += mu.ln() - (i as f64).ln();
            terms.push(log_term);
        }
        let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()).exp()
    };
    // The mu at which the decreasing function `f` crosses `target`.
    let solve = |f: &dyn Fn(f64) -> f64, target: f64| {
        let (mut lo, mut hi) = (1e-9f64, 10.0 * (k as f64 + 5.0));
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if f(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (lo + hi) / 2.0
    };
    let upper = solve(&|mu| cdf(k, mu), 0.025);
    let lower = if k == 0 {
        0.0
    } else {
        solve(&|mu| cdf(k - 1, mu), 0.975)
    };
    format!(
        "{:.2}/h ({k} in {hours:.2} h, 95 % {:.2}-{:.2})",
        k as f64 / hours,
        lower / hours,
        upper / hours
    )
}

/// Match accepted events (JSON lines of `w2v listen --json`) to clips: an event belongs to the
/// clip its middle falls in (or the nearest clip within 0.3 s). The first event with the clip's
/// word is a true accept; any other accepted event is false.
pub fn score(placed: &[Placed], events: &[serde_json::Value]) -> Scores {
    let rate = RATE as f64;
    let mut s = Scores {
        in_grammar: placed.iter().filter(|p| p.in_grammar()).count(),
        out_of_grammar: placed.iter().filter(|p| !p.in_grammar()).count(),
        ..Scores::default()
    };
    let mut recalled = vec![false; placed.len()];
    let mut fired = vec![false; placed.len()];
    for e in events {
        if e["rejected"].as_bool() != Some(false) {
            continue;
        }
        s.accepted += 1;
        let mid = (e["start"].as_f64().unwrap() + e["end"].as_f64().unwrap()) / 2.0;
        // Clips are placed in stream order: search the neighbourhood of the event.
        let at = placed.partition_point(|p| (p.end as f64 / rate) < mid - 0.3);
        let clip = placed[at..]
            .iter()
            .enumerate()
            .take_while(|(_, p)| p.start as f64 / rate <= mid + 0.3)
            .map(|(i, p)| {
                let (a, b) = (p.start as f64 / rate, p.end as f64 / rate);
                let d = if mid < a {
                    a - mid
                } else if mid > b {
                    mid - b
                } else {
                    0.0
                };
                (at + i, d)
            })
            .filter(|&(_, d)| d <= 0.3)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let command = e["command"].as_str().unwrap_or_default().to_string();
        match clip {
            Some(i) if placed[i].in_grammar() && placed[i].word == command && !recalled[i] => {
                recalled[i] = true;
                s.true_accepts += 1;
                s.hits.push((placed[i].speech_end as f64 / rate, e.clone()));
            }
            Some(i) => {
                fired[i] = true;
                s.false_accepts.push((placed[i].word.clone(), command));
            }
            None => s.false_accepts.push(("(between clips)".into(), command)),
        }
    }
    s.recalled = recalled.iter().filter(|&&r| r).count();
    s.fired = fired.clone();
    for (i, p) in placed.iter().enumerate() {
        if p.in_grammar() && !recalled[i] {
            s.missed.push(p.word.clone());
        }
        if !p.in_grammar() && !fired[i] {
            s.oog_rejected += 1;
        }
        let entry = s.by_category.entry(p.category).or_default();
        entry.1 += 1;
        if !fired[i] {
            entry.0 += 1;
        }
    }
    s
}

/// Percentile (nearest rank) of `v`, `q` in [0, 1].
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
