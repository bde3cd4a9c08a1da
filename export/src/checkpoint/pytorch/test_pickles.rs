//! Hand-built pickles and archives for the reader's unit tests: the edge cases torch.save never
//! writes. Real torch.save files are tested in `export/tests/pytorch_reader.rs`.

use std::io::{Cursor, Write};
use std::path::Path;

use super::read_from;
use crate::checkpoint::{CheckpointError, Tensor};

pub(super) fn read_bytes(bytes: Vec<u8>) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let path = Path::new("test.bin");
    read_from(path, Cursor::new(bytes), &[])
        .map(|c| c.tensors)
        .map_err(|f| f.at(path))
}

pub(super) fn unicode(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

pub(super) fn int(v: i64) -> Vec<u8> {
    match v {
        0..=255 => vec![b'K', v as u8],
        _ if i32::try_from(v).is_ok() => [&[b'J'][..], &(v as i32).to_le_bytes()].concat(),
        _ => [&[0x8a, 8][..], &v.to_le_bytes()].concat(),
    }
}

pub(super) fn int_tuple(vs: &[i64]) -> Vec<u8> {
    let mut out = vec![b'('];
    for &v in vs {
        out.extend(int(v));
    }
    out.push(b't');
    out
}

/// `{"w": _rebuild_tensor_v2(storage '0' of `numel` elements, offset, size, stride, False, None)}`.
pub(super) fn tensor_pickle(
    class: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    p.extend(unicode("w"));
    p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    p.extend(unicode("storage"));
    p.extend(format!("ctorch\n{class}\n").as_bytes());
    p.extend(unicode("0"));
    p.extend(unicode("cpu"));
    p.extend(int(numel));
    p.extend(b"tQ");
    p.extend(int(offset));
    p.extend(int_tuple(size));
    p.extend(int_tuple(stride));
    p.extend(b"\x89Nt");
    p.extend(b"Ru.");
    p
}

pub(super) fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("zip entry");
        w.write_all(data).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

pub(super) fn floats(vs: &[f32]) -> Vec<u8> {
    vs.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(super) fn tensor_file(
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    data: &[u8],
) -> Vec<u8> {
    let pkl = tensor_pickle("FloatStorage", numel, offset, size, stride);
    zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", data)])
}

pub(super) fn format_reason(r: Result<Vec<(String, Tensor)>, CheckpointError>) -> String {
    match r {
        Err(CheckpointError::Format { reason, path, .. }) => {
            assert_eq!(path, Path::new("test.bin"));
            reason
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

pub(super) fn unsafe_reason(r: Result<Vec<(String, Tensor)>, CheckpointError>) -> String {
    match r {
        Err(CheckpointError::Unsafe { reason, .. }) => reason,
        other => panic!("expected an unsafe error, got {other:?}"),
    }
}

pub(super) fn pickle_only(pkl: &[u8]) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    read_bytes(zip_of(&[("archive/data.pkl", pkl)]))
}
