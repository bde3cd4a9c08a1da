//! Live recognition from standard input: WAV, or raw 16-bit PCM with a rate given, decoded as it
//! arrives and fed to a [`w2v::Stream`]; each utterance is printed when the voice-activity
//! detector closes it. With a command grammar file as the second argument, utterances are
//! accepted as commands or rejected.
//!
//! ```sh
//! arecord -f S16_LE -r 16000 -c 1 | cargo run --release --example stream -- 16000
//! cargo run --release --example stream < samples/go-up.wav
//! ```
//! (A microphone through cpal is `w2v listen --device`, built with `--features microphone`.)

use w2v::engine::audio::{PcmStream, StreamHint};
use w2v::{Options, Recognizer, StreamOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    // Raw PCM needs its rate; a WAV header carries its own.
    let rate = args.next().map(|r| r.parse::<u32>()).transpose()?;
    let commands = args.next().map(Into::into);

    let mut recognizer = Recognizer::open_default(&Options::default())?;
    let mut stream = recognizer.stream(&StreamOptions {
        commands,
        ..StreamOptions::default()
    })?;
    stream.warm_up()?;

    let hint = StreamHint {
        rate,
        channels: None,
    };
    let mut input = PcmStream::open("stdin", std::io::stdin(), hint)?;
    let mut block = Vec::new();
    let print =
        |e: &w2v::ListenEvent| println!("{:6.2} {:6.2}  {:?}  {}", e.start, e.end, e.kind, e.text);
    while input.read(&mut block)? {
        stream
            .accept_waveform(input.sample_rate(), &block)?
            .iter()
            .for_each(print);
        block.clear();
    }
    // End of input: decide the utterance still open.
    stream.flush()?.iter().for_each(print);
    println!("{}", stream.result().text);
    Ok(())
}
