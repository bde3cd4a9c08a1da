//! The torch.save zip container: its magic, record prefix and byte order, and bounded entry reads.

use std::io::{Read, Seek, SeekFrom};

use zip::result::ZipError;
use zip::ZipArchive;

use super::{bad, Fail};

/// Check the leading bytes: torch.save zips start with a local file header, the legacy (torch <
/// 1.6) format with a pickle. Returns the file length.
pub(super) fn check_magic<R: Read + Seek>(reader: &mut R) -> Result<u64, Fail> {
    let len = reader.seek(SeekFrom::End(0)).map_err(Fail::Io)?;
    reader.seek(SeekFrom::Start(0)).map_err(Fail::Io)?;
    let mut head = Vec::with_capacity(4);
    reader
        .by_ref()
        .take(4)
        .read_to_end(&mut head)
        .map_err(Fail::Io)?;
    reader.seek(SeekFrom::Start(0)).map_err(Fail::Io)?;
    match head.as_slice() {
        [b'P', b'K', 3, 4] => Ok(len),
        [0x80, proto, ..] if *proto <= 5 => bad(
            "legacy (torch < 1.6) serialization format, which is not supported; re-save it with \
             a newer torch: torch.save(torch.load(f), f)",
        ),
        _ => bad("not a torch.save zip archive"),
    }
}

/// The folder holding `data.pkl` (torch names it after the file, e.g. `archive/`), with its slash.
pub(super) fn record_prefix<R: Read + Seek>(zip: &ZipArchive<R>) -> Result<String, Fail> {
    let mut found = zip
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.trim_end_matches("data.pkl").to_string());
    match (found.next(), found.next()) {
        (Some(prefix), None) => Ok(prefix),
        (None, _) => bad("no data.pkl in the archive"),
        (Some(_), Some(_)) => bad("several data.pkl entries in the archive"),
    }
}

/// Storages are raw native-endian bytes; refuse big-endian files rather than misread them.
pub(super) fn check_byteorder<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    prefix: &str,
) -> Result<(), Fail> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(()); // older torch versions write no byteorder record: little-endian
    }
    let order = read_entry(zip, &name, 16)?;
    match order.as_slice() {
        b"little" => Ok(()),
        other => bad(format!(
            "byte order {:?} is not supported (only little-endian)",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Read a whole zip entry of at most `limit` bytes.
pub(super) fn read_entry<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, Fail> {
    let entry = zip.by_name(name).map_err(|e| match e {
        ZipError::FileNotFound => Fail::Format(format!("missing entry {name}")),
        other => Fail::zip(other),
    })?;
    if entry.size() > limit {
        return bad(format!(
            "entry {name} is {} bytes, more than the {limit} allowed",
            entry.size()
        ));
    }
    let mut buf = Vec::new();
    // The declared size may lie: never read past the limit whatever the entry decompresses to.
    entry
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(Fail::entry_io)?;
    if buf.len() as u64 > limit {
        return bad(format!(
            "entry {name} is larger than the {limit} bytes allowed"
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::test_pickles::{floats, format_reason, read_bytes, tensor_pickle, zip_of};

    #[test]
    fn archive_layout_errors() {
        let pkl = tensor_pickle("FloatStorage", 1, 0, &[1], &[1]);
        let reason = format_reason(read_bytes(zip_of(&[("archive/other.pkl", &pkl)])));
        assert!(reason.contains("no data.pkl"), "{reason}");
        let two = zip_of(&[("a/data.pkl", &pkl), ("b/data.pkl", &pkl)]);
        assert!(format_reason(read_bytes(two)).contains("several data.pkl"));
        let big = zip_of(&[
            ("a/data.pkl", &pkl),
            ("a/byteorder", b"big"),
            ("a/data/0", &[0; 4]),
        ]);
        assert!(format_reason(read_bytes(big)).contains("byte order"));
        let bare = zip_of(&[("data.pkl", &pkl), ("data/0", &floats(&[3.]))]);
        assert_eq!(read_bytes(bare).expect("no prefix")[0].1.data, vec![3.]);
        assert!(format_reason(read_bytes(Vec::new())).contains("not a torch.save zip"));
    }
}
