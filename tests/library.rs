//! The library front door (`w2v::Recognizer`) as an embedder uses it: the same results as the
//! command line, the same provider policy, one error type.

mod common;

use std::path::Path;

use common::{repo, w2v};
use w2v::{
    BackendKind, DecoderOptions, Error, EventKind, Options, ProviderRequest, Recognizer,
    RuntimeOptions, StreamOptions,
};
use w2v_test_support::paths::{sample, README_SAMPLE, README_TRANSCRIPT};

fn recognizer() -> Recognizer {
    Recognizer::open_default(&Options::default()).expect("the shipped model opens")
}

#[test]
fn transcribes_the_readme_sample_like_the_cli() {
    let mut r = recognizer();
    let file = sample(README_SAMPLE);
    let t = r.transcribe_file(&file).unwrap();
    assert_eq!(t.text, README_TRANSCRIPT);
    assert_eq!(t.words.len(), 4);
    let cli = w2v(["transcribe", file.to_str().unwrap()]);
    assert_eq!(cli.stdout.trim(), t.text);
    assert_eq!(r.backend_name(), "tract");
    assert_eq!(r.decoding(), "greedy");
    assert!(r.execution_providers().is_empty());
}

#[test]
fn samples_at_any_rate_give_the_file_transcript() {
    let mut r = recognizer();
    let file = sample(README_SAMPLE);
    let at_16k = w2v::load_audio(&file, 16_000).unwrap();
    let from_file = r.transcribe_file(&file).unwrap();
    let direct = r.transcribe(&at_16k, 16_000).unwrap();
    assert_eq!(direct.text, from_file.text);
    assert_eq!(direct.words.len(), from_file.words.len());
    // 8 kHz (the spoken-digit recordings' rate) is resampled to the model's 16 kHz.
    let at_8k = w2v::load_audio(&file, 8_000).unwrap();
    assert_eq!(r.transcribe(&at_8k, 8_000).unwrap().text, from_file.text);
    assert!(matches!(r.transcribe(&at_8k, 0), Err(Error::Resample(_))));
}

#[test]
fn streaming_in_small_blocks_finds_each_utterance() {
    let mut r = recognizer();
    let mut events = Vec::new();
    let mut result = None;
    for name in [README_SAMPLE, "go-up.wav"] {
        let samples = w2v::load_audio(sample(name), 16_000).unwrap();
        let mut stream = r.stream(&StreamOptions::default()).unwrap();
        for block in samples.chunks(160) {
            events.extend(stream.accept_waveform(16_000, block).unwrap().to_vec());
        }
        let partial = stream.result();
        let done = stream.finish().unwrap();
        assert!(done.events.len() >= partial.events.len());
        result = Some(done);
    }
    let last = result.unwrap();
    assert_eq!(last.text, "GO UP");
    assert!(last.events.iter().all(|e| e.kind == EventKind::Transcript));
}

#[test]
fn a_stream_keeps_one_sample_rate() {
    let mut r = recognizer();
    let mut stream = r.stream(&StreamOptions::default()).unwrap();
    stream.accept_waveform(16_000, &[0.0; 1600]).unwrap();
    let e = stream.accept_waveform(8_000, &[0.0; 800]).unwrap_err();
    assert!(e.to_string().contains("8000 Hz after 16000 Hz"), "{e}");
}

#[test]
fn a_command_grammar_accepts_and_names_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let grammar = dir.path().join("commands.txt");
    std::fs::write(&grammar, "go up\ngo down\nstop\n").unwrap();
    let mut r = recognizer();
    let mut stream = r
        .stream(&StreamOptions {
            commands: Some(grammar),
            ..StreamOptions::default()
        })
        .unwrap();
    let samples = w2v::load_audio(sample("go-up.wav"), 16_000).unwrap();
    stream.accept_waveform(16_000, &samples).unwrap();
    let result = stream.finish().unwrap();
    assert_eq!(result.text, "go up");
    assert_eq!(result.events[0].kind, EventKind::Command);
}

#[test]
fn errors_are_one_line_and_name_the_file() {
    let missing = Path::new("no/such/model.onnx");
    let e = Recognizer::open(missing, &Options::default())
        .err()
        .expect("missing model");
    let line = e.to_string();
    assert!(
        line.contains("no/such/model.onnx") && line.contains("no such model file"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    let mut r = recognizer();
    let e = r.transcribe_file("no/such/audio.wav").unwrap_err();
    assert!(matches!(e, Error::Audio(_)), "{e:?}");
    assert!(e.to_string().contains("no/such/audio.wav"), "{e}");
    // Options that do not go together.
    let dir = tempfile::tempdir().unwrap();
    let lm = dir.path().join("lm.arpa");
    std::fs::write(
        &lm,
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<s>\n-0.5\tgo\n\n\\end\\\n",
    )
    .unwrap();
    let words = repo().join("models/default.words.txt");
    let cli = w2v([
        "transcribe".as_ref(),
        "--words".as_ref(),
        words.as_os_str(),
        "--lm".as_ref(),
        lm.as_os_str(),
        "--pyctcdecode".as_ref(),
        sample("go-up.wav").as_os_str(),
    ]);
    assert!(!cli.success(), "{cli:?}");
    let refusal = "--words is not part of pyctcdecode's search";
    assert!(cli.stderr.contains(refusal), "{}", cli.stderr);
    let options = Options {
        decoder: DecoderOptions {
            words: Some(words),
            lm: Some(lm),
            pyctcdecode: true,
            ..DecoderOptions::default()
        },
        ..Options::default()
    };
    let e = Recognizer::open_default(&options).err().expect("refused");
    assert!(e.to_string().contains(refusal), "{e}");
}

/// The CLI's provider policy, through the library: an explicit TensorRT request on this
/// CPU-only ONNX Runtime fails with the reason, or falls back to the CPU when allowed.
#[test]
fn onnx_runtime_with_tensorrt_is_chosen_exactly_as_the_cli_does() {
    let tensorrt = |allow_fallback| Options {
        runtime: RuntimeOptions {
            backend: BackendKind::Ort,
            provider: ProviderRequest::TensorRt,
            allow_fallback,
            ..RuntimeOptions::default()
        },
        ..Options::default()
    };
    let e = Recognizer::open_default(&tensorrt(false))
        .err()
        .expect("TensorRT is not here");
    assert!(matches!(e, Error::Provider(_)), "{e:?}");
    let line = e.to_string();
    assert!(line.contains("not built into this ONNX Runtime"), "{line}");
    let cli = w2v([
        "transcribe",
        "--backend",
        "ort",
        "--provider",
        "tensorrt",
        sample("go-up.wav").to_str().unwrap(),
    ]);
    assert!(
        cli.stderr.contains(&line),
        "CLI: {}\nlibrary: {line}",
        cli.stderr
    );

    let mut r = Recognizer::open_default(&tensorrt(true)).unwrap();
    assert_eq!(r.backend_name(), "ort");
    assert_eq!(r.execution_providers(), [w2v::Provider::Cpu]);
    let t = r.transcribe_file(sample(README_SAMPLE)).unwrap();
    assert_eq!(t.text, README_TRANSCRIPT);
    // And `w2v doctor` judges the same way `--provider auto` does.
    let available = w2v::provider_availability();
    assert!(available.tensorrt.is_err() && available.cpu.is_ok());
}

/// `w2v listen` (and so the server's streams) decodes free transcripts with the decoder flags:
/// a word list of two words leaves only those words, where greedy decoding spells all four.
#[test]
fn listen_decodes_free_transcripts_with_the_decoder_flags() {
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "ZERO\nSIX\n").unwrap();
    let file = sample(README_SAMPLE);
    let texts = |extra: &[&std::ffi::OsStr]| -> Vec<String> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "listen".as_ref(),
            "--input".as_ref(),
            file.as_os_str(),
            "--json".as_ref(),
        ];
        args.extend_from_slice(extra);
        let run = w2v(args);
        assert!(run.success(), "{run:?}");
        run.stdout
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(texts(&[]), [README_TRANSCRIPT]);
    let constrained = texts(&["--words".as_ref(), words.as_os_str()]);
    assert_eq!(constrained.len(), 1);
    for w in constrained[0].split_whitespace() {
        assert!(w == "ZERO" || w == "SIX", "{constrained:?}");
    }
    // A grammar decides by its own scoring: decoder flags with --commands are refused.
    let grammar = dir.path().join("commands.txt");
    std::fs::write(&grammar, "go up\n").unwrap();
    let run = w2v([
        "listen".as_ref(),
        "--input".as_ref(),
        file.as_os_str(),
        "--commands".as_ref(),
        grammar.as_os_str(),
        "--hotwords".as_ref(),
        words.as_os_str(),
    ]);
    assert!(!run.success());
    assert!(
        run.stderr.contains("command grammar decides"),
        "{}",
        run.stderr
    );
}
