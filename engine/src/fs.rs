//! File helpers shared by every crate: crash-safe writing (models, checkpoints) and content
//! hashing (checkpoint provenance, TensorRT engine-cache keys).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write `path` atomically: the content goes to a temporary file in the same directory, is
/// fsynced, then renamed over `path`. On any error (including one returned by `write`) the
/// temporary file is removed and `path` is left untouched, so no partial output is ever visible.
pub fn atomic_write<E>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), AtomicWriteError<E>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(AtomicWriteError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("directory {} does not exist", dir.display()),
            ),
        });
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let io = |source| AtomicWriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w).map_err(AtomicWriteError::Write)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError<E> {
    #[error("{path}: cannot write: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(E),
}

/// Convenience for writers that only do I/O.
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write(path, |w| w.write_all(bytes)).map_err(|e| match e {
        AtomicWriteError::Io { source, .. } => source,
        AtomicWriteError::Write(e) => e,
    })
}

/// A file that could not be read, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Lowercase hex sha256 of the files' contents, one after the other.
/// Lower-case hex sha256 of bytes already in memory (model files, data lists).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

pub fn sha256_files<P: AsRef<Path>>(files: &[P]) -> Result<String, ReadError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let path = f.as_ref();
        let err = |source| ReadError {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(err)?;
        loop {
            let n = file.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let r = atomic_write(&p, |w| {
            w.write_all(b"partial").unwrap();
            Err::<(), _>("boom")
        });
        assert!(matches!(r, Err(AtomicWriteError::Write("boom"))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("out.bin");
        let e = atomic_write_bytes(&p, b"x").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn replaces_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        atomic_write_bytes(&p, b"one").unwrap();
        atomic_write_bytes(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }

    #[test]
    fn sha256_of_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"ab").unwrap();
        std::fs::write(&b, b"c").unwrap();
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_files(&[&a, &b]).unwrap(), abc);
        assert_ne!(sha256_files(&[&b, &a]).unwrap(), abc);
        let missing = dir.path().join("missing");
        let err = sha256_files(&[&a, &missing]).unwrap_err();
        assert_eq!(err.path, missing);
        assert!(err
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display())));
    }
}
