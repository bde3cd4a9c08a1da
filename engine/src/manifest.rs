//! Labelled data sets: TSV manifests of `path<TAB>transcript` rows.
//!
//! Paths are relative to the manifest's folder (absolute paths are kept). A header row whose
//! first two fields are `path` and `transcript` is skipped; extra columns are ignored. Used by
//! `w2v eval`, and by fine-tuning and calibration, which read the same format.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq)]
pub struct Utterance {
    pub path: PathBuf,
    pub transcript: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected `path<TAB>transcript`, found {found:?}")]
    Row {
        path: PathBuf,
        line: usize,
        found: String,
    },
    #[error("{path}: no utterances")]
    Empty { path: PathBuf },
}

pub fn read_manifest(path: &Path) -> Result<Vec<Utterance>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_manifest(path, &text)
}

pub fn parse_manifest(path: &Path, text: &str) -> Result<Vec<Utterance>, ManifestError> {
    let base = path.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split('\t');
        let (file, transcript) = match (fields.next(), fields.next()) {
            (Some(f), Some(t)) if !f.trim().is_empty() => (f.trim(), t.trim()),
            _ => {
                return Err(ManifestError::Row {
                    path: path.to_path_buf(),
                    line: i + 1,
                    found: line.chars().take(60).collect(),
                })
            }
        };
        if out.is_empty()
            && file.eq_ignore_ascii_case("path")
            && transcript.eq_ignore_ascii_case("transcript")
        {
            continue;
        }
        out.push(Utterance {
            path: base.join(file),
            transcript: transcript.to_string(),
        });
    }
    if out.is_empty() {
        return Err(ManifestError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_extra_columns_and_relative_paths() {
        let text =
            "path\ttranscript\tsample_rate\na/x.wav\tHello, world\t8000\n\n/abs/y.wav\tbye\n";
        let rows = parse_manifest(Path::new("/data/set.tsv"), text).unwrap();
        assert_eq!(
            rows,
            vec![
                Utterance {
                    path: "/data/a/x.wav".into(),
                    transcript: "Hello, world".into()
                },
                Utterance {
                    path: "/abs/y.wav".into(),
                    transcript: "bye".into()
                },
            ]
        );
    }

    #[test]
    fn bad_row_names_file_and_line() {
        let e = parse_manifest(Path::new("set.tsv"), "a.wav\thi\nno-tab-here\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "set.tsv:2: expected `path<TAB>transcript`, found \"no-tab-here\""
        );
    }

    #[test]
    fn empty_manifest_is_an_error() {
        assert!(matches!(
            parse_manifest(Path::new("e.tsv"), "path\ttranscript\n"),
            Err(ManifestError::Empty { .. })
        ));
    }
}
