//! Subtitles from word times: SubRip (`w2v transcribe --format srt`, the server's
//! `response_format=srt`) and WebVTT.

use crate::Word;

/// A run of words shown together.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Cue {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// Words grouped into cues of at most 7 words or 3.5 seconds each.
pub fn cues(words: &[Word]) -> Vec<Cue> {
    let mut out = Vec::new();
    let mut cue: Vec<&Word> = Vec::new();
    let flush = |cue: &mut Vec<&Word>, out: &mut Vec<Cue>| {
        if let (Some(first), Some(last)) = (cue.first(), cue.last()) {
            let text: Vec<&str> = cue.iter().map(|w| w.text.as_str()).collect();
            out.push(Cue {
                start: first.start,
                end: last.end,
                text: text.join(" "),
            });
        }
        cue.clear();
    };
    for w in words {
        if let Some(first) = cue.first() {
            if cue.len() >= 7 || w.end - first.start > 3.5 {
                flush(&mut cue, &mut out);
            }
        }
        cue.push(w);
    }
    flush(&mut cue, &mut out);
    out
}

/// `HH:MM:SS<sep>mmm`.
fn stamp(t: f64, sep: char) -> String {
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// SubRip subtitles of [`cues`].
pub fn srt(words: &[Word]) -> String {
    let mut out = String::new();
    for (i, c) in cues(words).iter().enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            stamp(c.start, ','),
            stamp(c.end, ','),
            c.text
        ));
    }
    out
}

/// WebVTT subtitles of [`cues`].
pub fn vtt(words: &[Word]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for c in cues(words) {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            stamp(c.start, '.'),
            stamp(c.end, '.'),
            c.text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str, start: f64, end: f64) -> Word {
        Word {
            text: text.into(),
            start,
            end,
            confidence: 1.0,
        }
    }

    #[test]
    fn srt_cues() {
        let s = srt(&[
            w("hello", 0.5, 1.0),
            w("world", 1.1, 1.5),
            w("again", 4.2, 4.6),
        ]);
        assert_eq!(
            s,
            "1\n00:00:00,500 --> 00:00:01,500\nhello world\n\n2\n00:00:04,200 --> 00:00:04,600\nagain\n\n"
        );
        let v = vtt(&[w("hello", 0.5, 1.0), w("world", 3661.1, 3661.5)]);
        assert_eq!(
            v,
            "WEBVTT\n\n00:00:00.500 --> 00:00:01.000\nhello\n\n01:01:01.100 --> 01:01:01.500\nworld\n\n"
        );
    }
}
