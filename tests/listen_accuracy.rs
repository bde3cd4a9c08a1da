//! Voice commands end to end with the shipped default model (`models/default.onnx`, found the
//! way `w2v` finds its default model), measured as issue #27 asks: on streams built from the
//! default model's *test* speakers (it trained on none of them), with the grammar of the ten
//! Speech Commands words (`stream::COMMANDS`):
//!
//! * the command stream: every test command clip (354), 150 digits (known out-of-grammar words),
//!   every unseen word (12 real recordings, 112 espeak-ng clips in voices and words not used for
//!   tuning) and every background-noise clip twice (as recorded and 10 dB louder: 200), in about
//!   30 minutes: precision, recall, rejection per category, stream-time latency;
//! * the no-command stream (about an hour): every test clip that is not a command (all digits,
//!   unseen words, noise clips): false accepts per hour.
//!
//! The threshold is the listener's default, chosen on the dev streams (`dev_threshold_sweep`,
//! ignored: `cargo test --release --test listen_accuracy -- --ignored --nocapture`). The bounds
//! below are the figures measured with the shipped model (docs/benchmarks.md, models/README.md)
//! less a margin, so that a worse model or listener fails; issue #27's targets (precision
//! 0.95, recall 0.90, rejections 0.90, noise 2 %, 1 false accept per hour) are printed beside
//! them. `W2V_STREAM_DUMP=DIR` keeps each stream's WAV, clip list and events.

mod common;

use std::path::Path;

use common::stream::{self, rate, Category, Placed, Scores, Split};
use common::*;

/// One `w2v listen` run over a stream.
struct Heard {
    placed: Vec<Placed>,
    events: Vec<serde_json::Value>,
    seconds: f64,
}

fn listen(
    split: Split,
    no_command: bool,
    threshold: Option<f32>,
    extra: &[&str],
    tag: &str,
) -> Heard {
    let dir = tempfile::tempdir().unwrap();
    let (clips, spacing, seed) = if no_command {
        (
            stream::no_command_stream_clips(split),
            stream::NO_COMMAND_SPACING,
            27_0002,
        )
    } else {
        (
            stream::command_stream_clips(split),
            stream::COMMAND_SPACING,
            27_0001,
        )
    };
    let (audio, placed) = stream::build_spaced(&clips, seed, spacing);
    let seconds = audio.len() as f64 / f64::from(stream::RATE);
    let wav = dir.path().join("stream.wav");
    stream::write_wav16(&wav, &audio);
    drop(audio);
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, stream::commands_text()).unwrap();
    let threshold = threshold.map(|t| t.to_string());
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "listen".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
        "--commands".as_ref(),
        commands.as_os_str(),
        "--json".as_ref(),
    ];
    if let Some(t) = &threshold {
        args.push("--threshold".as_ref());
        args.push(t.as_ref());
    }
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let run = w2v(args);
    assert_ok(&run);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    if let Ok(out) = std::env::var("W2V_STREAM_DUMP") {
        dump(Path::new(&out), tag, &wav, &placed, &run.stdout);
    }
    Heard {
        placed,
        events,
        seconds,
    }
}

fn dump(dir: &Path, tag: &str, wav: &Path, placed: &[Placed], events: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(wav, dir.join(format!("{tag}.wav"))).unwrap();
    let mut tsv = String::from("start\tend\tspeech_start\tspeech_end\tcategory\tword\tpath\n");
    let r = f64::from(stream::RATE);
    for p in placed {
        tsv += &format!(
            "{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:?}\t{}\t{}\n",
            p.start as f64 / r,
            p.end as f64 / r,
            p.speech_start as f64 / r,
            p.speech_end as f64 / r,
            p.category,
            p.word,
            p.path.display()
        );
    }
    std::fs::write(dir.join(format!("{tag}.clips.tsv")), tsv).unwrap();
    std::fs::write(dir.join(format!("{tag}.events.jsonl")), events).unwrap();
}

/// Accepted events at `threshold` (events of a run at threshold 0 carry every decision's
/// confidence).
fn at_threshold(events: &[serde_json::Value], threshold: f64) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| {
            e["rejected"].as_bool() == Some(false) && e["confidence"].as_f64().unwrap() >= threshold
        })
        .cloned()
        .collect()
}

/// The figures issue #27 asks for, of one command stream and one no-command stream.
struct Figures {
    commands: Scores,
    no_command: Scores,
    hours: f64,
}

impl Figures {
    fn of(c: &Heard, n: &Heard, threshold: Option<f64>) -> Figures {
        let filter = |h: &Heard| match threshold {
            Some(t) => at_threshold(&h.events, t),
            None => h.events.clone(),
        };
        Figures {
            commands: stream::score(&c.placed, &filter(c)),
            no_command: stream::score(&n.placed, &filter(n)),
            hours: n.seconds / 3600.0,
        }
    }

    fn noise_fired(&self) -> (usize, usize) {
        let (kept, n) = self.commands.rejected(Category::Noise);
        (n - kept, n)
    }

    fn latency_p95(&self) -> f64 {
        let heard: Vec<f64> = self
            .commands
            .hits
            .iter()
            .map(|(end, e)| e["decided_at_stream"].as_f64().unwrap() - end)
            .collect();
        stream::percentile(&heard, 0.95)
    }

    fn report(&self) -> String {
        let c = &self.commands;
        let mut out = format!(
            "precision {}\nrecall    {}\n",
            rate(c.true_accepts, c.accepted),
            rate(c.recalled, c.in_grammar)
        );
        for cat in Category::ALL {
            let (k, n) = c.rejected(cat);
            if n == 0 {
                continue;
            }
            let what = if cat == Category::Command {
                "commands that fired no wrong command"
            } else {
                cat.name()
            };
            out += &format!("rejected: {what}: {}\n", rate(k, n));
        }
        let (fired, n) = self.noise_fired();
        out += &format!("noise clips firing a command: {}\n", rate(fired, n));
        out += &format!(
            "no-command stream: {} clips, false accepts {}\n",
            self.no_command.placed_count(),
            stream::per_hour(self.no_command.accepted, self.hours)
        );
        out += &format!(
            "end of speech -> decision (stream time, no compute): p95 {:.0} ms\n",
            self.latency_p95() * 1000.0
        );
        out += &format!(
            "false accepts (clip, command): {:?}\nno-command false accepts: {:?}\n",
            c.false_accepts, self.no_command.false_accepts
        );
        out
    }
}

trait PlacedCount {
    fn placed_count(&self) -> usize;
}

impl PlacedCount for Scores {
    fn placed_count(&self) -> usize {
        self.by_category.values().map(|v| v.1).sum()
    }
}

#[test]
fn test_speaker_streams_meet_the_measured_bounds() {
    // The two streams side by side (one core each).
    let (c, n) = std::thread::scope(|scope| {
        let c = scope.spawn(|| listen(Split::Test, false, None, &[], "test-commands"));
        let n = listen(Split::Test, true, None, &[], "test-no-command");
        (c.join().unwrap(), n)
    });
    let f = Figures::of(&c, &n, None);
    eprintln!(
        "test command stream {:.1} min, no-command stream {:.1} min (default threshold)\n{}",
        c.seconds / 60.0,
        n.seconds / 60.0,
        f.report()
    );
    let s = &f.commands;
    let share = |(k, n): (usize, usize)| k as f64 / n.max(1) as f64;
    // Bounds: the figures measured with the shipped model (the mean of recipe runs 10 and 11,
    // 2026-12-06, threshold 0.8: precision 0.956 (241/252), recall 0.681, digits rejected 0.967,
    // unseen real 12/12 and espeak-ng 112/112, noise 0/200, 12.3 false accepts per hour (15 in
    // 1.22 h), p95 237 ms), less two or three events of slack for float differences between
    // CPUs. Issue #27's targets are higher (see the module docs); the latency bound is the
    // issue's own.
    assert!(s.precision() >= 0.94, "precision {:.3}", s.precision());
    assert!(s.recall() >= 0.67, "recall {:.3}", s.recall());
    assert!(share(s.rejected(Category::KnownOog)) >= 0.94);
    assert!(share(s.rejected(Category::Unseen)) >= 0.83);
    assert!(share(s.rejected(Category::UnseenSynth)) >= 0.98);
    assert!(share(f.noise_fired()) <= 0.01);
    let fa_per_hour = f.no_command.accepted as f64 / f.hours;
    assert!(
        fa_per_hour <= 14.0,
        "{fa_per_hour:.1} false accepts per hour"
    );
    assert!(
        f.latency_p95() < 0.30,
        "p95 latency {:.3} s",
        f.latency_p95()
    );
}

/// The dev streams at threshold 0, then every threshold on the saved confidences: the table the
/// listener's default threshold is chosen from; with the speech gate (the default) and without.
#[test]
#[ignore = "tuning run on the dev speakers (about 6 minutes)"]
fn dev_threshold_sweep() {
    for (label, extra) in [
        ("speech gate silero", &[][..]),
        ("speech gate off", &["--speech-gate", "off"][..]),
    ] {
        let tag = if extra.is_empty() {
            "dev"
        } else {
            "dev-nogate"
        };
        let c = listen(
            Split::Dev,
            false,
            Some(0.0),
            extra,
            &format!("{tag}-commands"),
        );
        let n = listen(
            Split::Dev,
            true,
            Some(0.0),
            extra,
            &format!("{tag}-no-command"),
        );
        eprintln!(
            "{label}: dev command stream {:.1} min, no-command stream {:.1} min",
            c.seconds / 60.0,
            n.seconds / 60.0
        );
        eprintln!("thr  prec   recall known  unseen synth  noise  FA/h");
        for i in 0..20 {
            let t = f64::from(i) * 0.05;
            let f = Figures::of(&c, &n, Some(t));
            let s = &f.commands;
            let share = |(k, n): (usize, usize)| k as f64 / n.max(1) as f64;
            eprintln!(
                "{t:.2} {:.3} {:.3}  {:.3} {:.3}  {:.3} {:.3}  {:.2}",
                s.precision(),
                s.recall(),
                share(s.rejected(Category::KnownOog)),
                share(s.rejected(Category::Unseen)),
                share(s.rejected(Category::UnseenSynth)),
                share(f.noise_fired()),
                f.no_command.accepted as f64 / f.hours
            );
        }
        let t = f64::from(w2v::engine::listen::DEFAULT_THRESHOLD);
        let f = Figures::of(&c, &n, Some(t));
        eprintln!("{label} at the default threshold {t:.2}:\n{}", f.report());
    }
}

/// Hard-negative mining (issue #27, for the default model's recipe): the no-command stream of
/// the speakers the model trained on, at threshold 0.3 (near misses too); every clip that fires
/// a command is written to `tools/train-default-model/manifest/hard-negatives.tsv` with its
/// true transcript, for `finetune.py --hard-negatives`. Mined on the training side so that the
/// dev streams stay unseen for tuning.
#[test]
#[ignore = "recipe step: writes tools/train-default-model/manifest/hard-negatives.tsv"]
fn mine_hard_negatives() {
    let n = listen(Split::Train, true, Some(0.3), &[], "train-no-command");
    let s = stream::score(&n.placed, &n.events);
    let shared = shared_data();
    let mut rows = String::from("path\ttranscript\tspeaker\tsource\n");
    let mut count = 0;
    let mut seen = std::collections::HashSet::new();
    for (p, _) in n.placed.iter().zip(&s.fired).filter(|(_, &f)| f) {
        // Noise clips are placed twice (as recorded and louder): list each clip once.
        if !seen.insert(&p.path) {
            continue;
        }
        let rel = p
            .path
            .strip_prefix(&shared)
            .unwrap_or_else(|_| panic!("{}: not under {}", p.path.display(), shared.display()));
        let transcript = if p.category == Category::Noise {
            ""
        } else {
            p.word.as_str()
        };
        rows += &format!(
            "../../../../shared/data/{}\t{transcript}\t{}\thard-negative:{:?}\n",
            rel.display(),
            p.speaker,
            p.category
        );
        count += 1;
    }
    let out = repo().join("tools/train-default-model/manifest/hard-negatives.tsv");
    std::fs::write(&out, rows).unwrap();
    eprintln!(
        "train no-command stream {:.1} min, {} clips: {count} fired a command at threshold 0.3 \
         ({} events) -> {}\n{:?}",
        n.seconds / 60.0,
        n.placed.len(),
        s.accepted,
        out.display(),
        s.false_accepts
    );
}
