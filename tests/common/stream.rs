//! Long command streams for `w2v listen`: real clips from `../shared/data` (speakers of the
//! default model's held-out *test* split, `tools/train-default-model/manifest/test.tsv`, so the
//! model never trained on them), separated by quiet background noise and louder noise bursts.
//! Shared by `tests/listen_accuracy.rs` and `benches/listen.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const RATE: u32 = 16000;

/// The grammar the stream is scored against (`COMMANDS.txt`).
pub const IN_GRAMMAR: [&str; 16] = [
    "yes", "no", "up", "down", "stop", "go", "zero", "one", "two", "three", "four", "five", "six",
    "seven", "eight", "nine",
];

/// Words the model knows but the grammar does not: they must be rejected.
pub const OUT_OF_GRAMMAR: [&str; 4] = ["left", "right", "on", "off"];

/// One clip placed in a stream.
#[derive(Clone, Debug)]
pub struct Placed {
    pub word: String,
    pub path: PathBuf,
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
        IN_GRAMMAR.contains(&self.word.as_str())
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

/// A stream: 1 s of background, then each clip followed by a gap of 0.8-1.6 s of background
/// (amplitude 0.002, about -57 dBFS); every third gap holds a 0.4 s burst of louder noise
/// (amplitude 0.03) with at least 0.5 s of background on both sides. Clips are shuffled with
/// `seed`.
pub fn build(clips: &[(PathBuf, String)], seed: u64) -> (Vec<f32>, Vec<Placed>) {
    let mut rng = Lcg(seed);
    let mut order: Vec<usize> = (0..clips.len()).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut audio = noise(RATE as usize, 0.002, &mut rng);
    let mut placed = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let (path, word) = &clips[i];
        let clip = load(path);
        let (s, e) = speech_span(&clip);
        let start = audio.len();
        audio.extend(
            clip.iter()
                .zip(noise(clip.len(), 0.002, &mut rng))
                .map(|(a, b)| a + b),
        );
        placed.push(Placed {
            word: word.clone(),
            path: path.clone(),
            start,
            end: audio.len(),
            speech_start: start + s,
            speech_end: start + e,
        });
        let gap = (RATE as f32 * (0.8 + 0.8 * rng.unit())) as usize;
        if k % 3 == 2 {
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

/// The grammar file for [`IN_GRAMMAR`].
pub fn commands_text() -> String {
    IN_GRAMMAR.iter().map(|w| format!("{w}\n")).collect()
}

/// Write mono 16 kHz float samples as a WAV file.
pub fn write_wav(path: &Path, samples: &[f32]) {
    std::fs::write(path, super::f32_wav(RATE, samples)).unwrap();
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
    /// (clip word or "(noise)", accepted command) for every false accept.
    pub false_accepts: Vec<(String, String)>,
    /// Words of in-grammar clips with no correct accept.
    pub missed: Vec<String>,
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
        let clip = placed
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (a, b) = (p.start as f64 / rate, p.end as f64 / rate);
                let d = if mid < a {
                    a - mid
                } else if mid > b {
                    mid - b
                } else {
                    0.0
                };
                (i, d)
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
            None => s.false_accepts.push(("(noise)".into(), command)),
        }
    }
    s.recalled = recalled.iter().filter(|&&r| r).count();
    for (i, p) in placed.iter().enumerate() {
        if p.in_grammar() && !recalled[i] {
            s.missed.push(p.word.clone());
        }
        if !p.in_grammar() && !fired[i] {
            s.oog_rejected += 1;
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
