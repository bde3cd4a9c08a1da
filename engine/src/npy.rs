//! NumPy `.npy` files of float32 logits: `[frames, vocab]` or `[1, frames, vocab]`, as
//! `w2v transcribe --dump-logits` writes them and `w2v decode` reads them.

use std::path::Path;

/// A `.npy` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// Row-major float32 logits.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyLogits {
    pub frames: usize,
    pub vocab: usize,
    pub data: Vec<f32>,
}

/// Read a float32 `.npy` of shape `[T, V]` or `[1, T, V]` (little- or big-endian, C order).
pub fn read_logits(path: &Path) -> Result<NpyLogits, NpyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_logits(&bytes).map_err(|reason| NpyError::Format {
        path: shown,
        reason,
    })
}

/// Parse the bytes of a `.npy` file (see [`read_logits`]); `Err` is the reason.
pub fn parse_logits(bytes: &[u8]) -> Result<NpyLogits, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(format!(".npy format version {major} is not supported")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text .npy header")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or("the header has no 'descr'")?;
    let big_endian = if descr.starts_with("'<f4'") || descr.starts_with("'=f4'") {
        false
    } else if descr.starts_with("'>f4'") {
        true
    } else {
        let shown: String = descr.chars().take_while(|&c| c != ',').collect();
        return Err(format!("dtype {shown} is not float32"));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = field("shape").ok_or("the header has no 'shape'")?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("unreadable 'shape'")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("unreadable shape ({inner})"))
        })
        .collect::<Result<_, _>>()?;
    let (frames, vocab) = match shape[..] {
        [t, v] | [1, t, v] => (t, v),
        _ => {
            return Err(format!(
                "shape ({inner}): expected [frames, vocab] or [1, frames, vocab]"
            ))
        }
    };
    let data_bytes = &bytes[start + header_len..];
    let n = frames
        .checked_mul(vocab)
        .filter(|n| n.checked_mul(4) == Some(data_bytes.len()))
        .ok_or_else(|| {
            format!(
                "shape ({inner}) needs {} bytes of data, the file has {}",
                frames.saturating_mul(vocab).saturating_mul(4),
                data_bytes.len()
            )
        })?;
    let mut data = Vec::with_capacity(n);
    for c in data_bytes.chunks_exact(4) {
        let b = [c[0], c[1], c[2], c[3]];
        data.push(if big_endian {
            f32::from_be_bytes(b)
        } else {
            f32::from_le_bytes(b)
        });
    }
    Ok(NpyLogits {
        frames,
        vocab,
        data,
    })
}

/// The bytes of a little-endian float32 `.npy` of shape `[frames, vocab]` (format 1.0).
pub fn encode_logits(data: &[f32], frames: usize, vocab: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({frames}, {vocab}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shapes() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let bytes = encode_logits(&data, 2, 3);
        assert_eq!((bytes.len() - 24) % 64, 0);
        let l = parse_logits(&bytes).unwrap();
        assert_eq!((l.frames, l.vocab), (2, 3));
        assert_eq!(l.data, data);
        // [1, T, V], big-endian, version 2 headers.
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 2), }\n";
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&(h.len() as u32).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&1.5f32.to_be_bytes());
        b.extend_from_slice(&(-2f32).to_be_bytes());
        let l = parse_logits(&b).unwrap();
        assert_eq!((l.frames, l.vocab, l.data.clone()), (1, 2, vec![1.5, -2.0]));
    }

    /// `bytes` with the ASCII `from` replaced by `to` (header edits).
    fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        [&bytes[..at], to.as_bytes(), &bytes[at + from.len()..]].concat()
    }

    #[test]
    fn bad_files_say_why() {
        assert!(parse_logits(b"hello").unwrap_err().contains("not a .npy"));
        let f64_header = edit(&encode_logits(&[1.0], 1, 1), "<f4", "<f8");
        let e = parse_logits(&f64_header).unwrap_err();
        assert!(e.contains("not float32"), "{e}");
        let mut short = encode_logits(&[1.0, 2.0], 1, 2);
        short.pop();
        assert!(parse_logits(&short).unwrap_err().contains("bytes of data"));
        let three = edit(&encode_logits(&[1.0, 2.0], 1, 2), "(1, 2)", "(2, 1, 1)");
        assert!(parse_logits(&three)
            .unwrap_err()
            .contains("expected [frames, vocab]"));
    }
}
