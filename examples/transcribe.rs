//! Transcribe an audio file with the shipped model, using only the library.
//!
//! ```sh
//! cargo run --release --example transcribe -- samples/zero-zero-six-seven.wav
//! ```

use w2v::{Options, Recognizer};

fn main() -> Result<(), w2v::Error> {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "samples/zero-zero-six-seven.wav".into());
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
