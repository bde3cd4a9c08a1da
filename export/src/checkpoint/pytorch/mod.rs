//! pytorch `.bin` state dicts (torch.save zip format) read with a restricted unpickler.
//!
//! A torch.save zip holds `<prefix>/data.pkl`, a pickle of the state dict whose tensors refer to
//! raw storages `<prefix>/data/<key>` through persistent ids. Python's pickle would import and call
//! whatever the file names; this reader interprets only the opcodes a state dict needs and a short
//! list of globals, none of which runs code: tensors are rebuilt from their metadata here.
//!
//! The reader is split at its seams: `archive` checks the zip container and reads its entries,
//! `pickle` is the restricted pickle machine (values, allowed globals, the unpickler),
//! `state_dict` finds the weights and the asked-for entries in what it built, and `storage`
//! reads storages and assembles tensors from their strided views.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use zip::result::ZipError;
use zip::ZipArchive;

use super::{CheckpointError, Tensor};

mod archive;
mod pickle;
mod state_dict;
mod storage;
#[cfg(test)]
mod test_pickles;

use archive::{check_byteorder, check_magic, read_entry, record_prefix};
use pickle::Unpickler;
use state_dict::{state_dict_entries, top_level_json};
use storage::Storages;

const FORMAT: &str = "pytorch checkpoint";
/// data.pkl of a state dict is small (about 100 bytes per tensor); anything far larger is bogus.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Read every tensor of a torch.save zip-format state dict, converted to float32, in file order.
/// Integer and bool buffers (e.g. `position_ids`) are skipped: the model has no use for them.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Ok(read_checkpoint(path, &[])?.tensors)
}

/// A training checkpoint: its weights, and the top-level entries asked for beside them.
#[derive(Debug)]
pub struct Checkpoint {
    /// The state dict's float tensors (the top level, or its `state_dict` / `model` entry).
    pub tensors: Vec<(String, Tensor)>,
    /// The asked-for top-level entries that exist, as JSON (see [`read_checkpoint`]).
    pub entries: serde_json::Map<String, serde_json::Value>,
}

/// Read a torch.save file's weights like [`read`], and the top-level entries named by `keys`
/// (e.g. fairseq's `cfg` or `args`) as JSON: dicts and instances of the allowed data classes
/// (an `argparse.Namespace`, say) become objects (with a `__class__` member for classes other
/// than Namespace), lists and tuples arrays, tensors and bytes `null`. Only the weights' storages
/// are read; tensors anywhere else (optimizer state) stay unread metadata.
pub fn read_checkpoint(path: &Path, keys: &[&str]) -> Result<Checkpoint, CheckpointError> {
    let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // Buffered for the many small reads of the zip directory; storages are read in large chunks.
    read_from(path, BufReader::new(file), keys).map_err(|f| f.at(path))
}

/// The reader behind [`read_checkpoint`]; `path` only names the file in errors.
fn read_from<R: Read + Seek>(
    path: &Path,
    mut reader: R,
    keys: &[&str],
) -> Result<Checkpoint, Fail> {
    let file_len = check_magic(&mut reader)?;
    let mut zip = ZipArchive::new(reader).map_err(Fail::zip)?;
    let prefix = record_prefix(&zip)?;
    check_byteorder(&mut zip, &prefix)?;
    let pickle = read_entry(&mut zip, &format!("{prefix}data.pkl"), MAX_PICKLE_BYTES)?;
    let (root, objects) = Unpickler::new(&pickle).load()?;
    let entries = state_dict_entries(&objects, &root)?;
    let json = top_level_json(&objects, &root, keys)?;
    drop(objects);
    let mut storages = Storages::new(&mut zip, prefix, file_len, &entries);
    let mut out = Vec::with_capacity(entries.len());
    for (name, meta) in entries {
        if let Some(t) = storages.tensor(path, &name, &meta)? {
            out.push((name, t));
        }
    }
    Ok(Checkpoint {
        tensors: out,
        entries: json,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Internal error, turned into a [`CheckpointError`] naming the file at the API boundary.
#[derive(Debug)]
enum Fail {
    Io(std::io::Error),
    Format(String),
    Unsafe(String),
    DType { name: String, dtype: String },
}

impl Fail {
    fn at(self, path: &Path) -> CheckpointError {
        let path = path.to_path_buf();
        match self {
            Fail::Io(source) => CheckpointError::Io { path, source },
            Fail::Format(reason) => CheckpointError::Format {
                path,
                format: FORMAT,
                reason,
            },
            Fail::Unsafe(reason) => CheckpointError::Unsafe { path, reason },
            Fail::DType { name, dtype } => CheckpointError::DType { path, name, dtype },
        }
    }

    fn zip(e: ZipError) -> Self {
        match e {
            ZipError::Io(e) => Fail::entry_io(e),
            other => Fail::Format(format!("bad zip archive: {other}")),
        }
    }

    /// Reading a zip entry fails with InvalidData / UnexpectedEof on corrupt content: that is a
    /// format problem, not an I/O one.
    fn entry_io(e: std::io::Error) -> Self {
        use std::io::ErrorKind::{InvalidData, InvalidInput, UnexpectedEof};
        match e.kind() {
            InvalidData | InvalidInput | UnexpectedEof => {
                Fail::Format(format!("corrupt zip data: {e}"))
            }
            _ => Fail::Io(e),
        }
    }
}

fn bad<T>(reason: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Format(reason.into()))
}

#[cfg(test)]
mod tests {
    //! A mutation fuzz test of the whole reader. Hand-built pickles for the edge cases torch.save
    //! never writes are tested beside the code they reach; real torch.save files in
    //! `export/tests/pytorch_reader.rs`.

    use std::io::Cursor;

    use super::test_pickles::{read_bytes, zip_of};
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Bytes that steer a pickle towards interesting states: opcodes and boundary values.
    const INTERESTING: &[u8] = b"\x00\x01\x7f\x80\xff()tq hjrKJMX\x8a\x85\x86\x87RQsub.}]";

    fn mutate(rng: &mut XorShift, data: &mut Vec<u8>) {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(data.len() + 1);
            match rng.below(6) {
                0 if at < data.len() => data[at] ^= 1 << rng.below(8),
                1 if at < data.len() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
                2 => data.truncate(at),
                3 => {
                    let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                    data.splice(at..at, bytes);
                }
                4 => {
                    let end = (at + 1 + rng.below(16)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                _ => {
                    // Repeat a chunk: duplicated opcodes and arguments.
                    let end = (at + 1 + rng.below(32)).min(data.len());
                    let chunk = data[at.min(end)..end].to_vec();
                    data.splice(at..at, chunk);
                }
            }
        }
    }

    /// Every entry of a fixture, to rebuild it around a mutated data.pkl (a fresh CRC, so the
    /// mutation reaches the unpickler).
    fn entries(file: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut zip = ZipArchive::new(Cursor::new(file)).expect("fixture is a zip");
        (0..zip.len())
            .map(|i| {
                let mut e = zip.by_index(i).expect("fixture entry");
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).expect("fixture entry data");
                (e.name().to_string(), buf)
            })
            .collect()
    }

    #[test]
    fn mutated_files_never_panic() {
        let dir = w2v_test_support::paths::pickle_fixtures_dir();
        let names = [
            "float_types.bin",
            "views.bin",
            "module.bin",
            "params.bin",
            "nested_state_dict.bin",
            "proto4.bin",
            "deflate.bin",
        ];
        let files: Vec<Vec<u8>> = names
            .iter()
            .map(|n| {
                std::fs::read(dir.join(n)).expect("fixture (tools/fixtures/gen_pickle_cases.py)")
            })
            .collect();
        let unpacked: Vec<_> = files.iter().map(|f| entries(f)).collect();
        let mut outcomes = [0u64; 2];
        // W2V_FUZZ_ITERATIONS / W2V_FUZZ_SEED allow longer runs by hand.
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let iterations = env("W2V_FUZZ_ITERATIONS").unwrap_or(5000);
        let mut rng = XorShift(env("W2V_FUZZ_SEED").unwrap_or(0x9e37_79b9_7f4a_7c15).max(1));
        for iteration in 0..iterations {
            let which = rng.below(files.len());
            let bytes = if iteration % 2 == 0 {
                let mut f = files[which].clone();
                mutate(&mut rng, &mut f);
                f
            } else {
                let mut es = unpacked[which].clone();
                let pkl = es
                    .iter_mut()
                    .find(|(n, _)| n.ends_with("data.pkl"))
                    .expect("data.pkl");
                mutate(&mut rng, &mut pkl.1);
                let refs: Vec<(&str, &[u8])> =
                    es.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
                zip_of(&refs)
            };
            let result = std::panic::catch_unwind(|| read_bytes(bytes.clone()));
            match result {
                Ok(r) => outcomes[usize::from(r.is_ok())] += 1,
                Err(_) => {
                    let dump =
                        std::env::temp_dir().join(format!("w2v-pickle-fuzz-{iteration}.bin"));
                    let _ = std::fs::write(&dump, &bytes);
                    panic!(
                        "iteration {iteration} ({}) panicked; input saved to {}",
                        names[which],
                        dump.display()
                    );
                }
            }
        }
        // Most mutations must be caught, but some (e.g. in tensor data) still read fine.
        eprintln!(
            "mutations: {} errors, {} read fine",
            outcomes[0], outcomes[1]
        );
        assert!(
            outcomes[0] > 1000 && outcomes[1] > 50,
            "errors/ok: {outcomes:?}"
        );
    }
}
