//! Voice commands end to end with the shipped default model (`models/default.onnx`, found the
//! way `w2v` finds its default model): a long stream of held-out command and digit clips
//! separated by quiet and noise bursts goes through `w2v listen --input … --commands …` at full
//! speed, and the accepted commands must reach precision >= 95 % and recall >= 90 %, with >= 90 %
//! of the out-of-grammar words (clips of words not in COMMANDS.txt) rejected.
//!
//! The shipped model (recipe run 5, 22 % test WER greedy) does not meet these bounds yet:
//! measured 2026-12-04, precision 0.773 (75/97), recall 0.781 (75/96), out-of-grammar rejection
//! 0.850 (34/40) at the default threshold (run 4's model: 0.772, 0.740, 0.850; run 2's: 0.744,
//! 0.604, 0.850; docs/benchmarks.md).
//! So the test stays ignored until a model that meets issue #9's accuracy targets ships; run it with
//! `cargo test --release --test listen_accuracy -- --ignored --nocapture`.

mod common;

use common::stream::{self, IN_GRAMMAR, OUT_OF_GRAMMAR};
use common::*;

#[test]
#[ignore = "the shipped default model misses these bounds (precision 0.77, recall 0.78): issue #9"]
fn commands_in_a_long_stream_meet_precision_recall_and_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let clips = stream::test_clips(&[&IN_GRAMMAR[..], &OUT_OF_GRAMMAR[..]].concat());
    // 6 clips of each in-grammar word (96) and 10 of each out-of-grammar word (40).
    let mut chosen = stream::pick(&clips, &IN_GRAMMAR, 6);
    chosen.extend(stream::pick(&clips, &OUT_OF_GRAMMAR, 10));
    let (audio, placed) = stream::build(&chosen, 20261125);
    let wav = dir.path().join("stream.wav");
    stream::write_wav(&wav, &audio);
    let commands = dir.path().join("COMMANDS.txt");
    std::fs::write(&commands, stream::commands_text()).unwrap();

    let run = w2v([
        "listen".as_ref(),
        "--input".as_ref(),
        wav.as_os_str(),
        "--commands".as_ref(),
        commands.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_ok(&run);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let s = stream::score(&placed, &events);
    eprintln!(
        "stream {:.0} s, {} clips ({} in grammar, {} out): {} events, {} accepted\n\
         precision {:.3} ({}/{}), recall {:.3} ({}/{}), out-of-grammar rejected {:.3} ({}/{})\n\
         false accepts (clip word, command): {:?}\nmissed: {:?}",
        audio.len() as f64 / f64::from(stream::RATE),
        placed.len(),
        s.in_grammar,
        s.out_of_grammar,
        events.len(),
        s.accepted,
        s.precision(),
        s.true_accepts,
        s.accepted,
        s.recall(),
        s.recalled,
        s.in_grammar,
        s.rejection(),
        s.oog_rejected,
        s.out_of_grammar,
        s.false_accepts,
        s.missed
    );
    assert!(s.precision() >= 0.95, "precision {:.3}", s.precision());
    assert!(s.recall() >= 0.90, "recall {:.3}", s.recall());
    assert!(
        s.rejection() >= 0.90,
        "out-of-grammar rejection {:.3}",
        s.rejection()
    );
}
