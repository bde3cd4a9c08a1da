//! Transcribe an audio file with the shipped model, using only the library.
//!
//! ```sh
//! cargo run --release --example transcribe -- samples/nine-zero-five-one.wav
//! ```

use w2v::{Options, Recognizer};

fn main() -> Result<(), w2v::Error> {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "samples/nine-zero-five-one.wav".into());
    let mut recognizer = Recognizer::open_default(&Options::default())?;
    let transcript = recognizer.transcribe_file(&file)?;
    println!("{}", transcript.text);
    for word in &transcript.words {
        eprintln!(
            "{:6.2} {:6.2}  {:.2}  {}",
            word.start, word.end, word.confidence, word.text
        );
    }
    Ok(())
}
